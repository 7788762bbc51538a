//! The Q8_K activation quantizer, byte-identical to the scalar one: the same division, ggml's
//! `nearest_int`, and the scalar code's truncation to bytes. (Q8_0 and Q8_1 use the avx2
//! quantizers.)

use super::{safe_quantize, Own};
use crate::quant::GgmlType;
use std::arch::x86_64::*;

pub(super) fn kernels(ty: GgmlType) -> Option<Own> {
    match ty {
        GgmlType::Q8K => Some((None, Some(quantize_q8_k), None)),
        _ => None,
    }
}

/// The Q8_0/Q8_1 quantizers, handed out by `legacy` with those types: the avx2 ones, which
/// are faster here than 512-bit code (narrowing 32-bit lanes to bytes costs more in 512 bits
/// on Zen 4). `has_avx512()` implies `has_avx2()`, which their wrappers require.
pub(super) fn q8_0() -> crate::quant::QuantizeFn {
    super::super::avx2::q8::q8_0()
}
pub(super) fn q8_1() -> crate::quant::QuantizeFn {
    super::super::avx2::q8::q8_1()
}

safe_quantize!(quantize_q8_k, quantize_q8_k_impl);

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
