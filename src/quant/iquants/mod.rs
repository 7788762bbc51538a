//! The lattice i-quants: IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S.
//!
//! Each group of 8 (IQ1, IQ2) or 4 (IQ3) weights is one point of a fixed lattice grid
//! (`grids`), stored as an index into it, with signs (IQ2, IQ3) or a shift (IQ1) and a small
//! per-group scale under one f16 super-block scale. Dot products take Q8_K activations.
//! The code mirrors ggml's `dequantize_row_iq*` (ggml-quants.c) and the generic
//! `ggml_vec_dot_iq*_q8_K` (ggml-cpu/quants.c).

pub mod grids;
mod quantize;

/// Also at its old path, `iquants::U16Le`.
pub use super::blocks::U16Le;
use super::blocks::{as_blocks, BlockQ8K, QuantBlock, F16};
use super::{DequantizeFn, GgmlType, Kernels, QuantizeFn, VecDotFn, QK_K};
use bytemuck::{Pod, Zeroable};
use grids::*;

/// `block_iq2_xxs`: 2.0625 bpw. Per group of 32: 4 grid indices (8 bits each) in the first
/// u32, four 7-bit sign patterns and a 4-bit scale in the second.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ2XXS {
    pub d: F16,
    pub qs: [U16Le; QK_K / 8],
}
const _: () = assert!(std::mem::size_of::<BlockIQ2XXS>() == 66);

/// `block_iq2_xs`: 2.3125 bpw. Each u16 is a 9-bit grid index and a 7-bit sign pattern;
/// two 4-bit scales per group of 32.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ2XS {
    pub d: F16,
    pub qs: [U16Le; QK_K / 8],
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(std::mem::size_of::<BlockIQ2XS>() == 74);

/// `block_iq2_s`: 2.5625 bpw. `qs` holds the low 8 bits of 32 grid indices, then 32 sign
/// bytes; `qh` the high 2 bits of each index; two 4-bit scales per group of 32.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ2S {
    pub d: F16,
    pub qs: [u8; QK_K / 4],
    pub qh: [u8; QK_K / 32],
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(std::mem::size_of::<BlockIQ2S>() == 82);

/// `block_iq3_xxs`: 3.0625 bpw. `qs` holds 64 grid indices (4 values each), then per group of
/// 32 a u32 of four 7-bit sign patterns and a 4-bit scale.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ3XXS {
    pub d: F16,
    pub qs: [u8; 3 * QK_K / 8],
}
const _: () = assert!(std::mem::size_of::<BlockIQ3XXS>() == 98);

/// `IQ3S_N_SCALE`
pub const IQ3S_N_SCALE: usize = QK_K / 64;

/// `block_iq3_s`: 3.4375 bpw. 9-bit grid indices (low 8 in `qs`, the 9th in `qh`), one sign
/// bit per value, 4-bit scales per group of 32.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ3S {
    pub d: F16,
    pub qs: [u8; QK_K / 4],
    pub qh: [u8; QK_K / 32],
    pub signs: [u8; QK_K / 8],
    pub scales: [u8; IQ3S_N_SCALE],
}
const _: () = assert!(std::mem::size_of::<BlockIQ3S>() == 110);

/// `block_iq1_s`: 1.5625 bpw. 11-bit indices into the {-1, 0, 1}^8 grid (low 8 bits in `qs`,
/// 3 high bits each in `qh`); per group of 32, `qh` also holds a 3-bit scale and the sign of
/// the shift `IQ1S_DELTA`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ1S {
    pub d: F16,
    pub qs: [u8; QK_K / 8],
    pub qh: [U16Le; QK_K / 32],
}
const _: () = assert!(std::mem::size_of::<BlockIQ1S>() == 50);

/// `block_iq1_m`: 1.75 bpw. Like IQ1_S with a shift sign per group of 8 and 3-bit scales per
/// group of 16; the f16 super-block scale is spread over the top nibbles of the four u16 of
/// `scales`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ1M {
    pub qs: [u8; QK_K / 8],
    pub qh: [u8; QK_K / 16],
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(std::mem::size_of::<BlockIQ1M>() == 56);

