//! Q5_K: 8 sub-blocks of 32 values, `x = d * sc * q - dmin * m` with 5-bit `q` (low 4 bits in
//! `qs`, the high bit in `qh`) and 6-bit sub-block scale `sc` and min `m` (5.5 bits per
//! weight). The scales are packed and searched as Q4_K's.

use super::super::blocks::{BlockQ8K, QuantBlock, F16};
use super::q4k::{dequantize_k4, dot_k4, k4_requantize, k4_scales_imatrix, k4_scales_ref};
use super::{dequantize_blocks, dot_blocks_lanes, quantize_blocks, K_SCALE_SIZE, QK_K};
use bytemuck::{Pod, Zeroable};

/// `block_q5_K`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    /// Super-block scale of the sub-block scales.
    pub d: F16,
    /// Super-block scale of the sub-block mins.
    pub dmin: F16,
    /// Eight 6-bit scales and mins (see `get_scale_min_k4`).
    pub scales: [u8; K_SCALE_SIZE],
    /// High bits: bit `j/32` of byte `j%32` is bit 4 of value `j`.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, laid out as Q4_K's `qs`.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

impl QuantBlock for BlockQ5K {
    const TYPE: super::GgmlType = super::GgmlType::Q5K;
    type VecDot = BlockQ8K;
}

/// The 256 quants of a block (0..31), in value order.
#[inline]
pub fn q5k_values(b: &BlockQ5K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (g, q) in b.qs.chunks_exact(32).enumerate() {
        for (l, &q) in q.iter().enumerate() {
            let h = b.qh[l] >> (2 * g);
            a[64 * g + l] = ((q & 0xF) | ((h & 1) << 4)) as i8;
            a[64 * g + 32 + l] = ((q >> 4) | ((h & 2) << 3)) as i8;
        }
    }
    a
}

/// `dequantize_row_q5_K`.
pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ5K, y: &mut [f32]| {
        let q = q5k_values(b);
        dequantize_k4(b.d.to_f32(), b.dmin.to_f32(), &b.scales, &q, y);
    });
}

/// `quantize_q5_K`: `quantize_row_q5_K_ref` without an importance matrix,
/// `quantize_row_q5_K_impl` with one.
pub(super) fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_blocks(src, dst, imatrix, |x, y: &mut BlockQ5K, qw| {
        let mut l = [0u8; QK_K];
        let (scales, d, dmin) = match qw {
            None => k4_scales_ref(x, 31, -0.5, 15, &mut l),
            Some(qw) => k4_scales_imatrix(x, qw, 31, true, &mut l),
        };
        y.scales = scales;
        y.d = d;
        y.dmin = dmin;
        k4_requantize(x, &scales, d, dmin, 31, &mut l);
        y.qh = [0; QK_K / 8];
        for (g, ql) in y.qs.chunks_exact_mut(32).enumerate() {
            for (j, ql) in ql.iter_mut().enumerate() {
                let mut l1 = l[64 * g + j];
                if l1 > 15 {
                    l1 -= 16;
                    y.qh[j] |= 1 << (2 * g);
                }
                let mut l2 = l[64 * g + 32 + j];
                if l2 > 15 {
                    l2 -= 16;
                    y.qh[j] |= 2 << (2 * g);
                }
                *ql = l1 | (l2 << 4);
            }
        }
    });
}

/// `ggml_vec_dot_q5_K_q8_K_generic`.
pub(super) fn vec_dot(n: usize, x: &[u8], y: &[u8]) -> f32 {
    dot_blocks_lanes(n, x, y, |x: &BlockQ5K, y: &BlockQ8K| {
        dot_k4(x.d, x.dmin, &x.scales, &q5k_values(x), y)
    })
}
