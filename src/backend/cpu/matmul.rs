//! y = W·x on the CPU, for a batch of activation vectors.
//!
//! As ggml's `ggml_compute_forward_mul_mat`: the activations are quantized once per call to
//! the weight type's dot type (Q8_0, Q8_1, Q8_K, F16, F32), then every output is one `vec_dot`
//! of a weight row with an activation row, accumulated in f32, with the kernels of the path
//! chosen at start-up (`quant::best`). Rows are split in a few chunks per thread over the
//! current team's threads (`team::for_each`: the engine's, else rayon's); within a chunk, a
//! tile of rows small enough for L1 meets every activation vector before the next tile is read,
//! so that a batch reads each weight from memory once. From a few vectors on the avx512 path
//! (12 for the formats with a matvec kernel), rows go 16 at a time through a kernel that
//! unpacks them once for all vectors (`avx512::gemm`: the legacy formats, the K-quants,
//! IQ4_NL/XS and the float types). Fewer vectors of a 4-bit format (Q4_0, Q4_1, Q5_0, Q5_1,
//! IQ4_NL, IQ4_XS) go one at a time through a matvec kernel that reads the activation in a form
//! prepared once per call (`avx512::gemv`). A matrix too small to pay for waking the other
//! threads runs on the calling thread.

use super::team::{self, Parts};
use crate::error::{Error, Result};
use crate::model::WeightView;
use crate::quant::{self, GgmlType, VecDotFn};

/// Bytes of the quantized activations `matmul` needs for `batch` vectors of `w`'s input width
/// (and of their copy in the batched kernel's form, where it has one).
pub fn scratch_bytes(w: &WeightView, batch: usize) -> usize {
    let dot = quant::best(w.ty)
        .map(|k| k.dot_type)
        .unwrap_or(GgmlType::F32);
    let act = dot.row_bytes(w.cols as u64).unwrap_or(0) as usize * batch;
    let prep = match batched(w.ty, batch) {
        Some(g) => g.prepared_bytes(w.cols),
        None => matvec(w.ty).map_or(0, |_| gemv_prepared_bytes(w.cols)),
    };
    act + prep * batch
}

/// A raw pointer to the output that tasks write at disjoint indices.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint set of indices (its own rows, for every batch entry),
// and the pointer outlives the parallel loop that uses it.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out[b * w.rows + r] = dot(w.row(r), x[b * w.cols ..][..w.cols])` for `b < batch`.
///
/// `out`: (batch, w.rows), `x`: (batch, w.cols), `scratch`: at least
/// [`scratch_bytes`]`(w, batch)` bytes.
pub fn matmul(
    out: &mut [f32],
    x: &[f32],
    w: &WeightView,
    batch: usize,
    scratch: &mut [u8],
) -> Result<()> {
    matmul_many([out], x, [w], batch, scratch)
}

