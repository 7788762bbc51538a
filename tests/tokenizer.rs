//! The tokenizers of the two real test models against llama.cpp's ids
//! (../shared/reference/tokenizer/tokenize.json), special tokens, end-of-generation ids,
//! defaults for absent keys and streaming decoding.

mod common;

use strait::gguf::{GgufFile, Value};
use strait::tokenizer::{Decoder, Tokenizer};

fn model_tokenizer(file: &str) -> Tokenizer {
    let f = GgufFile::open(common::model(file)).unwrap();
    Tokenizer::from_gguf(&f).unwrap()
}

fn vocab_file(name: &str) -> GgufFile {
    GgufFile::open(common::reference(&format!(
        "tokenizer/vocab/ggml-vocab-{name}.gguf"
    )))
    .unwrap()
}

#[test]
fn real_models_match_llama_cpp() {
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::reference("tokenizer/tokenize.json")).unwrap(),
    )
    .unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert!(cases.len() >= 27);
    let models = [("smollm2", common::SMOLLM2), ("gemma3", common::GEMMA3)];
    let mut checked = 0;
    for (key, file) in models {
        let tok = model_tokenizer(file);
        for case in cases {
            let text = case["text"].as_str().unwrap();
            for (mode, parse_special) in [
                (key.to_string(), false),
                (format!("{key}_parse_special"), true),
            ] {
                // llama-tokenize adds BOS/EOS as the model asks.
                let got = tok.encode(text, true, parse_special);
                match &case[&mode] {
                    // llama.cpp printed no ids: its tokenizer failed on this input.
                    serde_json::Value::Null => {
                        assert!(
                            got.is_err(),
                            "{mode} {text:?}: llama.cpp failed, we gave {got:?}"
                        )
                    }
                    want => {
                        let want: Vec<u32> = want
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_u64().unwrap() as u32)
                            .collect();
                        assert_eq!(got.unwrap(), want, "{mode} {text:?}");
                    }
                }
                checked += 1;
            }
            // Decoding gives the text back (BOS and other control tokens print nothing).
            let ids = tok.encode(text, true, false).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), text, "{key} decode {text:?}");
        }
    }
    assert_eq!(checked, cases.len() * 4);
}

#[test]
fn special_tokens_and_end_of_generation() {
    let smol = model_tokenizer(common::SMOLLM2);
    assert_eq!(smol.n_vocab(), 49152);
    assert_eq!((smol.bos(), smol.eos()), (Some(1), Some(2)));
    assert!(!smol.add_bos());
    let im_end = smol.token_id("<|im_end|>").unwrap();
    let endoftext = smol.token_id("<|endoftext|>").unwrap();
    assert!(smol.is_eog(im_end) && smol.is_eog(endoftext));
    assert!(!smol.is_eog(smol.token_id("<|im_start|>").unwrap()));
    assert!(!smol.is_eog(19556));
    // Control tokens print nothing unless asked for.
    assert_eq!(smol.token_to_piece(im_end, false).unwrap(), b"");
    assert_eq!(smol.token_to_piece(im_end, true).unwrap(), b"<|im_end|>");
    assert_eq!(smol.token_to_piece(19556, false).unwrap(), b"Hello");
    assert!(smol.token_to_piece(49152, false).is_err());

    let gemma = model_tokenizer(common::GEMMA3);
    assert_eq!(gemma.n_vocab(), 262144);
    assert_eq!((gemma.bos(), gemma.eos()), (Some(2), Some(1)));
    assert!(gemma.add_bos() && !gemma.add_space_prefix());
    let eot = gemma.token_id("<end_of_turn>").unwrap();
    assert_eq!(eot, 106);
    assert!(gemma.is_eog(eot) && gemma.is_eog(1));
    assert!(!gemma.is_eog(2) && !gemma.is_eog(105));
    // Byte tokens give their byte.
    let nl = gemma.token_id("<0x0A>").unwrap();
    assert_eq!(gemma.token_to_piece(nl, false).unwrap(), b"\n");
    assert_eq!(gemma.token_to_piece(9259, false).unwrap(), b"Hello");
}

