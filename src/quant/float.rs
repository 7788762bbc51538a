//! The float types F32, F16 and BF16. "Quantizing" is ggml's float conversion
//! (`ggml_fp32_to_fp16_row`, `ggml_fp32_to_bf16_row_ref`), each type is its own dot type, and
//! the dot product is `ggml_vec_dot_f32/f16/bf16`: products in f32 (exact for f16 and bf16
//! inputs), summed in f64 as ggml's scalar path does (`ggml_float`).

use super::blocks::{QuantBlock, F16};
use super::{GgmlType, Kernels};
use bytemuck::{Pod, Zeroable};

/// A bfloat16 stored as two little-endian bytes (`ggml_bf16_t`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct BF16(pub [u8; 2]);
const _: () = assert!(std::mem::size_of::<BF16>() == 2);

impl BF16 {
    #[inline]
    pub fn to_f32(self) -> f32 {
        f32::from_bits((u16::from_le_bytes(self.0) as u32) << 16)
    }

    /// `GGML_FP32_TO_BF16`: round to nearest even; NaN kept NaN and made quiet.
    #[inline]
    pub fn from_f32(x: f32) -> BF16 {
        let u = x.to_bits();
        let h = if u & 0x7fff_ffff > 0x7f80_0000 {
            (u >> 16) | 64
        } else {
            u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16
        };
        BF16((h as u16).to_le_bytes())
    }
}

/// `ggml_compute_fp32_to_fp16`: round to nearest even, overflow to infinity, and every NaN to
/// the quiet NaN 0x7e00 with the input's sign.
#[inline]
pub fn fp32_to_fp16(f: f32) -> F16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 0x1.0p+112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 0x1.0p-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xff00_0000).max(0x7100_0000);
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7c00;
    let mantissa_bits = bits & 0x0000_0fff;
    let nonsign = exp_bits + mantissa_bits;
    let h = (sign >> 16)
        | if shl1_w > 0xff00_0000 {
            0x7e00
        } else {
            nonsign
        };
    F16((h as u16).to_le_bytes())
}

impl QuantBlock for F16 {
    const TYPE: GgmlType = GgmlType::F16;
    type VecDot = F16;
}

impl QuantBlock for BF16 {
    const TYPE: GgmlType = GgmlType::BF16;
    type VecDot = BF16;
}

/// An f32 as it lies in a tensor: four little-endian bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
#[repr(transparent)]
pub struct F32(pub [u8; 4]);

impl QuantBlock for F32 {
    const TYPE: GgmlType = GgmlType::F32;
    type VecDot = F32;
}

pub(super) fn kernels(ty: GgmlType) -> Option<Kernels> {
    Some(match ty {
        GgmlType::F32 => Kernels::of::<F32>(dequantize_f32, quantize_f32, Some(vec_dot_f32)),
        GgmlType::F16 => Kernels::of::<F16>(dequantize_f16, quantize_f16, Some(vec_dot_f16)),
        GgmlType::BF16 => Kernels::of::<BF16>(dequantize_bf16, quantize_bf16, Some(vec_dot_bf16)),
        _ => return None,
    })
}

fn f32_at(c: &[u8]) -> f32 {
    f32::from_le_bytes([c[0], c[1], c[2], c[3]])
}

fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (c, y) in src.chunks_exact(4).zip(dst) {
        *y = f32_at(c);
    }
}

fn quantize_f32(x: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (v, c) in x.iter().zip(dst.chunks_exact_mut(4)) {
        c.copy_from_slice(&v.to_le_bytes());
    }
}

fn vec_dot_f32(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f64;
    for (a, b) in x.chunks_exact(4).zip(y.chunks_exact(4)).take(n) {
        sumf += (f32_at(a) * f32_at(b)) as f64;
    }
    sumf as f32
}

fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (c, y) in src.chunks_exact(2).zip(dst) {
        *y = F16([c[0], c[1]]).to_f32();
    }
}

fn quantize_f16(x: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (&v, c) in x.iter().zip(dst.chunks_exact_mut(2)) {
        c.copy_from_slice(&fp32_to_fp16(v).0);
    }
}

fn vec_dot_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f64;
    for (a, b) in x.chunks_exact(2).zip(y.chunks_exact(2)).take(n) {
        sumf += (F16([a[0], a[1]]).to_f32() * F16([b[0], b[1]]).to_f32()) as f64;
    }
    sumf as f32
}

fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (c, y) in src.chunks_exact(2).zip(dst) {
        *y = BF16([c[0], c[1]]).to_f32();
    }
}

fn quantize_bf16(x: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (&v, c) in x.iter().zip(dst.chunks_exact_mut(2)) {
        c.copy_from_slice(&BF16::from_f32(v).0);
    }
}

fn vec_dot_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f64;
    for (a, b) in x.chunks_exact(2).zip(y.chunks_exact(2)).take(n) {
        sumf += (BF16([a[0], a[1]]).to_f32() * BF16([b[0], b[1]]).to_f32()) as f64;
    }
    sumf as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_conversion_matches_half_except_nan_payloads() {
        for bits in (0u32..=u32::MAX).step_by(4099) {
            let f = f32::from_bits(bits);
            let ours = u16::from_le_bytes(fp32_to_fp16(f).0);
            if f.is_nan() {
                assert_eq!(ours & 0x7fff, 0x7e00, "{bits:#x}");
            } else {
                assert_eq!(ours, half::f16::from_f32(f).to_bits(), "{bits:#x}");
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_nan() {
        assert_eq!(BF16::from_f32(1.0).0, [0x80, 0x3f]);
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even wins.
        assert_eq!(BF16::from_f32(f32::from_bits(0x3f80_8000)).to_f32(), 1.0);
        assert_eq!(
            BF16::from_f32(f32::from_bits(0x3f81_8000)).to_f32(),
            f32::from_bits(0x3f82_0000)
        );
        assert!(BF16::from_f32(f32::NAN).to_f32().is_nan());
        assert!(BF16::from_f32(f32::from_bits(0x7f80_0001))
            .to_f32()
            .is_nan());
    }
}
