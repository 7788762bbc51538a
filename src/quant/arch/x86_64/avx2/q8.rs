//! Activation quantizers Q8_0, Q8_1 and Q8_K, byte-identical to the scalar ones: the same
//! divisions, the same rounding (half away from zero for Q8_0/Q8_1, ggml's `nearest_int` for
//! Q8_K), and C's truncating conversions where the scalar code relies on them.

use super::{hsum_epi32, safe_quantize, Own};
use crate::quant::arch::x86_64::c_max;
use crate::quant::float::fp32_to_fp16;
use crate::quant::GgmlType;
use std::arch::x86_64::*;

pub(super) fn kernels(ty: GgmlType) -> Option<Own> {
    match ty {
        GgmlType::Q8K => Some((None, Some(quantize_q8_k), None)),
        _ => None,
    }
}

/// The Q8_0/Q8_1 quantizers, handed out by `legacy` with those types (and by the avx512
/// path).
pub(crate) fn q8_0() -> crate::quant::QuantizeFn {
    quantize_q8_0
}
pub(crate) fn q8_1() -> crate::quant::QuantizeFn {
    quantize_q8_1
}

safe_quantize!(quantize_q8_0, quantize_q8_0_impl);
safe_quantize!(quantize_q8_1, quantize_q8_1_impl);
safe_quantize!(quantize_q8_k, quantize_q8_k_impl);

/// `|v|`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn abs(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

/// The largest lane (no lane is NaN).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// C's `roundf` (half away from zero), exact: `trunc(v)` plus the sign where the dropped
/// fraction is at least one half. NaN and infinities stay as they are.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_away(v: __m256) -> __m256 {
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(abs(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5));
    let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(v, _mm256_set1_ps(-0.0)));
    _mm256_add_ps(t, _mm256_and_ps(up, one))
}

/// The low bytes of 32 lanes, in order (C's narrowing `(int8_t)` of each).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn low_bytes(q: [__m256i; 4]) -> __m256i {
    let m = _mm256_set1_epi32(0xFF);
    let ab = _mm256_packus_epi32(_mm256_and_si256(q[0], m), _mm256_and_si256(q[1], m));
    let cd = _mm256_packus_epi32(_mm256_and_si256(q[2], m), _mm256_and_si256(q[3], m));
    let v = _mm256_packus_epi16(ab, cd);
    _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// The largest |x| of the 32 values at `x`, as the scalar scan finds it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_amax(x: *const f32) -> f32 {
    let v: [__m256; 4] = std::array::from_fn(|k| _mm256_loadu_ps(x.add(8 * k)));
    let mut nan = 0;
    for vk in &v {
        nan |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(*vk, *vk));
    }
    if nan == 0 {
        // Without NaN the maximum does not depend on the order of comparisons.
        hmax(_mm256_max_ps(
            _mm256_max_ps(abs(v[0]), abs(v[1])),
            _mm256_max_ps(abs(v[2]), abs(v[3])),
        ))
    } else {
        // C's MAX(amax, |v|) in order: a NaN is kept until the next value replaces it.
        let mut amax = 0f32;
        for j in 0..32 {
            amax = c_max(amax, (*x.add(j)).abs());
        }
        amax
    }
}

/// The eight f16 of `v`, rounded to nearest even as `fp32_to_fp16` does (NaN lanes, whose
/// payloads the hardware keeps, go through `fp32_to_fp16` itself).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16s(v: __m256) -> [[u8; 2]; 8] {
    let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
    let mut out: [[u8; 2]; 8] = std::mem::transmute(h);
    let nan = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
    if nan != 0 {
        let f: [f32; 8] = std::mem::transmute(v);
        for k in 0..8 {
            if nan & (1 << k) != 0 {
                out[k] = fp32_to_fp16(f[k]).0;
            }
        }
    }
    out
}

