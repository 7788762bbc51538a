//! F32, F16 and BF16 on the avx512 path: dot products and row conversion to f32.
//!
//! Products are formed in f32 (exact for f16 and bf16 inputs) and summed in four f32
//! accumulators of sixteen lanes; the scalar code sums in f64, so results agree within the dot
//! tolerance, not bit for bit. Tails use masked loads, which never touch the masked-out bytes.
//! Where the CPU has AVX512_BF16, the BF16 dot uses `vdpbf16ps` as ggml does: it treats
//! subnormal inputs and products as zero, which no bf16 weight or activation of a real model
//! reaches (products of normal bf16 values above 2^-126 are unaffected).

use crate::quant::arch::x86_64::{ahead, prefetch};
use crate::quant::{GgmlType, Kernels};
use std::arch::x86_64::*;

pub fn kernels(ty: GgmlType) -> Option<Kernels> {
    let (dequantize, vec_dot): (crate::quant::DequantizeFn, crate::quant::VecDotFn) = match ty {
        GgmlType::F32 => (dequantize_f32, vec_dot_f32),
        GgmlType::F16 => (dequantize_f16, vec_dot_f16),
        GgmlType::BF16 => (
            dequantize_bf16,
            if is_x86_feature_detected!("avx512bf16") {
                vec_dot_bf16_dp
            } else {
                vec_dot_bf16
            },
        ),
        _ => return None,
    };
    Some(Kernels {
        ty,
        dot_type: ty,
        dequantize: Some(dequantize),
        quantize: None,
        vec_dot: Some(vec_dot),
    })
}

/// How many values both byte rows hold, at most `n`.
#[inline]
fn count(n: usize, x: &[u8], y: &[u8], size: usize) -> usize {
    n.min(x.len() / size).min(y.len() / size)
}

/// Sixteen values of one float type widened to f32, the lanes past `m` zero.
trait Load16 {
    const SIZE: usize;
    /// # Safety
    /// `p` must be valid for reading the bytes of the lanes set in `m`; the CPU must have
    /// avx512f and avx512bw.
    unsafe fn load16(p: *const u8, m: __mmask16) -> __m512;
    /// All sixteen lanes, unmasked (masked memory operations are slower on some CPUs).
    /// # Safety
    /// `p` must be valid for reading `16 * SIZE` bytes; the CPU must have avx512f and
    /// avx512bw.
    unsafe fn full16(p: *const u8) -> __m512;
}

struct LF32;
struct LF16;
struct LBF16;

impl Load16 for LF32 {
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load16(p: *const u8, m: __mmask16) -> __m512 {
        // SAFETY: the caller guarantees the selected lanes are readable; no alignment needed.
        unsafe { _mm512_maskz_loadu_ps(m, p as *const f32) }
    }
    #[inline(always)]
    unsafe fn full16(p: *const u8) -> __m512 {
        // SAFETY: the caller guarantees 64 readable bytes.
        unsafe { _mm512_loadu_ps(p as *const f32) }
    }
}

impl Load16 for LF16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load16(p: *const u8, m: __mmask16) -> __m512 {
        // SAFETY: as above; masked-out lanes load as +0.0 halves.
        unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p as *const i16)) }
    }
    #[inline(always)]
    unsafe fn full16(p: *const u8) -> __m512 {
        // SAFETY: the caller guarantees 32 readable bytes.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
}

impl Load16 for LBF16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load16(p: *const u8, m: __mmask16) -> __m512 {
        // SAFETY: as above.
        unsafe {
            let h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p as *const i16));
            _mm512_castsi512_ps(_mm512_slli_epi32(h, 16))
        }
    }
    #[inline(always)]
    unsafe fn full16(p: *const u8) -> __m512 {
        // SAFETY: the caller guarantees 32 readable bytes.
        unsafe {
            let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
            _mm512_castsi512_ps(_mm512_slli_epi32(h, 16))
        }
    }
}

