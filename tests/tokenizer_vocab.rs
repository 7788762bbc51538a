//! Every input of every vocabulary in ../shared/reference/tokenizer/vocab gives exactly the ids
//! of its `.out` file (no BOS/EOS, no special-token parsing), and decodes back to the input
//! wherever the vocabulary can represent it.

mod common;

use strait::gguf::GgufFile;
use strait::tokenizer::{Kind, Tokenizer};

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

struct Case {
    input: String,
    ids: Vec<u32>,
}

fn load(name: &str) -> (Tokenizer, Vec<Case>) {
    let base = common::reference(&format!("tokenizer/vocab/ggml-vocab-{name}.gguf"));
    let file = GgufFile::open(&base).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let inp = std::fs::read_to_string(base.with_extension("gguf.inp")).unwrap();
    let out = std::fs::read_to_string(base.with_extension("gguf.out")).unwrap();
    // Each input is followed by "\n__ggml_vocab_test__\n" (llama.cpp's test-tokenizer-0).
    let mut inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    assert_eq!(inputs.pop(), Some(""), "{name}: trailing separator");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(inputs.len(), lines.len(), "{name}: inputs vs outputs");
    let cases = inputs
        .iter()
        .zip(&lines)
        .map(|(i, l)| Case {
            input: i.to_string(),
            ids: l.split_whitespace().map(|x| x.parse().unwrap()).collect(),
        })
        .collect();
    (tok, cases)
}

/// Whether the vocabulary can give the text back: every byte-level character must have a
/// token (otherwise llama.cpp drops it), and SentencePiece needs no unknown token.
fn representable(tok: &Tokenizer, ids: &[u32]) -> bool {
    !ids.iter()
        .any(|&id| Some(id) == tok.unk() && tok.kind() == Kind::SentencePiece)
}

#[test]
fn every_vocabulary_matches_llama_cpp() {
    let mut failures = Vec::new();
    let mut total = 0;
    for name in VOCABS {
        let (tok, cases) = load(name);
        for c in &cases {
            total += 1;
            let got = tok.encode(&c.input, false, false).unwrap();
            if got != c.ids {
                failures.push(format!(
                    "{name}: {:?}\n  want {:?}\n  got  {:?}",
                    c.input, c.ids, got
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(total >= 13 * 46);
}

#[test]
fn every_vocabulary_decodes_back() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in VOCABS {
        let (tok, cases) = load(name);
        for c in &cases {
            if !representable(&tok, &c.ids) {
                continue;
            }
            checked += 1;
            let text = tok.decode(&c.ids).unwrap();
            if text != c.input {
                failures.push(format!("{name}: {:?} decoded as {:?}", c.input, text));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 500, "{checked}");
}
