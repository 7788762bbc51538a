//! The GGUF reader: a header parser over a byte slice, and [`GgufFile`], which maps a file (or
//! all shards of a split model) and hands out tensors as views into the mapping.
//!
//! Every count, length, offset and size is checked against the bytes that remain before it is
//! used, so a malformed file is an `Err` naming the field and byte offset, never a panic and
//! never an allocation larger than the file.

use super::value::{Array, Metadata, Value, ValueType};
use crate::error::{Error, GgufError, Result};
use crate::quant::{GgmlType, TypeIdError};
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest string or array accepted (1 GiB), whatever the file size.
pub const MAX_LEN: u64 = 1 << 30;
/// Deepest array nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Longest tensor name accepted, in bytes.
pub const MAX_TENSOR_NAME: u64 = 64;

/// One tensor: where its bytes are and how to read them.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// ggml's `ne`: shape[0] is the row length (contiguous), 1 to 4 dimensions.
    pub shape: Vec<u64>,
    /// Offset of the first byte, relative to the start of its shard's data section.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
    /// Which shard of a split model holds it (0 for a single file).
    pub shard: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Elements per row (`ne0`).
    pub fn row_len(&self) -> u64 {
        self.shape[0]
    }

    /// Number of rows: the product of all dimensions but the first.
    pub fn n_rows(&self) -> u64 {
        self.shape[1..].iter().product()
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> u64 {
        self.size / self.n_rows().max(1)
    }
}

