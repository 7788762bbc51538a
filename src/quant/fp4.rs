//! The 4-bit float formats: MXFP4 (32 E2M1 values with an E8M0 power-of-two scale) and NVFP4
//! (64 E2M1 values in four groups of 16, each with a UE4M3 scale). Mirrors ggml-quants.c
//! (`quantize_row_mxfp4_ref`, `quantize_row_nvfp4_ref`, `dequantize_row_*`), the scale
//! conversions of ggml-impl.h and `ggml_vec_dot_{mxfp4,nvfp4}_q8_0_generic`.

use super::blocks::{as_blocks, as_blocks_mut, BlockQ8_0, QuantBlock};
use super::common::{abs_max, c_int};
use super::{GgmlType, Kernels};
use bytemuck::{Pod, Zeroable};

pub const QK_MXFP4: usize = 32;
pub const QK_NVFP4: usize = 64;
pub const QK_NVFP4_SUB: usize = 16;

/// The E2M1 values, doubled so they are integers (`kvalues_mxfp4`); the scales are halved to
/// match.
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `block_mxfp4`: 32 values `kvalues[q] * 2^(e - 128)`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockMxfp4 {
    pub e: u8,
    pub qs: [u8; QK_MXFP4 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockMxfp4>() == 17);

/// `block_nvfp4`: four groups of 16 values `kvalues[q] * ue4m3(d[group]) / 2`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockNvfp4 {
    pub d: [u8; QK_NVFP4 / QK_NVFP4_SUB],
    pub qs: [u8; QK_NVFP4 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockNvfp4>() == 36);

impl QuantBlock for BlockMxfp4 {
    const TYPE: GgmlType = GgmlType::MXFP4;
    type VecDot = BlockQ8_0;
}
impl QuantBlock for BlockNvfp4 {
    const TYPE: GgmlType = GgmlType::NVFP4;
    type VecDot = BlockQ8_0;
}

pub(super) fn kernels(ty: GgmlType) -> Option<Kernels> {
    Some(match ty {
        GgmlType::MXFP4 => {
            Kernels::of::<BlockMxfp4>(dequantize_mxfp4, quantize_mxfp4, Some(vec_dot_mxfp4_q8_0))
        }
        GgmlType::NVFP4 => {
            Kernels::of::<BlockNvfp4>(dequantize_nvfp4, quantize_nvfp4, Some(vec_dot_nvfp4_q8_0))
        }
        _ => return None,
    })
}

/// `ggml_e8m0_to_fp32_half`: `2^(x - 128)`, with the two subnormal cases spelled out.
#[inline]
pub const fn e8m0_to_fp32_half(x: u8) -> f32 {
    let bits = if x < 2 {
        0x0020_0000u32 << x
    } else {
        ((x - 1) as u32) << 23
    };
    f32::from_bits(bits)
}

/// [`e8m0_to_fp32_half`] of every byte: one load instead of a compare and shifts, where a
/// kernel converts a scale per 32 values.
pub static E8M0_HALF: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = e8m0_to_fp32_half(i as u8);
        i += 1;
    }
    t
};

