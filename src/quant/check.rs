//! Checks kernels against reference files made by ggml (the format of
//! `shared/reference/quant`): one GGUF file per type holding input rows `x`, their quantized
//! form `x.q`, its dequantization `x.dq`, an importance matrix and `x.qi`, activation rows `y`,
//! their dot-type form `y.q`, and the dot products `dot`.
//!
//! Every shape is checked against the others before any kernel runs, so a malformed file is an
//! error naming the tensor, never a panic.

use super::{GgmlType, Kernels};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The dot-product tolerance, relative to `|ref| + ‖x row‖·‖y row‖` (see the README of the
/// reference vectors: integer block sums are exact, only the order of float sums differs).
pub const DOT_TOLERANCE: f64 = 1e-5;

/// One kernel path: a name and its kernel table.
#[derive(Clone, Copy)]
pub struct KernelPath {
    pub name: &'static str,
    pub kernels: fn(GgmlType) -> Option<Kernels>,
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Passed; `max_err` is the largest deviation seen (ulps, bytes or scaled error).
    Ok { max_err: f64 },
    /// Failed: the first mismatch, and the largest deviation.
    Mismatch { first: String, max_err: f64 },
    /// Not run, and why (a kernel this path does not have, data the file lacks).
    Skipped(String),
}

/// One row of the report: a type, a kernel path, a check and its outcome.
#[derive(Clone, Debug)]
pub struct CheckResult {
    pub ty: GgmlType,
    pub path: &'static str,
    pub check: &'static str,
    pub outcome: Outcome,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        !matches!(self.outcome, Outcome::Mismatch { .. })
    }

    /// What `max_err` counts for this check.
    pub fn unit(&self) -> &'static str {
        match self.check {
            "dequantize" => "ulps",
            "quantize" | "quantize_imatrix" | "activation" => "bytes differ",
            "dot" => "scaled error",
            _ => "",
        }
    }
}

struct RefFile {
    f: GgufFile,
    ty: GgmlType,
    dot_ty: Option<GgmlType>,
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A tensor's bytes with its row length and row count, the bytes checked to fill them.
struct Tensor<'a> {
    data: &'a [u8],
    n: usize,
    rows: usize,
}

impl RefFile {
    fn open(path: &Path) -> Result<RefFile> {
        let f = GgufFile::open(path)?;
        let md = f.metadata();
        let name = md.str("reference.type")?;
        let ty = GgmlType::from_name(name).ok_or_else(|| {
            Error::Invalid(format!("{}: unknown reference.type {name}", path.display()))
        })?;
        let dot_ty = match md.opt_str("reference.vec_dot_type")? {
            Some(n) => Some(GgmlType::from_name(n).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: unknown reference.vec_dot_type {n}",
                    path.display()
                ))
            })?),
            None => None,
        };
        Ok(RefFile { f, ty, dot_ty })
    }

    /// A tensor, checking its type and that its bytes hold whole rows.
    fn tensor(&self, name: &str, ty: GgmlType) -> Result<Option<Tensor<'_>>> {
        let Some(t) = self.f.tensor(name) else {
            return Ok(None);
        };
        if t.ty != ty {
            return Err(Error::Invalid(format!(
                "reference tensor {name} is {}, expected {ty}",
                t.ty
            )));
        }
        let (n, rows) = (t.row_len(), t.n_rows());
        let need = ty
            .row_bytes(n)
            .and_then(|b| b.checked_mul(rows))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "reference tensor {name}: rows of {n} values are not whole {ty} blocks of {}",
                    ty.block_size()
                ))
            })?;
        let data = self.f.data(t);
        if data.len() as u64 != need || n == 0 {
            return Err(Error::Invalid(format!(
                "reference tensor {name}: {rows} rows of {n} {ty} values need {need} bytes, it has {}",
                data.len()
            )));
        }
        Ok(Some(Tensor {
            data,
            n: n as usize,
            rows: rows as usize,
        }))
    }

    /// Like [`tensor`](Self::tensor), and requires the shape (n, rows).
    fn shaped(
        &self,
        name: &str,
        ty: GgmlType,
        n: usize,
        rows: usize,
    ) -> Result<Option<Tensor<'_>>> {
        let t = self.tensor(name, ty)?;
        if let Some(t) = &t {
            if t.n != n || t.rows != rows {
                return Err(Error::Invalid(format!(
                    "reference tensor {name} has shape ({}, {}), expected ({n}, {rows})",
                    t.n, t.rows
                )));
            }
        }
        Ok(t)
    }
}

