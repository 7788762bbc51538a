//! The 4-bit non-linear formats: IQ4_NL (blocks of 32 on the `kvalues_iq4nl` grid with an f16
//! scale) and IQ4_XS (super-blocks of 256: eight such blocks with 6-bit scales under one f16).
//! Mirrors ggml-quants.c (`quantize_row_iq4_nl_impl`, `quantize_iq4_nl`, `quantize_iq4_xs`,
//! `dequantize_row_iq4_*`) and `ggml_vec_dot_iq4_{nl_q8_0,xs_q8_K}_generic`.

use super::blocks::{as_blocks, as_blocks_mut, BlockQ8K, BlockQ8_0, QuantBlock, F16};
use super::common::{abs_max, imatrix_weights, nearest_int, sum_sq, GROUP_MAX_EPS};
use super::float::fp32_to_fp16;
use super::{GgmlType, Kernels, QK_K};
use bytemuck::{Pod, Zeroable};

pub const QK4_NL: usize = 32;

/// The 16 non-linear levels (`kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// `block_iq4_nl`: 32 values `d * kvalues[q]`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq4Nl {
    pub d: F16,
    pub qs: [u8; QK4_NL / 2],
}
const _: () = assert!(std::mem::size_of::<BlockIq4Nl>() == 18);

/// `block_iq4_xs`: 256 values `d * (ls - 32) * kvalues[q]`; the 6-bit scale `ls` of each
/// block of 32 has its low 4 bits in `scales_l` and its high 2 bits in `scales_h` (a
/// little-endian u16).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq4Xs {
    pub d: F16,
    pub scales_h: [u8; 2],
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockIq4Xs>() == 136);

impl QuantBlock for BlockIq4Nl {
    const TYPE: GgmlType = GgmlType::IQ4NL;
    type VecDot = BlockQ8_0;
}
impl QuantBlock for BlockIq4Xs {
    const TYPE: GgmlType = GgmlType::IQ4XS;
    type VecDot = BlockQ8K;
}

pub(super) fn kernels(ty: GgmlType) -> Option<Kernels> {
    Some(match ty {
        GgmlType::IQ4NL => Kernels::of::<BlockIq4Nl>(
            dequantize_iq4_nl,
            quantize_iq4_nl,
            Some(vec_dot_iq4_nl_q8_0),
        ),
        GgmlType::IQ4XS => Kernels::of::<BlockIq4Xs>(
            dequantize_iq4_xs,
            quantize_iq4_xs,
            Some(vec_dot_iq4_xs_q8_k),
        ),
        _ => return None,
    })
}

/// ggml's `best_index_int8`: the index of the grid value nearest `x` (the upper one on ties),
/// by bisection over the sorted grid.
#[inline]
fn best_index_int8(val: &[i8; 16], x: f32) -> u8 {
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// Where `quantize_row_iq4_nl_impl` writes one super-block.
struct Iq4Out<'a> {
    d: &'a mut F16,
    qs: &'a mut [u8],
    /// IQ4_XS only: (scales_h, scales_l).
    scales: Option<(&'a mut [u8; 2], &'a mut [u8; QK_K / 64])>,
}

