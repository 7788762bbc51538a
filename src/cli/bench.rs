//! `strait bench`: prompt processing and token generation speed, as llama-bench reports it.

use crate::cli::profile::Format;
use std::collections::HashMap;
use std::path::PathBuf;
use strait::engine::Model;
use strait::profile::bench::{self, BenchOptions, BenchResult};
use strait::profile::{self, machine};
use strait::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Model files, comma-separated or repeated
    #[arg(short, long, value_delimiter = ',', required = true)]
    model: Vec<PathBuf>,
    /// Prompt tokens (0: no prompt test)
    #[arg(short = 'p', long, default_value_t = 512)]
    n_prompt: usize,
    /// Generated tokens (0: no generation test)
    #[arg(short = 'n', long, default_value_t = 128)]
    n_gen: usize,
    /// Repetitions of each test
    #[arg(short, long, default_value_t = 5)]
    reps: usize,
    /// Thread counts, comma-separated (default: every logical CPU)
    #[arg(short, long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Device: cpu (the only one in this build: no GPU backend)
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    device: Vec<String>,
    /// Memory budgets, comma-separated (200MB,1GiB): each test runs through the streaming
    /// executor (host device) with the plan for that budget, as `strait run --vram`
    #[arg(long, value_delimiter = ',')]
    vram: Vec<String>,
    /// With --vram: where layers that do not fit run (stream: copied through the two slots;
    /// cpu: computed from the mapped file; auto: the planner's choice)
    #[arg(long, default_value = "auto")]
    offload: String,
    /// Output format
    #[arg(short, long, value_enum, default_value = "md")]
    output: Format,
    /// Skip the host read-bandwidth measurement
    #[arg(long)]
    no_bandwidth: bool,
}

/// Host bandwidth buffer: far past any last-level cache.
const BANDWIDTH_BYTES: usize = 512 << 20;

pub fn run(args: Args) -> Result<()> {
    for d in &args.device {
        if !d.eq_ignore_ascii_case("cpu") {
            return Err(Error::Unsupported(format!(
                "device {d:?}: no GPU backend exists in this build; it runs on the CPU \
                 only (--device cpu)"
            )));
        }
    }
    let m = machine::Machine::detect();
    let threads = if args.threads.is_empty() {
        vec![m.logical_cpus]
    } else {
        args.threads.clone()
    };
    if let Some(t) = threads.iter().find(|&&t| t == 0) {
        return Err(Error::Invalid(format!("-t {t}: thread counts start at 1")));
    }
    let opts = BenchOptions {
        n_prompt: args.n_prompt,
        n_gen: args.n_gen,
        reps: args.reps,
        seed: 1234,
    };
    let mut host: HashMap<usize, f64> = HashMap::new();
    let mut results: Vec<BenchResult> = Vec::new();
    // No budget: the engine's own forward pass.
    let budgets: Vec<Option<&str>> = if args.vram.is_empty() {
        vec![None]
    } else {
        args.vram.iter().map(|v| Some(v.as_str())).collect()
    };
    let (n_ctx, n_ubatch) = bench::bench_context(&opts);
    for path in &args.model {
        let model = Model::load(path)?;
        let name = path.display().to_string();
        // Each budget's plan, made as `strait run --vram` makes it, before anything runs.
        let mut plans = Vec::with_capacity(budgets.len());
        for b in &budgets {
            plans.push(match b {
                Some(v) => Some((
                    *v,
                    super::plan::plan_for_run(
                        &model.file,
                        v,
                        n_ctx as u64,
                        n_ubatch as u64,
                        "f16",
                        &args.offload,
                    )
                    .map_err(|e| Error::Invalid(format!("--vram {v}: {e}")))?,
                )),
                None => None,
            });
        }
        for &t in &threads {
            let bw = if args.no_bandwidth || args.n_gen == 0 {
                None
            } else {
                Some(
                    *host
                        .entry(t)
                        .or_insert_with(|| machine::host_read_bandwidth(BANDWIDTH_BYTES, t, 3)),
                )
            };
            for p in &plans {
                match p {
                    Some((v, plan)) => eprintln!(
                        "bench {name}, {t} threads, --vram {v}: {}/{} layers resident",
                        plan.resident_layers(),
                        plan.n_layer()
                    ),
                    None => eprintln!("bench {name}, {t} threads"),
                }
                let plan = p.as_ref().map(|(v, plan)| (*v, plan));
                results.extend(bench::bench_model(&name, &model, t, &opts, bw, plan)?);
            }
        }
    }
    match args.output {
        Format::Json => {
            let doc = serde_json::json!({ "machine": m, "results": results });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).map_err(|e| Error::Invalid(e.to_string()))?
            );
        }
        Format::Csv => print!("{}", bench::csv(&results)),
        Format::Md => {
            println!(
                "strait {} ({}), {} ({} logical CPUs), kernel path {} (paths: {}), GPU: {}",
                m.version,
                m.build,
                m.cpu,
                m.logical_cpus,
                m.selected,
                m.paths.join(", "),
                m.gpu.as_deref().unwrap_or("none")
            );
            println!("features: {}", m.features.join(" "));
            if let Some(l) = m.load_average {
                println!(
                    "load average at the start: {l:.2} on {} logical CPUs",
                    m.logical_cpus
                );
            }
            // The CPU share says more than the load average, which counts this run too.
            if results
                .iter()
                .any(|r| r.cpu_percent.is_some_and(|c| c < 80.0))
            {
                println!(
                    "other work shared the CPUs (CPU % below 80): figures are lower than on \
                     an idle machine"
                );
            }
            println!();
            let (head, rows) = bench::table(&results);
            print!("{}", profile::markdown(&head, &rows));
            println!();
            println!(
                "GB/s: weight bytes per token × tokens/s; host GB/s: read bandwidth measured \
                 now with the same threads; CPU %: CPU time the run got, in percent of its threads"
            );
        }
    }
    Ok(())
}
