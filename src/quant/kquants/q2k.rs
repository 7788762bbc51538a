//! Q2_K: 16 sub-blocks of 16 values, `x = d * sc * q - dmin * m` with 2-bit `q` and 4-bit
//! sub-block scale `sc` and min `m` (2.625 bits per weight).

use super::super::blocks::{BlockQ8K, QuantBlock, F16};
use super::{
    dequantize_blocks, dot_blocks, imatrix_weights, make_qp_quants, max_from_zero, nearest_int,
    pack_2bit, qkx_sub_blocks, quantize_blocks, sum, sum_sq, QkxSearch, QKX3_SEARCH, QK_K,
};
use bytemuck::{Pod, Zeroable};

/// `block_q2_K`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    /// Per sub-block: scale in the low nibble, min in the high nibble.
    pub scales: [u8; QK_K / 16],
    /// 2-bit quants, packed by `pack_2bit`.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the sub-block scales.
    pub d: F16,
    /// Super-block scale of the sub-block mins.
    pub dmin: F16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

impl QuantBlock for BlockQ2K {
    const TYPE: super::GgmlType = super::GgmlType::Q2K;
    type VecDot = BlockQ8K;
}

/// `dequantize_row_q2_K`.
pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, dequantize_block);
}

fn dequantize_block(b: &BlockQ2K, y: &mut [f32]) {
    let d = b.d.to_f32();
    let min = b.dmin.to_f32();
    for half in 0..2 {
        let q = &b.qs[32 * half..32 * half + 32];
        for j in 0..4 {
            let shift = 2 * j;
            for (k, qk) in q.chunks_exact(16).enumerate() {
                let sc = b.scales[8 * half + 2 * j + k];
                let dl = d * (sc & 0xF) as f32;
                let ml = min * (sc >> 4) as f32;
                let out = &mut y[128 * half + 32 * j + 16 * k..][..16];
                for (o, &q) in out.iter_mut().zip(qk) {
                    *o = dl * ((q >> shift) & 3) as f32 - ml;
                }
            }
        }
    }
}

/// `quantize_q2_K`: `quantize_row_q2_K_ref` without an importance matrix,
/// `quantize_row_q2_K_impl` with one.
pub(super) fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_blocks(src, dst, imatrix, |x, y: &mut BlockQ2K, qw| match qw {
        None => quantize_block_ref(x, y),
        Some(qw) => quantize_block_imatrix(x, y, qw),
    });
}

/// `quantize_row_q2_K_ref` on one block.
fn quantize_block_ref(x: &[f32], y: &mut BlockQ2K) {
    const Q4SCALE: f32 = 15.0;
    let search = QkxSearch {
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    let mut l = [0u8; QK_K];
    let (scales, mins): ([f32; QK_K / 16], _) =
        qkx_sub_blocks(x, 3, &search, &mut l, |_, xs, w: &mut [f32; 16]| {
            for (w, v) in w.iter_mut().zip(xs) {
                *w = v.abs();
            }
        });
    // Scales are positive as the min is subtracted.
    let (max_scale, max_min) = (max_from_zero(&scales), max_from_zero(&mins));

    let mut sc = [0u8; QK_K / 16];
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (s, &v) in sc.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * v) as u8;
        }
        y.d = F16::from_f32(max_scale / Q4SCALE);
    } else {
        y.d = F16::from_f32(0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (s, &v) in sc.iter_mut().zip(&mins) {
            *s |= nearest_int(iscale * v).wrapping_shl(4) as u8;
        }
        y.dmin = F16::from_f32(max_min / Q4SCALE);
    } else {
        y.dmin = F16::from_f32(0.0);
    }
    y.scales = sc;
    requantize(x, y, y.d.to_f32(), y.dmin.to_f32(), &mut l);
    pack_2bit(&l, &mut y.qs);
}

/// `quantize_row_q2_K_impl` on one block, with the importance weights of its 256 columns.
fn quantize_block_imatrix(x: &[f32], y: &mut BlockQ2K, qw: &[f32]) {
    let mut l = [0u8; QK_K];
    let mut sw = [0f32; QK_K / 16];
    let sigma2 = sum_sq(x) / QK_K as f32;
    let (scales, mins): ([f32; QK_K / 16], _) =
        qkx_sub_blocks(x, 3, &QKX3_SEARCH, &mut l, |j, xs, w: &mut [f32; 16]| {
            imatrix_weights(w, xs, &qw[16 * j..16 * j + 16], sigma2);
            sw[j] = sum(w);
        });
    let mut ls = [0u8; QK_K / 16];
    let mut lm = [0u8; QK_K / 16];
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    y.d = F16::from_f32(dm);
    y.dmin = F16::from_f32(mm);
    for (s, (&a, &b)) in y.scales.iter_mut().zip(ls.iter().zip(&lm)) {
        *s = a | (b << 4);
    }
    requantize(x, y, y.d.to_f32(), y.dmin.to_f32(), &mut l);
    pack_2bit(&l, &mut y.qs);
}

/// Quantizes again with the final (f16-rounded, 4-bit) scales and mins; a sub-block whose
/// scale is zero keeps the quants of its own search.
fn requantize(x: &[f32], y: &BlockQ2K, dm: f32, mm: f32, l: &mut [u8; QK_K]) {
    for j in 0..QK_K / 16 {
        let d = dm * (y.scales[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let m = mm * (y.scales[j] >> 4) as f32;
        for ii in 0..16 {
            let q = nearest_int((x[16 * j + ii] + m) / d).clamp(0, 3);
            l[16 * j + ii] = q as u8;
        }
    }
}

/// `ggml_vec_dot_q2_K_q8_K_generic`.
pub(super) fn vec_dot(n: usize, x: &[u8], y: &[u8]) -> f32 {
    dot_blocks(n, x, y, vec_dot_block)
}

fn vec_dot_block(x: &BlockQ2K, y: &BlockQ8K) -> f32 {
    let sc = &x.scales;
    // The min term from the activation sums of each 16.
    let summs: i32 = (0..16)
        .map(|j| y.bsums[j].get() as i32 * (sc[j] >> 4) as i32)
        .sum();
    let dall = y.d.get() * x.d.to_f32();
    let dmin = y.d.get() * x.dmin.to_f32();
    let mut isum = 0i32;
    for half in 0..2 {
        let q2 = &x.qs[32 * half..32 * half + 32];
        for j in 0..4 {
            let shift = 2 * j;
            let q8 = &y.qs[128 * half + 32 * j..][..32];
            for k in 0..2 {
                let d = (sc[8 * half + 2 * j + k] & 0xF) as i32;
                let isuml: i32 = (16 * k..16 * k + 16)
                    .map(|l| q8[l] as i32 * ((q2[l] >> shift) & 3) as i32)
                    .sum();
                isum += d * isuml;
            }
        }
    }
    dall * isum as f32 - dmin * summs as f32
}
