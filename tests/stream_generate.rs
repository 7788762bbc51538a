//! Greedy generation through the streaming executor: with plans that leave no layer, some
//! layers and every layer resident (the rest streamed through the slots), the tokens are those
//! of the in-memory engine; `strait run --vram` with the smallest budget, a middle one and a
//! large one prints the same text and, with `--verbose`, the timeline summary.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use strait::engine::generate::{generate, generate_with, GenOptions};
use strait::engine::plan::{
    plan_placement, KvType, ModelShape, Offload, Place, Plan, PlanRequest, Rates,
};
use strait::engine::stream::{eval_streamed, file_sources, with_host_device, Device, Executor};
use strait::engine::{Engine, Model, Options, Outputs};
use strait::sample::{Params, Sampler};
use strait::tokenizer::Tokenizer;

const N_CTX: usize = 128;
const UBATCH: usize = 4;
const N_PREDICT: usize = 16;
const PROMPT: &str = "The capital of France is";

fn models() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = [
        "tiny-llama3-q3_k_m.gguf",
        "tiny-llamaspm-q2_k.gguf",
        "tiny-qwen2-q4_k_m.gguf",
        "tiny-qwen3-q5_k_m.gguf",
    ]
    .iter()
    .map(|f| reference(&format!("models/{f}")))
    .collect();
    v.push(model(SMOLLM2));
    v.push(model(GEMMA3));
    v
}

fn request(budget: u64) -> PlanRequest {
    PlanRequest {
        budget,
        n_ctx: N_CTX as u64,
        n_ubatch: UBATCH as u64,
        kv: KvType::F16,
        offload: Offload::Stream,
        rates: Rates::assumed(),
    }
}

/// Plans with no layer, half the layers and every layer resident, each on a budget with not
/// one byte to spare.
fn plans(shape: &ModelShape, n_layer: usize) -> Vec<Plan> {
    [0, n_layer / 2, n_layer]
        .into_iter()
        .map(|resident| {
            let free = plan_placement(shape, &request(u64::MAX), resident, false).unwrap();
            plan_placement(shape, &request(free.device_total), resident, false).unwrap()
        })
        .collect()
}

fn options() -> Options {
    Options {
        n_ctx: N_CTX,
        n_ubatch: UBATCH,
        threads: 2,
        ..Options::default()
    }
}

fn prompt(model: &Model) -> Vec<u32> {
    let tok = Tokenizer::from_gguf(&model.file).unwrap();
    tok.encode(PROMPT, true, true).unwrap()
}

fn greedy(model: &Model) -> Sampler {
    Sampler::new(Params::greedy(), model.config.n_vocab).unwrap()
}

fn gen_opts() -> GenOptions {
    GenOptions {
        n_predict: Some(N_PREDICT),
        ..GenOptions::default()
    }
}

