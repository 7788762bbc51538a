//! Perplexity of both real models on the reference text, by llama.cpp's method, within 1% of
//! ../shared/reference/generation/perplexity.json. One test per model (59 chunks of 128).

mod common;
use common::*;
use serde_json::Value;
use strait::engine::perplexity::perplexity;
use strait::engine::{Engine, Model, Options};
use strait::tokenizer::Tokenizer;

fn check(name: &str, file: &str) {
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(reference("generation/perplexity.json")).unwrap(),
    )
    .unwrap();
    let case = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model"] == name)
        .unwrap();
    let n_ctx = case["n_ctx"].as_u64().unwrap() as usize;
    let want = case["ppl"].as_f64().unwrap();
    let text = std::fs::read_to_string(case["file"].as_str().unwrap()).unwrap();
    let model = Model::load(model(file)).unwrap();
    let tok = Tokenizer::from_gguf(&model.file).unwrap();
    let tokens = tok.encode(&text, true, false).unwrap();
    let opts = Options {
        n_ctx,
        n_ubatch: n_ctx,
        all_logits: true,
        threads: 2,
        ..Options::default()
    };
    let mut engine = Engine::new(&model, &opts).unwrap();
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let r = perplexity(&mut engine, &tokens, n_ctx, bos, |_, _| {}).unwrap();
    println!(
        "{name}: PPL {:.4} +/- {:.5} over {} chunks (llama.cpp {want} +/- {})",
        r.ppl, r.stderr, r.chunks, case["ppl_stderr"]
    );
    assert_eq!(r.chunks as u64, case["chunks"].as_u64().unwrap());
    let rel = (r.ppl - want).abs() / want;
    assert!(
        rel <= 0.01,
        "{name}: PPL {} vs {want}: {:.2}% off",
        r.ppl,
        rel * 100.0
    );
}

#[test]
fn smollm2() {
    check("smollm2", SMOLLM2);
}

#[test]
fn gemma3() {
    check("gemma3", GEMMA3);
}
