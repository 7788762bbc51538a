//! Every kernel of the types in float, legacy, fp4, iq4 and ternary against ggml's reference
//! vectors in ../shared/reference/quant, on every kernel path this CPU runs.

mod common;

use common::check_quant;
use strait::quant::GgmlType;

#[test]
fn f32() {
    assert_eq!(
        check_quant(GgmlType::F32),
        ["dequantize", "quantize_imatrix"]
    );
}

#[test]
fn f16() {
    assert_eq!(check_quant(GgmlType::F16), ["quantize_imatrix"]);
}

#[test]
fn bf16() {
    assert_eq!(check_quant(GgmlType::BF16), ["quantize_imatrix"]);
}

#[test]
fn q4_0() {
    assert_eq!(check_quant(GgmlType::Q4_0), Vec::<&str>::new());
}

#[test]
fn q4_1() {
    assert_eq!(check_quant(GgmlType::Q4_1), Vec::<&str>::new());
}

#[test]
fn q5_0() {
    assert_eq!(check_quant(GgmlType::Q5_0), Vec::<&str>::new());
}

#[test]
fn q5_1() {
    assert_eq!(check_quant(GgmlType::Q5_1), Vec::<&str>::new());
}

#[test]
fn q8_0() {
    assert_eq!(check_quant(GgmlType::Q8_0), Vec::<&str>::new());
}

#[test]
fn q8_1() {
    // A dot type only: ggml has no Q8_1 dequantizer and no importance-matrix quantizer.
    assert_eq!(
        check_quant(GgmlType::Q8_1),
        ["dequantize", "quantize_imatrix"]
    );
}

#[test]
fn q1_0() {
    assert_eq!(check_quant(GgmlType::Q1_0), Vec::<&str>::new());
}

#[test]
fn q2_0() {
    assert_eq!(check_quant(GgmlType::Q2_0), Vec::<&str>::new());
}

#[test]
fn mxfp4() {
    assert_eq!(check_quant(GgmlType::MXFP4), Vec::<&str>::new());
}

#[test]
fn nvfp4() {
    assert_eq!(check_quant(GgmlType::NVFP4), Vec::<&str>::new());
}

/// IQ4_XS, TQ1_0 and TQ2_0 take Q8_K activations, whose quantizer belongs to the k-quants:
/// where it is missing the activation check is skipped, and only then.
fn without_q8k() -> Vec<&'static str> {
    match strait::quant::scalar(GgmlType::Q8K).and_then(|k| k.quantize) {
        Some(_) => vec![],
        None => vec!["activation"],
    }
}

#[test]
fn iq4_nl() {
    assert_eq!(check_quant(GgmlType::IQ4NL), Vec::<&str>::new());
}

#[test]
fn iq4_xs() {
    assert_eq!(check_quant(GgmlType::IQ4XS), without_q8k());
}

#[test]
fn tq1_0() {
    assert_eq!(check_quant(GgmlType::TQ1_0), without_q8k());
}

#[test]
fn tq2_0() {
    assert_eq!(check_quant(GgmlType::TQ2_0), without_q8k());
}

// ---------------------------------------------------------------------------------------------
// `strait check-reference DIR`

use std::path::Path;
use std::process::{Command, Output};

fn check_reference(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strait"))
        .arg("check-reference")
        .arg(dir)
        .output()
        .unwrap()
}

/// The result column of each (type, path, check) line of the table.
fn table(out: &Output) -> Vec<(String, String, String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let mut f = l.split_whitespace();
            let (ty, path, check) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            let rest: Vec<&str> = f.collect();
            (ty.into(), path.into(), check.into(), rest.join(" "))
        })
        .collect()
}

/// The types this branch implements, with the checks their files cannot have.
fn own_types() -> Vec<(GgmlType, Vec<&'static str>)> {
    use GgmlType::*;
    let none = Vec::new;
    vec![
        (F32, vec!["dequantize", "quantize_imatrix"]),
        (F16, vec!["quantize_imatrix"]),
        (BF16, vec!["quantize_imatrix"]),
        (Q4_0, none()),
        (Q4_1, none()),
        (Q5_0, none()),
        (Q5_1, none()),
        (Q8_0, none()),
        (Q8_1, vec!["dequantize", "quantize_imatrix"]),
        (Q1_0, none()),
        (Q2_0, none()),
        (MXFP4, none()),
        (NVFP4, none()),
        (IQ4NL, none()),
        (IQ4XS, without_q8k()),
        (TQ1_0, without_q8k()),
        (TQ2_0, without_q8k()),
    ]
}