/// [`matmul`] of several matrices that read the same input (the query, key and value
/// projections; the gate and up projections), as one product: the activations are quantized
/// once and one parallel loop covers the rows of all of them, so a decode step hands out work
/// to the threads once instead of once per matrix. Matrices of different types or widths go
/// one at a time. `scratch`: at least [`scratch_bytes`] of the first matrix.
pub fn matmul_many<const N: usize>(
    outs: [&mut [f32]; N],
    x: &[f32],
    ws: [&WeightView; N],
    batch: usize,
    scratch: &mut [u8],
) -> Result<()> {
    let Some(&w0) = ws.first() else {
        return Ok(());
    };
    if ws.iter().any(|w| w.ty != w0.ty || w.cols != w0.cols) {
        for (out, w) in outs.into_iter().zip(ws) {
            matmul_many([out], x, [w], batch, scratch)?;
        }
        return Ok(());
    }
    let kernels = quant::best(w0.ty)
        .ok_or_else(|| Error::Unsupported(format!("matmul with {} weights", w0.ty)))?;
    let vec_dot: VecDotFn = kernels
        .vec_dot
        .ok_or_else(|| Error::Unsupported(format!("dot product of {} weights", w0.ty)))?;
    let quantize = quant::best(kernels.dot_type)
        .and_then(|k| k.quantize)
        .ok_or_else(|| {
            Error::Unsupported(format!("quantizing activations to {}", kernels.dot_type))
        })?;
    let cols = w0.cols;
    let xrow = kernels
        .dot_type
        .row_bytes(cols as u64)
        .ok_or_else(|| Error::Invalid(format!("{} values of {}", cols, kernels.dot_type)))?
        as usize;
    let wrow = w0.row_bytes();
    for (out, w) in outs.iter().zip(ws) {
        if out.len() < batch * w.rows
            || x.len() < batch * w.cols
            || scratch.len() < batch * xrow
            || w.data.len() < w.rows * wrow
            || w.ty.row_bytes(w.cols as u64) != Some(wrow as u64)
        {
            return Err(Error::Invalid(format!(
                "matmul shapes: out {} for {batch}x{} rows, x {} for {batch}x{} cols, scratch {} of {}, weight {} bytes for {} rows of {}",
                out.len(),
                w.rows,
                x.len(),
                w.cols,
                scratch.len(),
                batch * xrow,
                w.data.len(),
                w.rows,
                wrow
            )));
        }
    }

    // Quantize the activations once.
    let (act, prep) = scratch.split_at_mut(batch * xrow);
    if batch == 1 {
        quantize(&x[..cols], act, None);
    } else {
        let dst = Parts::new(act, xrow);
        team::for_each(batch, |b| {
            // SAFETY: each task takes the row of its own index.
            let dst = unsafe { dst.get(b) };
            quantize(&x[b * cols..(b + 1) * cols], dst, None);
        });
    }
    let act = &*act;

    // A large batch goes through the batched kernel, a smaller one a vector at a time
    // through the matvec kernel (where there is one), with the activations in their form.
    let mut gemm = batched(w0.ty, batch);
    let mut gemv = if gemm.is_none() { matvec(w0.ty) } else { None };
    let prepare = match (gemm, gemv) {
        (Some(g), _) => g.prepare.map(|f| (f, g.prepared_bytes(cols))),
        (None, Some(v)) => Some((v.prepare, gemv_prepared_bytes(cols))),
        (None, None) => None,
    };
    let mut kernel_act = (act, xrow);
    if let Some((prepare, prow)) = prepare {
        let n = (batch * prow).min(prep.len());
        let prep = &mut prep[..n];
        let ok = prep.len() == batch * prow
            && if batch == 1 {
                prepare(cols, act, prep)
            } else {
                let dst = Parts::new(prep, prow);
                let ok = std::sync::atomic::AtomicBool::new(true);
                team::for_each(batch, |b| {
                    // SAFETY: each task takes the row of its own index.
                    let dst = unsafe { dst.get(b) };
                    if !prepare(cols, &act[b * xrow..(b + 1) * xrow], dst) {
                        ok.store(false, std::sync::atomic::Ordering::Relaxed);
                    }
                });
                ok.into_inner()
            };
        if ok {
            kernel_act = (&*prep, prow);
        } else {
            (gemm, gemv) = (None, None);
        }
    }

    // Rows per L1 tile: about 8 KiB of weights.
    let tile = (8192 / wrow.max(1)).clamp(1, 64);
    let run = |w: &WeightView, r0: usize, r1: usize, outp: OutPtr| {
        if let Some(g) = gemm {
            run_tiled(
                g.run, vec_dot, w, wrow, act, xrow, kernel_act, batch, r0, r1, outp,
            );
            return;
        }
        if let Some(v) = gemv {
            // One vector reads the rows once however they are cut; more share a tile.
            let tile = if batch == 1 { r1 - r0 } else { tile };
            let mut t0 = r0;
            while t0 < r1 {
                let t1 = (t0 + tile).min(r1);
                run_matvec(
                    v.run, vec_dot, w, wrow, act, xrow, kernel_act, batch, t0, t1, outp,
                );
                t0 = t1;
            }
            return;
        }
        let mut t0 = r0;
        while t0 < r1 {
            let t1 = (t0 + tile).min(r1);
            rows_by_dot(vec_dot, w, wrow, act, xrow, batch, t0, t1, outp);
            t0 = t1;
        }
    };
    let outps = outs.map(|o| OutPtr(o.as_mut_ptr()));
    let rows: usize = ws.iter().map(|w| w.rows).sum();
    let n_threads = team::threads().max(1);
    // Weight bytes times activation vectors: below this the whole product takes a few
    // microseconds, about what waking a sleeping worker costs.
    if n_threads == 1 || rows * wrow * batch < SERIAL_BYTES {
        for (w, &outp) in ws.iter().zip(&outps) {
            run(w, 0, w.rows, outp);
        }
        return Ok(());
    }
    let mut chunk = rows.div_ceil(n_threads * 4).max(tile.min(rows));
    if gemm.is_some() {
        // Whole groups of rows: a partial one costs as much as a full one.
        chunk = chunk.next_multiple_of(ROWS);
    }
    // Chunks of each matrix, numbered across them: matrix i has chunks first[i] .. first[i+1].
    let mut first = [0usize; N];
    let mut n_chunks = 0;
    for (f, w) in first.iter_mut().zip(ws) {
        *f = n_chunks;
        n_chunks += w.rows.div_ceil(chunk);
    }
    team::for_each(n_chunks, |c| {
        let i = first.partition_point(|&f| f <= c) - 1;
        let (w, r0) = (ws[i], (c - first[i]) * chunk);
        run(w, r0, (r0 + chunk).min(w.rows), outps[i]);
    });
    Ok(())
}

