//! Every SIMD kernel path this CPU supports against the scalar code: activation quantization
//! and dequantization bit for bit, dot products within the reference tolerance, on random rows
//! of every length up to several blocks, at unaligned byte offsets, with extreme values.

use proptest::prelude::*;
use strait::quant::arch::{supported, Path};
use strait::quant::{self, GgmlType, Kernels};

/// The weight formats with SIMD kernels, and where their f16 scales sit in a block.
const WEIGHTS: [(GgmlType, &[usize]); 10] = [
    (GgmlType::Q4_0, &[0]),
    (GgmlType::Q4_1, &[0, 2]),
    (GgmlType::Q5_0, &[0]),
    (GgmlType::Q5_1, &[0, 2]),
    (GgmlType::Q8_0, &[0]),
    (GgmlType::Q2K, &[80, 82]),
    (GgmlType::Q3K, &[108]),
    (GgmlType::Q4K, &[0, 2]),
    (GgmlType::Q5K, &[0, 2]),
    (GgmlType::Q6K, &[208]),
];

/// The activation types with SIMD quantizers.
const ACTIVATIONS: [GgmlType; 3] = [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8K];

/// The SIMD paths of this CPU.
fn simd_paths() -> Vec<Path> {
    supported()
        .into_iter()
        .filter(|&p| p != Path::Scalar)
        .collect()
}

fn own(p: Path, ty: GgmlType) -> Kernels {
    p.own_kernels(ty)
        .unwrap_or_else(|| panic!("{} has no kernels for {ty}", p.name()))
}

fn scalar(ty: GgmlType) -> Kernels {
    quant::scalar(ty).unwrap()
}

/// Bits, with every NaN alike (payloads may differ between conversions).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
        .collect()
}

/// A copy of `bytes` starting `off` bytes into a fresh buffer, so kernels see unaligned rows.
fn shifted(bytes: &[u8], off: usize) -> Vec<u8> {
    let mut v = vec![0xA5u8; off];
    v.extend_from_slice(bytes);
    v
}

/// Values of every kind: ordinary, tiny, subnormal, zero, and (when `special`) huge values,
/// infinities and NaN; without them a row's f16 scales stay finite.
fn value(special: bool) -> impl Strategy<Value = f32> {
    let (huge, specials) = if special {
        (
            prop_oneof![Just(3e38f32), Just(-3e38f32), Just(1e30), Just(-1e30)].boxed(),
            prop_oneof![Just(f32::INFINITY), Just(f32::NEG_INFINITY), Just(f32::NAN)].boxed(),
        )
    } else {
        (Just(40.0f32).boxed(), Just(0.0f32).boxed())
    };
    prop_oneof![
        8 => -4.0f32..4.0,
        2 => -1e-30f32..1e-30,
        1 => -1e-40f32..1e-40,
        1 => huge,
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => specials,
    ]
}

/// A row of `blocks * block` values, all scaled by one random magnitude.
fn row(block: usize, max_blocks: usize, special: bool) -> impl Strategy<Value = Vec<f32>> {
    // Without specials the f16 scales of Q4_0 .. Q8_0 must stay below 65504.
    let top = if special { 20 } else { 8 };
    (1..=max_blocks, -20i32..top).prop_flat_map(move |(nb, e)| {
        let scale = 2f32.powi(e);
        prop::collection::vec(value(special), nb * block)
            .prop_map(move |v| v.into_iter().map(|x| x * scale).collect())
    })
}

fn quantize(k: &Kernels, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; k.ty.row_bytes(x.len() as u64).unwrap() as usize];
    (k.quantize.unwrap())(x, &mut q, None);
    q
}

