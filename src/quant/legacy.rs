//! The legacy block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, the dot type Q8_1, and the 1- and
//! 2-bit Q1_0 and Q2_0. Mirrors ggml-quants.c (`quantize_row_*_ref`, `quantize_row_*_impl`,
//! `dequantize_row_*`) and ggml-cpu/quants.c (`ggml_vec_dot_*_generic`).
//!
//! Float expressions keep ggml's evaluation order: the quantized bytes depend on every rounding.
//! Loops index like ggml's, so the two read side by side.
#![allow(clippy::needless_range_loop)]

use super::blocks::{as_blocks, as_blocks_mut, BlockQ8_0, BlockQ8_1, QuantBlock, F16, QK8_0};
use super::common::{
    abs_max, c_int, imatrix_weights, make_qkx_quants, make_qx_quants, max_abs, sum_sq, QKX3_SEARCH,
};
use super::float::fp32_to_fp16;
use super::{GgmlType, Kernels};
use bytemuck::{Pod, Zeroable};

pub const QK4_0: usize = 32;
pub const QK4_1: usize = 32;
pub const QK5_0: usize = 32;
pub const QK5_1: usize = 32;
pub const QK1_0: usize = 128;
pub const QK2_0: usize = 64;

/// `block_q4_0`: 32 values `d * (q - 8)`, q in 0..16.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: F16,
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// `block_q4_1`: 32 values `d * q + m`, q in 0..16.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: F16,
    pub m: F16,
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// `block_q5_0`: 32 values `d * (q - 16)`, q in 0..32; the fifth bits in `qh`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: F16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// `block_q5_1`: 32 values `d * q + m`, q in 0..32; the fifth bits in `qh`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: F16,
    pub m: F16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

/// `block_q1_0`: 128 values `±d`, one sign bit each.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ1_0 {
    pub d: F16,
    pub qs: [u8; QK1_0 / 8],
}
const _: () = assert!(std::mem::size_of::<BlockQ1_0>() == 18);

/// `block_q2_0`: 64 values `d * (q - 1)`, q in 0..4.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2_0 {
    pub d: F16,
    pub qs: [u8; QK2_0 / 4],
}
const _: () = assert!(std::mem::size_of::<BlockQ2_0>() == 18);

impl QuantBlock for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    type VecDot = BlockQ8_0;
}
impl QuantBlock for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    type VecDot = BlockQ8_1;
}
impl QuantBlock for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    type VecDot = BlockQ8_0;
}
impl QuantBlock for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    type VecDot = BlockQ8_1;
}
impl QuantBlock for BlockQ1_0 {
    const TYPE: GgmlType = GgmlType::Q1_0;
    type VecDot = BlockQ8_0;
}
impl QuantBlock for BlockQ2_0 {
    const TYPE: GgmlType = GgmlType::Q2_0;
    type VecDot = BlockQ8_0;
}

pub(super) fn kernels(ty: GgmlType) -> Option<Kernels> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 => Kernels::of::<BlockQ4_0>(dequantize_q4_0, quantize_q4_0, Some(vec_dot_q4_0_q8_0)),
        Q4_1 => Kernels::of::<BlockQ4_1>(dequantize_q4_1, quantize_q4_1, Some(vec_dot_q4_1_q8_1)),
        Q5_0 => Kernels::of::<BlockQ5_0>(dequantize_q5_0, quantize_q5_0, Some(vec_dot_q5_0_q8_0)),
        Q5_1 => Kernels::of::<BlockQ5_1>(dequantize_q5_1, quantize_q5_1, Some(vec_dot_q5_1_q8_1)),
        Q8_0 => Kernels::of::<BlockQ8_0>(dequantize_q8_0, quantize_q8_0, Some(vec_dot_q8_0_q8_0)),
        // A dot type only: ggml has no dot product with Q8_1 as the weights.
        Q8_1 => Kernels::of::<BlockQ8_1>(dequantize_q8_1, quantize_q8_1, None),
        Q1_0 => Kernels::of::<BlockQ1_0>(dequantize_q1_0, quantize_q1_0, Some(vec_dot_q1_0_q8_0)),
        Q2_0 => Kernels::of::<BlockQ2_0>(dequantize_q2_0, quantize_q2_0, Some(vec_dot_q2_0_q8_0)),
        _ => return None,
    })
}

