//! The strait command line: parse arguments, call the library, print.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "strait",
    version,
    about = "Run GGUF language models larger than your GPU, with an exact memory budget"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a GGUF file holds: architecture, sizes, quant types, hyperparameters
    Inspect(cli::inspect::Args),
    /// Plan where every byte goes under a device memory budget, and predict the speed
    Plan(cli::plan::Args),
    /// Measure this machine's memory bandwidth and matmul throughput for the plan
    Calibrate(cli::calibrate::Args),
    /// Generate text from a prompt, streamed as it is made
    Run(cli::run::Args),
    /// Top logits and logsumexp at every position of a prompt
    Logits(cli::logits::Args),
    /// Perplexity of a text file (llama.cpp's method)
    Perplexity(cli::perplexity::Args),
    /// Quantize a model to a llama.cpp type mix (Q4_K_M, Q6_K, Q8_0, ...) or a single type
    Quantize(cli::quantize::Args),
    /// Check every quant kernel path against a directory of ggml reference files
    CheckReference(cli::check_reference::Args),
    /// Show the CPU features and the kernel path strait uses
    Info(cli::info::Args),
    /// Compare quant formats: bits per weight, quantization error, kernel speed
    Profile(cli::profile::Args),
    /// Measure prompt processing and token generation speed (llama-bench style)
    Bench(cli::bench::Args),
    /// Tokenize text with a model's tokenizer: ids, or a table of ids and pieces
    Tokenize(cli::tokenize::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => cli::inspect::run(args),
        Command::Plan(args) => cli::plan::run(args),
        Command::Calibrate(args) => cli::calibrate::run(args),
        Command::Run(args) => cli::run::run(args),
        Command::Logits(args) => cli::logits::run(args),
        Command::Perplexity(args) => cli::perplexity::run(args),
        Command::Quantize(args) => cli::quantize::run(args),
        Command::CheckReference(args) => cli::check_reference::run(args),
        Command::Info(args) => cli::info::run(args),
        Command::Profile(args) => cli::profile::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Tokenize(args) => cli::tokenize::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            // Sources already named in the message are not repeated.
            if !e.to_string().contains(&s.to_string()) {
                eprintln!("  caused by: {s}");
            }
            source = s.source();
        }
        std::process::exit(1);
    }
}
