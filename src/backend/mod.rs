//! The ops a forward pass needs. `cpu` computes them on the host.

pub mod cpu;
