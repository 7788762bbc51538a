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

// Each test names the checks that are still allowed to be skipped: "quantize" where the
// quantizer is not exact yet, "activation" while there is no Q8_K quantizer.

#[test]
fn iq1_s_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ1S), ["quantize", "activation"]);
}

#[test]
fn iq1_m_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ1M), ["quantize", "activation"]);
}

#[test]
fn iq2_xxs_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ2XXS), ["activation"]);
}

#[test]
fn iq2_xs_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ2XS), ["activation"]);
}

#[test]
fn iq2_s_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ2S), ["activation"]);
}

#[test]
fn iq3_xxs_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ3XXS), ["activation"]);
}

#[test]
fn iq3_s_matches_ggml() {
    assert_eq!(check_quant(GgmlType::IQ3S), ["activation"]);
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
