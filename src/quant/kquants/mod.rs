//! The k-quants: super-blocks of 256 values with sub-block scales (Q2_K .. Q6_K), and Q8_K,
//! the activation type their dot products (and those of the i-quants) take.
//!
//! Each type mirrors ggml's `ggml-quants.c` and `ggml-cpu/quants.c` operation for operation:
//! the quantizers do the same f32 arithmetic in the same order (no fused multiply-add, the
//! same `nearest_int`, the same comparisons), so their bytes are identical to ggml's.

mod q2k;
mod q3k;
mod q4k;
mod q5k;
mod q6k;
mod q8k;

pub use q2k::BlockQ2K;
pub use q3k::BlockQ3K;
pub use q4k::BlockQ4K;
pub use q5k::BlockQ5K;
pub use q6k::BlockQ6K;

// The quants of a block unpacked to one signed byte per value, in value order: the shared
// first step of the scalar dot products, and the oracle for faster unpacking.
pub use q3k::q3k_values;
pub use q4k::q4k_values;
pub use q5k::q5k_values;
pub use q6k::q6k_values;

use super::blocks::{as_blocks, as_blocks_mut, BlockQ8K, QuantBlock};
use super::common::{abs_max, make_qkx_quants, make_qp_quants, make_qx_quants, sum_sq};
use super::common::{imatrix_weights, QkxSearch, GROUP_MAX_EPS, QKX3_SEARCH};
use super::{GgmlType, Kernels, QK_K};

/// ggml's `nearest_int`, kept at this path for the SIMD kernels.
pub(crate) use super::common::nearest_int;

/// `K_SCALE_SIZE`: the packed 6-bit scales and mins of Q4_K and Q5_K.
pub const K_SCALE_SIZE: usize = 12;

