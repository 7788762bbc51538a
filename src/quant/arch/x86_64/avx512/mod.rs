//! The avx512 path: AVX-512 F, BW, VL and VNNI on 512-bit registers (with AVX2, FMA and F16C).
//!
//! The dot products multiply unsigned weights by signed activations with `vpdpbusd` (and
//! `vpdpwssd` where sub-block scales weight the products); signed weights are stored offset
//! (`q + 8`, `q + 32`, ...) and the offset times the activation sum is subtracted, so every
//! integer block sum is exact for all inputs. One register holds two legacy blocks or a
//! quarter of a k-quant super-block.

mod float;
mod iq;
mod iq4;
mod kquants;
mod legacy;
mod q8;

use crate::quant::{DequantizeFn, GgmlType, Kernels, QuantizeFn, VecDotFn};
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
    let (dequantize, quantize, vec_dot) = legacy::kernels(ty)
        .or_else(|| kquants::kernels(ty))
        .or_else(|| q8::kernels(ty))?;
    let dot_type = crate::quant::scalar(ty)?.dot_type;
    Some(Kernels {
        ty,
        dot_type,
        dequantize,
        quantize,
        vec_dot,
    })
}

/// The kernels of one type on this path: dequantize, quantize, vec_dot.
type Own = (Option<DequantizeFn>, Option<QuantizeFn>, Option<VecDotFn>);

/// Defines a safe `fn(n, x, y) -> f32` over an unsafe AVX-512 dot kernel.
macro_rules! safe_dot {
    ($name:ident, $imp:path) => {
        fn $name(n: usize, x: &[u8], y: &[u8]) -> f32 {
            // SAFETY: only `kernels()` hands this out, after `has_avx512()` confirmed every
            // feature the kernel is compiled for; the kernel reads only whole blocks inside
            // `x` and `y`.
            unsafe { $imp(n, x, y) }
        }
    };
}

/// Defines a safe dequantizer over an unsafe AVX-512 one.
macro_rules! safe_dequantize {
    ($name:ident, $imp:path) => {
        fn $name(src: &[u8], dst: &mut [f32]) {
            // SAFETY: as for `safe_dot`; whole blocks inside `src` and `dst` only.
            unsafe { $imp(src, dst) }
        }
    };
}

/// Defines a safe quantizer (the importance matrix is unused: activation types have none).
macro_rules! safe_quantize {
    ($name:ident, $imp:path) => {
        fn $name(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
            // SAFETY: as for `safe_dot`; whole blocks inside `src` and `dst` only.
            unsafe { $imp(src, dst) }
        }
    };
}
pub(crate) use {safe_dequantize, safe_dot, safe_quantize};

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
