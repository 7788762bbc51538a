//! IQ4_NL, IQ4_XS and MXFP4 on the avx2 path: 4-bit indices into a 16-entry table of int8
//! levels, looked up with `vpshufb`.
//!
//! The integer dot of each 32-value block is exact: `vpmaddubsw` of |x| with y carrying x's
//! sign (as ggml's `mul_add_epi8`), which holds for activations in [-127, 127], the range the
//! Q8_0 and Q8_K quantizers produce. Dequantization multiplies the same two f32 values as the
//! scalar code, so it is identical to it.

use crate::quant::arch::x86_64::{ahead, prefetch};
use crate::quant::blocks::{as_blocks, BlockQ8K, BlockQ8_0};
use crate::quant::fp4::{BlockMxfp4, E8M0_HALF, KVALUES_MXFP4};
use crate::quant::iq4::{BlockIq4Nl, BlockIq4Xs, KVALUES_IQ4NL};
use crate::quant::{GgmlType, Kernels, QK_K};
use std::arch::x86_64::*;

pub fn kernels(ty: GgmlType) -> Option<Kernels> {
    let (dot_type, dequantize, vec_dot): (
        GgmlType,
        crate::quant::DequantizeFn,
        crate::quant::VecDotFn,
    ) = match ty {
        GgmlType::IQ4NL => (GgmlType::Q8_0, dequantize_iq4_nl, vec_dot_iq4_nl),
        GgmlType::MXFP4 => (GgmlType::Q8_0, dequantize_mxfp4, vec_dot_mxfp4),
        GgmlType::IQ4XS => (GgmlType::Q8K, dequantize_iq4_xs, vec_dot_iq4_xs),
        _ => return None,
    };
    Some(Kernels {
        ty,
        dot_type,
        dequantize: Some(dequantize),
        quantize: None,
        vec_dot: Some(vec_dot),
    })
}

/// An f16 given by its bits, widened with F16C.
#[inline]
#[target_feature(enable = "f16c")]
pub(crate) fn f16_to_f32(bits: [u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
        u16::from_le_bytes(bits) as i32
    )))
}

/// A 32-value block of 4-bit indices with one scale (IQ4_NL, MXFP4).
pub(crate) trait Nl4: bytemuck::Pod {
    const TABLE: [i8; 16];
    /// The table's levels are small enough (|x| <= 16) that two `vpmaddubsw` pair sums of
    /// products with activations in [-127, 127] add up in 16 bits.
    const SMALL: bool;
    fn qs(&self) -> &[u8; 16];
    /// The block's scale (`d` for IQ4_NL, the halved E8M0 power of two for MXFP4).
    /// # Safety
    /// The CPU must have f16c.
    unsafe fn scale(&self) -> f32;
    /// The products of the activation scales `ya`, `yb` (f16 bits) with the scales of `a`
    /// and `b`, in lanes 0 and 2.
    /// # Safety
    /// The CPU must have f16c.
    #[inline(always)]
    unsafe fn scales2(a: &Self, b: &Self, ya: [u8; 2], yb: [u8; 2]) -> __m128 {
        // SAFETY (whole body): the caller guarantees f16c.
        unsafe {
            let h = u16::from_le_bytes(ya) as u64 | (u16::from_le_bytes(yb) as u64) << 32;
            let yd = _mm_cvtph_ps(_mm_cvtsi64_si128(h as i64));
            _mm_mul_ps(yd, _mm_setr_ps(a.scale(), 0.0, b.scale(), 0.0))
        }
    }
}

impl Nl4 for BlockIq4Nl {
    const TABLE: [i8; 16] = KVALUES_IQ4NL;
    const SMALL: bool = false;
    fn qs(&self) -> &[u8; 16] {
        &self.qs
    }
    #[inline(always)]
    unsafe fn scale(&self) -> f32 {
        // SAFETY: the caller guarantees f16c.
        unsafe { f16_to_f32(self.d.0) }
    }
    /// All four f16 scales widened at once.
    #[inline(always)]
    unsafe fn scales2(a: &Self, b: &Self, ya: [u8; 2], yb: [u8; 2]) -> __m128 {
        let h = |v: [u8; 2]| u16::from_le_bytes(v) as u64;
        let bits = h(ya) | h(a.d.0) << 16 | h(yb) << 32 | h(b.d.0) << 48;
        // SAFETY: the caller guarantees f16c.
        let v = unsafe { _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64)) };
        _mm_mul_ps(v, _mm_movehdup_ps(v))
    }
}

impl Nl4 for BlockMxfp4 {
    const TABLE: [i8; 16] = KVALUES_MXFP4;
    const SMALL: bool = true;
    fn qs(&self) -> &[u8; 16] {
        &self.qs
    }
    #[inline(always)]
    unsafe fn scale(&self) -> f32 {
        E8M0_HALF[self.e as usize]
    }
}

