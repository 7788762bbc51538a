//! Logits of every model and prompt in ../shared/reference/models/logits.json, computed the way
//! `strait logits` computes them, within the tolerance of the README beside it.

mod common;
use common::*;
use serde_json::Value;
use strait::engine::logits::{options_for, PositionLogits};
use strait::engine::{Engine, Model, Outputs};

fn model_path(name: &str) -> std::path::PathBuf {
    match name {
        "smollm2" => model(SMOLLM2),
        "gemma3" => model(GEMMA3),
        tiny => reference(&format!("models/{tiny}.gguf")),
    }
}

struct Stats {
    mean: f64,
    p99: f64,
    flips: usize,
    n: usize,
}

/// Compares one case; returns the deviations or panics naming what failed.
fn check_case(model: &Model, case: &Value) -> Stats {
    let tokens: Vec<u32> = case["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let positions = case["positions"].as_array().unwrap();
    assert_eq!(positions.len(), tokens.len());
    // The tokenizer gives llama.cpp's ids (BOS as the model asks, special tokens not parsed).
    let tok = strait::tokenizer::Tokenizer::from_gguf(&model.file).unwrap();
    let ids = tok
        .encode(case["prompt"].as_str().unwrap(), true, false)
        .unwrap();
    assert_eq!(
        ids, tokens,
        "{} {}: token ids",
        case["model"], case["prompt_name"]
    );
    let opts = options_for(&model.config, tokens.len(), 0);
    let mut engine = Engine::new(model, &opts).unwrap();
    let ref_top1: Vec<u32> = positions
        .iter()
        .map(|p| p["top"][0][0].as_u64().unwrap() as u32)
        .collect();
    let mut ours = Vec::new();
    let mut logit_of_ref = Vec::new();
    engine
        .eval(&tokens, Outputs::All, |i, l| {
            ours.push(PositionLogits::of(l, 8));
            logit_of_ref.push(l[ref_top1[i] as usize]);
        })
        .unwrap();
    let name = format!("{} {}", case["model"], case["prompt_name"]);
    let mut d = Vec::new();
    let mut flips = 0;
    for (i, p) in positions.iter().enumerate() {
        let top = p["top"].as_array().unwrap();
        let l1 = top[0][1].as_f64().unwrap();
        let l2 = top[1][1].as_f64().unwrap();
        let lse = p["logsumexp"].as_f64().unwrap();
        let our_top1 = ours[i].top[0].0;
        if our_top1 != ref_top1[i] {
            flips += 1;
            assert!(
                l1 - l2 < 1.0,
                "{name}: position {i}: top-1 {our_top1} but llama.cpp's {} leads by {:.3}",
                ref_top1[i],
                l1 - l2
            );
        }
        let ref_lp = l1 - lse;
        let our_lp = logit_of_ref[i] as f64 - ours[i].logsumexp;
        d.push((our_lp - ref_lp).abs());
    }
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n as f64;
    d.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p99 = d[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1];
    println!(
        "{name}: {n} positions, top-1 differs at {flips}, |d logprob| mean {mean:.4} p99 {p99:.4}"
    );
    let max_flips = 2usize.max(n / 5);
    assert!(
        flips <= max_flips,
        "{name}: top-1 differs at {flips} of {n} positions"
    );
    assert!(mean <= 0.12, "{name}: mean deviation {mean}");
    assert!(p99 <= 0.5, "{name}: 99th percentile deviation {p99}");
    Stats {
        mean,
        p99,
        flips,
        n,
    }
}

fn check_model(name: &str) {
    let text = std::fs::read_to_string(reference("models/logits.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let model = Model::load(model_path(name)).unwrap();
    let mut n_cases = 0;
    for case in json["cases"].as_array().unwrap() {
        if case["model"] == name {
            let s = check_case(&model, case);
            assert!(s.n > 0 && s.mean.is_finite() && s.p99.is_finite() && s.flips <= s.n);
            n_cases += 1;
        }
    }
    assert_eq!(n_cases, 3, "{name}: expected three prompts");
}

#[test]
fn smollm2() {
    check_model("smollm2");
}

#[test]
fn gemma3() {
    check_model("gemma3");
}

#[test]
fn tiny_qwen2() {
    check_model("tiny-qwen2-q4_k_m");
}

#[test]
fn tiny_qwen3() {
    check_model("tiny-qwen3-q5_k_m");
}

#[test]
fn tiny_llama3() {
    check_model("tiny-llama3-q3_k_m");
}

#[test]
fn tiny_llamaspm() {
    check_model("tiny-llamaspm-q2_k");
}
