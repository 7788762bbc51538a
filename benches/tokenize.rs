//! Tokenizer speed: encoding all of the GPL-3 text (35 KB) with the tokenizers of the two test
//! models, decoding it back, and building a tokenizer from metadata (Gemma 3: 262k tokens).
//!
//! `cargo bench --bench tokenize`; the models are looked up as the tests do (STRAIT_MODELS or
//! ~/.cache/strait/models) and skipped with a note when absent.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strait::gguf::GgufFile;
use strait::tokenizer::Tokenizer;

fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRAIT_MODELS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/strait/models")
}

const MODELS: &[(&str, &str)] = &[
    ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
];

fn text() -> Vec<u8> {
    std::fs::read("/usr/share/common-licenses/GPL-3").unwrap_or_else(|_| {
        // Not every system ships it: a stand-in of the same size and kind.
        "This program is free software: you can redistribute it and/or modify it under the \
         terms of the GNU General Public License as published by the Free Software Foundation, \
         either version 3 of the License, or (at your option) any later version.\n"
            .repeat(150)
            .into_bytes()
    })
}

fn bench(c: &mut Criterion) {
    let text = text();
    for (name, file) in MODELS {
        let path = models_dir().join(file);
        let Ok(gguf) = GgufFile::open(&path) else {
            eprintln!("{}: not found, skipped", path.display());
            continue;
        };
        let tok = Tokenizer::from_gguf(&gguf).unwrap();
        let ids = tok.encode_bytes(&text, true, false).unwrap();
        let mut g = c.benchmark_group(format!("tokenize/{name}"));
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function("encode GPL-3", |b| {
            b.iter(|| tok.encode_bytes(&text, true, false).unwrap())
        });
        g.bench_function("encode GPL-3, parse special", |b| {
            b.iter(|| tok.encode_bytes(&text, true, true).unwrap())
        });
        g.bench_function("decode GPL-3", |b| b.iter(|| tok.decode(&ids).unwrap()));
        g.finish();
        let mut g = c.benchmark_group(format!("tokenizer load/{name}"));
        g.sample_size(20);
        g.bench_function(format!("{} tokens", tok.n_vocab()), |b| {
            b.iter(|| Tokenizer::from_gguf(&gguf).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
