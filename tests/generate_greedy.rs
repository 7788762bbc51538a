//! Greedy continuations of both real models against llama.cpp's, from
//! ../shared/reference/generation/greedy.json.

mod common;
use common::*;
use serde_json::Value;
use strait::engine::{Engine, Model, Options};
use strait::sample::{Params, Sampler};
use strait::tokenizer::{Decoder, Tokenizer};

struct Outcome {
    /// Our continuation starts with the first third of llama.cpp's.
    first_third: bool,
    /// At the first token where we leave llama.cpp's continuation: how far llama.cpp's token's
    /// logit is below our choice's.
    divergence: Option<(usize, f32)>,
}

fn run_case(model: &Model, tok: &Tokenizer, prompt: &str, reference: &str) -> Outcome {
    let reference = reference.trim_end_matches("\n\n");
    let prompt_ids = tok.encode(prompt, true, true).unwrap();
    let full_ids = tok
        .encode(&format!("{prompt}{reference}"), true, true)
        .unwrap();
    assert_eq!(
        &full_ids[..prompt_ids.len()],
        &prompt_ids[..],
        "{prompt:?}: the reference text does not extend the prompt's tokens"
    );
    let ref_ids = &full_ids[prompt_ids.len()..];

    let opts = Options {
        n_ctx: 256,
        threads: 2,
        ..Options::default()
    };
    let mut engine = Engine::new(model, &opts).unwrap();
    let mut sampler = Sampler::new(Params::greedy(), model.config.n_vocab).unwrap();
    let mut dec = Decoder::continuing(tok);
    let mut text = String::new();
    let mut divergence = None;
    let mut next_input: Vec<u32> = prompt_ids.clone();
    for i in 0..32 {
        let logits = engine.eval_last(&next_input).unwrap();
        let id = sampler.sample(logits);
        if divergence.is_none() {
            if let Some(&r) = ref_ids.get(i) {
                if r != id {
                    divergence = Some((i, logits[id as usize] - logits[r as usize]));
                }
            }
        }
        if tok.is_eog(id) {
            break;
        }
        text.push_str(&dec.push(id).unwrap().unwrap_or_default());
        next_input = vec![id];
    }
    text.push_str(&dec.finish());
    let third: String = reference
        .chars()
        .take(reference.chars().count() / 3)
        .collect();
    println!(
        "{prompt:?}\n  ours:      {text:?}\n  llama.cpp: {reference:?}\n  first third {}, divergence {divergence:?}",
        text.starts_with(&third)
    );
    Outcome {
        first_third: text.starts_with(&third),
        divergence,
    }
}

#[test]
fn greedy_matches_llama_cpp() {
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(reference("generation/greedy.json")).unwrap(),
    )
    .unwrap();
    let cases = json["cases"].as_array().unwrap();
    let mut agree = 0;
    let mut pairs = 0;
    for (name, file) in [("smollm2", SMOLLM2), ("gemma3", GEMMA3)] {
        let model = Model::load(model(file)).unwrap();
        let tok = Tokenizer::from_gguf(&model.file).unwrap();
        for case in cases {
            let prompt = case["prompt"].as_str().unwrap();
            let reference = case[name].as_str().unwrap();
            let o = run_case(&model, &tok, prompt, reference);
            pairs += 1;
            agree += o.first_third as usize;
            if let Some((i, gap)) = o.divergence {
                assert!(
                    gap < 1.0,
                    "{name} {prompt:?}: diverges at token {i} where our choice leads llama.cpp's by {gap}"
                );
            }
        }
    }
    println!("first third identical in {agree} of {pairs} pairs");
    assert_eq!(pairs, 16);
    assert!(
        agree >= 9,
        "first third identical in only {agree} of 16 pairs"
    );
}
