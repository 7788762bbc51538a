//! The avx2 and avx512 kernels of F32, F16, BF16, IQ4_NL, IQ4_XS, MXFP4 and the IQ1/IQ2/IQ3
//! types against the scalar reference code, on every path this CPU supports: random rows of
//! every length up to several blocks, at unaligned byte offsets, with extreme values.
//! Dequantization must be identical; dot products within the reference tolerance.

use proptest::prelude::*;
use strait::quant::arch::{self, Path};
use strait::quant::check::DOT_TOLERANCE;
use strait::quant::{self, GgmlType, Kernels};

/// The types whose SIMD kernels this file covers, and the paths expected to have them.
const TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
    GgmlType::MXFP4,
    GgmlType::IQ1S,
    GgmlType::IQ1M,
    GgmlType::IQ2XXS,
    GgmlType::IQ2XS,
    GgmlType::IQ2S,
    GgmlType::IQ3XXS,
    GgmlType::IQ3S,
];

/// A small deterministic generator (splitmix64), so a failing case is its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn gauss(&mut self) -> f32 {
        (0..4).map(|_| self.unit()).sum::<f32>() * 0.87
    }
}

/// The shapes of a random row: gaussian, uniform, sparse, one outlier, constant, zero, and
/// rows of extreme magnitudes (tiny, huge, mixed), all finite in the type.
fn row(rng: &mut Rng, n: usize, kind: u8, scale: f32, max: f32) -> Vec<f32> {
    let v: Vec<f32> = (0..n)
        .map(|i| match kind % 8 {
            0 => rng.gauss() * scale,
            1 => rng.unit() * scale,
            2 => {
                if rng.next().is_multiple_of(8) {
                    rng.gauss() * scale
                } else {
                    0.0
                }
            }
            3 => {
                if i == n / 3 {
                    1000.0 * scale
                } else {
                    rng.gauss() * scale
                }
            }
            4 => scale,
            5 => 0.0,
            6 => rng.gauss() * max,
            _ => {
                let e = (rng.next() % 5) as i32 - 2;
                rng.unit() * max.powf(e as f32 / 2.0)
            }
        })
        .collect();
    v.into_iter().map(|x| x.clamp(-max, max)).collect()
}

/// Bytes at byte offset `off` of a fresh buffer, so that kernels see unaligned starts.
fn shifted(bytes: &[u8], off: usize) -> Vec<u8> {
    let mut v = vec![0xa5u8; off];
    v.extend_from_slice(bytes);
    v
}

fn quantize(k: &Kernels, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; k.ty.row_bytes(x.len() as u64).unwrap() as usize];
    // IQ2_XXS, IQ2_XS and IQ1_S require an importance matrix.
    let w = vec![1.0f32; x.len()];
    let imatrix =
        matches!(k.ty, GgmlType::IQ2XXS | GgmlType::IQ2XS | GgmlType::IQ1S).then_some(&w[..]);
    (k.quantize.unwrap())(x, &mut q, imatrix);
    q
}

fn dequantize(k: &Kernels, q: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    (k.dequantize.unwrap())(q, &mut out);
    out
}

