//! The engine: the memory plan, weight streaming, calibration of the cost model.

pub mod calibrate;
pub mod plan;
pub mod stream;
