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

// ---------------------------------------------------------------------------------------------
// Reference files of other shapes, and malformed ones

use strait::gguf::{GgufWriter, Metadata, Value};
use strait::quant::check::{check_file, Outcome};
use strait::quant::{dequantize_row, quantize_row, scalar, vec_dot};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

/// A reference file for `ty` made with strait's own scalar kernels: `rows` rows of `n`
/// values, `yrows` activation rows. `tamper` edits the tensors (name, shape, bytes) first.
fn synthetic(
    ty: GgmlType,
    n: usize,
    rows: usize,
    yrows: usize,
    tamper: impl Fn(&mut Tensors),
) -> std::path::PathBuf {
    let k = scalar(ty).unwrap();
    let dt = k.dot_type;
    let val = |i: usize| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 13) as f32);
    let x: Vec<f32> = (0..n * rows).map(val).collect();
    let y: Vec<f32> = (0..n * yrows).map(|i| val(i + 17)).collect();
    let imatrix: Vec<f32> = (0..n).map(|i| 0.5 + (i % 5) as f32).collect();
    let rb = ty.row_bytes(n as u64).unwrap() as usize;
    let yb = dt.row_bytes(n as u64).unwrap() as usize;
    let (mut xq, mut xqi, mut xdq) = (
        vec![0u8; rb * rows],
        vec![0u8; rb * rows],
        vec![0f32; n * rows],
    );
    let mut yq = vec![0u8; yb * yrows];
    for r in 0..rows {
        let xr = &x[r * n..(r + 1) * n];
        quantize_row(ty, xr, &mut xq[r * rb..(r + 1) * rb], None).unwrap();
        quantize_row(ty, xr, &mut xqi[r * rb..(r + 1) * rb], Some(&imatrix)).unwrap();
        dequantize_row(ty, &xq[r * rb..(r + 1) * rb], &mut xdq[r * n..(r + 1) * n]).unwrap();
    }
    for r in 0..yrows {
        quantize_row(
            dt,
            &y[r * n..(r + 1) * n],
            &mut yq[r * yb..(r + 1) * yb],
            None,
        )
        .unwrap();
    }
    let mut dot = Vec::new();
    for r in 0..rows {
        for j in 0..yrows {
            let xr = &xq[r * rb..(r + 1) * rb];
            dot.push(vec_dot(ty, n, xr, &yq[j * yb..(j + 1) * yb]).unwrap());
        }
    }
    let (n, rows, yrows) = (n as u64, rows as u64, yrows as u64);
    let mut tensors = vec![
        ("x".to_string(), GgmlType::F32, vec![n, rows], f32_bytes(&x)),
        ("x.q".into(), ty, vec![n, rows], xq),
        ("x.dq".into(), GgmlType::F32, vec![n, rows], f32_bytes(&xdq)),
        (
            "imatrix".into(),
            GgmlType::F32,
            vec![n],
            f32_bytes(&imatrix),
        ),
        ("x.qi".into(), ty, vec![n, rows], xqi),
        ("y".into(), GgmlType::F32, vec![n, yrows], f32_bytes(&y)),
        ("y.q".into(), dt, vec![n, yrows], yq),
        (
            "dot".into(),
            GgmlType::F32,
            vec![yrows, rows],
            f32_bytes(&dot),
        ),
    ];
    tamper(&mut tensors);
    let mut md = Metadata::new();
    md.set("reference.type", Value::String(ty.name().into()));
    md.set("reference.vec_dot_type", Value::String(dt.name().into()));
    let mut w = GgufWriter::new(md).unwrap();
    for (name, t, shape, bytes) in tensors {
        w.add_tensor(&name, t, &shape, bytes).unwrap();
    }
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "strait-synthetic-{}-{}.gguf",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    w.write_to_path(&path).unwrap();
    path
}