/// Packs the fifth bits of 32 five-bit quants (`L[j]` and `L[j + 16]`) into `qs` and `qh`.
fn pack_q5(l: &[u8; 32], qs: &mut [u8; 16], qh: &mut [u8; 4]) {
    let mut h = 0u32;
    for j in 0..16 {
        let (x0, x1) = (l[j], l[j + 16]);
        qs[j] = (x0 & 0x0f) | ((x1 & 0x0f) << 4);
        h |= (((x0 & 0x10) >> 4) as u32) << j;
        h |= (((x1 & 0x10) >> 4) as u32) << (j + 16);
    }
    *qh = h.to_le_bytes();
}

/// The fifth bits of a Q5 block: (bit of value j, bit of value j + 16), as 0 or 0x10.
#[inline]
fn q5_high(qh: u32, j: usize) -> (u8, u8) {
    (
        (((qh >> j) << 4) & 0x10) as u8,
        ((qh >> (j + 12)) & 0x10) as u8,
    )
}

// ---------------------------------------------------------------------------------------------
// Q4_0

/// `quantize_row_q4_0_ref`.
fn quantize_q4_0_ref(x: &[f32], y: &mut [BlockQ4_0]) {
    for (xb, b) in x.chunks_exact(QK4_0).zip(y) {
        let (_, max) = abs_max(xb);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = fp32_to_fp16(d);
        for j in 0..QK4_0 / 2 {
            let x0 = xb[j] * id;
            let x1 = xb[j + QK4_0 / 2] * id;
            let xi0 = (c_int(x0 + 8.5) as i8).min(15) as u8;
            let xi1 = (c_int(x1 + 8.5) as i8).min(15) as u8;
            b.qs[j] = xi0 | (xi1 << 4);
        }
    }
}

/// `quantize_q4_0`: the reference quantizer, or `quantize_row_q4_0_impl` with weights.
fn quantize_q4_0(x: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let y: &mut [BlockQ4_0] = as_blocks_mut(dst);
    let Some(qw) = imatrix else {
        return quantize_q4_0_ref(x, y);
    };
    let sigma2 = sum_sq(x) / x.len() as f32;
    let mut weight = [0f32; QK4_0];
    let mut l = [0i8; QK4_0];
    for ((xb, qw), b) in x.chunks_exact(QK4_0).zip(qw.chunks_exact(QK4_0)).zip(y) {
        imatrix_weights(&mut weight, xb, qw, sigma2);
        let d = make_qx_quants(8, xb, &mut l, Some(&weight));
        b.d = fp32_to_fp16(d);
        for j in 0..16 {
            b.qs[j] = (l[j] as u8) | ((l[j + 16] as u8) << 4);
        }
    }
}

fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockQ4_0] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(QK4_0)) {
        let d = b.d.to_f32();
        for j in 0..QK4_0 / 2 {
            let x0 = (b.qs[j] & 0x0f) as i32 - 8;
            let x1 = (b.qs[j] >> 4) as i32 - 8;
            y[j] = x0 as f32 * d;
            y[j + QK4_0 / 2] = x1 as f32 * d;
        }
    }
}