/// Runs every check of one reference file on every given kernel path.
pub fn check_file(path: &Path, paths: &[KernelPath]) -> Result<Vec<CheckResult>> {
    let r = RefFile::open(path)?;
    let ty = r.ty;
    let x = r
        .tensor("x", GgmlType::F32)?
        .ok_or_else(|| Error::MissingTensor { name: "x".into() })?;
    let (n, rows) = (x.n, x.rows);
    let x = f32s(x.data);
    let xq = r
        .shaped("x.q", ty, n, rows)?
        .ok_or_else(|| Error::MissingTensor { name: "x.q".into() })?
        .data;
    let row_q = xq.len() / rows;
    let xdq = r
        .shaped("x.dq", GgmlType::F32, n, rows)?
        .map(|t| f32s(t.data));
    let imatrix = r
        .shaped("imatrix", GgmlType::F32, n, 1)?
        .map(|t| f32s(t.data));
    let xqi = r.shaped("x.qi", ty, n, rows)?.map(|t| t.data);
    let imatrix_used =
        r.f.metadata()
            .opt_bool("reference.imatrix_used")?
            .unwrap_or(false);
    if imatrix_used && imatrix.is_none() {
        return Err(Error::MissingTensor {
            name: "imatrix".into(),
        });
    }
    // The activation side: all of y, y.q and dot, or none.
    let dot_side = match r.dot_ty {
        None => None,
        Some(dot_ty) => match r.tensor("y", GgmlType::F32)? {
            None => None,
            Some(y) => {
                if y.n != n {
                    return Err(Error::Invalid(format!(
                        "reference tensor y has rows of {}, x rows of {n}",
                        y.n
                    )));
                }
                let yrows = y.rows;
                let yq = r.shaped("y.q", dot_ty, n, yrows)?;
                let dot = r.shaped("dot", GgmlType::F32, yrows, rows)?;
                match (yq, dot) {
                    (Some(yq), Some(dot)) => {
                        Some((dot_ty, f32s(y.data), yrows, yq.data, f32s(dot.data)))
                    }
                    _ => None,
                }
            }
        },
    };

    let mut out = Vec::new();
    for p in paths {
        let k = (p.kernels)(ty);
        let mut push = |check: &'static str, outcome: Outcome| {
            out.push(CheckResult {
                ty,
                path: p.name,
                check,
                outcome,
            })
        };
        let Some(k) = k else {
            push(
                "all",
                Outcome::Skipped(format!("no {} kernels for {ty}", p.name)),
            );
            continue;
        };

        // dequantize: bit-identical or 1 ulp
        match (k.dequantize, &xdq) {
            (Some(dq), Some(want)) => {
                let mut got = vec![0f32; n * rows];
                for (src, dst) in xq.chunks_exact(row_q).zip(got.chunks_exact_mut(n)) {
                    dq(src, dst);
                }
                push("dequantize", compare_ulps(&got, want, n, 1));
            }
            (None, Some(_)) => push("dequantize", Outcome::Skipped("no dequantizer".into())),
            (_, None) => push("dequantize", Outcome::Skipped("file has no x.dq".into())),
        }

        // quantize, without and with the importance matrix
        let plain_imatrix = if imatrix_used {
            imatrix.as_deref()
        } else {
            None
        };
        match k.quantize {
            Some(q) => {
                push(
                    "quantize",
                    compare_quantized(q, &x, n, row_q, plain_imatrix, xq),
                );
                match (&imatrix, xqi) {
                    (Some(w), Some(want)) => push(
                        "quantize_imatrix",
                        compare_quantized(q, &x, n, row_q, Some(w), want),
                    ),
                    _ => push(
                        "quantize_imatrix",
                        Outcome::Skipped("file has no x.qi".into()),
                    ),
                }
            }
            None => push("quantize", Outcome::Skipped("no quantizer".into())),
        }

        // activations and the dot product
        if r.dot_ty.is_none() {
            continue;
        }
        let Some((dot_ty, y, yrows, yq, dot)) = &dot_side else {
            push("dot", Outcome::Skipped("file has no y, y.q or dot".into()));
            continue;
        };
        let (dot_ty, yrows) = (*dot_ty, *yrows);
        let row_y = yq.len() / yrows;
        match (p.kernels)(dot_ty).and_then(|dk| dk.quantize) {
            Some(q) => push("activation", compare_quantized(q, y, n, row_y, None, yq)),
            None => push(
                "activation",
                Outcome::Skipped(format!("no {dot_ty} quantizer")),
            ),
        }
        let Some(vd) = k.vec_dot else {
            push("dot", Outcome::Skipped("no vec_dot".into()));
            continue;
        };
        if k.dot_type != dot_ty {
            push(
                "dot",
                Outcome::Mismatch {
                    first: format!("dot type {} but the file uses {dot_ty}", k.dot_type),
                    max_err: f64::INFINITY,
                },
            );
            continue;
        }
        let xdq_ref = xdq.as_ref().unwrap_or(&x);
        let ynorms: Vec<f64> = y.chunks_exact(n).map(norm).collect();
        let mut first = None;
        let mut max_err = 0f64;
        for (i, xr) in xq.chunks_exact(row_q).enumerate() {
            let xnorm = norm(&xdq_ref[i * n..(i + 1) * n]);
            for (j, yr) in yq.chunks_exact(row_y).enumerate() {
                let got = vd(n, xr, yr) as f64;
                let want = dot[i * yrows + j] as f64;
                let scale = want.abs() + xnorm * ynorms[j];
                let err = (got - want).abs() / scale.max(f64::MIN_POSITIVE);
                // NaN in both is agreement; NaN in one is not.
                let err = if got.is_nan() && want.is_nan() {
                    0.0
                } else if err.is_nan() {
                    f64::INFINITY
                } else {
                    err
                };
                if err > DOT_TOLERANCE && first.is_none() {
                    first = Some(format!("x row {i}, y row {j}: {got:e} vs {want:e}"));
                }
                max_err = max_err.max(err);
            }
        }
        push("dot", outcome(first, max_err));
    }
    Ok(out)
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&a| (a as f64) * (a as f64))
        .sum::<f64>()
        .sqrt()
}

