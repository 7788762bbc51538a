//! Q8_K: 256 int8 values with an f32 scale and the sums of each 16, the activation type of the
//! k-quant and i-quant dot products. The block layout is `blocks::BlockQ8K`.

use super::super::blocks::{F32Le, I16Le};
use super::{abs_max, dequantize_blocks, nearest_int, quantize_blocks, BlockQ8K, QK_K};

/// `quantize_row_q8_K_ref` (the CPU backend's `quantize_row_q8_K` calls it on every
/// architecture): `d = max / -127` with the signed value of largest magnitude, so that value
/// maps to -127; quants clamped above at 127.
pub(super) fn quantize(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    quantize_blocks(src, dst, None, quantize_block);
}

pub(crate) fn quantize_block(x: &[f32], y: &mut BlockQ8K, _qw: Option<&[f32]>) {
    let (amax, max) = abs_max(x);
    if amax == 0.0 {
        // ggml leaves `bsums` as they were; zero is what they sum to.
        *y = bytemuck::Zeroable::zeroed();
        return;
    }
    let iscale = -127.0 / max;
    for (q, &v) in y.qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (s, q) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
        let sum: i32 = q.iter().map(|&v| v as i32).sum();
        *s = I16Le::new(sum as i16);
    }
    y.d = F32Le::new(1.0 / iscale);
}

/// `dequantize_row_q8_K`: `d * q`.
pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ8K, y: &mut [f32]| {
        let d = b.d.get();
        for (o, &q) in y[..QK_K].iter_mut().zip(&b.qs) {
            *o = d * q as f32;
        }
    });
}