#[test]
fn any_row_length_and_row_count_is_checked() {
    for (ty, n, rows, yrows) in [
        (GgmlType::Q4_1, 64, 1, 1),
        (GgmlType::Q1_0, 384, 5, 3),
        (GgmlType::NVFP4, 192, 2, 7),
        (GgmlType::IQ4NL, 32, 9, 2),
        (GgmlType::BF16, 3, 4, 2),
    ] {
        let path = synthetic(ty, n, rows, yrows, |_| {});
        let results = check_file(&path, &strait::quant::kernel_paths()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let scalar: Vec<_> = results.iter().filter(|r| r.path == "scalar").collect();
        assert_eq!(scalar.len(), 5, "{ty}: {results:?}");
        for r in scalar {
            assert!(
                matches!(r.outcome, Outcome::Ok { .. }),
                "{ty} {n}x{rows}: {r:?}"
            );
        }
    }
}

/// The tensors of a synthetic reference file: (name, type, shape, bytes).
type Tensors = Vec<(String, GgmlType, Vec<u64>, Vec<u8>)>;
type Tamper = Box<dyn Fn(&mut Tensors)>;

#[test]
fn malformed_reference_files_are_errors_naming_the_tensor() {
    let set_shape = |name: &'static str, shape: Vec<u64>| {
        move |t: &mut Tensors| {
            let e = t.iter_mut().find(|e| e.0 == name).unwrap();
            let size = e.1.row_bytes(shape.iter().product()).unwrap() as usize;
            e.2 = shape.clone();
            e.3.resize(size, 0);
        }
    };
    let cases: Vec<(Tamper, &str)> = vec![
        (
            Box::new(set_shape("x.q", vec![64, 3])),
            "x.q has shape (64, 3), expected (128, 2)",
        ),
        (
            Box::new(set_shape("x.dq", vec![128, 1])),
            "x.dq has shape (128, 1)",
        ),
        (
            Box::new(set_shape("imatrix", vec![64])),
            "imatrix has shape (64, 1)",
        ),
        (
            Box::new(set_shape("y", vec![96, 3])),
            "y has rows of 96, x rows of 128",
        ),
        (
            Box::new(set_shape("y.q", vec![128, 2])),
            "y.q has shape (128, 2), expected (128, 3)",
        ),
        (
            Box::new(set_shape("dot", vec![2, 3])),
            "dot has shape (2, 3), expected (3, 2)",
        ),
        (
            Box::new(|t: &mut Tensors| t.retain(|e| e.0 != "x.q")),
            "tensor x.q is missing",
        ),
        (
            Box::new(|t: &mut Tensors| {
                let e = t.iter_mut().find(|e| e.0 == "x.dq").unwrap();
                e.1 = GgmlType::F16;
                e.3.truncate(e.3.len() / 2);
            }),
            "x.dq is F16, expected F32",
        ),
    ];
    for (tamper, want) in cases {
        let path = synthetic(GgmlType::Q8_0, 128, 2, 3, tamper);
        let err = check_file(&path, &strait::quant::kernel_paths()).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(err.to_string().contains(want), "{err} (want {want})");
    }
}

// ---------------------------------------------------------------------------------------------
// Block layouts

/// A block's size is its type's size in the type table, and its dot type is the registry's.
fn layout<B: strait::quant::blocks::QuantBlock>() {
    let ty = B::TYPE;
    assert_eq!(std::mem::size_of::<B>(), ty.type_size(), "{ty}");
    assert_eq!(std::mem::align_of::<B>(), 1, "{ty}");
    let k = scalar(ty).unwrap();
    assert_eq!(k.ty, ty);
    assert_eq!(
        k.dot_type,
        <B::VecDot as strait::quant::blocks::QuantBlock>::TYPE,
        "{ty}"
    );
}

#[test]
fn block_layouts_agree_with_the_type_table() {
    use strait::quant::{float, fp4, iq4, legacy, ternary};
    layout::<strait::quant::blocks::F16>();
    layout::<float::BF16>();
    layout::<float::F32>();
    layout::<legacy::BlockQ4_0>();
    layout::<legacy::BlockQ4_1>();
    layout::<legacy::BlockQ5_0>();
    layout::<legacy::BlockQ5_1>();
    layout::<strait::quant::blocks::BlockQ8_0>();
    layout::<strait::quant::blocks::BlockQ8_1>();
    layout::<legacy::BlockQ1_0>();
    layout::<legacy::BlockQ2_0>();
    layout::<fp4::BlockMxfp4>();
    layout::<fp4::BlockNvfp4>();
    layout::<iq4::BlockIq4Nl>();
    layout::<iq4::BlockIq4Xs>();
    layout::<ternary::BlockTq1_0>();
    layout::<ternary::BlockTq2_0>();
    assert_eq!(legacy::QK1_0, GgmlType::Q1_0.block_size());
    assert_eq!(legacy::QK2_0, GgmlType::Q2_0.block_size());
    assert_eq!(fp4::QK_NVFP4, GgmlType::NVFP4.block_size());
}
