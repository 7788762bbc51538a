//! The CPU backend: small kernels over f32 activations, as ggml's CPU ops compute them.
//!
//! Kernels take `(out, in, weights, dims)`; the maths is in each comment.

pub mod fast;
pub mod matmul;
pub mod team;

pub use matmul::matmul;

use crate::model::RopeStyle;
use half::f16;
use std::sync::OnceLock;

/// out = x / sqrt(mean(x^2) + eps) * w, per row of `w.len()` values (ggml_rms_norm + ggml_mul).
pub fn rms_norm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let n = w.len();
    for (o, x) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
        // ggml sums the squares in double precision.
        let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for i in 0..n {
            o[i] = (x[i] * scale) * w[i];
        }
    }
}

/// rms_norm in place, per row of `w.len()` values.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    for x in x.chunks_exact_mut(n) {
        let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for i in 0..n {
            x[i] = (x[i] * scale) * w[i];
        }
    }
}

/// x += y
pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// x *= s
pub fn scale(x: &mut [f32], s: f32) {
    for a in x {
        *a *= s;
    }
}

/// The cos/sin table of one position, as ggml's `ggml_rope_cache_init` builds it:
/// theta_i = pos * scale * base^(-2i/n_rot) / factor_i, with the power taken by repeated
/// multiplication in f32. `cs`: (n_rot,) as [cos, sin] pairs.
pub fn rope_cache(cs: &mut [f32], pos: i64, base: f32, scale: f32, factors: Option<&[f32]>) {
    let n_rot = cs.len();
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let mut theta = pos as f32;
    for i in 0..n_rot / 2 {
        let ff = factors.map_or(1.0, |f| f[i]);
        let t = scale * (theta / ff);
        cs[2 * i] = t.cos();
        cs[2 * i + 1] = t.sin();
        theta *= theta_scale;
    }
}

/// Rotates the first `cs.len()` dimensions of every head of `x` (heads of `head_dim`).
pub fn rope(x: &mut [f32], head_dim: usize, cs: &[f32], style: RopeStyle) {
    let n_rot = cs.len();
    for h in x.chunks_exact_mut(head_dim) {
        for i in 0..n_rot / 2 {
            let (c, s) = (cs[2 * i], cs[2 * i + 1]);
            let (a, b) = match style {
                RopeStyle::Normal => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + n_rot / 2),
            };
            let (x0, x1) = (h[a], h[b]);
            h[a] = x0 * c - x1 * s;
            h[b] = x0 * s + x1 * c;
        }
    }
}

/// silu(x) = x / (1 + e^-x); out = silu(gate) * up (ggml_swiglu).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = (*g / (1.0 + (-*g).exp())) * u;
    }
}

/// gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))), as ggml's CPU computes it: from a
/// table over f16 inputs with f16 results, exact outside [-10, 10]. One entry more than the
/// 65536 inputs, so that a 4-byte gather at the last index stays inside the table.
fn gelu_table() -> &'static [f16] {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| {
                let x = f16::from_bits(bits).to_f32();
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                const A: f32 = 0.044715;
                f16::from_f32(0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + A * x * x)).tanh()))
            })
            .chain([f16::ZERO])
            .collect()
    })
}

/// out = gelu(gate) * up (ggml_geglu with GGML_GELU_FP16).
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    let n = gate.len().min(up.len());
    let done = fast::geglu_table(&mut gate[..n], &up[..n], table);
    for (g, u) in gate[done..n].iter_mut().zip(&up[done..n]) {
        let x = *g;
        let y = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x
        } else {
            table[f16::from_f32(x).to_bits() as usize].to_f32()
        };
        *g = y * u;
    }
}

/// Builds the tables the kernels use, so that none is built in the token loop.
pub fn init_tables() {
    gelu_table();
}