fn vec_dot_q4_0_q8_0(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockQ4_0] = as_blocks(vx);
    let y: &[BlockQ8_0] = as_blocks(vy);
    let mut sumf = 0f32;
    for (bx, by) in x.iter().zip(y).take(n / QK4_0) {
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for j in 0..QK4_0 / 2 {
            let v0 = (bx.qs[j] & 0x0f) as i32 - 8;
            let v1 = (bx.qs[j] >> 4) as i32 - 8;
            sumi0 += v0 * by.qs[j] as i32;
            sumi1 += v1 * by.qs[j + QK4_0 / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += sumi as f32 * bx.d.to_f32() * by.d.to_f32();
    }
    sumf
}

// ---------------------------------------------------------------------------------------------
// Q4_1

/// `quantize_row_q4_1_ref`.
fn quantize_q4_1_ref(x: &[f32], y: &mut [BlockQ4_1]) {
    for (xb, b) in x.chunks_exact(QK4_1).zip(y) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = fp32_to_fp16(d);
        b.m = fp32_to_fp16(min);
        for j in 0..QK4_1 / 2 {
            let x0 = (xb[j] - min) * id;
            let x1 = (xb[j + QK4_1 / 2] - min) * id;
            let xi0 = (c_int(x0 + 0.5) as i8).min(15) as u8;
            let xi1 = (c_int(x1 + 0.5) as i8).min(15) as u8;
            b.qs[j] = xi0 | (xi1 << 4);
        }
    }
}

/// (min, max) as ggml's legacy quantizers scan them, starting from ±FLT_MAX.
#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `quantize_q4_1`: the reference quantizer, or `quantize_row_q4_1_impl` with weights.
fn quantize_q4_1(x: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let y: &mut [BlockQ4_1] = as_blocks_mut(dst);
    let Some(qw) = imatrix else {
        return quantize_q4_1_ref(x, y);
    };
    let sigma2 = sum_sq(x) / x.len() as f32;
    let mut weight = [0f32; QK4_1];
    let mut l = [0u8; QK4_1];
    let mut laux = [0u8; QK4_1];
    for ((xb, qw), b) in x.chunks_exact(QK4_1).zip(qw.chunks_exact(QK4_1)).zip(y) {
        imatrix_weights(&mut weight, xb, qw, sigma2);
        let (d, min) = make_qkx_quants(15, xb, &weight, &mut l, &mut laux, &QKX3_SEARCH);
        b.d = fp32_to_fp16(d);
        b.m = fp32_to_fp16(-min);
        for j in 0..16 {
            b.qs[j] = l[j] | (l[j + 16] << 4);
        }
    }
}

fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockQ4_1] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(QK4_1)) {
        let d = b.d.to_f32();
        let m = b.m.to_f32();
        for j in 0..QK4_1 / 2 {
            let x0 = (b.qs[j] & 0x0f) as f32;
            let x1 = (b.qs[j] >> 4) as f32;
            y[j] = x0 * d + m;
            y[j + QK4_1 / 2] = x1 * d + m;
        }
    }
}

