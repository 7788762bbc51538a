//! The GGUF file format: a hardened reader over mmap, metadata values, and a writer.

mod reader;
mod value;
mod writer;

pub use reader::{
    split_name_parts, split_path, GgufFile, Header, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC,
    MAX_DEPTH, MAX_LEN, MAX_TENSOR_NAME,
};
pub use value::{Array, Metadata, Value, ValueType};
pub use writer::{
    GgufStream, GgufWriter, SPLIT_COUNT, SPLIT_NO, SPLIT_TENSORS_COUNT, WRITE_VERSION,
};