#[test]
fn defaults_for_absent_keys_follow_llama_cpp() {
    // llama-bpe has no add_bos_token key: the llama3 pre-tokenizer defaults it to true.
    let tok = Tokenizer::from_gguf(&vocab_file("llama-bpe")).unwrap();
    assert_eq!(tok.encode("Hi", true, false).unwrap()[0], 128000);
    assert_eq!(tok.encode("Hi", false, false).unwrap(), vec![13347]);
    assert!(tok.is_eog(128001) && tok.is_eog(tok.token_id("<|eot_id|>").unwrap()));
    // gpt-2 has none either: BPE defaults to no BOS.
    let tok = Tokenizer::from_gguf(&vocab_file("gpt-2")).unwrap();
    assert_eq!(tok.encode("Hi", true, false).unwrap(), vec![17250]);
    // SentencePiece defaults to BOS without EOS.
    let f = vocab_file("llama-spm");
    let mut md = f.metadata().clone();
    md.remove("tokenizer.ggml.add_bos_token");
    md.remove("tokenizer.ggml.add_eos_token");
    let tok = Tokenizer::from_metadata(&md).unwrap();
    assert_eq!(tok.encode("Hi", true, false).unwrap(), vec![1, 6324]);
    md.set("tokenizer.ggml.add_eos_token", Value::Bool(true));
    let tok = Tokenizer::from_metadata(&md).unwrap();
    assert_eq!(tok.encode("Hi", true, false).unwrap(), vec![1, 6324, 2]);
    // The leading space SentencePiece adds is not decoded back.
    assert_eq!(tok.decode(&[1, 6324, 2]).unwrap(), "Hi");
}

#[test]
fn unknown_pre_tokenizer_is_an_error_that_names_it() {
    let f = vocab_file("gpt-2");
    let mut md = f.metadata().clone();
    md.set("tokenizer.ggml.pre", Value::String("no-such-pre".into()));
    let e = Tokenizer::from_metadata(&md).unwrap_err().to_string();
    assert!(e.contains("no-such-pre"), "{e}");
    md.set("tokenizer.ggml.model", Value::String("t5".into()));
    let e = Tokenizer::from_metadata(&md).unwrap_err().to_string();
    assert!(e.contains("t5"), "{e}");
}

#[test]
fn streaming_decoder_holds_back_partial_characters() {
    let gemma = model_tokenizer(common::GEMMA3);
    // A character Gemma spells with byte tokens: 4 ids for one character.
    let text = "\u{1F9C0}\u{10FFFD}";
    let ids = gemma.encode(text, false, false).unwrap();
    assert!(ids.len() >= 4, "{ids:?}");
    let mut d = Decoder::new(&gemma);
    let mut out = String::new();
    let mut emitted = 0;
    for &id in &ids {
        if let Some(s) = d.push(id).unwrap() {
            assert!(!s.contains('\u{FFFD}'), "partial character emitted: {s:?}");
            out.push_str(&s);
            emitted += 1;
        }
    }
    out.push_str(&d.finish());
    assert_eq!(out, text);
    assert!(emitted < ids.len());

    let smol = model_tokenizer(common::SMOLLM2);
    let text = "emoji 🦀🚀 and 日本語";
    let ids = smol.encode(text, false, false).unwrap();
    let mut d = Decoder::continuing(&smol);
    let mut out = String::new();
    for &id in &ids {
        if let Some(s) = d.push(id).unwrap() {
            assert!(!s.contains('\u{FFFD}'), "{s:?}");
            out.push_str(&s);
        }
    }
    out.push_str(&d.finish());
    assert_eq!(out, text);
}

#[test]
fn invalid_utf8_is_tokenized_as_llama_cpp_does() {
    let smol = model_tokenizer(common::SMOLLM2);
    // Each bad byte is U+FFFD for byte-level BPE.
    let a = smol.encode_bytes(b"a\xFFb", false, false).unwrap();
    let b = smol.encode("a\u{FFFD}b", false, false).unwrap();
    assert_eq!(a, b);
    // SentencePiece falls back to the byte token.
    let gemma = model_tokenizer(common::GEMMA3);
    let ids = gemma.encode_bytes(b"\xFF", false, false).unwrap();
    assert_eq!(ids, vec![gemma.token_id("<0xFF>").unwrap()]);
    // A code point past U+10FFFF is an error (llama.cpp throws).
    assert!(smol
        .encode_bytes(b"\xF7\xBF\xBF\xBF", false, false)
        .is_err());
}

#[test]
fn cli_tokenizes_vocabulary_only_files() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let exe = env!("CARGO_BIN_EXE_strait");
    let vocab = common::reference("tokenizer/vocab/ggml-vocab-gpt-2.gguf");
    let out = Command::new(exe)
        .arg("tokenize")
        .arg(&vocab)
        .args(["Hello world", "--ids"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[15496, 995]\n");

    // Text from standard input, as a table of ids and pieces; BOS as the model asks.
    let spm = common::reference("tokenizer/vocab/ggml-vocab-llama-spm.gguf");
    let mut child = Command::new(exe)
        .arg("tokenize")
        .arg(&spm)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hi").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows, vec![vec!["1", "\"<s>\""], vec!["6324", "\"", "Hi\""]]);

    // --no-bos and --parse-special.
    let smol = common::model(common::SMOLLM2);
    let out = Command::new(exe)
        .arg("tokenize")
        .arg(&smol)
        .args(["<|im_start|>user", "--ids", "--parse-special", "--no-bos"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[1, 4093]\n");

    // Errors name the problem and exit with 1.
    let out = Command::new(exe)
        .args(["tokenize", "/nonexistent.gguf", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
}