macro_rules! quant_block {
    ($($block:ident => $ty:ident),* $(,)?) => {$(
        impl QuantBlock for $block {
            const TYPE: GgmlType = GgmlType::$ty;
            type VecDot = BlockQ8K;
        }
    )*};
}
quant_block!(
    BlockIQ2XXS => IQ2XXS,
    BlockIQ2XS => IQ2XS,
    BlockIQ2S => IQ2S,
    BlockIQ3XXS => IQ3XXS,
    BlockIQ3S => IQ3S,
    BlockIQ1S => IQ1S,
    BlockIQ1M => IQ1M,
);

// ---- shared pieces

/// The 8 coordinates of an 8-dimensional grid point.
#[inline]
fn grid8(g: u64) -> [u8; 8] {
    g.to_le_bytes()
}

/// The 4 coordinates of a 4-dimensional grid point.
#[inline]
fn grid4(g: u32) -> [u8; 4] {
    g.to_le_bytes()
}

/// -1 where bit `j` of `signs` is set, else 1 (`signs & kmask_iq2xs[j] ? -1 : 1`).
#[inline]
fn sign_f(signs: u8, j: usize) -> f32 {
    if signs & KMASK_IQ2XS[j] != 0 {
        -1.0
    } else {
        1.0
    }
}

#[inline]
fn sign_i(signs: u8, j: usize) -> i32 {
    if signs & KMASK_IQ2XS[j] != 0 {
        -1
    } else {
        1
    }
}

#[inline]
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Runs `f` on each block of `src` and its 256 outputs.
#[inline]
fn dequantize_blocks<B: QuantBlock>(src: &[u8], dst: &mut [f32], f: impl Fn(&B, &mut [f32])) {
    for (b, y) in as_blocks::<B>(src).iter().zip(dst.chunks_exact_mut(QK_K)) {
        f(b, y);
    }
}

/// Sums `f` (a block's float contribution) over the first `n / QK_K` blocks of `x` and `y`.
#[inline]
fn dot_blocks<B: QuantBlock<VecDot = BlockQ8K>>(
    n: usize,
    x: &[u8],
    y: &[u8],
    f: impl Fn(&B, &BlockQ8K) -> f32,
) -> f32 {
    let x = as_blocks::<B>(x);
    let y = as_blocks::<BlockQ8K>(y);
    let mut sumf = 0f32;
    for (bx, by) in x.iter().zip(y).take(n / QK_K) {
        sumf += f(bx, by);
    }
    sumf
}

// ---- IQ2_XXS

/// `dequantize_row_iq2_xxs`
pub fn dequantize_iq2_xxs(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockIQ2XXS, y| {
        let d = b.d.to_f32();
        let qs: &[u8] = bytemuck::cast_slice(&b.qs);
        for (ib32, y) in y.chunks_exact_mut(32).enumerate() {
            let idx = &qs[8 * ib32..8 * ib32 + 4];
            let aux = u32_at(qs, 8 * ib32 + 4);
            let db = d * (0.5 + (aux >> 28) as f32) * 0.25;
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let grid = grid8(IQ2XXS_GRID[idx[l] as usize]);
                let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                for j in 0..8 {
                    y[j] = db * grid[j] as f32 * sign_f(signs, j);
                }
            }
        }
    });
}

/// `ggml_vec_dot_iq2_xxs_q8_K_generic`
pub fn vec_dot_iq2_xxs(n: usize, x: &[u8], y: &[u8]) -> f32 {
    0.125
        * dot_blocks(n, x, y, |b: &BlockIQ2XXS, q: &BlockQ8K| {
            let d = b.d.to_f32() * q.d.get();
            let qs: &[u8] = bytemuck::cast_slice(&b.qs);
            let mut bsum = 0i32;
            for (ib32, q8) in q.qs.chunks_exact(32).enumerate() {
                let idx = &qs[8 * ib32..8 * ib32 + 4];
                let aux = u32_at(qs, 8 * ib32 + 4);
                let ls = 2 * (aux >> 28) as i32 + 1;
                let mut sumi = 0i32;
                for (l, q8) in q8.chunks_exact(8).enumerate() {
                    let grid = grid8(IQ2XXS_GRID[idx[l] as usize]);
                    let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                    for j in 0..8 {
                        sumi += grid[j] as i32 * q8[j] as i32 * sign_i(signs, j);
                    }
                }
                bsum += sumi * ls;
            }
            d * bsum as f32
        })
}

