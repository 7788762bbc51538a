//! F32, F16 and BF16 on the avx2 path: dot products and row conversion to f32.
//!
//! Products are formed in f32 (exact for f16 and bf16 inputs) and summed in four f32
//! accumulators of eight lanes, as ggml's SIMD `ggml_vec_dot_f16` does; the scalar code sums in
//! f64, so results agree within the dot tolerance, not bit for bit. Conversions are exact.

use crate::quant::arch::x86_64::{ahead, prefetch};
use crate::quant::{GgmlType, Kernels};
use std::arch::x86_64::*;

pub fn kernels(ty: GgmlType) -> Option<Kernels> {
    let (dequantize, vec_dot): (crate::quant::DequantizeFn, crate::quant::VecDotFn) = match ty {
        GgmlType::F32 => (dequantize_f32, vec_dot_f32),
        GgmlType::F16 => (dequantize_f16, vec_dot_f16),
        GgmlType::BF16 => (dequantize_bf16, vec_dot_bf16),
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

/// The sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// How many values both byte rows hold, at most `n`.
#[inline]
fn count(n: usize, x: &[u8], y: &[u8], size: usize) -> usize {
    n.min(x.len() / size).min(y.len() / size)
}

/// Eight values of one float type widened to f32.
trait Load8 {
    const SIZE: usize;
    /// # Safety
    /// `p` must be valid for reading `8 * SIZE` bytes; the CPU must have avx2, fma and f16c.
    unsafe fn load8(p: *const u8) -> __m256;
    fn one(b: &[u8]) -> f32;
}

struct LF32;
struct LF16;
struct LBF16;

impl Load8 for LF32 {
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 32 readable bytes; loadu has no alignment need.
        unsafe { _mm256_loadu_ps(p as *const f32) }
    }
    fn one(b: &[u8]) -> f32 {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl Load8 for LF16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 16 readable bytes and f16c.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
    fn one(b: &[u8]) -> f32 {
        half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
    }
}

impl Load8 for LBF16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 16 readable bytes and avx2.
        unsafe {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32(h, 16))
        }
    }
    fn one(b: &[u8]) -> f32 {
        f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_impl<L: Load8>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let n = count(n, x, y, L::SIZE);
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    let ahead = ahead() / (2 * L::SIZE);
    // SAFETY (whole loop): `i + 32 <= n` values lie in both rows, checked by `count`.
    while i + 32 <= n {
        if ahead > 0 {
            // As the avx512 dots: both rows, the weights also past the end of this row.
            prefetch(px.wrapping_add((i + ahead) * L::SIZE), 32 * L::SIZE);
            if i + ahead + 32 <= n {
                prefetch(py.wrapping_add((i + ahead) * L::SIZE), 32 * L::SIZE);
            }
        }
        for (k, a) in acc.iter_mut().enumerate() {
            let o = (i + 8 * k) * L::SIZE;
            unsafe { *a = _mm256_fmadd_ps(L::load8(px.add(o)), L::load8(py.add(o)), *a) };
        }
        i += 32;
    }
    while i + 8 <= n {
        let o = i * L::SIZE;
        // SAFETY: `i + 8 <= n` values lie in both rows.
        unsafe { acc[0] = _mm256_fmadd_ps(L::load8(px.add(o)), L::load8(py.add(o)), acc[0]) };
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = hsum_ps(s);
    for j in i..n {
        let o = j * L::SIZE;
        sum += L::one(&x[o..o + L::SIZE]) * L::one(&y[o..o + L::SIZE]);
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_impl<L: Load8>(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / L::SIZE);
    let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n` values lie in `src` and `dst`.
        unsafe { _mm256_storeu_ps(pd.add(i), L::load8(ps.add(i * L::SIZE))) };
        i += 8;
    }
    for j in i..n {
        dst[j] = L::one(&src[j * L::SIZE..(j + 1) * L::SIZE]);
    }
}

fn vec_dot_f32(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: handed out by `kernels` only on the avx2 path, after the CPU was checked.
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
