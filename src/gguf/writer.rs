//! The GGUF writer: version 3, any metadata, tensors padded to the alignment.
//!
//! The header (metadata and tensor infos with precomputed offsets) is laid out first, so tensor
//! data can be streamed one tensor at a time ([`GgufWriter::stream_to_path`]) without holding a
//! model in memory. Files are written to `PATH.tmp` and renamed into place when complete.
//! Mirrors `gguf_write_out` in ggml's gguf.cpp: header, KV pairs, tensor infos, zero padding to
//! the alignment, then each tensor's bytes followed by zero padding to the alignment.

use super::reader::{split_path, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use super::reader::{MAX_DEPTH, MAX_LEN, MAX_TENSOR_NAME};
use super::value::{Array, Metadata, Value};
use crate::error::{Error, Result};
use crate::quant::GgmlType;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The version this writer produces.
pub const WRITE_VERSION: u32 = 3;

/// Metadata keys of split models, as llama.cpp's gguf-split writes them.
pub const SPLIT_NO: &str = "split.no";
pub const SPLIT_COUNT: &str = "split.count";
pub const SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// A GGUF file being put together: metadata and tensor infos with their final offsets, and
/// optionally the bytes of each tensor.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    metadata: Metadata,
    alignment: u64,
    tensors: Vec<TensorInfo>,
    /// Bytes given to [`add_tensor`](Self::add_tensor); `None` for tensors declared with
    /// [`declare_tensor`](Self::declare_tensor), whose data is streamed at write time.
    data: Vec<Option<Vec<u8>>>,
    names: HashSet<String>,
    /// End of the data section so far, padded.
    data_len: u64,
}

fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

