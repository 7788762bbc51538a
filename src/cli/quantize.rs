//! `strait quantize IN OUT TYPE`: what llama-quantize does, with the same results.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use strait::gguf::GgufFile;
use strait::quant::GgmlType;
use strait::quantize::{self, Imatrix, Mix, Options};
use strait::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// The model to quantize (F32, F16, BF16, or already quantized)
    pub input: PathBuf,
    /// The GGUF file to write
    pub output: PathBuf,
    /// A mix (Q4_K_M, Q3_K_S, Q6_K, Q8_0, IQ4_XS, F16, F32, ...) or, with --pure, one type
    #[arg(name = "TYPE")]
    pub mix: String,
    /// Give every quantizable tensor the type itself, without the mix's per-tensor rules
    #[arg(long)]
    pub pure: bool,
    /// Importance matrix from llama-imatrix (GGUF or legacy .dat)
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,
    /// Threads that quantize rows (the output does not depend on it)
    #[arg(long, short = 't', value_name = "N")]
    pub threads: Option<usize>,
    /// Overwrite OUT if it exists
    #[arg(long)]
    pub force: bool,
    /// Leave output.weight as it is
    #[arg(long)]
    pub leave_output_tensor: bool,
    /// Type of output.weight
    #[arg(long, value_name = "TYPE")]
    pub output_tensor_type: Option<String>,
    /// Type of token_embd.weight
    #[arg(long, value_name = "TYPE")]
    pub token_embedding_type: Option<String>,
}

fn ggml_type(s: &str) -> Result<GgmlType> {
    GgmlType::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = GgmlType::ALL.iter().map(|t| t.name()).collect();
        Error::Invalid(format!(
            "unknown tensor type {s:?}; valid types: {}",
            names.join(", ")
        ))
    })
}

pub fn run(args: Args) -> Result<()> {
    let mix = Mix::parse(&args.mix)?;
    quantize::check_paths(&args.input, &args.output, args.force)?;
    let mut opts = Options::new(mix);
    opts.select.pure = args.pure;
    opts.select.quantize_output = !args.leave_output_tensor;
    opts.select.output_type = args
        .output_tensor_type
        .as_deref()
        .map(ggml_type)
        .transpose()?;
    opts.select.token_embd_type = args
        .token_embedding_type
        .as_deref()
        .map(ggml_type)
        .transpose()?;
    opts.threads = match args.threads {
        Some(0) => return Err(Error::Invalid("--threads must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if let Some(path) = &args.imatrix {
        let m = Imatrix::load(path)?;
        eprintln!(
            "imatrix: {} entries from {} ({} chunks)",
            m.entries.len(),
            path.display(),
            m.chunk_count
        );
        opts.imatrix = Some((m, path.display().to_string()));
    }

    let input = GgufFile::open(&args.input)?;
    let plan = quantize::plan(&input, &opts)?;
    if let Some(first) = plan.requantized.first() {
        eprintln!(
            "warning: requantizing {} tensors that are already quantized ({first}, ...): \
             quality is lost compared to quantizing from F32/F16/BF16",
            plan.requantized.len()
        );
    }
    let fallbacks: Vec<_> = plan
        .tensors
        .iter()
        .filter_map(|tp| tp.fallback_from.map(|want| (tp, want)))
        .collect();
    for (tp, want) in fallbacks.iter().take(3) {
        eprintln!(
            "warning: {}: rows of {} values do not fit {want}, using {}",
            tp.name, tp.shape[0], tp.to
        );
    }
    if fallbacks.len() > 3 {
        eprintln!(
            "warning: ... and {} more tensors with a fallback type",
            fallbacks.len() - 3
        );
    }
    if !plan.imatrix_missing.is_empty() {
        eprintln!(
            "warning: the imatrix has no weights for {} tensors ({}, ...)",
            plan.imatrix_missing.len(),
            plan.imatrix_missing[0]
        );
    }

    let tty = std::io::stderr().is_terminal();
    let mut err = std::io::stderr();
    let summary = quantize::quantize(&input, &plan, &args.output, &opts, &mut |p| {
        if tty {
            let mbs = p.bytes_in as f64 / 1e6 / p.seconds.max(1e-9);
            let _ = write!(
                err,
                "\r\x1b[K[{:>4}/{:>4}] {:<40} {:<7} {:>8.1} MB/s",
                p.done,
                p.total,
                p.name,
                p.to.name(),
                mbs
            );
            let _ = err.flush();
        }
    })?;
    if tty {
        eprintln!();
    }
    const MIB: f64 = 1024.0 * 1024.0;
    println!(
        "{} tensors in {:.1} s: {:.2} MiB ({:.2} bpw) -> {:.2} MiB ({:.2} bpw), {} written ({} mix, file_type {})",
        summary.n_tensors,
        summary.seconds,
        summary.size_in as f64 / MIB,
        summary.bpw_in(),
        summary.size_out as f64 / MIB,
        summary.bpw_out(),
        args.output.display(),
        mix,
        mix.ftype()
    );
    if summary.n_fallback > 0 {
        println!(
            "{} of {} tensors needed a fallback type",
            summary.n_fallback, summary.n_tensors
        );
    }
    Ok(())
}
