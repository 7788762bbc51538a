//! Paths shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// A file under ../shared/reference.
pub fn reference(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference")
        .join(rel)
}

/// Where scripts/fetch-models.sh puts the test models.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRAIT_MODELS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/strait/models")
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// A real test model; panics with the fix when it has not been fetched.
pub fn model(file: &str) -> PathBuf {
    let path = models_dir().join(file);
    assert!(
        path.exists(),
        "test model {} not found: run scripts/fetch-models.sh first",
        path.display()
    );
    path
}

/// Runs every check of one type's reference file in ../shared/reference/quant on every kernel
/// path of this CPU and fails on any mismatch; returns the names of the checks that the scalar
/// path skipped, so that each test states which ones it allows to be missing. (A SIMD path
/// without a kernel falls back to the scalar one; its coverage is asserted by its own tests.)
pub fn check_quant(ty: strait::quant::GgmlType) -> Vec<&'static str> {
    use strait::quant::check::{check_file, Outcome};
    let path = reference(&format!("quant/{}.gguf", ty.name().to_lowercase()));
    let results = check_file(&path, &strait::quant::kernel_paths()).unwrap();
    let mut skipped = Vec::new();
    for r in &results {
        match &r.outcome {
            Outcome::Mismatch { first, max_err } => panic!(
                "{} {} {}: first mismatch {first}, max error {max_err}",
                r.ty, r.path, r.check
            ),
            Outcome::Skipped(_) if r.path == "scalar" => skipped.push(r.check),
            Outcome::Skipped(_) => {}
            Outcome::Ok { .. } => {}
        }
    }
    skipped
}
