//! The generate loop: prefill, then one token at a time through a sampler.

use super::Engine;
use crate::error::{Error, Result};
use crate::sample::Sampler;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The requested number of tokens was made.
    Length,
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// The stop flag was raised (Ctrl-C).
    Interrupted,
    /// The context is full and shifting is off.
    ContextFull,
}

/// Token counts and times, as llama.cpp's `llama_perf_context_print` reports them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub gen_tokens: usize,
    pub gen_time: Duration,
}

impl Timings {
    pub fn add(&mut self, o: &Timings) {
        self.prompt_tokens += o.prompt_tokens;
        self.prompt_time += o.prompt_time;
        self.gen_tokens += o.gen_tokens;
        self.gen_time += o.gen_time;
    }

    /// The report lines: load time, prompt and generation speed.
    pub fn report(&self, load: Duration) -> String {
        let line = |what: &str, n: usize, t: Duration| {
            let ms = t.as_secs_f64() * 1e3;
            let per = if n > 0 { ms / n as f64 } else { 0.0 };
            let tps = if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
            format!(
                "{what:>17} = {ms:10.2} ms / {n:5} tokens ({per:8.2} ms per token, {tps:8.2} tokens per second)\n"
            )
        };
        let mut s = format!(
            "{:>17} = {:10.2} ms\n",
            "load time",
            load.as_secs_f64() * 1e3
        );
        s += &line("prompt eval time", self.prompt_tokens, self.prompt_time);
        s += &line("eval time", self.gen_tokens, self.gen_time);
        s += &format!(
            "{:>17} = {:10.2} ms / {:5} tokens\n",
            "total time",
            (load + self.prompt_time + self.gen_time).as_secs_f64() * 1e3,
            self.prompt_tokens + self.gen_tokens
        );
        s
    }
}

/// What a generation may do.
#[derive(Clone, Debug, Default)]
pub struct GenOptions {
    /// Tokens to make at most (None: until an end-of-generation token or a full context).
    pub n_predict: Option<usize>,
    /// When the context is full, discard half of the tokens after the first `n_keep` and go
    /// on, as llama.cpp's `--context-shift`; otherwise stop.
    pub context_shift: bool,
    pub n_keep: usize,
}

/// Evaluates `prompt` after what the engine holds, then samples up to `n_predict` tokens,
/// calling `on_token` for each (the end-of-generation token is not passed on).
pub fn generate(
    engine: &mut Engine,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: &GenOptions,
    is_eog: impl Fn(u32) -> bool,
    stop: &AtomicBool,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<(Stop, Timings)> {
    let mut tm = Timings::default();
    if prompt.is_empty() {
        return Err(Error::Invalid("the prompt has no tokens".into()));
    }
    let free = engine.n_ctx() - engine.n_past();
    if prompt.len() > free {
        return Err(Error::Invalid(format!(
            "the prompt has {} tokens, the context has room for {} of {} (raise -c)",
            prompt.len(),
            free,
            engine.n_ctx()
        )));
    }
    for &t in prompt {
        sampler.accept(t);
    }
    let t0 = Instant::now();
    let mut next = sampler.sample(engine.eval_last(prompt)?);
    tm.prompt_tokens = prompt.len();
    tm.prompt_time = t0.elapsed();

    let t1 = Instant::now();
    let mut made = 0;
    let mut evals = 0;
    let reason = loop {
        if stop.load(Ordering::Relaxed) {
            break Stop::Interrupted;
        }
        if opts.n_predict.is_some_and(|n| made >= n) {
            break Stop::Length;
        }
        if is_eog(next) {
            break Stop::EndOfGeneration;
        }
        sampler.accept(next);
        on_token(next)?;
        made += 1;
        if opts.n_predict.is_some_and(|n| made >= n) {
            break Stop::Length;
        }
        if engine.n_past() >= engine.n_ctx() {
            if !opts.context_shift {
                break Stop::ContextFull;
            }
            let n_keep = opts.n_keep.min(engine.n_past() - 1);
            let n_discard = ((engine.n_past() - n_keep) / 2).max(1);
            engine.shift_context(n_keep, n_discard)?;
        }
        next = sampler.sample(engine.eval_last(&[next])?);
        evals += 1;
    };
    // As llama.cpp counts: the tokens evaluated after the prompt.
    tm.gen_tokens = evals;
    tm.gen_time = t1.elapsed();
    Ok((reason, tm))
}
