//! The ternary formats of BitNet b1.58 and TriLMs: values in {-d, 0, d} per block of 256.
//! TQ1_0 packs five trits per byte as a base-3 fixed-point fraction (1.6875 bits per weight),
//! TQ2_0 stores two bits per trit (2.0625 bits per weight). Mirrors ggml-quants.c
//! (`quantize_row_tq{1,2}_0_ref`, `dequantize_row_tq{1,2}_0`) and
//! `ggml_vec_dot_tq{1,2}_0_q8_K_generic`.

use super::blocks::{as_blocks, as_blocks_mut, BlockQ8K, QuantBlock, F16};
use super::common::max_abs;
use super::float::fp32_to_fp16;
use super::{GgmlType, Kernels, QK_K};
use bytemuck::{Pod, Zeroable};

/// `block_tq1_0`: 240 trits five to a byte in `qs`, 16 trits four to a byte in `qh`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockTq1_0 {
    pub qs: [u8; (QK_K - 4 * QK_K / 64) / 5],
    pub qh: [u8; QK_K / 64],
    pub d: F16,
}
const _: () = assert!(std::mem::size_of::<BlockTq1_0>() == 54);

/// `block_tq2_0`: 256 trits, two bits each (0, 1, 2 for -1, 0, 1).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockTq2_0 {
    pub qs: [u8; QK_K / 4],
    pub d: F16,
}
const _: () = assert!(std::mem::size_of::<BlockTq2_0>() == 66);

impl QuantBlock for BlockTq1_0 {
    const TYPE: GgmlType = GgmlType::TQ1_0;
    type VecDot = BlockQ8K;
}
impl QuantBlock for BlockTq2_0 {
    const TYPE: GgmlType = GgmlType::TQ2_0;
    type VecDot = BlockQ8K;
}

pub(super) fn kernels(ty: GgmlType) -> Option<Kernels> {
    Some(match ty {
        GgmlType::TQ1_0 => {
            Kernels::of::<BlockTq1_0>(dequantize_tq1_0, quantize_tq1_0, Some(vec_dot_tq1_0_q8_k))
        }
        GgmlType::TQ2_0 => {
            Kernels::of::<BlockTq2_0>(dequantize_tq2_0, quantize_tq2_0, Some(vec_dot_tq2_0_q8_k))
        }
        _ => return None,
    })
}

const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];

/// The trit code of `v` (0, 1, 2 for -1, 0, 1): `lroundf(v) + 1` as an int, with glibc's
/// `LONG_MIN` for NaN and out-of-range values truncated to int as C does.
#[inline]
fn trit(v: f32) -> u8 {
    let l = if v.is_nan() || v.abs() >= 9_223_372_036_854_775_808.0 {
        i64::MIN
    } else {
        v.round() as i64
    };
    (l as i32).wrapping_add(1) as u8
}

/// The block scale: max |x|, and its inverse (0 for an all-zero block).
fn scale(xb: &[f32]) -> (f32, f32) {
    let amax = max_abs(xb);
    (amax, if amax != 0.0 { 1.0 / amax } else { 0.0 })
}

/// Five (or four, shifted up one trit) trits as a byte: the base-3 number `q` scaled to
/// `ceil(q * 256 / 243)`, so that the top trit is `(byte * 3) >> 8`.
#[inline]
fn pack_trits(q: u8) -> u8 {
    (q as u16 * 256).div_ceil(243) as u8
}

/// Trit `n` (0 the most significant) of a packed byte, as -1, 0 or 1.
#[inline]
fn unpack_trit(byte: u8, n: usize) -> i32 {
    let q = byte.wrapping_mul(POW3[n]);
    ((q as u16 * 3) >> 8) as i32 - 1
}

// ---------------------------------------------------------------------------------------------
// TQ1_0