/// In-place softmax with ggml's order: max, e^(x - max) summed in double, then scaled.
pub fn softmax(x: &mut [f32]) {
    // Eight running maxima and four partial sums, so that neither loop waits on its previous
    // step (`>` rather than `f32::max`, whose NaN rule keeps the compiler from vectorizing):
    // 1.8 against 3.2 ns per value over 256 scores, most of it `exp`.
    let mut maxes = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (m, &v) in maxes.iter_mut().zip(c) {
            if v > *m {
                *m = v;
            }
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&maxes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sums = [0.0f64; 4];
    let mut chunks = x.chunks_exact_mut(4);
    for c in &mut chunks {
        for (s, v) in sums.iter_mut().zip(c) {
            *v = (*v - max).exp();
            *s += *v as f64;
        }
    }
    for v in chunks.into_remainder() {
        *v = (*v - max).exp();
        sums[0] += *v as f64;
    }
    let sum = (sums[0] + sums[1]) + (sums[2] + sums[3]);
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rotating by p then by -d equals rotating by p - d: what the context shift relies on.
    #[test]
    fn rope_rotations_compose() {
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let x: Vec<f32> = (0..64)
                .map(|i| ((i * 37 % 17) as f32 - 8.0) / 4.0)
                .collect();
            let (mut a, mut b) = (x.clone(), x.clone());
            let mut cs = vec![0f32; 32];
            rope_cache(&mut cs, 300, 10000.0, 1.0, None);
            rope(&mut a, 64, &cs, style);
            rope_cache(&mut cs, -120, 10000.0, 1.0, None);
            rope(&mut a, 64, &cs, style);
            rope_cache(&mut cs, 180, 10000.0, 1.0, None);
            rope(&mut b, 64, &cs, style);
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() < 1e-3, "{style:?}: {u} vs {v}");
            }
            // Dimensions past n_rot are untouched.
            assert_eq!(a[32..], x[32..]);
        }
    }

    #[test]
    fn rms_norm_matches_definition() {
        let x = [1.0f32, -2.0, 3.0, -4.0];
        let w = [1.0f32, 0.5, 2.0, 1.0];
        let mut out = [0f32; 4];
        rms_norm(&mut out, &x, &w, 1e-6);
        let rms = ((1.0 + 4.0 + 9.0 + 16.0) / 4.0f32 + 1e-6).sqrt();
        for i in 0..4 {
            assert!((out[i] - x[i] / rms * w[i]).abs() < 1e-6);
        }
    }

    /// Against the plain loop (one maximum, one running sum): the same values to rounding, for
    /// lengths on and off the chunk sizes, with masked (-inf) scores.
    #[test]
    fn softmax_equals_the_plain_loop() {
        for n in [1usize, 3, 4, 7, 8, 9, 37, 256, 1001] {
            let x: Vec<f32> = (0..n)
                .map(|i| match i % 11 {
                    5 => f32::NEG_INFINITY,
                    k => (i * 7919 % 1000) as f32 / 50.0 - 10.0 + k as f32,
                })
                .collect();
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = x.iter().map(|&v| (v - max).exp()).collect();
            let sum: f64 = e.iter().map(|&v| v as f64).sum();
            let mut got = x.clone();
            softmax(&mut got);
            for (g, &v) in got.iter().zip(&e) {
                let want = v * (1.0 / sum) as f32;
                assert!(
                    (g - want).abs() <= 1e-7 * want.max(1e-30),
                    "n {n}: {g} vs {want}"
                );
            }
        }
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = [1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(x[3], 0.0);
        assert!(x[2] > x[1] && x[1] > x[0]);
    }

    #[test]
    fn geglu_uses_the_f16_table() {
        let mut g = [0.5f32, -11.0, 11.0];
        geglu(&mut g, &[2.0, 1.0, 1.0]);
        let gelu = |x: f32| 0.5 * x * (1.0 + (0.797_884_6 * x * (1.0 + 0.044715 * x * x)).tanh());
        assert!((g[0] - 2.0 * gelu(0.5)).abs() < 1e-3);
        assert_eq!(g[1], 0.0);
        assert_eq!(g[2], 11.0);
    }

    /// The vector path equals the table lookup bit for bit, across the range and its edges.
    #[test]
    fn geglu_vector_path_equals_the_table() {
        let n = 4099;
        let gate: Vec<f32> = (0..n)
            .map(|i| match i % 7 {
                0 => -10.0,
                1 => 10.0,
                _ => (i as f32 * 0.37).sin() * 14.0,
            })
            .collect();
        let up: Vec<f32> = (0..n).map(|i| 1.0 + (i as f32 * 0.11).cos()).collect();
        let mut got = gate.clone();
        geglu(&mut got, &up);
        let table = gelu_table();
        for i in 0..n {
            let x = gate[i];
            let y = if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                x
            } else {
                table[f16::from_f32(x).to_bits() as usize].to_f32()
            };
            assert_eq!(got[i].to_bits(), (y * up[i]).to_bits(), "x = {x}");
        }
    }
}