// ---- IQ2_XS

/// `dequantize_row_iq2_xs`
pub fn dequantize_iq2_xs(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockIQ2XS, y| {
        let d = b.d.to_f32();
        for (ib32, y) in y.chunks_exact_mut(32).enumerate() {
            let sc = b.scales[ib32];
            let db = [
                d * (0.5 + (sc & 0xf) as f32) * 0.25,
                d * (0.5 + (sc >> 4) as f32) * 0.25,
            ];
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let q = b.qs[4 * ib32 + l].get();
                let grid = grid8(IQ2XS_GRID[(q & 511) as usize]);
                let signs = KSIGNS_IQ2XS[(q >> 9) as usize];
                for j in 0..8 {
                    y[j] = db[l / 2] * grid[j] as f32 * sign_f(signs, j);
                }
            }
        }
    });
}

/// `ggml_vec_dot_iq2_xs_q8_K_generic`
pub fn vec_dot_iq2_xs(n: usize, x: &[u8], y: &[u8]) -> f32 {
    0.125
        * dot_blocks(n, x, y, |b: &BlockIQ2XS, q: &BlockQ8K| {
            let d = b.d.to_f32() * q.d.get();
            let mut bsum = 0i32;
            for (ib32, q8) in q.qs.chunks_exact(32).enumerate() {
                let sc = b.scales[ib32];
                let ls = [2 * (sc & 0xf) as i32 + 1, 2 * (sc >> 4) as i32 + 1];
                let mut sumi = [0i32; 2];
                for (l, q8) in q8.chunks_exact(8).enumerate() {
                    let q2 = b.qs[4 * ib32 + l].get();
                    let grid = grid8(IQ2XS_GRID[(q2 & 511) as usize]);
                    let signs = KSIGNS_IQ2XS[(q2 >> 9) as usize];
                    for j in 0..8 {
                        sumi[l / 2] += grid[j] as i32 * q8[j] as i32 * sign_i(signs, j);
                    }
                }
                bsum += sumi[0] * ls[0] + sumi[1] * ls[1];
            }
            d * bsum as f32
        })
}

// ---- IQ2_S

/// The 10-bit grid index of group `l` (0..4) of 32-value group `ib32` of an IQ2_S block.
#[inline]
fn iq2s_index(b: &BlockIQ2S, ib32: usize, l: usize) -> usize {
    b.qs[4 * ib32 + l] as usize | ((b.qh[ib32] as usize) << (8 - 2 * l) & 0x300)
}

/// `dequantize_row_iq2_s`
pub fn dequantize_iq2_s(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockIQ2S, y| {
        let d = b.d.to_f32();
        let signs = &b.qs[QK_K / 8..];
        for (ib32, y) in y.chunks_exact_mut(32).enumerate() {
            let sc = b.scales[ib32];
            let db = [
                d * (0.5 + (sc & 0xf) as f32) * 0.25,
                d * (0.5 + (sc >> 4) as f32) * 0.25,
            ];
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let grid = grid8(IQ2S_GRID[iq2s_index(b, ib32, l)]);
                let s = signs[4 * ib32 + l];
                for j in 0..8 {
                    y[j] = db[l / 2] * grid[j] as f32 * sign_f(s, j);
                }
            }
        }
    });
}

/// `ggml_vec_dot_iq2_s_q8_K_generic`
pub fn vec_dot_iq2_s(n: usize, x: &[u8], y: &[u8]) -> f32 {
    0.125
        * dot_blocks(n, x, y, |b: &BlockIQ2S, q: &BlockQ8K| {
            let d = b.d.to_f32() * q.d.get();
            let signs = &b.qs[QK_K / 8..];
            let mut bsum = 0i32;
            for (ib32, q8) in q.qs.chunks_exact(32).enumerate() {
                let sc = b.scales[ib32];
                let ls = [1 + 2 * (sc & 0xf) as i32, 1 + 2 * (sc >> 4) as i32];
                let mut sumi = [0i32; 2];
                for (l, q8) in q8.chunks_exact(8).enumerate() {
                    let grid = grid8(IQ2S_GRID[iq2s_index(b, ib32, l)]);
                    let s = signs[4 * ib32 + l];
                    for j in 0..8 {
                        sumi[l / 2] += q8[j] as i32 * grid[j] as i32 * sign_i(s, j);
                    }
                }
                bsum += ls[0] * sumi[0] + ls[1] * sumi[1];
            }
            d * bsum as f32
        })
}

