//! Samplers: pick the next token from the logits.
