//! The real forward pass through the streaming executor on the host device: logits identical,
//! bit for bit, to the all-in-memory engine for every number of resident layers, with the
//! other layers streamed through the slots or computed from the mapped file; the schedule
//! checked on the timeline and the arena within the budget.

mod common;
use common::*;
use strait::engine::plan::{plan_placement, KvType, ModelShape, Offload, PlanRequest, Rates};
use strait::engine::stream::{eval_streamed, file_sources, with_host_device, Device, Executor};
use strait::engine::{Engine, Model, Options, Outputs};

const PROMPT: usize = 10;
const DECODE: usize = 3;

fn tokens(n_vocab: usize) -> Vec<u32> {
    (0..PROMPT + DECODE)
        .map(|i| ((i * 7919 + 13) % n_vocab) as u32)
        .collect()
}

fn options() -> Options {
    Options {
        n_ctx: 32,
        n_ubatch: 4,
        all_logits: true,
        threads: 0,
        ..Options::default()
    }
}

/// Logits of a prompt (every position, in ubatches of 4) and then of single decoded tokens.
fn run_engine(model: &Model) -> Vec<Vec<f32>> {
    let mut e = Engine::new(model, &options()).unwrap();
    let toks = tokens(model.config.n_vocab);
    let mut out = Vec::new();
    e.eval(&toks[..PROMPT], Outputs::All, |_, l| out.push(l.to_vec()))
        .unwrap();
    for t in &toks[PROMPT..] {
        e.eval(std::slice::from_ref(t), Outputs::Last, |_, l| {
            out.push(l.to_vec())
        })
        .unwrap();
    }
    out
}

fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
    v.iter()
        .map(|r| r.iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// Runs the same sequence through the executor with `resident` layers and returns the logits.
fn run_streamed(
    model: &Model,
    shape: &ModelShape,
    resident: usize,
    head: bool,
    offload: Offload,
) -> Vec<Vec<f32>> {
    let req = |budget| PlanRequest {
        budget,
        n_ctx: 32,
        n_ubatch: 4,
        kv: KvType::F16,
        offload,
        rates: Rates::assumed(),
    };
    let free = plan_placement(shape, &req(u64::MAX), resident, head).unwrap();
    // Not one byte to spare.
    let plan = plan_placement(shape, &req(free.device_total), resident, head).unwrap();
    let sources = file_sources(&plan, &model.file).unwrap();
    let mut e = Engine::new(model, &options()).unwrap();
    let toks = tokens(model.config.n_vocab);
    with_host_device(|dev| {
        let mut exec = Executor::new(dev, &plan, sources).unwrap();
        let mut out = Vec::new();
        eval_streamed(&mut e, &mut exec, &toks[..PROMPT], Outputs::All, |_, l| {
            out.push(l.to_vec())
        })
        .unwrap();
        for t in &toks[PROMPT..] {
            eval_streamed(
                &mut e,
                &mut exec,
                std::slice::from_ref(t),
                Outputs::Last,
                |_, l| out.push(l.to_vec()),
            )
            .unwrap();
        }
        let tl = exec.device().timeline();
        let bad = tl.check();
        assert!(bad.is_empty(), "{resident} resident: {bad:#?}");
        assert!(exec.device().high_water() <= plan.budget);
        // 3 prompt ubatches and 3 decoded tokens: 6 passes over every streamed unit.
        let streamed = plan
            .placement
            .iter()
            .filter(|p| **p == strait::engine::plan::Place::Stream)
            .count();
        let resident_units = plan
            .placement
            .iter()
            .filter(|p| **p == strait::engine::plan::Place::Device)
            .count();
        assert_eq!(tl.copies().count(), resident_units + 6 * streamed);
        out
    })
}

/// Every placement of `configs` (resident layers, head on the device, offload mode) gives the
/// engine's logits bit for bit.
fn check_model(path: std::path::PathBuf, configs: &[(usize, bool, Offload)]) {
    let model = Model::load(&path).unwrap();
    let shape = ModelShape::from_header(model.file.metadata(), model.file.tensors()).unwrap();
    let reference = bits(&run_engine(&model));
    assert_eq!(reference.len(), PROMPT + DECODE);
    for &(k, head, offload) in configs {
        assert!(k <= shape.n_layer());
        let got = bits(&run_streamed(&model, &shape, k, head, offload));
        assert!(
            got == reference,
            "{}: {k} resident layers, head on device {head}, {offload:?}: logits differ",
            path.display()
        );
    }
}

/// For each resident count: streamed with the head streamed and resident, and on the CPU.
fn all_modes(residents: impl IntoIterator<Item = usize>) -> Vec<(usize, bool, Offload)> {
    residents
        .into_iter()
        .flat_map(|k| {
            [
                (k, false, Offload::Stream),
                (k, true, Offload::Stream),
                (k, k % 2 == 0, Offload::Cpu),
            ]
        })
        .collect()
}

#[test]
fn tiny_models_every_resident_count() {
    for name in [
        "tiny-llama3-q3_k_m",
        "tiny-qwen2-q4_k_m",
        "tiny-qwen3-q5_k_m",
        "tiny-llamaspm-q2_k",
    ] {
        check_model(reference(&format!("models/{name}.gguf")), &all_modes(0..=4));
    }
}

#[test]
fn smollm2_streamed() {
    // 30 layers of Q4_1 and Q8_0, tied output: every resident count, streamed, the head
    // resident at even counts; and the CPU path at a few.
    let mut configs: Vec<_> = (0..=30).map(|k| (k, k % 2 == 0, Offload::Stream)).collect();
    configs.extend([
        (0, false, Offload::Cpu),
        (17, true, Offload::Cpu),
        (30, false, Offload::Cpu),
    ]);
    check_model(model(SMOLLM2), &configs);
}

#[test]
fn gemma3_streamed() {
    // 18 layers; the real model is slow on scalar kernels, so a spread of resident counts.
    check_model(model(GEMMA3), &all_modes([0, 9, 18]));
}
