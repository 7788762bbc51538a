//! The lattice i-quants IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S on the avx2
//! path (and, through `dot_body`/`dequantize_body`, on the avx512 path).
//!
//! Each 32-value group is unpacked to 32 signed bytes: the grid points (too large a table for
//! a register lookup, so loaded by index as ggml's AVX2 code does) with their signs applied
//! from a sign word. IQ1 points become `8 * g ± 1`, so that the `± 1/8` shift is part of an
//! exact integer sum. The integer dot of a group is exact (`vpmaddubsw` of |x| with y carrying
//! x's sign, for activations in [-127, 127] as the Q8_K quantizer makes them), scaled by its
//! integer group scales; only the per-super-block float sums differ from the scalar order.
//! Dequantization forms the same f32 products as the scalar code and is identical to it.

use crate::quant::blocks::{as_blocks, BlockQ8K};
use crate::quant::iquants::grids::*;
use crate::quant::iquants::{
    BlockIQ1M, BlockIQ1S, BlockIQ2S, BlockIQ2XS, BlockIQ2XXS, BlockIQ3S, BlockIQ3XXS,
};
use crate::quant::{GgmlType, Kernels, QK_K};
use std::arch::x86_64::*;

pub fn kernels(ty: GgmlType) -> Option<Kernels> {
    macro_rules! k {
        ($b:ty) => {
            (
                (|s: &[u8], d: &mut [f32]| {
                    // SAFETY: handed out by `kernels` only on the avx2 path, after the CPU
                    // was checked.
                    unsafe { dequantize_avx2::<$b>(s, d) }
                }) as crate::quant::DequantizeFn,
                (|n: usize, x: &[u8], y: &[u8]| {
                    // SAFETY: as above.
                    unsafe { dot_avx2::<$b>(n, x, y) }
                }) as crate::quant::VecDotFn,
            )
        };
    }
    let (dequantize, vec_dot) = match ty {
        GgmlType::IQ1S => k!(BlockIQ1S),
        GgmlType::IQ1M => k!(BlockIQ1M),
        GgmlType::IQ2XXS => k!(BlockIQ2XXS),
        GgmlType::IQ2XS => k!(BlockIQ2XS),
        GgmlType::IQ2S => k!(BlockIQ2S),
        GgmlType::IQ3XXS => k!(BlockIQ3XXS),
        GgmlType::IQ3S => k!(BlockIQ3S),
        _ => return None,
    };
    Some(Kernels {
        ty,
        dot_type: GgmlType::Q8K,
        dequantize: Some(dequantize),
        quantize: None,
        vec_dot: Some(vec_dot),
    })
}

/// One super-block of a lattice i-quant, unpacked a 32-value group at a time.
pub(crate) trait IqBlock: bytemuck::Pod {
    /// The factor ggml applies to the whole dot (`0.125 * sumf` and the like), times 1/8 for
    /// the IQ1 types whose points are unpacked as `8 * g ± 1`.
    const DOT_FACTOR: f32;
    /// What an unpacked byte is worth in dequantization (1/8 for the IQ1 types).
    const VALUE: f32;
    /// The super-block scale.
    /// # Safety
    /// The CPU must have avx2 and f16c.
    unsafe fn d(&self) -> f32;
    /// The 32 signed values of group `ib` and its integer scales (values 0..16, 16..32).
    /// # Safety
    /// The CPU must have avx2.
    unsafe fn group(&self, ib: usize) -> (__m256i, [i16; 2]);
    /// The float scales of group `ib` for dequantization, as the scalar code forms them.
    fn dq_scales(&self, d: f32, ib: usize) -> [f32; 2];
}

#[inline(always)]
fn f16(bits: [u8; 2]) -> f32 {
    // SAFETY: only called from kernels compiled with f16c.
    unsafe {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            u16::from_le_bytes(bits) as i32
        )))
    }
}

#[inline(always)]
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// `v` with byte `j` negated where bit `j` of `signs` is set.
#[inline(always)]
unsafe fn apply_signs(v: __m256i, signs: u32) -> __m256i {
    // SAFETY (whole body): the caller guarantees avx2.
    unsafe {
        let w = _mm256_set1_epi32(signs as i32);
        let spread = _mm256_shuffle_epi8(
            w,
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let m = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits);
        _mm256_sub_epi8(_mm256_xor_si256(v, m), m)
    }
}

