//! Quantizing a model: what llama.cpp's `llama-quantize` does, with the same results.
//!
//! [`plan`] decides the type of every tensor ([`select`], a pure function of names, shapes and
//! hyperparameters) and the output metadata; [`quantize`] streams the tensors through
//! dequantize -> quantize into a GGUF file written to a temporary path and renamed at the end.
//! Each row is quantized on its own, so the bytes do not depend on the number of threads.

pub mod imatrix;
pub mod mix;
pub mod select;

pub use imatrix::Imatrix;
pub use mix::Mix;
pub use select::{Choice, Counters, ModelInfo, SelectOptions};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, GgufWriter, Metadata, Value};
use crate::quant::{self, GgmlType};
use rayon::prelude::*;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `GGML_QNT_VERSION`, written as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// Everything a quantization run needs besides the files.
#[derive(Clone, Debug)]
pub struct Options {
    pub select: SelectOptions,
    /// The importance matrix and the file name it came from (recorded in the metadata).
    pub imatrix: Option<(Imatrix, String)>,
    /// Threads that quantize rows; the output does not depend on it.
    pub threads: usize,
}

impl Options {
    pub fn new(mix: Mix) -> Options {
        Options {
            select: SelectOptions::new(mix),
            imatrix: None,
            threads: 1,
        }
    }
}

/// What happens to one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorPlan {
    /// Index into the input's tensors.
    pub input: usize,
    pub name: String,
    /// The shape written: the input's without trailing 1s, as ggml writes it.
    pub shape: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    /// The type the mix wanted when the row length did not fit it.
    pub fallback_from: Option<GgmlType>,
    /// Whether an importance matrix is used for it.
    pub imatrix: bool,
}

impl TensorPlan {
    /// Whether the bytes change (otherwise they are copied).
    pub fn converts(&self) -> bool {
        self.from != self.to
    }
}

/// The output file, decided before any byte is written.
#[derive(Clone, Debug)]
pub struct Plan {
    pub metadata: Metadata,
    /// In output order.
    pub tensors: Vec<TensorPlan>,
    pub counters: Counters,
    /// Tensors that are already quantized and get another type (quality is lost).
    pub requantized: Vec<String>,
    /// Tensors the importance matrix has no weights for.
    pub imatrix_missing: Vec<String>,
}

fn trimmed_shape(shape: &[u64]) -> Vec<u64> {
    shape[..select::n_dims(shape)].to_vec()
}

/// Decides every tensor's type and the output metadata.
pub fn plan(input: &GgufFile, opts: &Options) -> Result<Plan> {
    let info = ModelInfo::from_metadata(input.metadata())?;
    let mut sel = opts.select;
    sel.has_imatrix = opts.imatrix.is_some();
    let tensors = input.tensors();
    let order = select::output_order(tensors.iter().map(|t| t.name.as_str()));
    let (choices, counters) = select::select_all(
        order.iter().map(|&i| {
            (
                tensors[i].name.as_str(),
                tensors[i].shape.as_slice(),
                tensors[i].ty,
            )
        }),
        &info,
        &sel,
    )?;

    let mut out = Vec::with_capacity(order.len());
    let mut requantized = Vec::new();
    let mut imatrix_missing = Vec::new();
    for (&i, choice) in order.iter().zip(&choices) {
        let t = &tensors[i];
        let shape = trimmed_shape(&t.shape);
        let mut tp = TensorPlan {
            input: i,
            name: t.name.clone(),
            shape: shape.clone(),
            from: t.ty,
            to: choice.ty,
            fallback_from: choice.fallback_from,
            imatrix: false,
        };
        if tp.converts() {
            if t.ty.is_quantized() {
                requantized.push(t.name.clone());
            }
            if let Some((m, _)) = &opts.imatrix {
                match m.get(&t.name) {
                    None => imatrix_missing.push(t.name.clone()),
                    Some(w) => {
                        let want = shape[0] * shape.get(2).copied().unwrap_or(1);
                        if w.len() as u64 == want {
                            tp.imatrix = true;
                        } else if !select::Category::of(&t.name).eq(&select::Category::TokenEmbd) {
                            return Err(Error::Invalid(format!(
                                "imatrix has {} weights for tensor {}, which needs {want} (row length {} x {} matrices)",
                                w.len(),
                                t.name,
                                shape[0],
                                shape.get(2).copied().unwrap_or(1)
                            )));
                        }
                    }
                }
            }
            if !tp.imatrix && select::requires_imatrix(&t.name, tp.to, sel.mix) {
                return Err(Error::Invalid(format!(
                    "tensor {} would be {}, which needs an importance matrix (--imatrix) for usable results",
                    t.name, tp.to
                )));
            }
            check_kernels(&tp)?;
        }
        out.push(tp);
    }

    Ok(Plan {
        metadata: output_metadata(input.metadata(), opts),
        tensors: out,
        counters,
        requantized,
        imatrix_missing,
    })
}

