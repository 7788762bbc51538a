//! `strait bench`: prompt processing (pp) and token generation (tg) speed of a model on the
//! engine's forward pass, as llama-bench measures them: random tokens from an empty cache,
//! one warm-up run, then repetitions reported as mean ± standard deviation of tokens/s.

use crate::engine::plan::Plan;
use crate::engine::stream::{eval_streamed, file_sources, with_host_device, Executor};
use crate::engine::{Engine, Model, Options as EngineOptions, Outputs};
use crate::error::{Error, Result};
use crate::quantize::Mix;
use serde::Serialize;
use std::time::Instant;

/// One measurement: a model, a thread count and a test.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub model: String,
    /// Architecture and file type, as llama-bench's `model` column (`llama Q4_1`).
    pub model_type: String,
    pub size_bytes: u64,
    pub params: u64,
    pub backend: &'static str,
    pub threads: usize,
    /// The memory budget as given (`400MB`) when the test ran through the streaming executor.
    pub vram: Option<String>,
    /// Layers resident in the arena under that budget (of `n_layer`).
    pub resident_layers: Option<usize>,
    pub n_layer: usize,
    /// `pp512`, `tg128`.
    pub test: String,
    pub n_tokens: usize,
    /// Tokens/s of each repetition.
    pub samples: Vec<f64>,
    pub mean: f64,
    pub stddev: f64,
    /// Weight bytes one token reads (every layer matrix and the output matrix).
    pub weight_bytes_per_token: u64,
    /// Weight bytes per token × tokens/s (token generation only: prompt batches read the
    /// weights once per batch).
    pub achieved_gbs: Option<f64>,
    /// The host read bandwidth measured with the same threads, the limit for generation.
    pub host_gbs: Option<f64>,
    /// CPU time the process got during the repetitions, in percent of `threads` CPUs over
    /// the wall time: below 100 when other work shared the machine (Linux only; every thread
    /// of the process counts, so waiting workers that spin can take it over 100).
    pub cpu_percent: Option<f64>,
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat (in clock ticks of
/// 1/100 s, Linux's `USER_HZ`).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Runs `f` `reps` times; returns the rates and the CPU share (percent of `threads` CPUs).
fn repeat(
    reps: usize,
    threads: usize,
    mut f: impl FnMut() -> Result<f64>,
) -> Result<(Vec<f64>, Option<f64>)> {
    let cpu0 = process_cpu_seconds();
    let start = Instant::now();
    let mut s = Vec::with_capacity(reps);
    for _ in 0..reps {
        s.push(f()?);
    }
    let wall = start.elapsed().as_secs_f64();
    let share = match (cpu0, process_cpu_seconds()) {
        (Some(a), Some(b)) if wall > 0.0 => Some(100.0 * (b - a) / (wall * threads.max(1) as f64)),
        _ => None,
    };
    Ok((s, share))
}

/// What to run on each model.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub n_prompt: usize,
    pub n_gen: usize,
    pub reps: usize,
    pub seed: u64,
}

/// Mean and sample standard deviation.
pub fn mean_stddev(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The context and micro-batch the tests run with: a memory plan for the streaming executor
/// must be made for these.
pub fn bench_context(opts: &BenchOptions) -> (usize, usize) {
    (
        opts.n_prompt.max(opts.n_gen).max(1),
        opts.n_prompt.clamp(1, 512),
    )
}

/// Facts about a loaded model that the table shows.
pub struct ModelFacts {
    pub model_type: String,
    pub size_bytes: u64,
    pub params: u64,
    pub weight_bytes_per_token: u64,
}

impl ModelFacts {
    pub fn of(model: &Model) -> Result<ModelFacts> {
        let md = model.file.metadata();
        let ftype = md
            .get("general.file_type")
            .and_then(|v| v.as_i128())
            .and_then(|v| u32::try_from(v).ok())
            .and_then(Mix::from_ftype)
            .map_or_else(|| "?".to_string(), |m| m.name().to_string());
        let t = model.file.tensors();
        let mut per_token = model.output().data.len() as u64;
        for il in 0..model.config.n_layer {
            let l = model.layer(il)?;
            for w in [l.wq, l.wk, l.wv, l.wo, l.w_gate, l.w_up, l.w_down] {
                per_token += w.data.len() as u64;
            }
        }
        Ok(ModelFacts {
            model_type: format!("{} {ftype}", model.config.arch.name()),
            size_bytes: t.iter().map(|t| t.size).sum(),
            params: t.iter().map(|t| t.n_elements()).sum(),
            weight_bytes_per_token: per_token,
        })
    }
}

/// Random token ids below `n_vocab`, as llama-bench feeds.
fn random_tokens(rng: &mut super::rng::Rng, n: usize, n_vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|_| (rng.next_u64() % n_vocab.max(1) as u64) as u32)
        .collect()
}

