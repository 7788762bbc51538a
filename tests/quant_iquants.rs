//! The lattice i-quants against ggml's reference vectors, and their dot product against the
//! exact dot of the dequantized values on random blocks.

mod common;

use common::check_quant;
use proptest::prelude::*;
use strait::quant::blocks::{BlockQ8K, F32Le, I16Le};
use strait::quant::iquants::*;
use strait::quant::{GgmlType, QK_K};

const TYPES: [GgmlType; 7] = [
    GgmlType::IQ1S,
    GgmlType::IQ1M,
    GgmlType::IQ2XXS,
    GgmlType::IQ2XS,
    GgmlType::IQ2S,
    GgmlType::IQ3XXS,
    GgmlType::IQ3S,
];

// Every check runs: dequantize, quantize with and without the importance matrix, the Q8_K
// activations and the dot product.

#[test]
fn iq1_s_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ1S), Vec::<&str>::new());
}

#[test]
fn iq1_m_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ1M), Vec::<&str>::new());
}

#[test]
fn iq2_xxs_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ2XXS), Vec::<&str>::new());
}

#[test]
fn iq2_xs_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ2XS), Vec::<&str>::new());
}

#[test]
fn iq2_s_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ2S), Vec::<&str>::new());
}

#[test]
fn iq3_xxs_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ3XXS), Vec::<&str>::new());
}

#[test]
fn iq3_s_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ3S), Vec::<&str>::new());
}

#[test]
fn block_sizes_match_the_type_table() {
    use std::mem::size_of;
    let sizes = [
        (GgmlType::IQ1S, size_of::<BlockIQ1S>()),
        (GgmlType::IQ1M, size_of::<BlockIQ1M>()),
        (GgmlType::IQ2XXS, size_of::<BlockIQ2XXS>()),
        (GgmlType::IQ2XS, size_of::<BlockIQ2XS>()),
        (GgmlType::IQ2S, size_of::<BlockIQ2S>()),
        (GgmlType::IQ3XXS, size_of::<BlockIQ3XXS>()),
        (GgmlType::IQ3S, size_of::<BlockIQ3S>()),
    ];
    for (ty, size) in sizes {
        assert_eq!(size, ty.type_size(), "{ty}");
        assert_eq!(ty.block_size(), QK_K, "{ty}");
    }
}

/// The quantizers' packed levels (`kgrid_*` of ggml-quants.c) and the dequantizers' grids
/// (ggml-common.h) are two copies of one lattice: level `l` of coordinate `i` of point `j` must
/// map to one grid value per level, increasing with the level.
#[test]
fn quantizer_grids_agree_with_dequantizer_grids() {
    use strait::quant::iquants::grids::*;
    fn check(name: &str, kgrid: &[u16], values: &[Vec<i32>], bits: u32) {
        assert_eq!(kgrid.len(), values.len(), "{name}");
        let mut level_value = std::collections::BTreeMap::new();
        for (j, (&k, v)) in kgrid.iter().zip(values).enumerate() {
            for (i, &value) in v.iter().enumerate() {
                let level = (k >> (bits as usize * i)) & ((1 << bits) - 1);
                let seen = *level_value.entry(level).or_insert(value);
                assert_eq!(seen, value, "{name}: point {j}, coordinate {i}");
            }
        }
        let values: Vec<i32> = level_value.values().copied().collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]), "{name}: {values:?}");
    }
    let bytes8 = |g: &[u64], signed: bool| -> Vec<Vec<i32>> {
        g.iter()
            .map(|&v| {
                v.to_le_bytes()
                    .iter()
                    .map(|&b| if signed { b as i8 as i32 } else { b as i32 })
                    .collect()
            })
            .collect()
    };
    let bytes4 = |g: &[u32]| -> Vec<Vec<i32>> {
        g.iter()
            .map(|&v| v.to_le_bytes().iter().map(|&b| b as i32).collect())
            .collect()
    };
    check("iq2xxs", &KGRID_IQ2XXS, &bytes8(&IQ2XXS_GRID, false), 2);
    check("iq2xs", &KGRID_IQ2XS, &bytes8(&IQ2XS_GRID, false), 2);
    check("iq2s", &KGRID_IQ2S, &bytes8(&IQ2S_GRID, false), 2);
    check("iq1s", &KGRID_IQ1S, &bytes8(&IQ1S_GRID, true), 2);
    check("iq3xxs", &KGRID_IQ3XXS, &bytes4(&IQ3XXS_GRID), 3);
    check("iq3s", &KGRID_IQ3S, &bytes4(&IQ3S_GRID), 3);
}

/// IQ2_XXS, IQ2_XS and IQ1_S, which ggml only quantizes with an importance matrix, take a
/// missing one as a flat one.
#[test]
fn missing_importance_matrix_is_flat() {
    let x: Vec<f32> = (0..2 * QK_K)
        .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * (1.0 + (i % 13) as f32))
        .collect();
    let ones = vec![1f32; x.len()];
    for ty in [GgmlType::IQ2XXS, GgmlType::IQ2XS, GgmlType::IQ1S] {
        let bytes = ty.row_bytes(x.len() as u64).unwrap() as usize;
        let (mut plain, mut flat) = (vec![0u8; bytes], vec![0u8; bytes]);
        strait::quant::quantize_row(ty, &x, &mut plain, None).unwrap();
        strait::quant::quantize_row(ty, &x, &mut flat, Some(&ones)).unwrap();
        assert_eq!(plain, flat, "{ty}");
        assert!(plain.iter().any(|&b| b != 0), "{ty}");
    }
}

