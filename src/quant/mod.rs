//! ggml quant formats: the type table, block layouts and the scalar reference code.

mod types;

pub use types::{GgmlType, TypeIdError, QK_K};
