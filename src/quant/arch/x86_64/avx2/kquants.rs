//! Q2_K, Q3_K, Q4_K, Q5_K and Q6_K: dot products with Q8_K activations and dequantization.
//!
//! A super-block is eight registers of 32 unsigned quants. Products with the activations are
//! summed in pairs (`vpmaddubsw`, exact: |u| <= 63) and weighted by the sub-block scales as
//! they are widened (`vpmaddwd`). Signed quants are stored offset (`q + 4` for Q3_K, `q + 32`
//! for Q6_K): the offset times the scale-weighted activation sums (`bsums`) is subtracted;
//! the mins of Q2_K/Q4_K/Q5_K are weighted by the same sums.

use super::{f16x2, hsum_ps, safe_dequantize, safe_dot, store_bytes_as_f32, Own};
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
    /// The unsigned quants of values `32 * c .. 32 * c + 32`.
    unsafe fn weights(b: *const u8, c: usize) -> __m256i;
    /// The scale and the min of each 16 values (sub-blocks of 32 give theirs twice).
    unsafe fn scales(b: *const u8) -> (__m256i, __m256i);
    /// `d` and `dmin`.
    unsafe fn d(b: *const u8) -> (f32, f32);
}

/// 32 bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// Bits `s .. s + width` of each byte (shifting 16-bit lanes; the mask drops what crosses).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn field(v: __m256i, s: usize, mask: i8) -> __m256i {
    let shifted = _mm256_srl_epi16(v, _mm_cvtsi64_si128(s as i64));
    _mm256_and_si256(shifted, _mm256_set1_epi8(mask))
}

/// `add` in each byte of `v` whose `bit` is set in `h`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn add_where(v: __m256i, h: __m256i, bit: u8, add: i8) -> __m256i {
    let b = _mm256_set1_epi8(bit as i8);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(h, b), b);
    _mm256_add_epi8(v, _mm256_and_si256(set, _mm256_set1_epi8(add)))
}

/// Eight byte scales (the low eight bytes of `s`), widened to 16 bits and given twice.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn twice(s: __m128i) -> __m256i {
    let v = _mm_cvtepu8_epi16(s);
    _mm256_setr_m128i(_mm_unpacklo_epi16(v, v), _mm_unpackhi_epi16(v, v))
}