/// `quantize_row_q8_0_ref` (and `quantize_row_q8_1_ref` with `S`, which also stores
/// `s = d * sum(qs)`): eight blocks per step, their scales divided and converted together.
/// The quants are the low bytes of C's `(int)roundf(x * id)`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8<const S: bool>(x: &[f32], dst: &mut [u8]) {
    let (bs, qo) = if S { (36, 4) } else { (34, 2) };
    let nb = (x.len() / 32).min(dst.len() / bs);
    let out = dst.as_mut_ptr();
    let mut i = 0;
    while i < nb {
        let m = (nb - i).min(8);
        // SAFETY: blocks i .. i + m lie inside `x` (32 floats each) and `dst` (bs bytes each).
        let xk = |k: usize| x.as_ptr().add(32 * (i + k));
        let bk = |k: usize| out.add(bs * (i + k));
        let mut amax = [0f32; 8];
        for (k, a) in amax.iter_mut().enumerate().take(m) {
            *a = block_amax(xk(k));
        }
        let d = _mm256_div_ps(_mm256_loadu_ps(amax.as_ptr()), _mm256_set1_ps(127.0));
        // C's `d != 0.0 ? 1.0 / d : 0.0` (true for NaN).
        let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(d, _mm256_setzero_ps());
        let id: [f32; 8] = std::mem::transmute(_mm256_and_ps(
            nonzero,
            _mm256_div_ps(_mm256_set1_ps(1.0), d),
        ));
        let dh = f16s(d);
        let mut sums = [0i32; 8];
        for k in 0..m {
            let (xb, b) = (xk(k), bk(k));
            let idv = _mm256_set1_ps(id[k]);
            let q: [__m256i; 4] = std::array::from_fn(|j| {
                let v = _mm256_mul_ps(_mm256_loadu_ps(xb.add(8 * j)), idv);
                _mm256_cvttps_epi32(round_away(v))
            });
            let bytes = low_bytes(q);
            _mm256_storeu_si256(b.add(qo) as *mut __m256i, bytes);
            b.cast::<[u8; 2]>().write_unaligned(dh[k]);
            if S {
                let pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), bytes);
                sums[k] = hsum_epi32(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
            }
        }
        if S {
            let sv = _mm256_cvtepi32_ps(_mm256_loadu_si256(sums.as_ptr() as *const __m256i));
            let sh = f16s(_mm256_mul_ps(sv, d));
            for (k, h) in sh.iter().enumerate().take(m) {
                bk(k).add(2).cast::<[u8; 2]>().write_unaligned(*h);
            }
        }
        i += 8;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_0_impl(x: &[f32], dst: &mut [u8]) {
    quantize_q8::<false>(x, dst)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_1_impl(x: &[f32], dst: &mut [u8]) {
    quantize_q8::<true>(x, dst)
}

/// `quantize_row_q8_K_ref`: `d = max / -127` with the signed value of largest magnitude (the
/// first one), quants `nearest_int(iscale * x)` clamped above at 127, sums of each 16.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_k_impl(x: &[f32], dst: &mut [u8]) {
    let nb = (x.len() / 256).min(dst.len() / 292);
    for i in 0..nb {
        // SAFETY: block i < nb lies inside `x` (256 floats) and `dst` (292 bytes).
        let xb = x.as_ptr().add(256 * i);
        let b = dst.as_mut_ptr().add(292 * i);
        // `max_ps(|v|, acc)` keeps acc where |v| is NaN: NaN never wins, as in the scalar scan.
        let mut acc = _mm256_setzero_ps();
        for k in 0..32 {
            acc = _mm256_max_ps(abs(_mm256_loadu_ps(xb.add(8 * k))), acc);
        }
        let amax = hmax(acc);
        if amax == 0.0 {
            std::ptr::write_bytes(b, 0, 292);
            continue;
        }
        // The first value whose magnitude is the maximum.
        let mut max = 0f32;
        for k in 0..32 {
            let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(
                abs(_mm256_loadu_ps(xb.add(8 * k))),
                _mm256_set1_ps(amax),
            );
            let m = _mm256_movemask_ps(eq);
            if m != 0 {
                max = *xb.add(8 * k + m.trailing_zeros() as usize);
                break;
            }
        }
        let iscale = -127.0 / max;
        let isv = _mm256_set1_ps(iscale);
        for c in 0..8 {
            let q: [__m256i; 4] = std::array::from_fn(|k| {
                // nearest_int: the low mantissa bits of iscale * x + 1.5 * 2^23 (no fused
                // multiply-add), then the clamp at 127.
                let v = _mm256_loadu_ps(xb.add(32 * c + 8 * k));
                let f = _mm256_add_ps(_mm256_mul_ps(v, isv), _mm256_set1_ps(12582912.0));
                let q = _mm256_sub_epi32(
                    _mm256_and_si256(_mm256_castps_si256(f), _mm256_set1_epi32(0x007f_ffff)),
                    _mm256_set1_epi32(0x0040_0000),
                );
                _mm256_min_epi32(q, _mm256_set1_epi32(127))
            });
            let bytes = low_bytes(q);
            _mm256_storeu_si256(b.add(4 + 32 * c) as *mut __m256i, bytes);
            // The sums of each 16 stored bytes.
            let pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), bytes);
            let s = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
            let lo = _mm256_castsi256_si128(s);
            let hi = _mm256_extracti128_si256::<1>(s);
            let s0 = hsum_epi32(_mm256_setr_m128i(lo, _mm_setzero_si128()));
            let s1 = hsum_epi32(_mm256_setr_m128i(hi, _mm_setzero_si128()));
            for (j, sj) in [s0, s1].into_iter().enumerate() {
                b.add(260 + 4 * c + 2 * j)
                    .cast::<[u8; 2]>()
                    .write_unaligned((sj as i16).to_le_bytes());
            }
        }
        b.cast::<[u8; 4]>()
            .write_unaligned((1.0 / iscale).to_le_bytes());
    }
}
