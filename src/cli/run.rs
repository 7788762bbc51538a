//! `strait run -m MODEL -p PROMPT`: generate text, streamed to stdout; timings on stderr.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use strait::engine::chat::{ChatTemplate, Message};
use strait::engine::generate::{generate_with, GenOptions, Stop, Timings};
use strait::engine::stream::{eval_streamed, file_sources, with_host_device, Device, Executor};
use strait::engine::{Engine, Model, Options, Outputs};
use strait::quant::GgmlType;
use strait::sample::{Params, Sampler};
use strait::tokenizer::{Decoder, Tokenizer};
use strait::{Error, Result};

/// The model used when `-m` is not given.
pub const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model (default: SmolLM2-135M-Instruct.Q4_1.gguf in $STRAIT_MODELS or
    /// ~/.cache/strait/models)
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// The prompt
    #[arg(short, long)]
    pub prompt: Option<String>,
    /// Read the prompt from a file
    #[arg(short, long, conflicts_with = "prompt")]
    pub file: Option<PathBuf>,
    /// Tokens to generate (-1: until the model stops or the context is full)
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Context length (0: the model's, at most 4096)
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx: usize,
    /// Tokens per forward pass in the prompt
    #[arg(short = 'b', long = "ubatch", default_value_t = 512)]
    pub ubatch: usize,
    /// Worker threads (default: all cores)
    #[arg(short, long, default_value_t = 0)]
    pub threads: usize,
    /// KV cache type: f16, f32 or q8_0
    #[arg(long = "cache-type", visible_alias = "kv", default_value = "f16")]
    pub cache_type: String,
    /// Temperature (0: greedy)
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Recent tokens the penalties look at
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Random seed (default: from the clock)
    #[arg(short, long)]
    pub seed: Option<u64>,
    /// When the context is full, drop the older half and go on
    #[arg(long = "context-shift")]
    pub context_shift: bool,
    /// Tokens of the prompt kept by a context shift
    #[arg(long, default_value_t = 0)]
    pub keep: usize,
    /// Wrap the prompt in the model's chat template
    #[arg(long)]
    pub chat: bool,
    /// A system message for --chat
    #[arg(long)]
    pub system: Option<String>,
    /// Keep the conversation going: read each next prompt from stdin
    #[arg(short, long)]
    pub interactive: bool,
    /// Do not echo the prompt
    #[arg(long = "no-display-prompt")]
    pub no_display_prompt: bool,
    /// GPU memory budget (11.5GiB, 12000MB, 90%): print the memory plan before generating
    #[arg(long)]
    pub vram: Option<String>,
    /// With --vram, layers that do not fit: stream, cpu or auto
    #[arg(long, default_value = "auto")]
    pub offload: String,
    /// Print what the weight streaming did (copy, compute and wait times)
    #[arg(long)]
    pub verbose: bool,
}

/// `-m`, or the default model, or an error that says how to fetch it.
pub fn model_path(arg: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = arg {
        return Ok(p.clone());
    }
    let dir = match std::env::var_os("STRAIT_MODELS") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".cache/strait/models"),
    };
    let p = dir.join(DEFAULT_MODEL);
    if p.exists() {
        Ok(p)
    } else {
        Err(Error::Invalid(format!(
            "no model given and the default {} is absent: run scripts/fetch-models.sh, or pass -m MODEL",
            p.display()
        )))
    }
}

pub fn parse_kv_type(s: &str) -> Result<GgmlType> {
    match s.to_ascii_lowercase().as_str() {
        "f16" => Ok(GgmlType::F16),
        "f32" => Ok(GgmlType::F32),
        "q8_0" => Ok(GgmlType::Q8_0),
        other => Err(Error::Invalid(format!(
            "cache type {other:?}: use f16, f32 or q8_0"
        ))),
    }
}

pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes)
        .map_err(|_| Error::Invalid(format!("{} is not UTF-8 text", path.display())))
}

