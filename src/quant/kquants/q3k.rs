//! Q3_K: 16 sub-blocks of 16 values, `x = d * (sc - 32) * (q - 4)` with 3-bit `q` (low 2 bits
//! in `qs`, the high bit in `hmask`) and 6-bit sub-block scales (3.4375 bits per weight).

use super::super::blocks::{BlockQ8K, QuantBlock, F16};
use super::{
    dequantize_blocks, dot_blocks_lanes, imatrix_weights, lane_sums, make_q3_quants,
    make_qx_quants, nearest_int, pack_2bit, pack_q3k_scales, q3k_scales, quantize_blocks, sum,
    sum_sq, LaneDot, QK_K,
};
use bytemuck::{Pod, Zeroable};

/// `block_q3_K`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    /// High bits: bit `j/32` of byte `j%32` is the high bit of value `j`; set means `q >= 4`.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits, packed by `pack_2bit`.
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales (see `q3k_scales`).
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: F16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

impl QuantBlock for BlockQ3K {
    const TYPE: super::GgmlType = super::GgmlType::Q3K;
    type VecDot = BlockQ8K;
}

/// The 256 quants of a block, `q - 4` in -4..3, in value order.
#[inline]
pub fn q3k_values(b: &BlockQ3K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (j, v) in a.iter_mut().enumerate() {
        let low = (b.qs[32 * (j / 128) + j % 32] >> (2 * ((j / 32) % 4))) & 3;
        let high = (b.hmask[j % 32] >> (j / 32)) & 1;
        *v = low as i8 - if high != 0 { 0 } else { 4 };
    }
    a
}

/// `dequantize_row_q3_K`.
pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, dequantize_block);
}

fn dequantize_block(b: &BlockQ3K, y: &mut [f32]) {
    let d_all = b.d.to_f32();
    let scales = q3k_scales(&b.scales);
    let q = q3k_values(b);
    for (j, (out, q)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
        let dl = d_all * scales[j] as f32;
        for (o, &q) in out.iter_mut().zip(q) {
            *o = dl * q as f32;
        }
    }
}

/// `quantize_q3_K`: `quantize_row_q3_K_ref` without an importance matrix,
/// `quantize_row_q3_K_impl` with one.
pub(super) fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_blocks(src, dst, imatrix, |x, y: &mut BlockQ3K, qw| match qw {
        None => quantize_block_ref(x, y),
        Some(qw) => quantize_block_imatrix(x, y, qw),
    });
}

/// `quantize_row_q3_K_ref` on one block.
fn quantize_block_ref(x: &[f32], y: &mut BlockQ3K) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut max_scale = 0f32;
    let mut amax = 0f32;
    for j in 0..QK_K / 16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        let scale = scales[j].abs();
        if scale > amax {
            amax = scale;
            max_scale = scales[j];
        }
    }
    // `if (max_scale)`: NaN counts as true.
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let mut ls = [0u8; 16];
        for (o, &s) in ls.iter_mut().zip(&scales) {
            // ggml stores the rounded value in an int8 before clamping.
            let l = nearest_int(iscale * s) as i8;
            *o = ((l as i32).clamp(-32, 31) + 32) as u8;
        }
        y.scales = pack_q3k_scales(&ls);
        y.d = F16::from_f32(1.0 / iscale);
    } else {
        y.scales = [0; 12];
        y.d = F16::from_f32(0.0);
    }
    finish(x, y, &mut l);
}

/// `quantize_row_q3_K_impl` on one block, with the importance weights of its 256 columns.
fn quantize_block_imatrix(x: &[f32], y: &mut BlockQ3K, qw: &[f32]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut weight = [0f32; 16];
    let mut sw = [0f32; QK_K / 16];
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    for j in 0..QK_K / 16 {
        let xs = &x[16 * j..16 * j + 16];
        imatrix_weights(&mut weight, xs, &qw[16 * j..16 * j + 16], sigma2);
        sw[j] = sum(&weight);
        scales[j] = make_qx_quants(4, xs, &mut l[16 * j..16 * j + 16], Some(&weight));
    }
    let mut ls = [0i8; QK_K / 16];
    let d_block = make_qx_quants(32, &scales, &mut ls, Some(&sw));
    y.scales = pack_q3k_scales(&ls.map(|v| v as u8));
    y.d = F16::from_f32(d_block);
    finish(x, y, &mut l);
}

/// Quantizes again with the final scales (a sub-block whose scale is zero keeps the quants of
/// its own search), then packs the quants.
fn finish(x: &[f32], y: &mut BlockQ3K, l: &mut [i8; QK_K]) {
    let d_all = y.d.to_f32();
    let sc = q3k_scales(&y.scales);
    for j in 0..QK_K / 16 {
        let d = d_all * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    // The high bit of the first 32 quants goes to bit 0 of the 32 hmask bytes, the next 32
    // to bit 1, and so on.
    let mut low = [0u8; QK_K];
    y.hmask = [0; QK_K / 8];
    for (j, (&q, lo)) in l.iter().zip(low.iter_mut()).enumerate() {
        let mut q = q;
        if q > 3 {
            y.hmask[j % 32] |= 1 << (j / 32);
            q -= 4;
        }
        *lo = q as u8;
    }
    pack_2bit(&low, &mut y.qs);
}

/// `ggml_vec_dot_q3_K_q8_K_generic`.
pub(super) fn vec_dot(n: usize, x: &[u8], y: &[u8]) -> f32 {
    dot_blocks_lanes(n, x, y, vec_dot_block)
}

fn vec_dot_block(x: &BlockQ3K, y: &BlockQ8K) -> LaneDot {
    let scales = q3k_scales(&x.scales);
    let lanes = lane_sums(&q3k_values(x), &y.qs, |j| scales[j] as i32);
    LaneDot {
        d: x.d.to_f32() * y.d.get(),
        lanes,
        dmin: 0.0,
        summ: 0,
    }
}
