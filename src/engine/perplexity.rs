//! Perplexity over a token stream, by llama.cpp's `llama-perplexity` method: chunks of n_ctx
//! tokens, each from an empty cache (its first token replaced by BOS where the model adds
//! one), scoring the second half of each chunk.

use super::{Engine, Outputs};
use crate::error::{Error, Result};

/// The result: PPL = exp(mean negative log-likelihood) and its standard error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perplexity {
    pub ppl: f64,
    pub stderr: f64,
    pub chunks: usize,
    pub scored: usize,
}

/// Running sums of the negative log-likelihoods.
#[derive(Default)]
struct Acc {
    nll: f64,
    nll2: f64,
    n: usize,
}

impl Acc {
    fn result(&self, chunks: usize) -> Perplexity {
        let n = self.n.max(1) as f64;
        let mean = self.nll / n;
        let var = self.nll2 / n - mean * mean;
        let ppl = mean.exp();
        let stderr = if var > 0.0 && self.n > 1 {
            (var / (n - 1.0)).sqrt() * ppl
        } else {
            0.0
        };
        Perplexity {
            ppl,
            stderr,
            chunks,
            scored: self.n,
        }
    }
}

/// Perplexity of `tokens` (the whole text, tokenized once) in chunks of `n_ctx`; the
/// remainder is dropped. `progress(chunk, ppl_so_far)` is called after each chunk. The engine
/// needs a context of at least `n_ctx` and logits at every position.
pub fn perplexity(
    engine: &mut Engine,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    mut progress: impl FnMut(usize, f64),
) -> Result<Perplexity> {
    if n_ctx < 4 || engine.n_ctx() < n_ctx {
        return Err(Error::Invalid(format!(
            "perplexity needs a context of at least 4 tokens and an engine that holds it (asked {n_ctx}, engine {})",
            engine.n_ctx()
        )));
    }
    let chunks = tokens.len() / n_ctx;
    if chunks == 0 {
        return Err(Error::Invalid(format!(
            "the text has {} tokens, fewer than one chunk of {n_ctx}",
            tokens.len()
        )));
    }
    let first = n_ctx / 2;
    let mut acc = Acc::default();
    let mut chunk_tokens = vec![0u32; n_ctx];
    for c in 0..chunks {
        chunk_tokens.copy_from_slice(&tokens[c * n_ctx..(c + 1) * n_ctx]);
        if let Some(b) = bos {
            chunk_tokens[0] = b;
        }
        engine.clear();
        let next = &tokens[c * n_ctx..(c + 1) * n_ctx];
        engine.eval(&chunk_tokens, Outputs::All, |i, logits| {
            // The logits at i score the token at i + 1, for i + 1 in first + 1 .. n_ctx.
            if i >= first && i + 1 < n_ctx {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
                let nll = max + sum.ln() - logits[next[i + 1] as usize] as f64;
                acc.nll += nll;
                acc.nll2 += nll * nll;
                acc.n += 1;
            }
        })?;
        progress(c, acc.result(c + 1).ppl);
    }
    Ok(acc.result(chunks))
}
