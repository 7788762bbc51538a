//! x86-64 kernel paths. Every kernel here is an `unsafe` `#[target_feature]` function behind a
//! safe wrapper that is only handed out by `kernels()` after the CPU was checked.

pub mod avx2;
pub mod avx512;

use crate::quant::{DequantizeFn, GgmlType, Kernels, QuantizeFn, VecDotFn};

/// How far ahead of the block being read the dot kernels prefetch, in bytes of both rows
/// together. One core's hardware prefetchers keep too few lines in flight for two streams of
/// 16M values; prefetching both rows about 20 KiB ahead (into L1, whose 48 KiB holds it)
/// reads them about 1.5x faster. (Tuning: `STRAIT_PREFETCH` bytes, 0 turns it off.)
pub(crate) fn ahead() -> usize {
    static A: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *A.get_or_init(|| {
        std::env::var("STRAIT_PREFETCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20 * 1024)
    })
}

/// Prefetches into L1 the cache lines of the `bytes` bytes at `p`. Calls for consecutive
/// blocks cover every line of a row, since no two prefetched addresses are more than 64
/// bytes apart.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8, bytes: usize) {
    let mut o = 0;
    while o < bytes {
        // SAFETY: a prefetch is a hint that never faults, whatever the address, and SSE is
        // part of x86_64; the pointer is not dereferenced.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(o) as *const i8) };
        o += 64;
    }
}

/// Prefetches into L2 the cache lines of the `bytes` bytes at `p`.
#[inline(always)]
pub(crate) fn prefetch_l2(p: *const u8, bytes: usize) {
    let mut o = 0;
    while o < bytes {
        // SAFETY: a prefetch is a hint that never faults, whatever the address, and SSE is
        // part of x86_64; the pointer is not dereferenced.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(o) as *const i8) };
        o += 64;
    }
}

/// The kernels of one type on a path: dequantize, quantize, vec_dot.
type Own = (Option<DequantizeFn>, Option<QuantizeFn>, Option<VecDotFn>);

/// A path's table entry for `ty`: its own kernels, with the dot type of the scalar table.
fn assemble(ty: GgmlType, own: Option<Own>) -> Option<Kernels> {
    let (dequantize, quantize, vec_dot) = own?;
    let dot_type = crate::quant::scalar(ty)?.dot_type;
    Some(Kernels {
        ty,
        dot_type,
        dequantize,
        quantize,
        vec_dot,
    })
}

/// Defines a safe `fn(n, x, y) -> f32` over an unsafe dot kernel of a path.
macro_rules! safe_dot {
    ($name:ident, $imp:path) => {
        fn $name(n: usize, x: &[u8], y: &[u8]) -> f32 {
            // SAFETY: only the path's `kernels()` hands this out, after its detection
            // (`has_avx2()` / `has_avx512()`) confirmed every feature the kernel is compiled
            // for; the kernel reads only whole blocks inside `x` and `y`.
            unsafe { $imp(n, x, y) }
        }
    };
}

/// Defines a safe dequantizer over an unsafe one of a path.
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
use {safe_dequantize, safe_dot, safe_quantize};

use std::arch::x86_64::*;

pub fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

pub fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

pub fn features() -> Vec<(&'static str, bool)> {
    vec![
        ("sse4.2", is_x86_feature_detected!("sse4.2")),
        ("avx", is_x86_feature_detected!("avx")),
        ("avx2", is_x86_feature_detected!("avx2")),
        ("fma", is_x86_feature_detected!("fma")),
        ("f16c", is_x86_feature_detected!("f16c")),
        ("avx512f", is_x86_feature_detected!("avx512f")),
        ("avx512bw", is_x86_feature_detected!("avx512bw")),
        ("avx512vl", is_x86_feature_detected!("avx512vl")),
        ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
        ("avx512vbmi", is_x86_feature_detected!("avx512vbmi")),
        ("avx512bf16", is_x86_feature_detected!("avx512bf16")),
    ]
}

/// The three little-endian words of a k-quant's 12 packed scale bytes at `p` (unaligned).
#[inline]
unsafe fn words3(p: *const u8) -> [u32; 3] {
    let w = |i: usize| (p.add(4 * i) as *const u32).read_unaligned();
    [w(0), w(1), w(2)]
}

/// Q4_K/Q5_K's eight 6-bit scales (bytes 0..8) and mins (8..16) from their 12 packed bytes
/// at `p`, as `kquants::get_scale_min_k4` unpacks them (ggml's `kmask` shuffle).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scales_mins_k4(p: *const u8) -> __m128i {
    const M6: u32 = 0x3f3f_3f3f;
    const M4: u32 = 0x0f0f_0f0f;
    const M2: u32 = 0x0303_0303;
    let [a, b, c] = words3(p);
    let sc_hi = (c & M4) | (((a >> 6) & M2) << 4);
    let m_hi = ((c >> 4) & M4) | (((b >> 6) & M2) << 4);
    _mm_setr_epi32((a & M6) as i32, sc_hi as i32, (b & M6) as i32, m_hi as i32)
}

/// Q3_K's sixteen 6-bit scales minus 32 (as `kquants::q3k_scales`) from the 12 bytes at `p`:
/// low 4 bits from the nibbles of bytes 0..8, high 2 bits from bytes 8..12.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q3k_scales(p: *const u8) -> __m128i {
    const M4: u32 = 0x0f0f_0f0f;
    const M2: u32 = 0x0303_0303;
    let [a, b, c] = words3(p);
    let v = _mm_setr_epi32(
        ((a & M4) | ((c & M2) << 4)) as i32,
        ((b & M4) | (((c >> 2) & M2) << 4)) as i32,
        (((a >> 4) & M4) | (((c >> 4) & M2) << 4)) as i32,
        (((b >> 4) & M4) | (((c >> 6) & M2) << 4)) as i32,
    );
    _mm_sub_epi8(v, _mm_set1_epi8(32))
}

/// C's `MAX(a, b)`: `a > b ? a : b`, so a NaN in `b` is taken and a NaN in `a` dropped.
#[inline]
fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}
