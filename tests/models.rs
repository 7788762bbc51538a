//! The two real test models: the reader opens them, and `strait inspect` reports what they hold.

mod common;

use common::{model, GEMMA3, SMOLLM2};
use serde_json::Value as Json;
use std::path::Path;
use std::process::{Command, Output};
use strait::gguf::GgufFile;

fn strait(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(args)
        .output()
        .expect("run strait")
}

fn inspect_json(path: &Path) -> Json {
    let out = strait(&["inspect", "--json", "--tensors", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

/// What a model is known to hold.
struct Expected {
    file: &'static str,
    arch: &'static str,
    file_size: u64,
    tensors: usize,
    parameters: u64,
    /// (type, tensors) for every type present.
    types: &'static [(&'static str, u64)],
    block_count: u64,
    embedding_length: u64,
    tokenizer: &'static str,
    vocab_size: u64,
    chat_template: bool,
}

const SMOLLM2_EXPECTED: Expected = Expected {
    file: SMOLLM2,
    arch: "llama",
    file_size: 98_362_432,
    tensors: 272,
    parameters: 134_515_008,
    types: &[("F32", 61), ("Q4_1", 210), ("Q8_0", 1)],
    block_count: 30,
    embedding_length: 576,
    tokenizer: "gpt2",
    vocab_size: 49152,
    chat_template: true,
};

const GEMMA3_EXPECTED: Expected = Expected {
    file: GEMMA3,
    arch: "gemma3",
    file_size: 253_113_024,
    tensors: 236,
    parameters: 268_098_176,
    types: &[
        ("F32", 109),
        ("Q5_0", 81),
        ("Q8_0", 10),
        ("Q4_K", 27),
        ("Q6_K", 9),
    ],
    block_count: 18,
    embedding_length: 640,
    tokenizer: "llama",
    vocab_size: 262144,
    chat_template: false,
};

fn check_model(e: &Expected) {
    let path = model(e.file);
    let f = GgufFile::open(&path).unwrap();
    let md = f.metadata();
    assert_eq!(f.architecture().unwrap(), e.arch);
    assert_eq!(f.tensors().len(), e.tensors);
    assert_eq!(f.file_size(), e.file_size);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), e.file_size);
    // The data section ends inside the file, tensors in order without gaps beyond padding.
    let last = f.tensors().iter().max_by_key(|t| t.offset).unwrap();
    assert!(f.data(last).len() as u64 == last.size);

    let j = inspect_json(&path);
    assert_eq!(j["architecture"], e.arch);
    assert_eq!(j["file_size"], e.file_size);
    assert_eq!(j["tensor_count"], e.tensors);
    assert_eq!(j["parameters"], e.parameters);
    assert_eq!(j["parameters"], f.n_params());
    assert_eq!(j["gguf_version"], 3);
    assert_eq!(j["files"][0], path.to_str().unwrap());
    assert_eq!(j["name"], md.str("general.name").unwrap());

    let types = j["quant_types"].as_array().unwrap();
    assert_eq!(types.len(), e.types.len());
    let mut bytes_total = 0;
    for (name, n) in e.types {
        let t = types.iter().find(|t| t["type"] == *name).unwrap();
        assert_eq!(t["tensors"], *n, "{name}");
        let bytes: u64 = f
            .tensors()
            .iter()
            .filter(|x| x.ty.name() == *name)
            .map(|x| x.size)
            .sum();
        assert_eq!(t["bytes"], bytes, "{name}");
        bytes_total += bytes;
    }
    assert!(bytes_total < e.file_size);

    let hp = j["hyperparameters"].as_object().unwrap();
    let arch_keys = md
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{}.", e.arch)))
        .count();
    assert_eq!(hp.len(), arch_keys);
    assert_eq!(hp[&format!("{}.block_count", e.arch)], e.block_count);
    assert_eq!(
        hp[&format!("{}.embedding_length", e.arch)],
        e.embedding_length
    );

    assert_eq!(j["tokenizer"]["model"], e.tokenizer);
    assert_eq!(j["tokenizer"]["vocab_size"], e.vocab_size);
    assert_eq!(j["chat_template"], e.chat_template);

    let tensors = j["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), e.tensors);
    for (t, info) in tensors.iter().zip(f.tensors()) {
        assert_eq!(t["name"], info.name.as_str());
        assert_eq!(t["type"], info.ty.name());
        assert_eq!(t["bytes"], info.size);
        assert_eq!(t["offset"], info.offset);
        let shape: Vec<u64> = serde_json::from_value(t["shape"].clone()).unwrap();
        assert_eq!(shape, info.shape);
    }
    let embd = tensors
        .iter()
        .find(|t| t["name"] == "token_embd.weight")
        .unwrap();
    assert_eq!(
        embd["shape"],
        serde_json::json!([e.embedding_length, e.vocab_size])
    );

    // The table form says the same.
    let out = strait(&["inspect", "--tensors", path.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("architecture   {}\n", e.arch)),
        "{text}"
    );
    assert!(text.contains(&format!("tensors        {}\n", e.tensors)));
    assert!(text.contains(&format!("({} bytes)", e.file_size)));
    assert!(text.contains(&format!("{}, {} tokens", e.tokenizer, e.vocab_size)));
    for info in f.tensors() {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(info.name.as_str()))
            .unwrap_or_else(|| panic!("{} not listed", info.name));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], info.ty.name());
        assert_eq!(cols[cols.len() - 2], info.size.to_string());
        assert_eq!(cols[cols.len() - 1], info.offset.to_string());
    }
}

