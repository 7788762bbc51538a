//! The per-tensor types of the quantization mixes against files made by llama-quantize.
//!
//! The unquantized inputs of these files are not at hand, so the inputs are derived from the
//! files themselves: the same names and shapes, every tensor F32. The selection for the
//! file's mix must give exactly the type of every tensor, and the mix must be the file's
//! `general.file_type`.

mod common;

use std::path::Path;
use strait::gguf::GgufFile;
use strait::quant::GgmlType;
use strait::quantize::select::{self, ModelInfo, SelectOptions};
use strait::quantize::Mix;

/// Selects types for the file's tensors as if they were all F32, in llama-quantize's order;
/// returns (name, expected type, selected type) for every tensor.
fn select_for(path: &Path, mix: Mix) -> Vec<(String, GgmlType, GgmlType)> {
    let f = GgufFile::open(path).unwrap();
    assert_eq!(
        f.metadata().u32("general.file_type").unwrap(),
        mix.ftype(),
        "{}: general.file_type",
        path.display()
    );
    assert_eq!(f.metadata().u32("general.quantization_version").unwrap(), 2);
    let info = ModelInfo::from_metadata(f.metadata()).unwrap();
    let tensors = f.tensors();
    let order = select::output_order(tensors.iter().map(|t| t.name.as_str()));
    let (choices, _) = select::select_all(
        order.iter().map(|&i| {
            (
                tensors[i].name.as_str(),
                tensors[i].shape.as_slice(),
                GgmlType::F32,
            )
        }),
        &info,
        &SelectOptions::new(mix),
    )
    .unwrap();
    order
        .iter()
        .zip(&choices)
        .map(|(&i, c)| (tensors[i].name.clone(), tensors[i].ty, c.ty))
        .collect()
}

fn assert_all_match(path: &Path, mix: Mix) -> usize {
    let got = select_for(path, mix);
    let wrong: Vec<String> = got
        .iter()
        .filter(|(_, want, have)| want != have)
        .map(|(n, want, have)| format!("{n}: file {want}, selected {have}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{}:\n{}",
        path.display(),
        wrong.join("\n")
    );
    got.len()
}

/// The files made by today's llama-quantize also have its tensor order.
fn assert_llama_order(path: &Path) {
    let f = GgufFile::open(path).unwrap();
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    let order = select::output_order(names.iter().copied());
    let sorted: Vec<&str> = order.iter().map(|&i| names[i]).collect();
    assert_eq!(sorted, names);
}

#[test]
fn tiny_llama3_q3_k_m() {
    let p = common::reference("models/tiny-llama3-q3_k_m.gguf");
    assert_eq!(assert_all_match(&p, Mix::Q3KM), 39);
    assert_llama_order(&p);
    // attn_v: Q5_K for the first two (falling back to Q5_1 at 128 columns), then Q4_K -> Q5_0.
    let got = select_for(&p, Mix::Q3KM);
    let ty = |n: &str| got.iter().find(|t| t.0 == n).unwrap().2;
    assert_eq!(ty("blk.1.attn_v.weight"), GgmlType::Q5_1);
    assert_eq!(ty("blk.2.attn_v.weight"), GgmlType::Q5_0);
    assert_eq!(ty("output.weight"), GgmlType::Q8_0);
    assert_eq!(ty("token_embd.weight"), GgmlType::Q4_0);
}

#[test]
fn tiny_llamaspm_q2_k() {
    let p = common::reference("models/tiny-llamaspm-q2_k.gguf");
    assert_eq!(assert_all_match(&p, Mix::Q2K), 39);
    assert_llama_order(&p);
}

#[test]
fn tiny_qwen2_q4_k_m() {
    let p = common::reference("models/tiny-qwen2-q4_k_m.gguf");
    assert_eq!(assert_all_match(&p, Mix::Q4KM), 50);
    assert_llama_order(&p);
}

#[test]
fn tiny_qwen3_q5_k_m() {
    let p = common::reference("models/tiny-qwen3-q5_k_m.gguf");
    assert_eq!(assert_all_match(&p, Mix::Q5KM), 46);
    assert_llama_order(&p);
}

#[test]
fn gemma3_q4_k_m() {
    let p = common::model(common::GEMMA3);
    assert_eq!(assert_all_match(&p, Mix::Q4KM), 236);
    assert_llama_order(&p);
}

#[test]
fn smollm2_q4_1() {
    // Made by an older llama-quantize: same types, another tensor order.
    let p = common::model(common::SMOLLM2);
    assert_eq!(assert_all_match(&p, Mix::Q4_1), 272);
}

/// A synthetic model description: `n_layer` blocks of a llama with these dimensions.
fn synthetic(
    n_layer: u32,
    dim: u64,
    ffn: u64,
    n_head: u32,
    n_head_kv: u32,
) -> (ModelInfo, Vec<(String, Vec<u64>)>) {
    let info = ModelInfo {
        arch: "llama".into(),
        n_layer,
        n_head,
        n_head_kv,
        n_expert: 0,
        is_70b: n_layer == 80 && n_head != n_head_kv,
    };
    let kv = dim / u64::from(n_head / n_head_kv);
    let mut t = vec![
        ("output.weight".to_string(), vec![dim, 32000]),
        ("output_norm.weight".to_string(), vec![dim]),
        ("token_embd.weight".to_string(), vec![dim, 32000]),
    ];
    for l in 0..n_layer {
        for (n, s) in [
            ("attn_k.weight", vec![dim, kv]),
            ("attn_norm.weight", vec![dim]),
            ("attn_output.weight", vec![dim, dim]),
            ("attn_q.weight", vec![dim, dim]),
            ("attn_v.weight", vec![dim, kv]),
            ("ffn_down.weight", vec![ffn, dim]),
            ("ffn_gate.weight", vec![dim, ffn]),
            ("ffn_norm.weight", vec![dim]),
            ("ffn_up.weight", vec![dim, ffn]),
        ] {
            t.push((format!("blk.{l}.{n}"), s));
        }
    }
    (info, t)
}

fn types_of(
    info: &ModelInfo,
    tensors: &[(String, Vec<u64>)],
    opts: &SelectOptions,
) -> std::collections::HashMap<String, GgmlType> {
    let (choices, _) = select::select_all(
        tensors
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice(), GgmlType::F16)),
        info,
        opts,
    )
    .unwrap();
    tensors
        .iter()
        .zip(choices)
        .map(|((n, _), c)| (n.clone(), c.ty))
        .collect()
}