/// The largest value a row of `ty` may hold: finite in the type, and for BF16 products that
/// stay normal in f32 (the avx512 BF16 dot flushes subnormals, as ggml's does).
fn max_of(ty: GgmlType) -> f32 {
    match ty {
        GgmlType::F16 => 6.0e4,
        GgmlType::F32 | GgmlType::BF16 => 1.0e17,
        // Beyond this an f16 block scale (about amax / 127) overflows.
        GgmlType::MXFP4 | GgmlType::Q8K => 1.0e30,
        _ => 1.0e6,
    }
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// The SIMD paths this CPU supports (none on other CPUs: then there is nothing to compare).
fn simd_paths() -> Vec<Path> {
    arch::supported()
        .into_iter()
        .filter(|&p| p != Path::Scalar)
        .collect()
}

fn check_type(ty: GgmlType, blocks: usize, off: usize, seed: u64, kind: u8, exp: i32) {
    let scalar = quant::scalar(ty).unwrap();
    let dot = quant::scalar(scalar.dot_type).unwrap();
    let n = blocks * ty.block_size();
    let mut rng = Rng(seed);
    let scale = 10f32.powi(exp);
    let y_max = max_of(ty).min(max_of(scalar.dot_type));
    let y = row(&mut rng, n, kind.wrapping_add(seed as u8 % 3), 1.0, y_max);
    let yq = quantize(&dot, &y);
    let yd = dequantize(&dot, &yq, n);
    let norm = |v: &[f32]| v.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    // Rows quantized by the scalar code (where the type has a quantizer), and random bytes:
    // every code and scale bit pattern.
    let mut rows = Vec::new();
    if scalar.quantize.is_some() {
        let x = row(&mut rng, n, kind, scale, max_of(ty));
        rows.push(quantize(&scalar, &x));
    }
    let len = ty.row_bytes(n as u64).unwrap() as usize;
    let mut raw: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    if ty == GgmlType::MXFP4 {
        // Scales up to 2^71: beyond that partial sums leave the f32 range in either order.
        for b in raw.chunks_exact_mut(17) {
            b[0] %= 200;
        }
    }
    rows.push(raw);
    // Random floats overflow an f32 sum that the scalar f64 sum survives: for the float types
    // the random bytes only check the conversion.
    let raw_dot = ty.block_size() > 1;
    let ys = shifted(&yq, off);
    let count = rows.len();
    for (r, xq) in rows.into_iter().enumerate() {
        let check_dot = r + 1 < count || raw_dot;
        let xd = dequantize(&scalar, &xq, n);
        let want_dot = (scalar.vec_dot.unwrap())(n, &xq, &yq) as f64;
        let bound = DOT_TOLERANCE * (want_dot.abs() + norm(&xd) * norm(&yd));
        let xs = shifted(&xq, off);
        for p in simd_paths() {
            let k = p
                .own_kernels(ty)
                .unwrap_or_else(|| panic!("{} has no {ty} kernels", p.name()));
            assert_eq!(k.dot_type, scalar.dot_type);
            let got = dequantize(&k, &xs[off..], n);
            for (i, (&a, &b)) in got.iter().zip(&xd).enumerate() {
                assert!(same(a, b), "{} {ty} dequantize [{i}]: {a} vs {b}", p.name());
            }
            if !check_dot {
                continue;
            }
            let d = (k.vec_dot.unwrap())(n, &xs[off..], &ys[off..]) as f64;
            assert!(
                d == want_dot
                    || (d - want_dot).abs() <= bound
                    || (!d.is_finite() && !want_dot.is_finite()),
                "{} {ty} dot of {n}: {d} vs scalar {want_dot} (bound {bound})",
                p.name()
            );
        }
    }
}

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

macro_rules! type_test {
    ($name:ident, $ty:expr, $max_blocks:expr) => {
        proptest! {
            #![proptest_config(cases())]
            #[test]
            fn $name(
                blocks in 1usize..=$max_blocks,
                off in 0usize..4,
                seed in any::<u64>(),
                kind in any::<u8>(),
                exp in -30i32..=8,
            ) {
                check_type($ty, blocks, off, seed, kind, exp);
            }
        }
    };
}

type_test!(f32_matches_scalar, GgmlType::F32, 300);
type_test!(f16_matches_scalar, GgmlType::F16, 300);
type_test!(bf16_matches_scalar, GgmlType::BF16, 300);
type_test!(iq4_nl_matches_scalar, GgmlType::IQ4NL, 9);
type_test!(iq4_xs_matches_scalar, GgmlType::IQ4XS, 4);
type_test!(mxfp4_matches_scalar, GgmlType::MXFP4, 9);
type_test!(iq1_s_matches_scalar, GgmlType::IQ1S, 3);
type_test!(iq1_m_matches_scalar, GgmlType::IQ1M, 3);
type_test!(iq2_xxs_matches_scalar, GgmlType::IQ2XXS, 3);
type_test!(iq2_xs_matches_scalar, GgmlType::IQ2XS, 3);
type_test!(iq2_s_matches_scalar, GgmlType::IQ2S, 3);
type_test!(iq3_xxs_matches_scalar, GgmlType::IQ3XXS, 3);
type_test!(iq3_s_matches_scalar, GgmlType::IQ3S, 3);

/// Every length of the float types from 1 to 200, where the tails of each loop differ.
#[test]
fn float_tails_at_every_length() {
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        for blocks in 1..=200 {
            check_type(ty, blocks, blocks % 4, blocks as u64, 0, 0);
        }
    }
}

/// Each covered type has kernels on every SIMD path of this CPU, registered in the path table.
#[test]
fn every_path_has_the_kernels() {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        assert!(simd_paths().contains(&Path::Avx2));
    }
    for p in simd_paths() {
        for ty in TYPES {
            let k = p
                .own_kernels(ty)
                .unwrap_or_else(|| panic!("{} {ty}", p.name()));
            assert!(
                k.dequantize.is_some() && k.vec_dot.is_some(),
                "{} {ty}",
                p.name()
            );
        }
    }
}