/// `ggml_ue4m3_to_fp32`: an unsigned E4M3 scale (bias 7), halved like the E8M0 ones; 0 and
/// the NaN code 0x7f read as 0.
#[inline]
pub fn ue4m3_to_fp32(x: u8) -> f32 {
    if x == 0 || x == 0x7f {
        return 0.0;
    }
    let exp = ((x >> 3) & 0xf) as i32;
    let man = (x & 0x7) as f32;
    let raw = if exp == 0 {
        man * 2f32.powi(-9)
    } else {
        (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    };
    raw * 0.5
}

/// `ggml_fp32_to_ue4m3`: rounds half up on the first dropped mantissa bit (not to even),
/// saturates at 448 (0x7e), and maps everything not above zero, NaN included, to 0.
#[inline]
#[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN goes to 0 too
pub fn fp32_to_ue4m3(x: f32) -> u8 {
    if !(x > 0.0) {
        return 0;
    }
    let x = if x > 448.0 { 448.0 } else { x };
    let bits = x.to_bits();
    let fp32_exp = ((bits >> 23) & 0xff) as i32 - 127;
    let fp32_man = ((bits >> 20) & 0x7) as i32;
    let mut exp = fp32_exp + 7;
    if exp <= 0 {
        // subnormal: value = man * 2^-9
        let man = c_int(x * 512.0 + 0.5).min(7);
        if man < 1 {
            return 0;
        }
        return man as u8;
    }
    if exp >= 15 {
        return 0x7e;
    }
    let mut man = fp32_man + ((bits >> 19) & 1) as i32;
    if man > 7 {
        man = 0;
        exp += 1;
        if exp >= 15 {
            return 0x7e;
        }
    }
    ((exp << 3) | man) as u8
}

/// `best_index_mxfp4`: the code whose value `kvalues[i] * e` is nearest `x`, the first one on
/// ties (a linear scan over unsorted codes; `iq4::best_index_int8` bisects a sorted grid and
/// takes the upper one).
#[inline]
fn best_index_mxfp4(x: f32, e: f32) -> u8 {
    let mut best_index = 0;
    let mut best_err = (KVALUES_MXFP4[0] as f32 * e - x).abs();
    for (i, &k) in KVALUES_MXFP4.iter().enumerate().skip(1) {
        let err = (k as f32 * e - x).abs();
        if err < best_err {
            best_index = i;
            best_err = err;
        }
    }
    best_index as u8
}

// ---------------------------------------------------------------------------------------------
// MXFP4

/// `quantize_row_mxfp4_ref` (ggml ignores the importance matrix).
fn quantize_mxfp4(x: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    let y: &mut [BlockMxfp4] = as_blocks_mut(dst);
    for (xb, b) in x.chunks_exact(QK_MXFP4).zip(y) {
        let (amax, _) = abs_max(xb);
        // C's `(uint8_t)` of the float takes the low byte of its int conversion.
        let e = if amax > 0.0 {
            c_int(amax.log2().floor() - 2.0 + 127.0) as u8
        } else {
            0
        };
        let d = e8m0_to_fp32_half(e);
        b.e = e;
        for j in 0..QK_MXFP4 / 2 {
            let x0 = best_index_mxfp4(xb[j], d);
            let x1 = best_index_mxfp4(xb[j + QK_MXFP4 / 2], d);
            b.qs[j] = x0 | (x1 << 4);
        }
    }
}

fn dequantize_mxfp4(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockMxfp4] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(QK_MXFP4)) {
        let d = e8m0_to_fp32_half(b.e);
        for j in 0..QK_MXFP4 / 2 {
            y[j] = KVALUES_MXFP4[(b.qs[j] & 0x0f) as usize] as f32 * d;
            y[j + QK_MXFP4 / 2] = KVALUES_MXFP4[(b.qs[j] >> 4) as usize] as f32 * d;
        }
    }
}

fn vec_dot_mxfp4_q8_0(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockMxfp4] = as_blocks(vx);
    let y: &[BlockQ8_0] = as_blocks(vy);
    let mut sumf = 0f32;
    for (bx, by) in x.iter().zip(y).take(n / QK_MXFP4) {
        let d = by.d.to_f32() * e8m0_to_fp32_half(bx.e);
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for j in 0..QK_MXFP4 / 2 {
            sumi1 += by.qs[j] as i32 * KVALUES_MXFP4[(bx.qs[j] & 0xf) as usize] as i32;
            sumi2 +=
                by.qs[j + QK_MXFP4 / 2] as i32 * KVALUES_MXFP4[(bx.qs[j] >> 4) as usize] as i32;
        }
        sumf += d * (sumi1 + sumi2) as f32;
    }
    sumf
}

// ---------------------------------------------------------------------------------------------
// NVFP4

