//! Q2_K, Q3_K, Q4_K, Q5_K and Q6_K: dot products with Q8_K activations and dequantization.
//!
//! A super-block is four registers of 64 unsigned quants. Products with the activations are
//! summed in pairs (`vpmaddubsw`, exact: |u| <= 63) and weighted by the sub-block scales in
//! the same step that widens them (`vpdpwssd`). Signed quants are stored offset (`q + 4` for
//! Q3_K, `q + 32` for Q6_K): the offset times the scale-weighted activation sums (`bsums`)
//! is subtracted; the mins of Q2_K/Q4_K/Q5_K are weighted by the same sums.

use super::{f16x2, hsum_ps, safe_dequantize, safe_dot, Own};
use crate::quant::arch::x86_64::{ahead, prefetch, q3k_scales, scales_mins_k4};
use crate::quant::GgmlType;
use std::arch::x86_64::*;

pub(super) fn kernels(ty: GgmlType) -> Option<Own> {
    Some(match ty {
        GgmlType::Q2K => (Some(dequantize_q2_k), None, Some(vec_dot_q2_k)),
        GgmlType::Q3K => (Some(dequantize_q3_k), None, Some(vec_dot_q3_k)),
        GgmlType::Q4K => (Some(dequantize_q4_k), None, Some(vec_dot_q4_k)),
        GgmlType::Q5K => (Some(dequantize_q5_k), None, Some(vec_dot_q5_k)),
        GgmlType::Q6K => (Some(dequantize_q6_k), None, Some(vec_dot_q6_k)),
        _ => return None,
    })
}

safe_dot!(vec_dot_q2_k, dot::<Q2K>);
safe_dot!(vec_dot_q3_k, dot::<Q3K>);
safe_dot!(vec_dot_q4_k, dot::<Q4K>);
safe_dot!(vec_dot_q5_k, dot::<Q5K>);
safe_dot!(vec_dot_q6_k, dot::<Q6K>);
safe_dequantize!(dequantize_q2_k, dequantize::<Q2K>);
safe_dequantize!(dequantize_q3_k, dequantize::<Q3K>);
safe_dequantize!(dequantize_q4_k, dequantize::<Q4K>);
safe_dequantize!(dequantize_q5_k, dequantize::<Q5K>);
safe_dequantize!(dequantize_q6_k, dequantize::<Q6K>);

/// Bytes of a Q8_K block; its `d` is at 0, the quants at 4, the sums of each 16 at 260.
const Q8K_BS: usize = 292;

/// A k-quant format as the kernels see it.
trait KQuant {
    /// Bytes per super-block of 256 values.
    const BS: usize;
    /// The quants are `u - OFFSET` for the unsigned `u` that `weights` returns.
    const OFFSET: i32;
    /// Whether there are mins (`x = d * sc * u - dmin * m`).
    const MIN: bool;
    /// The unsigned quants, 64 per register, in value order.
    unsafe fn weights(b: *const u8) -> [__m512i; 4];
    /// The scale and the min of each 16 values (sub-blocks of 32 give theirs twice).
    unsafe fn scales(b: *const u8) -> (__m256i, __m256i);
    /// `d` and `dmin`.
    unsafe fn d(b: *const u8) -> (f32, f32);
}

/// Two 256-bit halves as one register.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// A register whose low 32 bytes are `lo` and high 32 bytes `hi` (byte constants).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn bytes2(lo: u8, hi: u8) -> __m512i {
    join(_mm256_set1_epi8(lo as i8), _mm256_set1_epi8(hi as i8))
}

/// Per-16-bit-lane shift counts: `lo` in the low half, `hi` in the high half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn counts2(lo: u16, hi: u16) -> __m512i {
    join(_mm256_set1_epi16(lo as i16), _mm256_set1_epi16(hi as i16))
}

/// The low eight byte scales of `s`, each widened to 16 bits and given twice (for
/// sub-blocks of 32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn twice(s: __m128i) -> __m256i {
    let v = _mm_cvtepu8_epi16(s);
    _mm256_setr_m128i(_mm_unpacklo_epi16(v, v), _mm_unpackhi_epi16(v, v))
}

/// The 2-bit fields `2 * (2 * (k % 2))` and `2 * (2 * (k % 2) + 1)` of the 32 bytes at `q`
/// for register `k` (Q2_K and Q3_K keep four 32-value groups in each byte).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn crumbs(q: *const u8, k: usize) -> __m512i {
    let v = _mm512_broadcast_i64x4(_mm256_loadu_si256(q.add(32 * (k / 2)) as *const __m256i));
    let s = 4 * (k % 2) as u16;
    _mm512_and_si512(_mm512_srlv_epi16(v, counts2(s, s + 2)), _mm512_set1_epi8(3))
}

