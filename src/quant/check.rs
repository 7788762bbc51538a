//! Checks kernels against reference files made by ggml (the format of
//! `shared/reference/quant`): one GGUF file per type holding input rows `x`, their quantized
//! form `x.q`, its dequantization `x.dq`, an importance matrix and `x.qi`, activation rows `y`,
//! their dot-type form `y.q`, and the dot products `dot`.

use super::{GgmlType, Kernels};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use std::path::Path;

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

    /// (data, row length, rows) of a tensor, checking its type.
    fn tensor(&self, name: &str, ty: GgmlType) -> Result<Option<(&[u8], usize, usize)>> {
        let Some(t) = self.f.tensor(name) else {
            return Ok(None);
        };
        if t.ty != ty {
            return Err(Error::Invalid(format!(
                "reference tensor {name} is {}, expected {ty}",
                t.ty
            )));
        }
        Ok(Some((
            self.f.data(t),
            t.row_len() as usize,
            t.n_rows() as usize,
        )))
    }
}

/// Runs every check of one reference file on every given kernel path.
pub fn check_file(path: &Path, paths: &[KernelPath]) -> Result<Vec<CheckResult>> {
    let r = RefFile::open(path)?;
    let ty = r.ty;
    let (x, n, rows) = r
        .tensor("x", GgmlType::F32)?
        .ok_or_else(|| Error::MissingTensor { name: "x".into() })?;
    let x = f32s(x);
    let (xq, _, _) = r
        .tensor("x.q", ty)?
        .ok_or_else(|| Error::MissingTensor { name: "x.q".into() })?;
    let row_q = ty.row_bytes(n as u64).ok_or_else(|| {
        Error::Invalid(format!(
            "row length {n} is not a multiple of the {ty} block"
        ))
    })? as usize;
    let xdq = r.tensor("x.dq", GgmlType::F32)?.map(|(b, _, _)| f32s(b));
    let imatrix = r.tensor("imatrix", GgmlType::F32)?.map(|(b, _, _)| f32s(b));
    let xqi = r.tensor("x.qi", ty)?.map(|(b, _, _)| b);
    let imatrix_used =
        r.f.metadata()
            .opt_bool("reference.imatrix_used")?
            .unwrap_or(false);

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
        let Some(dot_ty) = r.dot_ty else { continue };
        let (Some((y, yn, yrows)), Some((yq, _, _)), Some((dot, _, _))) = (
            r.tensor("y", GgmlType::F32)?,
            r.tensor("y.q", dot_ty)?,
            r.tensor("dot", GgmlType::F32)?,
        ) else {
            push("dot", Outcome::Skipped("file has no y, y.q or dot".into()));
            continue;
        };
        let y = f32s(y);
        let row_y = dot_ty.row_bytes(yn as u64).unwrap_or(0) as usize;
        match (p.kernels)(dot_ty).and_then(|dk| dk.quantize) {
            Some(q) => push("activation", compare_quantized(q, &y, yn, row_y, None, yq)),
            None => push(
                "activation",
                Outcome::Skipped(format!("no {dot_ty} quantizer")),
            ),
        }
        let Some(vd) = k.vec_dot else {
            push("dot", Outcome::Skipped("no vec_dot".into()));
            continue;
        };
        if k.dot_type != dot_ty || yn != n || row_y == 0 {
            push(
                "dot",
                Outcome::Mismatch {
                    first: format!("dot type {} but the file uses {dot_ty}", k.dot_type),
                    max_err: f64::INFINITY,
                },
            );
            continue;
        }
        let dot = f32s(dot);
        let xdq_ref = xdq.clone().unwrap_or_else(|| x.clone());
        let mut first = None;
        let mut max_err = 0f64;
        for i in 0..rows {
            let xr = &xq[i * row_q..(i + 1) * row_q];
            let xnorm = norm(&xdq_ref[i * n..(i + 1) * n]);
            for j in 0..yrows {
                let got = vd(n, xr, &yq[j * row_y..(j + 1) * row_y]) as f64;
                let want = dot[i * yrows + j] as f64;
                let scale = want.abs() + xnorm * norm(&y[j * n..(j + 1) * n]);
                let err = (got - want).abs() / scale.max(f64::MIN_POSITIVE);
                if !(err <= 1e-5) && first.is_none() {
                    first = Some(format!("x row {i}, y row {j}: {got} vs {want}"));
                }
                if err.is_nan() {
                    max_err = f64::INFINITY;
                } else {
                    max_err = max_err.max(err);
                }
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
    let first = got.iter().zip(want).position(|(a, b)| a != b).map(|i| {
        format!(
            "row {}, byte {} of {row_bytes}: {:#04x} vs {:#04x}",
            i / row_bytes,
            i % row_bytes,
            got[i],
            want[i]
        )
    });
    outcome(first, differing as f64)
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        !matches!(self.outcome, Outcome::Mismatch { .. })
    }
}