/// A parsed GGUF header: version, metadata, tensor infos and where the data section starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section in the file.
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Version 1 stores counts and lengths as u32.
    v1: bool,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, field: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                field: field.to_string(),
                offset: self.offset(),
                need: n,
                have: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, field: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A count or length: u32 in version 1, u64 after.
    fn len(&mut self, field: &str) -> Result<u64, GgufError> {
        if self.v1 {
            self.u32(field).map(u64::from)
        } else {
            self.u64(field)
        }
    }

    fn len_size(&self) -> u64 {
        if self.v1 {
            4
        } else {
            8
        }
    }

    fn string(&mut self, field: &str) -> Result<String, GgufError> {
        let at = self.offset();
        let len = self.len(field)?;
        let limit = MAX_LEN.min(self.remaining());
        if len > limit {
            return Err(GgufError::StringTooLong {
                field: field.to_string(),
                len,
                offset: at,
                limit,
            });
        }
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            field: field.to_string(),
            offset: at,
        })
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value, GgufError> {
        let at = self.offset();
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(key)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(key)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            ValueType::U32 => Value::U32(self.u32(key)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            ValueType::U64 => Value::U64(self.u64(key)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            ValueType::Bool => Value::Bool(self.boolean(key, at)?),
            ValueType::String => Value::String(self.string(key)?),
            ValueType::Array => Value::Array(self.array_value(key, depth + 1)?),
        })
    }

    fn boolean(&mut self, key: &str, at: u64) -> Result<bool, GgufError> {
        match self.array::<1>(key)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(GgufError::InvalidBool {
                key: key.to_string(),
                value,
                offset: at,
            }),
        }
    }

    fn value_type(&mut self, key: &str) -> Result<ValueType, GgufError> {
        let at = self.offset();
        let id = self.u32(key)?;
        ValueType::from_id(id).ok_or(GgufError::UnknownValueType {
            key: key.to_string(),
            type_id: id,
            offset: at,
        })
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array, GgufError> {
        if depth > MAX_DEPTH {
            return Err(GgufError::NestingTooDeep {
                key: key.to_string(),
                offset: self.offset(),
                limit: MAX_DEPTH,
            });
        }
        let elem = self.value_type(key)?;
        let at = self.offset();
        let len = self.len(key)?;
        // The smallest encoding of one element bounds the count by the bytes that remain.
        let min_elem = match elem {
            ValueType::String => self.len_size(),
            ValueType::Array => 4 + self.len_size(),
            t => t.fixed_size().unwrap_or(1) as u64,
        };
        let limit = MAX_LEN.min(self.remaining() / min_elem);
        if len > limit {
            return Err(GgufError::ArrayTooLong {
                key: key.to_string(),
                len,
                offset: at,
                limit,
            });
        }
        let n = len as usize;
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                const W: usize = std::mem::size_of::<$t>();
                let bytes = self.take(len * W as u64, key)?;
                Array::$variant(
                    bytes
                        .chunks_exact(W)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of W bytes")))
                        .collect(),
                )
            }};
        }
        Ok(match elem {
            ValueType::U8 => Array::U8(self.take(len, key)?.to_vec()),
            ValueType::I8 => Array::I8(self.take(len, key)?.iter().map(|&b| b as i8).collect()),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let at = self.offset();
                    v.push(self.boolean(key, at)?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string(key)?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(key, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_add(a - 1).map(|y| y / a * a)
}

impl Header {
    /// Parses the header of a GGUF file held in `buf` (the whole file, or at least the header
    /// plus the data section, whose length bounds every tensor).
    pub fn parse(buf: &[u8]) -> Result<Header, GgufError> {
        let mut c = Cursor {
            buf,
            pos: 0,
            v1: false,
        };
        let magic: [u8; 4] = c.array("magic").map_err(|_| GgufError::BadMagic {
            found: {
                let mut m = [0u8; 4];
                m[..buf.len().min(4)].copy_from_slice(&buf[..buf.len().min(4)]);
                m
            },
        })?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = c.u32("version")?;
        if !(1..=3).contains(&version) {
            let swapped = version.swap_bytes();
            if (1..=3).contains(&swapped) {
                return Err(GgufError::BigEndian { version: swapped });
            }
            return Err(GgufError::UnsupportedVersion { version });
        }
        c.v1 = version == 1;

        let at = c.offset();
        let n_tensors = c.len("tensor_count")?;
        let at_kv = c.offset();
        let n_kv = c.len("metadata_kv_count")?;
        // Smallest encodings: a key/value pair is a length, a one-byte key, a type and a
        // one-byte value; a tensor info is a length, a one-byte name, n_dims, one dimension,
        // a type and an offset.
        let ls = c.len_size();
        let min_kv = ls + 1 + 4 + 1;
        let min_tensor = ls + 1 + 4 + ls + 4 + 8;
        let remaining = c.remaining();
        if n_kv > remaining / min_kv {
            return Err(GgufError::CountTooLarge {
                field: "metadata_kv_count",
                count: n_kv,
                offset: at_kv,
                remaining,
            });
        }
        if n_tensors > remaining / min_tensor {
            return Err(GgufError::CountTooLarge {
                field: "tensor_count",
                count: n_tensors,
                offset: at,
                remaining,
            });
        }

        let mut metadata = Metadata::new();
        let mut alignment = DEFAULT_ALIGNMENT;
        for _ in 0..n_kv {
            let at = c.offset();
            let key = c.string("metadata key")?;
            if metadata.contains(&key) {
                return Err(GgufError::DuplicateKey { key, offset: at });
            }
            let ty = c.value_type(&key)?;
            let value_at = c.offset();
            let value = c.value(ty, &key, 0)?;
            if key == "general.alignment" {
                alignment = match value {
                    Value::U32(0) => return Err(GgufError::AlignmentZero { offset: value_at }),
                    Value::U32(a) if !a.is_power_of_two() => {
                        return Err(GgufError::AlignmentNotPowerOfTwo {
                            value: a,
                            offset: value_at,
                        })
                    }
                    Value::U32(a) => a as u64,
                    ref other => {
                        return Err(GgufError::AlignmentNotU32 {
                            found: other.describe(),
                            offset: value_at,
                        })
                    }
                };
            }
            metadata.set(key, value);
        }

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names: HashMap<String, ()> = HashMap::with_capacity(n_tensors as usize);
        for index in 0..n_tensors {
            let at = c.offset();
            let name = tensor_name(&mut c, index)?;
            if names.insert(name.clone(), ()).is_some() {
                return Err(GgufError::DuplicateTensor { name, offset: at });
            }
            let dims_at = c.offset();
            let n_dims = c.u32(&format!("{name}.n_dims"))?;
            if !(1..=4).contains(&n_dims) {
                return Err(GgufError::BadDimCount {
                    name,
                    n_dims,
                    offset: dims_at,
                });
            }
            let mut shape = Vec::with_capacity(n_dims as usize);
            for dim in 0..n_dims as usize {
                let at = c.offset();
                let ne = c.len(&format!("{name}.ne[{dim}]"))?;
                if ne == 0 {
                    return Err(GgufError::ZeroDimension {
                        name,
                        dim,
                        offset: at,
                    });
                }
                shape.push(ne);
            }
            let ty_at = c.offset();
            let id = c.u32(&format!("{name}.type"))?;
            let ty = GgmlType::from_id(id).map_err(|e| match e {
                TypeIdError::Removed(ty_name) => GgufError::RemovedType {
                    name: name.clone(),
                    id,
                    ty_name,
                    offset: ty_at,
                },
                TypeIdError::Unknown => GgufError::UnknownType {
                    name: name.clone(),
                    id,
                    offset: ty_at,
                },
            })?;
            let too_large = || GgufError::TensorTooLarge {
                name: name.clone(),
                shape: shape.clone(),
                offset: dims_at,
            };
            let n_elements = shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(too_large)?;
            let block = ty.block_size();
            if shape[0] % block as u64 != 0 {
                return Err(GgufError::RowNotBlockMultiple {
                    name,
                    ne0: shape[0],
                    ty: ty.name(),
                    block,
                    offset: dims_at,
                });
            }
            let size = ty.row_bytes(n_elements).ok_or_else(too_large)?;
            let off_at = c.offset();
            let offset = c.u64(&format!("{name}.offset"))?;
            if offset % alignment != 0 {
                return Err(GgufError::MisalignedTensor {
                    name,
                    data_offset: offset,
                    alignment,
                    offset: off_at,
                });
            }
            tensors.push(TensorInfo {
                name,
                ty,
                shape,
                offset,
                size,
                shard: 0,
            });
        }

        let data_offset = align_up(c.offset(), alignment).unwrap_or(u64::MAX);
        let available = (buf.len() as u64).saturating_sub(data_offset);
        for t in &tensors {
            if t.offset
                .checked_add(t.size)
                .is_none_or(|end| end > available)
            {
                return Err(GgufError::TensorOutOfBounds {
                    name: t.name.clone(),
                    data_offset: t.offset,
                    size: t.size,
                    available,
                });
            }
        }
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for w in order.windows(2) {
            let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
            if a.offset + a.size > b.offset {
                return Err(GgufError::TensorsOverlap {
                    a: a.name.clone(),
                    b: b.name.clone(),
                    a_end: a.offset + a.size,
                    b_start: b.offset,
                });
            }
        }

        Ok(Header {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }
}

fn tensor_name(c: &mut Cursor<'_>, index: u64) -> Result<String, GgufError> {
    let at = c.offset();
    // Peek the length to give the name limits their own errors before reading the bytes.
    let len = c.len("tensor name")?;
    if len == 0 {
        return Err(GgufError::TensorNameEmpty { index, offset: at });
    }
    if len > MAX_TENSOR_NAME {
        return Err(GgufError::TensorNameTooLong {
            len,
            offset: at,
            limit: MAX_TENSOR_NAME,
        });
    }
    let bytes = c.take(len, "tensor name")?;
    String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
        field: "tensor name".to_string(),
        offset: at,
    })
}

/// One mapped file of a model.
struct Shard {
    path: PathBuf,
    map: Mmap,
    data_offset: u64,
}

/// An opened GGUF model: one file, or every shard of a split model presented as one.
pub struct GgufFile {
    shards: Vec<Shard>,
    version: u32,
    alignment: u64,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("paths", &self.paths())
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is a directory, not a GGUF file",
            path.display()
        )));
    }
    let len = meta.len();
    if len < 8 {
        return Err(Error::GgufFile {
            path: path.to_path_buf(),
            source: GgufError::Truncated {
                field: "header".to_string(),
                offset: 0,
                need: 8,
                have: len,
            },
        });
    }
    // SAFETY: the mapping is read-only and private to this process. Like every mmap-based
    // reader we rely on the file not being truncated or rewritten while it is open; that is
    // documented for users (do not modify a model while strait runs it).
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