/// `ggml_vec_dot_q4_1_q8_1`: the min term uses the Q8_1 block's stored sum `s`.
fn vec_dot_q4_1_q8_1(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockQ4_1] = as_blocks(vx);
    let y: &[BlockQ8_1] = as_blocks(vy);
    let mut sumf = 0f32;
    for (bx, by) in x.iter().zip(y).take(n / QK4_1) {
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for j in 0..QK4_1 / 2 {
            sumi0 += (bx.qs[j] & 0x0f) as i32 * by.qs[j] as i32;
            sumi1 += (bx.qs[j] >> 4) as i32 * by.qs[j + QK4_1 / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (bx.d.to_f32() * by.d.to_f32()) * sumi as f32 + bx.m.to_f32() * by.s.to_f32();
    }
    sumf
}

// ---------------------------------------------------------------------------------------------
// Q5_0

/// `quantize_row_q5_0_ref`.
fn quantize_q5_0_ref(x: &[f32], y: &mut [BlockQ5_0]) {
    for (xb, b) in x.chunks_exact(QK5_0).zip(y) {
        let (_, max) = abs_max(xb);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = fp32_to_fp16(d);
        let mut l = [0u8; 32];
        for j in 0..QK5_0 {
            l[j] = (c_int(xb[j] * id + 16.5) as i8).min(31) as u8;
        }
        pack_q5(&l, &mut b.qs, &mut b.qh);
    }
}

/// `quantize_q5_0`: the reference quantizer, or `quantize_row_q5_0_impl` with weights.
fn quantize_q5_0(x: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let y: &mut [BlockQ5_0] = as_blocks_mut(dst);
    let Some(qw) = imatrix else {
        return quantize_q5_0_ref(x, y);
    };
    let sigma2 = sum_sq(x) / x.len() as f32;
    let mut weight = [0f32; QK5_0];
    let mut l = [0i8; QK5_0];
    for ((xb, qw), b) in x.chunks_exact(QK5_0).zip(qw.chunks_exact(QK5_0)).zip(y) {
        imatrix_weights(&mut weight, xb, qw, sigma2);
        let d = make_qx_quants(16, xb, &mut l, Some(&weight));
        b.d = fp32_to_fp16(d);
        let lu: [u8; 32] = std::array::from_fn(|j| l[j] as u8);
        pack_q5(&lu, &mut b.qs, &mut b.qh);
    }
}

fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockQ5_0] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(QK5_0)) {
        let d = b.d.to_f32();
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..QK5_0 / 2 {
            let (h0, h1) = q5_high(qh, j);
            let x0 = ((b.qs[j] & 0x0f) | h0) as i32 - 16;
            let x1 = ((b.qs[j] >> 4) | h1) as i32 - 16;
            y[j] = x0 as f32 * d;
            y[j + QK5_0 / 2] = x1 as f32 * d;
        }
    }
}

fn vec_dot_q5_0_q8_0(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockQ5_0] = as_blocks(vx);
    let y: &[BlockQ8_0] = as_blocks(vy);
    let mut sumf = 0f32;
    for (bx, by) in x.iter().zip(y).take(n / QK5_0) {
        let qh = u32::from_le_bytes(bx.qh);
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for j in 0..QK5_0 / 2 {
            let (h0, h1) = q5_high(qh, j);
            let x0 = ((bx.qs[j] & 0x0f) | h0) as i32 - 16;
            let x1 = ((bx.qs[j] >> 4) | h1) as i32 - 16;
            sumi0 += x0 * by.qs[j] as i32;
            sumi1 += x1 * by.qs[j + QK5_0 / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (bx.d.to_f32() * by.d.to_f32()) * sumi as f32;
    }
    sumf
}

// ---------------------------------------------------------------------------------------------
// Q5_1

/// `quantize_row_q5_1_ref`.
fn quantize_q5_1_ref(x: &[f32], y: &mut [BlockQ5_1]) {
    for (xb, b) in x.chunks_exact(QK5_1).zip(y) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = fp32_to_fp16(d);
        b.m = fp32_to_fp16(min);
        let mut l = [0u8; 32];
        for j in 0..QK5_1 {
            l[j] = c_int((xb[j] - min) * id + 0.5) as u8;
        }
        pack_q5(&l, &mut b.qs, &mut b.qh);
    }
}

/// `quantize_q5_1`: the reference quantizer, or `quantize_row_q5_1_impl` with weights.
fn quantize_q5_1(x: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let y: &mut [BlockQ5_1] = as_blocks_mut(dst);
    let Some(qw) = imatrix else {
        return quantize_q5_1_ref(x, y);
    };
    let sigma2 = sum_sq(x) / x.len() as f32;
    let mut weight = [0f32; QK5_1];
    let mut l = [0u8; QK5_1];
    let mut laux = [0u8; QK5_1];
    for ((xb, qw), b) in x.chunks_exact(QK5_1).zip(qw.chunks_exact(QK5_1)).zip(y) {
        imatrix_weights(&mut weight, xb, qw, sigma2);
        let (d, min) = make_qkx_quants(31, xb, &weight, &mut l, &mut laux, &QKX3_SEARCH);
        b.d = fp32_to_fp16(d);
        b.m = fp32_to_fp16(-min);
        pack_q5(&l, &mut b.qs, &mut b.qh);
    }
}

fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockQ5_1] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(QK5_1)) {
        let d = b.d.to_f32();
        let m = b.m.to_f32();
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..QK5_1 / 2 {
            let (h0, h1) = q5_high(qh, j);
            let x0 = ((b.qs[j] & 0x0f) | h0) as f32;
            let x1 = ((b.qs[j] >> 4) | h1) as f32;
            y[j] = x0 * d + m;
            y[j + QK5_1 / 2] = x1 * d + m;
        }
    }
}

/// `ggml_vec_dot_q5_1_q8_1`: the min term uses the Q8_1 block's stored sum `s`.
fn vec_dot_q5_1_q8_1(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockQ5_1] = as_blocks(vx);
    let y: &[BlockQ8_1] = as_blocks(vy);
    let mut sumf = 0f32;
    for (bx, by) in x.iter().zip(y).take(n / QK5_1) {
        let qh = u32::from_le_bytes(bx.qh);
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for j in 0..QK5_1 / 2 {
            let (h0, h1) = q5_high(qh, j);
            sumi0 += ((bx.qs[j] & 0x0f) | h0) as i32 * by.qs[j] as i32;
            sumi1 += ((bx.qs[j] >> 4) | h1) as i32 * by.qs[j + QK5_1 / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (bx.d.to_f32() * by.d.to_f32()) * sumi as f32 + bx.m.to_f32() * by.s.to_f32();
    }
    sumf
}

// ---------------------------------------------------------------------------------------------
// Q8_0 and Q8_1

/// `quantize_row_q8_0_ref`, also the CPU's activation quantizer for Q8_0.
fn quantize_q8_0(x: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    let y: &mut [BlockQ8_0] = as_blocks_mut(dst);
    for (xb, b) in x.chunks_exact(QK8_0).zip(y) {
        let amax = max_abs(xb);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = fp32_to_fp16(d);
        for j in 0..QK8_0 {
            b.qs[j] = c_int((xb[j] * id).round()) as i8;
        }
    }
}

fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockQ8_0] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(QK8_0)) {
        let d = b.d.to_f32();
        for j in 0..QK8_0 {
            y[j] = b.qs[j] as f32 * d;
        }
    }
}

fn vec_dot_q8_0_q8_0(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockQ8_0] = as_blocks(vx);
    let y: &[BlockQ8_0] = as_blocks(vy);
    let mut sumf = 0f32;
    for (bx, by) in x.iter().zip(y).take(n / QK8_0) {
        let mut sumi = 0i32;
        for j in 0..QK8_0 {
            sumi += bx.qs[j] as i32 * by.qs[j] as i32;
        }
        sumf += sumi as f32 * (bx.d.to_f32() * by.d.to_f32());
    }
    sumf
}

/// `quantize_row_q8_1_ref`: also stores `s = d * sum(qs)` for the min terms of Q4_1/Q5_1.
fn quantize_q8_1(x: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    let y: &mut [BlockQ8_1] = as_blocks_mut(dst);
    for (xb, b) in x.chunks_exact(32).zip(y) {
        let amax = max_abs(xb);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = fp32_to_fp16(d);
        let mut sum = 0i32;
        for j in 0..16 {
            let q0 = c_int((xb[j] * id).round()) as i8;
            let q1 = c_int((xb[j + 16] * id).round()) as i8;
            b.qs[j] = q0;
            b.qs[j + 16] = q1;
            sum += q0 as i32 + q1 as i32;
        }
        b.s = fp32_to_fp16(sum as f32 * d);
    }
}