#[test]
fn mix_rules_on_a_32_layer_llama() {
    use GgmlType as T;
    let (info, t) = synthetic(32, 4096, 14336, 32, 8);
    let ty = |mix, l: u32, n: &str| {
        let m = types_of(&info, &t, &SelectOptions::new(mix));
        if n == "output.weight" || n == "token_embd.weight" {
            m[n]
        } else {
            m[&format!("blk.{l}.{n}")]
        }
    };
    // Norms stay as they are (F16 here), the output goes to Q6_K.
    assert_eq!(ty(Mix::Q4KM, 0, "attn_norm.weight"), T::F16);
    assert_eq!(ty(Mix::Q4KM, 0, "output.weight"), T::Q6K);
    assert_eq!(ty(Mix::Q4_0, 0, "output.weight"), T::Q6K);
    assert_eq!(ty(Mix::Q8_0, 0, "output.weight"), T::Q8_0);
    assert_eq!(ty(Mix::Q4KM, 0, "token_embd.weight"), T::Q4K);
    // Q4_K_M: use_more_bits layers (0-3, 28-31, every third between) get Q6_K.
    assert_eq!(ty(Mix::Q4KM, 3, "ffn_down.weight"), T::Q6K);
    assert_eq!(ty(Mix::Q4KM, 4, "ffn_down.weight"), T::Q4K);
    assert_eq!(ty(Mix::Q4KM, 6, "attn_v.weight"), T::Q6K);
    assert_eq!(ty(Mix::Q4KM, 28, "attn_v.weight"), T::Q6K);
    // Q4_K_S: first four attn_v and the first eighth of ffn_down get Q5_K.
    assert_eq!(ty(Mix::Q4KS, 3, "attn_v.weight"), T::Q5K);
    assert_eq!(ty(Mix::Q4KS, 4, "attn_v.weight"), T::Q4K);
    assert_eq!(ty(Mix::Q4KS, 3, "ffn_down.weight"), T::Q5K);
    // Q2_K with GQA 4: attn_v Q4_K, ffn_down and attn_output Q3_K.
    assert_eq!(ty(Mix::Q2K, 9, "attn_v.weight"), T::Q4K);
    assert_eq!(ty(Mix::Q2K, 9, "ffn_down.weight"), T::Q3K);
    assert_eq!(ty(Mix::Q2K, 9, "attn_output.weight"), T::Q3K);
    // Q3_K_M: ffn_down of the first 1/16 is Q5_K, then Q4_K; Q3_K_L: attn_output Q5_K.
    assert_eq!(ty(Mix::Q3KM, 1, "ffn_down.weight"), T::Q5K);
    assert_eq!(ty(Mix::Q3KM, 2, "ffn_down.weight"), T::Q4K);
    assert_eq!(ty(Mix::Q3KL, 20, "attn_output.weight"), T::Q5K);
    assert_eq!(ty(Mix::Q3KS, 20, "attn_output.weight"), T::Q3K);
    // IQ4_XS with GQA 4: attn_v Q5_K; ffn_down of the first eighth Q5_K without an imatrix.
    assert_eq!(ty(Mix::IQ4XS, 20, "attn_v.weight"), T::Q5K);
    assert_eq!(ty(Mix::IQ4XS, 0, "ffn_down.weight"), T::Q5K);
    assert_eq!(ty(Mix::IQ4XS, 20, "ffn_up.weight"), T::IQ4XS);
    // Q6_K everywhere, output included.
    assert_eq!(ty(Mix::Q6K, 5, "attn_v.weight"), T::Q6K);
    assert_eq!(ty(Mix::Q6K, 0, "output.weight"), T::Q6K);
    // F16 / F32: every quantizable tensor, no mix rules.
    assert_eq!(ty(Mix::F32, 0, "output.weight"), T::F32);
    assert_eq!(ty(Mix::BF16, 0, "attn_v.weight"), T::BF16);
}

