//! F16 attention helpers, compiled for AVX2 and chosen once at run time.
//!
//! The quantized dots of the matmul live in `quant` (`quant::best`); what stays here are the
//! mixed F16 x f32 loops of attention (an F16 K row against an f32 query, an F16 V row added
//! with an f32 weight), which have no quant kernel: ggml's F16 dot takes F16 on both sides.
//! They use F16C conversions and accumulate in f32, as ggml's SIMD `ggml_vec_dot_f16` does.

use std::sync::OnceLock;

/// Whether the AVX2 helpers run: the CPU has AVX2, FMA and F16C and the selected kernel path
/// (`STRAIT_CPU`) is not the scalar one.
fn has_avx2() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            crate::quant::arch::x86_64::has_avx2()
                && crate::quant::arch::selected() != crate::quant::arch::Path::Scalar
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
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

/// `dst[i] = src[i]` rounded to F16 and back (as ggml converts a query to a F16 K's type).
pub fn round_f16(dst: &mut [f32], src: &[f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: has_avx2() checked that the CPU supports AVX2, FMA and F16C.
        done = unsafe { x86::round_f16(dst, src) };
    }
    for (d, &s) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = half::f16::from_f32(s).to_f32();
    }
}

/// The first `n` (a multiple of 8) of `gate[i] = gelu(gate[i]) * up[i]` with ggml's F16 table
/// (`table` holds 65537 entries), where the CPU has AVX2; the caller does the rest.
pub fn geglu_table(gate: &mut [f32], up: &[f32], table: &[half::f16]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && table.len() > u16::MAX as usize + 1 {
        // SAFETY: has_avx2() checked the CPU; the table covers every 4-byte read at an f16
        // index (checked just above).
        return unsafe { x86::geglu_table(gate, up, table) };
    }
    let _ = (gate, up, table);
    0
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

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

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn round_f16(dst: &mut [f32], src: &[f32]) -> usize {
        let n = (dst.len().min(src.len()) / 8) * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n, inside both slices.
            let x = _mm256_loadu_ps(src.as_ptr().add(i));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        n
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn geglu_table(gate: &mut [f32], up: &[f32], table: &[half::f16]) -> usize {
        let n = (gate.len().min(up.len()) / 8) * 8;
        let base = table.as_ptr() as *const i32;
        // The low two bytes of each dword, packed into the low 8 bytes of each 128-bit lane,
        // then the two lanes' halves side by side.
        let pick = _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1,
            -1, -1, -1, -1, -1, -1, -1,
        );
        let join = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
        let lo = _mm256_set1_ps(-10.0);
        let hi = _mm256_set1_ps(10.0);
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n, inside both slices; every gathered index is an f16 bit
            // pattern, and the table has one entry past the largest.
            let x = _mm256_loadu_ps(gate.as_ptr().add(i));
            let idx = _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
            let words = _mm256_i32gather_epi32::<2>(base, idx);
            let packed = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(words, pick), join);
            let t = _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
            // x <= -10: 0; x >= 10: x; else the table.
            let y = _mm256_blendv_ps(t, x, _mm256_cmp_ps::<_CMP_GE_OQ>(x, hi));
            let y = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(x, lo), y);
            let u = _mm256_loadu_ps(up.as_ptr().add(i));
            _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(y, u));
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn f16_rounding_equals_the_scalar_conversion() {
        let src = random(1003, 9);
        let mut dst = vec![0f32; src.len()];
        round_f16(&mut dst, &src);
        for (d, s) in dst.iter().zip(&src) {
            assert_eq!(d.to_bits(), half::f16::from_f32(*s).to_f32().to_bits());
        }
    }
}
