//! `strait profile`: quant formats compared: bits per weight, error, kernel speed.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;
use strait::gguf::GgufFile;
use strait::profile::{self, Options};
use strait::quant::GgmlType;
use strait::{Error, Result};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Md,
    Csv,
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// A model whose weight tensors are also quantized to each format and compared
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Formats to profile, comma-separated (default: every block format, F16 and BF16)
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    /// Write a chart (error and speed against bits per weight) to this SVG file
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Output format
    #[arg(short, long, value_enum, default_value = "md")]
    output: Format,
    /// Gaussian rows to quantize
    #[arg(long, default_value_t = 64)]
    rows: usize,
    /// Values per row (a multiple of 256)
    #[arg(long, default_value_t = 4096)]
    row_len: usize,
    /// Rows taken from each weight tensor of the model
    #[arg(long, default_value_t = 32)]
    model_rows: usize,
    /// Milliseconds spent on each throughput figure
    #[arg(long, default_value_t = 60)]
    time_ms: u64,
    /// Seed of the gaussian data
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Text whose perplexity each requantized model is measured on (needs --model)
    #[arg(long)]
    perplexity: Option<PathBuf>,
    /// Chunks of the text used for perplexity
    #[arg(long, default_value_t = 4)]
    chunks: usize,
    /// Tokens per perplexity chunk (the second half of each is scored)
    #[arg(long, default_value_t = 128)]
    ctx: usize,
    /// Threads for requantizing and perplexity (0: every logical CPU)
    #[arg(short, long, default_value_t = 0)]
    threads: usize,
}

fn parse_types(names: &[String]) -> Result<Vec<GgmlType>> {
    if names.is_empty() {
        return Ok(profile::default_types());
    }
    names
        .iter()
        .map(|n| {
            GgmlType::from_name(n.trim())
                .or_else(|| GgmlType::from_name(&n.trim().to_ascii_uppercase()))
                .ok_or_else(|| {
                    let all: Vec<&str> = GgmlType::ALL.iter().map(|t| t.name()).collect();
                    Error::Invalid(format!("unknown type {n:?}; types: {}", all.join(", ")))
                })
        })
        .collect()
}

pub fn run(args: Args) -> Result<()> {
    let opts = Options {
        types: parse_types(&args.types)?,
        rows: args.rows,
        n: args.row_len,
        seed: args.seed,
        model_rows: args.model_rows,
        time: Duration::from_millis(args.time_ms),
        ..Options::default()
    };
    let text = match (&args.perplexity, &args.model) {
        (Some(_), None) => return Err(Error::Invalid("--perplexity needs --model".into())),
        (Some(path), Some(_)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?,
        ),
        _ => None,
    };
    let file = args.model.as_ref().map(GgufFile::open).transpose()?;
    let name = args.model.as_ref().map(|p| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    });
    let model = match (&name, &file) {
        (Some(n), Some(f)) => Some((n.as_str(), f)),
        _ => None,
    };
    // Progress overwrites one line on a terminal; logs get nothing.
    let tty = std::io::stderr().is_terminal();
    let mut progress = |ty: GgmlType| {
        if tty {
            eprint!("\rprofiling {ty:<8}");
            let _ = std::io::stderr().flush();
        }
    };
    let mut p = profile::run(&opts, model, &mut progress)?;
    if let (Some(text), Some(path)) = (&text, &args.model) {
        let q = profile::QualityOptions {
            model: path,
            text,
            n_ctx: args.ctx,
            chunks: args.chunks,
            threads: args.threads,
            tmp_dir: &std::env::temp_dir(),
        };
        profile::add_quality(&mut p, &q, &mut |what| {
            if tty {
                eprint!("\rperplexity {what:<12}");
                let _ = std::io::stderr().flush();
            }
        })?;
    }
    if tty {
        eprint!("\r{:<24}\r", "");
    }
    match args.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&p).map_err(|e| Error::Invalid(e.to_string()))?
        ),
        Format::Csv => {
            let (head, rows) = p.table();
            print!("{}", profile::csv(&head, &rows));
        }
        Format::Md => {
            let m = &p.machine;
            println!(
                "strait {} ({}), {}, paths: {} (engine uses {})",
                m.version,
                m.build,
                m.cpu,
                m.paths.join(", "),
                m.selected
            );
            println!(
                "error: {} gaussian rows of {} values (seed {}){}; speed: GB/s of quantized bytes \
                 (deq, dot) or f32 activations (act), one thread, '-' where a path has no kernel \
                 of its own",
                p.rows,
                p.row_len,
                p.seed,
                p.model
                    .as_ref()
                    .map(|m| format!(", model: {m} ({} tensors)", p.model_tensors))
                    .unwrap_or_default()
            );
            println!();
            let (head, rows) = p.table();
            print!("{}", profile::markdown(&head, &rows));
            if let (Some(ppl), Some((n, ctx))) = (p.perplexity_base, p.perplexity_chunks) {
                println!(
                    "perplexity of the model as given: {ppl:.4} ({n} chunks of {ctx} tokens); \
                     mean KL divergence of each format from it"
                );
            }
            for s in &p.model_tensors_skipped {
                println!("tensor skipped: {s}");
            }
        }
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, p.svg())
            .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", path.display())))?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}
