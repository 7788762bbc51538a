//! The avx2 path: AVX2, FMA and F16C on 256-bit registers.
//!
//! The dot products multiply unsigned weights by signed activations in pairs
//! (`vpmaddubsw`) and widen with the sub-block scales (`vpmaddwd`); signed weights are
//! stored offset (`q + 8`, `q + 32`, ...) and the offset times the activation sum is
//! subtracted, so every integer block sum is exact for all inputs (Q8_0 weights, whose
//! pair products would not fit 16 bits, widen both sides to 16 bits first). One register
//! holds one legacy block or an eighth of a k-quant super-block.

pub(super) mod float;
pub(super) mod iq;
pub(super) mod iq4;
mod kquants;
mod legacy;
pub(super) mod q8;

use crate::quant::{GgmlType, Kernels};
use std::arch::x86_64::*;

/// The kernels this path has for `ty`; `None` fields fall back to the scalar code.
pub fn kernels(ty: GgmlType) -> Option<Kernels> {
    // The safe wrappers below may only be handed out once the CPU is known to run them.
    if !super::has_avx2() {
        return None;
    }
    if let Some(k) = float::kernels(ty)
        .or_else(|| iq4::kernels(ty))
        .or_else(|| iq::kernels(ty))
    {
        return Some(k);
    }
    super::assemble(
        ty,
        legacy::kernels(ty)
            .or_else(|| kquants::kernels(ty))
            .or_else(|| q8::kernels(ty)),
    )
}

use super::{safe_dequantize, safe_dot, safe_quantize, Own};

/// The two f16 of the 32-bit word at `p` (unaligned), converted exactly. (Converting a
/// whole word keeps the compiler from inserting 16 bits into a stale register, which chains
/// each block's scale to the previous block's accumulator.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x2(p: *const u8) -> (f32, f32) {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// The sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The sum of the eight 32-bit lanes (wrapping).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
    _mm_cvtsi128_si32(s)
}

/// Writes `n` floats, eight per 32-bit lane group of the bytes in `w` widened: for each run
/// of eight values `i`, `scale(i) * (w[i] - offset) + add(i)` (with `add` skipped when absent),
/// as the scalar code rounds it (multiply, then add: no fused multiply-add).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_bytes_as_f32(
    w: __m256i,
    offset: i32,
    out: *mut f32,
    mul: [f32; 4],
    add: Option<[f32; 4]>,
) {
    let lo = _mm256_castsi256_si128(w);
    let hi = _mm256_extracti128_si256::<1>(w);
    let parts = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
    for (j, p) in parts.iter().enumerate() {
        let q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(*p), _mm256_set1_epi32(offset));
        let mut v = _mm256_mul_ps(_mm256_set1_ps(mul[j]), _mm256_cvtepi32_ps(q));
        if let Some(a) = add {
            v = _mm256_add_ps(v, _mm256_set1_ps(a[j]));
        }
        _mm256_storeu_ps(out.add(8 * j), v);
    }
}