#[test]
fn streamed_generation_makes_the_engines_tokens() {
    let stop = AtomicBool::new(false);
    for path in models() {
        let model = Model::load(&path).unwrap();
        let n_layer = model.config.n_layer;
        let prompt = prompt(&model);
        let mut want = Vec::new();
        let mut e = Engine::new(&model, &options()).unwrap();
        generate(
            &mut e,
            &mut greedy(&model),
            &prompt,
            &gen_opts(),
            |_| false,
            &stop,
            |t| {
                want.push(t);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(want.len(), N_PREDICT, "{}", path.display());

        let shape = ModelShape::from_header(model.file.metadata(), model.file.tensors()).unwrap();
        let mut seen = Vec::new();
        for p in plans(&shape, n_layer) {
            let resident = p.placement[..n_layer]
                .iter()
                .filter(|&&x| x == Place::Device)
                .count();
            seen.push(resident);
            let sources = file_sources(&p, &model.file).unwrap();
            let mut e = Engine::new(&model, &options()).unwrap();
            let mut got = Vec::new();
            with_host_device(|dev| {
                let mut exec = Executor::new(dev, &p, sources).unwrap();
                generate_with(
                    &mut e,
                    |e, t| eval_streamed(e, &mut exec, t, Outputs::Last, |_, _| {}),
                    &mut greedy(&model),
                    &prompt,
                    &gen_opts(),
                    |_| false,
                    &stop,
                    |t| {
                        got.push(t);
                        Ok(())
                    },
                )
                .unwrap();
                let tl = exec.device().timeline();
                assert_eq!(tl.check(), Vec::<String>::new(), "{}", path.display());
                // One pass per ubatch of the prompt and per generated token after the first.
                let passes = prompt.len().div_ceil(UBATCH) + N_PREDICT - 1;
                let on = |pl: Place| p.placement.iter().filter(|&&x| x == pl).count();
                assert_eq!(
                    tl.summary().copies,
                    on(Place::Device) + passes * on(Place::Stream),
                    "{} with {resident} resident layers",
                    path.display()
                );
            });
            assert_eq!(
                got,
                want,
                "{} with {resident} of {n_layer} layers resident",
                path.display()
            );
        }
        assert_eq!(seen[0], 0, "{}", path.display());
        assert!(
            seen[1] > 0 && seen[1] < n_layer,
            "{}: {seen:?}",
            path.display()
        );
        assert_eq!(seen[2], n_layer, "{}", path.display());
    }
}

fn strait_run(model: &Path, extra: &[&str]) -> (String, String) {
    let ctx = N_CTX.to_string();
    let ub = UBATCH.to_string();
    let np = N_PREDICT.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["run", "-m"])
        .arg(model)
        .args(["-p", PROMPT, "-c", &ctx, "-b", &ub, "-n", &np])
        .args(["--temp", "0", "-t", "2", "--no-display-prompt"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}: {stderr}", model.display());
    (stdout, stderr)
}

fn strait_fails(model: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["run", "-m"])
        .arg(model)
        .args([
            "-p",
            PROMPT,
            "-c",
            &N_CTX.to_string(),
            "-b",
            &UBATCH.to_string(),
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_with_vram_prints_the_same_text_and_the_timeline() {
    for path in [reference("models/tiny-qwen3-q5_k_m.gguf"), model(SMOLLM2)] {
        let (want, _) = strait_run(&path, &[]);
        assert!(!want.trim().is_empty(), "{}", path.display());
        let model = Model::load(&path).unwrap();
        let n = model.config.n_layer;
        let shape = ModelShape::from_header(model.file.metadata(), model.file.tensors()).unwrap();
        let mut resident = Vec::new();
        // The smallest budget, as the error for a too small one states it.
        let tiny = strait_fails(&path, &["--vram", "1B", "--offload", "stream"]);
        let min: u64 = tiny
            .split("the smallest budget that works is ")
            .nth(1)
            .and_then(|t| t.split(['(', ' ']).nth(3))
            .unwrap_or_else(|| panic!("no smallest budget in {tiny}"))
            .parse()
            .unwrap();
        let all = plans(&shape, n)[2].device_total;
        let budgets = [min, (min + all) / 2, 64 << 30];
        for budget in budgets {
            let vram = format!("{budget}B");
            let (got, err) = strait_run(
                &path,
                &["--vram", &vram, "--offload", "stream", "--verbose"],
            );
            assert_eq!(got, want, "{} with --vram {vram}", path.display());
            // "plan: K of N layers resident, S streamed, 0 on the CPU, ..."
            let plan_line = err
                .lines()
                .find(|l| l.starts_with("plan: "))
                .unwrap_or_else(|| panic!("no plan in {err}"));
            let words: Vec<&str> = plan_line.split([' ', ',']).collect();
            let k: usize = words[1].parse().unwrap();
            assert_eq!(words[3], n.to_string(), "{plan_line}");
            assert!(
                plan_line.contains(&format!("{} streamed", n - k)),
                "{plan_line}"
            );
            resident.push(k);
            let line = err
                .lines()
                .find(|l| l.starts_with("streaming: "))
                .unwrap_or_else(|| panic!("no timeline summary in {err}"));
            assert!(
                line.contains(" copies, ")
                    && line.contains("under compute")
                    && line.contains("waiting for copies"),
                "{line}"
            );
            assert!(!line.contains("not used"), "{line}");
            let copies: usize = line["streaming: ".len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(copies > 0, "{line}");
        }
        assert_eq!(resident[2], n, "{}", path.display());
        if path.ends_with(SMOLLM2) {
            assert_eq!(resident[0], 0);
            assert!(resident[1] > 0 && resident[1] < n, "{resident:?}");
        }
    }
}
