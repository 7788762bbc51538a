//! The F32 and Q8_0 KV caches and a context shift, on a tiny reference model.

mod common;
use common::*;
use serde_json::Value;
use strait::engine::logits::PositionLogits;
use strait::engine::{Engine, Model, Options, Outputs};
use strait::quant::GgmlType;

/// Mean |log p(llama.cpp's top-1)| deviation over the positions of one case.
fn mean_deviation(model: &Model, case: &Value, kv_type: GgmlType) -> f64 {
    let tokens: Vec<u32> = case["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let positions = case["positions"].as_array().unwrap();
    let opts = Options {
        n_ctx: tokens.len(),
        n_ubatch: 64,
        kv_type,
        all_logits: true,
        threads: 2,
    };
    let mut engine = Engine::new(model, &opts).unwrap();
    let mut d = Vec::new();
    engine
        .eval(&tokens, Outputs::All, |i, l| {
            let p = &positions[i];
            let id = p["top"][0][0].as_u64().unwrap() as usize;
            let want = p["top"][0][1].as_f64().unwrap() - p["logsumexp"].as_f64().unwrap();
            let got = l[id] as f64 - PositionLogits::of(l, 1).logsumexp;
            d.push((got - want).abs());
        })
        .unwrap();
    d.iter().sum::<f64>() / d.len() as f64
}

#[test]
fn f32_and_q8_0_caches_stay_within_tolerance() {
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(reference("models/logits.json")).unwrap())
            .unwrap();
    let case = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model"] == "tiny-qwen3-q5_k_m" && c["prompt_name"] == "code")
        .unwrap();
    let model = Model::load(reference("models/tiny-qwen3-q5_k_m.gguf")).unwrap();
    for ty in [GgmlType::F16, GgmlType::F32, GgmlType::Q8_0] {
        let m = mean_deviation(&model, case, ty);
        println!("KV {ty}: mean deviation {m:.4}");
        assert!(m <= 0.12, "KV {ty}: mean deviation {m}");
    }
}

#[test]
fn context_shift_keeps_going() {
    let model = Model::load(reference("models/tiny-llama3-q3_k_m.gguf")).unwrap();
    let opts = Options {
        n_ctx: 32,
        n_ubatch: 16,
        threads: 2,
        ..Options::default()
    };
    let mut engine = Engine::new(&model, &opts).unwrap();
    let tokens: Vec<u32> = (0..32).map(|i| 1000 + i * 7).collect();
    engine.eval_last(&tokens).unwrap();
    assert_eq!(engine.n_past(), 32);
    // Full: one more token is an error, not a panic.
    let e = engine.eval_last(&[5]).unwrap_err().to_string();
    assert!(e.contains("context full"), "{e}");
    engine.shift_context(4, 14).unwrap();
    assert_eq!(engine.n_past(), 18);
    let logits = engine.eval_last(&[5]).unwrap();
    assert!(logits.iter().all(|l| l.is_finite()));
    assert!(engine.shift_context(4, 100).is_err());
}

#[test]
fn bad_token_is_an_error() {
    let model = Model::load(reference("models/tiny-llama3-q3_k_m.gguf")).unwrap();
    let mut engine = Engine::new(
        &model,
        &Options {
            n_ctx: 8,
            ..Options::default()
        },
    )
    .unwrap();
    let e = engine.eval_last(&[u32::MAX]).unwrap_err().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
}
