//! Q4_K: 8 sub-blocks of 32 values, `x = d * sc * q - dmin * m` with 4-bit `q` and 6-bit
//! sub-block scale `sc` and min `m` (4.5 bits per weight). Q5_K shares the scale search.

use super::super::blocks::{BlockQ8K, QuantBlock, F16};
use super::{
    dequantize_blocks, dot_blocks_lanes, get_scale_min_k4, imatrix_weights, lane_sums,
    make_qp_quants, max_from_zero, nearest_int, pack_scale_min_k4, qkx_sub_blocks, quantize_blocks,
    scales_mins_k4, sum, sum_sq, LaneDot, QkxSearch, K_SCALE_SIZE, QKX3_SEARCH, QK_K,
};
use bytemuck::{Pod, Zeroable};

/// `block_q4_K`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-block scale of the sub-block scales.
    pub d: F16,
    /// Super-block scale of the sub-block mins.
    pub dmin: F16,
    /// Eight 6-bit scales and mins (see `get_scale_min_k4`).
    pub scales: [u8; K_SCALE_SIZE],
    /// Byte `l` of each 32-byte group `g` holds value `64g + l` (low nibble) and `64g + 32 + l`.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

impl QuantBlock for BlockQ4K {
    const TYPE: super::GgmlType = super::GgmlType::Q4K;
    type VecDot = BlockQ8K;
}

/// The 256 quants of a block (0..15), in value order.
#[inline]
pub fn q4k_values(b: &BlockQ4K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (g, q) in b.qs.chunks_exact(32).enumerate() {
        for (l, &q) in q.iter().enumerate() {
            a[64 * g + l] = (q & 0xF) as i8;
            a[64 * g + 32 + l] = (q >> 4) as i8;
        }
    }
    a
}

/// `dequantize_row_q4_K`.
pub(super) fn dequantize(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockQ4K, y: &mut [f32]| {
        let q = q4k_values(b);
        dequantize_k4(b.d.to_f32(), b.dmin.to_f32(), &b.scales, &q, y);
    });
}

/// `y = d * sc * q - dmin * m` per sub-block of 32 (Q4_K and Q5_K).
pub(super) fn dequantize_k4(
    d: f32,
    min: f32,
    scales: &[u8; K_SCALE_SIZE],
    q: &[i8; QK_K],
    y: &mut [f32],
) {
    for (j, (out, q)) in y.chunks_exact_mut(32).zip(q.chunks_exact(32)).enumerate() {
        let (sc, m) = get_scale_min_k4(j, scales);
        let d1 = d * sc as f32;
        let m1 = min * m as f32;
        for (o, &q) in out.iter_mut().zip(q) {
            *o = d1 * q as f32 - m1;
        }
    }
}

/// `quantize_q4_K`: `quantize_row_q4_K_ref` without an importance matrix,
/// `quantize_row_q4_K_impl` with one.
pub(super) fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_blocks(src, dst, imatrix, |x, y: &mut BlockQ4K, qw| {
        let mut l = [0u8; QK_K];
        let (scales, d, dmin) = match qw {
            None => k4_scales_ref(x, 15, -1.0, 20, &mut l),
            Some(qw) => k4_scales_imatrix(x, qw, 15, false, &mut l),
        };
        y.scales = scales;
        y.d = d;
        y.dmin = dmin;
        k4_requantize(x, &scales, d, dmin, 15, &mut l);
        for (g, q) in y.qs.chunks_exact_mut(32).enumerate() {
            for (i, q) in q.iter_mut().enumerate() {
                *q = l[64 * g + i] | (l[64 * g + 32 + i] << 4);
            }
        }
    });
}

