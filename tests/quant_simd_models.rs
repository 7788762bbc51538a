//! Every SIMD kernel path against the scalar code on the weights of the two real test models
//! (SmolLM2: Q4_1, Q8_0; gemma3: Q4_K, Q6_K, Q5_0, Q8_0): every tensor of each type, 16
//! rows each, dequantized bit for bit and dotted with quantized activations within the
//! reference tolerance.

mod common;

use strait::gguf::GgufFile;
use strait::quant::arch::{supported, Path};
use strait::quant::{self, GgmlType};

/// Deterministic activations in -2..2.
fn activations(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// Checks up to `rows` rows of every tensor of the given types; returns how many rows of
/// each type were checked on each SIMD path.
fn check_model(file: &str, types: &[GgmlType], rows: u64) -> Vec<(GgmlType, usize)> {
    let f = GgufFile::open(common::model(file)).unwrap();
    let paths: Vec<Path> = supported()
        .into_iter()
        .filter(|&p| p != Path::Scalar)
        .collect();
    assert!(!paths.is_empty(), "no SIMD path on this CPU");
    let mut counts: Vec<(GgmlType, usize)> = types.iter().map(|&t| (t, 0)).collect();
    for t in f.tensors() {
        let Some(slot) = counts.iter_mut().find(|(ty, _)| *ty == t.ty) else {
            continue;
        };
        let sk = quant::scalar(t.ty).unwrap();
        let dt = quant::scalar(sk.dot_type).unwrap();
        let n = t.row_len() as usize;
        let rb = t.row_bytes() as usize;
        let data = f.data(t);
        let y = activations(n, t.offset);
        let mut yq = vec![0u8; sk.dot_type.row_bytes(n as u64).unwrap() as usize];
        (dt.quantize.unwrap())(&y, &mut yq, None);
        for r in 0..t.n_rows().min(rows) as usize {
            let row = &data[r * rb..(r + 1) * rb];
            let mut want = vec![0f32; n];
            (sk.dequantize.unwrap())(row, &mut want);
            let dot = (sk.vec_dot.unwrap())(n, row, &yq) as f64;
            let scale = dot.abs() + norm(&want) * norm(&y);
            for &p in &paths {
                let k = p.own_kernels(t.ty).unwrap();
                let mut got = vec![0f32; n];
                (k.dequantize.unwrap())(row, &mut got);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} {} row {r}: dequantize differs", p.name(), t.name);
                let d = (k.vec_dot.unwrap())(n, row, &yq) as f64;
                assert!(
                    (d - dot).abs() <= 1e-5 * scale,
                    "{} {} row {r}: dot {d:e} vs scalar {dot:e}",
                    p.name(),
                    t.name
                );
            }
            slot.1 += 1;
        }
    }
    counts
}

#[test]
fn smollm2_weights() {
    let counts = check_model(common::SMOLLM2, &[GgmlType::Q4_1, GgmlType::Q8_0], 16);
    for (ty, c) in counts {
        assert!(c > 0, "no {ty} rows in {}", common::SMOLLM2);
    }
}

#[test]
fn gemma3_weights() {
    let types = [GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q5_0, GgmlType::Q8_0];
    let counts = check_model(common::GEMMA3, &types, 16);
    for (ty, c) in counts {
        assert!(c > 0, "no {ty} rows in {}", common::GEMMA3);
    }
}
