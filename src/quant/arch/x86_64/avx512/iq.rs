//! The lattice i-quants IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S on the avx512
//! path: the avx2 kernels compiled for AVX-512 (EVEX encodings, 32 registers). Loading the
//! grid points by index bounds them: the grids are too large for a register lookup, and
//! taking the group sums with VNNI `vpdpbusd` instead of `vpmaddubsw` measured no faster.
//! Exactness and ordering are as on the avx2 path.

use super::super::avx2::iq::{dequantize_body, dot_body, IqBlock};
use crate::quant::iquants::{
    BlockIQ1M, BlockIQ1S, BlockIQ2S, BlockIQ2XS, BlockIQ2XXS, BlockIQ3S, BlockIQ3XXS,
};
use crate::quant::{GgmlType, Kernels};

pub fn kernels(ty: GgmlType) -> Option<Kernels> {
    macro_rules! k {
        ($b:ty) => {
            (
                (|s: &[u8], d: &mut [f32]| {
                    // SAFETY: handed out by `kernels` only on the avx512 path, after the CPU
                    // was checked.
                    unsafe { dequantize_avx512::<$b>(s, d) }
                }) as crate::quant::DequantizeFn,
                (|n: usize, x: &[u8], y: &[u8]| {
                    // SAFETY: as above.
                    unsafe { dot_avx512::<$b>(n, x, y) }
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

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_avx512<B: IqBlock>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    // SAFETY: the features are enabled here.
    unsafe { dot_body::<B>(n, x, y) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dequantize_avx512<B: IqBlock>(src: &[u8], dst: &mut [f32]) {
    // SAFETY: the features are enabled here.
    unsafe { dequantize_body::<B>(src, dst) }
}
