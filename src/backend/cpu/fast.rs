//! F16 attention helpers, compiled for AVX2 and chosen once at run time.
//!
//! The quantized dots of the matmul live in `quant` (`quant::best`); what stays here are the
//! mixed F16 x f32 loops of attention (an F16 K row against an f32 query, an F16 V row added
//! with an f32 weight), which have no quant kernel: ggml's F16 dot takes F16 on both sides.
//! They use F16C conversions and accumulate in f32, as ggml's SIMD `ggml_vec_dot_f16` does.
//! `scores_f16` and `mix_f16` run them over all the cached positions of one query at once
//! (four keys in flight, the output in registers), with the same sums bit for bit.

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

/// The F16 heads of one KV head group in a cache: position `p` is in row `p % rows`
/// (`row` bytes each), its head `off` bytes into the row.
#[derive(Clone, Copy)]
pub struct CacheHeads<'a> {
    pub data: &'a [u8],
    pub row: usize,
    pub off: usize,
    pub rows: usize,
}

impl CacheHeads<'_> {
    /// The `2 * n` bytes of the head of position `p`.
    fn head(&self, p: usize, n: usize) -> &[u8] {
        let start = (p % self.rows) * self.row + self.off;
        &self.data[start..start + 2 * n]
    }

    /// Every row's head of `n` values lies inside `data`, so the vector loops may skip the
    /// bounds checks.
    fn holds(&self, n: usize) -> bool {
        self.rows > 0
            && self.off + 2 * n <= self.row
            && (self.rows - 1)
                .checked_mul(self.row)
                .and_then(|b| b.checked_add(self.off + 2 * n))
                .is_some_and(|end| end <= self.data.len())
    }
}

