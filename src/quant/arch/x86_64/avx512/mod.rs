//! The avx512 path: AVX-512 F, BW, VL and VNNI on 512-bit registers (with AVX2, FMA and F16C).
//!
//! The dot products multiply unsigned weights by signed activations with `vpdpbusd` (and
//! `vpdpwssd` where sub-block scales weight the products); signed weights are stored offset
//! (`q + 8`, `q + 32`, ...) and the offset times the activation sum is subtracted, so every
//! integer block sum is exact for all inputs. One register holds two legacy blocks or a
//! quarter of a k-quant super-block.

mod float;
pub mod gemm;
pub mod gemv;
mod iq;
mod iq4;
mod kquants;
mod legacy;
mod q8;

use crate::quant::{GgmlType, Kernels};
use std::arch::x86_64::*;

/// The kernels this path has for `ty`; `None` fields fall back to the paths below.
pub fn kernels(ty: GgmlType) -> Option<Kernels> {
    // The safe wrappers below may only be handed out once the CPU is known to run them.
    if !super::has_avx512() {
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

/// A u16 at `p` (unaligned).
#[inline]
unsafe fn u16_at(p: *const u8) -> u16 {
    (p as *const u16).read_unaligned()
}

/// The sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}
