//! Random text through the tokenizers of the reference vocabularies (what the fuzz target
//! does, on the stable toolchain): no panic on any bytes, streaming and whole decoding agree,
//! and valid UTF-8 the vocabulary can represent decodes back to itself.

mod common;

use proptest::prelude::*;
use std::sync::OnceLock;
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
        VOCABS
            .iter()
            .map(|v| {
                let path = common::reference(&format!("tokenizer/vocab/ggml-vocab-{v}.gguf"));
                Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
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

/// See fuzz/fuzz_targets/tokenize.rs.
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
    let has = |id: u32, a: u16| tok.token_attr(id).unwrap_or(0) & a != 0;
    if ids.iter().any(|&id| has(id, attr::CONTROL | attr::UNKNOWN)) {
        return false;
    }
    if tok.kind() == Kind::SentencePiece {
        let user = ids.iter().any(|&id| has(id, attr::USER_DEFINED));
        if text.contains('\u{2581}') || (tok.add_space_prefix() && user) {
            return false;
        }
    }
    true
}

fn check(tok: &Tokenizer, bytes: &[u8], add_special: bool, parse_special: bool) {
    let Ok(ids) = tok.encode_bytes(bytes, add_special, parse_special) else {
        return;
    };
    assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
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
    if let Ok(s) = std::str::from_utf8(bytes) {
        let plain = tok.encode(s, false, false).unwrap();
        if representable(tok, s, &plain) {
            assert_eq!(tok.decode(&plain).unwrap(), s, "{plain:?}");
        }
    }
}

/// Characters that exercise the pre-tokenizers: every category, whitespace kinds, digits,
/// apostrophes, CJK, emoji, combining marks, unassigned code points.
fn text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "a",
        "Z",
        "é",
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\u{4}",
        "\u{7f}",
        "\u{a0}",
        "\u{3000}",
        "0",
        "7",
        "½",
        "١",
        "'s",
        "'LL",
        "'",
        ".",
        ",",
        "!",
        "?",
        "$",
        "+",
        "~",
        "|",
        "`",
        "(",
        "—",
        "…",
        "日",
        "本",
        "가",
        "ก",
        "\u{0301}",
        "\u{200d}",
        "🦀",
        "🇫🇷",
        "\u{e000}",
        "\u{378}",
        "\u{10ffff}",
        "<|endoftext|>",
        "<s>",
        "</s>",
        "<unk>",
        "\u{2581}",
        "Hello",
        " world",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn text_round_trips(s in text(), which in 0usize..13, flags in 0u8..4) {
        let toks = tokenizers();
        check(&toks[which % toks.len()], s.as_bytes(), flags & 1 != 0, flags & 2 != 0);
    }

    #[test]
    fn any_bytes_are_safe(b in prop::collection::vec(any::<u8>(), 0..64), which in 0usize..13) {
        let toks = tokenizers();
        check(&toks[which % toks.len()], &b, true, true);
        check(&toks[which % toks.len()], &b, false, false);
    }
}
