//! Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: dot products with Q8_0/Q8_1 activations and
//! dequantization, two blocks (64 values) per 512-bit register.

use super::{f16x2, q8, safe_dequantize, safe_dot, u16_at, Own};
use crate::quant::arch::x86_64::{ahead, prefetch};
use crate::quant::GgmlType;
use std::arch::x86_64::*;

pub(super) fn kernels(ty: GgmlType) -> Option<Own> {
    Some(match ty {
        GgmlType::Q4_0 => (Some(dequantize_q4_0), None, Some(vec_dot_q4_0)),
        GgmlType::Q4_1 => (Some(dequantize_q4_1), None, Some(vec_dot_q4_1)),
        GgmlType::Q5_0 => (Some(dequantize_q5_0), None, Some(vec_dot_q5_0)),
        GgmlType::Q5_1 => (Some(dequantize_q5_1), None, Some(vec_dot_q5_1)),
        GgmlType::Q8_0 => (Some(dequantize_q8_0), Some(q8::q8_0()), Some(vec_dot_q8_0)),
        GgmlType::Q8_1 => (None, Some(q8::q8_1()), None),
        _ => return None,
    })
}

safe_dot!(vec_dot_q4_0, dot_pairs::<Q4_0>);
safe_dot!(vec_dot_q4_1, dot_pairs::<Q4_1>);
safe_dot!(vec_dot_q5_0, dot_pairs::<Q5_0>);
safe_dot!(vec_dot_q5_1, dot_pairs::<Q5_1>);
safe_dot!(vec_dot_q8_0, dot_pairs::<Q8_0>);
safe_dequantize!(dequantize_q4_0, dequantize_pairs::<Q4_0>);
safe_dequantize!(dequantize_q4_1, dequantize_pairs::<Q4_1>);
safe_dequantize!(dequantize_q5_0, dequantize_pairs::<Q5_0>);
safe_dequantize!(dequantize_q5_1, dequantize_pairs::<Q5_1>);
safe_dequantize!(dequantize_q8_0, dequantize_pairs::<Q8_0>);

/// A legacy block format as the kernels see it.
trait Legacy {
    /// Bytes per block of 32 values.
    const BS: usize;
    /// The quants are `u - OFFSET` for the unsigned `u` that `weights` returns (0 for the
    /// formats with a min, whose quants are unsigned).
    const OFFSET: u8;
    /// `d` at byte 0, and a min `m` at byte 2 (the dot type is then Q8_1, else Q8_0).
    const MIN: bool;
    /// The unsigned quants of blocks `a` and `b`, in value order (a's 32, then b's).
    unsafe fn weights(a: *const u8, b: *const u8) -> __m512i;
}

/// `[a's 16 bytes at off, twice | b's, twice]`, for splitting nibbles per 128-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn nibbles(a: *const u8, b: *const u8, off: usize) -> __m512i {
    let qa = _mm256_broadcastsi128_si256(_mm_loadu_si128(a.add(off) as *const __m128i));
    let qb = _mm256_broadcastsi128_si256(_mm_loadu_si128(b.add(off) as *const __m128i));
    let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qa), qb);
    // Low nibbles in lanes 0 and 2 (values 0..16), high nibbles in lanes 1 and 3 (16..32).
    const C: i64 = 0x0004_0004_0004_0004;
    let shift = _mm512_setr_epi64(0, 0, C, C, 0, 0, C, C);
    _mm512_and_si512(_mm512_srlv_epi16(q, shift), _mm512_set1_epi8(0x0F))
}

/// Adds 16 to the values whose bit is set in the two blocks' 32-bit `qh` at `off`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn fifth_bits(w: __m512i, a: *const u8, b: *const u8, off: usize) -> __m512i {
    let ha = (a.add(off) as *const u32).read_unaligned() as u64;
    let hb = (b.add(off) as *const u32).read_unaligned() as u64;
    _mm512_mask_add_epi8(w, ha | (hb << 32), w, _mm512_set1_epi8(0x10))
}

