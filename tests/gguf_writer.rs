//! The writer: what it writes reads back the same, streamed, sparse or split.

use proptest::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use strait::gguf::{Array, GgufFile, GgufWriter, Header, Metadata, Value};
use strait::quant::GgmlType;

/// A fresh path in the temp directory, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "strait-gguf-writer-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempPath(dir.join(name))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn finite_f32() -> impl Strategy<Value = f32> {
    prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO
}

fn text() -> impl Strategy<Value = String> {
    prop::string::string_regex("(.|\n){0,12}").unwrap()
}

fn array() -> impl Strategy<Value = Array> {
    let leaf = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Array::U8),
        prop::collection::vec(any::<i8>(), 0..8).prop_map(Array::I8),
        prop::collection::vec(any::<u16>(), 0..8).prop_map(Array::U16),
        prop::collection::vec(any::<i16>(), 0..8).prop_map(Array::I16),
        prop::collection::vec(any::<u32>(), 0..8).prop_map(Array::U32),
        prop::collection::vec(any::<i32>(), 0..8).prop_map(Array::I32),
        prop::collection::vec(finite_f32(), 0..8).prop_map(Array::F32),
        prop::collection::vec(any::<bool>(), 0..8).prop_map(Array::Bool),
        prop::collection::vec(text(), 0..8).prop_map(Array::String),
        prop::collection::vec(any::<u64>(), 0..8).prop_map(Array::U64),
        prop::collection::vec(any::<i64>(), 0..8).prop_map(Array::I64),
        prop::collection::vec(finite_f64(), 0..8).prop_map(Array::F64),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Array::Array)
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        finite_f32().prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        text().prop_map(Value::String),
        array().prop_map(Value::Array),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        finite_f64().prop_map(Value::F64),
    ]
}

fn metadata() -> impl Strategy<Value = Metadata> {
    (
        prop::collection::vec(("[a-z._]{1,16}", value()), 0..12),
        prop::option::of(0u32..9),
    )
        .prop_map(|(kvs, align_pow)| {
            let mut md = Metadata::new();
            for (k, v) in kvs {
                if k != "general.alignment" {
                    md.set(k, v);
                }
            }
            if let Some(p) = align_pow {
                md.set("general.alignment", Value::U32(1 << p));
            }
            md
        })
}

/// (name, type, shape, bytes) with ne0 a whole number of blocks.
type Tensor = (String, GgmlType, Vec<u64>, Vec<u8>);

fn tensor() -> impl Strategy<Value = Tensor> {
    (
        "[a-z0-9_.]{1,63}",
        prop::sample::select(GgmlType::ALL.to_vec()),
        1u64..3,
        prop::collection::vec(1u64..4, 0..4),
    )
        .prop_flat_map(|(name, ty, blocks, rest)| {
            let mut shape = vec![blocks * ty.block_size() as u64];
            shape.extend(rest);
            let n: u64 = shape.iter().product();
            let size = ty.row_bytes(n).unwrap() as usize;
            let bytes = prop::collection::vec(any::<u8>(), size..=size);
            (Just(name), Just(ty), Just(shape), bytes)
        })
}

fn tensors() -> impl Strategy<Value = Vec<Tensor>> {
    prop::collection::vec(tensor(), 0..6).prop_map(|mut v| {
        let mut seen = std::collections::HashSet::new();
        v.retain(|t| seen.insert(t.0.clone()));
        v
    })
}

