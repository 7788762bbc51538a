//! The crate's error type. Messages carry the numbers a user needs to act on them.

use std::path::PathBuf;

/// Everything that can go wrong in strait.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A malformed GGUF file. The path is added by the reader when it knows it.
    #[error("{}: {source}", path.display())]
    GgufFile {
        path: PathBuf,
        #[source]
        source: GgufError,
    },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("metadata key {key}: expected {expected}, found {found}")]
    MetadataType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("metadata key {key} is missing")]
    MissingKey { key: String },
    #[error("tensor {name} is missing")]
    MissingTensor { name: String },
    /// Something valid that strait does not (yet) handle, named.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A bad argument, flag or value from the user.
    #[error("{0}")]
    Invalid(String),
}

/// A GGUF file that does not follow the format. Every variant names the field and the byte
/// offset where the problem was found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GgufError {
    #[error("truncated file: {field} at byte offset {offset} needs {need} bytes, {have} remain")]
    Truncated {
        field: String,
        offset: u64,
        need: u64,
        have: u64,
    },
    #[error("not a GGUF file: magic at offset 0 is {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("big-endian GGUF file (version {version} byte-swapped at offset 4): only little-endian files are supported")]
    BigEndian { version: u32 },
    #[error("unsupported GGUF version {version} at offset 4 (supported: 1, 2, 3)")]
    UnsupportedVersion { version: u32 },
    #[error(
        "{field} = {count} at offset {offset} cannot fit in the {remaining} bytes that remain"
    )]
    CountTooLarge {
        field: &'static str,
        count: u64,
        offset: u64,
        remaining: u64,
    },
    #[error("{field}: string length {len} at offset {offset} is over {limit} bytes")]
    StringTooLong {
        field: String,
        len: u64,
        offset: u64,
        limit: u64,
    },
    #[error("{field}: string at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { field: String, offset: u64 },
    #[error("metadata key {key}: array length {len} at offset {offset} is over {limit} elements")]
    ArrayTooLong {
        key: String,
        len: u64,
        offset: u64,
        limit: u64,
    },
    #[error("metadata key {key}: arrays nested deeper than {limit} at offset {offset}")]
    NestingTooDeep {
        key: String,
        offset: u64,
        limit: usize,
    },
    #[error("metadata key {key}: BOOL value {value} at offset {offset} is not 0 or 1")]
    InvalidBool { key: String, value: u8, offset: u64 },
    #[error("metadata key {key}: unknown value type {type_id} at offset {offset}")]
    UnknownValueType {
        key: String,
        type_id: u32,
        offset: u64,
    },
    #[error("metadata key {key} at offset {offset} is a duplicate")]
    DuplicateKey { key: String, offset: u64 },
    #[error("general.alignment at offset {offset} is {found}, expected a U32")]
    AlignmentNotU32 { found: String, offset: u64 },
    #[error("general.alignment at offset {offset} is 0")]
    AlignmentZero { offset: u64 },
    #[error("general.alignment at offset {offset} is {value}, not a power of two")]
    AlignmentNotPowerOfTwo { value: u32, offset: u64 },
    #[error("tensor #{index} at offset {offset} has an empty name")]
    TensorNameEmpty { index: u64, offset: u64 },
    #[error("tensor name at offset {offset} is {len} bytes long, over the limit of {limit}")]
    TensorNameTooLong { len: u64, offset: u64, limit: u64 },
    #[error("tensor {name} at offset {offset} is a duplicate")]
    DuplicateTensor { name: String, offset: u64 },
    #[error("tensor {name} at offset {offset}: n_dims {n_dims} is not between 1 and 4")]
    BadDimCount {
        name: String,
        n_dims: u32,
        offset: u64,
    },
    #[error("tensor {name} at offset {offset}: dimension {dim} is 0")]
    ZeroDimension {
        name: String,
        dim: usize,
        offset: u64,
    },
    #[error("tensor {name} at offset {offset}: shape {shape:?} overflows a 64-bit byte size")]
    TensorTooLarge {
        name: String,
        shape: Vec<u64>,
        offset: u64,
    },
    #[error("tensor {name} at offset {offset}: row length {ne0} is not a multiple of the {ty} block size {block}")]
    RowNotBlockMultiple {
        name: String,
        ne0: u64,
        ty: &'static str,
        block: usize,
        offset: u64,
    },
    #[error("tensor {name} at offset {offset}: type id {id} ({ty_name}) was removed from ggml and cannot be read")]
    RemovedType {
        name: String,
        id: u32,
        ty_name: &'static str,
        offset: u64,
    },
    #[error("tensor {name} at offset {offset}: unknown type id {id}")]
    UnknownType { name: String, id: u32, offset: u64 },
    #[error("tensor {name}: data offset {data_offset} (field at offset {offset}) is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        name: String,
        data_offset: u64,
        alignment: u64,
        offset: u64,
    },
    #[error("tensor {name} needs {size} bytes at data offset {data_offset}, the data section has {available} bytes")]
    TensorOutOfBounds {
        name: String,
        data_offset: u64,
        size: u64,
        available: u64,
    },
    #[error(
        "tensors {a} and {b} overlap: {a} ends at data offset {a_end}, {b} starts at {b_start}"
    )]
    TensorsOverlap {
        a: String,
        b: String,
        a_end: u64,
        b_start: u64,
    },
    #[error("split model: {0}")]
    Split(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
