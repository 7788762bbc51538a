//! IQ4_NL, IQ4_XS and MXFP4 on the avx512 path: two 32-value blocks per 512-bit register, the
//! 4-bit indices looked up with `vpshufb` and the integer dots taken with VNNI `vpdpbusd`.
//!
//! For IQ4_NL and MXFP4, `vpdpbusd` multiplies unsigned by signed bytes, so the table holds
//! each level plus 128 and 128 times the sum of the activations is taken off again: exact for
//! any int8 activations.
//! Dequantization multiplies the same two f32 values as the scalar code, so it is identical.

use super::super::avx2::iq4::{f16_to_f32, xs_scales, Nl4};
use crate::quant::arch::x86_64::{ahead, prefetch};
use crate::quant::blocks::{as_blocks, BlockQ8K, BlockQ8_0};
use crate::quant::fp4::BlockMxfp4;
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

/// The table in all four 128-bit lanes, each level biased by `bias` (wrapping).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn table512(t: &[i8; 16], bias: i8) -> __m512i {
    let b: [i8; 16] = std::array::from_fn(|i| t[i].wrapping_add(bias));
    // SAFETY: `b` is 16 readable bytes.
    let v = unsafe { _mm_loadu_si128(b.as_ptr() as *const __m128i) };
    _mm512_broadcast_i32x4(v)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn load16(q: &[u8]) -> __m128i {
    assert!(q.len() >= 16);
    // SAFETY: 16 readable bytes, checked above.
    unsafe { _mm_loadu_si128(q.as_ptr() as *const __m128i) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn load32(q: &[i8]) -> __m256i {
    assert!(q.len() >= 32);
    // SAFETY: 32 readable bytes, checked above.
    unsafe { _mm256_loadu_si256(q.as_ptr() as *const __m256i) }
}

/// The levels of two blocks' 16 index bytes `a` and `b`, in value order: a's low nibbles, a's
/// high nibbles, b's low, b's high.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn lookup64(a: __m128i, b: __m128i, table: __m512i) -> __m512i {
    let q = _mm512_castsi256_si512(_mm256_set_m128i(b, a));
    let q = _mm512_shuffle_i64x2(q, q, 0x50); // lanes a, a, b, b
    let idx = _mm512_srlv_epi64(q, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
    _mm512_shuffle_epi8(table, _mm512_and_si512(idx, _mm512_set1_epi8(0x0f)))
}

/// Sums of four products of the biased levels `xu` and activations `y`, bias removed.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn dot_biased(xu: __m512i, y: __m512i) -> __m512i {
    let z = _mm512_setzero_si512();
    let s = _mm512_dpbusd_epi32(z, xu, y);
    let t = _mm512_dpbusd_epi32(z, _mm512_set1_epi8(-128), y);
    _mm512_sub_epi32(s, t)
}

/// The scales and the integer dots of blocks k and k + 1 (k < nb), both prefetched `ahead`
/// blocks before they are read.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pair<B: Nl4>(
    x: &[B],
    y: &[BlockQ8_0],
    k: usize,
    nb: usize,
    ahead: usize,
    table: __m512i,
    spread: __m512i,
) -> (__m512, __m512) {
    if ahead > 0 {
        let (px, py) = (x.as_ptr() as *const u8, y.as_ptr() as *const u8);
        // As in the k-quant dot: both rows, the weights also past the end of this row.
        prefetch(
            px.wrapping_add((k + ahead) * size_of::<B>()),
            2 * size_of::<B>(),
        );
        if k + ahead + 1 < nb {
            prefetch(py.wrapping_add((k + ahead) * 34), 68);
        }
    }
    let (xa, ya) = (&x[k], &y[k]);
    // A last odd block pairs with itself and zero activations, its lanes masked off.
    let (xb, qyb, yd_b, keep) = if k + 1 < nb {
        (&x[k + 1], load32(&y[k + 1].qs), y[k + 1].d.0, 0xffff)
    } else {
        (xa, _mm256_setzero_si256(), [0, 0], 0x00ff)
    };
    // SAFETY: f16c is enabled here.
    let d = unsafe { B::scales2(xa, xb, ya.d.0, yd_b) };
    let d = _mm512_maskz_permutexvar_ps(keep, spread, _mm512_castps128_ps512(d));
    let xu = lookup64(load16(xa.qs()), load16(xb.qs()), table);
    let yv = _mm512_inserti64x4(_mm512_castsi256_si512(load32(&ya.qs)), qyb, 1);
    (d, _mm512_cvtepi32_ps(dot_biased(xu, yv)))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_nl<B: Nl4>(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[B] = as_blocks(&vx[..vx.len() / size_of::<B>() * size_of::<B>()]);
    let y: &[BlockQ8_0] = as_blocks(&vy[..vy.len() / 34 * 34]);
    let nb = (n / 32).min(x.len()).min(y.len());
    let table = table512(&B::TABLE, -128);
    let ahead = ahead() / (size_of::<B>() + 34);
    // Lanes 0..8 take the scale in lane 0 (block a), lanes 8..16 the one in lane 2 (block b).
    let spread = _mm512_mask_blend_epi32(0xff00, _mm512_setzero_si512(), _mm512_set1_epi32(2));
    // Pairs of blocks go to two accumulators in turn, two pairs a step so that both stay in
    // registers.
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut k = 0;
    while k < nb {
        let (d, s) = pair(x, y, k, nb, ahead, table, spread);
        acc0 = _mm512_fmadd_ps(d, s, acc0);
        if k + 2 >= nb {
            break;
        }
        let (d, s) = pair(x, y, k + 2, nb, ahead, table, spread);
        acc1 = _mm512_fmadd_ps(d, s, acc1);
        k += 4;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
}

/// IQ4_XS: four registers of 64 values per super-block. The levels are signed here and the
/// pair products taken with `vpmaddubsw` of |x| and y carrying x's sign (exact for
/// activations in [-127, 127], as the Q8_K quantizer makes them), so that `vpmaddwd` can
/// apply the two sub-block scales of each register in the same step.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_xs(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockIq4Xs] = as_blocks(&vx[..vx.len() / 136 * 136]);
    let y: &[BlockQ8K] = as_blocks(&vy[..vy.len() / 292 * 292]);
    let table = table512(&KVALUES_IQ4NL, 0);
    let z = _mm512_setzero_si512();
    // Which of the eight scales each 16-bit lane of register `c` takes: 2c, then 2c + 1.
    let pick: [__m512i; 4] = std::array::from_fn(|c| {
        _mm512_mask_blend_epi16(
            0xffff_0000,
            _mm512_set1_epi16(2 * c as i16),
            _mm512_set1_epi16(2 * c as i16 + 1),
        )
    });
    let mut acc = _mm512_setzero_ps();
    let ahead = ahead() / (136 + 292);
    let nb = (n / QK_K).min(x.len()).min(y.len());
    let (px, py) = (x.as_ptr() as *const u8, y.as_ptr() as *const u8);
    for (i, (bx, by)) in x.iter().zip(y).take(nb).enumerate() {
        if ahead > 0 {
            // As in the k-quant dot.
            prefetch(px.wrapping_add((i + ahead) * 136), 136);
            if i + ahead < nb {
                prefetch(py.wrapping_add((i + ahead) * 292), 292);
            }
        }
        let ls = xs_scales(bx);
        // SAFETY: `ls` is 16 readable bytes.
        let ls = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(ls.as_ptr() as *const __m128i) });
        let mut sumi = _mm512_setzero_si512();
        for (c, pick) in pick.iter().enumerate() {
            let q = &bx.qs[32 * c..];
            let xv = lookup64(load16(q), load16(&q[16..]), table);
            let q8 = &by.qs[64 * c..64 * c + 64];
            // SAFETY: 64 readable bytes; loadu needs no alignment.
            let yv = unsafe { _mm512_loadu_si512(q8.as_ptr() as *const _) };
            let sy = _mm512_mask_sub_epi8(yv, _mm512_movepi8_mask(xv), z, yv);
            let p = _mm512_maddubs_epi16(_mm512_abs_epi8(xv), sy);
            let l = _mm512_permutexvar_epi16(*pick, ls);
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(p, l));
        }
        let d = f16_to_f32(bx.d.0) * by.d.get();
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// Stores `d` times the 32 int8 levels of `v` into `out` (32 values).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn store32(v: __m256i, d: __m512, out: &mut [f32]) {
    assert!(out.len() >= 32);
    let halves = [_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)];
    for (h, q) in halves.into_iter().enumerate() {
        let a = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
        // SAFETY: `out` holds 32 values, checked above; storeu needs no alignment.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * h), _mm512_mul_ps(d, a)) };
    }
}

