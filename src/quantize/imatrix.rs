//! Importance matrices as llama.cpp's `llama-imatrix` writes them: the GGUF form
//! (`NAME.in_sum2` and `NAME.counts` per weight) and the legacy `.dat` form.
//!
//! The weights of a tensor are the mean squared activations of its input columns:
//! `in_sum2 / count` for each matrix (each expert of a 3-d tensor has its own count), as
//! llama-quantize's `load_imatrix` derives them.

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, GGUF_MAGIC};
use crate::quant::GgmlType;
use std::collections::HashMap;
use std::path::Path;

/// Metadata keys of imatrix GGUF files.
pub const KEY_DATASETS: &str = "imatrix.datasets";
pub const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
pub const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";

/// Per-column weights for each weight tensor, by tensor name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imatrix {
    /// `ne0 * n_matrices` weights per tensor: one row of `ne0` per expert.
    pub entries: HashMap<String, Vec<f32>>,
    /// The calibration data sets named in the file.
    pub datasets: Vec<String>,
    /// Chunks of calibration text the sums cover.
    pub chunk_count: u32,
}

fn bad(path: &Path, msg: String) -> Error {
    Error::Invalid(format!("imatrix {}: {msg}", path.display()))
}

impl Imatrix {
    /// Reads an imatrix file in either form.
    pub fn load(path: impl AsRef<Path>) -> Result<Imatrix> {
        let path = path.as_ref();
        let mut magic = [0u8; 4];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let n = f.read(&mut magic).map_err(|e| Error::io(path, e))?;
            if n < 4 {
                return Err(bad(
                    path,
                    format!("{n} bytes is too short for an imatrix file"),
                ));
            }
        }
        let m = if magic == GGUF_MAGIC {
            Self::load_gguf(path)?
        } else {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            Self::parse_legacy(&bytes).map_err(|e| {
                bad(
                    path,
                    format!("not GGUF, and not a legacy imatrix file: {e}"),
                )
            })?
        };
        for (name, w) in &m.entries {
            if let Some(x) = w.iter().find(|x| !x.is_finite()) {
                return Err(bad(
                    path,
                    format!("entry {name} holds the non-finite value {x}"),
                ));
            }
        }
        Ok(m)
    }

    fn load_gguf(path: &Path) -> Result<Imatrix> {
        let file = GgufFile::open(path)?;
        let md = file.metadata();
        if !md.contains(KEY_DATASETS)
            || !md.contains(KEY_CHUNK_COUNT)
            || !md.contains(KEY_CHUNK_SIZE)
        {
            return Err(bad(
                path,
                format!("missing imatrix metadata ({KEY_DATASETS}, {KEY_CHUNK_COUNT}, {KEY_CHUNK_SIZE})"),
            ));
        }
        let datasets = md
            .opt_str_array(KEY_DATASETS)?
            .map(|d| d.to_vec())
            .unwrap_or_default();
        let chunk_count = md.u32(KEY_CHUNK_COUNT)?;
        let read_f32 = |name: &str| -> Result<Vec<f32>> {
            let t = file.require(name)?;
            if t.ty != GgmlType::F32 {
                return Err(bad(
                    path,
                    format!("tensor {name} is {}, expected F32", t.ty),
                ));
            }
            Ok(file
                .data(t)
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let mut entries = HashMap::new();
        for t in file.tensors() {
            let Some(name) = t.name.strip_suffix(".in_sum2") else {
                continue;
            };
            let counts_name = format!("{name}.counts");
            if file.tensor(&counts_name).is_none() {
                return Err(bad(path, format!("{} has no {counts_name}", t.name)));
            }
            let sums = read_f32(&t.name)?;
            let counts = read_f32(&counts_name)?;
            if counts.is_empty() || sums.is_empty() {
                continue;
            }
            if sums.len() % counts.len() != 0 {
                return Err(bad(
                    path,
                    format!(
                        "{name}: {} sums do not split into {} matrices",
                        sums.len(),
                        counts.len()
                    ),
                ));
            }
            let ne0 = sums.len() / counts.len();
            let mut w = Vec::with_capacity(sums.len());
            for (row, &count) in sums.chunks_exact(ne0).zip(&counts) {
                if count > 0.0 {
                    w.extend(row.iter().map(|&s| s / count));
                } else {
                    // A matrix that never saw input (an expert never routed to).
                    w.extend(std::iter::repeat_n(1.0, ne0));
                }
            }
            entries.insert(name.to_string(), w);
        }
        for t in file.tensors() {
            if let Some(name) = t.name.strip_suffix(".counts") {
                if !entries.contains_key(name) && file.tensor(&format!("{name}.in_sum2")).is_none()
                {
                    return Err(bad(path, format!("{} has no {name}.in_sum2", t.name)));
                }
            }
        }
        Ok(Imatrix {
            entries,
            datasets,
            chunk_count,
        })
    }

    /// The legacy binary form: `i32 n_entries`, then per entry `i32 name_len, name, i32 ncall,
    /// i32 nval, f32 values[nval]`; optionally `i32 last_call, i32 len, dataset` at the end.
    pub fn parse_legacy(bytes: &[u8]) -> std::result::Result<Imatrix, String> {
        let mut r = Reader { bytes, pos: 0 };
        let n = r.i32("entry count")?;
        if n <= 0 {
            return Err(format!("entry count {n} at offset 0 is not positive"));
        }
        let mut entries = HashMap::new();
        for i in 0..n {
            let len = r.len(&format!("name length of entry {i}"))?;
            let name = r.take(len, "entry name")?;
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| format!("name of entry {i} is not UTF-8"))?;
            let ncall = r.i32("ncall")?;
            let nval = r.len(&format!("value count of {name}"))?;
            let need = nval
                .checked_mul(4)
                .ok_or_else(|| format!("{name}: {nval} values overflow"))?;
            let raw = r.take(need, &format!("values of {name}"))?;
            let mut w: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if ncall > 0 {
                for v in &mut w {
                    *v /= ncall as f32;
                }
            }
            entries.insert(name, w);
        }
        let mut chunk_count = 0;
        let mut datasets = Vec::new();
        if r.pos < bytes.len() {
            chunk_count = u32::try_from(r.i32("last call")?).unwrap_or(0);
            let len = r.len("dataset name length")?;
            let name = r.take(len, "dataset name")?;
            datasets.push(String::from_utf8_lossy(name).into_owned());
        }
        Ok(Imatrix {
            entries,
            datasets,
            chunk_count,
        })
    }

    /// The weights of a tensor, if the file has them.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.entries.get(name).map(|v| v.as_slice())
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(format!(
                "truncated: {what} at offset {} needs {n} bytes, {left} remain",
                self.pos
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn i32(&mut self, what: &str) -> std::result::Result<i32, String> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn len(&mut self, what: &str) -> std::result::Result<usize, String> {
        let at = self.pos;
        let v = self.i32(what)?;
        usize::try_from(v).map_err(|_| format!("{what} at offset {at} is negative ({v})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(entries: &[(&str, i32, &[f32])], tail: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
        for (name, ncall, vals) in entries {
            b.extend_from_slice(&(name.len() as i32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&ncall.to_le_bytes());
            b.extend_from_slice(&(vals.len() as i32).to_le_bytes());
            for v in *vals {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        if let Some((last, ds)) = tail {
            b.extend_from_slice(&last.to_le_bytes());
            b.extend_from_slice(&(ds.len() as i32).to_le_bytes());
            b.extend_from_slice(ds.as_bytes());
        }
        b
    }

    #[test]
    fn legacy_values_are_divided_by_ncall() {
        let b = legacy(
            &[("a.weight", 4, &[4.0, 8.0]), ("b.weight", 0, &[3.0])],
            Some((10, "wiki.txt")),
        );
        let m = Imatrix::parse_legacy(&b).unwrap();
        assert_eq!(m.get("a.weight").unwrap(), &[1.0, 2.0]);
        assert_eq!(m.get("b.weight").unwrap(), &[3.0]);
        assert_eq!(m.chunk_count, 10);
        assert_eq!(m.datasets, vec!["wiki.txt".to_string()]);
    }

    #[test]
    fn legacy_truncation_is_an_error() {
        let b = legacy(&[("a.weight", 1, &[4.0, 8.0])], None);
        for cut in 0..b.len() {
            assert!(Imatrix::parse_legacy(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut neg = b.clone();
        neg[4..8].copy_from_slice(&(-5i32).to_le_bytes());
        assert!(Imatrix::parse_legacy(&neg)
            .unwrap_err()
            .contains("negative"));
    }
}