#[test]
fn pure_imatrix_and_overrides() {
    use GgmlType as T;
    let (info, t) = synthetic(32, 4096, 14336, 32, 8);
    let mut o = SelectOptions::new(Mix::Q4KM);
    o.pure = true;
    let m = types_of(&info, &t, &o);
    assert_eq!(m["output.weight"], T::Q4K);
    assert_eq!(m["blk.0.ffn_down.weight"], T::Q4K);
    assert_eq!(m["blk.0.ffn_norm.weight"], T::F16);
    // Q4_0 with an imatrix guards the first eighth of ffn_down with Q4_1.
    let mut o = SelectOptions::new(Mix::Q4_0);
    o.has_imatrix = true;
    let m = types_of(&info, &t, &o);
    assert_eq!(m["blk.3.ffn_down.weight"], T::Q4_1);
    assert_eq!(m["blk.4.ffn_down.weight"], T::Q4_0);
    let mut o = SelectOptions::new(Mix::Q4KM);
    o.quantize_output = false;
    o.token_embd_type = Some(T::Q8_0);
    let m = types_of(&info, &t, &o);
    assert_eq!(m["output.weight"], T::F16);
    assert_eq!(m["token_embd.weight"], T::Q8_0);
}

#[test]
fn seventy_b_and_experts() {
    use GgmlType as T;
    let (info, t) = synthetic(80, 8192, 28672, 64, 8);
    assert!(info.is_70b);
    let m = types_of(&info, &t, &SelectOptions::new(Mix::Q3KM));
    // Q3_K_M gives attn_v Q4_K after the first two; the 70B rule lifts it to Q5_K.
    assert_eq!(m["blk.10.attn_v.weight"], T::Q5K);
    let mut info8 = info.clone();
    info8.is_70b = false;
    info8.n_expert = 8;
    let mut t8 = t.clone();
    t8.push(("blk.5.ffn_down_exps.weight".into(), vec![28672, 8192, 8]));
    let m = types_of(&info8, &t8, &SelectOptions::new(Mix::Q4KM));
    assert_eq!(m["blk.10.attn_v.weight"], T::Q8_0);
    assert_eq!(m["blk.10.attn_k.weight"], T::Q8_0);
    let m = types_of(&info8, &t8, &SelectOptions::new(Mix::MXFP4Moe));
    assert_eq!(m["blk.5.ffn_down_exps.weight"], T::MXFP4);
    assert_eq!(m["blk.5.ffn_down.weight"], T::Q8_0);
    assert_eq!(m["token_embd.weight"], T::Q8_0);
}

#[test]
fn rows_that_fit_no_type_are_an_error() {
    let info = ModelInfo {
        arch: "llama".into(),
        n_layer: 1,
        n_head: 1,
        n_head_kv: 1,
        n_expert: 0,
        is_70b: false,
    };
    let shape = [40u64, 8];
    let mut c = select::Counters::new(["blk.0.attn_q.weight"], &info);
    let e = select::select_type(
        "blk.0.attn_q.weight",
        &shape,
        GgmlType::F32,
        &info,
        &SelectOptions::new(Mix::Q8_0),
        &mut c,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("40") && e.contains("Q8_0"), "{e}");
    // Q4_K has a fallback chain: Q5_0 does not fit 40 either, so F16.
    let ch = select::select_type(
        "blk.0.attn_q.weight",
        &shape,
        GgmlType::F32,
        &info,
        &SelectOptions::new(Mix::Q4KM),
        &mut c,
    )
    .unwrap();
    assert_eq!(ch.ty, GgmlType::F16);
    assert_eq!(ch.fallback_from, Some(GgmlType::Q4K));
}