#[test]
fn check_reference_reports_every_check_of_every_file() {
    let dir = common::reference("quant");
    let out = check_reference(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let rows = table(&out);
    for (ty, may_skip) in own_types() {
        // The scalar path is the specification: all of it runs. Faster paths fall back to it
        // where they have no kernel of their own, so they may skip.
        let mine: Vec<_> = rows
            .iter()
            .filter(|r| r.0 == ty.name() && r.1 == "scalar")
            .collect();
        let checks: Vec<&str> = mine.iter().map(|r| r.2.as_str()).collect();
        let mut want = vec!["dequantize", "quantize", "quantize_imatrix"];
        if ty != GgmlType::Q8_1 {
            want.extend(["activation", "dot"]);
        }
        assert_eq!(checks, want, "{ty}");
        for r in mine {
            if may_skip.contains(&r.2.as_str()) {
                assert!(r.3.starts_with("skipped: "), "{r:?}");
            } else {
                assert!(r.3.starts_with("ok (max "), "{r:?}");
            }
        }
    }
    // Every file is in the table, and a type this branch lacks is skipped, not failed.
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "gguf")
        })
        .count();
    let mut types: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    types.dedup();
    assert_eq!(types.len(), files);
    assert!(rows
        .iter()
        .all(|r| r.3.starts_with("ok (max ") || r.3.starts_with("skipped: ")));
    let paths: Vec<&str> = strait::quant::kernel_paths()
        .iter()
        .map(|p| p.name)
        .collect();
    for ty in &types {
        let mut seen: Vec<&str> = rows
            .iter()
            .filter(|r| r.0 == *ty)
            .map(|r| r.1.as_str())
            .collect();
        seen.dedup();
        assert_eq!(seen, paths, "{ty}");
    }
}

#[test]
fn check_reference_fails_on_a_mismatch_and_on_a_bad_file() {
    let tmp = std::env::temp_dir().join(format!("strait-check-reference-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // Q4_0 with one quantized byte of x.q flipped: dequantize, quantize and dot fail.
    let src = common::reference("quant/q4_0.gguf");
    let mut bytes = std::fs::read(&src).unwrap();
    let f = strait::gguf::GgufFile::open(&src).unwrap();
    let xq = f.data(f.tensor("x.q").unwrap());
    let at = bytes.windows(64).position(|w| w == &xq[..64]).unwrap() + 40;
    bytes[at] ^= 0x11;
    std::fs::write(tmp.join("q4_0.gguf"), &bytes).unwrap();
    std::fs::write(tmp.join("broken.gguf"), b"GGUF but not really").unwrap();

    let out = check_reference(&tmp);
    assert_eq!(out.status.code(), Some(1));
    let rows = table(&out);
    let result = |check: &str| {
        rows.iter()
            .find(|r| r.0 == "Q4_0" && r.1 == "scalar" && r.2 == check)
            .map(|r| r.3.clone())
            .unwrap()
    };
    assert!(
        result("dequantize").starts_with("MISMATCH at row 0, column "),
        "{rows:?}"
    );
    assert!(
        result("quantize").starts_with("MISMATCH at row 0, byte 40 of 576"),
        "{rows:?}"
    );
    assert!(result("quantize_imatrix").starts_with("ok"), "{rows:?}");
    assert!(
        result("dot").starts_with("MISMATCH at x row 0, y row 0"),
        "{rows:?}"
    );
    assert!(rows
        .iter()
        .any(|r| r.0 == "broken.gguf" && r.3.starts_with("ERROR: ")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: 2 of 2 reference files failed"),
        "{stderr}"
    );

    // A directory without reference files, and one that does not exist, are errors.
    std::fs::remove_file(tmp.join("q4_0.gguf")).unwrap();
    std::fs::remove_file(tmp.join("broken.gguf")).unwrap();
    let out = check_reference(&tmp);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no .gguf reference files"));
    std::fs::remove_dir(&tmp).unwrap();
    let out = check_reference(&tmp);
    assert_eq!(out.status.code(), Some(1));
}
