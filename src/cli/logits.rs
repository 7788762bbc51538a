//! `strait logits -m MODEL -p PROMPT`: the prompt's token ids and, at every position, the top
//! K (id, logit) pairs and the logsumexp of the logits.

use std::path::PathBuf;

use super::run::{model_path, read_text, threads};
use strait::engine::logits::{options_for, prompt_logits};
use strait::engine::{Engine, Model};
use strait::tokenizer::Tokenizer;
use strait::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model (default: the small default model)
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    #[arg(short, long)]
    pub prompt: Option<String>,
    /// Read the prompt from a file
    #[arg(short, long, conflicts_with = "prompt")]
    pub file: Option<PathBuf>,
    /// Token ids instead of a prompt, comma-separated
    #[arg(long, conflicts_with_all = ["prompt", "file"], value_delimiter = ',')]
    pub tokens: Option<Vec<u32>>,
    /// Pairs per position
    #[arg(long, default_value_t = 8)]
    pub top: usize,
    /// Print JSON: {"model", "prompt", "tokens", "positions": [{"logsumexp", "top"}]}
    #[arg(long)]
    pub json: bool,
    #[arg(short, long, default_value_t = 0)]
    pub threads: usize,
}

/// An f32 as the shortest decimal that reads back as it (not its f64 expansion).
fn short(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(x as f64)
}

pub fn run(args: Args) -> Result<()> {
    let path = model_path(&args.model)?;
    let model = Model::load(&path)?;
    let (prompt, tokens) = match (&args.tokens, &args.prompt, &args.file) {
        (Some(t), _, _) => (String::new(), t.clone()),
        (None, p, f) => {
            let text = match (p, f) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => read_text(f)?,
                (None, None) => {
                    return Err(Error::Invalid(
                        "no prompt: give -p PROMPT, -f FILE or --tokens IDS".into(),
                    ))
                }
            };
            // As the reference: BOS where the model adds it, special tokens not parsed.
            let tok = Tokenizer::from_gguf(&model.file)?;
            let ids = tok.encode(&text, true, false)?;
            (text, ids)
        }
    };
    if tokens.is_empty() {
        return Err(Error::Invalid("the prompt has no tokens".into()));
    }
    let opts = options_for(&model.config, tokens.len(), threads(args.threads));
    let mut engine = Engine::new(&model, &opts)?;
    let positions = prompt_logits(&mut engine, &tokens, args.top.max(1))?;
    if args.json {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let json = serde_json::json!({
            "model": name,
            "prompt": prompt,
            "tokens": tokens,
            "positions": positions.iter().map(|p| serde_json::json!({
                "logsumexp": short(p.logsumexp as f32),
                "top": p.top.iter().map(|&(id, l)| serde_json::json!([id, short(l)])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        println!("{json}");
    } else {
        println!("tokens {:?}", tokens);
        for (i, p) in positions.iter().enumerate() {
            let top: Vec<String> = p.top.iter().map(|(id, l)| format!("{id}:{l:.4}")).collect();
            println!(
                "{i:5} {:>6} lse {:9.4}  {}",
                tokens[i],
                p.logsumexp,
                top.join(" ")
            );
        }
    }
    Ok(())
}
