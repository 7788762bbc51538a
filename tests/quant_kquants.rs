//! The k-quant kernels (Q2_K .. Q6_K, Q8_K) against ggml's reference vectors, and their round
//! trip and dot products on random rows.

mod common;

use common::{check_quant, reference};
use proptest::prelude::*;
use strait::gguf::GgufFile;
use strait::quant::{self, GgmlType, QK_K};

const KQUANTS: [GgmlType; 5] = [
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

#[test]
fn q2_k_matches_ggml() {
    assert_eq!(check_quant(GgmlType::Q2K), Vec::<&str>::new());
}

#[test]
fn q3_k_matches_ggml() {
    assert_eq!(check_quant(GgmlType::Q3K), Vec::<&str>::new());
}

#[test]
fn q4_k_matches_ggml() {
    assert_eq!(check_quant(GgmlType::Q4K), Vec::<&str>::new());
}

#[test]
fn q5_k_matches_ggml() {
    assert_eq!(check_quant(GgmlType::Q5K), Vec::<&str>::new());
}

#[test]
fn q6_k_matches_ggml() {
    assert_eq!(check_quant(GgmlType::Q6K), Vec::<&str>::new());
}

/// Q8_K is a dot type only: its file has `x` and `x.q` (no `x.dq`, no importance matrix).
/// Its dequantizer is checked below against the dot products ggml computed with it.
#[test]
fn q8_k_matches_ggml() {
    assert_eq!(
        check_quant(GgmlType::Q8K),
        vec!["dequantize", "quantize_imatrix"]
    );
}

/// Q8_K rounds to nearest with an f32 scale `amax / 127`: half a step, plus the f32 rounding
/// of the scale, of `x * iscale` (up to 127 * 2^-24 steps each) and of `d * q`.
const Q8K_REL: f64 = (0.5 + 4e-5) / 127.0;

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&u, &v)| u as f64 * v as f64).sum()
}

fn norm(a: &[f32]) -> f64 {
    dot64(a, a).sqrt()
}