/// `quantize_row_tq1_0_ref` (ggml ignores the importance matrix).
fn quantize_tq1_0(x: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    let y: &mut [BlockTq1_0] = as_blocks_mut(dst);
    for (xb, b) in x.chunks_exact(QK_K).zip(y) {
        let (d, id) = scale(xb);
        b.d = fp32_to_fp16(d);
        // 5 trits per byte: bytes 0..32 take values 0..160 (stride 32), bytes 32..48 take
        // values 160..240 (stride 16); 4 trits per byte in qh take values 240..256.
        for m in 0..32 {
            let mut q = 0u8;
            for n in 0..5 {
                q = q.wrapping_mul(3).wrapping_add(trit(xb[m + n * 32] * id));
            }
            b.qs[m] = pack_trits(q);
        }
        for m in 0..16 {
            let mut q = 0u8;
            for n in 0..5 {
                q = q
                    .wrapping_mul(3)
                    .wrapping_add(trit(xb[160 + m + n * 16] * id));
            }
            b.qs[32 + m] = pack_trits(q);
        }
        for j in 0..4 {
            let mut q = 0u8;
            for m in 0..4 {
                q = q
                    .wrapping_mul(3)
                    .wrapping_add(trit(xb[240 + j + m * 4] * id));
            }
            // the first value goes to the most significant trit
            b.qh[j] = pack_trits(q.wrapping_mul(3));
        }
    }
}

fn dequantize_tq1_0(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockTq1_0] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let mut k = 0;
        for n in 0..5 {
            for m in 0..32 {
                y[k] = unpack_trit(b.qs[m], n) as f32 * d;
                k += 1;
            }
        }
        for n in 0..5 {
            for m in 0..16 {
                y[k] = unpack_trit(b.qs[32 + m], n) as f32 * d;
                k += 1;
            }
        }
        for n in 0..4 {
            for j in 0..4 {
                y[k] = unpack_trit(b.qh[j], n) as f32 * d;
                k += 1;
            }
        }
    }
}

fn vec_dot_tq1_0_q8_k(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockTq1_0] = as_blocks(vx);
    let y: &[BlockQ8K] = as_blocks(vy);
    let mut sumf = 0f32;
    for (bx, by) in x.iter().zip(y).take(n / QK_K) {
        let mut sum = 0i32;
        for l in 0..5 {
            for m in 0..32 {
                sum += unpack_trit(bx.qs[m], l) * by.qs[l * 32 + m] as i32;
            }
        }
        for l in 0..5 {
            for m in 0..16 {
                sum += unpack_trit(bx.qs[32 + m], l) * by.qs[160 + l * 16 + m] as i32;
            }
        }
        for l in 0..4 {
            for j in 0..4 {
                sum += unpack_trit(bx.qh[j], l) * by.qs[240 + l * 4 + j] as i32;
            }
        }
        sumf += sum as f32 * (bx.d.to_f32() * by.d.get());
    }
    sumf
}

// ---------------------------------------------------------------------------------------------
// TQ2_0

/// `quantize_row_tq2_0_ref` (ggml ignores the importance matrix).
fn quantize_tq2_0(x: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    let y: &mut [BlockTq2_0] = as_blocks_mut(dst);
    for (xb, b) in x.chunks_exact(QK_K).zip(y) {
        let (d, id) = scale(xb);
        b.d = fp32_to_fp16(d);
        // byte j + m holds values j*4 + n*32 + m of its group of 128, n = 0..4
        for j in (0..QK_K / 4).step_by(32) {
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    q = q.wrapping_add((trit(xb[j * 4 + m + n * 32] * id) & 3) << (2 * n));
                }
                b.qs[j + m] = q;
            }
        }
    }
}

fn dequantize_tq2_0(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockTq2_0] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for j in (0..QK_K / 4).step_by(32) {
            for l in 0..4 {
                for m in 0..32 {
                    let q = ((b.qs[j + m] >> (l * 2)) & 3) as i32;
                    y[j * 4 + l * 32 + m] = (q - 1) as f32 * d;
                }
            }
        }
    }
}

fn vec_dot_tq2_0_q8_k(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockTq2_0] = as_blocks(vx);
    let y: &[BlockQ8K] = as_blocks(vy);
    let mut sumf = 0f32;
    for (bx, by) in x.iter().zip(y).take(n / QK_K) {
        let mut sumi = 0i32;
        for j in (0..QK_K / 4).step_by(32) {
            for l in 0..4 {
                for k in 0..32 {
                    let q = ((bx.qs[j + k] >> (l * 2)) & 3) as i32 - 1;
                    sumi += by.qs[j * 4 + l * 32 + k] as i32 * q;
                }
            }
        }
        let d = by.d.get() * bx.d.to_f32();
        sumf += sumi as f32 * d;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_trits_unpack_in_order() {
        // every base-3 number of five trits survives the fixed-point packing
        for q in 0u8..243 {
            let byte = pack_trits(q);
            let mut v = q as i32;
            for n in (0..5).rev() {
                assert_eq!(unpack_trit(byte, n), v % 3 - 1, "{q} trit {n}");
                v /= 3;
            }
        }
    }
}