/// `quantize_row_nvfp4_ref` (ggml ignores the importance matrix).
fn quantize_nvfp4(x: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    let y: &mut [BlockNvfp4] = as_blocks_mut(dst);
    for (xb, b) in x.chunks_exact(QK_NVFP4).zip(y) {
        for (s, xs) in xb.chunks_exact(QK_NVFP4_SUB).enumerate() {
            let (amax, _) = abs_max(xs);
            // amax / 6 maps the largest E2M1 value (6) onto amax.
            let ue = fp32_to_ue4m3(amax / 6.0);
            b.d[s] = ue;
            let d = ue4m3_to_fp32(ue);
            for j in 0..QK_NVFP4_SUB / 2 {
                let x0 = best_index_mxfp4(xs[j], d);
                let x1 = best_index_mxfp4(xs[j + QK_NVFP4_SUB / 2], d);
                b.qs[s * (QK_NVFP4_SUB / 2) + j] = x0 | (x1 << 4);
            }
        }
    }
}

fn dequantize_nvfp4(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockNvfp4] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(QK_NVFP4)) {
        for (s, ys) in y.chunks_exact_mut(QK_NVFP4_SUB).enumerate() {
            let d = ue4m3_to_fp32(b.d[s]);
            for j in 0..QK_NVFP4_SUB / 2 {
                let q = b.qs[s * (QK_NVFP4_SUB / 2) + j];
                ys[j] = KVALUES_MXFP4[(q & 0x0f) as usize] as f32 * d;
                ys[j + QK_NVFP4_SUB / 2] = KVALUES_MXFP4[(q >> 4) as usize] as f32 * d;
            }
        }
    }
}

/// `ggml_vec_dot_nvfp4_q8_0`: a block of 64 spans two Q8_0 blocks, each group of 16 half of
/// one.
fn vec_dot_nvfp4_q8_0(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockNvfp4] = as_blocks(vx);
    let y: &[BlockQ8_0] = as_blocks(vy);
    let mut sumf = 0f32;
    for (bx, ys) in x.iter().zip(y.chunks_exact(2)).take(n / QK_NVFP4) {
        for s in 0..4 {
            let d = ue4m3_to_fp32(bx.d[s]);
            let yb = &ys[s / 2];
            let off = (s % 2) * QK_NVFP4_SUB;
            let dy = yb.d.to_f32();
            let (mut lo, mut hi) = (0i32, 0i32);
            for j in 0..QK_NVFP4_SUB / 2 {
                let q = bx.qs[s * (QK_NVFP4_SUB / 2) + j];
                lo += yb.qs[off + j] as i32 * KVALUES_MXFP4[(q & 0xf) as usize] as i32;
                hi += yb.qs[off + j + QK_NVFP4_SUB / 2] as i32
                    * KVALUES_MXFP4[(q >> 4) as usize] as i32;
            }
            sumf += dy * d * (lo + hi) as f32;
        }
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ue4m3_round_trips_every_code() {
        // Exponent 15 is produced only as 0x7e (448), the saturation value.
        for x in 1u8..0x78 {
            let f = ue4m3_to_fp32(x) * 2.0;
            assert_eq!(fp32_to_ue4m3(f), x, "{x:#x} = {f}");
        }
        assert_eq!(fp32_to_ue4m3(448.0), 0x7e);
        assert_eq!(fp32_to_ue4m3(1e9), 0x7e);
        assert_eq!(fp32_to_ue4m3(f32::NAN), 0);
        assert_eq!(fp32_to_ue4m3(-1.0), 0);
    }

    #[test]
    fn e8m0_half_is_a_power_of_two() {
        assert_eq!(e8m0_to_fp32_half(128), 1.0);
        assert_eq!(e8m0_to_fp32_half(127), 0.5);
        assert_eq!(e8m0_to_fp32_half(1), 2f32.powi(-127));
        assert_eq!(e8m0_to_fp32_half(0), 2f32.powi(-128));
    }
}