/// Four 8-value grid points, in order.
#[inline(always)]
unsafe fn grid8x4(g: [u64; 4]) -> __m256i {
    // SAFETY: the caller guarantees avx2.
    unsafe { _mm256_set_epi64x(g[3] as i64, g[2] as i64, g[1] as i64, g[0] as i64) }
}

/// Eight 4-value grid points, in order.
#[inline(always)]
unsafe fn grid4x8(g: [u32; 8]) -> __m256i {
    // SAFETY: the caller guarantees avx2.
    unsafe {
        _mm256_set_epi32(
            g[7] as i32,
            g[6] as i32,
            g[5] as i32,
            g[4] as i32,
            g[3] as i32,
            g[2] as i32,
            g[1] as i32,
            g[0] as i32,
        )
    }
}

/// The four 8-bit sign patterns of `aux` (7 bits each, the 8th implied by parity).
#[inline(always)]
fn ksigns(aux: u32) -> u32 {
    (0..4).fold(0, |w, l| {
        w | (KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize] as u32) << (8 * l)
    })
}

impl IqBlock for BlockIQ2XXS {
    const DOT_FACTOR: f32 = 0.125;
    const VALUE: f32 = 1.0;
    #[inline(always)]
    unsafe fn d(&self) -> f32 {
        f16(self.d.0)
    }
    #[inline(always)]
    unsafe fn group(&self, ib: usize) -> (__m256i, [i16; 2]) {
        let qs: &[u8] = bytemuck::cast_slice(&self.qs);
        let aux = u32_at(qs, 8 * ib + 4);
        let g = std::array::from_fn(|l| IQ2XXS_GRID[qs[8 * ib + l] as usize]);
        let ls = 2 * (aux >> 28) as i16 + 1;
        // SAFETY: the caller guarantees avx2.
        (unsafe { apply_signs(grid8x4(g), ksigns(aux)) }, [ls, ls])
    }
    fn dq_scales(&self, d: f32, ib: usize) -> [f32; 2] {
        let qs: &[u8] = bytemuck::cast_slice(&self.qs);
        let db = d * (0.5 + (u32_at(qs, 8 * ib + 4) >> 28) as f32) * 0.25;
        [db, db]
    }
}

impl IqBlock for BlockIQ2XS {
    const DOT_FACTOR: f32 = 0.125;
    const VALUE: f32 = 1.0;
    #[inline(always)]
    unsafe fn d(&self) -> f32 {
        f16(self.d.0)
    }
    #[inline(always)]
    unsafe fn group(&self, ib: usize) -> (__m256i, [i16; 2]) {
        let q: [u16; 4] = std::array::from_fn(|l| self.qs[4 * ib + l].get());
        let g = q.map(|q| IQ2XS_GRID[(q & 511) as usize]);
        let signs = (0..4).fold(0u32, |w, l| {
            w | (KSIGNS_IQ2XS[(q[l] >> 9) as usize] as u32) << (8 * l)
        });
        let sc = self.scales[ib];
        let ls = [2 * (sc & 0xf) as i16 + 1, 2 * (sc >> 4) as i16 + 1];
        // SAFETY: the caller guarantees avx2.
        (unsafe { apply_signs(grid8x4(g), signs) }, ls)
    }
    fn dq_scales(&self, d: f32, ib: usize) -> [f32; 2] {
        let sc = self.scales[ib];
        [
            d * (0.5 + (sc & 0xf) as f32) * 0.25,
            d * (0.5 + (sc >> 4) as f32) * 0.25,
        ]
    }
}

impl IqBlock for BlockIQ2S {
    const DOT_FACTOR: f32 = 0.125;
    const VALUE: f32 = 1.0;
    #[inline(always)]
    unsafe fn d(&self) -> f32 {
        f16(self.d.0)
    }
    #[inline(always)]
    unsafe fn group(&self, ib: usize) -> (__m256i, [i16; 2]) {
        let qh = self.qh[ib] as usize;
        let g = std::array::from_fn(|l| {
            IQ2S_GRID[self.qs[4 * ib + l] as usize | ((qh << (8 - 2 * l)) & 0x300)]
        });
        let signs = u32_at(&self.qs, QK_K / 8 + 4 * ib);
        let sc = self.scales[ib];
        let ls = [2 * (sc & 0xf) as i16 + 1, 2 * (sc >> 4) as i16 + 1];
        // SAFETY: the caller guarantees avx2.
        (unsafe { apply_signs(grid8x4(g), signs) }, ls)
    }
    fn dq_scales(&self, d: f32, ib: usize) -> [f32; 2] {
        let sc = self.scales[ib];
        [
            d * (0.5 + (sc & 0xf) as f32) * 0.25,
            d * (0.5 + (sc >> 4) as f32) * 0.25,
        ]
    }
}