fn outcome(first: Option<String>, max_err: f64) -> Outcome {
    match first {
        None => Outcome::Ok { max_err },
        Some(first) => Outcome::Mismatch { first, max_err },
    }
}

fn ulp_distance(a: f32, b: f32) -> u64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0;
    }
    // Map the sign-magnitude bit patterns onto a monotone integer line.
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i64::from(i32::MIN) - i64::from(i)
        } else {
            i64::from(i)
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

fn compare_ulps(got: &[f32], want: &[f32], n: usize, max_ulps: u64) -> Outcome {
    let mut first = None;
    let mut max_err = 0u64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = ulp_distance(g, w);
        max_err = max_err.max(d);
        if d > max_ulps && first.is_none() {
            first = Some(format!(
                "row {}, column {}: {g:e} vs {w:e} ({d} ulps)",
                i / n,
                i % n
            ));
        }
    }
    if got.len() != want.len() && first.is_none() {
        first = Some(format!("{} values vs {}", got.len(), want.len()));
    }
    outcome(first, max_err as f64)
}

fn compare_quantized(
    q: super::QuantizeFn,
    x: &[f32],
    n: usize,
    row_bytes: usize,
    imatrix: Option<&[f32]>,
    want: &[u8],
) -> Outcome {
    let rows = x.len() / n;
    let mut got = vec![0u8; rows * row_bytes];
    for (src, dst) in x.chunks_exact(n).zip(got.chunks_exact_mut(row_bytes)) {
        q(src, dst, imatrix);
    }
    let differing = got.iter().zip(want).filter(|(a, b)| a != b).count();
    let mut first = got.iter().zip(want).position(|(a, b)| a != b).map(|i| {
        format!(
            "row {}, byte {} of {row_bytes}: {:#04x} vs {:#04x}",
            i / row_bytes,
            i % row_bytes,
            got[i],
            want[i]
        )
    });
    if got.len() != want.len() && first.is_none() {
        first = Some(format!("{} bytes vs {}", got.len(), want.len()));
    }
    outcome(first, differing as f64)
}

