//! Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: dot products with Q8_0/Q8_1 activations and
//! dequantization, two blocks (64 values) per 512-bit register.

use super::{f16_at, q8, safe_dequantize, safe_dot, u16_at, Own};
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

safe_dot!(vec_dot_q4_0, dot_pairs::<Q4_0>);
safe_dot!(vec_dot_q4_1, dot_pairs::<Q4_1>);
safe_dot!(vec_dot_q5_0, dot_pairs::<Q5_0>);
safe_dot!(vec_dot_q5_1, dot_pairs::<Q5_1>);
safe_dot!(vec_dot_q8_0, dot_pairs::<Q8_0>);
safe_dequantize!(dequantize_q4_0, dequantize_pairs::<Q4_0>);
safe_dequantize!(dequantize_q4_1, dequantize_pairs::<Q4_1>);
safe_dequantize!(dequantize_q5_0, dequantize_pairs::<Q5_0>);
safe_dequantize!(dequantize_q5_1, dequantize_pairs::<Q5_1>);
safe_dequantize!(dequantize_q8_0, dequantize_pairs::<Q8_0>);

/// A legacy block format as the kernels see it.
trait Legacy {
    /// Bytes per block of 32 values.
    const BS: usize;
    /// The quants are `u - OFFSET` for the unsigned `u` that `weights` returns (0 for the
    /// formats with a min, whose quants are unsigned).
    const OFFSET: u8;
    /// `d` at byte 0, and a min `m` at byte 2 (the dot type is then Q8_1, else Q8_0).
    const MIN: bool;
    /// The unsigned quants of blocks `a` and `b`, in value order (a's 32, then b's).
    unsafe fn weights(a: *const u8, b: *const u8) -> __m512i;
}

/// `[a's 16 bytes at off, twice | b's, twice]`, for splitting nibbles per 128-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn nibbles(a: *const u8, b: *const u8, off: usize) -> __m512i {
    let qa = _mm256_broadcastsi128_si256(_mm_loadu_si128(a.add(off) as *const __m128i));
    let qb = _mm256_broadcastsi128_si256(_mm_loadu_si128(b.add(off) as *const __m128i));
    let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qa), qb);
    // Low nibbles in lanes 0 and 2 (values 0..16), high nibbles in lanes 1 and 3 (16..32).
    const C: i64 = 0x0004_0004_0004_0004;
    let shift = _mm512_setr_epi64(0, 0, C, C, 0, 0, C, C);
    _mm512_and_si512(_mm512_srlv_epi16(q, shift), _mm512_set1_epi8(0x0F))
}

/// Adds 16 to the values whose bit is set in the two blocks' 32-bit `qh` at `off`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn fifth_bits(w: __m512i, a: *const u8, b: *const u8, off: usize) -> __m512i {
    let ha = (a.add(off) as *const u32).read_unaligned() as u64;
    let hb = (b.add(off) as *const u32).read_unaligned() as u64;
    _mm512_mask_add_epi8(w, ha | (hb << 32), w, _mm512_set1_epi8(0x10))
}

struct Q4_0;
impl Legacy for Q4_0 {
    const BS: usize = 18;
    const OFFSET: u8 = 8;
    const MIN: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(a: *const u8, b: *const u8) -> __m512i {
        nibbles(a, b, 2)
    }
}

struct Q4_1;
impl Legacy for Q4_1 {
    const BS: usize = 20;
    const OFFSET: u8 = 0;
    const MIN: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(a: *const u8, b: *const u8) -> __m512i {
        nibbles(a, b, 4)
    }
}

struct Q5_0;
impl Legacy for Q5_0 {
    const BS: usize = 22;
    const OFFSET: u8 = 16;
    const MIN: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(a: *const u8, b: *const u8) -> __m512i {
        fifth_bits(nibbles(a, b, 6), a, b, 2)
    }
}

struct Q5_1;
impl Legacy for Q5_1 {
    const BS: usize = 24;
    const OFFSET: u8 = 0;
    const MIN: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(a: *const u8, b: *const u8) -> __m512i {
        fifth_bits(nibbles(a, b, 8), a, b, 4)
    }
}

struct Q8_0;
impl Legacy for Q8_0 {
    const BS: usize = 34;
    const OFFSET: u8 = 128;
    const MIN: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(a: *const u8, b: *const u8) -> __m512i {
        let qa = _mm256_loadu_si256(a.add(2) as *const __m256i);
        let qb = _mm256_loadu_si256(b.add(2) as *const __m256i);
        let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qa), qb);
        // x + 128 as an unsigned byte.
        _mm512_xor_si512(q, _mm512_set1_epi8(-128))
    }
}