fn dequantize(k: &Kernels, q: &[u8], n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    (k.dequantize.unwrap())(q, &mut v);
    v
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

fn activation_matches(ty: GgmlType, x: &[f32], off: usize) -> Result<(), TestCaseError> {
    let want = quantize(&scalar(ty), x);
    for p in simd_paths() {
        let k = own(p, ty);
        let f = k.quantize.unwrap();
        let mut buf = vec![0x5Au8; off + want.len()];
        f(x, &mut buf[off..], None);
        prop_assert_eq!(&buf[off..], &want[..], "{} {} quantize", p.name(), ty);
    }
    Ok(())
}

/// Random block bytes whose f16 scales are finite and below 2 (the top exponent bit cleared).
fn weight_bytes(ty: GgmlType, scales: &'static [usize]) -> impl Strategy<Value = Vec<u8>> {
    let bs = ty.type_size();
    let max_blocks: usize = if ty.block_size() == 256 { 5 } else { 9 };
    (1..=max_blocks)
        .prop_flat_map(move |nb: usize| prop::collection::vec(any::<u8>(), nb * bs))
        .prop_map(move |mut v| {
            for b in v.chunks_exact_mut(bs) {
                for &o in scales {
                    b[o + 1] &= 0xBF;
                }
            }
            v
        })
}

fn dequantize_matches(ty: GgmlType, q: &[u8], off: usize) -> Result<(), TestCaseError> {
    let n = q.len() / ty.type_size() * ty.block_size();
    let want = dequantize(&scalar(ty), q, n);
    let q = shifted(q, off);
    for p in simd_paths() {
        let got = dequantize(&own(p, ty), &q[off..], n);
        prop_assert_eq!(bits(&got), bits(&want), "{} {} dequantize", p.name(), ty);
    }
    Ok(())
}

/// `|simd - scalar| <= 1e-5 * (|scalar| + |x| |y|)`, the tolerance of the reference README
/// with the dequantized rows.
fn dot_matches(
    ty: GgmlType,
    xq: &[u8],
    y: &[f32],
    offs: (usize, usize),
) -> Result<(), TestCaseError> {
    let sk = scalar(ty);
    let dt = scalar(sk.dot_type);
    let n = xq.len() / ty.type_size() * ty.block_size();
    let y = &y[..n];
    let yq = quantize(&dt, y);
    let want = (sk.vec_dot.unwrap())(n, xq, &yq) as f64;
    let xd = dequantize(&sk, xq, n);
    let scale = want.abs() + norm(&xd) * norm(y);
    let (xs, ys) = (shifted(xq, offs.0), shifted(&yq, offs.1));
    for p in simd_paths() {
        let got = (own(p, ty).vec_dot.unwrap())(n, &xs[offs.0..], &ys[offs.1..]) as f64;
        prop_assert!(
            (got - want).abs() <= 1e-5 * scale,
            "{} {ty} n={n}: {got:e} vs scalar {want:e} (scale {scale:e})",
            p.name()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn q8_0_activations(x in row(32, 9, true), off in 0usize..4) {
        activation_matches(GgmlType::Q8_0, &x, off)?;
    }

    #[test]
    fn q8_1_activations(x in row(32, 9, true), off in 0usize..4) {
        activation_matches(GgmlType::Q8_1, &x, off)?;
    }

    #[test]
    fn q8_k_activations(x in row(256, 4, true), off in 0usize..4) {
        activation_matches(GgmlType::Q8K, &x, off)?;
    }

    #[test]
    fn dequantize_random_blocks(
        (i, q) in (0..WEIGHTS.len()).prop_flat_map(|i| (Just(i), weight_bytes(WEIGHTS[i].0, WEIGHTS[i].1))),
        off in 0usize..4,
    ) {
        dequantize_matches(WEIGHTS[i].0, &q, off)?;
    }

    #[test]
    fn dot_random_blocks(
        (i, q) in (0..WEIGHTS.len()).prop_flat_map(|i| (Just(i), weight_bytes(WEIGHTS[i].0, WEIGHTS[i].1))),
        y in prop::collection::vec(-8.0f32..8.0, 5 * 256),
        offs in (0usize..4, 0usize..4),
    ) {
        dot_matches(WEIGHTS[i].0, &q, &y, offs)?;
    }

    #[test]
    fn dot_quantized_rows(
        i in 0..WEIGHTS.len(),
        x in row(256, 4, false),
        y in row(256, 4, false),
        offs in (0usize..4, 0usize..4),
    ) {
        let ty = WEIGHTS[i].0;
        let n = x.len().min(y.len());
        let xq = quantize(&scalar(ty), &x[..n]);
        dot_matches(ty, &xq, &y[..n], offs)?;
    }
}

/// Extreme activations: a block of one huge value, ties at the maximum magnitude of either
/// sign, halves that round away from zero, and all zeros.
#[test]
fn activations_at_the_edges() {
    let mut rows: Vec<Vec<f32>> = Vec::new();
    rows.push(vec![0.0; 256]);
    let mut r = vec![1e-3f32; 256];
    r[77] = 1e30;
    rows.push(r);
    let mut r: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) / 2.0).collect();
    r[3] = -64.0;
    r[200] = 64.0;
    rows.push(r);
    rows.push((0..256).map(|i| i as f32 * 0.5 + 0.25).collect());
    let mut r = vec![2.5f32; 256];
    r[10] = f32::NAN;
    r[40] = f32::INFINITY;
    rows.push(r);
    // A NaN last in its block survives C's MAX scan: d and s are NaN (with a payload).
    let mut r = vec![-0.75f32; 256];
    r[31] = f32::NAN;
    r[63] = -f32::from_bits(0x7fc1_2345);
    r[95] = f32::from_bits(0x7f80_0001);
    rows.push(r);
    for x in &rows {
        for ty in ACTIVATIONS {
            activation_matches(ty, x, 1).unwrap();
        }
    }
}

/// Each SIMD path has every kernel it is meant to have (so that the properties above test
/// them and not a fallback).
#[test]
fn paths_have_their_kernels() {
    for p in simd_paths() {
        for ty in ACTIVATIONS {
            assert!(own(p, ty).quantize.is_some(), "{} {ty}", p.name());
        }
        for (ty, _) in WEIGHTS {
            let k = own(p, ty);
            assert!(k.vec_dot.is_some(), "{} {ty} vec_dot", p.name());
            assert!(k.dequantize.is_some(), "{} {ty} dequantize", p.name());
        }
    }
}

/// The x86 machines this crate is built and tested on all have AVX2; the tests above would be
/// vacuous without a SIMD path.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_simd_path_is_tested() {
    assert!(!simd_paths().is_empty(), "no SIMD path on this CPU");
}