/// The 16-entry table in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn table256(t: &[i8; 16]) -> __m256i {
    // SAFETY: `t` is 16 readable bytes.
    let t = unsafe { _mm_loadu_si128(t.as_ptr() as *const __m128i) };
    _mm256_broadcastsi128_si256(t)
}

/// The 32 levels of 16 index bytes: low nibbles (values 0..16), then high nibbles (16..32).
#[inline]
#[target_feature(enable = "avx2")]
fn lookup32(qs: &[u8; 16], table: __m256i) -> __m256i {
    // SAFETY: `qs` is 16 readable bytes.
    let q = unsafe { _mm_loadu_si128(qs.as_ptr() as *const __m128i) };
    let m = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(q, m);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
    _mm256_shuffle_epi8(table, _mm256_set_m128i(hi, lo))
}

/// The levels of two blocks' 16 index bytes: the low nibbles of `a` then of `b` (each block's
/// values 0..16), and their high nibbles (16..32).
#[inline]
#[target_feature(enable = "avx2")]
fn lookup2(a: &[u8; 16], b: &[u8; 16], table: __m256i) -> (__m256i, __m256i) {
    // SAFETY: `a` and `b` are 16 readable bytes each.
    let q = unsafe {
        _mm256_set_m128i(
            _mm_loadu_si128(b.as_ptr() as *const __m128i),
            _mm_loadu_si128(a.as_ptr() as *const __m128i),
        )
    };
    let m = _mm256_set1_epi8(0x0f);
    let lo = _mm256_and_si256(q, m);
    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m);
    (
        _mm256_shuffle_epi8(table, lo),
        _mm256_shuffle_epi8(table, hi),
    )
}

/// Pairwise i16 sums of x·y for x in [-127, 127] and y in [-127, 127] (exact, no saturation).
#[inline]
#[target_feature(enable = "avx2")]
fn mul_i8(x: __m256i, y: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

#[inline]
#[target_feature(enable = "avx2")]
fn load32(p: &[i8]) -> __m256i {
    assert!(p.len() >= 32);
    // SAFETY: 32 readable bytes, checked above.
    unsafe { _mm256_loadu_si256(p.as_ptr() as *const __m256i) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_nl<B: Nl4>(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[B] = as_blocks(&vx[..vx.len() / size_of::<B>() * size_of::<B>()]);
    let y: &[BlockQ8_0] = as_blocks(&vy[..vy.len() / 34 * 34]);
    let table = table256(&B::TABLE);
    let ones = _mm256_set1_epi16(1);
    let nb = (n / 32).min(x.len()).min(y.len());
    let mut acc = [_mm256_setzero_ps(); 2];
    let bs = size_of::<B>();
    let ahead = ahead() / (bs + 34);
    let mut k = 0;
    // Two blocks at a time, their four scales widened together.
    while k + 2 <= nb {
        if ahead > 0 {
            // As the avx512 dots: both rows, the weights also past the end of this row.
            prefetch(vx.as_ptr().wrapping_add((k + ahead) * bs), 2 * bs);
            if k + 2 + ahead <= nb {
                prefetch(vy.as_ptr().wrapping_add((k + ahead) * 34), 2 * 34);
            }
        }
        let (xa, ya, xb, yb) = (&x[k], &y[k], &x[k + 1], &y[k + 1]);
        // Both blocks in one pass: block a in the low 128-bit lanes, block b in the high.
        let (lo, hi) = lookup2(xa.qs(), xb.qs(), table);
        let (va, vb) = (load32(&ya.qs), load32(&yb.qs));
        let plo = mul_i8(lo, _mm256_permute2x128_si256::<0x20>(va, vb));
        let phi = mul_i8(hi, _mm256_permute2x128_si256::<0x31>(va, vb));
        let s = if B::SMALL {
            _mm256_madd_epi16(_mm256_add_epi16(plo, phi), ones)
        } else {
            _mm256_add_epi32(_mm256_madd_epi16(plo, ones), _mm256_madd_epi16(phi, ones))
        };
        // SAFETY: f16c is enabled here.
        let d = unsafe { B::scales2(xa, xb, ya.d.0, yb.d.0) };
        let d = _mm256_set_m128(_mm_shuffle_ps::<0xaa>(d, d), _mm_shuffle_ps::<0x00>(d, d));
        acc[k / 2 % 2] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[k / 2 % 2]);
        k += 2;
    }
    if k < nb {
        let (bx, by) = (&x[k], &y[k]);
        let s = _mm256_madd_epi16(mul_i8(lookup32(bx.qs(), table), load32(&by.qs)), ones);
        // SAFETY: f16c is enabled here.
        let d = unsafe { f16_to_f32(by.d.0) * bx.scale() };
        acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc[0]);
    }
    super::float::hsum_ps(_mm256_add_ps(acc[0], acc[1]))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_nl<B: Nl4>(src: &[u8], dst: &mut [f32]) {
    let x: &[B] = as_blocks(&src[..src.len() / size_of::<B>() * size_of::<B>()]);
    let table = table256(&B::TABLE);
    for (bx, out) in x.iter().zip(dst.chunks_exact_mut(32)) {
        // SAFETY: f16c is enabled here.
        let d = _mm256_set1_ps(unsafe { bx.scale() });
        store32(lookup32(bx.qs(), table), d, out);
    }
}

/// Stores `d` times the 32 int8 levels of `v` into `out` (32 values).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn store32(v: __m256i, d: __m256, out: &mut [f32]) {
    assert!(out.len() >= 32);
    let halves = [_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)];
    for (h, q) in halves.into_iter().enumerate() {
        let a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
        let b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
        // SAFETY: `out` holds 32 values, checked above; storeu needs no alignment.
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr().add(16 * h), _mm256_mul_ps(d, a));
            _mm256_storeu_ps(out.as_mut_ptr().add(16 * h + 8), _mm256_mul_ps(d, b));
        }
    }
}