#[inline]
fn tail_mask(k: usize) -> __mmask16 {
    ((1u32 << k) - 1) as __mmask16
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_impl<L: Load16>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let n = count(n, x, y, L::SIZE);
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    let ahead = ahead() / (2 * L::SIZE);
    // SAFETY (whole loop): `i + 128 <= n` values lie in both rows, checked by `count`.
    while i + 128 <= n {
        if ahead > 0 {
            // As in the k-quant dot: both rows, the weights also past the end of this row.
            prefetch(px.wrapping_add((i + ahead) * L::SIZE), 128 * L::SIZE);
            if i + ahead + 128 <= n {
                prefetch(py.wrapping_add((i + ahead) * L::SIZE), 128 * L::SIZE);
            }
        }
        // Two rounds of the four accumulators, in the order of the loop below.
        for r in 0..2 {
            for (k, a) in acc.iter_mut().enumerate() {
                let o = (i + 64 * r + 16 * k) * L::SIZE;
                unsafe { *a = _mm512_fmadd_ps(L::full16(px.add(o)), L::full16(py.add(o)), *a) };
            }
        }
        i += 128;
    }
    // SAFETY (whole loop): `i + 64 <= n` values lie in both rows, checked by `count`.
    while i + 64 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = (i + 16 * k) * L::SIZE;
            unsafe { *a = _mm512_fmadd_ps(L::full16(px.add(o)), L::full16(py.add(o)), *a) };
        }
        i += 64;
    }
    while i + 16 <= n {
        let o = i * L::SIZE;
        // SAFETY: `i + 16 <= n` values lie in both rows.
        unsafe { acc[0] = _mm512_fmadd_ps(L::full16(px.add(o)), L::full16(py.add(o)), acc[0]) };
        i += 16;
    }
    if i < n {
        let m = tail_mask(n - i);
        let o = i * L::SIZE;
        // SAFETY: the lanes of `m` are values below `n`, inside both rows.
        unsafe {
            acc[0] = _mm512_fmadd_ps(L::load16(px.add(o), m), L::load16(py.add(o), m), acc[0])
        };
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dequantize_impl<L: Load16>(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / L::SIZE);
    let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n` values lie in `src` and `dst`.
        unsafe { _mm512_storeu_ps(pd.add(i), L::full16(ps.add(i * L::SIZE))) };
        i += 16;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: the lanes of `m` are values below `n`, inside `src` and `dst`.
        unsafe { _mm512_mask_storeu_ps(pd.add(i), m, L::load16(ps.add(i * L::SIZE), m)) };
    }
}

/// BF16 dot with `vdpbf16ps`: pairs of products added into f32 lanes (see the module notes).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn dot_bf16_dp(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let n = count(n, x, y, 2);
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    let ahead = ahead() / 4;
    // SAFETY (whole loop): `i + 128 <= n` values lie in both rows.
    while i + 128 <= n {
        if ahead > 0 {
            // As in `dot_impl`.
            prefetch(px.wrapping_add((i + ahead) * 2), 256);
            if i + ahead + 128 <= n {
                prefetch(py.wrapping_add((i + ahead) * 2), 256);
            }
        }
        for (k, a) in acc.iter_mut().enumerate() {
            let o = (i + 32 * k) * 2;
            unsafe {
                let vx: __m512bh = std::mem::transmute(_mm512_loadu_si512(px.add(o) as *const _));
                let vy: __m512bh = std::mem::transmute(_mm512_loadu_si512(py.add(o) as *const _));
                *a = _mm512_dpbf16_ps(*a, vx, vy);
            }
        }
        i += 128;
    }
    while i < n {
        let k = (n - i).min(32);
        let m: __mmask32 = if k == 32 { !0 } else { (1u32 << k) - 1 };
        let o = i * 2;
        // SAFETY: the lanes of `m` are values below `n`, inside both rows; masked-out lanes
        // are zero and add nothing.
        unsafe {
            let vx: __m512bh =
                std::mem::transmute(_mm512_maskz_loadu_epi16(m, px.add(o) as *const i16));
            let vy: __m512bh =
                std::mem::transmute(_mm512_maskz_loadu_epi16(m, py.add(o) as *const i16));
            acc[0] = _mm512_dpbf16_ps(acc[0], vx, vy);
        }
        i += 32;
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

fn vec_dot_f32(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: handed out by `kernels` only on the avx512 path, after the CPU was checked.
    unsafe { dot_impl::<LF32>(n, x, y) }
}

fn vec_dot_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: as for `vec_dot_f32`.
    unsafe { dot_impl::<LF16>(n, x, y) }
}

fn vec_dot_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: as for `vec_dot_f32`.
    unsafe { dot_impl::<LBF16>(n, x, y) }
}

fn vec_dot_bf16_dp(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: handed out by `kernels` only on the avx512 path and only where the CPU was
    // found to have avx512bf16.
    unsafe { dot_bf16_dp(n, x, y) }
}

fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    // SAFETY: as for `vec_dot_f32`.
    unsafe { dequantize_impl::<LF32>(src, dst) }
}

fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    // SAFETY: as for `vec_dot_f32`.
    unsafe { dequantize_impl::<LF16>(src, dst) }
}

fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    // SAFETY: as for `vec_dot_f32`.
    unsafe { dequantize_impl::<LBF16>(src, dst) }
}