/// Writes the f16 super-block scale `bits` into a block of `ty`.
fn set_scale(ty: GgmlType, block: &mut [u8], bits: u16) {
    if ty == GgmlType::IQ1M {
        // the top nibble of each of the four u16 of `scales` (bytes 48..56)
        for k in 0..4 {
            let b = &mut block[48 + 2 * k + 1];
            *b = (*b & 0x0f) | ((((bits >> (4 * k)) & 0xf) as u8) << 4);
        }
    } else {
        block[..2].copy_from_slice(&bits.to_le_bytes());
    }
}

/// A finite f16: any sign and mantissa, an exponent below the all-ones one.
fn finite_f16() -> impl Strategy<Value = u16> {
    (any::<bool>(), 0u16..31, 0u16..1024).prop_map(|(s, e, m)| (s as u16) << 15 | e << 10 | m)
}

/// Random Q8_K blocks with consistent `bsums`, and their dequantized values.
fn q8k_blocks(nb: usize) -> impl Strategy<Value = (Vec<u8>, Vec<f64>)> {
    (
        prop::collection::vec(1e-4f32..1.0, nb),
        prop::collection::vec(any::<i8>(), nb * QK_K),
    )
        .prop_map(move |(ds, qs)| {
            let mut bytes = Vec::new();
            let mut values = Vec::new();
            for (d, qs) in ds.iter().zip(qs.chunks_exact(QK_K)) {
                let block = BlockQ8K {
                    d: F32Le::new(*d),
                    qs: qs.try_into().unwrap(),
                    bsums: std::array::from_fn(|k| {
                        I16Le::new(qs[16 * k..16 * k + 16].iter().map(|&q| q as i16).sum())
                    }),
                };
                bytes.extend_from_slice(bytemuck::bytes_of(&block));
                values.extend(qs.iter().map(|&q| *d as f64 * q as f64));
            }
            (bytes, values)
        })
}

fn random_row(ty: GgmlType) -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Vec<f64>)> {
    (1usize..4).prop_flat_map(move |nb| {
        (
            prop::collection::vec(any::<u8>(), nb * ty.type_size()),
            prop::collection::vec(finite_f16(), nb),
            q8k_blocks(nb),
        )
            .prop_map(move |(mut x, scales, (y, yv))| {
                for (block, bits) in x.chunks_exact_mut(ty.type_size()).zip(scales) {
                    set_scale(ty, block, bits);
                }
                (x, y, yv)
            })
    })
}

fn any_row() -> impl Strategy<Value = (GgmlType, Vec<u8>, Vec<u8>, Vec<f64>)> {
    prop::sample::select(TYPES.to_vec())
        .prop_flat_map(|ty| random_row(ty).prop_map(move |(x, y, yv)| (ty, x, y, yv)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any input, NaN and infinities included, quantizes without a panic; finite input of
    /// moderate size comes back finite.
    #[test]
    fn quantize_takes_any_input(
        ty in prop::sample::select(TYPES.to_vec()),
        x in prop::collection::vec(
            prop_oneof![
                8 => -100f32..100.0,
                1 => Just(0f32),
                1 => prop::num::f32::ANY,
            ],
            QK_K,
        ),
        with_imatrix in any::<bool>(),
    ) {
        let w: Vec<f32> = x.iter().map(|v| (v * 0.37).abs().fract() + 0.01).collect();
        let mut q = vec![0u8; ty.type_size()];
        strait::quant::quantize_row(ty, &x, &mut q, with_imatrix.then_some(&w[..])).unwrap();
        let mut dq = vec![0f32; QK_K];
        strait::quant::dequantize_row(ty, &q, &mut dq).unwrap();
        if x.iter().all(|v| v.abs() <= 100.0) {
            prop_assert!(dq.iter().all(|v| v.is_finite()), "{ty}: {dq:?}");
        }
    }

    #[test]
    fn vec_dot_is_the_dot_of_the_dequantized_values((ty, x, y, yv) in any_row()) {
        let n = yv.len();
        let mut xv = vec![0f32; n];
        strait::quant::dequantize_row(ty, &x, &mut xv).unwrap();
        prop_assert!(xv.iter().all(|v| v.is_finite()), "{ty}: non-finite dequantized value");
        let got = strait::quant::vec_dot(ty, n, &x, &y).unwrap() as f64;
        let want: f64 = xv.iter().zip(&yv).map(|(&a, &b)| a as f64 * b).sum();
        let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|a| a * a).sum::<f64>().sqrt();
        let scale = want.abs()
            + norm(&mut xv.iter().map(|&a| a as f64)) * norm(&mut yv.iter().copied());
        prop_assert!(
            (got - want).abs() <= 1e-5 * scale,
            "{ty}: vec_dot {got} vs {want} (scale {scale})"
        );
    }
}