/// The scale search of `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref`: per sub-block of
/// 32, `make_qkx2_quants` weighted by `rms + |x|`, then the scales and mins quantized to 6
/// bits against the largest of each. Returns the packed scales, `d` and `dmin`.
pub(super) fn k4_scales_ref(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
) -> ([u8; K_SCALE_SIZE], F16, F16) {
    let search = QkxSearch {
        rmin,
        rdelta: 0.1,
        nstep,
        use_mad: false,
    };
    let (scales, mins): ([f32; QK_K / 32], _) =
        qkx_sub_blocks(x, nmax, &search, l, |_, xs, w: &mut [f32; 32]| {
            let av_x = (sum_sq(xs) / 32.0).sqrt();
            for (w, v) in w.iter_mut().zip(xs) {
                *w = av_x + v.abs();
            }
        });
    // Scales are positive as the min is subtracted.
    let (max_scale, max_min) = (max_from_zero(&scales), max_from_zero(&mins));
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..QK_K / 32 {
        // ggml stores the rounded value in a byte before clamping.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    (
        pack_scale_min_k4(&ls, &lm),
        F16::from_f32(max_scale / 63.0),
        F16::from_f32(max_min / 63.0),
    )
}

/// The scale search of `quantize_row_q4_K_impl` / `quantize_row_q5_K_impl`: per sub-block,
/// `make_qkx3_quants` weighted by `qw * sqrt(sigma2 + x^2)`, then `make_qp_quants` for the
/// scales and the mins weighted by the sub-block weight sums. Q5_K clamps the 6-bit values
/// to 63 (`clamp63`); Q4_K packs them as they come.
pub(super) fn k4_scales_imatrix(
    x: &[f32],
    qw: &[f32],
    nmax: i32,
    clamp63: bool,
    l: &mut [u8; QK_K],
) -> ([u8; K_SCALE_SIZE], F16, F16) {
    let mut sw = [0f32; QK_K / 32];
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    let (scales, mins): ([f32; QK_K / 32], _) =
        qkx_sub_blocks(x, nmax, &QKX3_SEARCH, l, |j, xs, w: &mut [f32; 32]| {
            imatrix_weights(w, xs, &qw[32 * j..32 * j + 32], sigma2);
            sw[j] = sum(w);
        });
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    if clamp63 {
        ls = ls.map(|v| v.min(63));
        lm = lm.map(|v| v.min(63));
    }
    (
        pack_scale_min_k4(&ls, &lm),
        F16::from_f32(d_block),
        F16::from_f32(m_block),
    )
}

/// Quantizes again with the final scales and mins; a sub-block whose scale is zero keeps the
/// quants of its own search.
pub(super) fn k4_requantize(
    x: &[f32],
    scales: &[u8; K_SCALE_SIZE],
    d: F16,
    dmin: F16,
    nmax: i32,
    l: &mut [u8; QK_K],
) {
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, scales);
        let d = d.to_f32() * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax);
            l[32 * j + ii] = q as u8;
        }
    }
}

/// `ggml_vec_dot_q4_K_q8_K_generic`.
pub(super) fn vec_dot(n: usize, x: &[u8], y: &[u8]) -> f32 {
    dot_blocks_lanes(n, x, y, |x: &BlockQ4K, y: &BlockQ8K| {
        dot_k4(x.d, x.dmin, &x.scales, &q4k_values(x), y)
    })
}

/// One block of the Q4_K/Q5_K dot product: the quants against the activations with one
/// scale per 32, the mins against the activation sums of each 16.
pub(super) fn dot_k4(
    d: F16,
    dmin: F16,
    scales: &[u8; K_SCALE_SIZE],
    q: &[i8; QK_K],
    y: &BlockQ8K,
) -> LaneDot {
    let (sc, m) = scales_mins_k4(scales);
    let summ: i32 = (0..QK_K / 16)
        .map(|j| y.bsums[j].get() as i32 * m[j / 2] as i32)
        .sum();
    LaneDot {
        d: d.to_f32() * y.d.get(),
        lanes: lane_sums(q, &y.qs, |j| sc[j / 2] as i32),
        dmin: dmin.to_f32() * y.d.get(),
        summ,
    }
}