/// The eight 6-bit scales of an IQ4_XS super-block, minus 32: low nibbles from `scales_l`,
/// two high bits each from `scales_h`.
#[inline]
pub(crate) fn xs_scales(b: &BlockIq4Xs) -> [i16; 8] {
    let l = u32::from_le_bytes(b.scales_l);
    let h = u16::from_le_bytes(b.scales_h) as u32;
    std::array::from_fn(|ib| (((l >> (4 * ib)) & 0xf) | (((h >> (2 * ib)) & 3) << 4)) as i16 - 32)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_xs(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockIq4Xs] = as_blocks(&vx[..vx.len() / 136 * 136]);
    let y: &[BlockQ8K] = as_blocks(&vy[..vy.len() / 292 * 292]);
    let table = table256(&KVALUES_IQ4NL);
    let mut acc = _mm256_setzero_ps();
    let ahead = ahead() / (136 + 292);
    let nb = (n / QK_K).min(x.len()).min(y.len());
    for (i, (bx, by)) in x.iter().zip(y).take(nb).enumerate() {
        if ahead > 0 {
            // As the avx512 dots: both rows, the weights also past the end of this row.
            prefetch(vx.as_ptr().wrapping_add((i + ahead) * 136), 136);
            if i + ahead < nb {
                prefetch(vy.as_ptr().wrapping_add((i + ahead) * 292), 292);
            }
        }
        let ls = xs_scales(bx);
        let mut sumi = _mm256_setzero_si256();
        for (ib, &l) in ls.iter().enumerate() {
            let qs: &[u8; 16] = bx.qs[16 * ib..16 * ib + 16].try_into().unwrap();
            let xv = lookup32(qs, table);
            let p = mul_i8(xv, load32(&by.qs[32 * ib..]));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, _mm256_set1_epi16(l)));
        }
        let d = f16_to_f32(bx.d.0) * by.d.get();
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    super::float::hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_xs(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockIq4Xs] = as_blocks(&src[..src.len() / 136 * 136]);
    let table = table256(&KVALUES_IQ4NL);
    for (bx, out) in x.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(bx.d.0);
        let ls = xs_scales(bx);
        for (ib, o) in out.chunks_exact_mut(32).enumerate() {
            let qs: &[u8; 16] = bx.qs[16 * ib..16 * ib + 16].try_into().unwrap();
            let dl = _mm256_set1_ps(d * ls[ib] as f32);
            store32(lookup32(qs, table), dl, o);
        }
    }
}

fn vec_dot_iq4_nl(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: handed out by `kernels` only on the avx2 path, after the CPU was checked.
    unsafe { dot_nl::<BlockIq4Nl>(n, x, y) }
}

fn vec_dot_mxfp4(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: as for `vec_dot_iq4_nl`.
    unsafe { dot_nl::<BlockMxfp4>(n, x, y) }
}

fn vec_dot_iq4_xs(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: as for `vec_dot_iq4_nl`.
    unsafe { dot_xs(n, x, y) }
}

fn dequantize_iq4_nl(src: &[u8], dst: &mut [f32]) {
    // SAFETY: as for `vec_dot_iq4_nl`.
    unsafe { dequantize_nl::<BlockIq4Nl>(src, dst) }
}

fn dequantize_mxfp4(src: &[u8], dst: &mut [f32]) {
    // SAFETY: as for `vec_dot_iq4_nl`.
    unsafe { dequantize_nl::<BlockMxfp4>(src, dst) }
}

fn dequantize_iq4_xs(src: &[u8], dst: &mut [f32]) {
    // SAFETY: as for `vec_dot_iq4_nl`.
    unsafe { dequantize_xs(src, dst) }
}
