//! Model quality of a requantized model against its base: perplexity on a text, and the mean
//! KL divergence of its next-token distributions from the base model's. The positions and the
//! sums are those of [`engine::perplexity`](crate::engine::perplexity) (llama-perplexity's
//! chunks, the second half of each scored), which gives the same perplexity; this pass also
//! keeps the log-probabilities the KL divergence needs.

use crate::engine::{logits::options_for, Engine, Model, Outputs};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::quant::GgmlType;
use crate::quantize::{self, Mix};
use crate::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// Splits `text`'s tokens into at most `max_chunks` chunks of `n_ctx`.
pub fn chunks(model: &Model, text: &str, n_ctx: usize, max_chunks: usize) -> Result<Vec<Vec<u32>>> {
    if n_ctx < 4 || max_chunks == 0 {
        return Err(Error::Invalid(format!(
            "perplexity needs a context of at least 4 tokens and one chunk (got {n_ctx} and {max_chunks})"
        )));
    }
    let tok = Tokenizer::from_gguf(&model.file)?;
    let ids = tok.encode(text, true, false)?;
    let n = (ids.len() / n_ctx).min(max_chunks);
    if n == 0 {
        return Err(Error::Invalid(format!(
            "the text has {} tokens, fewer than one chunk of {n_ctx}",
            ids.len()
        )));
    }
    let bos = tok.add_bos().then(|| tok.bos()).flatten();
    Ok(ids
        .chunks_exact(n_ctx)
        .take(n)
        .map(|c| {
            let mut c = c.to_vec();
            if let Some(b) = bos {
                c[0] = b;
            }
            c
        })
        .collect())
}

/// Log-softmax of `logits` into `out`, with sums in double precision as
/// `engine::perplexity` makes them; returns the logsumexp.
fn log_softmax(logits: &[f32], out: &mut [f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = (l as f64 - lse) as f32;
    }
    lse
}

/// What one model scored.
pub struct Scores {
    pub perplexity: f64,
    /// Mean KL(base ‖ this) over the scored positions, when a base was given.
    pub kl_divergence: Option<f64>,
    /// The log-probabilities at every scored position (kept for the base model).
    pub logprobs: Option<Vec<f32>>,
}

/// Scores `model` on `chunks`; `base` holds the base model's log-probabilities at the same
/// positions; `keep` returns this model's.
pub fn score(
    model: &Model,
    chunks: &[Vec<u32>],
    threads: usize,
    base: Option<&[f32]>,
    keep: bool,
) -> Result<Scores> {
    let v = model.config.n_vocab;
    let n_ctx = chunks.first().map_or(0, |c| c.len());
    let first = n_ctx / 2;
    let per_chunk = n_ctx - 1 - first;
    let positions = per_chunk * chunks.len();
    if let Some(b) = base {
        if b.len() != positions * v {
            return Err(Error::Invalid(format!(
                "base log-probabilities hold {} values, {positions} positions of {v} tokens need {}",
                b.len(),
                positions * v
            )));
        }
    }
    let mut engine = Engine::new(model, &options_for(&model.config, n_ctx, threads))?;
    let mut lp = vec![0f32; v];
    let mut kept = Vec::with_capacity(if keep { positions * v } else { 0 });
    let (mut nll, mut kl, mut p) = (0f64, 0f64, 0usize);
    for chunk in chunks {
        engine.clear();
        let mut err = None;
        engine.eval(chunk, Outputs::All, |i, logits| {
            if i < first || i + 1 >= chunk.len() || err.is_some() {
                return;
            }
            if chunk.len() != n_ctx || p >= positions {
                err = Some(format!("chunks must all hold {n_ctx} tokens"));
                return;
            }
            if logits.len() != v {
                err = Some(format!("{} logits, the vocabulary has {v}", logits.len()));
                return;
            }
            let lse = log_softmax(logits, &mut lp);
            let target = chunk[i + 1] as usize;
            nll += lse - logits.get(target).copied().unwrap_or(f32::NEG_INFINITY) as f64;
            if let Some(b) = base {
                let b = &b[p * v..(p + 1) * v];
                kl += b
                    .iter()
                    .zip(&lp)
                    .map(|(&bl, &ql)| (bl as f64).exp() * (bl as f64 - ql as f64))
                    .sum::<f64>();
            }
            if keep {
                kept.extend_from_slice(&lp);
            }
            p += 1;
        })?;
        if let Some(e) = err {
            return Err(Error::Invalid(e));
        }
    }
    let n = p.max(1) as f64;
    Ok(Scores {
        perplexity: (nll / n).exp(),
        kl_divergence: base.map(|_| kl / n),
        logprobs: keep.then_some(kept),
    })
}

/// The mix that makes `ty` its default type, if llama-quantize has one.
pub fn mix_for(ty: GgmlType) -> Option<Mix> {
    Mix::all().find(|m| m.default_type() == ty)
}

/// Writes `input` requantized to `ty` (every quantizable tensor, llama-quantize `--pure`) to
/// a temporary file in `dir`, and returns its path.
pub fn requantize(input: &GgufFile, ty: GgmlType, dir: &Path, threads: usize) -> Result<PathBuf> {
    let mix = mix_for(ty)
        .ok_or_else(|| Error::Unsupported(format!("no quantization mix has {ty} as its type")))?;
    let mut opts = quantize::Options::new(mix);
    opts.select.pure = true;
    opts.threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let plan = quantize::plan(input, &opts)?;
    let out = dir.join(format!(
        "strait-profile-{}-{}.gguf",
        std::process::id(),
        ty.name()
    ));
    quantize::quantize(input, &plan, &out, &opts, &mut |_| {})?;
    Ok(out)
}
