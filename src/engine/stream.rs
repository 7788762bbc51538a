//! The streaming executor.