impl GgufWriter {
    /// A writer with this metadata. The alignment is `general.alignment` when present (a U32
    /// power of two), else 32.
    pub fn new(metadata: Metadata) -> Result<GgufWriter> {
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(v) => {
                return Err(invalid(format!(
                    "general.alignment must be a U32 power of two, found {}",
                    v.describe()
                )))
            }
        };
        for (key, value) in metadata.iter() {
            check_value(key, value, 0)?;
        }
        Ok(GgufWriter {
            metadata,
            alignment,
            tensors: Vec::new(),
            data: Vec::new(),
            names: HashSet::new(),
            data_len: 0,
        })
    }

    /// Adds a tensor with its bytes (`ty.row_bytes(elements)` of them).
    pub fn add_tensor(
        &mut self,
        name: &str,
        ty: GgmlType,
        shape: &[u64],
        bytes: impl Into<Vec<u8>>,
    ) -> Result<&TensorInfo> {
        let bytes = bytes.into();
        let size = tensor_size(name, ty, shape)?;
        if bytes.len() as u64 != size {
            return Err(invalid(format!(
                "tensor {name}: {} {shape:?} needs {size} bytes, {} given",
                ty.name(),
                bytes.len()
            )));
        }
        self.push(name, ty, shape, size, Some(bytes))
    }

    /// Declares a tensor whose bytes are written later, by [`stream_to_path`](Self::stream_to_path)
    /// or [`write_to_path_with`](Self::write_to_path_with).
    pub fn declare_tensor(
        &mut self,
        name: &str,
        ty: GgmlType,
        shape: &[u64],
    ) -> Result<&TensorInfo> {
        let size = tensor_size(name, ty, shape)?;
        self.push(name, ty, shape, size, None)
    }

    fn push(
        &mut self,
        name: &str,
        ty: GgmlType,
        shape: &[u64],
        size: u64,
        data: Option<Vec<u8>>,
    ) -> Result<&TensorInfo> {
        if !self.names.insert(name.to_string()) {
            return Err(invalid(format!("tensor {name} is added twice")));
        }
        let offset = self.data_len;
        let end = offset
            .checked_add(size)
            .and_then(|e| e.checked_add(self.alignment - 1))
            .ok_or_else(|| invalid(format!("tensor {name}: data section overflows u64")))?;
        self.data_len = end / self.alignment * self.alignment;
        self.tensors.push(TensorInfo {
            name: name.to_string(),
            ty,
            shape: shape.to_vec(),
            offset,
            size,
            shard: 0,
        });
        self.data.push(data);
        Ok(self.tensors.last().expect("just pushed"))
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The tensors in file order, with their offsets in the data section.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The header: magic, version, counts, metadata and tensor infos, padded to the alignment.
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&WRITE_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in self.metadata.iter() {
            put_str(&mut out, key);
            out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            put_value(&mut out, value);
        }
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for &d in &t.shape {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&t.offset.to_le_bytes());
        }
        let padded = align_up(out.len() as u64, self.alignment) as usize;
        out.resize(padded, 0);
        out
    }

    /// Bytes of the header, which is where the data section starts.
    pub fn data_offset(&self) -> u64 {
        self.header_bytes().len() as u64
    }

    /// Bytes of the whole file: the header and the padded data section.
    pub fn file_size(&self) -> u64 {
        self.data_offset() + self.data_len
    }

    /// The whole file in memory. Every tensor must have been given its bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = self.header_bytes();
        for (t, data) in self.tensors.iter().zip(&self.data) {
            let bytes = data.as_ref().ok_or_else(|| no_data(t))?;
            out.extend_from_slice(bytes);
            out.resize(align_up(out.len() as u64, self.alignment) as usize, 0);
        }
        Ok(out)
    }

    /// Writes the file. Every tensor must have been given its bytes.
    pub fn write_to_path(&self, path: impl AsRef<Path>) -> Result<()> {
        if let Some(t) = self
            .tensors
            .iter()
            .zip(&self.data)
            .find(|(_, d)| d.is_none())
        {
            return Err(no_data(t.0));
        }
        self.stream_to_path(path)?.finish()
    }

    /// Writes the file, asking `fill` for the bytes of each declared tensor in file order.
    /// `fill` writes exactly that tensor's bytes to the stream, in one call or many.
    pub fn write_to_path_with<F>(&self, path: impl AsRef<Path>, mut fill: F) -> Result<()>
    where
        F: FnMut(&TensorInfo, &mut GgufStream<'_>) -> Result<()>,
    {
        let mut stream = self.stream_to_path(path)?;
        while let Some(i) = stream.current {
            fill(&self.tensors[i], &mut stream)?;
            if stream.current == Some(i) {
                let t = &self.tensors[i];
                return Err(invalid(format!(
                    "tensor {}: {} of {} bytes were written",
                    t.name, stream.written, t.size
                )));
            }
        }
        stream.finish()
    }

    /// Starts writing the file: the header now, then tensor data through
    /// [`GgufStream::write`], in file order. Tensors given bytes by `add_tensor` are written by
    /// the stream itself when their turn comes.
    pub fn stream_to_path(&self, path: impl AsRef<Path>) -> Result<GgufStream<'_>> {
        let path = path.as_ref().to_path_buf();
        let tmp = tmp_path(&path);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut stream = GgufStream {
            writer: self,
            out: BufWriter::with_capacity(1 << 20, file),
            path,
            tmp,
            pos: 0,
            current: None,
            written: 0,
            finished: false,
        };
        stream.put(&self.header_bytes())?;
        stream.advance(0)?;
        Ok(stream)
    }

    /// Writes the header and sets the file length to [`file_size`](Self::file_size) without
    /// writing the data: a sparse file with the layout of the real one, for tests of planning
    /// on large models. Tensor data reads as zeros.
    pub fn write_sparse(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let tmp = tmp_path(path);
        let result = (|| {
            let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            file.write_all(&self.header_bytes())
                .map_err(|e| Error::io(&tmp, e))?;
            file.set_len(self.file_size())
                .map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Splits into shards of at most `max_tensors` tensors each, as llama.cpp's gguf-split
    /// does: the first shard keeps all metadata, every shard gets `split.no` (U16, 0-based),
    /// `split.count` (U16) and `split.tensors.count` (I32, all shards together).
    pub fn into_shards(self, max_tensors: usize) -> Result<Vec<GgufWriter>> {
        if max_tensors == 0 {
            return Err(invalid("a shard must hold at least one tensor".to_string()));
        }
        let n_tensors = self.tensors.len();
        let count = n_tensors.div_ceil(max_tensors).max(1);
        let count16 = u16::try_from(count)
            .map_err(|_| invalid(format!("{count} shards are more than a U16 can count")))?;
        let total = i32::try_from(n_tensors).map_err(|_| {
            invalid(format!(
                "{n_tensors} tensors are more than an I32 can count"
            ))
        })?;
        let mut alignment_md = Metadata::new();
        if let Some(a) = self.metadata.get("general.alignment") {
            alignment_md.set("general.alignment", a.clone());
        }
        let mut shards = Vec::with_capacity(count);
        let mut items = self.tensors.into_iter().zip(self.data);
        let mut first_md = Some(self.metadata);
        for no in 0..count16 {
            let mut md = first_md.take().unwrap_or_else(|| alignment_md.clone());
            md.set(SPLIT_NO, Value::U16(no));
            md.set(SPLIT_COUNT, Value::U16(count16));
            md.set(SPLIT_TENSORS_COUNT, Value::I32(total));
            let mut w = GgufWriter::new(md)?;
            for (t, data) in items.by_ref().take(max_tensors) {
                w.push(&t.name, t.ty, &t.shape, t.size, data)?;
            }
            shards.push(w);
        }
        Ok(shards)
    }

    /// Writes a split model next to `prefix` (`PREFIX-00001-of-0000N.gguf` ...) with at most
    /// `max_tensors` tensors per shard; returns the paths. Every tensor needs its bytes.
    pub fn write_split(self, prefix: impl AsRef<Path>, max_tensors: usize) -> Result<Vec<PathBuf>> {
        let shards = self.into_shards(max_tensors)?;
        let count = shards.len() as u32;
        let mut paths = Vec::with_capacity(shards.len());
        for (i, shard) in shards.iter().enumerate() {
            let p = split_path(prefix.as_ref(), i as u32 + 1, count);
            shard.write_to_path(&p)?;
            paths.push(p);
        }
        Ok(paths)
    }
}

/// A file being written: the header is out, tensor data goes in file order.
/// Dropped before [`finish`](Self::finish), it removes its temporary file.
pub struct GgufStream<'w> {
    writer: &'w GgufWriter,
    out: BufWriter<File>,
    path: PathBuf,
    tmp: PathBuf,
    /// Bytes written to the file.
    pos: u64,
    /// The tensor whose bytes are expected next.
    current: Option<usize>,
    /// Bytes of it written so far.
    written: u64,
    finished: bool,
}

impl GgufStream<'_> {
    /// The tensor whose bytes come next, or `None` when all are written.
    pub fn next_tensor(&self) -> Option<&TensorInfo> {
        self.current.map(|i| &self.writer.tensors[i])
    }

    /// Bytes of the current tensor (all of them, or the next part). A tensor is complete when
    /// its size is reached; writing past it is an error.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(i) = self.current else {
            return Err(invalid(format!(
                "{} bytes written after the last tensor",
                bytes.len()
            )));
        };
        let t = &self.writer.tensors[i];
        let left = t.size - self.written;
        if bytes.len() as u64 > left {
            return Err(invalid(format!(
                "tensor {}: {} bytes written, only {left} of its {} remain",
                t.name,
                bytes.len(),
                t.size
            )));
        }
        self.put(bytes)?;
        self.written += bytes.len() as u64;
        if self.written == t.size {
            self.pad()?;
            self.advance(i + 1)?;
        }
        Ok(())
    }

    /// Completes the file and renames it into place.
    pub fn finish(mut self) -> Result<()> {
        if let Some(t) = self.next_tensor() {
            return Err(invalid(format!(
                "tensor {} was not written ({} of {} bytes)",
                t.name, self.written, t.size
            )));
        }
        self.out.flush().map_err(|e| Error::io(&self.tmp, e))?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| Error::io(&self.tmp, e))?;
        debug_assert_eq!(self.pos, self.writer.file_size());
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        self.finished = true;
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.tmp, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        let n = align_up(self.pos, self.writer.alignment) - self.pos;
        self.put(&vec![0u8; n as usize])
    }

    /// Moves to tensor `i`, writing the stored bytes of any tensors that have them.
    fn advance(&mut self, mut i: usize) -> Result<()> {
        let w = self.writer;
        while let Some(Some(bytes)) = w.data.get(i) {
            self.put(bytes)?;
            self.pad()?;
            i += 1;
        }
        self.current = (i < w.tensors.len()).then_some(i);
        self.written = 0;
        Ok(())
    }
}