struct Q2K;
impl KQuant for Q2K {
    const BS: usize = 84;
    const OFFSET: i32 = 0;
    const MIN: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(b: *const u8) -> [__m512i; 4] {
        std::array::from_fn(|k| crumbs(b.add(16), k))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn scales(b: *const u8) -> (__m256i, __m256i) {
        let s = _mm_loadu_si128(b as *const __m128i);
        let m4 = _mm_set1_epi8(0x0F);
        (
            _mm256_cvtepu8_epi16(_mm_and_si128(s, m4)),
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(s), m4)),
        )
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn d(b: *const u8) -> (f32, f32) {
        f16x2(b.add(80))
    }
}

struct Q3K;
impl KQuant for Q3K {
    const BS: usize = 110;
    const OFFSET: i32 = 4;
    const MIN: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(b: *const u8) -> [__m512i; 4] {
        let hm = _mm512_broadcast_i64x4(_mm256_loadu_si256(b as *const __m256i));
        std::array::from_fn(|k| {
            // Value j's high bit is bit j / 32 of hmask[j % 32]; set means u = low + 4.
            let bit = bytes2(1 << (2 * k), 1 << (2 * k + 1));
            let hi = _mm512_test_epi8_mask(hm, bit);
            let low = crumbs(b.add(32), k);
            _mm512_mask_add_epi8(low, hi, low, _mm512_set1_epi8(4))
        })
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn scales(b: *const u8) -> (__m256i, __m256i) {
        (
            _mm256_cvtepi8_epi16(q3k_scales(b.add(96))),
            _mm256_setzero_si256(),
        )
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn d(b: *const u8) -> (f32, f32) {
        (f16x2(b.add(106)).1, 0.0)
    }
}

/// The scales and mins of Q4_K and Q5_K (12 packed bytes at `b + 4`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn scales_k4(b: *const u8) -> (__m256i, __m256i) {
    let v = scales_mins_k4(b.add(4));
    (twice(v), twice(_mm_srli_si128::<8>(v)))
}

struct Q4K;
impl KQuant for Q4K {
    const BS: usize = 144;
    const OFFSET: i32 = 0;
    const MIN: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(b: *const u8) -> [__m512i; 4] {
        let m4 = _mm256_set1_epi8(0x0F);
        std::array::from_fn(|k| {
            let q = _mm256_loadu_si256(b.add(16 + 32 * k) as *const __m256i);
            join(
                _mm256_and_si256(q, m4),
                _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4),
            )
        })
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn scales(b: *const u8) -> (__m256i, __m256i) {
        scales_k4(b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn d(b: *const u8) -> (f32, f32) {
        f16x2(b)
    }
}

struct Q5K;
impl KQuant for Q5K {
    const BS: usize = 176;
    const OFFSET: i32 = 0;
    const MIN: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(b: *const u8) -> [__m512i; 4] {
        let m4 = _mm256_set1_epi8(0x0F);
        let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(b.add(16) as *const __m256i));
        std::array::from_fn(|k| {
            let q = _mm256_loadu_si256(b.add(48 + 32 * k) as *const __m256i);
            let w = join(
                _mm256_and_si256(q, m4),
                _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4),
            );
            // The fifth bits of the 64 values of register k: bits 2k and 2k + 1 of qh.
            let hi = _mm512_test_epi8_mask(qh, bytes2(1 << (2 * k), 2 << (2 * k)));
            _mm512_mask_add_epi8(w, hi, w, _mm512_set1_epi8(16))
        })
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn scales(b: *const u8) -> (__m256i, __m256i) {
        scales_k4(b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn d(b: *const u8) -> (f32, f32) {
        f16x2(b)
    }
}

struct Q6K;
impl KQuant for Q6K {
    const BS: usize = 210;
    const OFFSET: i32 = 32;
    const MIN: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(b: *const u8) -> [__m512i; 4] {
        let m4 = _mm512_set1_epi8(0x0F);
        let m30 = _mm512_set1_epi8(0x30);
        let mut w = [_mm512_setzero_si512(); 4];
        for h in 0..2 {
            // ql[l] and ql[l + 32] give the low nibbles of values l, l + 32 (low halves) and
            // l + 64, l + 96 (high halves); qh[l] their two high bits at 0, 2, 4 and 6.
            let ql = _mm512_loadu_si512(b.add(64 * h) as *const _);
            let qh =
                _mm512_broadcast_i64x4(_mm256_loadu_si256(b.add(128 + 32 * h) as *const __m256i));
            let h0 = _mm512_and_si512(_mm512_sllv_epi16(qh, counts2(4, 2)), m30);
            let h1 = _mm512_and_si512(_mm512_srlv_epi16(qh, counts2(0, 2)), m30);
            w[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4), h0);
            w[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4), h1);
        }
        w
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn scales(b: *const u8) -> (__m256i, __m256i) {
        let v = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192) as *const __m128i));
        (v, _mm256_setzero_si256())
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn d(b: *const u8) -> (f32, f32) {
        (f16x2(b.add(206)).1, 0.0)
    }
}

/// `permutexvar` indices that give each 16-bit lane of register k the scale of its 16 values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn scale_index(k: usize) -> __m512i {
    let idx: [i16; 32] = std::array::from_fn(|i| (4 * k + i / 8) as i16);
    _mm512_loadu_si512(idx.as_ptr() as *const _)
}

