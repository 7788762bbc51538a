//! Kernel throughput: dequantize, activation quantize and dot product, per kernel path.
//!
//! Each kernel runs over a working set that stays in cache, repeated for a fixed time; the
//! best of three rounds counts, which keeps the figure stable when the machine is busy.

use crate::quant::check::KernelPath;
use crate::quant::{GgmlType, Kernels};
use serde::Serialize;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// GB/s of one path for one type; `None` where the path has no kernel of its own.
#[derive(Clone, Debug, Serialize)]
pub struct PathSpeed {
    pub path: &'static str,
    /// Quantized bytes read per second by dequantization.
    pub dequantize: Option<f64>,
    /// f32 activation bytes read per second by the quantizer of the dot type.
    pub activation: Option<f64>,
    /// Quantized weight bytes read per second by the dot product.
    pub dot: Option<f64>,
}

/// Runs `f` (which processes `bytes` bytes) for about `budget`, in three rounds, and returns
/// the best rate in GB/s.
fn rate(bytes: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: caches, page faults, frequency
    let round = budget / 3;
    let mut best = 0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let mut reps = 0u64;
        while reps == 0 || start.elapsed() < round {
            f();
            reps += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        best = best.max(bytes as f64 * reps as f64 / secs / 1e9);
    }
    best
}

/// Test data for one type: `rows` rows of `n` values, quantized by the scalar reference, and
/// activations quantized to the dot type.
pub struct Workload {
    pub n: usize,
    pub rows: usize,
    pub x: Vec<f32>,
    pub q: Vec<u8>,
    pub yq: Vec<u8>,
    pub row_bytes: usize,
    pub dot_row_bytes: usize,
}

impl Workload {
    /// `None` when `ty` or its dot type cannot quantize rows of `n`.
    pub fn new(scalar: &Kernels, n: usize, rows: usize, seed: u64) -> Option<Workload> {
        let ty = scalar.ty;
        let row_bytes = ty.row_bytes(n as u64)? as usize;
        let dot_row_bytes = scalar.dot_type.row_bytes(n as u64)? as usize;
        let quantize = scalar.quantize?;
        let dot_quantize = crate::quant::scalar(scalar.dot_type)?.quantize?;
        let x = super::rng::Rng::new(seed).gaussians(n * rows);
        let ones = vec![1.0f32; n];
        let imatrix = super::accuracy::needs_imatrix(ty).then_some(&ones[..]);
        let mut q = vec![0u8; row_bytes * rows];
        for (src, dst) in x.chunks_exact(n).zip(q.chunks_exact_mut(row_bytes)) {
            quantize(src, dst, imatrix);
        }
        let mut yq = vec![0u8; dot_row_bytes * rows];
        for (src, dst) in x.chunks_exact(n).zip(yq.chunks_exact_mut(dot_row_bytes)) {
            dot_quantize(src, dst, None);
        }
        Some(Workload {
            n,
            rows,
            x,
            q,
            yq,
            row_bytes,
            dot_row_bytes,
        })
    }
}

/// Throughput of `path`'s own kernels for the workload's type.
pub fn measure(path: &KernelPath, ty: GgmlType, w: &Workload, budget: Duration) -> PathSpeed {
    let own = (path.kernels)(ty);
    let dot_type = own.map(|k| k.dot_type);
    let act = dot_type
        .and_then(|t| (path.kernels)(t))
        .and_then(|k| k.quantize);
    let mut out = vec![0f32; w.n];
    let mut yq = vec![0u8; w.dot_row_bytes];
    let dequantize = own.and_then(|k| k.dequantize).map(|f| {
        rate(w.q.len(), budget, || {
            for r in w.q.chunks_exact(w.row_bytes) {
                f(black_box(r), &mut out);
            }
            black_box(&out);
        })
    });
    let activation = act.map(|f| {
        rate(w.x.len() * 4, budget, || {
            for r in w.x.chunks_exact(w.n) {
                f(black_box(r), &mut yq, None);
            }
            black_box(&yq);
        })
    });
    let dot = own.and_then(|k| k.vec_dot).map(|f| {
        rate(w.q.len(), budget, || {
            let mut s = 0f32;
            for (x, y) in
                w.q.chunks_exact(w.row_bytes)
                    .zip(w.yq.chunks_exact(w.dot_row_bytes))
            {
                s += f(w.n, black_box(x), black_box(y));
            }
            black_box(s);
        })
    });
    PathSpeed {
        path: path.name,
        dequantize,
        activation,
        dot,
    }
}