#[cfg(target_arch = "x86_64")]
use crate::quant::arch::x86_64::avx512::gemm::{Gemm, GemmFn, ROWS};
#[cfg(target_arch = "x86_64")]
use crate::quant::arch::x86_64::prefetch_l2;

/// Fewer vectors than this go through the matvec kernel, where the format has one, rather
/// than the batched kernel: below it, unpacking a group of rows for all vectors costs more
/// than running each vector over rows still in L1 (SmolLM2's Q4_1 prompts of 4 and 8 tokens:
/// 664 and 740 tokens/s against 440 and 645; equal at 12).
#[cfg(target_arch = "x86_64")]
const GEMV_BATCH: usize = 12;

/// The batched kernel of `ty` for a batch of `batch`, where this build and CPU have one.
#[cfg(target_arch = "x86_64")]
fn batched(ty: GgmlType, batch: usize) -> Option<Gemm> {
    crate::quant::arch::x86_64::avx512::gemm::gemm(ty)
        .filter(|g| batch >= g.min_batch.max(2) && (batch >= GEMV_BATCH || matvec(ty).is_none()))
}

#[cfg(target_arch = "x86_64")]
use crate::quant::arch::x86_64::avx512::gemv::{Gemv, GemvFn};

/// The matvec kernel of `ty`, where this build and CPU have one.
#[cfg(target_arch = "x86_64")]
fn matvec(ty: GgmlType) -> Option<Gemv> {
    crate::quant::arch::x86_64::avx512::gemv::gemv(ty)
}

#[cfg(target_arch = "x86_64")]
fn gemv_prepared_bytes(cols: usize) -> usize {
    Gemv::prepared_bytes(cols)
}

/// Rows `t0..t1` for every activation vector through the matvec kernel, or through `vec_dot`
/// where it declines.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn run_matvec(
    f: GemvFn,
    vec_dot: VecDotFn,
    w: &WeightView,
    wrow: usize,
    act: &[u8],
    xrow: usize,
    (ka, krow): (&[u8], usize),
    batch: usize,
    t0: usize,
    t1: usize,
    outp: OutPtr,
) {
    for b in 0..batch {
        // SAFETY: b < batch and t1 <= w.rows, so the range is inside `out` (checked by
        // `matmul`); rows t0..t1 belong to this task alone, so no other task writes them.
        let out = unsafe { std::slice::from_raw_parts_mut(outp.0.add(b * w.rows + t0), t1 - t0) };
        let a = &ka[b * krow..(b + 1) * krow];
        if !f(w.cols, &w.data[t0 * wrow..t1 * wrow], wrow, t1 - t0, a, out) {
            let a = &act[b * xrow..(b + 1) * xrow];
            for (r, o) in (t0..t1).zip(out.iter_mut()) {
                *o = vec_dot(w.cols, &w.data[r * wrow..(r + 1) * wrow], a);
            }
        }
    }
}

/// No matvec kernels off x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy)]
struct Gemv {
    run: fn(),
    prepare: fn(usize, &[u8], &mut [u8]) -> bool,
}
#[cfg(not(target_arch = "x86_64"))]
fn matvec(_: GgmlType) -> Option<Gemv> {
    None
}
#[cfg(not(target_arch = "x86_64"))]
fn gemv_prepared_bytes(_: usize) -> usize {
    0
}
/// Never called off x86-64 (`matvec` returns no kernel): as `run_tiled` there.
#[cfg(not(target_arch = "x86_64"))]
use self::run_tiled as run_matvec;

