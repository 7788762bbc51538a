//! The avx2 path.

pub(super) mod float;
pub(super) mod iq;
pub(super) mod iq4;

use crate::quant::{GgmlType, Kernels};

/// The kernels this path has for `ty`; `None` fields fall back to the paths below.
pub fn kernels(ty: GgmlType) -> Option<Kernels> {
    None.or_else(|| float::kernels(ty))
        .or_else(|| iq4::kernels(ty))
        .or_else(|| iq::kernels(ty))
}
