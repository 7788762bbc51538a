//! The tokenizers of the reference vocabularies on arbitrary bytes: encoding and decoding
//! never panic, and valid UTF-8 that the vocabulary can represent decodes back to itself.
//! The first byte picks the vocabulary and the flags, the rest is the text.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strait::gguf::GgufFile;
use strait::tokenizer::{attr, Decoder, Kind, Tokenizer};

const VOCABS: &[&str] = &[
    "llama-spm",
    "phi-3",
    "llama-bpe",
    "qwen2",
    "qwen35",
    "gpt-2",
    "deepseek-llm",
    "deepseek-coder",
    "falcon",
    "starcoder",
    "refact",
    "mpt",
    "command-r",
];

fn tokenizers() -> &'static [Tokenizer] {
    static TOKS: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    TOKS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/reference/tokenizer/vocab");
        VOCABS
            .iter()
            .map(|v| {
                let f = GgufFile::open(dir.join(format!("ggml-vocab-{v}.gguf"))).unwrap();
                Tokenizer::from_gguf(&f).unwrap()
            })
            .collect()
    })
}

/// GPT-2's byte-to-unicode map: the character a byte-level vocabulary spells a byte with.
fn byte_char(b: u8) -> char {
    let printable = |c: u32| (0x21..=0x7E).contains(&c) || (0xA1..=0xAC).contains(&c) || c >= 0xAE;
    if printable(b as u32) {
        return b as char;
    }
    let n = (0..b as u32).filter(|&c| !printable(c)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

/// Whether decoding `ids` must give `text` back: every byte has a token, no control or unknown
/// token came out, and a
/// SentencePiece text holds no U+2581 (it stands for a space there) and no user-defined
/// token (after one, llama.cpp adds a space prefix).
fn representable(tok: &Tokenizer, text: &str, ids: &[u32]) -> bool {
    // A byte whose byte-level character is no token is dropped (as llama.cpp drops it).
    if tok.kind() == Kind::BytePairEncoding
        && text.bytes().any(|b| {
            tok.token_id(byte_char(b).encode_utf8(&mut [0; 4]))
                .is_none()
        })
    {
        return false;
    }
    let special = |id: u32| tok.token_attr(id).unwrap_or(0) & (attr::CONTROL | attr::UNKNOWN) != 0;
    if ids.iter().any(|&id| special(id)) {
        return false;
    }
    if tok.kind() == Kind::SentencePiece {
        let user = |id: u32| tok.token_attr(id).unwrap_or(0) & attr::USER_DEFINED != 0;
        if text.contains('\u{2581}') || (tok.add_space_prefix() && ids.iter().any(|&id| user(id))) {
            return false;
        }
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    let toks = tokenizers();
    let tok = &toks[sel as usize % toks.len()];
    let add_special = sel & 0x40 != 0;
    let parse_special = sel & 0x80 != 0;
    let Ok(ids) = tok.encode_bytes(text, add_special, parse_special) else {
        return;
    };
    for &id in &ids {
        assert!((id as usize) < tok.n_vocab());
    }
    // Streaming and whole decoding agree and never panic.
    let whole = tok.decode(&ids).unwrap();
    let mut d = Decoder::new(tok);
    let mut streamed = String::new();
    for &id in &ids {
        if let Some(s) = d.push(id).unwrap() {
            streamed.push_str(&s);
        }
    }
    streamed.push_str(&d.finish());
    assert_eq!(whole, streamed);
    if let Ok(s) = std::str::from_utf8(text) {
        let plain = tok.encode(s, false, false).unwrap();
        if representable(tok, s, &plain) {
            assert_eq!(tok.decode(&plain).unwrap(), s, "{plain:?}");
        }
    }
});
