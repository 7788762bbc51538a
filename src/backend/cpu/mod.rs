//! The CPU backend: scalar kernels over f32 activations, rows split over threads with rayon.