impl Drop for GgufStream<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn no_data(t: &TensorInfo) -> Error {
    invalid(format!(
        "tensor {} was declared without data; stream it with write_to_path_with",
        t.name
    ))
}

/// Longest tensor name written: ggml keeps names in 64 bytes with their NUL
/// (`GGML_MAX_NAME`), so llama.cpp refuses 64-byte names that this reader accepts.
const MAX_WRITTEN_NAME: u64 = MAX_TENSOR_NAME - 1;

/// Checks what the reader (or ggml) would refuse, so every written file reads back.
fn tensor_size(name: &str, ty: GgmlType, shape: &[u64]) -> Result<u64> {
    if name.is_empty() || name.len() as u64 > MAX_WRITTEN_NAME {
        return Err(invalid(format!(
            "tensor name {name:?} must be 1 to {MAX_WRITTEN_NAME} bytes"
        )));
    }
    if !(1..=4).contains(&shape.len()) || shape.contains(&0) {
        return Err(invalid(format!(
            "tensor {name}: shape {shape:?} must have 1 to 4 dimensions, none 0"
        )));
    }
    let n = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| invalid(format!("tensor {name}: shape {shape:?} overflows u64")))?;
    if !shape[0].is_multiple_of(ty.block_size() as u64) {
        return Err(invalid(format!(
            "tensor {name}: row length {} is not a multiple of the {} block size {}",
            shape[0],
            ty.name(),
            ty.block_size()
        )));
    }
    ty.row_bytes(n)
        .ok_or_else(|| invalid(format!("tensor {name}: byte size overflows u64")))
}

