//! `strait plan -m MODEL --vram SIZE`: where every byte goes and how fast it will run, from the
//! header alone.

use std::path::PathBuf;
use strait::engine::calibrate;
use strait::engine::plan::{self, Budget, KvType, ModelShape, Offload, PlanRequest};
use strait::gguf::GgufFile;
use strait::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file (any shard of a split model)
    #[arg(short, long)]
    pub model: PathBuf,
    /// Device memory the plan may use: 11.5GiB, 12000MB, or 90% of the free GPU memory
    #[arg(long)]
    pub vram: String,
    /// Context length in tokens
    #[arg(short = 'c', long = "ctx", default_value_t = 4096)]
    pub ctx: u64,
    /// Tokens per micro-batch (prefill processes this many at once)
    #[arg(long, default_value_t = 512)]
    pub ubatch: u64,
    /// KV cache type: f16, q8_0 or f32
    #[arg(long, default_value = "f16")]
    pub kv: String,
    /// Layers that do not fit: stream (copied to the GPU), cpu (computed on the CPU), or auto
    #[arg(long, default_value = "auto")]
    pub offload: String,
    /// Print the plan as JSON
    #[arg(long)]
    pub json: bool,
}

/// Free device memory, when this build has a device backend and finds a device.
pub fn device_free_memory() -> Option<u64> {
    None
}

/// The request from the common flags, with the rates from the calibration file (or the
/// assumptions). Shared by `plan` and `run --vram`.
pub fn request(
    vram: &str,
    ctx: u64,
    ubatch: u64,
    kv: &str,
    offload: &str,
) -> Result<(PlanRequest, Option<String>)> {
    let budget = Budget::parse(vram)?.resolve(device_free_memory())?;
    let (rates, note) = calibrate::load_rates();
    let req = PlanRequest {
        budget,
        n_ctx: ctx,
        n_ubatch: ubatch.min(ctx.max(1)),
        kv: KvType::parse(kv)?,
        offload: Offload::parse(offload)?,
        rates,
    };
    Ok((req, note))
}

/// For `strait run --vram SIZE` (called by the `run` subcommand): plans `file` with the run's settings and prints the plan
/// summary to stderr before generation starts.
pub fn plan_for_run(
    file: &GgufFile,
    vram: &str,
    ctx: u64,
    ubatch: u64,
    kv: &str,
    offload: &str,
) -> Result<plan::Plan> {
    let (req, note) = request(vram, ctx, ubatch, kv, offload)?;
    if let Some(note) = note {
        eprintln!("warning: {note}");
    }
    let shape = ModelShape::from_header(file.metadata(), file.tensors())?;
    let p = plan::plan(&shape, &req)?;
    eprintln!("{}", p.summary());
    Ok(p)
}

/// For `strait run --verbose` (called by the `run` subcommand): what the streaming executor
/// did (copy time, compute time, time waiting for copies), or that it did not run.
pub fn print_timeline(tl: Option<&strait::engine::stream::Timeline>) {
    match tl {
        Some(tl) => eprintln!("streaming: {}", tl.summary()),
        None => eprintln!(
            "streaming: not used: this build has no GPU backend, every layer ran on the CPU \
             from the mapped file"
        ),
    }
}

pub fn run(args: Args) -> Result<()> {
    let (req, note) = request(&args.vram, args.ctx, args.ubatch, &args.kv, &args.offload)?;
    if let Some(note) = note {
        eprintln!("warning: {note}");
    }
    let file = GgufFile::open(&args.model)?;
    let shape = ModelShape::from_header(file.metadata(), file.tensors())?;
    let p = plan::plan(&shape, &req)?;
    if args.json {
        let text = serde_json::to_string_pretty(&p)
            .map_err(|e| Error::Invalid(format!("plan as JSON: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", p.table());
    }
    Ok(())
}