impl IqBlock for BlockIQ3XXS {
    const DOT_FACTOR: f32 = 0.25;
    const VALUE: f32 = 1.0;
    #[inline(always)]
    unsafe fn d(&self) -> f32 {
        f16(self.d.0)
    }
    #[inline(always)]
    unsafe fn group(&self, ib: usize) -> (__m256i, [i16; 2]) {
        let aux = u32_at(&self.qs, QK_K / 4 + 4 * ib);
        let g = std::array::from_fn(|k| IQ3XXS_GRID[self.qs[8 * ib + k] as usize]);
        let ls = 2 * (aux >> 28) as i16 + 1;
        // SAFETY: the caller guarantees avx2.
        (unsafe { apply_signs(grid4x8(g), ksigns(aux)) }, [ls, ls])
    }
    fn dq_scales(&self, d: f32, ib: usize) -> [f32; 2] {
        let aux = u32_at(&self.qs, QK_K / 4 + 4 * ib);
        let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
        [db, db]
    }
}

impl IqBlock for BlockIQ3S {
    const DOT_FACTOR: f32 = 1.0;
    const VALUE: f32 = 1.0;
    #[inline(always)]
    unsafe fn d(&self) -> f32 {
        f16(self.d.0)
    }
    #[inline(always)]
    unsafe fn group(&self, ib: usize) -> (__m256i, [i16; 2]) {
        let qh = self.qh[ib] as usize;
        let g = std::array::from_fn(|k| {
            let (l, h) = (k / 2, k % 2);
            IQ3S_GRID[self.qs[8 * ib + k] as usize | ((qh << (8 - 2 * l - h)) & 256)]
        });
        let signs = u32_at(&self.signs, 4 * ib);
        let ls = 2 * ((self.scales[ib / 2] >> (4 * (ib % 2))) & 0xf) as i16 + 1;
        // SAFETY: the caller guarantees avx2.
        (unsafe { apply_signs(grid4x8(g), signs) }, [ls, ls])
    }
    fn dq_scales(&self, d: f32, ib: usize) -> [f32; 2] {
        let sc = (self.scales[ib / 2] >> (4 * (ib % 2))) & 0xf;
        let db = d * (1 + 2 * sc as i32) as f32;
        [db, db]
    }
}

/// Four IQ1 grid points (-1, 0, 1 each) as `8 * g + shift`, `shift` holding ±1 per byte.
#[inline(always)]
unsafe fn iq1_points(index: [usize; 4], shift: __m256i) -> __m256i {
    // SAFETY (whole body): the caller guarantees avx2.
    unsafe {
        let g = grid8x4(index.map(|i| IQ1S_GRID[i]));
        _mm256_add_epi8(_mm256_sign_epi8(_mm256_set1_epi8(8), g), shift)
    }
}

impl IqBlock for BlockIQ1S {
    const DOT_FACTOR: f32 = 0.125;
    const VALUE: f32 = 0.125;
    #[inline(always)]
    unsafe fn d(&self) -> f32 {
        f16(self.d.0)
    }
    #[inline(always)]
    unsafe fn group(&self, ib: usize) -> (__m256i, [i16; 2]) {
        let qh = self.qh[ib].get() as usize;
        let index =
            std::array::from_fn(|l| self.qs[4 * ib + l] as usize | (((qh >> (3 * l)) & 7) << 8));
        let ls = 2 * ((qh >> 12) & 7) as i16 + 1;
        let shift = if qh & 0x8000 != 0 { -1 } else { 1 };
        // SAFETY: the caller guarantees avx2.
        let x = unsafe { iq1_points(index, _mm256_set1_epi8(shift)) };
        (x, [ls, ls])
    }
    fn dq_scales(&self, d: f32, ib: usize) -> [f32; 2] {
        let qh = self.qh[ib].get() as usize;
        let dl = d * (2 * ((qh >> 12) & 7) + 1) as f32;
        [dl, dl]
    }
}

impl BlockIQ1M {
    #[inline(always)]
    fn sc(&self) -> [u16; 4] {
        std::array::from_fn(|k| u16::from_le_bytes([self.scales[2 * k], self.scales[2 * k + 1]]))
    }

    #[inline(always)]
    fn ls(&self, ib: usize) -> [i32; 2] {
        let s = self.sc()[ib / 2] >> (6 * (ib % 2));
        [2 * (s & 7) as i32 + 1, 2 * ((s >> 3) & 7) as i32 + 1]
    }
}

