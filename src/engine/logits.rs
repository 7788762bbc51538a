//! Per-position logit summaries: the top K (id, logit) pairs and the logsumexp, as
//! `strait logits` prints them and the reference tests compare them.

use super::{Engine, Options, Outputs};
use crate::error::Result;
use crate::model::Config;

/// What one position's logits say.
#[derive(Clone, Debug, PartialEq)]
pub struct PositionLogits {
    /// log(sum(exp(logits))), summed in double precision.
    pub logsumexp: f64,
    /// The `k` largest logits, largest first.
    pub top: Vec<(u32, f32)>,
}

impl PositionLogits {
    pub fn of(logits: &[f32], k: usize) -> PositionLogits {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
        PositionLogits {
            logsumexp: max + sum.ln(),
            top: top_k(logits, k),
        }
    }
}

/// The `k` largest (id, logit) pairs, largest first (ties: lower id first).
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &l) in logits.iter().enumerate() {
        if top.len() == k && top.last().is_some_and(|&(_, m)| l <= m) {
            continue;
        }
        let at = top.partition_point(|&(_, m)| m >= l);
        top.insert(at, (i as u32, l));
        top.truncate(k);
    }
    top
}

/// Engine options for logits at every position of a prompt of `n_tokens`.
pub fn options_for(c: &Config, n_tokens: usize, threads: usize) -> Options {
    // Keep the logits buffer near 64 MiB: batch * n_vocab floats.
    let ubatch = ((16 << 20) / c.n_vocab.max(1)).clamp(1, 512);
    Options {
        n_ctx: n_tokens.max(1),
        n_ubatch: ubatch,
        all_logits: true,
        threads,
        ..Options::default()
    }
}

/// Runs `tokens` from an empty cache and summarizes the logits at every position.
pub fn prompt_logits(engine: &mut Engine, tokens: &[u32], k: usize) -> Result<Vec<PositionLogits>> {
    engine.clear();
    let mut out = Vec::with_capacity(tokens.len());
    engine.eval(tokens, Outputs::All, |_, l| {
        out.push(PositionLogits::of(l, k))
    })?;
    Ok(out)
}
