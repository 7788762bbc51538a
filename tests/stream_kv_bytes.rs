//! The engine's KV cache takes the bytes the memory plan gives it, layer by layer, for every
//! model: sliding-window layers (gemma3) keep the window plus one micro-batch, other layers the
//! whole context.

mod common;
use common::*;
use strait::engine::plan::{plan_placement, KvType, ModelShape, Offload, PlanRequest, Rates};
use strait::engine::{Engine, KvCache, Model, Options};
use strait::quant::GgmlType;

fn models() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = [
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

#[test]
fn engine_kv_bytes_equal_the_plans() {
    for path in models() {
        let model = Model::load(&path).unwrap();
        let shape = ModelShape::from_header(model.file.metadata(), model.file.tensors()).unwrap();
        let n_layer = model.config.n_layer;
        for (n_ctx, n_ubatch) in [(64, 16), (1024, 64), (2048, 512)] {
            for (ty, kv) in [
                (GgmlType::F16, KvType::F16),
                (GgmlType::F32, KvType::F32),
                (GgmlType::Q8_0, KvType::Q8_0),
            ] {
                let req = PlanRequest {
                    budget: u64::MAX,
                    n_ctx: n_ctx as u64,
                    n_ubatch: n_ubatch as u64,
                    kv,
                    offload: Offload::Stream,
                    rates: Rates::assumed(),
                };
                let plan = plan_placement(&shape, &req, n_layer, true).unwrap();
                let e = Engine::new(
                    &model,
                    &Options {
                        n_ctx,
                        n_ubatch,
                        kv_type: ty,
                        threads: 1,
                        ..Options::default()
                    },
                )
                .unwrap();
                let what = format!("{} n_ctx {n_ctx} ubatch {n_ubatch} {ty}", path.display());
                let per_layer: Vec<u64> = (0..n_layer)
                    .map(|il| (e.kv.k[il].len() + e.kv.v[il].len()) as u64)
                    .collect();
                assert_eq!(per_layer, plan.kv_bytes[..n_layer], "{what}");
                let total: u64 = plan.kv_bytes.iter().sum();
                assert_eq!(e.kv.allocated(), total, "{what}");
                assert_eq!(
                    KvCache::bytes(&model.config, n_ctx, n_ubatch, ty).unwrap(),
                    total,
                    "{what}"
                );
                // gemma3's sliding-window layers are rings of window + ubatch positions.
                let window = model.config.sliding_window;
                let short = e.kv.rows.iter().filter(|&&r| r < n_ctx).count();
                match window {
                    Some(w) if w + n_ubatch < n_ctx => {
                        assert!(short > 0, "{what}");
                        assert!(e.kv.rows.iter().all(|&r| r == n_ctx || r == w + n_ubatch));
                    }
                    _ => assert_eq!(short, 0, "{what}"),
                }
            }
        }
    }
}

/// Logits after a context shift on gemma3 (its sliding-window layers rings of window + 16
/// positions, wrapped) equal, bit for bit, those of an engine whose layers keep the whole
/// context, fed the same micro-batches; a shift that needs a position a ring has dropped is
/// an error.
#[test]
fn context_shift_on_rings_matches_the_whole_cache() {
    let model = Model::load(model(GEMMA3)).unwrap();
    let w = model.config.sliding_window.unwrap();
    let n_ctx = w + 96;
    let engine = |n_ubatch| {
        Engine::new(
            &model,
            &Options {
                n_ctx,
                n_ubatch,
                threads: 2,
                ..Options::default()
            },
        )
        .unwrap()
    };
    let mut ring = engine(16);
    let mut full = engine(n_ctx);
    assert!(ring.kv.rows.iter().any(|&r| r == w + 16));
    assert!(full.kv.rows.iter().all(|&r| r == n_ctx));
    let toks: Vec<u32> = (0..n_ctx + 8)
        .map(|i| (i * 7919 % 50000) as u32 + 100)
        .collect();
    let logits = |e: &mut Engine, t: &[u32]| e.eval_last(t).unwrap().to_vec();
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    for chunk in toks[..n_ctx].chunks(16) {
        assert_eq!(
            bits(logits(&mut ring, chunk)),
            bits(logits(&mut full, chunk))
        );
    }
    // Keeping the first 4: the next query's window reaches them, and the rings lost them.
    let err = ring
        .shift_context(4, (n_ctx - 4) / 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("position 0 has left it"), "{err}");
    assert_eq!(ring.n_past(), n_ctx);
    ring.shift_context(0, n_ctx / 2).unwrap();
    full.shift_context(0, n_ctx / 2).unwrap();
    for t in &toks[n_ctx..] {
        let t = std::slice::from_ref(t);
        assert_eq!(bits(logits(&mut ring, t)), bits(logits(&mut full, t)));
    }
}
