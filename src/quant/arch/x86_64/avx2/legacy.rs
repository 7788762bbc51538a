//! Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: dot products with Q8_0/Q8_1 activations and
//! dequantization, one block (32 values) per 256-bit register.

use super::{f16x2, hsum_ps, q8, safe_dequantize, safe_dot, store_bytes_as_f32, Own};
use crate::quant::arch::x86_64::{ahead, prefetch};
use crate::quant::GgmlType;
use std::arch::x86_64::*;

pub(super) fn kernels(ty: GgmlType) -> Option<Own> {
    Some(match ty {
        GgmlType::Q4_0 => (Some(dequantize_q4_0), None, Some(vec_dot_q4_0)),
        GgmlType::Q4_1 => (Some(dequantize_q4_1), None, Some(vec_dot_q4_1)),
        GgmlType::Q5_0 => (Some(dequantize_q5_0), None, Some(vec_dot_q5_0)),
        GgmlType::Q5_1 => (Some(dequantize_q5_1), None, Some(vec_dot_q5_1)),
        GgmlType::Q8_0 => (Some(dequantize_q8_0), Some(q8::q8_0()), Some(vec_dot_q8_0)),
        GgmlType::Q8_1 => (None, Some(q8::q8_1()), None),
        _ => return None,
    })
}

safe_dot!(vec_dot_q4_0, dot::<Q4_0>);
safe_dot!(vec_dot_q4_1, dot::<Q4_1>);
safe_dot!(vec_dot_q5_0, dot::<Q5_0>);
safe_dot!(vec_dot_q5_1, dot::<Q5_1>);
safe_dot!(vec_dot_q8_0, dot::<Q8_0>);
safe_dequantize!(dequantize_q4_0, dequantize::<Q4_0>);
safe_dequantize!(dequantize_q4_1, dequantize::<Q4_1>);
safe_dequantize!(dequantize_q5_0, dequantize::<Q5_0>);
safe_dequantize!(dequantize_q5_1, dequantize::<Q5_1>);
safe_dequantize!(dequantize_q8_0, dequantize::<Q8_0>);

/// A legacy block format as the kernels see it.
trait Legacy {
    /// Bytes per block of 32 values.
    const BS: usize;
    /// The quants are `u - OFFSET` for the unsigned `u` that `weights` returns (0 for the
    /// formats with a min, whose quants are unsigned).
    const OFFSET: u8;
    /// `d` at byte 0, and a min `m` at byte 2 (the dot type is then Q8_1, else Q8_0).
    const MIN: bool;
    /// The 32 unsigned quants of the block at `b`, in value order.
    unsafe fn weights(b: *const u8) -> __m256i;
}

/// Low nibbles of the 16 bytes at `p` (values 0..16), then high nibbles (16..32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let m4 = _mm_set1_epi8(0x0F);
    _mm256_setr_m128i(
        _mm_and_si128(q, m4),
        _mm_and_si128(_mm_srli_epi16::<4>(q), m4),
    )
}

/// 0x10 in each byte whose bit is set in the 32-bit `qh` at `p` (ggml's `bytes_from_bits_32`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    let qh = (p as *const u32).read_unaligned() as i32;
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh),
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

struct Q4_0;
impl Legacy for Q4_0 {
    const BS: usize = 18;
    const OFFSET: u8 = 8;
    const MIN: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weights(b: *const u8) -> __m256i {
        nibbles(b.add(2))
    }
}

struct Q4_1;
impl Legacy for Q4_1 {
    const BS: usize = 20;
    const OFFSET: u8 = 0;
    const MIN: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weights(b: *const u8) -> __m256i {
        nibbles(b.add(4))
    }
}

struct Q5_0;
impl Legacy for Q5_0 {
    const BS: usize = 22;
    const OFFSET: u8 = 16;
    const MIN: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weights(b: *const u8) -> __m256i {
        _mm256_or_si256(nibbles(b.add(6)), fifth_bits(b.add(2)))
    }
}

struct Q5_1;
impl Legacy for Q5_1 {
    const BS: usize = 24;
    const OFFSET: u8 = 0;
    const MIN: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weights(b: *const u8) -> __m256i {
        _mm256_or_si256(nibbles(b.add(8)), fifth_bits(b.add(4)))
    }
}

struct Q8_0;
impl Legacy for Q8_0 {
    const BS: usize = 34;
    const OFFSET: u8 = 128;
    const MIN: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weights(b: *const u8) -> __m256i {
        // x + 128 as an unsigned byte.
        _mm256_xor_si256(
            _mm256_loadu_si256(b.add(2) as *const __m256i),
            _mm256_set1_epi8(-128),
        )
    }
}

