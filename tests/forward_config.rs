//! Hyperparameters read from the tiny reference models and the real models.

mod common;
use common::*;
use strait::gguf::GgufFile;
use strait::model::{Activation, Arch, Config, RopeStyle};

fn config(path: std::path::PathBuf) -> Config {
    Config::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
}

#[test]
fn tiny_models() {
    let c = config(reference("models/tiny-qwen3-q5_k_m.gguf"));
    assert_eq!(c.arch, Arch::Qwen3);
    assert_eq!((c.n_layer, c.dim, c.n_head, c.n_head_kv), (4, 128, 4, 2));
    assert_eq!(
        (c.head_dim_k, c.head_dim_v, c.n_ff, c.n_rot),
        (64, 64, 256, 64)
    );
    assert_eq!(c.rope_style, RopeStyle::Neox);
    assert!(c.qk_norm && c.tied_output && !c.qkv_bias);
    assert_eq!(c.n_vocab, 151936);
    assert_eq!(c.rope_base, 1e6);

    let c = config(reference("models/tiny-qwen2-q4_k_m.gguf"));
    assert_eq!(c.arch, Arch::Qwen2);
    assert!(c.qkv_bias && c.tied_output && !c.qk_norm);
    assert_eq!(c.head_dim_k, 32);

    let c = config(reference("models/tiny-llama3-q3_k_m.gguf"));
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!(c.rope_style, RopeStyle::Normal);
    assert!(!c.tied_output);
    assert_eq!(c.rope_base, 5e5);
    assert_eq!(c.attn_scale, 1.0 / 32f32.sqrt());
}

#[test]
fn real_models() {
    let c = config(model(SMOLLM2));
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!(
        (c.n_layer, c.dim, c.n_head, c.n_head_kv, c.n_ff),
        (30, 576, 9, 3, 1536)
    );
    assert_eq!((c.n_vocab, c.rope_base), (49152, 100000.0));
    assert!(c.tied_output);

    let c = config(model(GEMMA3));
    assert_eq!(c.arch, Arch::Gemma3);
    assert_eq!((c.n_layer, c.dim, c.n_head, c.n_head_kv), (18, 640, 4, 1));
    assert_eq!((c.head_dim_k, c.n_vocab), (256, 262144));
    assert_eq!(c.activation, Activation::GeGlu);
    assert_eq!(c.sliding_window, Some(512));
    let global: Vec<usize> = (0..c.n_layer).filter(|&il| !c.is_swa(il)).collect();
    assert_eq!(global, vec![5, 11, 17]);
    assert_eq!(c.rope_of(0), (10000.0, 1.0));
    assert_eq!(c.rope_of(5), (1e6, 1.0));
    assert_eq!(c.attn_scale, 1.0 / 16.0);
    assert_eq!(c.embed_scale, Some(640f32.sqrt()));
    assert_eq!(c.final_logit_softcap, None);
    assert!(c.tied_output && c.post_norms && c.qk_norm);
}

#[test]
fn unknown_architecture_lists_supported() {
    let e = strait::model::Arch::from_name("mamba")
        .unwrap_err()
        .to_string();
    assert!(e.contains("llama, qwen2, qwen3, gemma3"), "{e}");
}
