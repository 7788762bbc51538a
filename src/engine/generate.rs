//! The generate loop: prefill, then one token at a time through a sampler.