/// ggml's dots of `x.q` with `y.q` equal the exact dot of ggml's `x.dq` with our dequantized
/// `y.q` (the reference README measured 3e-8 of the scale for the k-quants), and every
/// dequantized activation is within half a step of `y`.
#[test]
fn q8_k_dequantize_reproduces_ggml_dots() {
    for ty in KQUANTS {
        let path = reference(&format!("quant/{}.gguf", ty.name().to_lowercase()));
        let f = GgufFile::open(&path).unwrap();
        let tensor = |name| f.data(f.require(name).unwrap());
        let xdq = f32s(tensor("x.dq"));
        let y = f32s(tensor("y"));
        let yq = tensor("y.q");
        let dot = f32s(tensor("dot"));
        let n = f.require("y").unwrap().row_len() as usize;
        let (xrows, yrows) = (xdq.len() / n, y.len() / n);
        assert_eq!(dot.len(), xrows * yrows);

        let mut ydq = vec![0f32; y.len()];
        quant::dequantize_row(GgmlType::Q8K, yq, &mut ydq).unwrap();
        for (b, (yb, qb)) in y.chunks(QK_K).zip(ydq.chunks(QK_K)).enumerate() {
            let amax = yb.iter().fold(0f32, |a, &v| a.max(v.abs())) as f64;
            for (k, (&u, &v)) in yb.iter().zip(qb).enumerate() {
                let err = (u as f64 - v as f64).abs();
                assert!(
                    err <= Q8K_REL * amax,
                    "{ty} y block {b} value {k}: {u} dequantized to {v}"
                );
            }
        }
        for i in 0..xrows {
            let xr = &xdq[i * n..(i + 1) * n];
            for j in 0..yrows {
                let yr = &ydq[j * n..(j + 1) * n];
                let want = dot[i * yrows + j] as f64;
                let exact = dot64(xr, yr);
                let scale = want.abs() + norm(xr) * norm(&y[j * n..(j + 1) * n]);
                assert!(
                    (exact - want).abs() <= 1e-6 * scale + f64::from(f32::MIN_POSITIVE),
                    "{ty} x row {i} y row {j}: exact {exact} vs ggml {want}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Random rows.

/// Largest |x - dequantized| in a block is at most `rel * amax(block) + abs`: `rel` is a
/// generous multiple of the worst seen over many rows; `abs` is twice the largest error the
/// f16 super-block scales alone can cause when they are subnormal (half a subnormal step,
/// 2^-25, times the largest sub-block scale code times the largest quant, plus the min term).
fn round_trip_bound(ty: GgmlType) -> (f64, f64) {
    let step = 2f64.powi(-24);
    match ty {
        GgmlType::Q2K => (1.0, step * (15.0 * 3.0 + 15.0)),
        GgmlType::Q3K => (0.5, step * 32.0 * 4.0),
        GgmlType::Q4K => (0.25, step * (63.0 * 15.0 + 63.0)),
        GgmlType::Q5K => (0.15, step * (63.0 * 31.0 + 63.0)),
        GgmlType::Q6K => (0.2, step * 128.0 * 32.0),
        GgmlType::Q8K => (Q8K_REL, 0.0),
        _ => unreachable!(),
    }
}

/// A deterministic generator, so that one proptest seed makes whole rows cheaply.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly gaussian in -2..2.
    fn gauss(&mut self) -> f64 {
        (0..4).map(|_| self.next()).sum::<f64>() - 2.0
    }
}

/// A row of `n` values of one of several shapes, scaled by `scale`.
fn make_row(kind: u8, n: usize, scale: f64, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed | 1);
    let c = r.next() * 2.0 - 1.0;
    (0..n)
        .map(|i| {
            let v = match kind {
                0 => r.gauss(),
                1 => r.next() * 2.0 - 1.0,
                // a few outliers 100x above the rest
                2 => {
                    if r.next() < 0.02 {
                        r.gauss()
                    } else {
                        0.01 * r.gauss()
                    }
                }
                3 => 0.0,
                4 => c,
                5 => r.next(),
                6 => -r.next(),
                // heavy tails
                7 => r.gauss().powi(3),
                // extremes of both signs
                8 => {
                    if i % 2 == 0 {
                        1.0
                    } else {
                        -1.0
                    }
                }
                // sparse
                _ => {
                    if r.next() < 0.1 {
                        r.gauss()
                    } else {
                        0.0
                    }
                }
            };
            (v * scale) as f32
        })
        .collect()
}

fn quantize(ty: GgmlType, x: &[f32], imatrix: Option<&[f32]>) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quant::quantize_row(ty, x, &mut q, imatrix).unwrap();
    q
}

fn dequantize(ty: GgmlType, q: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    quant::dequantize_row(ty, q, &mut y).unwrap();
    y
}

fn check_round_trip(ty: GgmlType, x: &[f32], imatrix: Option<&[f32]>) -> Vec<f32> {
    let dq = dequantize(ty, &quantize(ty, x, imatrix), x.len());
    let (rel, abs) = round_trip_bound(ty);
    for (b, (xb, qb)) in x.chunks(QK_K).zip(dq.chunks(QK_K)).enumerate() {
        let amax = xb.iter().fold(0f32, |a, &v| a.max(v.abs())) as f64;
        let bound = rel * amax + abs;
        for (k, (&u, &v)) in xb.iter().zip(qb).enumerate() {
            let err = (u as f64 - v as f64).abs();
            assert!(
                err <= bound,
                "{ty} block {b} value {k}: {u} -> {v}, error {err} > {bound} (amax {amax}, imatrix {})",
                imatrix.is_some()
            );
        }
    }
    dq
}

fn lengths() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![256usize, 512, 768, 1024, 2304])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// quantize -> dequantize stays within the bound of each type, with and without an
    /// importance matrix, and `vec_dot` with quantized activations equals the f64 dot of the
    /// dequantized rows within the reference tolerance.
    #[test]
    fn round_trip_and_dot(
        n in lengths(),
        kind in 0u8..10,
        exp in -6.0f64..4.0,
        seed in any::<u64>(),
    ) {
        let scale = 10f64.powf(exp);
        let x = make_row(kind, n, scale, seed);
        let mut r = Rng(seed.rotate_left(17) | 1);
        let imatrix: Vec<f32> = (0..n).map(|_| (0.01 + r.next()) as f32).collect();
        let y: Vec<f32> = (0..n).map(|_| (r.gauss() * scale) as f32).collect();
        let yq = quantize(GgmlType::Q8K, &y, None);
        let ydq = check_round_trip(GgmlType::Q8K, &y, None);
        for ty in KQUANTS {
            check_round_trip(ty, &x, Some(&imatrix));
            let xq = quantize(ty, &x, None);
            let xdq = check_round_trip(ty, &x, None);
            let got = quant::vec_dot(ty, n, &xq, &yq).unwrap() as f64;
            let want = dot64(&xdq, &ydq);
            let tol = 1e-5 * (want.abs() + norm(&xdq) * norm(&ydq)) + f64::from(f32::MIN_POSITIVE);
            prop_assert!((got - want).abs() <= tol, "{} dot {} vs {}", ty, got, want);
        }
    }

    /// Non-finite and extreme inputs never panic, and like ggml they only affect their own
    /// block: every other block is quantized as if alone.
    #[test]
    fn bad_values_stay_in_their_block(
        kind in 0u8..10,
        bad in prop::sample::select(vec![
            f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN,
            1e-45, -0.0, 3e38, 1e-38,
        ]),
        at in 0usize..QK_K,
        seed in any::<u64>(),
    ) {
        let n = 3 * QK_K;
        let mut x = make_row(kind, n, 1.0, seed);
        x[QK_K + at] = bad;
        let imatrix = vec![0.5f32; n];
        let y = make_row(0, n, 1.0, seed ^ 0x5555);
        let yq = quantize(GgmlType::Q8K, &y, None);
        for ty in KQUANTS.into_iter().chain([GgmlType::Q8K]) {
            let bs = ty.row_bytes(QK_K as u64).unwrap() as usize;
            for im in [None, Some(&imatrix[..])] {
                let q = quantize(ty, &x, im);
                let dq = dequantize(ty, &q, n);
                prop_assert_eq!(dq.len(), n);
                if ty != GgmlType::Q8K {
                    let _ = quant::vec_dot(ty, n, &q, &yq).unwrap();
                }
                for b in [0, 2] {
                    let alone = quantize(ty, &x[b * QK_K..(b + 1) * QK_K], im.map(|w| &w[..QK_K]));
                    prop_assert_eq!(&q[b * bs..(b + 1) * bs], &alone[..], "{} block {}", ty, b);
                }
            }
        }
    }
}