fn check_kernels(tp: &TensorPlan) -> Result<()> {
    let has = |ty: GgmlType, deq: bool| {
        ty == GgmlType::F32
            || quant::scalar(ty).is_some_and(|k| {
                if deq {
                    k.dequantize.is_some()
                } else {
                    k.quantize.is_some()
                }
            })
    };
    if !has(tp.from, true) {
        return Err(Error::Unsupported(format!(
            "tensor {} is {}, which strait cannot dequantize",
            tp.name, tp.from
        )));
    }
    if !has(tp.to, false) {
        return Err(Error::Unsupported(format!(
            "tensor {} would be {}, which strait cannot quantize to",
            tp.name, tp.to
        )));
    }
    Ok(())
}

/// llama-quantize's metadata: the input's, `general.quantization_version` and
/// `general.file_type` moved to the end, no split keys, the importance matrix recorded.
pub fn output_metadata(input: &Metadata, opts: &Options) -> Metadata {
    let mut md = input.clone();
    // ggml's gguf_set_val_* removes a key and appends it.
    let put = |md: &mut Metadata, k: &str, v: Value| {
        md.remove(k);
        md.set(k, v);
    };
    put(
        &mut md,
        "general.quantization_version",
        Value::U32(QUANTIZATION_VERSION),
    );
    put(
        &mut md,
        "general.file_type",
        Value::U32(opts.select.mix.ftype()),
    );
    for k in ["split.no", "split.count", "split.tensors.count"] {
        md.remove(k);
    }
    if let Some((m, file)) = &opts.imatrix {
        put(
            &mut md,
            "quantize.imatrix.file",
            Value::String(truncate(file, 127)),
        );
        if let Some(ds) = m.datasets.first() {
            put(
                &mut md,
                "quantize.imatrix.dataset",
                Value::String(truncate(ds, 127)),
            );
        }
        put(
            &mut md,
            "quantize.imatrix.entries_count",
            Value::U32(m.entries.len() as u32),
        );
        if m.chunk_count > 0 {
            put(
                &mut md,
                "quantize.imatrix.chunks_count",
                Value::U32(m.chunk_count),
            );
        }
    }
    md
}

/// At most `n` bytes, cut at a character boundary (llama-quantize keeps 127).
fn truncate(s: &str, n: usize) -> String {
    let mut end = s.len().min(n);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Where a run stands, after each tensor.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub name: &'a str,
    pub to: GgmlType,
    /// Input bytes processed so far.
    pub bytes_in: u64,
    pub seconds: f64,
}

/// The result of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub n_tensors: usize,
    pub n_elements: u64,
    /// Bytes of tensor data in and out.
    pub size_in: u64,
    pub size_out: u64,
    pub file_size_out: u64,
    pub seconds: f64,
    pub n_fallback: u32,
}

impl Summary {
    pub fn bpw_in(&self) -> f64 {
        self.size_in as f64 * 8.0 / self.n_elements.max(1) as f64
    }

    pub fn bpw_out(&self) -> f64 {
        self.size_out as f64 * 8.0 / self.n_elements.max(1) as f64
    }
}

/// Refuses an output path that is the input, or that exists without `force`.
pub fn check_paths(input: &Path, output: &Path, force: bool) -> Result<()> {
    let canon = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.canonicalize().ok()?,
            _ => std::env::current_dir().ok()?,
        };
        Some(parent.join(p.file_name()?))
    };
    if let (Some(a), Some(b)) = (canon(input), canon(output)) {
        if a == b {
            return Err(Error::Invalid(format!(
                "the output {} is the input file; choose another path",
                output.display()
            )));
        }
    }
    if output.exists() && !force {
        return Err(Error::Invalid(format!(
            "{} already exists; pass --force to overwrite it",
            output.display()
        )));
    }
    Ok(())
}