fn check_value(key: &str, value: &Value, depth: usize) -> Result<()> {
    if key.len() as u64 > MAX_LEN {
        return Err(invalid(format!(
            "metadata key of {} bytes is too long",
            key.len()
        )));
    }
    match value {
        Value::String(s) if s.len() as u64 > MAX_LEN => Err(invalid(format!(
            "metadata key {key}: string over {MAX_LEN} bytes"
        ))),
        Value::Array(a) => check_array(key, a, depth + 1),
        _ => Ok(()),
    }
}

fn check_array(key: &str, a: &Array, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(invalid(format!(
            "metadata key {key}: arrays nested deeper than {MAX_DEPTH}"
        )));
    }
    if a.len() as u64 > MAX_LEN {
        return Err(invalid(format!(
            "metadata key {key}: array over {MAX_LEN} elements"
        )));
    }
    match a {
        Array::String(v) if v.iter().any(|s| s.len() as u64 > MAX_LEN) => Err(invalid(format!(
            "metadata key {key}: string over {MAX_LEN} bytes"
        ))),
        Array::Array(v) => v.iter().try_for_each(|a| check_array(key, a, depth + 1)),
        _ => Ok(()),
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// An array: element type, length, elements (nested arrays carry their own type and length).
fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&x| u8::from(x))),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::Array(v) => v.iter().for_each(|a| put_array(out, a)),
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Header;

    #[test]
    fn layout_matches_ggml_padding() {
        let mut md = Metadata::new();
        md.set("general.architecture", Value::String("llama".into()));
        let mut w = GgufWriter::new(md).unwrap();
        w.add_tensor("a", GgmlType::F32, &[3], vec![1u8; 12])
            .unwrap();
        w.add_tensor("b", GgmlType::Q4_0, &[32, 2], vec![2u8; 36])
            .unwrap();
        assert_eq!(w.tensors()[0].offset, 0);
        assert_eq!(w.tensors()[1].offset, 32);
        let bytes = w.to_bytes().unwrap();
        assert_eq!(bytes.len() as u64, w.file_size());
        assert_eq!(w.data_offset() % 32, 0);
        assert_eq!(bytes.len() as u64, w.data_offset() + 32 + 64);
        let h = Header::parse(&bytes).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.data_offset, w.data_offset());
        assert_eq!(h.tensors, w.tensors());
        let b = &h.tensors[1];
        let start = (h.data_offset + b.offset) as usize;
        assert_eq!(&bytes[start..start + 36], &[2u8; 36][..]);
    }

    #[test]
    fn refuses_what_the_reader_would_refuse() {
        let mut w = GgufWriter::new(Metadata::new()).unwrap();
        assert!(w.add_tensor("", GgmlType::F32, &[1], vec![0; 4]).is_err());
        let long = "x".repeat(64);
        assert!(w
            .add_tensor(&long, GgmlType::F32, &[1], vec![0; 4])
            .is_err());
        w.add_tensor(&long[..63], GgmlType::F32, &[1], vec![0; 4])
            .unwrap();
        assert!(w.add_tensor("x", GgmlType::F32, &[0], vec![]).is_err());
        assert!(w
            .add_tensor("x", GgmlType::F32, &[1, 1, 1, 1, 1], vec![0; 4])
            .is_err());
        assert!(w
            .add_tensor("x", GgmlType::Q4_0, &[16], vec![0; 9])
            .is_err());
        assert!(w.add_tensor("x", GgmlType::F32, &[2], vec![0; 4]).is_err());
        w.add_tensor("x", GgmlType::F32, &[1], vec![0; 4]).unwrap();
        assert!(w.add_tensor("x", GgmlType::F32, &[1], vec![0; 4]).is_err());
        let mut md = Metadata::new();
        md.set("general.alignment", Value::U32(24));
        assert!(GgufWriter::new(md).is_err());
    }
}
