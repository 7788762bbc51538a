//! The engine: KV cache, the forward pass over a model, the generate loop.