/// Writes the planned file to `output` (through `OUTPUT.tmp`, renamed when complete; nothing
/// is left behind on error). `progress` is called after each tensor.
pub fn quantize(
    input: &GgufFile,
    plan: &Plan,
    output: &Path,
    opts: &Options,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Summary> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start {} threads: {e}", opts.threads)))?;
    let mut writer = GgufWriter::new(plan.metadata.clone())?;
    for tp in &plan.tensors {
        writer.declare_tensor(&tp.name, tp.to, &tp.shape)?;
    }
    let start = Instant::now();
    let mut done = 0;
    let (mut size_in, mut size_out, mut n_elements) = (0u64, 0u64, 0u64);
    writer.write_to_path_with(output, |_, stream| {
        let tp = &plan.tensors[done];
        let t = &input.tensors()[tp.input];
        let src = input.data(t);
        let weights = match (&opts.imatrix, tp.imatrix) {
            (Some((m, _)), true) => m.get(&tp.name),
            _ => None,
        };
        if tp.converts() {
            let bytes =
                pool.install(|| convert(&tp.name, tp.from, src, &tp.shape, tp.to, weights))?;
            stream.write(&bytes)?;
            size_out += bytes.len() as u64;
        } else {
            stream.write(src)?;
            size_out += src.len() as u64;
        }
        size_in += src.len() as u64;
        n_elements += t.n_elements();
        done += 1;
        progress(&Progress {
            done,
            total: plan.tensors.len(),
            name: &tp.name,
            to: tp.to,
            bytes_in: size_in,
            seconds: start.elapsed().as_secs_f64(),
        });
        Ok(())
    })?;
    Ok(Summary {
        n_tensors: plan.tensors.len(),
        n_elements,
        size_in,
        size_out,
        file_size_out: writer.file_size(),
        seconds: start.elapsed().as_secs_f64(),
        n_fallback: plan.counters.n_fallback,
    })
}

/// Elements per parallel task: llama-quantize's chunk of at least 32 * 512 values.
const MIN_CHUNK: usize = 32 * 512;

/// Converts one tensor of `shape` (`shape[0]` values per row) from type `from` to `to`: the
/// rows are dequantized to f32, then quantized one by one, each matrix (expert) of a 3-d
/// tensor with its own slice of `imatrix` (`shape[0]` weights per matrix). Runs on the current
/// rayon pool.
pub fn convert(
    name: &str,
    from: GgmlType,
    src: &[u8],
    shape: &[u64],
    to: GgmlType,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>> {
    if shape.is_empty() || shape.contains(&0) {
        return Err(Error::Invalid(format!(
            "tensor {name}: shape {shape:?} has no rows to convert"
        )));
    }
    let n_per_row = usize::try_from(shape[0])
        .map_err(|_| Error::Invalid(format!("tensor {name}: rows of {} values", shape[0])))?;
    let n = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "tensor {name}: shape {shape:?} does not fit in memory"
            ))
        })?;
    let nrows = n / n_per_row.max(1);
    let rows_per_chunk = MIN_CHUNK.div_ceil(n_per_row.max(1)).max(1);
    let src_row = from.row_bytes(n_per_row as u64);
    let dst_row = to.row_bytes(n_per_row as u64);
    let (Some(src_row), Some(dst_row)) = (src_row, dst_row) else {
        return Err(Error::Invalid(format!(
            "tensor {name}: rows of {n_per_row} values do not fit {from} or {to}"
        )));
    };
    let (src_row, dst_row) = (src_row as usize, dst_row as usize);
    if src.len() != src_row * nrows {
        return Err(Error::Invalid(format!(
            "tensor {name}: {} bytes of data, {from} {shape:?} needs {}",
            src.len(),
            src_row * nrows
        )));
    }

    // dequantize (F32 data is read in place when the mapping lets it)
    let borrowed = match from {
        GgmlType::F32 if cfg!(target_endian = "little") => bytemuck::try_cast_slice(src).ok(),
        _ => None,
    };
    let f: Cow<[f32]> = match borrowed {
        Some(f) => Cow::Borrowed(f),
        None => {
            let mut f = vec![0f32; n];
            f.par_chunks_mut(n_per_row * rows_per_chunk)
                .zip(src.par_chunks(src_row * rows_per_chunk))
                .try_for_each(|(dst, src)| -> Result<()> {
                    for (d, s) in dst
                        .chunks_exact_mut(n_per_row)
                        .zip(src.chunks_exact(src_row))
                    {
                        to_f32(from, s, d)?;
                    }
                    Ok(())
                })?;
            Cow::Owned(f)
        }
    };
    check_representable(name, &f, n_per_row, to)?;

    // quantize
    let ne1 = shape.get(1).copied().unwrap_or(1) as usize;
    let ne2 = shape.get(2).copied().unwrap_or(1) as usize;
    if let Some(w) = imatrix {
        if w.len() != n_per_row * ne2 {
            return Err(Error::Invalid(format!(
                "tensor {name}: imatrix has {} weights, {} needed",
                w.len(),
                n_per_row * ne2
            )));
        }
    }
    let mut out = vec![0u8; dst_row * nrows];
    out.par_chunks_mut(dst_row * rows_per_chunk)
        .zip(f.par_chunks(n_per_row * rows_per_chunk))
        .enumerate()
        .try_for_each(|(c, (dst, src))| -> Result<()> {
            let first = c * rows_per_chunk;
            for (r, (d, s)) in dst
                .chunks_exact_mut(dst_row)
                .zip(src.chunks_exact(n_per_row))
                .enumerate()
            {
                let matrix = (first + r) / ne1.max(1) % ne2.max(1);
                let w = imatrix.map(|w| &w[matrix * n_per_row..(matrix + 1) * n_per_row]);
                from_f32(to, s, d, w)?;
            }
            Ok(())
        })?;
    Ok(out)
}