// ---- IQ3_XXS

/// `dequantize_row_iq3_xxs`
pub fn dequantize_iq3_xxs(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockIQ3XXS, y| {
        let d = b.d.to_f32();
        let (qs, scales_and_signs) = b.qs.split_at(QK_K / 4);
        for (ib32, y) in y.chunks_exact_mut(32).enumerate() {
            let aux = u32_at(scales_and_signs, 4 * ib32);
            let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                let g1 = grid4(IQ3XXS_GRID[qs[8 * ib32 + 2 * l] as usize]);
                let g2 = grid4(IQ3XXS_GRID[qs[8 * ib32 + 2 * l + 1] as usize]);
                for j in 0..4 {
                    y[j] = db * g1[j] as f32 * sign_f(signs, j);
                    y[j + 4] = db * g2[j] as f32 * sign_f(signs, j + 4);
                }
            }
        }
    });
}

/// `ggml_vec_dot_iq3_xxs_q8_K_generic`
pub fn vec_dot_iq3_xxs(n: usize, x: &[u8], y: &[u8]) -> f32 {
    0.25 * dot_blocks(n, x, y, |b: &BlockIQ3XXS, q: &BlockQ8K| {
        let d = b.d.to_f32() * q.d.get();
        let (qs, scales_and_signs) = b.qs.split_at(QK_K / 4);
        let mut bsum = 0i32;
        for (ib32, q8) in q.qs.chunks_exact(32).enumerate() {
            let aux = u32_at(scales_and_signs, 4 * ib32);
            let ls = 2 * (aux >> 28) as i32 + 1;
            let mut sumi = 0i32;
            for (l, q8) in q8.chunks_exact(8).enumerate() {
                let g1 = grid4(IQ3XXS_GRID[qs[8 * ib32 + 2 * l] as usize]);
                let g2 = grid4(IQ3XXS_GRID[qs[8 * ib32 + 2 * l + 1] as usize]);
                let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                for j in 0..4 {
                    sumi += g1[j] as i32 * q8[j] as i32 * sign_i(signs, j);
                    sumi += g2[j] as i32 * q8[j + 4] as i32 * sign_i(signs, j + 4);
                }
            }
            bsum += sumi * ls;
        }
        d * bsum as f32
    })
}

// ---- IQ3_S

/// The 9-bit grid indices of the two halves of group `l` (0..4) of 32-value group `ib32`
/// of an IQ3_S block.
#[inline]
fn iq3s_index(b: &BlockIQ3S, ib32: usize, l: usize) -> [usize; 2] {
    let qs = &b.qs[8 * ib32..];
    let qh = b.qh[ib32] as usize;
    [
        qs[2 * l] as usize | ((qh << (8 - 2 * l)) & 256),
        qs[2 * l + 1] as usize | ((qh << (7 - 2 * l)) & 256),
    ]
}

/// The 4-bit scale of 32-value group `ib32` of an IQ3_S block.
#[inline]
fn iq3s_scale(b: &BlockIQ3S, ib32: usize) -> u8 {
    (b.scales[ib32 / 2] >> (4 * (ib32 % 2))) & 0xf
}

/// `dequantize_row_iq3_s`
pub fn dequantize_iq3_s(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockIQ3S, y| {
        let d = b.d.to_f32();
        for (ib32, y) in y.chunks_exact_mut(32).enumerate() {
            let db = d * (1 + 2 * iq3s_scale(b, ib32) as i32) as f32;
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let [i1, i2] = iq3s_index(b, ib32, l);
                let (g1, g2) = (grid4(IQ3S_GRID[i1]), grid4(IQ3S_GRID[i2]));
                let s = b.signs[4 * ib32 + l];
                for j in 0..4 {
                    y[j] = db * g1[j] as f32 * sign_f(s, j);
                    y[j + 4] = db * g2[j] as f32 * sign_f(s, j + 4);
                }
            }
        }
    });
}