/// No batched kernels off x86-64: every row by `vec_dot`.
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy)]
struct Gemm {
    run: GemmFn,
    prepare: Option<fn(usize, &[u8], &mut [u8]) -> bool>,
}
#[cfg(not(target_arch = "x86_64"))]
impl Gemm {
    fn prepared_bytes(&self, _: usize) -> usize {
        0
    }
}
#[cfg(not(target_arch = "x86_64"))]
type GemmFn = fn();
#[cfg(not(target_arch = "x86_64"))]
const ROWS: usize = 16;
#[cfg(not(target_arch = "x86_64"))]
fn batched(_: GgmlType, _: usize) -> Option<Gemm> {
    None
}

/// Rows `t0..t1` for every activation vector, one `vec_dot` per output.
#[allow(clippy::too_many_arguments)]
fn rows_by_dot(
    vec_dot: VecDotFn,
    w: &WeightView,
    wrow: usize,
    act: &[u8],
    xrow: usize,
    batch: usize,
    t0: usize,
    t1: usize,
    outp: OutPtr,
) {
    for b in 0..batch {
        let a = &act[b * xrow..(b + 1) * xrow];
        for r in t0..t1 {
            let v = vec_dot(w.cols, &w.data[r * wrow..(r + 1) * wrow], a);
            // SAFETY: b < batch and r < t1 <= w.rows, so the index is inside `out` (checked
            // by `matmul`); rows t0..t1 belong to this task alone, so no other task writes it.
            unsafe { *outp.0.add(b * w.rows + r) = v };
        }
    }
}

/// Rows `t0..t1` for every activation vector, a group of rows per kernel call; a group the
/// kernel declines goes through `vec_dot`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn run_tiled(
    f: GemmFn,
    vec_dot: VecDotFn,
    w: &WeightView,
    wrow: usize,
    act: &[u8],
    xrow: usize,
    (ka, krow): (&[u8], usize),
    batch: usize,
    t0: usize,
    t1: usize,
    outp: OutPtr,
) {
    for r0 in (t0..t1).step_by(ROWS) {
        let nr = (t1 - r0).min(ROWS);
        // The kernel gathers a word of each of its rows per block: sixteen short streams that
        // the hardware prefetchers do not follow. The next group's rows are one contiguous
        // range: fetch it into L2 while this group computes (prompts of 4 to 128 tokens 5-80%
        // faster).
        let next = (r0 + ROWS) * wrow;
        let end = (t1 * wrow).min(w.data.len());
        if next < end {
            prefetch_l2(w.data[next..].as_ptr(), (ROWS * wrow).min(end - next));
        }
        let mut put = |c: usize, v: &[f32]| {
            if c < batch && v.len() <= nr {
                // SAFETY: c < batch and r0 + v.len() <= r0 + nr <= t1 <= w.rows, so the
                // range is inside `out` (checked by `matmul`); these rows belong to this task
                // alone.
                let dst = unsafe { outp.0.add(c * w.rows + r0) };
                for (k, &x) in v.iter().enumerate() {
                    // SAFETY: k < v.len(), inside the range above.
                    unsafe { *dst.add(k) = x };
                }
            }
        };
        let done = f(
            w.cols,
            &w.data[r0 * wrow..(r0 + nr) * wrow],
            wrow,
            nr,
            ka,
            krow,
            batch,
            &mut put,
        );
        if !done {
            rows_by_dot(vec_dot, w, wrow, act, xrow, batch, r0, r0 + nr, outp);
        }
    }
}
/// No batched kernels off x86-64 (`batched` never returns one): every row by `vec_dot`.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
fn run_tiled(
    _: GemmFn,
    vec_dot: VecDotFn,
    w: &WeightView,
    wrow: usize,
    act: &[u8],
    xrow: usize,
    _: (&[u8], usize),
    batch: usize,
    t0: usize,
    t1: usize,
    outp: OutPtr,
) {
    rows_by_dot(vec_dot, w, wrow, act, xrow, batch, t0, t1, outp);
}

/// Work (weight bytes x batch) under which `matmul` stays on the calling thread.
const SERIAL_BYTES: usize = 32 * 1024;