struct Q4_0;
impl Legacy for Q4_0 {
    const BS: usize = 18;
    const OFFSET: u8 = 8;
    const MIN: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(a: *const u8, b: *const u8) -> __m512i {
        nibbles(a, b, 2)
    }
}

struct Q4_1;
impl Legacy for Q4_1 {
    const BS: usize = 20;
    const OFFSET: u8 = 0;
    const MIN: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(a: *const u8, b: *const u8) -> __m512i {
        nibbles(a, b, 4)
    }
}

struct Q5_0;
impl Legacy for Q5_0 {
    const BS: usize = 22;
    const OFFSET: u8 = 16;
    const MIN: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(a: *const u8, b: *const u8) -> __m512i {
        fifth_bits(nibbles(a, b, 6), a, b, 2)
    }
}

struct Q5_1;
impl Legacy for Q5_1 {
    const BS: usize = 24;
    const OFFSET: u8 = 0;
    const MIN: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(a: *const u8, b: *const u8) -> __m512i {
        fifth_bits(nibbles(a, b, 8), a, b, 4)
    }
}

struct Q8_0;
impl Legacy for Q8_0 {
    const BS: usize = 34;
    const OFFSET: u8 = 128;
    const MIN: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    unsafe fn weights(a: *const u8, b: *const u8) -> __m512i {
        let qa = _mm256_loadu_si256(a.add(2) as *const __m256i);
        let qb = _mm256_loadu_si256(b.add(2) as *const __m256i);
        let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qa), qb);
        // x + 128 as an unsigned byte.
        _mm512_xor_si512(q, _mm512_set1_epi8(-128))
    }
}

/// The integer sums of blocks `a` and `b` with their activations: lanes 0..8 and 8..16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pair_sums<T: Legacy>(
    xa: *const u8,
    xb: *const u8,
    ya: *const u8,
    yb: *const u8,
) -> __m512i {
    let yq = if T::MIN { 4 } else { 2 };
    let zero = _mm512_setzero_si512();
    let w = T::weights(xa, xb);
    let yv = _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_loadu_si256(ya.add(yq) as *const __m256i)),
        _mm256_loadu_si256(yb.add(yq) as *const __m256i),
    );
    let s = _mm512_dpbusd_epi32(zero, w, yv);
    if T::OFFSET != 0 {
        _mm512_sub_epi32(
            s,
            _mm512_dpbusd_epi32(zero, _mm512_set1_epi8(T::OFFSET as i8), yv),
        )
    } else {
        s
    }
}

/// Float sums of a dot product: two halves of 16 lanes and the min terms.
struct Acc {
    sums: [__m512; 2],
    mins: __m128,
}

/// Adds four blocks (`xs`, `ys`), of which the first `m` count: the others repeat a counted
/// block and get a zero scale. Their f16 scales are converted together.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn add_group<T: Legacy>(acc: &mut Acc, xs: [*const u8; 4], ys: [*const u8; 4], m: usize) {
    let (mut dx, mut dy, mut mx, mut sy) = (0u64, 0u64, 0u64, 0u64);
    for k in 0..m {
        dx |= (u16_at(xs[k]) as u64) << (16 * k);
        dy |= (u16_at(ys[k]) as u64) << (16 * k);
        if T::MIN {
            mx |= (u16_at(xs[k].add(2)) as u64) << (16 * k);
            sy |= (u16_at(ys[k].add(2)) as u64) << (16 * k);
        }
    }
    let f = _mm256_cvtph_ps(_mm_set_epi64x(dy as i64, dx as i64));
    let dd = _mm512_castps128_ps512(_mm_mul_ps(
        _mm256_castps256_ps128(f),
        _mm256_extractf128_ps::<1>(f),
    ));
    let first = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let second = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    let s01 = pair_sums::<T>(xs[0], xs[1], ys[0], ys[1]);
    let s23 = pair_sums::<T>(xs[2], xs[3], ys[2], ys[3]);
    acc.sums[0] = _mm512_fmadd_ps(
        _mm512_cvtepi32_ps(s01),
        _mm512_permutexvar_ps(first, dd),
        acc.sums[0],
    );
    acc.sums[1] = _mm512_fmadd_ps(
        _mm512_cvtepi32_ps(s23),
        _mm512_permutexvar_ps(second, dd),
        acc.sums[1],
    );
    if T::MIN {
        let g = _mm256_cvtph_ps(_mm_set_epi64x(sy as i64, mx as i64));
        let ms = _mm_mul_ps(_mm256_castps256_ps128(g), _mm256_extractf128_ps::<1>(g));
        acc.mins = _mm_add_ps(acc.mins, ms);
    }
}

