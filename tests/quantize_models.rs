//! Quantizing the two real test models into several mixes and reading them back. Run in
//! release mode (`cargo test --release --test quantize_models`).

mod common;

use std::path::{Path, PathBuf};
use strait::gguf::GgufFile;
use strait::quant::{self, GgmlType};
use strait::quantize::{self, Mix, Options};

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strait-qmodels-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn dequantize(f: &GgufFile, name: &str) -> Vec<f32> {
    let t = f.require(name).unwrap();
    let n = t.shape[0] as usize;
    let row = t.ty.row_bytes(n as u64).unwrap() as usize;
    let mut out = vec![0f32; t.n_elements() as usize];
    for (d, s) in out.chunks_exact_mut(n).zip(f.data(t).chunks_exact(row)) {
        if t.ty == GgmlType::F32 {
            for (x, b) in d.iter_mut().zip(s.chunks_exact(4)) {
                *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        } else {
            quant::dequantize_row(t.ty, s, d).unwrap();
        }
    }
    out
}

/// Relative RMS error a type may add to weights of this kind (ggml's quantizers stay well
/// inside these on real weights).
fn max_rel_rms(ty: GgmlType) -> f64 {
    use GgmlType as T;
    match ty {
        T::F32 => 0.0,
        T::F16 | T::BF16 => 0.005,
        T::Q8_0 => 0.01,
        T::Q6K => 0.03,
        T::Q5_0 | T::Q5_1 | T::Q5K => 0.06,
        T::Q4_0 | T::Q4_1 | T::Q4K | T::IQ4NL | T::IQ4XS => 0.13,
        _ => 0.3,
    }
}

fn rel_rms(a: &[f32], b: &[f32]) -> f64 {
    let (mut e, mut s) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        e += f64::from(x - y).powi(2);
        s += f64::from(*x).powi(2);
    }
    (e / s.max(1e-30)).sqrt()
}

/// Quantizes `model` into each mix and checks what comes back: the planned types, sizes,
/// shapes and metadata, and a few tensors within the type's error of the source.
fn quantize_into_mixes(model: &Path, name: &str, sample: &[&str]) {
    let dir = tmp_dir(name);
    let src = GgufFile::open(model).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (mix, pure) in [
        (Mix::Q8_0, false),
        (Mix::Q4KM, false),
        (Mix::Q6K, false),
        (Mix::Q4_0, true),
    ] {
        let out = dir.join(format!("{mix}-{pure}.gguf"));
        let mut opts = Options::new(mix);
        opts.select.pure = pure;
        opts.threads = threads;
        let plan = quantize::plan(&src, &opts).unwrap();
        let summary = quantize::quantize(&src, &plan, &out, &opts, &mut |_| {}).unwrap();
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.metadata().u32("general.file_type").unwrap(), mix.ftype());
        assert_eq!(f.metadata().u32("general.quantization_version").unwrap(), 2);
        assert_eq!(f.tensors().len(), src.tensors().len());
        assert_eq!(f.file_size(), summary.file_size_out);
        assert_eq!(f.n_params(), src.n_params());
        for (t, p) in f.tensors().iter().zip(&plan.tensors) {
            assert_eq!(t.name, p.name);
            assert_eq!(t.ty, p.to, "{mix} {}", t.name);
            assert_eq!(t.shape, src.require(&t.name).unwrap().shape);
            assert_eq!(Some(t.size), t.ty.row_bytes(t.n_elements()));
            if pure && t.shape.len() >= 2 && !t.name.ends_with("_norm.weight") {
                // Pure Q4_0: every quantizable tensor is Q4_0 (all rows here fit 32).
                assert_eq!(t.ty, GgmlType::Q4_0, "{}", t.name);
            }
        }
        for &n in sample {
            let t = f.require(n).unwrap();
            let err = rel_rms(&dequantize(&src, n), &dequantize(&f, n));
            let src_ty = src.require(n).unwrap().ty;
            // Requantizing to the source's own type copies the bytes.
            let bound = if src_ty == t.ty {
                0.0
            } else {
                max_rel_rms(t.ty)
            };
            assert!(
                err <= bound,
                "{mix}: {n} as {}: relative RMS error {err:.4} over {bound}",
                t.ty
            );
        }
        std::fs::remove_file(&out).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gemma3_into_mixes() {
    let model = common::model(common::GEMMA3);
    // Its own mix again: every type is kept, so the bytes are copied and the file comes out
    // identical to the one llama-quantize wrote: metadata, order, padding and data.
    let dir = tmp_dir("gemma-same");
    let out = dir.join("same.gguf");
    let src = GgufFile::open(&model).unwrap();
    let opts = Options::new(Mix::Q4KM);
    let plan = quantize::plan(&src, &opts).unwrap();
    quantize::quantize(&src, &plan, &out, &opts, &mut |_| {}).unwrap();
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&model).unwrap(),
        "Q4_K_M of the Q4_K_M file differs from it"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    quantize_into_mixes(
        &model,
        "gemma3",
        &[
            "blk.0.attn_q.weight",
            "blk.0.attn_v.weight",
            "blk.3.ffn_down.weight",
            "blk.17.attn_output.weight",
            "output_norm.weight",
        ],
    );
}

#[test]
fn smollm2_into_mixes() {
    quantize_into_mixes(
        &common::model(common::SMOLLM2),
        "smollm2",
        &[
            "blk.0.attn_q.weight",
            "blk.0.attn_v.weight",
            "blk.5.ffn_down.weight",
            "blk.29.ffn_up.weight",
            "token_embd.weight",
        ],
    );
}