struct Q2K;
impl KQuant for Q2K {
    const BS: usize = 84;
    const OFFSET: i32 = 0;
    const MIN: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weights(b: *const u8, c: usize) -> __m256i {
        field(load(b.add(16 + 32 * (c / 4))), 2 * (c % 4), 3)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(b: *const u8) -> (__m256i, __m256i) {
        let s = _mm_loadu_si128(b as *const __m128i);
        let m4 = _mm_set1_epi8(0x0F);
        (
            _mm256_cvtepu8_epi16(_mm_and_si128(s, m4)),
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(s), m4)),
        )
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
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
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weights(b: *const u8, c: usize) -> __m256i {
        // Value j's high bit is bit j / 32 of hmask[j % 32]; set means u = low + 4.
        let low = field(load(b.add(32 + 32 * (c / 4))), 2 * (c % 4), 3);
        add_where(low, load(b), 1 << c, 4)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(b: *const u8) -> (__m256i, __m256i) {
        (
            _mm256_cvtepi8_epi16(q3k_scales(b.add(96))),
            _mm256_setzero_si256(),
        )
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn d(b: *const u8) -> (f32, f32) {
        (f16x2(b.add(106)).1, 0.0)
    }
}

/// The scales and mins of Q4_K and Q5_K (12 packed bytes at `b + 4`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
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
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weights(b: *const u8, c: usize) -> __m256i {
        field(load(b.add(16 + 32 * (c / 2))), 4 * (c % 2), 0x0F)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(b: *const u8) -> (__m256i, __m256i) {
        scales_k4(b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
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
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weights(b: *const u8, c: usize) -> __m256i {
        // The fifth bit of value 32c + l is bit c of qh[l].
        let low = field(load(b.add(48 + 32 * (c / 2))), 4 * (c % 2), 0x0F);
        add_where(low, load(b.add(16)), 1 << c, 16)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(b: *const u8) -> (__m256i, __m256i) {
        scales_k4(b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
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
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weights(b: *const u8, c: usize) -> __m256i {
        // Values 128h + 32r + l: a nibble of ql[64h + 32(r % 2) + l] (low for r < 2) and
        // bits 2r, 2r + 1 of qh[32h + l] above it.
        let (h, r) = (c / 4, c % 4);
        let low = field(load(b.add(64 * h + 32 * (r % 2))), 4 * (r / 2), 0x0F);
        // Bits 2r, 2r + 1 moved straight to 4, 5 (a 16-bit shift: the mask drops what
        // crosses from the other byte).
        let qh = load(b.add(128 + 32 * h));
        let moved = match r {
            0 => _mm256_slli_epi16::<4>(qh),
            1 => _mm256_slli_epi16::<2>(qh),
            2 => qh,
            _ => _mm256_srli_epi16::<2>(qh),
        };
        _mm256_or_si256(low, _mm256_and_si256(moved, _mm256_set1_epi8(0x30)))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(b: *const u8) -> (__m256i, __m256i) {
        let v = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192) as *const __m128i));
        (v, _mm256_setzero_si256())
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn d(b: *const u8) -> (f32, f32) {
        (f16x2(b.add(206)).1, 0.0)
    }
}

/// The scales of register `c` (values 32c..32c + 32): lanes 0..8 get scale 2c, lanes 8..16
/// scale 2c + 1, picked by a byte shuffle from the half of `halves` that holds them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_of(halves: &[__m256i; 2], c: usize) -> __m256i {
    let m = 2 * (c % 4) as i16;
    let pick = |s: i16| _mm_set1_epi16(((2 * s + 1) << 8) | (2 * s));
    let ctrl = _mm256_setr_m128i(pick(m), pick(m + 1));
    _mm256_shuffle_epi8(halves[c / 4], ctrl)
}

/// The dot product: per super-block, eight integer lanes scaled by `d * d_y` and the min
/// sums by `dmin * d_y`, in float accumulators summed at the end.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot<T: KQuant>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let nb = (n / 256).min(x.len() / T::BS).min(y.len() / Q8K_BS);
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut acc = _mm256_setzero_ps();
    let mut acc_min = _mm256_setzero_ps();
    let ahead = ahead() / (T::BS + Q8K_BS);
    for i in 0..nb {
        // SAFETY: block i < nb lies inside `x` and `y`.
        let (xb, yb) = (px.add(i * T::BS), py.add(i * Q8K_BS));
        if ahead > 0 {
            // As the avx512 dots: both rows, the weights also past the end of this row.
            prefetch(xb.wrapping_add(ahead * T::BS), T::BS);
            if i + ahead < nb {
                prefetch(yb.add(ahead * Q8K_BS), Q8K_BS);
            }
        }
        let (sc, mins) = T::scales(xb);
        let halves = [
            _mm256_permute2x128_si256::<0x00>(sc, sc),
            _mm256_permute2x128_si256::<0x11>(sc, sc),
        ];
        let mut s = _mm256_setzero_si256();
        for c in 0..8 {
            let p = _mm256_maddubs_epi16(T::weights(xb, c), load(yb.add(4 + 32 * c)));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(p, scales_of(&halves, c)));
        }
        let bsums = load(yb.add(260));
        if T::OFFSET != 0 {
            let comp = _mm256_madd_epi16(bsums, sc);
            s = _mm256_sub_epi32(s, _mm256_mullo_epi32(comp, _mm256_set1_epi32(T::OFFSET)));
        }
        let dy = (yb as *const f32).read_unaligned();
        let (d, dmin) = T::d(xb);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * dy), acc);
        if T::MIN {
            let m = _mm256_madd_epi16(bsums, mins);
            acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), _mm256_set1_ps(dmin * dy), acc_min);
        }
    }
    hsum_ps(acc) - hsum_ps(acc_min)
}

/// `x = (d * sc) * (u - OFFSET) - dmin * m` per 16 values, as the scalar code rounds it.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize<T: KQuant>(src: &[u8], dst: &mut [f32]) {
    let nb = (dst.len() / 256).min(src.len() / T::BS);
    for i in 0..nb {
        // SAFETY: block i < nb lies inside `src`, its values inside `dst`.
        let xb = src.as_ptr().add(i * T::BS);
        let out = dst.as_mut_ptr().add(256 * i);
        let (sc, mins) = T::scales(xb);
        let sc: [i16; 16] = std::mem::transmute(sc);
        let mins: [i16; 16] = std::mem::transmute(mins);
        let (d, dmin) = T::d(xb);
        for c in 0..8 {
            let (g0, g1) = (2 * c, 2 * c + 1);
            let mul = [
                d * sc[g0] as f32,
                d * sc[g0] as f32,
                d * sc[g1] as f32,
                d * sc[g1] as f32,
            ];
            let add = if T::MIN {
                let (m0, m1) = (-(dmin * mins[g0] as f32), -(dmin * mins[g1] as f32));
                Some([m0, m0, m1, m1])
            } else {
                None
            };
            store_bytes_as_f32(T::weights(xb, c), T::OFFSET, out.add(32 * c), mul, add);
        }
    }
}
