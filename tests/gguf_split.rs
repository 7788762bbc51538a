//! Split models: any shard opens all of them as one model, and every inconsistency between
//! the shards is an error that says which.

use std::path::{Path, PathBuf};
use strait::gguf::{split_name_parts, split_path, GgufFile, GgufWriter, Metadata, Value};
use strait::quant::GgmlType;

/// A fresh directory in the temp directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("strait-gguf-split-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn model(n_tensors: usize) -> GgufWriter {
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("llama".into()));
    md.set("llama.block_count", Value::U32(n_tensors as u32));
    let mut w = GgufWriter::new(md).unwrap();
    for i in 0..n_tensors {
        let bytes: Vec<u8> = (0..34).map(|b| (b + i) as u8).collect();
        w.add_tensor(&format!("blk.{i}.w"), GgmlType::Q8_0, &[32], bytes)
            .unwrap();
    }
    w
}

fn err(path: &Path) -> String {
    GgufFile::open(path).unwrap_err().to_string()
}

#[test]
fn any_shard_opens_the_whole_model() {
    let dir = TempDir::new("whole");
    let paths = model(7).write_split(dir.0.join("m"), 3).unwrap();
    let names: Vec<_> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "m-00001-of-00003.gguf",
            "m-00002-of-00003.gguf",
            "m-00003-of-00003.gguf"
        ]
    );
    for p in &paths {
        let f = GgufFile::open(p).unwrap();
        assert_eq!(
            f.paths(),
            paths.iter().map(|p| p.as_path()).collect::<Vec<_>>()
        );
        // Metadata of the first shard, with the keys gguf-split writes, in its types.
        let md = f.metadata();
        assert_eq!(md.u32("llama.block_count").unwrap(), 7);
        assert_eq!(md.get("split.no"), Some(&Value::U16(0)));
        assert_eq!(md.get("split.count"), Some(&Value::U16(3)));
        assert_eq!(md.get("split.tensors.count"), Some(&Value::I32(7)));
        // Tensors of all shards, in order, with their bytes.
        assert_eq!(f.tensors().len(), 7);
        for (i, t) in f.tensors().iter().enumerate() {
            assert_eq!(t.name, format!("blk.{i}.w"));
            assert_eq!(t.shard, i / 3);
            let want: Vec<u8> = (0..34).map(|b| (b + i) as u8).collect();
            assert_eq!(f.data(t), &want[..]);
        }
        let sizes: u64 = paths
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(f.file_size(), sizes);
        assert_eq!(f.n_params(), 7 * 32);
    }
    // Later shards hold only the split keys.
    let second = GgufFile::open(&paths[1]);
    assert!(second.is_ok());
    let raw = std::fs::read(&paths[1]).unwrap();
    let h = strait::gguf::Header::parse(&raw).unwrap();
    let keys: Vec<_> = h.metadata.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["split.no", "split.count", "split.tensors.count"]);
}

#[test]
fn split_names() {
    let p = Path::new("/x/qwen-7b-00002-of-00005.gguf");
    assert_eq!(split_name_parts(p), Some(("qwen-7b".into(), 2, 5)));
    assert_eq!(split_name_parts(Path::new("/x/qwen-7b.gguf")), None);
    assert_eq!(split_name_parts(Path::new("m-1-of-2.gguf")), None);
    assert_eq!(
        split_path(Path::new("/x/qwen-7b"), 3, 5),
        PathBuf::from("/x/qwen-7b-00003-of-00005.gguf")
    );
}

#[test]
fn a_missing_shard_is_named() {
    let dir = TempDir::new("missing");
    let paths = model(6).write_split(dir.0.join("m"), 2).unwrap();
    std::fs::remove_file(&paths[1]).unwrap();
    for p in [&paths[0], &paths[2]] {
        let e = err(p);
        assert!(
            e.contains("shard 2 of 3 is missing") && e.contains("m-00002-of-00003.gguf"),
            "{e}"
        );
    }
}