/// The checks of one reference file, or why it could not be read.
pub struct FileReport {
    pub file: PathBuf,
    pub results: Result<Vec<CheckResult>>,
}

impl FileReport {
    /// True when the file was read and no check found a mismatch.
    pub fn passed(&self) -> bool {
        match &self.results {
            Ok(r) => r.iter().all(CheckResult::passed),
            Err(_) => false,
        }
    }
}

/// Checks every `.gguf` file in `dir` (sorted by name) on every given kernel path.
pub fn check_dir(dir: &Path, paths: &[KernelPath]) -> Result<Vec<FileReport>> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.extension().is_some_and(|e| e == "gguf") && p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no .gguf reference files",
            dir.display()
        )));
    }
    files.sort();
    Ok(files
        .into_iter()
        .map(|file| {
            let results = check_file(&file, paths);
            FileReport { file, results }
        })
        .collect())
}

/// One line per (type, path, check): `ok` with the largest error, `MISMATCH` with the first
/// one, `skipped` with the reason; a file that could not be read is one `ERROR` line.
pub fn render_table(reports: &[FileReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<10} {:<8} {:<17} result", "type", "path", "check");
    for rep in reports {
        match &rep.results {
            Err(e) => {
                let name = rep.file.file_name().unwrap_or_default().to_string_lossy();
                let _ = writeln!(s, "{name:<10} {:<8} {:<17} ERROR: {e}", "-", "-");
            }
            Ok(results) => {
                for r in results {
                    let what = match &r.outcome {
                        Outcome::Ok { max_err } => {
                            format!("ok (max {} {})", fmt_err(*max_err), r.unit())
                        }
                        Outcome::Mismatch { first, max_err } => format!(
                            "MISMATCH at {first} (max {} {})",
                            fmt_err(*max_err),
                            r.unit()
                        ),
                        Outcome::Skipped(why) => format!("skipped: {why}"),
                    };
                    let _ = writeln!(
                        s,
                        "{:<10} {:<8} {:<17} {what}",
                        r.ty.name(),
                        r.path,
                        r.check
                    );
                }
            }
        }
    }
    s
}

fn fmt_err(e: f64) -> String {
    if e == 0.0 || (e.fract() == 0.0 && e < 1e9) {
        format!("{e}")
    } else {
        format!("{e:.1e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulp_distance_crosses_zero() {
        assert_eq!(ulp_distance(1.0, 1.0), 0);
        assert_eq!(ulp_distance(0.0, -0.0), 0);
        assert_eq!(ulp_distance(f32::from_bits(1), -f32::from_bits(1)), 2);
        assert_eq!(ulp_distance(1.0, f32::from_bits(1.0f32.to_bits() + 3)), 3);
    }

    #[test]
    fn table_lines_carry_outcomes() {
        let rep = FileReport {
            file: "q4_0.gguf".into(),
            results: Ok(vec![
                CheckResult {
                    ty: GgmlType::Q4_0,
                    path: "scalar",
                    check: "dequantize",
                    outcome: Outcome::Ok { max_err: 0.0 },
                },
                CheckResult {
                    ty: GgmlType::Q4_0,
                    path: "scalar",
                    check: "dot",
                    outcome: Outcome::Mismatch {
                        first: "x row 1, y row 2: 1 vs 2".into(),
                        max_err: 0.5,
                    },
                },
            ]),
        };
        assert!(!rep.passed());
        let t = render_table(&[rep]);
        assert!(t.contains("Q4_0       scalar   dequantize        ok (max 0 ulps)"));
        assert!(t.contains("MISMATCH at x row 1, y row 2: 1 vs 2 (max 5.0e-1 scaled error)"));
    }
}
