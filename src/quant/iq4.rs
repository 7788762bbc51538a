//! (kernels not written yet)

use super::{GgmlType, Kernels};

pub(super) fn kernels(_ty: GgmlType) -> Option<Kernels> {
    None
}