#[test]
fn smollm2_inspect_reports_what_the_file_holds() {
    check_model(&SMOLLM2_EXPECTED);
}

#[test]
fn gemma3_inspect_reports_what_the_file_holds() {
    check_model(&GEMMA3_EXPECTED);
}

#[test]
fn inspect_errors_are_one_line_and_exit_1() {
    let dir = std::env::temp_dir().join(format!("strait-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The first 4 MiB of a real model: the tensor data runs past the end.
    let cut = dir.join("cut.gguf");
    let real = std::fs::read(model(SMOLLM2)).unwrap();
    std::fs::write(&cut, &real[..4 << 20]).unwrap();
    let not_gguf = dir.join("text.gguf");
    std::fs::write(&not_gguf, "hello, world\n").unwrap();
    let cases = [
        (cut.clone(), "needs"),
        (not_gguf.clone(), "not a GGUF file"),
        (dir.join("missing.gguf"), "No such file"),
    ];
    for (path, what) in cases {
        let out = strait(&["inspect", path.to_str().unwrap()]);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: ") && err.contains(what), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(out.stdout.is_empty());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn smollm2_split_in_three_inspects_as_one_model() {
    let path = model(SMOLLM2);
    let f = GgufFile::open(&path).unwrap();
    let mut w = strait::gguf::GgufWriter::new(f.metadata().clone()).unwrap();
    for t in f.tensors() {
        w.add_tensor(&t.name, t.ty, &t.shape, f.data(t)).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("strait-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let paths = w.write_split(dir.join("smollm2"), 100).unwrap();
    assert_eq!(paths.len(), 3);

    let whole = inspect_json(&path);
    let split = inspect_json(&paths[1]);
    assert_eq!(split["files"].as_array().unwrap().len(), 3);
    for key in [
        "architecture",
        "parameters",
        "tensor_count",
        "hyperparameters",
        "tokenizer",
    ] {
        assert_eq!(split[key], whole[key], "{key}");
    }
    assert_eq!(split["quant_types"], whole["quant_types"]);
    let shards: Vec<u64> = split["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["shard"].as_u64().unwrap())
        .collect();
    assert_eq!(shards.iter().filter(|&&s| s == 3).count(), 72);
    // The bytes of every tensor are those of the original.
    let g = GgufFile::open(&paths[2]).unwrap();
    for t in f.tensors() {
        assert_eq!(g.data(g.require(&t.name).unwrap()), f.data(t), "{}", t.name);
    }
    let text = strait(&["inspect", paths[0].to_str().unwrap()]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("shards         3\n"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Releasing the vocabulary drops only the tokenizer's arrays: every tensor reads the same
/// bytes (the header pages are read again from the file), the other metadata stays, and a
/// tokenizer asked for afterwards is an error, not a panic.
#[test]
fn release_vocabulary_keeps_the_weights() {
    for file in [SMOLLM2, GEMMA3] {
        let mut f = GgufFile::open(model(file)).unwrap();
        let before: Vec<Vec<u8>> = f.tensors().iter().map(|t| f.data(t).to_vec()).collect();
        let arch = f
            .metadata()
            .opt_str("general.architecture")
            .unwrap()
            .map(str::to_owned);
        assert!(strait::tokenizer::Tokenizer::from_gguf(&f).is_ok());
        f.release_vocabulary();
        for (t, b) in f.tensors().iter().zip(&before) {
            assert!(f.data(t) == &b[..], "{file}: {} changed", t.name);
        }
        assert_eq!(
            f.metadata().opt_str("general.architecture").unwrap(),
            arch.as_deref()
        );
        assert!(arch.is_some());
        assert!(f
            .metadata()
            .opt_array("tokenizer.ggml.tokens")
            .unwrap()
            .is_none());
        assert!(strait::tokenizer::Tokenizer::from_gguf(&f).is_err());
    }
}