/// ggml has no Q8_1 dequantizer; this is the obvious one (`d * q`), for completeness.
fn dequantize_q8_1(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockQ8_1] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(32)) {
        let d = b.d.to_f32();
        for j in 0..32 {
            y[j] = b.qs[j] as f32 * d;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q1_0 and Q2_0 (ignore the importance matrix, as ggml does)

/// `quantize_row_q1_0_ref`: the scale is the mean |x|, one sign bit per value.
fn quantize_q1_0(x: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    let y: &mut [BlockQ1_0] = as_blocks_mut(dst);
    for (xb, b) in x.chunks_exact(QK1_0).zip(y) {
        let mut sum_abs = 0f32;
        for &v in xb {
            sum_abs += v.abs();
        }
        b.d = fp32_to_fp16(sum_abs / QK1_0 as f32);
        b.qs = [0; QK1_0 / 8];
        for (j, &v) in xb.iter().enumerate() {
            if v >= 0.0 {
                b.qs[j / 8] |= 1 << (j % 8);
            }
        }
    }
}

fn dequantize_q1_0(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockQ1_0] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(QK1_0)) {
        let d = b.d.to_f32();
        for j in 0..QK1_0 {
            y[j] = if (b.qs[j / 8] >> (j % 8)) & 1 != 0 {
                d
            } else {
                -d
            };
        }
    }
}

/// `ggml_vec_dot_q1_0_q8_0`: one Q1_0 block spans four Q8_0 blocks.
fn vec_dot_q1_0_q8_0(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockQ1_0] = as_blocks(vx);
    let y: &[BlockQ8_0] = as_blocks(vy);
    let mut sumf = 0f32;
    for (bx, ys) in x.iter().zip(y.chunks_exact(4)).take(n / QK1_0) {
        let mut sumi = 0f32;
        for (k, yb) in ys.iter().enumerate() {
            let mut sumi_block = 0i32;
            for j in 0..32 {
                let bit = (bx.qs[k * 4 + j / 8] >> (j % 8)) & 1;
                let q = yb.qs[j] as i32;
                sumi_block += if bit != 0 { q } else { -q };
            }
            sumi += yb.d.to_f32() * sumi_block as f32;
        }
        sumf += bx.d.to_f32() * sumi;
    }
    sumf
}

/// `quantize_row_q2_0_ref`: the scale is max |x|, values `round(x/d)` in -1..=2.
fn quantize_q2_0(x: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    let y: &mut [BlockQ2_0] = as_blocks_mut(dst);
    for (xb, b) in x.chunks_exact(QK2_0).zip(y) {
        let (amax, _) = abs_max(xb);
        let d = amax;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        b.d = fp32_to_fp16(d);
        b.qs = [0; QK2_0 / 4];
        for (j, &w) in xb.iter().enumerate() {
            let q = c_int((w * id).round()).wrapping_add(1).clamp(0, 3);
            b.qs[j / 4] |= (q as u8) << ((j % 4) * 2);
        }
    }
}

fn dequantize_q2_0(src: &[u8], dst: &mut [f32]) {
    let x: &[BlockQ2_0] = as_blocks(src);
    for (b, y) in x.iter().zip(dst.chunks_exact_mut(QK2_0)) {
        let d = b.d.to_f32();
        for j in 0..QK2_0 {
            let q = (b.qs[j / 4] >> ((j % 4) * 2)) & 3;
            y[j] = (q as i32 - 1) as f32 * d;
        }
    }
}

/// `ggml_vec_dot_q2_0_q8_0`: one Q2_0 block spans two Q8_0 blocks.
fn vec_dot_q2_0_q8_0(n: usize, vx: &[u8], vy: &[u8]) -> f32 {
    let x: &[BlockQ2_0] = as_blocks(vx);
    let y: &[BlockQ8_0] = as_blocks(vy);
    let mut sumf = 0f32;
    for (bx, ys) in x.iter().zip(y.chunks_exact(2)).take(n / QK2_0) {
        let mut sumi = 0f32;
        for (k, yb) in ys.iter().enumerate() {
            let mut sumi_block = 0i32;
            for j in 0..32 {
                let q = ((bx.qs[k * 8 + j / 4] >> ((j % 4) * 2)) & 3) as i32 - 1;
                sumi_block += q * yb.qs[j] as i32;
            }
            sumi += yb.d.to_f32() * sumi_block as f32;
        }
        sumf += bx.d.to_f32() * sumi;
    }
    sumf
}