/// `quantize_row_iq4_nl_impl` with block size 32 and `ntry` 7 (what `quantize_iq4_nl` and
/// `quantize_iq4_xs` use): per block of 32, a scale searched over 15 candidates by weighted
/// error; for IQ4_XS the block scales are then quantized to 6 bits under one super scale and
/// the values re-picked with them.
fn quantize_iq4_impl(x: &[f32], qw: Option<&[f32]>, out: Iq4Out<'_>) {
    const BLOCK: usize = 32;
    const NTRY: i32 = 7;
    let values = &KVALUES_IQ4NL;
    let sbs = x.len();
    let nb = sbs / BLOCK;

    let sigma2 = sum_sq(x) * (2.0 / sbs as f32);

    out.qs.fill(0);
    *out.d = fp32_to_fp16(0.0);

    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / BLOCK];
    let mut weight = [0f32; BLOCK];
    let (mut max_scale, mut amax_scale) = (0f32, 0f32);
    for ib in 0..nb {
        let xb = &x[ib * BLOCK..(ib + 1) * BLOCK];
        let lb = &mut l[ib * BLOCK..(ib + 1) * BLOCK];
        match qw {
            Some(qw) => imatrix_weights(&mut weight, xb, &qw[ib * BLOCK..(ib + 1) * BLOCK], sigma2),
            None => {
                for j in 0..BLOCK {
                    weight[j] = xb[j] * xb[j];
                }
            }
        }
        let (amax, max) = abs_max(xb);
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let mut d = -max / values[0] as f32;
        let mut id = 1.0 / d;
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for j in 0..BLOCK {
            let al = id * xb[j];
            let li = best_index_int8(values, al);
            lb[j] = li;
            let q = values[li as usize] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -NTRY..=NTRY {
            id = (itry + values[0] as i32) as f32 / max;
            sumqx = 0.0;
            sumq2 = 0.0;
            for j in 0..BLOCK {
                let al = id * xb[j];
                let q = values[best_index_int8(values, al) as usize] as f32;
                let w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }

    match out.scales {
        Some((scales_h, scales_l)) => {
            let mut h = 0u16;
            let d = -max_scale / 32.0;
            *out.d = fp32_to_fp16(d);
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for ib in 0..nb {
                let mut ls = nearest_int(id * scales[ib]).clamp(-32, 31);
                let dl = d * ls as f32;
                let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
                let xb = &x[ib * BLOCK..(ib + 1) * BLOCK];
                for j in 0..BLOCK {
                    l[ib * BLOCK + j] = best_index_int8(values, idl * xb[j]);
                }
                ls += 32;
                let (l_l, l_h) = ((ls & 0xf) as u8, (ls >> 4) as u16);
                if ib % 2 == 0 {
                    scales_l[ib / 2] = l_l;
                } else {
                    scales_l[ib / 2] |= l_l << 4;
                }
                h |= l_h << (2 * (ib % 8));
            }
            *scales_h = h.to_le_bytes();
        }
        None => {
            *out.d = fp32_to_fp16(scales[0]);
            let id = if scales[0] != 0.0 {
                1.0 / scales[0]
            } else {
                0.0
            };
            for j in 0..sbs {
                l[j] = best_index_int8(values, id * x[j]);
            }
        }
    }

    for i in 0..sbs / 32 {
        for j in 0..16 {
            out.qs[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IQ4_NL

/// `quantize_iq4_nl` for one row, with or without the importance matrix.
fn quantize_iq4_nl(x: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let y: &mut [BlockIq4Nl] = as_blocks_mut(dst);
    for (ib, (xb, b)) in x.chunks_exact(QK4_NL).zip(y).enumerate() {
        let qw = imatrix.map(|w| &w[ib * QK4_NL..(ib + 1) * QK4_NL]);
        let out = Iq4Out {
            d: &mut b.d,
            qs: &mut b.qs,
            scales: None,
        };
        quantize_iq4_impl(xb, qw, out);
    }
}

fn dequantize_iq4_nl(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockIq4Nl] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(QK4_NL)) {
        let d = b.d.to_f32();
        for j in 0..QK4_NL / 2 {
            y[j] = d * KVALUES_IQ4NL[(b.qs[j] & 0xf) as usize] as f32;
            y[j + QK4_NL / 2] = d * KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as f32;
        }
    }
}

fn vec_dot_iq4_nl_q8_0(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockIq4Nl] = as_blocks(vx);
    let y: &[BlockQ8_0] = as_blocks(vy);
    let mut sumf = 0f32;
    for (bx, by) in x.iter().zip(y).take(n / QK4_NL) {
        let d = by.d.to_f32() * bx.d.to_f32();
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for j in 0..QK4_NL / 2 {
            sumi1 += by.qs[j] as i32 * KVALUES_IQ4NL[(bx.qs[j] & 0xf) as usize] as i32;
            sumi2 += by.qs[j + QK4_NL / 2] as i32 * KVALUES_IQ4NL[(bx.qs[j] >> 4) as usize] as i32;
        }
        sumf += d * (sumi1 + sumi2) as f32;
    }
    sumf
}

// ---------------------------------------------------------------------------------------------
// IQ4_XS

/// `quantize_iq4_xs` for one row, with or without the importance matrix.
fn quantize_iq4_xs(x: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let y: &mut [BlockIq4Xs] = as_blocks_mut(dst);
    for (ibl, (xb, b)) in x.chunks_exact(QK_K).zip(y).enumerate() {
        let qw = imatrix.map(|w| &w[ibl * QK_K..(ibl + 1) * QK_K]);
        let out = Iq4Out {
            d: &mut b.d,
            qs: &mut b.qs,
            scales: Some((&mut b.scales_h, &mut b.scales_l)),
        };
        quantize_iq4_impl(xb, qw, out);
    }
}

/// The 6-bit scale of block `ib` of an IQ4_XS super-block.
#[inline]
fn xs_scale(b: &BlockIq4Xs, ib: usize) -> i32 {
    let h = u16::from_le_bytes(b.scales_h);
    let lo = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf;
    let hi = ((h >> (2 * ib)) & 3) as u8;
    (lo | (hi << 4)) as i32
}

fn dequantize_iq4_xs(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockIq4Xs] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (ib, (qs, yb)) in
            b.qs.chunks_exact(16)
                .zip(y.chunks_exact_mut(32))
                .enumerate()
        {
            let dl = d * (xs_scale(b, ib) - 32) as f32;
            for j in 0..16 {
                yb[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xf) as usize] as f32;
                yb[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

fn vec_dot_iq4_xs_q8_k(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockIq4Xs] = as_blocks(vx);
    let y: &[BlockQ8K] = as_blocks(vy);
    let mut sumf = 0f32;
    for (bx, by) in x.iter().zip(y).take(n / QK_K) {
        let d4d8 = bx.d.to_f32() * by.d.get();
        for ib in 0..QK_K / 32 {
            let dl = d4d8 * (xs_scale(bx, ib) - 32) as f32;
            let qs = &bx.qs[ib * 16..(ib + 1) * 16];
            let q8 = &by.qs[ib * 32..(ib + 1) * 32];
            let (mut sumi1, mut sumi2) = (0i32, 0i32);
            for j in 0..16 {
                sumi1 += q8[j] as i32 * KVALUES_IQ4NL[(qs[j] & 0xf) as usize] as i32;
                sumi2 += q8[j + 16] as i32 * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as i32;
            }
            sumf += dl * (sumi1 + sumi2) as f32;
        }
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_index_picks_the_nearest_level() {
        let v = &KVALUES_IQ4NL;
        assert_eq!(best_index_int8(v, -200.0), 0);
        assert_eq!(best_index_int8(v, 200.0), 15);
        assert_eq!(best_index_int8(v, 0.0), 8);
        assert_eq!(best_index_int8(v, -4.5), 8); // 5.5 from -10, 5.5 from 1: upper wins
        assert_eq!(best_index_int8(v, 12.0), 9);
        for (i, &k) in v.iter().enumerate() {
            assert_eq!(best_index_int8(v, k as f32), i as u8);
        }
    }
}
