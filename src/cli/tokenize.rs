//! `strait tokenize MODEL [TEXT]`

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use strait::gguf::GgufFile;
use strait::tokenizer::Tokenizer;
use strait::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file (a vocabulary-only file works too)
    pub model: PathBuf,
    /// The text; read from standard input when absent
    pub text: Option<String>,
    /// Print only the ids, as a list
    #[arg(long)]
    pub ids: bool,
    /// Turn the text of control tokens (such as <|im_start|>) into those tokens
    #[arg(long)]
    pub parse_special: bool,
    /// Do not add the BOS / EOS tokens the model asks for
    #[arg(long)]
    pub no_bos: bool,
    /// Print the load and tokenize times to standard error
    #[arg(long)]
    pub timings: bool,
}

pub fn run(args: Args) -> Result<()> {
    let text: Vec<u8> = match &args.text {
        Some(t) => t.clone().into_bytes(),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Error::io("<stdin>", e))?;
            buf
        }
    };
    let file = GgufFile::open(&args.model)?;
    let t0 = Instant::now();
    let tok = Tokenizer::from_gguf(&file)?;
    let t1 = Instant::now();
    let ids = tok.encode_bytes(&text, !args.no_bos, args.parse_special)?;
    let t2 = Instant::now();
    if args.timings {
        eprintln!(
            "tokenizer load {:.2} ms, {} bytes -> {} tokens in {:.3} ms",
            (t1 - t0).as_secs_f64() * 1e3,
            text.len(),
            ids.len(),
            (t2 - t1).as_secs_f64() * 1e3
        );
    }
    if args.ids {
        let list: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        println!("[{}]", list.join(", "));
        return Ok(());
    }
    for &id in &ids {
        let piece = tok.token_to_piece(id, true)?;
        println!("{id:>8} {:?}", String::from_utf8_lossy(&piece));
    }
    Ok(())
}
