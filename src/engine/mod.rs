//! The engine: KV cache, the forward pass over a model, the generate loop; the memory plan,
//! weight streaming and the calibration of the plan's cost model.

pub mod calibrate;
pub mod plan;
pub mod stream;