pub(super) fn kernels(ty: GgmlType) -> Option<Kernels> {
    Some(match ty {
        GgmlType::Q2K => {
            Kernels::of::<BlockQ2K>(q2k::dequantize, q2k::quantize, Some(q2k::vec_dot))
        }
        GgmlType::Q3K => {
            Kernels::of::<BlockQ3K>(q3k::dequantize, q3k::quantize, Some(q3k::vec_dot))
        }
        GgmlType::Q4K => {
            Kernels::of::<BlockQ4K>(q4k::dequantize, q4k::quantize, Some(q4k::vec_dot))
        }
        GgmlType::Q5K => {
            Kernels::of::<BlockQ5K>(q5k::dequantize, q5k::quantize, Some(q5k::vec_dot))
        }
        GgmlType::Q6K => {
            Kernels::of::<BlockQ6K>(q6k::dequantize, q6k::quantize, Some(q6k::vec_dot))
        }
        // ggml has no Q8_K x Q8_K dot product.
        GgmlType::Q8K => Kernels::of::<BlockQ8K>(q8k::dequantize, q8k::quantize, None),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Row drivers: blocks in, blocks out.

/// Dequantizes whole blocks of `B` into `dst` (256 values per block).
fn dequantize_blocks<B: QuantBlock>(src: &[u8], dst: &mut [f32], f: fn(&B, &mut [f32])) {
    for (b, y) in as_blocks::<B>(src).iter().zip(dst.chunks_exact_mut(QK_K)) {
        f(b, y);
    }
}

/// Quantizes a row block by block, with the block's slice of the importance matrix when
/// there is one (ggml indexes `quant_weights + QK_K*i`: the matrix is per column of the row).
fn quantize_blocks<B: QuantBlock>(
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
    f: fn(&[f32], &mut B, Option<&[f32]>),
) {
    let blocks = as_blocks_mut::<B>(dst);
    for (i, (x, b)) in src.chunks_exact(QK_K).zip(blocks.iter_mut()).enumerate() {
        let qw = imatrix.map(|w| &w[i * QK_K..(i + 1) * QK_K]);
        f(x, b, qw);
    }
}

/// Sums the block dot products of a row with its Q8_K activations.
fn dot_blocks<B: QuantBlock>(n: usize, x: &[u8], y: &[u8], f: fn(&B, &BlockQ8K) -> f32) -> f32 {
    let nb = n / QK_K;
    let x = &as_blocks::<B>(x)[..nb];
    let y = &as_blocks::<BlockQ8K>(y)[..nb];
    x.iter().zip(y).fold(0.0, |s, (a, b)| s + f(a, b))
}

/// What one block contributes to a dot product accumulated as ggml's generic Q3_K..Q6_K
/// kernels do: eight integer lanes (`aux32`) scaled by `d`, and a min term `dmin * summ`.
struct LaneDot {
    d: f32,
    lanes: [i32; 8],
    dmin: f32,
    summ: i32,
}

/// Sums the blocks in eight float lanes (`sums[l] += d * aux32[l]`) with the min terms
/// subtracted from a separate sum, and adds the lanes at the end, in ggml's order.
fn dot_blocks_lanes<B: QuantBlock>(
    n: usize,
    x: &[u8],
    y: &[u8],
    f: fn(&B, &BlockQ8K) -> LaneDot,
) -> f32 {
    let nb = n / QK_K;
    let x = &as_blocks::<B>(x)[..nb];
    let y = &as_blocks::<BlockQ8K>(y)[..nb];
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for (a, b) in x.iter().zip(y) {
        let r = f(a, b);
        for (s, &v) in sums.iter_mut().zip(&r.lanes) {
            *s += r.d * v as f32;
        }
        sumf -= r.dmin * r.summ as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// `aux32[l % 8] += scale * q8[l] * q[l]` over the 256 values, with one scale per 16
/// (`scales[j]` for values `16*j..16*j + 16`), as the generic kernels accumulate.
#[inline]
fn lane_sums(q: &[i8; QK_K], q8: &[i8; QK_K], scale16: impl Fn(usize) -> i32) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for (j, (a, b)) in q.chunks_exact(16).zip(q8.chunks_exact(16)).enumerate() {
        let scale = scale16(j);
        for (l, (&a, &b)) in a.iter().zip(b).enumerate() {
            aux32[l % 8] += scale * (a as i32 * b as i32);
        }
    }
    aux32
}

// ---------------------------------------------------------------------------------------------
// Scale packing shared by the quantizers, the dequantizers and the dot products.

/// Scale and min of sub-block `j` (0..8) of Q4_K/Q5_K's 12 packed bytes (`get_scale_min_k4`):
/// sub-blocks 0..3 keep 6 bits in bytes 0..3 (scale) and 4..7 (min); sub-blocks 4..7 keep
/// their low 4 bits in bytes 8..11 and their high 2 bits in the top bits of bytes 0..7.
#[inline]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// All eight (scale, min) pairs of Q4_K/Q5_K, unpacked.
#[inline]
pub(crate) fn scales_mins_k4(q: &[u8; K_SCALE_SIZE]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        (sc[j], m[j]) = get_scale_min_k4(j, q);
    }
    (sc, m)
}

/// Packs eight 6-bit (scale, min) pairs into Q4_K/Q5_K's 12 bytes, as ggml's quantizers do.
/// Values above 63 are packed as ggml packs them (the caller clamps where ggml clamps).
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut s = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// The sixteen 6-bit scales of Q3_K, offset by 32 (so -32..31): the low 4 bits of scales
/// 0..7 and 8..15 are the low and high nibbles of bytes 0..7, the high 2 bits of scale `j` are
/// bits `2*(j/4)..` of byte `8 + j%4`.
#[inline]
pub(crate) fn q3k_scales(s: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

/// Packs sixteen 6-bit Q3_K scales (0..63, already offset by 32).
fn pack_q3k_scales(l: &[u8; 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (j, &l) in l.iter().enumerate() {
        if j < 8 {
            s[j] = l & 0xF;
        } else {
            s[j - 8] |= (l & 0xF) << 4;
        }
        s[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
    }
    s
}

/// Packs 256 2-bit values (0..3) as Q2_K and Q3_K do: byte `l` of each 32-byte half holds
/// values `l`, `l+32`, `l+64`, `l+96` of its 128, from the low bits up.
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for j in (0..QK_K).step_by(128) {
        for i in 0..32 {
            qs[j / 4 + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ggml's helpers for the k-quant quantizers.

/// The asymmetric search of each sub-block of `S` values: `weights(j, xs, w)` fills the
/// weights of sub-block `j`, then `make_qkx_quants` writes its quants to `l` and finds its
/// scale and min. Returns the scales and the negated mins.
fn qkx_sub_blocks<const S: usize, const N: usize>(
    x: &[f32],
    nmax: i32,
    search: &QkxSearch,
    l: &mut [u8; QK_K],
    mut weights: impl FnMut(usize, &[f32], &mut [f32; S]),
) -> ([f32; N], [f32; N]) {
    let mut laux = [0u8; S];
    let mut w = [0f32; S];
    let mut scales = [0f32; N];
    let mut mins = [0f32; N];
    for j in 0..N {
        let xs = &x[S * j..S * j + S];
        weights(j, xs, &mut w);
        let lj = &mut l[S * j..S * j + S];
        (scales[j], mins[j]) = make_qkx_quants(nmax, xs, &w, lj, &mut laux, search);
    }
    (scales, mins)
}

/// The largest of 0 and `v` (ggml's `if (v[j] > max) max = v[j]` scan).
#[inline]
fn max_from_zero(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, &x| if x > m { x } else { m })
}

/// Sum in order, as ggml's loops accumulate it.
#[inline]
fn sum(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |s, &w| s + w)
}

/// `make_q3_quants` with `do_rmse`: symmetric quants (stored with the `+nmax` offset) refined
/// one value at a time for up to 5 passes, weighted by `x^2`. Not `make_qp_quants`' refinement:
/// signed levels, and ggml tests only `slx > 0` before recomputing `sl2`.
fn make_q3_quants(nmax: i32, x: &[f32], out: &mut [i8]) -> f32 {
    let (amax, max) = abs_max(x);
    if amax < GROUP_MAX_EPS {
        out.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for (o, &v) in out.iter_mut().zip(x) {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *o = l as i8;
        let w = v * v;
        let lf = l as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (o, &v) in out.iter_mut().zip(x) {
            let w = v * v;
            let li = *o as f32;
            let mut slx = sumlx - w * v * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *o as i32 {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *o = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for o in out.iter_mut() {
        *o = (*o as i32 + nmax) as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_matches_type<B: QuantBlock>() {
        assert_eq!(std::mem::size_of::<B>(), B::TYPE.type_size(), "{}", B::TYPE);
        assert_eq!(B::TYPE.block_size(), QK_K);
        let k = kernels(B::TYPE).unwrap();
        assert_eq!(
            (k.ty, k.dot_type),
            (B::TYPE, <B::VecDot as QuantBlock>::TYPE)
        );
    }

    #[test]
    fn blocks_agree_with_the_type_table() {
        block_matches_type::<BlockQ2K>();
        block_matches_type::<BlockQ3K>();
        block_matches_type::<BlockQ4K>();
        block_matches_type::<BlockQ5K>();
        block_matches_type::<BlockQ6K>();
        block_matches_type::<BlockQ8K>();
        assert!(kernels(GgmlType::Q4_0).is_none());
    }

    #[test]
    fn k4_scale_packing_round_trips() {
        let ls = [0, 1, 17, 63, 62, 33, 16, 5];
        let lm = [63, 0, 31, 32, 1, 48, 15, 60];
        let packed = pack_scale_min_k4(&ls, &lm);
        assert_eq!(scales_mins_k4(&packed), (ls, lm));
    }

    #[test]
    fn q3k_scale_packing_round_trips() {
        let l: [u8; 16] = [0, 63, 32, 31, 1, 2, 40, 50, 60, 7, 8, 9, 10, 33, 34, 35];
        let got = q3k_scales(&pack_q3k_scales(&l));
        for j in 0..16 {
            assert_eq!(got[j] as i32, l[j] as i32 - 32);
        }
    }
}