impl IqBlock for BlockIQ1M {
    const DOT_FACTOR: f32 = 0.125;
    const VALUE: f32 = 0.125;
    #[inline(always)]
    unsafe fn d(&self) -> f32 {
        let sc = self.sc();
        let bits =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        f16(bits.to_le_bytes())
    }
    #[inline(always)]
    unsafe fn group(&self, ib: usize) -> (__m256i, [i16; 2]) {
        let mut index = [0usize; 4];
        let mut neg = [false; 4];
        for l in 0..4 {
            let qh = self.qh[2 * ib + l / 2] as usize;
            let sh = 4 * (l % 2);
            index[l] = self.qs[4 * ib + l] as usize | (((qh >> sh) & 7) << 8);
            neg[l] = qh & (0x08 << sh) != 0;
        }
        let shift = neg.map(|n| if n { -1i64 } else { 0x0101_0101_0101_0101 });
        let ls = self.ls(ib);
        // SAFETY (both): the caller guarantees avx2.
        let shift = unsafe { _mm256_set_epi64x(shift[3], shift[2], shift[1], shift[0]) };
        let x = unsafe { iq1_points(index, shift) };
        (x, [ls[0] as i16, ls[1] as i16])
    }
    fn dq_scales(&self, d: f32, ib: usize) -> [f32; 2] {
        let ls = self.ls(ib);
        [d * ls[0] as f32, d * ls[1] as f32]
    }
}

/// The dot of `n` values of `B` with Q8_K activations.
///
/// # Safety
/// The CPU must have avx2, fma and f16c.
#[inline(always)]
pub(crate) unsafe fn dot_body<B: IqBlock>(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let size = size_of::<B>();
    let x: &[B] = as_blocks(&vx[..vx.len() / size * size]);
    let y: &[BlockQ8K] = as_blocks(&vy[..vy.len() / 292 * 292]);
    // SAFETY (whole body): the caller guarantees the features.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for (bx, by) in x.iter().zip(y).take(n / QK_K) {
            let mut sumi = _mm256_setzero_si256();
            for ib in 0..QK_K / 32 {
                let (xv, ls) = bx.group(ib);
                let q8 = &by.qs[32 * ib..32 * ib + 32];
                let yv = _mm256_loadu_si256(q8.as_ptr() as *const __m256i);
                let ax = _mm256_sign_epi8(xv, xv);
                let sy = _mm256_sign_epi8(yv, xv);
                let p = _mm256_maddubs_epi16(ax, sy);
                let l = _mm256_set_m128i(_mm_set1_epi16(ls[1]), _mm_set1_epi16(ls[0]));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, l));
            }
            let d = bx.d() * by.d.get() * B::DOT_FACTOR;
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        super::float::hsum_ps(acc)
    }
}

/// Dequantizes whole blocks of `B`.
///
/// # Safety
/// The CPU must have avx2, fma and f16c.
#[inline(always)]
pub(crate) unsafe fn dequantize_body<B: IqBlock>(src: &[u8], dst: &mut [f32]) {
    let size = size_of::<B>();
    let x: &[B] = as_blocks(&src[..src.len() / size * size]);
    // SAFETY (whole body): the caller guarantees the features; every store is to 8 values of
    // a 32-value chunk of `dst`.
    unsafe {
        for (bx, out) in x.iter().zip(dst.chunks_exact_mut(QK_K)) {
            let d = bx.d();
            for (ib, o) in out.chunks_exact_mut(32).enumerate() {
                let (v, _) = bx.group(ib);
                let s = bx.dq_scales(d, ib);
                let halves = [_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)];
                for (h, q) in halves.into_iter().enumerate() {
                    let dl = _mm256_set1_ps(s[h]);
                    for (k, q) in [q, _mm_srli_si128(q, 8)].into_iter().enumerate() {
                        let mut f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                        if B::VALUE != 1.0 {
                            f = _mm256_mul_ps(f, _mm256_set1_ps(B::VALUE));
                        }
                        _mm256_storeu_ps(o.as_mut_ptr().add(16 * h + 8 * k), _mm256_mul_ps(dl, f));
                    }
                }
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2<B: IqBlock>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: the features are enabled here.
    unsafe { dot_body::<B>(n, x, y) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_avx2<B: IqBlock>(src: &[u8], dst: &mut [f32]) {
    // SAFETY: the features are enabled here.
    unsafe { dequantize_body::<B>(src, dst) }
}