/// `ggml_vec_dot_iq3_s_q8_K_generic`
pub fn vec_dot_iq3_s(n: usize, x: &[u8], y: &[u8]) -> f32 {
    dot_blocks(n, x, y, |b: &BlockIQ3S, q: &BlockQ8K| {
        let d = b.d.to_f32() * q.d.get();
        let mut bsum = 0i32;
        for (ib32, q8) in q.qs.chunks_exact(32).enumerate() {
            let ls = 2 * iq3s_scale(b, ib32) as i32 + 1;
            let mut sumi = 0i32;
            for (l, q8) in q8.chunks_exact(8).enumerate() {
                let [i1, i2] = iq3s_index(b, ib32, l);
                let (g1, g2) = (grid4(IQ3S_GRID[i1]), grid4(IQ3S_GRID[i2]));
                let s = b.signs[4 * ib32 + l];
                for j in 0..4 {
                    sumi += g1[j] as i32 * q8[j] as i32 * sign_i(s, j);
                    sumi += g2[j] as i32 * q8[j + 4] as i32 * sign_i(s, j + 4);
                }
            }
            bsum += sumi * ls;
        }
        d * bsum as f32
    })
}

// ---- IQ1_S

/// The 8 coordinates (-1, 0 or 1) of an IQ1 grid point.
#[inline]
fn grid1(index: usize) -> [i8; 8] {
    IQ1S_GRID[index].to_le_bytes().map(|v| v as i8)
}

/// `dequantize_row_iq1_s`
pub fn dequantize_iq1_s(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockIQ1S, y| {
        let d = b.d.to_f32();
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let qh = b.qh[ib].get() as usize;
            let dl = d * (2 * ((qh >> 12) & 7) + 1) as f32;
            let delta = if qh & 0x8000 != 0 {
                -IQ1S_DELTA
            } else {
                IQ1S_DELTA
            };
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let grid = grid1(b.qs[4 * ib + l] as usize | (((qh >> (3 * l)) & 7) << 8));
                for j in 0..8 {
                    y[j] = dl * (grid[j] as f32 + delta);
                }
            }
        }
    });
}

/// `ggml_vec_dot_iq1_s_q8_K_generic`
pub fn vec_dot_iq1_s(n: usize, x: &[u8], y: &[u8]) -> f32 {
    dot_blocks(n, x, y, |b: &BlockIQ1S, q: &BlockQ8K| {
        let (mut sumi, mut sumi1) = (0i32, 0i32);
        for (ib, q8) in q.qs.chunks_exact(32).enumerate() {
            let qh = b.qh[ib].get() as usize;
            let ls = 2 * ((qh >> 12) & 7) as i32 + 1;
            let delta = if qh & 0x8000 != 0 { -1 } else { 1 };
            let mut lsum = 0i32;
            for (l, q8) in q8.chunks_exact(8).enumerate() {
                let grid = grid1(b.qs[4 * ib + l] as usize | (((qh >> (3 * l)) & 7) << 8));
                for j in 0..8 {
                    lsum += q8[j] as i32 * grid[j] as i32;
                }
            }
            sumi += ls * lsum;
            let bsums = q.bsums[2 * ib].get() as i32 + q.bsums[2 * ib + 1].get() as i32;
            sumi1 += ls * delta * bsums;
        }
        b.d.to_f32() * q.d.get() * (sumi as f32 + IQ1S_DELTA * sumi1 as f32)
    })
}

// ---- IQ1_M