fn check_same(f: &GgufFile, md: &Metadata, ts: &[Tensor]) {
    assert_eq!(f.version(), 3);
    assert_eq!(f.metadata(), md);
    assert_eq!(f.tensors().len(), ts.len());
    for (name, ty, shape, bytes) in ts {
        let t = f.require(name).unwrap();
        assert_eq!(t.ty, *ty);
        assert_eq!(&t.shape, shape);
        assert_eq!(t.offset % f.alignment(), 0);
        assert_eq!(f.data(t), &bytes[..]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn write_then_read_gives_back_the_same(md in metadata(), ts in tensors()) {
        let mut w = GgufWriter::new(md.clone()).unwrap();
        for (name, ty, shape, bytes) in &ts {
            w.add_tensor(name, *ty, shape, bytes.clone()).unwrap();
        }
        let path = TempPath::new("model.gguf");
        w.write_to_path(&path.0).unwrap();
        prop_assert_eq!(std::fs::metadata(&path.0).unwrap().len(), w.file_size());
        prop_assert!(!path.0.with_extension("gguf.tmp").exists());
        let f = GgufFile::open(&path.0).unwrap();
        check_same(&f, &md, &ts);
        // The same bytes in memory.
        let h = Header::parse(&w.to_bytes().unwrap()).unwrap();
        prop_assert_eq!(&h.metadata, &md);
    }

    #[test]
    fn streamed_in_pieces_reads_back_the_same(md in metadata(), ts in tensors(), piece in 1usize..40) {
        let mut w = GgufWriter::new(md.clone()).unwrap();
        // Every other tensor is streamed, the others are given with their bytes.
        for (i, (name, ty, shape, bytes)) in ts.iter().enumerate() {
            if i % 2 == 0 {
                w.declare_tensor(name, *ty, shape).unwrap();
            } else {
                w.add_tensor(name, *ty, shape, bytes.clone()).unwrap();
            }
        }
        let path = TempPath::new("streamed.gguf");
        w.write_to_path_with(&path.0, |t, out| {
            let (_, _, _, bytes) = ts.iter().find(|x| x.0 == t.name).unwrap();
            bytes.chunks(piece).try_for_each(|c| out.write(c))
        }).unwrap();
        check_same(&GgufFile::open(&path.0).unwrap(), &md, &ts);
    }

    #[test]
    fn split_files_read_back_as_one_model(ts in tensors(), per_shard in 1usize..4) {
        prop_assume!(!ts.is_empty());
        let mut md = Metadata::new();
        md.set("general.architecture", Value::String("llama".into()));
        let mut w = GgufWriter::new(md).unwrap();
        for (name, ty, shape, bytes) in &ts {
            w.add_tensor(name, *ty, shape, bytes.clone()).unwrap();
        }
        let dir = TempPath::new("x");
        let paths = w.write_split(dir.0.with_file_name("model"), per_shard).unwrap();
        let count = ts.len().div_ceil(per_shard);
        prop_assert_eq!(paths.len(), count);
        // Any shard opens the whole model.
        for p in &paths {
            let f = GgufFile::open(p).unwrap();
            prop_assert_eq!(f.paths().len(), count);
            prop_assert_eq!(f.tensors().len(), ts.len());
            prop_assert_eq!(f.architecture().unwrap(), "llama");
            for (name, _, _, bytes) in &ts {
                prop_assert_eq!(f.data(f.require(name).unwrap()), &bytes[..]);
            }
        }
    }
}

#[test]
fn streaming_refuses_too_many_or_too_few_bytes() {
    let mut w = GgufWriter::new(Metadata::new()).unwrap();
    w.declare_tensor("a", GgmlType::F32, &[4]).unwrap();
    let path = TempPath::new("bad.gguf");
    let mut s = w.stream_to_path(&path.0).unwrap();
    assert_eq!(s.next_tensor().unwrap().name, "a");
    let err = s.write(&[0u8; 17]).unwrap_err().to_string();
    assert!(err.contains("17 bytes written, only 16"), "{err}");
    s.write(&[0u8; 8]).unwrap();
    let err = s.finish().unwrap_err().to_string();
    assert!(
        err.contains("tensor a was not written (8 of 16 bytes)"),
        "{err}"
    );
    // Nothing is left behind: neither the file nor its temporary.
    assert!(!path.0.exists());
    assert!(!PathBuf::from(format!("{}.tmp", path.0.display())).exists());

    let err = w
        .write_to_path_with(&path.0, |_, out| out.write(&[0u8; 4]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("4 of 16 bytes"), "{err}");
    assert!(w.write_to_path(&path.0).is_err());
}

#[test]
fn sparse_file_has_the_layout_of_a_38_gb_model() {
    // The shapes of a 70B llama in Q4_K: 80 layers, 7 matrices each.
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("llama".into()));
    md.set("llama.block_count", Value::U32(80));
    let mut w = GgufWriter::new(md).unwrap();
    let shapes = [
        ("attn_q", [8192, 8192]),
        ("attn_k", [8192, 1024]),
        ("attn_v", [8192, 1024]),
        ("attn_output", [8192, 8192]),
        ("ffn_gate", [8192, 28672]),
        ("ffn_up", [8192, 28672]),
        ("ffn_down", [28672, 8192]),
    ];
    for layer in 0..80 {
        for (name, shape) in shapes {
            w.declare_tensor(&format!("blk.{layer}.{name}.weight"), GgmlType::Q4K, &shape)
                .unwrap();
        }
    }
    let path = TempPath::new("big.gguf");
    w.write_sparse(&path.0).unwrap();
    let len = std::fs::metadata(&path.0).unwrap().len();
    assert_eq!(len, w.file_size());
    let per_layer: u64 = shapes.iter().map(|(_, s)| s[0] * s[1] / 256 * 144).sum();
    assert_eq!(len, w.data_offset() + 80 * per_layer);
    assert!(len > 38_000_000_000, "{len}");
    let f = GgufFile::open(&path.0).unwrap();
    assert_eq!(f.tensors().len(), 560);
    assert_eq!(f.file_size(), len);
    let t = f.require("blk.79.ffn_down.weight").unwrap();
    assert_eq!(t.size, 28672 / 256 * 144 * 8192);
    assert_eq!(t.offset + t.size, len - w.data_offset());
    // The data region was never written: it reads as zeros.
    assert!(f.data(t)[..4096].iter().all(|&b| b == 0));
}
