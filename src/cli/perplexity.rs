//! `strait perplexity -m MODEL -f FILE -c N`: llama.cpp's perplexity method, PPL ± stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use super::run::{model_path, parse_kv_type, read_text, threads};
use strait::engine::perplexity::perplexity;
use strait::engine::{Engine, Model, Options};
use strait::tokenizer::Tokenizer;
use strait::Result;

#[derive(clap::Args)]
pub struct Args {
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// The text
    #[arg(short, long)]
    pub file: PathBuf,
    /// Tokens per chunk
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx: usize,
    /// Tokens per forward pass (at most the chunk)
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch: usize,
    #[arg(short, long, default_value_t = 0)]
    pub threads: usize,
    /// KV cache type: f16, f32 or q8_0
    #[arg(long = "cache-type", default_value = "f16")]
    pub cache_type: String,
}

pub fn run(args: Args) -> Result<()> {
    let mut model = Model::load(model_path(&args.model)?)?;
    let tok = Tokenizer::from_gguf(&model.file)?;
    model.file.release_vocabulary();
    let text = read_text(&args.file)?;
    let t0 = Instant::now();
    let tokens = tok.encode(&text, true, false)?;
    eprintln!(
        "tokenized {} bytes into {} tokens in {:.2} s; {} chunks of {}",
        text.len(),
        tokens.len(),
        t0.elapsed().as_secs_f64(),
        tokens.len() / args.ctx.max(1),
        args.ctx
    );
    let opts = Options {
        n_ctx: args.ctx,
        n_ubatch: args.batch.min(args.ctx).max(1),
        kv_type: parse_kv_type(&args.cache_type)?,
        all_logits: true,
        threads: threads(args.threads),
    };
    let mut engine = Engine::new(&model, &opts)?;
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let t1 = Instant::now();
    let r = perplexity(&mut engine, &tokens, args.ctx, bos, |c, ppl| {
        eprint!("[{}]{:.4},", c + 1, ppl);
        let _ = std::io::stderr().flush();
    })?;
    eprintln!(
        "\n{} chunks, {} tokens scored, {:.2} s",
        r.chunks,
        r.scored,
        t1.elapsed().as_secs_f64()
    );
    println!("PPL = {:.4} +/- {:.5}", r.ppl, r.stderr);
    Ok(())
}