/// The four u16 of an IQ1_M block's `scales`: 3-bit scales, and the f16 super-block scale in
/// their top nibbles.
#[inline]
fn iq1m_scales(b: &BlockIQ1M) -> ([u16; 4], f32) {
    let sc: [u16; 4] =
        std::array::from_fn(|k| u16::from_le_bytes([b.scales[2 * k], b.scales[2 * k + 1]]));
    let bits = (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
    (sc, F16(bits.to_le_bytes()).to_f32())
}

/// The two 3-bit scales (first and second 16 values) of 32-value group `ib`.
#[inline]
fn iq1m_group_scales(sc: &[u16; 4], ib: usize) -> [i32; 2] {
    let s = sc[ib / 2] >> (6 * (ib % 2));
    [2 * (s & 7) as i32 + 1, 2 * ((s >> 3) & 7) as i32 + 1]
}

/// The 11-bit grid index and the shift sign bit of group `l` (0..4) of 32-value group `ib`.
#[inline]
fn iq1m_index(b: &BlockIQ1M, ib: usize, l: usize) -> (usize, bool) {
    let qh = b.qh[2 * ib + l / 2] as usize;
    let shift = 4 * (l % 2);
    let index = b.qs[4 * ib + l] as usize | (((qh >> shift) & 7) << 8);
    (index, qh & (0x08 << shift) != 0)
}

/// `dequantize_row_iq1_m`
pub fn dequantize_iq1_m(src: &[u8], dst: &mut [f32]) {
    dequantize_blocks(src, dst, |b: &BlockIQ1M, y| {
        let (sc, d) = iq1m_scales(b);
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let ls = iq1m_group_scales(&sc, ib);
            let dl = [d * ls[0] as f32, d * ls[1] as f32];
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let (index, neg) = iq1m_index(b, ib, l);
                let delta = if neg { -IQ1M_DELTA } else { IQ1M_DELTA };
                let grid = grid1(index);
                for j in 0..8 {
                    y[j] = dl[l / 2] * (grid[j] as f32 + delta);
                }
            }
        }
    });
}

/// `ggml_vec_dot_iq1_m_q8_K_generic`
pub fn vec_dot_iq1_m(n: usize, x: &[u8], y: &[u8]) -> f32 {
    dot_blocks(n, x, y, |b: &BlockIQ1M, q: &BlockQ8K| {
        let (sc, d) = iq1m_scales(b);
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for (ib, q8) in q.qs.chunks_exact(32).enumerate() {
            let mut sum1 = [0i32; 2];
            let mut sum2 = [0i32; 2];
            for (l, q8) in q8.chunks_exact(8).enumerate() {
                let (index, neg) = iq1m_index(b, ib, l);
                let grid = grid1(index);
                let (mut lsum1, mut lsum2) = (0i32, 0i32);
                for j in 0..8 {
                    lsum1 += q8[j] as i32 * grid[j] as i32;
                    lsum2 += q8[j] as i32;
                }
                sum1[l / 2] += lsum1;
                sum2[l / 2] += if neg { -lsum2 } else { lsum2 };
            }
            let ls = iq1m_group_scales(&sc, ib);
            sumi1 += sum1[0] * ls[0] + sum1[1] * ls[1];
            sumi2 += sum2[0] * ls[0] + sum2[1] * ls[1];
        }
        d * q.d.get() * (sumi1 as f32 + IQ1M_DELTA * sumi2 as f32)
    })
}

// ---- registry

pub(super) fn kernels(ty: GgmlType) -> Option<Kernels> {
    use quantize::*;
    Some(match ty {
        GgmlType::IQ2XXS => {
            entry::<BlockIQ2XXS>(dequantize_iq2_xxs, quantize_iq2_xxs, vec_dot_iq2_xxs)
        }
        GgmlType::IQ2XS => entry::<BlockIQ2XS>(dequantize_iq2_xs, quantize_iq2_xs, vec_dot_iq2_xs),
        GgmlType::IQ2S => entry::<BlockIQ2S>(dequantize_iq2_s, quantize_iq2_s, vec_dot_iq2_s),
        GgmlType::IQ3XXS => {
            entry::<BlockIQ3XXS>(dequantize_iq3_xxs, quantize_iq3_xxs, vec_dot_iq3_xxs)
        }
        GgmlType::IQ3S => entry::<BlockIQ3S>(dequantize_iq3_s, quantize_iq3_s, vec_dot_iq3_s),
        GgmlType::IQ1S => entry::<BlockIQ1S>(dequantize_iq1_s, quantize_iq1_s, vec_dot_iq1_s),
        GgmlType::IQ1M => entry::<BlockIQ1M>(dequantize_iq1_m, quantize_iq1_m, vec_dot_iq1_m),
        _ => return None,
    })
}

/// Every i-quant has all three kernels.
fn entry<B: QuantBlock>(dequantize: DequantizeFn, quantize: QuantizeFn, dot: VecDotFn) -> Kernels {
    Kernels::of::<B>(dequantize, quantize, Some(dot))
}