/// `sum over blocks of d_x * d_y * sum(q_x * q_y)` (plus `m_x * s_y` with a min): two blocks
/// per step; an odd last block is paired with itself and its copy weighted by zero.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_pairs<T: Legacy>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let (ybs, yq) = if T::MIN { (36, 4) } else { (34, 2) };
    let nb = (n / 32).min(x.len() / T::BS).min(y.len() / ybs);
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let zero = _mm512_setzero_si512();
    let offset = _mm512_set1_epi8(T::OFFSET as i8);
    let halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let mut acc = _mm512_setzero_ps();
    let mut acc_min = _mm_setzero_ps();
    let mut i = 0;
    while i < nb {
        // SAFETY: blocks i and i + 1 (when i + 1 < nb) lie inside `x` and `y`.
        let (xa, ya) = (px.add(i * T::BS), py.add(i * ybs));
        let two = i + 1 < nb;
        let (xb, yb) = if two {
            (xa.add(T::BS), ya.add(ybs))
        } else {
            (xa, ya)
        };
        let w = T::weights(xa, xb);
        let yv = _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_loadu_si256(ya.add(yq) as *const __m256i)),
            _mm256_loadu_si256(yb.add(yq) as *const __m256i),
        );
        let mut s = _mm512_dpbusd_epi32(zero, w, yv);
        if T::OFFSET != 0 {
            s = _mm512_sub_epi32(s, _mm512_dpbusd_epi32(zero, offset, yv));
        }
        // [dxA, dxB, dyA, dyB, mA, mB, sA, sB] as f16, the second block's zero when absent.
        let h = |p: *const u8, off: usize| if two { u16_at(p.add(off)) as i16 } else { 0 };
        let (mx, sy) = if T::MIN {
            (
                (u16_at(xa.add(2)) as i16, h(xb, 2)),
                (u16_at(ya.add(2)) as i16, h(yb, 2)),
            )
        } else {
            ((0, 0), (0, 0))
        };
        let f = _mm256_cvtph_ps(_mm_setr_epi16(
            u16_at(xa) as i16,
            h(xb, 0),
            u16_at(ya) as i16,
            h(yb, 0),
            mx.0,
            mx.1,
            sy.0,
            sy.1,
        ));
        let lo = _mm256_castps256_ps128(f);
        let dd = _mm_mul_ps(lo, _mm_movehl_ps(lo, lo));
        let scale = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(dd));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc);
        if T::MIN {
            let hi = _mm256_extractf128_ps::<1>(f);
            acc_min = _mm_add_ps(acc_min, _mm_mul_ps(hi, _mm_movehl_ps(hi, hi)));
        }
        i += 2;
    }
    // Only lanes 0 and 1 of the min sums are products of a min and a sum.
    let m = _mm_add_ss(acc_min, _mm_movehdup_ps(acc_min));
    _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(m)
}

/// `x = d * (u - OFFSET)` (or `u * d + m`), as the scalar code rounds it.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn dequantize_pairs<T: Legacy>(src: &[u8], dst: &mut [f32]) {
    let nb = (dst.len() / 32).min(src.len() / T::BS);
    let (px, py) = (src.as_ptr(), dst.as_mut_ptr());
    let offset = _mm512_set1_epi32(T::OFFSET as i32);
    let mut i = 0;
    while i < nb {
        // SAFETY: blocks i and i + 1 (when i + 1 < nb) lie inside `src`, their values
        // inside `dst`.
        let two = i + 1 < nb;
        let xa = px.add(i * T::BS);
        let xb = if two { xa.add(T::BS) } else { xa };
        let w = T::weights(xa, xb);
        let lanes: [__m128i; 4] = std::mem::transmute(w);
        for (k, lane) in lanes.iter().enumerate().take(if two { 4 } else { 2 }) {
            let b = if k < 2 { xa } else { xb };
            let d = _mm512_set1_ps(f16_at(b));
            let q = _mm512_sub_epi32(_mm512_cvtepu8_epi32(*lane), offset);
            let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(q), d);
            if T::MIN {
                v = _mm512_add_ps(v, _mm512_set1_ps(f16_at(b.add(2))));
            }
            _mm512_storeu_ps(py.add(32 * i + 16 * k), v);
        }
        i += 2;
    }
}
