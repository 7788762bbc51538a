//! strait: run GGUF language models larger than the GPU, with an exact memory budget.
//!
//! Data flows one way: file bytes ([`gguf`]) -> quantized blocks ([`quant`]) -> tokens
//! ([`tokenizer`]) and models ([`model`]) -> the engine.

pub mod backend;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod model;
pub mod profile;
pub mod quant;
pub mod quantize;
pub mod sample;
pub mod tokenizer;

pub use error::{Error, Result};