/// Writes one shard with the given split keys (None: key left out) and tensors.
fn shard(path: &Path, no: Option<u16>, count: Option<u16>, total: Option<i32>, names: &[&str]) {
    let mut md = Metadata::new();
    if let Some(no) = no {
        md.set("split.no", Value::U16(no));
    }
    if let Some(count) = count {
        md.set("split.count", Value::U16(count));
    }
    if let Some(total) = total {
        md.set("split.tensors.count", Value::I32(total));
    }
    let mut w = GgufWriter::new(md).unwrap();
    for name in names {
        w.add_tensor(name, GgmlType::F32, &[2], vec![0u8; 8])
            .unwrap();
    }
    w.write_to_path(path).unwrap();
}

#[test]
fn split_no_that_does_not_match_the_name() {
    let dir = TempDir::new("no");
    let p = |no| split_path(&dir.0.join("m"), no, 2);
    shard(&p(1), Some(0), Some(2), Some(2), &["a"]);
    shard(&p(2), Some(0), Some(2), Some(2), &["b"]);
    let e = err(&p(1));
    assert!(
        e.contains("m-00002-of-00002.gguf: split.no = 0, split.count = 2, expected 1 and 2"),
        "{e}"
    );
    shard(&p(2), None, Some(2), Some(2), &["b"]);
    assert!(err(&p(1)).contains("split.no = missing"), "{}", err(&p(1)));
}

#[test]
fn split_count_that_does_not_match_the_name() {
    let dir = TempDir::new("count");
    let p = split_path(&dir.0.join("m"), 1, 2);
    shard(&p, Some(0), Some(3), Some(1), &["a"]);
    let e = err(&p);
    assert!(e.contains("says split.count = 3, its name says 2"), "{e}");
    // A split file renamed to a plain name.
    let plain = dir.0.join("plain.gguf");
    std::fs::rename(&p, &plain).unwrap();
    let e = err(&plain);
    assert!(
        e.contains("split.count = 3 but its name is not of the form"),
        "{e}"
    );
    // The second shard disagrees with the first about the count.
    let p = |no| split_path(&dir.0.join("n"), no, 2);
    shard(&p(1), Some(0), Some(2), Some(2), &["a"]);
    shard(&p(2), Some(1), Some(5), Some(2), &["b"]);
    let e = err(&p(1));
    assert!(e.contains("split.count = 5"), "{e}");
}

#[test]
fn split_tensors_count_is_checked() {
    let dir = TempDir::new("tensors");
    let p = |no| split_path(&dir.0.join("m"), no, 2);
    shard(&p(1), Some(0), Some(2), Some(3), &["a"]);
    shard(&p(2), Some(1), Some(2), Some(3), &["b"]);
    let e = err(&p(2));
    assert!(
        e.contains("split.tensors.count is 3 but the 2 shards hold 2 tensors"),
        "{e}"
    );
    shard(&p(1), Some(0), Some(2), None, &["a"]);
    let e = err(&p(2));
    assert!(e.contains("split.tensors.count is missing"), "{e}");
}

#[test]
fn a_tensor_in_two_shards_is_refused() {
    let dir = TempDir::new("dup");
    let p = |no| split_path(&dir.0.join("m"), no, 2);
    shard(&p(1), Some(0), Some(2), Some(2), &["a"]);
    shard(&p(2), Some(1), Some(2), Some(2), &["a"]);
    let e = err(&p(1));
    assert!(e.contains("tensor a is in shard 1 and in shard 2"), "{e}");
}

#[test]
fn a_malformed_shard_names_its_path() {
    let dir = TempDir::new("bad");
    let paths = model(4).write_split(dir.0.join("m"), 2).unwrap();
    let mut raw = std::fs::read(&paths[1]).unwrap();
    raw[0] = b'X';
    std::fs::write(&paths[1], raw).unwrap();
    let e = err(&paths[0]);
    assert!(
        e.contains("m-00002-of-00002.gguf") && e.contains("not a GGUF file"),
        "{e}"
    );
}
