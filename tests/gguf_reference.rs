//! The reader against files made by ggml and llama.cpp.

use std::path::PathBuf;
use strait::gguf::GgufFile;
use strait::quant::GgmlType;

fn reference(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference")
        .join(rel)
}

#[test]
fn reads_every_quant_reference_file() {
    let dir = reference("quant");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("../shared/reference/quant") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("gguf") {
            continue;
        }
        let f = GgufFile::open(&path).unwrap();
        let ty_name = f.metadata().str("reference.type").unwrap();
        let ty = GgmlType::from_name(ty_name).unwrap();
        let xq = f.require("x.q").unwrap();
        assert_eq!(xq.ty, ty, "{}", path.display());
        assert_eq!(xq.shape, vec![1024, 20]);
        assert_eq!(f.data(xq).len() as u64, ty.row_bytes(1024 * 20).unwrap());
        let x = f.require("x").unwrap();
        let first = f32::from_le_bytes(f.data(x)[..4].try_into().unwrap());
        assert!(first.is_finite());
        n += 1;
    }
    assert_eq!(n, 30);
}

#[test]
fn reads_tiny_models() {
    let f = GgufFile::open(reference("models/tiny-llama3-q3_k_m.gguf")).unwrap();
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.metadata().u32("llama.block_count").unwrap(), 4);
    assert_eq!(f.metadata().f32("llama.rope.freq_base").unwrap(), 500000.0);
    let out = f.require("output.weight").unwrap();
    assert_eq!(out.shape, vec![128, 128256]);
    assert_eq!(out.ty, GgmlType::Q8_0);
    let err = f
        .metadata()
        .u32("general.architecture")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "metadata key general.architecture: expected an integer, found STRING"
    );
}