/// `s[i] = scale * dot_f16_f32(k's head of position lo + i, q)`: the scores of one query
/// against consecutive keys, with the same sums as [`dot_f16_f32`].
pub fn scores_f16(s: &mut [f32], k: CacheHeads, lo: usize, q: &[f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && q.len().is_multiple_of(8) && k.holds(q.len()) {
        // SAFETY: has_avx2() checked the CPU; `holds` checked that every head is in bounds.
        return unsafe { x86::scores_f16(s, k, lo, q, scale) };
    }
    for (i, s) in s.iter_mut().enumerate() {
        *s = dot_f16_f32(k.head(lo + i, q.len()), q) * scale;
    }
}

/// `out = sum_i f16(p[i]) * v's head of position lo + i`, as `out.fill(0)` then
/// [`axpy_f16`] per position in order, with each weight rounded to F16 (as ggml converts the
/// softmax to V's type).
pub fn mix_f16(out: &mut [f32], p: &[f32], v: CacheHeads, lo: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && out.len().is_multiple_of(8) && v.holds(out.len()) {
        // SAFETY: has_avx2() checked the CPU; `holds` checked that every head is in bounds.
        return unsafe { x86::mix_f16(out, p, v, lo) };
    }
    out.fill(0.0);
    for (i, &w) in p.iter().enumerate() {
        let w = half::f16::from_f32(w).to_f32();
        axpy_f16(out, w, v.head(lo + i, out.len()));
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
    use super::CacheHeads;
    use std::arch::x86_64::*;

    /// Four keys at a time, each summed exactly as `dot_f16_f32` sums one (one accumulator,
    /// the lanes added in order), so that four independent chains fill the pipeline.
    ///
    /// # Safety
    /// AVX2, FMA and F16C; `q.len()` a multiple of 8 and `k.holds(q.len())`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores_f16(s: &mut [f32], k: CacheHeads, lo: usize, q: &[f32], scale: f32) {
        let n = q.len();
        let base = k.data.as_ptr().add(k.off);
        let mut j = lo % k.rows;
        let mut next = || {
            // SAFETY (for the caller's reads): j < rows, and `holds` covers every row's head.
            let p = base.add(j * k.row);
            j += 1;
            if j == k.rows {
                j = 0;
            }
            p
        };
        let finish = |acc: __m256| {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
            lanes.iter().sum::<f32>() * scale
        };
        let mut chunks = s.chunks_exact_mut(4);
        for out in &mut chunks {
            let keys = [next(), next(), next(), next()];
            let mut acc = [_mm256_setzero_ps(); 4];
            for d in (0..n).step_by(8) {
                let qf = _mm256_loadu_ps(q.as_ptr().add(d));
                for (a, key) in acc.iter_mut().zip(keys) {
                    let kf = _mm256_cvtph_ps(_mm_loadu_si128(key.add(2 * d) as *const __m128i));
                    *a = _mm256_fmadd_ps(kf, qf, *a);
                }
            }
            for (o, a) in out.iter_mut().zip(acc) {
                *o = finish(a);
            }
        }
        for o in chunks.into_remainder() {
            let key = next();
            let mut acc = _mm256_setzero_ps();
            for d in (0..n).step_by(8) {
                let kf = _mm256_cvtph_ps(_mm_loadu_si128(key.add(2 * d) as *const __m128i));
                acc = _mm256_fmadd_ps(kf, _mm256_loadu_ps(q.as_ptr().add(d)), acc);
            }
            *o = finish(acc);
        }
    }

    /// The weighted sum with `out` held in registers, 64 values at a time, across all the
    /// positions: the same multiply-adds, in the same order, as one `axpy_f16` per position.
    ///
    /// # Safety
    /// AVX2, FMA and F16C; `out.len()` a multiple of 8 and `v.holds(out.len())`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn mix_f16(out: &mut [f32], p: &[f32], v: CacheHeads, lo: usize) {
        let n = out.len();
        let base = v.data.as_ptr().add(v.off);
        for c0 in (0..n).step_by(64) {
            let regs = (n - c0).min(64) / 8;
            let mut acc = [_mm256_setzero_ps(); 8];
            let mut j = lo % v.rows;
            for &w in p {
                // The weight rounded to F16, as `half::f16::from_f32` rounds (to nearest even).
                let w = _mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(w)));
                let pv = _mm256_broadcastss_ps(w);
                // SAFETY: j < rows, and `holds` covers every row's head.
                let row = base.add(j * v.row + 2 * c0);
                for (r, a) in acc.iter_mut().enumerate().take(regs) {
                    let vf = _mm256_cvtph_ps(_mm_loadu_si128(row.add(16 * r) as *const __m128i));
                    *a = _mm256_fmadd_ps(pv, vf, *a);
                }
                j += 1;
                if j == v.rows {
                    j = 0;
                }
            }
            for (r, a) in acc.iter().enumerate().take(regs) {
                _mm256_storeu_ps(out.as_mut_ptr().add(c0 + 8 * r), *a);
            }
        }
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

    /// The scores and the weighted sum over a ring of cached heads equal, bit for bit, one
    /// `dot_f16_f32` per key and `axpy_f16` per value, for head sizes on and off the vector
    /// width, any number of positions and a ring that wraps.
    #[test]
    fn cache_loops_equal_the_one_at_a_time_loops() {
        for (n, rows, lo, len) in [
            (64, 40, 0, 1),
            (64, 40, 3, 7),
            (64, 9, 5, 9),
            (8, 5, 4, 5),
            (72, 13, 11, 13),
            (256, 6, 2, 6),
            (12, 7, 3, 6),
        ] {
            let (off, row) = (6, 2 * n + 10);
            let data: Vec<u8> = random(rows * row / 2, n as u64)
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect();
            let heads = CacheHeads {
                data: &data,
                row,
                off,
                rows,
            };
            let at = |p: usize| &data[(p % rows) * row + off..(p % rows) * row + off + 2 * n];
            let q = random(n, 1);
            let mut s = vec![0f32; len];
            scores_f16(&mut s, heads, lo, &q, 0.125);
            for (i, &got) in s.iter().enumerate() {
                let want = dot_f16_f32(at(lo + i), &q) * 0.125;
                assert_eq!(got.to_bits(), want.to_bits(), "n {n}, key {i}");
            }
            let p = random(len, 2);
            let mut out = vec![f32::NAN; n];
            mix_f16(&mut out, &p, heads, lo);
            let mut want = vec![0f32; n];
            for (i, &w) in p.iter().enumerate() {
                axpy_f16(&mut want, half::f16::from_f32(w).to_f32(), at(lo + i));
            }
            for (d, (g, w)) in out.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "n {n}, value {d}");
            }
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
