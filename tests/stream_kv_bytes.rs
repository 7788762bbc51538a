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
