//! Activation quantizers Q8_0, Q8_1 and Q8_K, byte-identical to the scalar ones: the same
//! divisions, the same rounding (half away from zero for Q8_0/Q8_1, ggml's `nearest_int` for
//! Q8_K), and C's truncating conversions where the scalar code relies on them.

use super::{safe_quantize, Own};
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

/// The Q8_0/Q8_1 quantizers are also the Q8_0 type's weight quantizer; `legacy` hands them out.
pub(super) fn q8_0() -> crate::quant::QuantizeFn {
    quantize_q8_0
}
pub(super) fn q8_1() -> crate::quant::QuantizeFn {
    quantize_q8_1
}

safe_quantize!(quantize_q8_0, quantize_q8_0_impl);
safe_quantize!(quantize_q8_1, quantize_q8_1_impl);
safe_quantize!(quantize_q8_k, quantize_q8_k_impl);

/// C's `roundf` (half away from zero), exact: `trunc(v)` plus the sign where the dropped
/// fraction is at least one half. NaN and infinities stay as they are.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn round_away(v: __m512) -> __m512 {
    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    let frac = _mm512_abs_ps(_mm512_sub_ps(v, t));
    let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
    let one = _mm512_or_ps(_mm512_set1_ps(1.0), _mm512_and_ps(v, _mm512_set1_ps(-0.0)));
    _mm512_mask_add_ps(t, up, t, one)
}

/// One block of 32 values to `d` and 32 quants (`quantize_row_q8_0_ref`), the quants as the
/// low bytes of C's `(int)roundf(x * id)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn q8_block(x: *const f32, qs: *mut u8) -> (f32, __m512i, __m512i) {
    let v0 = _mm512_loadu_ps(x);
    let v1 = _mm512_loadu_ps(x.add(16));
    let nan =
        _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v0, v0) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v1, v1);
    let amax = if nan == 0 {
        // Without NaN the maximum does not depend on the order of comparisons.
        _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)))
    } else {
        // C's MAX(amax, |v|) in order: a NaN is kept until the next value replaces it.
        let mut amax = 0f32;
        for j in 0..32 {
            amax = c_max(amax, (*x.add(j)).abs());
        }
        amax
    };
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm512_set1_ps(id);
    let q0 = _mm512_cvttps_epi32(round_away(_mm512_mul_ps(v0, idv)));
    let q1 = _mm512_cvttps_epi32(round_away(_mm512_mul_ps(v1, idv)));
    _mm_storeu_si128(qs as *mut __m128i, _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(qs.add(16) as *mut __m128i, _mm512_cvtepi32_epi8(q1));
    (d, q0, q1)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn quantize_q8_0_impl(x: &[f32], dst: &mut [u8]) {
    let nb = (x.len() / 32).min(dst.len() / 34);
    for i in 0..nb {
        // SAFETY: block i < nb lies inside `x` (32 floats) and `dst` (34 bytes).
        let b = dst.as_mut_ptr().add(34 * i);
        let (d, _, _) = q8_block(x.as_ptr().add(32 * i), b.add(2));
        b.cast::<[u8; 2]>().write_unaligned(fp32_to_fp16(d).0);
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn quantize_q8_1_impl(x: &[f32], dst: &mut [u8]) {
    let nb = (x.len() / 32).min(dst.len() / 36);
    for i in 0..nb {
        // SAFETY: block i < nb lies inside `x` (32 floats) and `dst` (36 bytes).
        let b = dst.as_mut_ptr().add(36 * i);
        let (d, q0, q1) = q8_block(x.as_ptr().add(32 * i), b.add(4));
        // The sum of the stored bytes: sign-extend the low byte of each 32-bit lane.
        let s0 = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(q0));
        let s1 = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(q1));
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(s0, s1));
        b.cast::<[u8; 2]>().write_unaligned(fp32_to_fp16(d).0);
        b.add(2)
            .cast::<[u8; 2]>()
            .write_unaligned(fp32_to_fp16(sum as f32 * d).0);
    }
}

/// `quantize_row_q8_K_ref`: `d = max / -127` with the signed value of largest magnitude (the
/// first one), quants `nearest_int(iscale * x)` clamped above at 127, sums of each 16.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn quantize_q8_k_impl(x: &[f32], dst: &mut [u8]) {
    let nb = (x.len() / 256).min(dst.len() / 292);
    for i in 0..nb {
        // SAFETY: block i < nb lies inside `x` (256 floats) and `dst` (292 bytes).
        let xb = x.as_ptr().add(256 * i);
        let b = dst.as_mut_ptr().add(292 * i);
        let mut v = [_mm512_setzero_ps(); 16];
        // `max_ps(|v|, acc)` keeps acc where |v| is NaN: NaN never wins, as in the scalar scan.
        let mut acc = _mm512_setzero_ps();
        for (k, vk) in v.iter_mut().enumerate() {
            *vk = _mm512_loadu_ps(xb.add(16 * k));
            acc = _mm512_max_ps(_mm512_abs_ps(*vk), acc);
        }
        let amax = _mm512_reduce_max_ps(acc);
        if amax == 0.0 {
            std::ptr::write_bytes(b, 0, 292);
            continue;
        }
        // The first value whose magnitude is the maximum.
        let mut max = 0f32;
        for (k, vk) in v.iter().enumerate() {
            let m = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(*vk), _mm512_set1_ps(amax));
            if m != 0 {
                max = *xb.add(16 * k + m.trailing_zeros() as usize);
                break;
            }
        }
        let iscale = -127.0 / max;
        let isv = _mm512_set1_ps(iscale);
        let magic = _mm512_set1_ps(12582912.0);
        let mut sums = [0i16; 16];
        for (k, vk) in v.iter().enumerate() {
            // nearest_int: the low mantissa bits of iscale * x + 1.5 * 2^23 (no fused multiply).
            let f = _mm512_add_ps(_mm512_mul_ps(*vk, isv), magic);
            let q = _mm512_sub_epi32(
                _mm512_and_si512(_mm512_castps_si512(f), _mm512_set1_epi32(0x007f_ffff)),
                _mm512_set1_epi32(0x0040_0000),
            );
            let q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
            _mm_storeu_si128(b.add(4 + 16 * k) as *mut __m128i, _mm512_cvtepi32_epi8(q));
            let s = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(q));
            sums[k] = _mm512_reduce_add_epi32(s) as i16;
        }
        for (k, s) in sums.iter().enumerate() {
            b.add(260 + 2 * k)
                .cast::<[u8; 2]>()
                .write_unaligned(s.to_le_bytes());
        }
        b.cast::<[u8; 4]>()
            .write_unaligned((1.0 / iscale).to_le_bytes());
    }
}
