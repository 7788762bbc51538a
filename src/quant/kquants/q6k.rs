//! Q6_K: 16 sub-blocks of 16 values, `x = d * sc * (q - 32)` with 6-bit `q` (low 4 bits in
//! `ql`, high 2 bits in `qh`) and int8 sub-block scales (6.5625 bits per weight).

use super::super::blocks::{BlockQ8K, QuantBlock, F16};
use super::{
    dequantize_blocks, dot_blocks_lanes, lane_sums, make_qx_quants, nearest_int, quantize_blocks,
    LaneDot, GROUP_MAX_EPS, QK_K,
};
use bytemuck::{Pod, Zeroable};

/// `block_q6_K`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low 4 bits: in each 128 values, byte `l` holds values `l` (low nibble) and `l + 64`,
    /// byte `32 + l` values `l + 32` and `l + 96`.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits: in each 128 values, byte `l` holds those of `l`, `l+32`, `l+64`, `l+96`.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: F16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl QuantBlock for BlockQ6K {
    const TYPE: super::GgmlType = super::GgmlType::Q6K;
    type VecDot = BlockQ8K;
}

/// The 256 quants of a block, `q - 32` in -32..31, in value order.
#[inline]
pub fn q6k_values(b: &BlockQ6K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for h in 0..2 {
        let ql = &b.ql[64 * h..64 * h + 64];
        let qh = &b.qh[32 * h..32 * h + 32];
        let a = &mut a[128 * h..128 * h + 128];
        for l in 0..32 {
            a[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            a[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            a[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            a[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    a
}

/// `dequantize_row_q6_K`.
pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ6K, y: &mut [f32]| {
        let d = b.d.to_f32();
        let q = q6k_values(b);
        for (j, (out, q)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
            let dl = d * b.scales[j] as f32;
            for (o, &q) in out.iter_mut().zip(q) {
                *o = dl * q as f32;
            }
        }
    });
}

/// `quantize_q6_K`: `quantize_row_q6_K_ref` without an importance matrix (sub-block search
/// weighted by `x^2`), `quantize_row_q6_K_impl` with one (weighted by the matrix alone).
pub(super) fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_blocks(src, dst, imatrix, quantize_block);
}

fn quantize_block(x: &[f32], y: &mut BlockQ6K, qw: Option<&[f32]>) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut max_scale = 0f32;
    let mut max_abs_scale = 0f32;
    for ib in 0..QK_K / 16 {
        let w = qw.map(|w| &w[16 * ib..16 * ib + 16]);
        let scale = make_qx_quants(
            32,
            &x[16 * ib..16 * ib + 16],
            &mut l[16 * ib..16 * ib + 16],
            w,
        );
        scales[ib] = scale;
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        *y = Zeroable::zeroed();
        return;
    }
    let iscale = -128.0 / max_scale;
    y.d = F16::from_f32(1.0 / iscale);
    for (s, &v) in y.scales.iter_mut().zip(&scales) {
        *s = nearest_int(iscale * v).min(127) as i8;
    }
    let d_all = y.d.to_f32();
    for j in 0..QK_K / 16 {
        let d = d_all * y.scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    for h in 0..2 {
        let l = &l[128 * h..128 * h + 128];
        for i in 0..32 {
            let q = [l[i], l[i + 32], l[i + 64], l[i + 96]].map(|v| v as u8);
            y.ql[64 * h + i] = (q[0] & 0xF) | ((q[2] & 0xF) << 4);
            y.ql[64 * h + i + 32] = (q[1] & 0xF) | ((q[3] & 0xF) << 4);
            y.qh[32 * h + i] =
                (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
}

/// `ggml_vec_dot_q6_K_q8_K_generic`.
pub(super) fn vec_dot(n: usize, x: &[u8], y: &[u8]) -> f32 {
    dot_blocks_lanes(n, x, y, |x: &BlockQ6K, y: &BlockQ8K| LaneDot {
        d: x.d.to_f32() * y.d.get(),
        lanes: lane_sums(&q6k_values(x), &y.qs, |j| x.scales[j] as i32),
        dmin: 0.0,
        summ: 0,
    })
}
