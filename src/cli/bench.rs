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
    /// Device: cpu (the only one in this build)
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    device: Vec<String>,
    /// GPU memory budgets, comma-separated (need a GPU)
    #[arg(long, value_delimiter = ',')]
    vram: Vec<String>,
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
                "device {d:?}: this build runs on the CPU only (--device cpu)"
            )));
        }
    }
    if !args.vram.is_empty() {
        return Err(Error::Unsupported(format!(
            "--vram {}: budgets apply to GPU memory, and no GPU is used (CPU only)",
            args.vram.join(",")
        )));
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
    for path in &args.model {
        let model = Model::load(path)?;
        let name = path.display().to_string();
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
            eprintln!("bench {name}, {t} threads");
            results.extend(bench::bench_model(&name, &model, t, &opts, bw)?);
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
