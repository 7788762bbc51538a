//! The avx512 path.

use crate::quant::{GgmlType, Kernels};

/// The kernels this path has for `ty`; `None` fields fall back to the paths below.
pub fn kernels(_ty: GgmlType) -> Option<Kernels> {
    None
}
