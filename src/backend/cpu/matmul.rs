//! y = W·x on the CPU, for a batch of activation vectors.
//!
//! As ggml's `ggml_compute_forward_mul_mat`: the activations are quantized once per call to
//! the weight type's dot type (Q8_0, Q8_1, Q8_K, F16, F32), then every output is one `vec_dot`
//! of a weight row with an activation row, accumulated in f32. Rows are split over the rayon
//! threads; each task walks its rows for every activation vector so that a row stays in cache.

use crate::error::{Error, Result};
use crate::model::WeightView;
use crate::quant::{self, GgmlType, VecDotFn};
use rayon::prelude::*;

/// Bytes of the quantized activations `matmul` needs for `batch` vectors of `w`'s input width.
pub fn scratch_bytes(w: &WeightView, batch: usize) -> usize {
    let dot = quant::scalar(w.ty)
        .map(|k| k.dot_type)
        .unwrap_or(GgmlType::F32);
    dot.row_bytes(w.cols as u64).unwrap_or(0) as usize * batch
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
    let kernels = quant::scalar(w.ty)
        .ok_or_else(|| Error::Unsupported(format!("matmul with {} weights", w.ty)))?;
    let vec_dot: VecDotFn = super::fast::vec_dot(w.ty)
        .or(kernels.vec_dot)
        .ok_or_else(|| Error::Unsupported(format!("dot product of {} weights", w.ty)))?;
    let quantize = quant::scalar(kernels.dot_type)
        .and_then(|k| k.quantize)
        .ok_or_else(|| {
            Error::Unsupported(format!("quantizing activations to {}", kernels.dot_type))
        })?;
    let xrow = kernels
        .dot_type
        .row_bytes(w.cols as u64)
        .ok_or_else(|| Error::Invalid(format!("{} values of {}", w.cols, kernels.dot_type)))?
        as usize;
    let wrow = w.row_bytes();
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

    // Quantize the activations once.
    let act = &mut scratch[..batch * xrow];
    act.par_chunks_mut(xrow)
        .zip(x.par_chunks(w.cols))
        .for_each(|(dst, src)| quantize(src, dst, None));
    let act = &*act;

    let n_threads = rayon::current_num_threads().max(1);
    let chunk = (w.rows / (n_threads * 8)).clamp(4, 64);
    let n_chunks = w.rows.div_ceil(chunk);
    let outp = OutPtr(out.as_mut_ptr());
    (0..n_chunks).into_par_iter().for_each(|c| {
        // Capture the whole wrapper, not its raw-pointer field (which is not Send).
        #[allow(clippy::redundant_locals)]
        let outp = outp;
        let r0 = c * chunk;
        let r1 = (r0 + chunk).min(w.rows);
        for b in 0..batch {
            let a = &act[b * xrow..(b + 1) * xrow];
            for r in r0..r1 {
                let v = vec_dot(w.cols, &w.data[r * wrow..(r + 1) * wrow], a);
                // SAFETY: b < batch and r < w.rows, so the index is inside `out` (checked
                // above); rows r0..r1 belong to this task alone, so no other task writes it.
                unsafe { *outp.0.add(b * w.rows + r) = v };
            }
        }
    });
    Ok(())
}