/// `sum over blocks of d_x * d_y * sum(q_x * q_y)` (plus `m_x * s_y` with a min), four blocks
/// per step.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_pairs<T: Legacy>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let ybs = if T::MIN { 36 } else { 34 };
    let nb = (n / 32).min(x.len() / T::BS).min(y.len() / ybs);
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut acc = Acc {
        sums: [_mm512_setzero_ps(); 2],
        mins: _mm_setzero_ps(),
    };
    let ahead = ahead() / (T::BS + ybs);
    let mut i = 0;
    while i + 4 <= nb {
        // SAFETY: blocks i .. i + 4 lie inside `x` and `y`.
        let xs = std::array::from_fn(|k| px.add((i + k) * T::BS));
        let ys = std::array::from_fn(|k| py.add((i + k) * ybs));
        if ahead > 0 {
            // As the k-quant dots: the weights past this row are the next row of a matrix.
            prefetch(xs[0].wrapping_add(ahead * T::BS), 4 * T::BS);
            if i + 4 + ahead <= nb {
                prefetch(ys[0].add(ahead * ybs), 4 * ybs);
            }
        }
        add_group::<T>(&mut acc, xs, ys, 4);
        i += 4;
    }
    if i < nb {
        let m = nb - i;
        // SAFETY: blocks i .. nb lie inside `x` and `y`; the last one stands in for the rest.
        let xs = std::array::from_fn(|k| px.add((i + k.min(m - 1)) * T::BS));
        let ys = std::array::from_fn(|k| py.add((i + k.min(m - 1)) * ybs));
        add_group::<T>(&mut acc, xs, ys, m);
    }
    let m = _mm_add_ps(acc.mins, _mm_movehl_ps(acc.mins, acc.mins));
    let m = _mm_add_ss(m, _mm_movehdup_ps(m));
    _mm512_reduce_add_ps(_mm512_add_ps(acc.sums[0], acc.sums[1])) + _mm_cvtss_f32(m)
}

/// `x = d * (u - OFFSET)` (or `u * d + m`), as the scalar code rounds it.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn dequantize_pairs<T: Legacy>(src: &[u8], dst: &mut [f32]) {
    let nb = (dst.len() / 32).min(src.len() / T::BS);
    let (px, py) = (src.as_ptr(), dst.as_mut_ptr());
    let offset = _mm512_set1_epi32(T::OFFSET as i32);
    let mut i = 0;
    while i < nb {
        // SAFETY: blocks i and i + 1 (when i + 1 < nb) lie inside `src`, their values
        // inside `dst`.
        let two = i + 1 < nb;
        let xa = px.add(i * T::BS);
        let xb = if two { xa.add(T::BS) } else { xa };
        let w = T::weights(xa, xb);
        let lanes: [__m128i; 4] = std::mem::transmute(w);
        for (k, lane) in lanes.iter().enumerate().take(if two { 4 } else { 2 }) {
            let b = if k < 2 { xa } else { xb };
            // d and m (or d and the first quants).
            let (d, m) = f16x2(b);
            let d = _mm512_set1_ps(d);
            let q = _mm512_sub_epi32(_mm512_cvtepu8_epi32(*lane), offset);
            let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(q), d);
            if T::MIN {
                v = _mm512_add_ps(v, _mm512_set1_ps(m));
            }
            _mm512_storeu_ps(py.add(32 * i + 16 * k), v);
        }
        i += 2;
    }
}