/// One evaluation of tokens: the engine's own, or through the streaming executor.
type Eval<'a, 'm> = dyn FnMut(&mut Engine<'m>, &[u32]) -> Result<()> + 'a;

/// Prompt processing: `n` tokens in batches from an empty cache; tokens/s.
fn run_pp<'m>(engine: &mut Engine<'m>, eval: &mut Eval<'_, 'm>, tokens: &[u32]) -> Result<f64> {
    engine.clear();
    let start = Instant::now();
    eval(engine, tokens)?;
    Ok(tokens.len() as f64 / start.elapsed().as_secs_f64())
}

/// Token generation: `n` tokens one at a time from an empty cache; tokens/s.
fn run_tg<'m>(engine: &mut Engine<'m>, eval: &mut Eval<'_, 'm>, tokens: &[u32]) -> Result<f64> {
    engine.clear();
    let start = Instant::now();
    for t in tokens {
        eval(engine, std::slice::from_ref(t))?;
    }
    Ok(tokens.len() as f64 / start.elapsed().as_secs_f64())
}

/// Runs the pp and tg tests (those with a positive token count) on one model with `threads`
/// threads. `host_gbs` is the measured limit to compare generation against. With `plan`
/// (the budget as given, and a plan made for [`bench_context`]), every evaluation goes through
/// the streaming executor on the host device, as `strait run --vram` runs.
pub fn bench_model(
    name: &str,
    model: &Model,
    threads: usize,
    opts: &BenchOptions,
    host_gbs: Option<f64>,
    plan: Option<(&str, &Plan)>,
) -> Result<Vec<BenchResult>> {
    if opts.reps == 0 {
        return Err(Error::Invalid("repetitions must be at least 1".into()));
    }
    if opts.n_prompt == 0 && opts.n_gen == 0 {
        return Err(Error::Invalid(
            "nothing to measure: both -p and -n are 0".into(),
        ));
    }
    let train = model.config.n_ctx_train;
    if train > 0 && opts.n_prompt.max(opts.n_gen) > train {
        return Err(Error::Invalid(format!(
            "-p {} / -n {}: more positions than the model's training context of {train}",
            opts.n_prompt, opts.n_gen
        )));
    }
    let (n_ctx, n_ubatch) = bench_context(opts);
    if let Some((vram, p)) = plan {
        if p.n_ctx != n_ctx as u64
            || p.n_ubatch != n_ubatch as u64
            || p.n_layer() != model.config.n_layer
        {
            return Err(Error::Invalid(format!(
                "--vram {vram}: the plan is for {} layers, context {} and micro-batch {}; the \
                 test needs {} layers, {n_ctx} and {n_ubatch}",
                p.n_layer(),
                p.n_ctx,
                p.n_ubatch,
                model.config.n_layer
            )));
        }
    }
    let eopts = EngineOptions {
        n_ctx,
        n_ubatch,
        threads,
        ..EngineOptions::default()
    };
    let mut engine = Engine::new(model, &eopts)?;
    let Some((vram, p)) = plan else {
        return measure(
            name,
            model,
            &mut engine,
            &mut |e, t| e.eval(t, Outputs::Last, |_, _| {}),
            threads,
            opts,
            host_gbs,
            None,
        );
    };
    // The arena (resident layers and the slots) is allocated and filled once, outside the
    // timed runs, as `strait run --vram` does before generating.
    let sources = file_sources(p, &model.file)?;
    with_host_device(|dev| -> Result<Vec<BenchResult>> {
        let mut exec = Executor::new(dev, p, sources)?;
        measure(
            name,
            model,
            &mut engine,
            &mut |e, t| eval_streamed(e, &mut exec, t, Outputs::Last, |_, _| {}),
            threads,
            opts,
            host_gbs,
            Some((vram, p.resident_layers())),
        )
    })
}