/// The k-quant tensors of a real model (gemma-3 270M Q4_K_M: Q4_K and Q6_K): every row of
/// every tensor dequantizes to finite values, and the dot product of a few rows with
/// quantized activations equals the f64 dot of the dequantized rows.
#[test]
fn real_model_k_quant_tensors() {
    let f = GgufFile::open(common::model(common::GEMMA3)).unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for t in f.tensors() {
        if !KQUANTS.contains(&t.ty) {
            continue;
        }
        *seen.entry(t.ty.name()).or_insert(0) += 1;
        let n = t.row_len() as usize;
        let data = f.data(t);
        let row_bytes = t.row_bytes() as usize;
        let mut dq = vec![0f32; data.len() / row_bytes * n];
        quant::dequantize_row(t.ty, data, &mut dq).unwrap();
        assert!(dq.iter().all(|v| v.is_finite()), "{}", t.name);

        let mut r = Rng(0x9e3779b97f4a7c15);
        let y: Vec<f32> = (0..n).map(|_| r.gauss() as f32).collect();
        let yq = quantize(GgmlType::Q8K, &y, None);
        let ydq = dequantize(GgmlType::Q8K, &yq, n);
        for (i, xq) in data.chunks_exact(row_bytes).take(8).enumerate() {
            let xdq = &dq[i * n..(i + 1) * n];
            let got = quant::vec_dot(t.ty, n, xq, &yq).unwrap() as f64;
            let want = dot64(xdq, &ydq);
            let tol = 1e-5 * (want.abs() + norm(xdq) * norm(&ydq));
            assert!(
                (got - want).abs() <= tol,
                "{} row {i}: {got} vs {want}",
                t.name
            );
        }
    }
    assert!(
        seen.contains_key("Q4_K") && seen.contains_key("Q6_K"),
        "{seen:?}"
    );
}