/// Threads: the flag, or every core.
pub fn threads(t: usize) -> usize {
    if t > 0 {
        t
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// A flag raised by Ctrl-C.
fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    ctrlc::set_handler(move || f.store(true, Ordering::Relaxed))
        .map_err(|e| Error::Invalid(format!("cannot install the Ctrl-C handler: {e}")))?;
    Ok(flag)
}

pub fn run(args: Args) -> Result<()> {
    let t_load = Instant::now();
    let path = model_path(&args.model)?;
    let mut model = Model::load(&path)?;
    let tok = Tokenizer::from_gguf(&model.file)?;
    model.file.release_vocabulary();
    let c = &model.config;
    let n_ctx = if args.ctx > 0 {
        args.ctx
    } else {
        c.n_ctx_train.min(4096)
    };
    let opts = Options {
        n_ctx,
        n_ubatch: args.ubatch,
        kv_type: parse_kv_type(&args.cache_type)?,
        all_logits: false,
        threads: threads(args.threads),
    };
    let plan = match &args.vram {
        Some(vram) => Some(super::plan::plan_for_run(
            &model.file,
            vram,
            n_ctx as u64,
            args.ubatch as u64,
            &args.cache_type,
            &args.offload,
        )?),
        None => None,
    };
    let mut engine = Engine::new(&model, &opts)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let params = Params {
        temperature: args.temp,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        frequency_penalty: args.frequency_penalty,
        presence_penalty: args.presence_penalty,
        penalty_last_n: args.repeat_last_n,
        seed,
    };
    let mut sampler = Sampler::new(params, c.n_vocab)?;
    let Some(plan) = plan else {
        let load = t_load.elapsed();
        let res = session(
            &args,
            &model,
            &tok,
            &mut engine,
            &mut sampler,
            load,
            &mut |e, t| e.eval(t, Outputs::Last, |_, _| {}),
        );
        if args.verbose {
            super::plan::print_timeline(None);
        }
        return res;
    };
    // Every evaluation through the streaming executor: its arena (resident layers and two
    // slots) is allocated and the resident layers uploaded once, here.
    let sources = file_sources(&plan, &model.file)?;
    with_host_device(|dev| -> Result<()> {
        let mut exec = Executor::new(dev, &plan, sources)?;
        let load = t_load.elapsed();
        let res = session(
            &args,
            &model,
            &tok,
            &mut engine,
            &mut sampler,
            load,
            &mut |e, t| eval_streamed(e, &mut exec, t, Outputs::Last, |_, _| {}),
        );
        if args.verbose {
            super::plan::print_timeline(Some(&exec.device().timeline()));
        }
        res
    })
}

/// The conversation: prompts (one, or from stdin with --interactive) and their replies, every
/// evaluation made by `eval`; the timings at the end.
fn session<'m>(
    args: &Args,
    model: &'m Model,
    tok: &Tokenizer,
    engine: &mut Engine<'m>,
    sampler: &mut Sampler,
    load: std::time::Duration,
    eval: &mut dyn FnMut(&mut Engine<'m>, &[u32]) -> Result<()>,
) -> Result<()> {
    let c = &model.config;
    let stop = interrupt_flag()?;
    // A warm-up pass, as llama.cpp makes at load: one token through the whole model, so that
    // the first prompt's timing does not include faulting in the mapped weights; the cache is
    // emptied after it.
    let warm = Instant::now();
    eval(engine, &[tok.bos().unwrap_or(0)])?;
    engine.clear();
    let load = load + warm.elapsed();

    let gen = GenOptions {
        n_predict: usize::try_from(args.n_predict).ok(),
        context_shift: args.context_shift,
        n_keep: args.keep,
    };
    let template = if args.chat {
        let piece = |id: Option<u32>| -> String {
            id.and_then(|i| tok.token_to_piece(i, true).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        Some(ChatTemplate::from_gguf(
            &model.file,
            c.arch,
            &piece(tok.bos()),
            &piece(tok.eos()),
        )?)
    } else {
        None
    };
    let bos_text = tok
        .bos()
        .and_then(|b| tok.token_to_piece(b, true).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();

    let mut messages: Vec<Message> = Vec::new();
    if let Some(s) = &args.system {
        messages.push(Message::new("system", s));
    }
    // The text the KV cache holds, for templates: each turn feeds only what is new.
    let mut held = String::new();
    let mut first_prompt = match (&args.prompt, &args.file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(read_text(f)?),
        (None, None) if args.interactive => None,
        (None, None) => {
            return Err(Error::Invalid(
                "no prompt: give -p PROMPT or -f FILE (or --interactive)".into(),
            ))
        }
    };
    let mut total = Timings::default();
    let stdout = std::io::stdout();
    let stdin = std::io::stdin();
    let mut out_err: Option<Error> = None;
    loop {
        let user = match first_prompt.take() {
            Some(p) => p,
            None => {
                if !args.interactive {
                    break;
                }
                eprint!("\n> ");
                let mut line = String::new();
                match stdin.lock().read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(Error::io("<stdin>", e)),
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                line.trim_end_matches(['\n', '\r']).to_string()
            }
        };
        // What to feed: the new part of the conversation, or the raw text.
        let (text, add_special) = match &template {
            Some(t) => {
                messages.push(Message::new("user", &user));
                let full = t.apply(&messages, true)?;
                let new = if !held.is_empty() && full.starts_with(&held) {
                    full[held.len()..].to_string()
                } else {
                    engine.clear();
                    sampler.reset();
                    full.clone()
                };
                held = full;
                // A template that writes the BOS itself must not get a second one.
                let has_bos = !bos_text.is_empty() && new.starts_with(&bos_text);
                (new, engine.n_past() == 0 && !has_bos)
            }
            None => (user.clone(), engine.n_past() == 0),
        };
        let prompt = tok.encode(&text, add_special, true)?;
        if template.is_none() && !args.no_display_prompt {
            print!("{text}");
            let _ = stdout.lock().flush();
        }
        let mut dec = Decoder::continuing(tok);
        let mut reply = String::new();
        let res = generate_with(
            engine,
            &mut *eval,
            sampler,
            &prompt,
            &gen,
            |id| tok.is_eog(id),
            &stop,
            |id| {
                if let Some(s) = dec.push(id)? {
                    reply.push_str(&s);
                    let mut o = stdout.lock();
                    let _ = o.write_all(s.as_bytes());
                    let _ = o.flush();
                }
                Ok(())
            },
        );
        let tail = dec.finish();
        reply.push_str(&tail);
        print!("{tail}");
        let _ = stdout.lock().flush();
        match res {
            Ok((why, tm)) => {
                total.add(&tm);
                if template.is_some() {
                    held.push_str(&reply);
                    messages.push(Message::new("assistant", &reply));
                }
                match why {
                    Stop::Interrupted => {
                        eprintln!("\n[interrupted]");
                        break;
                    }
                    Stop::ContextFull => {
                        eprintln!(
                            "\n[context full: {} tokens; raise -c or pass --context-shift]",
                            engine.n_ctx()
                        );
                        break;
                    }
                    Stop::Length | Stop::EndOfGeneration => {}
                }
            }
            Err(e) => {
                out_err = Some(e);
                break;
            }
        }
        if !args.interactive {
            break;
        }
    }
    println!();
    eprint!("\n{}", total.report(load));
    match out_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