/// The dot product: per super-block, eight integer lanes scaled by `d * d_y` and the min
/// sums by `dmin * d_y`, in float accumulators summed at the end.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot<T: KQuant>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let nb = (n / 256).min(x.len() / T::BS).min(y.len() / Q8K_BS);
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let idx: [__m512i; 4] = std::array::from_fn(|k| scale_index(k));
    let mut acc = _mm256_setzero_ps();
    let mut acc_min = _mm256_setzero_ps();
    let ahead = ahead() / (T::BS + Q8K_BS);
    for i in 0..nb {
        // SAFETY: block i < nb lies inside `x` and `y`.
        let (xb, yb) = (px.add(i * T::BS), py.add(i * Q8K_BS));
        if ahead > 0 {
            // The weights past this row are the next row of a matrix: fetch them too.
            prefetch(xb.wrapping_add(ahead * T::BS), T::BS);
            if i + ahead < nb {
                prefetch(yb.add(ahead * Q8K_BS), Q8K_BS);
            }
        }
        let w = T::weights(xb);
        let (sc, mins) = T::scales(xb);
        let sc512 = _mm512_castsi256_si512(sc);
        let mut s = _mm512_setzero_si512();
        for k in 0..4 {
            let q8 = _mm512_loadu_si512(yb.add(4 + 64 * k) as *const _);
            let p = _mm512_maddubs_epi16(w[k], q8);
            s = _mm512_dpwssd_epi32(s, p, _mm512_permutexvar_epi16(idx[k], sc512));
        }
        let mut s8 = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s));
        let bsums = _mm256_loadu_si256(yb.add(260) as *const __m256i);
        if T::OFFSET != 0 {
            let c = _mm256_madd_epi16(bsums, sc);
            s8 = _mm256_sub_epi32(s8, _mm256_mullo_epi32(c, _mm256_set1_epi32(T::OFFSET)));
        }
        let dy = (yb as *const f32).read_unaligned();
        let (d, dmin) = T::d(xb);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s8), _mm256_set1_ps(d * dy), acc);
        if T::MIN {
            let m = _mm256_madd_epi16(bsums, mins);
            acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), _mm256_set1_ps(dmin * dy), acc_min);
        }
    }
    hsum_ps(acc) - hsum_ps(acc_min)
}

/// `x = (d * sc) * (u - OFFSET) - dmin * m` per 16 values, as the scalar code rounds it.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn dequantize<T: KQuant>(src: &[u8], dst: &mut [f32]) {
    let nb = (dst.len() / 256).min(src.len() / T::BS);
    let offset = _mm512_set1_epi32(T::OFFSET);
    for i in 0..nb {
        // SAFETY: block i < nb lies inside `src`, its values inside `dst`.
        let xb = src.as_ptr().add(i * T::BS);
        let out = dst.as_mut_ptr().add(256 * i);
        let w = T::weights(xb);
        let (sc, mins) = T::scales(xb);
        let sc: [i16; 16] = std::mem::transmute(sc);
        let mins: [i16; 16] = std::mem::transmute(mins);
        let (d, dmin) = T::d(xb);
        for (k, wk) in w.iter().enumerate() {
            let lanes: [__m128i; 4] = std::mem::transmute(*wk);
            for (j, lane) in lanes.iter().enumerate() {
                let g = 4 * k + j;
                let q = _mm512_sub_epi32(_mm512_cvtepu8_epi32(*lane), offset);
                let mut v = _mm512_mul_ps(_mm512_set1_ps(d * sc[g] as f32), _mm512_cvtepi32_ps(q));
                if T::MIN {
                    v = _mm512_sub_ps(v, _mm512_set1_ps(dmin * mins[g] as f32));
                }
                _mm512_storeu_ps(out.add(16 * g), v);
            }
        }
    }
}
