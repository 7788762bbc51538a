//! Dot products compiled for AVX2, chosen once at run time when the CPU has it.
//!
//! Each one computes exactly what the scalar reference in `quant` computes (the same integer
//! sums per block, the same f32 formula per block, in the same order), so the results are
//! bit-identical; only the code generation differs. F16 attention dots use F16C conversions
//! and accumulate in f32, as ggml's SIMD `ggml_vec_dot_f16` does.

use crate::quant::blocks::{as_blocks, BlockQ8_0, BlockQ8_1};
use crate::quant::blocks::{BlockQ8K, F16};
use crate::quant::kquants::{
    q4k_values, q5k_values, q6k_values, scales_mins_k4, BlockQ4K, BlockQ5K, BlockQ6K, K_SCALE_SIZE,
};
use crate::quant::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1};
use crate::quant::{GgmlType, VecDotFn, QK_K};
use std::sync::OnceLock;

fn has_avx2() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
                && std::env::var_os("STRAIT_SCALAR").is_none()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// A faster `vec_dot` for weights of type `ty`, when this CPU has one.
pub fn vec_dot(ty: GgmlType) -> Option<VecDotFn> {
    if !has_avx2() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        match ty {
            GgmlType::Q4_0 => Some(x86::q4_0 as VecDotFn),
            GgmlType::Q4_1 => Some(x86::q4_1 as VecDotFn),
            GgmlType::Q5_0 => Some(x86::q5_0 as VecDotFn),
            GgmlType::Q5_1 => Some(x86::q5_1 as VecDotFn),
            GgmlType::Q8_0 => Some(x86::q8_0 as VecDotFn),
            GgmlType::Q4K => Some(x86::q4_k as VecDotFn),
            GgmlType::Q5K => Some(x86::q5_k as VecDotFn),
            GgmlType::Q6K => Some(x86::q6_k as VecDotFn),
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// sum(k[i] * q[i]) over F16 `k` (little-endian bytes) and f32 `q`, accumulated in f32.
pub fn dot_f16_f32(k: &[u8], q: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: has_avx2() checked that the CPU supports AVX2, FMA and F16C.
        return unsafe { x86::dot_f16_f32(k, q) };
    }
    k.chunks_exact(2)
        .zip(q)
        .map(|(b, &x)| half::f16::from_le_bytes([b[0], b[1]]).to_f32() * x)
        .sum()
}

/// out[i] += p * v[i] over F16 `v` (little-endian bytes).
pub fn axpy_f16(out: &mut [f32], p: f32, v: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: has_avx2() checked that the CPU supports AVX2, FMA and F16C.
        return unsafe { x86::axpy_f16(out, p, v) };
    }
    for (o, b) in out.iter_mut().zip(v.chunks_exact(2)) {
        *o += p * half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    macro_rules! safe_wrapper {
        ($name:ident, $inner:ident) => {
            pub fn $name(n: usize, x: &[u8], y: &[u8]) -> f32 {
                // SAFETY: these functions are only handed out by `vec_dot` after has_avx2()
                // found AVX2, FMA and F16C on this CPU; the blocks are bounds-checked slices.
                unsafe { $inner(n, x, y) }
            }
        };
    }
    safe_wrapper!(q4_0, q4_0_avx2);
    safe_wrapper!(q4_1, q4_1_avx2);
    safe_wrapper!(q5_0, q5_0_avx2);
    safe_wrapper!(q5_1, q5_1_avx2);
    safe_wrapper!(q8_0, q8_0_avx2);
    safe_wrapper!(q4_k, q4_k_avx2);
    safe_wrapper!(q5_k, q5_k_avx2);
    safe_wrapper!(q6_k, q6_k_avx2);

    #[inline(always)]
    unsafe fn h2f(h: crate::quant::blocks::F16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            u16::from_le_bytes(h.0) as i32
        )))
    }

    /// Sum of the eight i32 lanes.
    #[inline(always)]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// sum(x[i] * y[i]) of 32 unsigned bytes x (each < 128) and 32 signed bytes y.
    #[inline(always)]
    unsafe fn dot_u8_i8(x: __m256i, y: __m256i) -> i32 {
        let p16 = _mm256_maddubs_epi16(x, y);
        hsum_i32(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
    }

    /// sum(x[i] * y[i]) of 32 signed bytes each.
    #[inline(always)]
    unsafe fn dot_i8_i8(x: __m256i, y: __m256i) -> i32 {
        let ax = _mm256_sign_epi8(x, x);
        let sy = _mm256_sign_epi8(y, x);
        dot_u8_i8(ax, sy)
    }

    /// The 32 values of 16 packed nibble bytes: low nibbles first, then high nibbles.
    #[inline(always)]
    unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
        let t = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
        let b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
        _mm256_and_si256(b, _mm256_set1_epi8(0x0f))
    }

    /// Byte i is 0x10 where bit i of `qh` is set, else 0.
    #[inline(always)]
    unsafe fn high_bits(qh: u32) -> __m256i {
        let x = _mm256_set1_epi32(qh as i32);
        let shuf = _mm256_setr_epi64x(
            0,
            0x0101010101010101,
            0x0202020202020202,
            0x0303030303030303,
        );
        let x = _mm256_shuffle_epi8(x, shuf);
        let x = _mm256_or_si256(x, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe_u64 as i64));
        let set = _mm256_cmpeq_epi8(x, _mm256_set1_epi64x(-1));
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }

    #[inline(always)]
    unsafe fn load32(q: &[i8; 32]) -> __m256i {
        _mm256_loadu_si256(q.as_ptr() as *const __m256i)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_0_avx2(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
        let x: &[BlockQ4_0] = as_blocks(vx);
        let y: &[BlockQ8_0] = as_blocks(vy);
        let ones = _mm256_set1_epi8(1);
        let mut sumf = 0f32;
        for (bx, by) in x.iter().zip(y).take(n / 32) {
            let yv = load32(&by.qs);
            // sum((q - 8) * y) = sum(q * y) - 8 * sum(y)
            let s = dot_u8_i8(nibbles(&bx.qs), yv) - 8 * dot_u8_i8(ones, yv);
            sumf += s as f32 * (h2f(bx.d) * h2f(by.d));
        }
        sumf
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_1_avx2(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
        let x: &[BlockQ4_1] = as_blocks(vx);
        let y: &[BlockQ8_1] = as_blocks(vy);
        let mut sumf = 0f32;
        for (bx, by) in x.iter().zip(y).take(n / 32) {
            let s = dot_u8_i8(nibbles(&bx.qs), load32(&by.qs));
            sumf += (h2f(bx.d) * h2f(by.d)) * s as f32 + h2f(bx.m) * h2f(by.s);
        }
        sumf
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_0_avx2(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
        let x: &[BlockQ5_0] = as_blocks(vx);
        let y: &[BlockQ8_0] = as_blocks(vy);
        let ones = _mm256_set1_epi8(1);
        let mut sumf = 0f32;
        for (bx, by) in x.iter().zip(y).take(n / 32) {
            let yv = load32(&by.qs);
            let q = _mm256_or_si256(nibbles(&bx.qs), high_bits(u32::from_le_bytes(bx.qh)));
            let s = dot_u8_i8(q, yv) - 16 * dot_u8_i8(ones, yv);
            sumf += (h2f(bx.d) * h2f(by.d)) * s as f32;
        }
        sumf
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_1_avx2(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
        let x: &[BlockQ5_1] = as_blocks(vx);
        let y: &[BlockQ8_1] = as_blocks(vy);
        let mut sumf = 0f32;
        for (bx, by) in x.iter().zip(y).take(n / 32) {
            let q = _mm256_or_si256(nibbles(&bx.qs), high_bits(u32::from_le_bytes(bx.qh)));
            let s = dot_u8_i8(q, load32(&by.qs));
            sumf += (h2f(bx.d) * h2f(by.d)) * s as f32 + h2f(bx.m) * h2f(by.s);
        }
        sumf
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_0_avx2(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
        let x: &[BlockQ8_0] = as_blocks(vx);
        let y: &[BlockQ8_0] = as_blocks(vy);
        let mut sumf = 0f32;
        for (bx, by) in x.iter().zip(y).take(n / 32) {
            let s = dot_i8_i8(load32(&bx.qs), load32(&by.qs));
            sumf += s as f32 * (h2f(bx.d) * h2f(by.d));
        }
        sumf
    }

    /// The eight lane sums of ggml's generic k-quant kernels over one block:
    /// lanes[l] = sum over values i with i % 8 == l of scale(i / 16) * q[i] * y[i].
    #[inline(always)]
    unsafe fn k_lanes(q: &[i8; QK_K], y: &[i8; QK_K], scale16: impl Fn(usize) -> i32) -> __m256i {
        let mut acc = _mm256_setzero_si256();
        for j in 0..QK_K / 16 {
            // SAFETY: 16 bytes at 16 * j are inside both 256-byte arrays.
            let q16 =
                _mm256_cvtepi8_epi16(_mm_loadu_si128(q.as_ptr().add(16 * j) as *const __m128i));
            let y16 =
                _mm256_cvtepi8_epi16(_mm_loadu_si128(y.as_ptr().add(16 * j) as *const __m128i));
            // |q * y| <= 32 * 128 fits in i16.
            let p = _mm256_mullo_epi16(q16, y16);
            let lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(p));
            let hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(p, 1));
            let s = _mm256_add_epi32(lo, hi);
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(s, _mm256_set1_epi32(scale16(j))));
        }
        acc
    }

    /// Accumulates one block as the scalar `dot_blocks_lanes` does: sums[l] += d * lanes[l].
    #[inline(always)]
    unsafe fn k_accumulate(sums: __m256, d: f32, lanes: __m256i) -> __m256 {
        _mm256_add_ps(
            sums,
            _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes)),
        )
    }

    /// The final sum: the min terms, then the eight lanes in order.
    #[inline(always)]
    unsafe fn k_finish(mut sumf: f32, sums: __m256) -> f32 {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), sums);
        for s in lanes {
            sumf += s;
        }
        sumf
    }

    #[inline(always)]
    unsafe fn k4_like(
        n: usize,
        vx: &[u8],
        vy: &[u8],
        parts: impl Fn(&[u8]) -> (F16, F16, [u8; K_SCALE_SIZE], [i8; QK_K]),
        block_bytes: usize,
    ) -> f32 {
        let y: &[BlockQ8K] = as_blocks(vy);
        let mut sums = _mm256_setzero_ps();
        let mut sumf = 0f32;
        for (bx, by) in vx.chunks_exact(block_bytes).zip(y).take(n / QK_K) {
            let (d, dmin, scales, q) = parts(bx);
            let (sc, m) = scales_mins_k4(&scales);
            let summ: i32 = (0..QK_K / 16)
                .map(|j| by.bsums[j].get() as i32 * m[j / 2] as i32)
                .sum();
            let lanes = k_lanes(&q, &by.qs, |j| sc[j / 2] as i32);
            sums = k_accumulate(sums, d.to_f32() * by.d.get(), lanes);
            sumf -= (dmin.to_f32() * by.d.get()) * summ as f32;
        }
        k_finish(sumf, sums)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_k_avx2(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
        k4_like(
            n,
            vx,
            vy,
            |b| {
                let b: &BlockQ4K = &as_blocks(b)[0];
                (b.d, b.dmin, b.scales, q4k_values(b))
            },
            std::mem::size_of::<BlockQ4K>(),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_k_avx2(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
        k4_like(
            n,
            vx,
            vy,
            |b| {
                let b: &BlockQ5K = &as_blocks(b)[0];
                (b.d, b.dmin, b.scales, q5k_values(b))
            },
            std::mem::size_of::<BlockQ5K>(),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6_k_avx2(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
        let x: &[BlockQ6K] = as_blocks(vx);
        let y: &[BlockQ8K] = as_blocks(vy);
        let mut sums = _mm256_setzero_ps();
        for (bx, by) in x.iter().zip(y).take(n / QK_K) {
            let lanes = k_lanes(&q6k_values(bx), &by.qs, |j| bx.scales[j] as i32);
            sums = k_accumulate(sums, bx.d.to_f32() * by.d.get(), lanes);
        }
        k_finish(0.0, sums)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16_f32(k: &[u8], q: &[f32]) -> f32 {
        let n = q.len().min(k.len() / 2);
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n, so 16 bytes of k and 8 floats of q are in bounds.
            let kh = _mm_loadu_si128(k.as_ptr().add(2 * i) as *const __m128i);
            let kf = _mm256_cvtph_ps(kh);
            let qf = _mm256_loadu_ps(q.as_ptr().add(i));
            acc = _mm256_fmadd_ps(kf, qf, acc);
            i += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        let mut sum: f32 = lanes.iter().sum();
        while i < n {
            sum += half::f16::from_le_bytes([k[2 * i], k[2 * i + 1]]).to_f32() * q[i];
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_f16(out: &mut [f32], p: f32, v: &[u8]) {
        let n = out.len().min(v.len() / 2);
        let pv = _mm256_set1_ps(p);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n, so 16 bytes of v and 8 floats of out are in bounds.
            let vh = _mm_loadu_si128(v.as_ptr().add(2 * i) as *const __m128i);
            let vf = _mm256_cvtph_ps(vh);
            let o = _mm256_loadu_ps(out.as_ptr().add(i));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_fmadd_ps(pv, vf, o));
            i += 8;
        }
        while i < n {
            out[i] += p * half::f16::from_le_bytes([v[2 * i], v[2 * i + 1]]).to_f32();
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    #[test]
    fn same_as_scalar() {
        let types = [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ];
        for ty in types {
            let Some(fast) = vec_dot(ty) else { continue };
            let k = quant::scalar(ty).unwrap();
            let dk = quant::scalar(k.dot_type).unwrap();
            for n in [256usize, 512, 1536] {
                let w = random(n, n as u64 + ty.id() as u64);
                let a = random(n, 7 * n as u64);
                let mut wq = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
                let mut aq = vec![0u8; k.dot_type.row_bytes(n as u64).unwrap() as usize];
                (k.quantize.unwrap())(&w, &mut wq, None);
                (dk.quantize.unwrap())(&a, &mut aq, None);
                let want = (k.vec_dot.unwrap())(n, &wq, &aq);
                assert_eq!(fast(n, &wq, &aq), want, "{ty} n={n}");
            }
        }
    }

    #[test]
    fn f16_dot_and_axpy() {
        let q = random(72, 3);
        let k: Vec<u8> = random(72, 4)
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        let want: f32 = k
            .chunks_exact(2)
            .zip(&q)
            .map(|(b, &x)| half::f16::from_le_bytes([b[0], b[1]]).to_f32() * x)
            .sum();
        assert!((dot_f16_f32(&k, &q) - want).abs() < 1e-4 * want.abs().max(1.0));
        let mut out = q.clone();
        axpy_f16(&mut out, 0.5, &k);
        for i in 0..72 {
            let v = half::f16::from_le_bytes([k[2 * i], k[2 * i + 1]]).to_f32();
            assert!((out[i] - (q[i] + 0.5 * v)).abs() < 1e-5);
        }
    }
}
