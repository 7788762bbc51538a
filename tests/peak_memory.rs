//! The buffers of a forward pass are sized by the batch a layer processes at a time, not by
//! one buffer per tensor of the whole micro-batch; and a pass that goes through each layer in
//! parts computes exactly what smaller passes compute.

mod common;
use common::*;
use strait::engine::forward::LAYER_ROWS;
use strait::engine::{Engine, Model, Options, Outputs};

fn opts(n_ctx: usize, n_ubatch: usize) -> Options {
    Options {
        n_ctx,
        n_ubatch,
        threads: 2,
        ..Options::default()
    }
}

/// Bytes of a state that kept one buffer per tensor for every token of the micro-batch
/// (x, xb, xb2, q, k, v, attention output head- and token-major, gate, up, RoPE rows).
fn one_buffer_per_tensor(c: &strait::model::Config, n_batch: usize) -> u64 {
    let ad = c.n_head * c.head_dim_v;
    let per_token = 3 * c.dim + c.q_dim() + c.k_dim() + c.v_dim() + 2 * ad + 2 * c.n_ff + c.n_rot;
    (n_batch * per_token * 4) as u64
}

#[test]
fn state_bytes_follow_the_rows_a_layer_takes() {
    // (model, bytes of the state at -c 2048 -b 512 are below this)
    for (file, bound) in [(SMOLLM2, 6_500_000), (GEMMA3, 8_250_000)] {
        let model = Model::load(model(file)).unwrap();
        let c = &model.config;
        let e = Engine::new(&model, &opts(2048, 512)).unwrap();
        let st = &e.state;
        assert_eq!((st.n_batch, st.n_part, st.n_out), (512, LAYER_ROWS, 1));
        let got = st.allocated();
        assert!(got < bound, "{file}: {got} bytes of buffers");
        // At least the per-tensor buffers' excess over the arena is saved.
        let old = one_buffer_per_tensor(c, 512);
        assert!(
            got * 2 < old,
            "{file}: {got} bytes, one buffer per tensor {old}"
        );
        // x holds the micro-batch, the arena the part: together within the total.
        let rows = (512 * c.dim + LAYER_ROWS * strait::engine::State::arena_width(c)) as u64 * 4;
        assert!(rows <= got, "{file}: {rows} of {got}");

        // A smaller micro-batch: everything that scales with it shrinks.
        let small = Engine::new(&model, &opts(2048, 64)).unwrap();
        assert_eq!((small.state.n_batch, small.state.n_part), (64, 64));
        assert!(small.state.allocated() < got);
        // A context shorter than the micro-batch bounds it.
        let short = Engine::new(&model, &opts(100, 512)).unwrap();
        assert_eq!((short.state.n_batch, short.state.n_part), (100, 100));
    }
}

/// Token ids spread over the vocabulary, away from the special ids at its start.
fn tokens(n: usize, n_vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| (1000 + (i * 7919) % (n_vocab - 2000)) as u32)
        .collect()
}

#[test]
fn a_pass_in_parts_gives_the_logits_of_smaller_passes() {
    // (model, tokens, micro-batch split into parts). Gemma 3 with passes of 300 in parts of
    // 150: its sliding-window layers keep 512 + 300 positions, so the ring wraps inside a part.
    for (file, n, n_ubatch) in [(SMOLLM2, 300, 512), (GEMMA3, 900, 300)] {
        let model = Model::load(model(file)).unwrap();
        let toks = tokens(n, model.config.n_vocab);
        let mut big = Engine::new(&model, &opts(1024, n_ubatch)).unwrap();
        assert!(big.state.n_part < n_ubatch.min(n));
        let mut a = Vec::new();
        big.eval(&toks, Outputs::Last, |_, l| a = l.to_vec())
            .unwrap();
        // 100 per pass: never split.
        let mut small = Engine::new(&model, &opts(1024, 100)).unwrap();
        assert_eq!(small.state.n_part, 100);
        let mut b = Vec::new();
        small
            .eval(&toks, Outputs::Last, |_, l| b = l.to_vec())
            .unwrap();
        assert_eq!(a.len(), model.config.n_vocab);
        assert!(a.iter().all(|v| v.is_finite()));
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff == 0.0, "{file}: logits differ by up to {diff}");
    }
}
