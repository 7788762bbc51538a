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
}