/// The warm-ups and timed repetitions of each test, every evaluation made by `eval`.
#[allow(clippy::too_many_arguments)]
fn measure<'m>(
    name: &str,
    model: &Model,
    engine: &mut Engine<'m>,
    eval: &mut Eval<'_, 'm>,
    threads: usize,
    opts: &BenchOptions,
    host_gbs: Option<f64>,
    budget: Option<(&str, usize)>,
) -> Result<Vec<BenchResult>> {
    let facts = ModelFacts::of(model)?;
    let mut rng = super::rng::Rng::new(opts.seed);
    let n_vocab = model.config.n_vocab;
    let mut out = Vec::new();
    let result = |test: String, n: usize, (samples, cpu): (Vec<f64>, Option<f64>), gen: bool| {
        let (mean, stddev) = mean_stddev(&samples);
        BenchResult {
            model: name.to_string(),
            model_type: facts.model_type.clone(),
            size_bytes: facts.size_bytes,
            params: facts.params,
            backend: "CPU",
            threads,
            vram: budget.map(|(v, _)| v.to_string()),
            resident_layers: budget.map(|(_, r)| r),
            n_layer: model.config.n_layer,
            test,
            n_tokens: n,
            samples,
            mean,
            stddev,
            weight_bytes_per_token: facts.weight_bytes_per_token,
            achieved_gbs: gen.then(|| facts.weight_bytes_per_token as f64 * mean / 1e9),
            host_gbs: if gen { host_gbs } else { None },
            cpu_percent: cpu,
        }
    };
    if opts.n_prompt > 0 {
        let tokens = random_tokens(&mut rng, opts.n_prompt, n_vocab);
        run_pp(engine, eval, &tokens)?; // warm-up
        let s = repeat(opts.reps, threads, || run_pp(engine, eval, &tokens))?;
        out.push(result(
            format!("pp{}", opts.n_prompt),
            opts.n_prompt,
            s,
            false,
        ));
    }
    if opts.n_gen > 0 {
        let tokens = random_tokens(&mut rng, opts.n_gen, n_vocab);
        // Warm-up: one token, as llama-bench does before a tg test.
        run_tg(engine, eval, &tokens[..1])?;
        let s = repeat(opts.reps, threads, || run_tg(engine, eval, &tokens))?;
        out.push(result(format!("tg{}", opts.n_gen), opts.n_gen, s, true));
    }
    Ok(out)
}

fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.2} MiB", b / (1u64 << 20) as f64)
    }
}

fn params(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} B", n / 1e9)
    } else {
        format!("{:.2} M", n / 1e6)
    }
}

/// Header and rows of the table, llama-bench's columns plus the bandwidth.
pub fn table(results: &[BenchResult]) -> (Vec<String>, Vec<Vec<String>>) {
    let head = [
        "model",
        "size",
        "params",
        "backend",
        "threads",
        "vram",
        "resident",
        "test",
        "t/s",
        "GB/s",
        "host GB/s",
        "CPU %",
    ]
    .map(String::from)
    .to_vec();
    let rows = results
        .iter()
        .map(|r| {
            vec![
                r.model_type.clone(),
                size(r.size_bytes),
                params(r.params),
                r.backend.to_string(),
                r.threads.to_string(),
                r.vram.clone().unwrap_or_else(|| "-".into()),
                r.resident_layers
                    .map_or("-".into(), |n| format!("{n}/{}", r.n_layer)),
                r.test.clone(),
                format!("{:.2} ± {:.2}", r.mean, r.stddev),
                r.achieved_gbs.map_or("-".into(), |g| format!("{g:.2}")),
                r.host_gbs.map_or("-".into(), |g| format!("{g:.2}")),
                r.cpu_percent.map_or("-".into(), |c| format!("{c:.0}")),
            ]
        })
        .collect();
    (head, rows)
}

/// CSV: one line per result, numbers unformatted.
pub fn csv(results: &[BenchResult]) -> String {
    let head = [
        "model",
        "model_type",
        "size_bytes",
        "params",
        "backend",
        "threads",
        "vram",
        "resident_layers",
        "n_layer",
        "test",
        "n_tokens",
        "avg_ts",
        "stddev_ts",
        "weight_bytes_per_token",
        "achieved_gbs",
        "host_gbs",
        "cpu_percent",
    ]
    .map(String::from)
    .to_vec();
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.model_type.clone(),
                r.size_bytes.to_string(),
                r.params.to_string(),
                r.backend.to_string(),
                r.threads.to_string(),
                r.vram.clone().unwrap_or_default(),
                r.resident_layers.map_or(String::new(), |n| n.to_string()),
                r.n_layer.to_string(),
                r.test.clone(),
                r.n_tokens.to_string(),
                format!("{:.4}", r.mean),
                format!("{:.4}", r.stddev),
                r.weight_bytes_per_token.to_string(),
                opt(r.achieved_gbs),
                opt(r.host_gbs),
                opt(r.cpu_percent),
            ]
        })
        .collect();
    super::csv(&head, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_stddev() {
        let (m, s) = mean_stddev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_stddev(&[3.0]), (3.0, 0.0));
    }
}
