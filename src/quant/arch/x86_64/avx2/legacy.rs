//! Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: dot products with Q8_0/Q8_1 activations and
//! dequantization, one block (32 values) per 256-bit register.

use super::{f16_at, hsum_ps, q8, safe_dequantize, safe_dot, store_bytes_as_f32, Own};
use crate::quant::GgmlType;
use std::arch::x86_64::*;

pub(super) fn kernels(ty: GgmlType) -> Option<Own> {
    Some(match ty {
        GgmlType::Q4_0 => (Some(dequantize_q4_0), None, Some(vec_dot_q4_0)),
        GgmlType::Q4_1 => (Some(dequantize_q4_1), None, Some(vec_dot_q4_1)),
        GgmlType::Q5_0 => (Some(dequantize_q5_0), None, Some(vec_dot_q5_0)),
        GgmlType::Q5_1 => (Some(dequantize_q5_1), None, Some(vec_dot_q5_1)),
        GgmlType::Q8_0 => (
            Some(dequantize_q8_0),
            Some(q8::q8_0()),
            Some(vec_dot_q8_0_q8_0),
        ),
        GgmlType::Q8_1 => (None, Some(q8::q8_1()), None),
        _ => return None,
    })
}

safe_dot!(vec_dot_q4_0, dot::<Q4_0>);
safe_dot!(vec_dot_q4_1, dot::<Q4_1>);
safe_dot!(vec_dot_q5_0, dot::<Q5_0>);
safe_dot!(vec_dot_q5_1, dot::<Q5_1>);
safe_dot!(vec_dot_q8_0_q8_0, vec_dot_q8_0);
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

/// `sum over blocks of d_x * d_y * sum(q_x * q_y)` (plus `m_x * s_y` with a min). The offset
/// is subtracted in 16 bits: |pair sums| <= 2 * 31 * 128 + 2 * 16 * 128 fit.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot<T: Legacy>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let (ybs, yq) = if T::MIN { (36, 4) } else { (34, 2) };
    let nb = (n / 32).min(x.len() / T::BS).min(y.len() / ybs);
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let offset = _mm256_set1_epi8(T::OFFSET as i8);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut acc_min = 0f32;
    for i in 0..nb {
        // SAFETY: block i < nb lies inside `x` and `y`.
        let (xb, yb) = (px.add(i * T::BS), py.add(i * ybs));
        let w = T::weights(xb);
        let yv = _mm256_loadu_si256(yb.add(yq) as *const __m256i);
        let mut p = _mm256_maddubs_epi16(w, yv);
        if T::OFFSET != 0 {
            p = _mm256_sub_epi16(p, _mm256_maddubs_epi16(offset, yv));
        }
        let s = _mm256_madd_epi16(p, ones);
        let d = f16_at(xb) * f16_at(yb);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d), acc);
        if T::MIN {
            acc_min += f16_at(xb.add(2)) * f16_at(yb.add(2));
        }
    }
    hsum_ps(acc) + acc_min
}

/// Q8_0 x Q8_0: both sides signed over the full byte range, so widened to 16 bits
/// (`vpmaddwd` then sums exact pairs).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let nb = (n / 32).min(x.len() / 34).min(y.len() / 34);
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        // SAFETY: block i < nb lies inside `x` and `y`.
        let (xb, yb) = (px.add(i * 34), py.add(i * 34));
        let wide = |p: *const u8, k: usize| {
            _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(2 + 16 * k) as *const __m128i))
        };
        let s = _mm256_add_epi32(
            _mm256_madd_epi16(wide(xb, 0), wide(yb, 0)),
            _mm256_madd_epi16(wide(xb, 1), wide(yb, 1)),
        );
        let d = f16_at(xb) * f16_at(yb);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d), acc);
    }
    hsum_ps(acc)
}

/// `x = d * (u - OFFSET)` (or `u * d + m`), as the scalar code rounds it.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize<T: Legacy>(src: &[u8], dst: &mut [f32]) {
    let nb = (dst.len() / 32).min(src.len() / T::BS);
    for i in 0..nb {
        // SAFETY: block i < nb lies inside `src`, its values inside `dst`.
        let b = src.as_ptr().add(i * T::BS);
        let d = f16_at(b);
        let add = if T::MIN {
            Some([f16_at(b.add(2)); 4])
        } else {
            None
        };
        store_bytes_as_f32(
            T::weights(b),
            T::OFFSET as i32,
            dst.as_mut_ptr().add(32 * i),
            [d; 4],
            add,
        );
    }
}