/// The 32 signed levels of one block's 16 index bytes, in value order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn lookup32(q: __m128i, table: __m512i) -> __m256i {
    let m = _mm_set1_epi8(0x0f);
    let idx = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
    _mm256_shuffle_epi8(_mm512_castsi512_si256(table), idx)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dequantize_nl<B: Nl4>(src: &[u8], dst: &mut [f32]) {
    let x: &[B] = as_blocks(&src[..src.len() / size_of::<B>() * size_of::<B>()]);
    let table = table512(&B::TABLE, 0);
    for (bx, out) in x.iter().zip(dst.chunks_exact_mut(32)) {
        // SAFETY: f16c is enabled here.
        let d = _mm512_set1_ps(unsafe { bx.scale() });
        store32(lookup32(load16(bx.qs()), table), d, out);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dequantize_xs(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockIq4Xs] = as_blocks(&src[..src.len() / 136 * 136]);
    let table = table512(&KVALUES_IQ4NL, 0);
    for (bx, out) in x.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(bx.d.0);
        let ls = xs_scales(bx);
        for (ib, o) in out.chunks_exact_mut(32).enumerate() {
            let dl = _mm512_set1_ps(d * ls[ib] as f32);
            store32(lookup32(load16(&bx.qs[16 * ib..]), table), dl, o);
        }
    }
}

fn vec_dot_iq4_nl(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: handed out by `kernels` only on the avx512 path, after the CPU was checked.
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