fn parse_shard(path: &Path) -> Result<(Shard, Header)> {
    let map = map_file(path)?;
    let header = Header::parse(&map).map_err(|source| Error::GgufFile {
        path: path.to_path_buf(),
        source,
    })?;
    let shard = Shard {
        path: path.to_path_buf(),
        map,
        data_offset: header.data_offset,
    };
    Ok((shard, header))
}

/// `name-00002-of-00005.gguf` -> ("name", 2, 5).
pub fn split_name_parts(path: &Path) -> Option<(String, u32, u32)> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    if no.len() != 5 || count.len() != 5 {
        return None;
    }
    Some((prefix.to_string(), no.parse().ok()?, count.parse().ok()?))
}

/// The path of shard `no` (1-based) of `count` next to `prefix`, as llama.cpp names them.
pub fn split_path(prefix: &Path, no: u32, count: u32) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(format!("-{no:05}-of-{count:05}.gguf"));
    PathBuf::from(s)
}

fn opt_display(x: Option<u32>) -> String {
    x.map_or("missing".to_string(), |x| x.to_string())
}

fn split_err(msg: String) -> Error {
    Error::Gguf(GgufError::Split(msg))
}

impl GgufFile {
    /// Opens a GGUF file. A shard of a split model (`name-00001-of-00003.gguf`, any of them)
    /// opens every shard and presents one model.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let (shard, header) = parse_shard(path)?;
        let count = header.metadata.opt_u32("split.count")?.unwrap_or(1);
        if count <= 1 {
            return Ok(Self::assemble(vec![(shard, header)]));
        }
        let Some((prefix, _, name_count)) = split_name_parts(path) else {
            return Err(split_err(format!(
                "{} has split.count = {count} but its name is not of the form NAME-00001-of-{count:05}.gguf",
                path.display()
            )));
        };
        if name_count != count {
            return Err(split_err(format!(
                "{} says split.count = {count}, its name says {name_count}",
                path.display()
            )));
        }
        let prefix = path.with_file_name(prefix);
        let mut given = Some((shard, header));
        let mut parts = Vec::with_capacity(count as usize);
        for no in 1..=count {
            let p = split_path(&prefix, no, count);
            let (shard, header) = match given.take_if(|_| p == path) {
                Some(part) => part,
                None if !p.exists() => {
                    return Err(split_err(format!(
                        "shard {no} of {count} is missing: {} does not exist",
                        p.display()
                    )))
                }
                None => parse_shard(&p)?,
            };
            let md = &header.metadata;
            let got_no = md.opt_u32("split.no")?;
            let got_count = md.opt_u32("split.count")?;
            if got_no != Some(no - 1) || got_count != Some(count) {
                return Err(split_err(format!(
                    "{}: split.no = {}, split.count = {}, expected {} and {count}",
                    p.display(),
                    opt_display(got_no),
                    opt_display(got_count),
                    no - 1
                )));
            }
            parts.push((shard, header));
        }
        let expected = parts[0].1.metadata.u64("split.tensors.count")?;
        let total: u64 = parts.iter().map(|(_, h)| h.tensors.len() as u64).sum();
        if expected != total {
            return Err(split_err(format!(
                "split.tensors.count is {expected} but the {count} shards hold {total} tensors"
            )));
        }
        let mut seen = HashMap::new();
        for (i, (_, h)) in parts.iter().enumerate() {
            for t in &h.tensors {
                if let Some(first) = seen.insert(t.name.as_str(), i) {
                    return Err(split_err(format!(
                        "tensor {} is in shard {} and in shard {}",
                        t.name,
                        first + 1,
                        i + 1
                    )));
                }
            }
        }
        Ok(Self::assemble(parts))
    }

    fn assemble(parts: Vec<(Shard, Header)>) -> GgufFile {
        let mut shards = Vec::with_capacity(parts.len());
        let mut tensors = Vec::new();
        let mut metadata = None;
        let (mut version, mut alignment) = (3, DEFAULT_ALIGNMENT);
        for (i, (shard, header)) in parts.into_iter().enumerate() {
            if i == 0 {
                version = header.version;
                alignment = header.alignment;
                metadata = Some(header.metadata);
            }
            tensors.extend(header.tensors.into_iter().map(|mut t| {
                t.shard = i;
                t
            }));
            shards.push(shard);
        }
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        GgufFile {
            shards,
            version,
            alignment,
            metadata: metadata.unwrap_or_default(),
            tensors,
            index,
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Metadata (of the first shard, for split models).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Frees what only the tokenizer reads, for a caller that has built its tokenizer: the
    /// vocabulary arrays of the metadata (tokens, scores, types, merges: a few MB, 17 MB for a
    /// 262144-token vocabulary) and the pages of each file's header that parsing brought in.
    /// Those are read again from the file if anything touches them; the arrays are gone from
    /// [`GgufFile::metadata`].
    pub fn release_vocabulary(&mut self) {
        for key in [
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.scores",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges",
        ] {
            self.metadata.remove(key);
        }
        #[cfg(all(unix, target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free heap pages to the system.
        unsafe {
            libc::malloc_trim(0);
        }
        #[cfg(unix)]
        for s in &self.shards {
            // Whole pages before the first tensor's (the kernel rounds to its page size: on
            // a larger page than 4 KiB the first tensor's may go too, and is read again).
            let end = (s.data_offset as usize).min(s.map.len()) / 4096 * 4096;
            if end > 0 {
                // SAFETY: the mapping is private and read-only, so its pages hold the file's
                // bytes unchanged: dropping them only makes the kernel read them from the
                // file again if they are touched, and no reference into them is live (the
                // metadata owns its values).
                let _ = unsafe {
                    s.map
                        .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, 0, end)
                };
            }
        }
    }

    /// Every tensor, in file order (shard by shard).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor by name, or an error naming it.
    pub fn require(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
        })
    }

    /// The bytes of a tensor: a view into the mapping, never a copy.
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        let shard = &self.shards[t.shard];
        // Bounds were checked against the mapped length when the header was parsed.
        let start = (shard.data_offset + t.offset) as usize;
        &shard.map[start..start + t.size as usize]
    }

    /// The paths of the files, in shard order.
    pub fn paths(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// Total bytes of all files.
    pub fn file_size(&self) -> u64 {
        self.shards.iter().map(|s| s.map.len() as u64).sum()
    }

    /// Number of parameters (elements of all tensors).
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_elements()).sum()
    }

    /// The architecture name from `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.metadata.str("general.architecture")
    }
}