/// The integer sums of block `x` with its activations `y`, in eight lanes. The offset is
/// subtracted in 16 bits: |pair sums| <= 2 * 31 * 128 + 2 * 16 * 128 fit.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_sums<T: Legacy>(x: *const u8, y: *const u8) -> __m256i {
    let yq = if T::MIN { 4 } else { 2 };
    if T::OFFSET == 128 {
        // Q8_0 weights: pair products of signed bytes do not fit 16 bits; widen both sides.
        let wide = |p: *const u8, k: usize| {
            _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(2 + 16 * k) as *const __m128i))
        };
        return _mm256_add_epi32(
            _mm256_madd_epi16(wide(x, 0), wide(y, 0)),
            _mm256_madd_epi16(wide(x, 1), wide(y, 1)),
        );
    }
    let yv = _mm256_loadu_si256(y.add(yq) as *const __m256i);
    let mut p = _mm256_maddubs_epi16(T::weights(x), yv);
    if T::OFFSET != 0 {
        p = _mm256_sub_epi16(
            p,
            _mm256_maddubs_epi16(_mm256_set1_epi8(T::OFFSET as i8), yv),
        );
    }
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// The f16 scales at `off` in up to four blocks `bs`, converted together (zero for missing).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn halves4(bs: &[*const u8; 4], m: usize, off: usize) -> __m128 {
    let mut h = 0u64;
    for (k, b) in bs.iter().enumerate().take(m) {
        h |= ((b.add(off) as *const u16).read_unaligned() as u64) << (16 * k);
    }
    _mm_cvtph_ps(_mm_cvtsi64_si128(h as i64))
}

/// Adds the first `m` of four blocks (`xs`, `ys`) to `acc` (alternating between its two
/// sums) and their min terms to `acc_min`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn add_group<T: Legacy>(
    acc: &mut [__m256; 2],
    acc_min: &mut __m128,
    xs: [*const u8; 4],
    ys: [*const u8; 4],
    m: usize,
) {
    let dd = _mm256_castps128_ps256(_mm_mul_ps(halves4(&xs, m, 0), halves4(&ys, m, 0)));
    for k in 0..m {
        let s = _mm256_cvtepi32_ps(block_sums::<T>(xs[k], ys[k]));
        let d = _mm256_permutevar8x32_ps(dd, _mm256_set1_epi32(k as i32));
        acc[k % 2] = _mm256_fmadd_ps(s, d, acc[k % 2]);
    }
    if T::MIN {
        *acc_min = _mm_add_ps(*acc_min, _mm_mul_ps(halves4(&xs, m, 2), halves4(&ys, m, 2)));
    }
}

/// `sum over blocks of d_x * d_y * sum(q_x * q_y)` (plus `m_x * s_y` with a min), four blocks
/// per step with their f16 scales converted together, in two accumulators.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot<T: Legacy>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let ybs = if T::MIN { 36 } else { 34 };
    let nb = (n / 32).min(x.len() / T::BS).min(y.len() / ybs);
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut acc_min = _mm_setzero_ps();
    let ahead = ahead() / (T::BS + ybs);
    let mut i = 0;
    while i < nb {
        let m = (nb - i).min(4);
        // SAFETY: blocks i .. i + m lie inside `x` and `y`; only those are read.
        let xs = std::array::from_fn(|k| px.wrapping_add((i + k) * T::BS));
        let ys = std::array::from_fn(|k| py.wrapping_add((i + k) * ybs));
        if ahead > 0 {
            // As the avx512 dots: both rows, the weights also past the end of this row.
            prefetch(px.wrapping_add((i + ahead) * T::BS), 4 * T::BS);
            if i + 4 + ahead <= nb {
                prefetch(py.wrapping_add((i + ahead) * ybs), 4 * ybs);
            }
        }
        if m == 4 {
            add_group::<T>(&mut acc, &mut acc_min, xs, ys, 4);
        } else {
            add_group::<T>(&mut acc, &mut acc_min, xs, ys, m);
        }
        i += 4;
    }
    let m = _mm_add_ps(acc_min, _mm_movehl_ps(acc_min, acc_min));
    let m = _mm_add_ss(m, _mm_movehdup_ps(m));
    hsum_ps(_mm256_add_ps(acc[0], acc[1])) + _mm_cvtss_f32(m)
}

/// `x = d * (u - OFFSET)` (or `u * d + m`), as the scalar code rounds it.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize<T: Legacy>(src: &[u8], dst: &mut [f32]) {
    let nb = (dst.len() / 32).min(src.len() / T::BS);
    for i in 0..nb {
        // SAFETY: block i < nb lies inside `src`, its values inside `dst`.
        let b = src.as_ptr().add(i * T::BS);
        // d and m (or d and the first quants).
        let (d, m) = f16x2(b);
        let add = if T::MIN { Some([m; 4]) } else { None };
        store_bytes_as_f32(
            T::weights(b),
            T::OFFSET as i32,
            dst.as_mut_ptr().add(32 * i),
            [d; 4],
            add,
        );
    }
}