fn to_f32(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    if ty == GgmlType::F32 {
        for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
            *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        return Ok(());
    }
    quant::dequantize_row(ty, src, dst)
}

fn from_f32(ty: GgmlType, src: &[f32], dst: &mut [u8], w: Option<&[f32]>) -> Result<()> {
    if ty == GgmlType::F32 {
        for (d, x) in dst.chunks_exact_mut(4).zip(src) {
            d.copy_from_slice(&x.to_le_bytes());
        }
        return Ok(());
    }
    quant::quantize_row(ty, src, dst, w)
}

/// A value the output cannot hold makes llama-quantize's row validation fail: NaN or
/// infinity anywhere, or beyond F16's range for an F16 output.
fn check_representable(name: &str, f: &[f32], n_per_row: usize, to: GgmlType) -> Result<()> {
    let limit = if to == GgmlType::F16 {
        65504.0 + 16.0 // rounds to 65504 below this
    } else {
        f32::INFINITY
    };
    if let Some(i) = f.iter().position(|x| !x.is_finite() || x.abs() >= limit) {
        return Err(Error::Invalid(format!(
            "tensor {name}: row {} holds {} (column {}), which {to} cannot represent",
            i / n_per_row.max(1),
            f[i],
            i % n_per_row.max(1)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convert_refuses_bad_shapes_and_sizes() {
        let f32 = GgmlType::F32;
        assert!(convert("t", f32, &[], &[], GgmlType::Q8_0, None).is_err());
        assert!(convert("t", f32, &[], &[0, 4], GgmlType::Q8_0, None).is_err());
        assert!(convert("t", f32, &[0; 8], &[u64::MAX, 2], GgmlType::Q8_0, None).is_err());
        // 32 values need 128 bytes of F32.
        let e = convert("t", f32, &[0; 64], &[32], GgmlType::Q8_0, None).unwrap_err();
        assert!(e.to_string().contains("64 bytes"), "{e}");
        // Rows of 40 do not fit Q8_0 blocks.
        assert!(convert("t", f32, &[0; 160], &[40], GgmlType::Q8_0, None).is_err());
        let ok = convert("t", f32, &[0; 128], &[32], GgmlType::Q8_0, None).unwrap();
        assert_eq!(ok.len(), 34);
    }

    #[test]
    fn metadata_keys_move_to_the_end_and_split_keys_go() {
        let mut md = Metadata::new();
        md.set("general.architecture", Value::String("llama".into()));
        md.set("general.file_type", Value::U32(1));
        md.set("split.count", Value::U16(2));
        md.set("llama.block_count", Value::U32(2));
        let out = output_metadata(&md, &Options::new(Mix::Q5KM));
        let keys: Vec<&str> = out.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "general.architecture",
                "llama.block_count",
                "general.quantization_version",
                "general.file_type"
            ]
        );
        assert_eq!(out.u32("general.file_type").unwrap(), 17);
    }
}
