//! ggml quant formats: the type table, block layouts and the scalar reference code.
//!
//! The scalar code here is the specification: quantized bytes identical to ggml's reference
//! quantizers, dequantized values identical, dot products within float tolerance. Faster paths
//! are tested against it.
//!
//! Where each type lives:
//! - `float`: F32, F16, BF16
//! - `legacy`: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q1_0, Q2_0
//! - `fp4`: MXFP4, NVFP4
//! - `iq4`: IQ4_NL, IQ4_XS
//! - `ternary`: TQ1_0, TQ2_0
//! - `kquants`: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K
//! - `iquants`: IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S

pub mod arch;
pub mod blocks;
pub mod check;
mod common;
pub mod float;
pub mod fp4;
pub mod iq4;
pub mod iquants;
pub mod kquants;
pub mod legacy;
pub mod ternary;
mod types;

use crate::error::{Error, Result};
pub use types::{GgmlType, TypeIdError, QK_K};

/// Dequantizes whole blocks: `src` holds `dst.len() / block_size` blocks.
pub type DequantizeFn = fn(src: &[u8], dst: &mut [f32]);
/// Quantizes one row of `src.len()` values (a multiple of the block size) into `dst`, as
/// ggml's `quantize_chunk` does for one row: with the importance matrix (`src.len()` weights)
/// when one is given, else the type's reference quantizer.
pub type QuantizeFn = fn(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>);
/// The dot product of `n` values: a row of this type with a row of its dot type.
pub type VecDotFn = fn(n: usize, x: &[u8], y: &[u8]) -> f32;

/// The scalar reference kernels of one type.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub ty: GgmlType,
    /// The type activations are quantized to for `vec_dot` (`vec_dot_type` in ggml).
    pub dot_type: GgmlType,
    pub dequantize: Option<DequantizeFn>,
    pub quantize: Option<QuantizeFn>,
    pub vec_dot: Option<VecDotFn>,
}

impl Kernels {
    /// The kernels of block type `B`, which names the type and its dot type.
    pub(crate) fn of<B: blocks::QuantBlock>(
        dequantize: DequantizeFn,
        quantize: QuantizeFn,
        vec_dot: Option<VecDotFn>,
    ) -> Kernels {
        Kernels {
            ty: B::TYPE,
            dot_type: <B::VecDot as blocks::QuantBlock>::TYPE,
            dequantize: Some(dequantize),
            quantize: Some(quantize),
            vec_dot,
        }
    }
}

/// The scalar kernels of `ty`, if strait has them.
pub fn scalar(ty: GgmlType) -> Option<Kernels> {
    float::kernels(ty)
        .or_else(|| legacy::kernels(ty))
        .or_else(|| fp4::kernels(ty))
        .or_else(|| iq4::kernels(ty))
        .or_else(|| ternary::kernels(ty))
        .or_else(|| kquants::kernels(ty))
        .or_else(|| iquants::kernels(ty))
}

fn unsupported(ty: GgmlType, what: &str) -> Error {
    Error::Unsupported(format!("{what} for tensor type {ty} is not implemented"))
}

fn check_len(ty: GgmlType, n: usize, bytes: usize) -> Result<()> {
    match ty.row_bytes(n as u64) {
        Some(b) if b == bytes as u64 => Ok(()),
        _ => Err(Error::Invalid(format!(
            "{n} values of {ty} need {:?} bytes, got {bytes} (rows must be a multiple of {})",
            ty.row_bytes(n as u64),
            ty.block_size()
        ))),
    }
}

/// Dequantizes `dst.len()` values of type `ty` from `src`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    let f = scalar(ty)
        .and_then(|k| k.dequantize)
        .ok_or_else(|| unsupported(ty, "dequantization"))?;
    check_len(ty, dst.len(), src.len())?;
    f(src, dst);
    Ok(())
}

/// Quantizes one row `src` to type `ty` into `dst`, with an optional importance matrix.
pub fn quantize_row(
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
) -> Result<()> {
    let f = scalar(ty)
        .and_then(|k| k.quantize)
        .ok_or_else(|| unsupported(ty, "quantization"))?;
    check_len(ty, src.len(), dst.len())?;
    if let Some(w) = imatrix {
        if w.len() != src.len() {
            return Err(Error::Invalid(format!(
                "importance matrix has {} weights for a row of {}",
                w.len(),
                src.len()
            )));
        }
    }
    f(src, dst, imatrix);
    Ok(())
}

/// The dot product of `n` values: `x` of type `ty`, `y` of its dot type.
pub fn vec_dot(ty: GgmlType, n: usize, x: &[u8], y: &[u8]) -> Result<f32> {
    let k = scalar(ty).ok_or_else(|| unsupported(ty, "the dot product"))?;
    let f = k
        .vec_dot
        .ok_or_else(|| unsupported(ty, "the dot product"))?;
    check_len(ty, n, x.len())?;
    check_len(k.dot_type, n, y.len())?;
    Ok(f(n, x, y))
}

/// The kernel paths this CPU can run, the scalar reference first; each shows only the kernels
/// it has itself.
pub fn kernel_paths() -> Vec<check::KernelPath> {
    arch::supported()
        .into_iter()
        .map(|p| check::KernelPath {
            name: p.name(),
            kernels: match p {
                arch::Path::Scalar => scalar,
                arch::Path::Avx2 => |t| arch::Path::Avx2.own_kernels(t),
                arch::Path::Avx512 => |t| arch::Path::Avx512.own_kernels(t),
            },
        })
        .collect()
}

/// The fastest kernels of `ty` on this CPU (the path chosen once at start-up).
pub fn best(ty: GgmlType) -> Option<Kernels> {
    arch::kernels(ty)
}
