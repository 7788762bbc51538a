//! Every malformed header is its own error, naming the field and the byte offset. Each test
//! builds its bad file byte by byte.

use strait::error::GgufError;
use strait::gguf::{GgufFile, Header, MAX_DEPTH, MAX_LEN};
use strait::Error;

// Value type ids (gguf_type).
const U8: u32 = 0;
const U16: u32 = 2;
const U32: u32 = 4;
const I32: u32 = 5;
const BOOL: u32 = 7;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
// ggml type ids.
const F32: u32 = 0;
const Q4_0: u32 = 2;
const F64: u32 = 28;

/// A GGUF file written by hand, field by field.
struct Raw {
    b: Vec<u8>,
    v1: bool,
}

impl Raw {
    /// Magic, version and the two counts.
    fn new(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw {
            b: b"GGUF".to_vec(),
            v1: version == 1,
        };
        r.u32(version);
        r.len(n_tensors);
        r.len(n_kv);
        r
    }

    fn v3(n_tensors: u64, n_kv: u64) -> Raw {
        Raw::new(3, n_tensors, n_kv)
    }

    /// Where the next field starts.
    fn at(&self) -> u64 {
        self.b.len() as u64
    }

    fn u8(&mut self, x: u8) -> &mut Raw {
        self.b.push(x);
        self
    }

    fn u32(&mut self, x: u32) -> &mut Raw {
        self.b.extend_from_slice(&x.to_le_bytes());
        self
    }

    fn u64(&mut self, x: u64) -> &mut Raw {
        self.b.extend_from_slice(&x.to_le_bytes());
        self
    }

    /// A count or length: u32 in version 1, u64 after.
    fn len(&mut self, x: u64) -> &mut Raw {
        if self.v1 {
            self.u32(x as u32)
        } else {
            self.u64(x)
        }
    }

    fn str(&mut self, s: &str) -> &mut Raw {
        self.len(s.len() as u64);
        self.b.extend_from_slice(s.as_bytes());
        self
    }

    /// A key and a value type; the value follows.
    fn key(&mut self, key: &str, ty: u32) -> &mut Raw {
        self.str(key).u32(ty)
    }

    fn kv_u32(&mut self, key: &str, x: u32) -> &mut Raw {
        self.key(key, U32).u32(x)
    }

    /// A tensor info with its name, shape, ggml type id and data offset.
    fn tensor(&mut self, name: &str, shape: &[u64], ty: u32, offset: u64) -> &mut Raw {
        self.str(name).u32(shape.len() as u32);
        for &d in shape {
            self.len(d);
        }
        self.u32(ty).u64(offset)
    }

    /// Pads to `align` and appends `n` bytes of data.
    fn data(&mut self, align: usize, n: usize) -> &mut Raw {
        let start = self.b.len().div_ceil(align) * align;
        self.b.resize(start + n, 0x55);
        self
    }

    fn parse(&self) -> Result<Header, GgufError> {
        Header::parse(&self.b)
    }

    fn err(&self) -> GgufError {
        let e = self.parse().unwrap_err();
        // Every message names a byte offset or the field it is about.
        let msg = e.to_string();
        assert!(msg.contains("offset") || msg.contains("tensor"), "{msg}");
        e
    }
}

#[test]
fn valid_file_of_each_version_parses() {
    for version in [1, 2, 3] {
        let mut r = Raw::new(version, 2, 2);
        r.kv_u32("llama.block_count", 4)
            .key("general.name", STRING)
            .str("tiny")
            .tensor("a", &[32, 2], Q4_0, 0)
            .tensor("b", &[3], F32, 64)
            .data(32, 76);
        let h = r.parse().unwrap();
        assert_eq!(h.version, version);
        assert_eq!(h.metadata.u32("llama.block_count").unwrap(), 4);
        assert_eq!(h.metadata.str("general.name").unwrap(), "tiny");
        assert_eq!(h.tensors[0].size, 36);
        assert_eq!(h.tensors[1].offset, 64);
        assert_eq!(h.tensors[1].size, 12);
        assert_eq!(h.data_offset % 32, 0);
    }
}

#[test]
fn bad_magic() {
    let mut r = Raw::v3(0, 0);
    r.b[..4].copy_from_slice(b"GGML");
    assert_eq!(r.err(), GgufError::BadMagic { found: *b"GGML" });
    assert_eq!(
        Header::parse(b"GG").unwrap_err(),
        GgufError::BadMagic {
            found: [b'G', b'G', 0, 0]
        }
    );
}

#[test]
fn unknown_version() {
    let r = Raw::new(4, 0, 0);
    assert_eq!(r.err(), GgufError::UnsupportedVersion { version: 4 });
    assert!(r.err().to_string().contains("version 4 at offset 4"));
    assert_eq!(
        Raw::new(0, 0, 0).err(),
        GgufError::UnsupportedVersion { version: 0 }
    );
}

#[test]
fn big_endian_file_is_refused_by_name() {
    let mut r = Raw::v3(0, 0);
    r.b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(r.err(), GgufError::BigEndian { version: 3 });
    assert!(r.err().to_string().contains("big-endian"));
}

#[test]
fn tensor_count_that_cannot_fit() {
    let r = Raw::v3(1 << 40, 0);
    assert_eq!(
        r.err(),
        GgufError::CountTooLarge {
            field: "tensor_count",
            count: 1 << 40,
            offset: 8,
            remaining: 0,
        }
    );
}

#[test]
fn key_count_that_cannot_fit() {
    let mut r = Raw::v3(0, 3);
    r.kv_u32("a", 1);
    assert_eq!(
        r.err(),
        GgufError::CountTooLarge {
            field: "metadata_kv_count",
            count: 3,
            offset: 16,
            remaining: 17,
        }
    );
}

#[test]
fn string_longer_than_the_remaining_bytes() {
    let mut r = Raw::v3(0, 1);
    r.key("general.name", STRING);
    let at = r.at();
    r.len(100).b.extend_from_slice(b"short");
    assert_eq!(
        r.err(),
        GgufError::StringTooLong {
            field: "general.name".into(),
            len: 100,
            offset: at,
            limit: 5,
        }
    );
}

/// A file of `total` bytes whose tail is a hole: the reader sees a 1 GiB+ file without the
/// test writing one.
fn sparse_file(r: &Raw, total: u64, name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "strait-gguf-validation-{}-{name}.gguf",
        std::process::id()
    ));
    std::fs::write(&path, &r.b).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(total).unwrap();
    path
}

fn open_err(path: &std::path::Path) -> GgufError {
    let e = GgufFile::open(path).unwrap_err();
    std::fs::remove_file(path).unwrap();
    match e {
        Error::GgufFile { source, .. } => source,
        other => panic!("expected a GGUF error, got {other}"),
    }
}

#[test]
fn string_over_1_gib_in_a_larger_file() {
    let mut r = Raw::v3(0, 1);
    r.key("general.name", STRING);
    let at = r.at();
    r.len(MAX_LEN + 1);
    let path = sparse_file(&r, 2 * MAX_LEN, "string");
    assert_eq!(
        open_err(&path),
        GgufError::StringTooLong {
            field: "general.name".into(),
            len: MAX_LEN + 1,
            offset: at,
            limit: MAX_LEN,
        }
    );
}

#[test]
fn array_longer_than_the_remaining_bytes() {
    let mut r = Raw::v3(0, 1);
    r.key("tokenizer.ggml.scores", ARRAY).u32(U32);
    let at = r.at();
    r.len(10).u32(1).u32(2);
    assert_eq!(
        r.err(),
        GgufError::ArrayTooLong {
            key: "tokenizer.ggml.scores".into(),
            len: 10,
            offset: at,
            limit: 2,
        }
    );
}

#[test]
fn array_over_1_gib_in_a_larger_file() {
    let mut r = Raw::v3(0, 1);
    r.key("tokenizer.ggml.token_type", ARRAY).u32(U8);
    let at = r.at();
    r.len(MAX_LEN + 1);
    let path = sparse_file(&r, 2 * MAX_LEN, "array");
    assert_eq!(
        open_err(&path),
        GgufError::ArrayTooLong {
            key: "tokenizer.ggml.token_type".into(),
            len: MAX_LEN + 1,
            offset: at,
            limit: MAX_LEN,
        }
    );
}

#[test]
fn arrays_nested_deeper_than_64() {
    let nest = |levels: usize| {
        let mut r = Raw::v3(0, 1);
        r.key("deep", ARRAY);
        for _ in 1..levels {
            r.u32(ARRAY).len(1);
        }
        let at = r.at();
        r.u32(U8).len(0);
        (r, at)
    };
    // 64 levels are accepted.
    let (ok, _) = nest(MAX_DEPTH);
    assert!(ok.parse().is_ok());
    let (r, at) = nest(MAX_DEPTH + 1);
    assert_eq!(
        r.err(),
        GgufError::NestingTooDeep {
            key: "deep".into(),
            offset: at,
            limit: MAX_DEPTH,
        }
    );
}

#[test]
fn bool_that_is_not_0_or_1() {
    let mut r = Raw::v3(0, 1);
    r.key("flag", BOOL);
    let at = r.at();
    r.u8(2);
    assert_eq!(
        r.err(),
        GgufError::InvalidBool {
            key: "flag".into(),
            value: 2,
            offset: at,
        }
    );
    // In an array too.
    let mut r = Raw::v3(0, 1);
    r.key("flags", ARRAY).u32(BOOL).len(3).u8(1).u8(0);
    let at = r.at();
    r.u8(255);
    assert_eq!(
        r.err(),
        GgufError::InvalidBool {
            key: "flags".into(),
            value: 255,
            offset: at,
        }
    );
}

#[test]
fn unknown_value_type() {
    let mut r = Raw::v3(0, 1);
    r.str("x");
    let at = r.at();
    r.u32(13).u32(0);
    assert_eq!(
        r.err(),
        GgufError::UnknownValueType {
            key: "x".into(),
            type_id: 13,
            offset: at,
        }
    );
}

#[test]
fn duplicate_keys() {
    let mut r = Raw::v3(0, 2);
    r.kv_u32("llama.block_count", 1);
    let at = r.at();
    r.kv_u32("llama.block_count", 2);
    assert_eq!(
        r.err(),
        GgufError::DuplicateKey {
            key: "llama.block_count".into(),
            offset: at,
        }
    );
}

fn with_alignment(ty: u32, value: &[u8]) -> (Raw, u64) {
    let mut r = Raw::v3(0, 1);
    r.key("general.alignment", ty);
    let at = r.at();
    r.b.extend_from_slice(value);
    (r, at)
}

#[test]
fn alignment_zero() {
    let (r, at) = with_alignment(U32, &0u32.to_le_bytes());
    assert_eq!(r.err(), GgufError::AlignmentZero { offset: at });
}

#[test]
fn alignment_not_a_power_of_two() {
    let (r, at) = with_alignment(U32, &48u32.to_le_bytes());
    assert_eq!(
        r.err(),
        GgufError::AlignmentNotPowerOfTwo {
            value: 48,
            offset: at,
        }
    );
}

#[test]
fn alignment_not_a_u32() {
    let (r, at) = with_alignment(U16, &32u16.to_le_bytes());
    assert_eq!(
        r.err(),
        GgufError::AlignmentNotU32 {
            found: "U16 32".into(),
            offset: at,
        }
    );
}

#[test]
fn alignment_is_used_for_offsets_and_data() {
    let mut r = Raw::v3(2, 1);
    r.kv_u32("general.alignment", 64)
        .tensor("a", &[4], F32, 0)
        .tensor("b", &[4], F32, 64)
        .data(64, 80);
    let h = r.parse().unwrap();
    assert_eq!(h.alignment, 64);
    assert_eq!(h.data_offset % 64, 0);
    let mut r = Raw::v3(1, 1);
    r.kv_u32("general.alignment", 64);
    let at = r.at();
    r.tensor("a", &[4], F32, 32).data(64, 64);
    assert_eq!(
        r.err(),
        GgufError::MisalignedTensor {
            name: "a".into(),
            data_offset: 32,
            alignment: 64,
            offset: at + 8 + 1 + 4 + 8 + 4,
        }
    );
}

#[test]
fn tensor_name_empty() {
    let mut r = Raw::v3(1, 0);
    let at = r.at();
    r.tensor("", &[4], F32, 0).data(32, 16);
    assert_eq!(
        r.err(),
        GgufError::TensorNameEmpty {
            index: 0,
            offset: at,
        }
    );
}

#[test]
fn tensor_name_over_64_bytes() {
    let mut r = Raw::v3(1, 0);
    let at = r.at();
    r.tensor(&"x".repeat(65), &[4], F32, 0).data(32, 16);
    assert_eq!(
        r.err(),
        GgufError::TensorNameTooLong {
            len: 65,
            offset: at,
            limit: 64,
        }
    );
    let mut ok = Raw::v3(1, 0);
    ok.tensor(&"x".repeat(64), &[4], F32, 0).data(32, 16);
    assert!(ok.parse().is_ok());
}

#[test]
fn tensor_name_duplicated() {
    let mut r = Raw::v3(2, 0);
    r.tensor("w", &[4], F32, 0);
    let at = r.at();
    r.tensor("w", &[4], F32, 32).data(32, 48);
    assert_eq!(
        r.err(),
        GgufError::DuplicateTensor {
            name: "w".into(),
            offset: at,
        }
    );
}

#[test]
fn n_dims_zero_or_over_4() {
    for n_dims in [0u32, 5] {
        let mut r = Raw::v3(1, 0);
        r.str("w");
        let at = r.at();
        r.u32(n_dims);
        for _ in 0..n_dims {
            r.u64(1);
        }
        r.u32(F32).u64(0).data(32, 4);
        assert_eq!(
            r.err(),
            GgufError::BadDimCount {
                name: "w".into(),
                n_dims,
                offset: at,
            }
        );
    }
}

#[test]
fn zero_dimension() {
    let mut r = Raw::v3(1, 0);
    r.str("w").u32(3).u64(4);
    let at = r.at();
    r.u64(0).u64(2).u32(F32).u64(0);
    assert_eq!(
        r.err(),
        GgufError::ZeroDimension {
            name: "w".into(),
            dim: 1,
            offset: at,
        }
    );
}

#[test]
fn element_count_that_overflows() {
    let mut r = Raw::v3(1, 0);
    r.str("w");
    let at = r.at();
    r.u32(4).u64(1 << 20).u64(1 << 20).u64(1 << 20).u64(1 << 20);
    r.u32(F32).u64(0);
    assert_eq!(
        r.err(),
        GgufError::TensorTooLarge {
            name: "w".into(),
            shape: vec![1 << 20; 4],
            offset: at,
        }
    );
}

#[test]
fn byte_size_that_overflows() {
    // 2^62 elements fit in u64, their 8-byte F64 values do not.
    let mut r = Raw::v3(1, 0);
    r.str("w");
    let at = r.at();
    r.u32(2).u64(1 << 31).u64(1 << 31).u32(F64).u64(0);
    assert_eq!(
        r.err(),
        GgufError::TensorTooLarge {
            name: "w".into(),
            shape: vec![1 << 31, 1 << 31],
            offset: at,
        }
    );
}

#[test]
fn row_length_not_a_multiple_of_the_block_size() {
    let mut r = Raw::v3(1, 0);
    r.str("w");
    let at = r.at();
    r.u32(2).u64(48).u64(2).u32(Q4_0).u64(0).data(32, 64);
    assert_eq!(
        r.err(),
        GgufError::RowNotBlockMultiple {
            name: "w".into(),
            ne0: 48,
            ty: "Q4_0",
            block: 32,
            offset: at,
        }
    );
}

#[test]
fn unknown_type_id() {
    let mut r = Raw::v3(1, 0);
    r.str("w").u32(1).u64(4);
    let at = r.at();
    r.u32(43).u64(0).data(32, 16);
    assert_eq!(
        r.err(),
        GgufError::UnknownType {
            name: "w".into(),
            id: 43,
            offset: at,
        }
    );
}

#[test]
fn removed_type_ids_are_refused_by_name() {
    let removed = [
        (4, "Q4_2"),
        (5, "Q4_3"),
        (31, "Q4_0_4_4"),
        (32, "Q4_0_4_8"),
        (33, "Q4_0_8_8"),
        (36, "IQ4_NL_4_4"),
        (37, "IQ4_NL_4_8"),
        (38, "IQ4_NL_8_8"),
    ];
    for (id, ty_name) in removed {
        let mut r = Raw::v3(1, 0);
        r.str("w").u32(1).u64(256);
        let at = r.at();
        r.u32(id).u64(0).data(32, 1024);
        let e = r.err();
        assert_eq!(
            e,
            GgufError::RemovedType {
                name: "w".into(),
                id,
                ty_name,
                offset: at,
            }
        );
        assert!(e.to_string().contains(ty_name));
    }
}

#[test]
fn every_type_id_in_use_is_read() {
    use strait::quant::GgmlType;
    for ty in GgmlType::ALL {
        let ne0 = ty.block_size() as u64 * 2;
        let size = ty.row_bytes(ne0 * 3).unwrap() as usize;
        let mut r = Raw::v3(1, 0);
        r.tensor("w", &[ne0, 3], ty.id(), 0).data(32, size);
        let h = r.parse().unwrap();
        assert_eq!(h.tensors[0].ty, ty);
        assert_eq!(h.tensors[0].size, size as u64, "{ty}");
    }
}

#[test]
fn tensor_offset_not_aligned() {
    let mut r = Raw::v3(1, 0);
    let at = r.at();
    r.tensor("w", &[4], F32, 8).data(32, 24);
    assert_eq!(
        r.err(),
        GgufError::MisalignedTensor {
            name: "w".into(),
            data_offset: 8,
            alignment: 32,
            offset: at + 8 + 1 + 4 + 8 + 4,
        }
    );
}

#[test]
fn tensor_data_past_the_end_of_the_file() {
    let mut r = Raw::v3(2, 0);
    r.tensor("a", &[4], F32, 0)
        .tensor("b", &[8], F32, 32)
        .data(32, 60);
    let e = r.err();
    assert_eq!(
        e,
        GgufError::TensorOutOfBounds {
            name: "b".into(),
            data_offset: 32,
            size: 32,
            available: 60,
        }
    );
    assert!(e.to_string().contains("needs 32 bytes at data offset 32"));
    // An offset near u64::MAX does not wrap around.
    let mut r = Raw::v3(1, 0);
    r.tensor("a", &[4], F32, u64::MAX - 31).data(32, 16);
    assert!(matches!(r.err(), GgufError::TensorOutOfBounds { .. }));
}

#[test]
fn tensors_that_overlap() {
    let mut r = Raw::v3(2, 0);
    r.tensor("a", &[16], F32, 0)
        .tensor("b", &[16], F32, 64)
        .data(32, 128);
    assert!(r.parse().is_ok());
    let mut r = Raw::v3(2, 0);
    r.tensor("a", &[16], F32, 64)
        .tensor("b", &[16], F32, 96)
        .data(32, 160);
    assert_eq!(
        r.err(),
        GgufError::TensorsOverlap {
            a: "a".into(),
            b: "b".into(),
            a_end: 128,
            b_start: 96,
        }
    );
}

#[test]
fn truncated_header() {
    let mut r = Raw::v3(1, 1);
    r.kv_u32("k", 7).tensor("w", &[4], F32, 0).data(32, 16);
    let full = r.b.clone();
    let data_start = r.parse().unwrap().data_offset as usize;
    for n in 0..data_start {
        assert!(Header::parse(&full[..n]).is_err(), "{n} bytes");
    }
    // Header 24 bytes, the key/value 17, the name 9 and n_dims 4: cut into ne[0].
    r.b.truncate(24 + 17 + 9 + 4 + 4);
    assert_eq!(
        r.err(),
        GgufError::Truncated {
            field: "w.ne[0]".into(),
            offset: 54,
            need: 8,
            have: 4,
        }
    );
}

#[test]
fn invalid_utf8_in_a_string() {
    let mut r = Raw::v3(0, 1);
    r.key("general.name", STRING);
    let at = r.at();
    r.len(2).u8(0xff).u8(0xfe);
    assert_eq!(
        r.err(),
        GgufError::InvalidUtf8 {
            field: "general.name".into(),
            offset: at,
        }
    );
}

#[test]
fn accessors_say_what_was_expected_and_found() {
    let mut r = Raw::v3(0, 5);
    r.key("llama.block_count", STRING)
        .str("thirty")
        .key("a.u8", U8)
        .u8(7)
        .key("a.neg", I32)
        .u32((-5i32) as u32)
        .key("a.big", U32)
        .u32(u32::MAX)
        .key("a.list", ARRAY)
        .u32(U16)
        .len(2)
        .u32(0x0002_0001);
    let md = r.parse().unwrap().metadata;
    let msg = |e: Error| e.to_string();
    assert_eq!(
        msg(md.u32("llama.block_count").unwrap_err()),
        "metadata key llama.block_count: expected an integer, found STRING"
    );
    // Any integer type whose value fits.
    assert_eq!(md.u32("a.u8").unwrap(), 7);
    assert_eq!(md.u64("a.u8").unwrap(), 7);
    assert_eq!(md.i32("a.neg").unwrap(), -5);
    assert_eq!(md.i64("a.big").unwrap(), u32::MAX as i64);
    assert_eq!(
        msg(md.u32("a.neg").unwrap_err()),
        "metadata key a.neg: expected an integer that fits in u32, found I32 -5"
    );
    assert_eq!(
        msg(md.i32("a.big").unwrap_err()),
        "metadata key a.big: expected an integer that fits in i32, found U32 4294967295"
    );
    assert_eq!(md.f32("a.u8").unwrap(), 7.0);
    assert_eq!(
        msg(md.str("a.u8").unwrap_err()),
        "metadata key a.u8: expected a STRING, found U8 7"
    );
    assert_eq!(
        msg(md.opt_str_array("a.list").unwrap_err()),
        "metadata key a.list: expected an ARRAY of STRING, found ARRAY of U16 (2 elements)"
    );
    assert_eq!(md.opt_int_array("a.list").unwrap(), Some(vec![1, 2]));
    assert_eq!(
        msg(md.u32("missing").unwrap_err()),
        "metadata key missing is missing"
    );
    assert_eq!(md.opt_u32("missing").unwrap(), None);
}

#[test]
fn bool_and_float_accessors() {
    let mut r = Raw::v3(0, 3);
    r.key("a.flag", BOOL)
        .u8(1)
        .key("a.eps", 6)
        .u32(1e-5f32.to_bits())
        .key("a.name", STRING)
        .str("x");
    let md = r.parse().unwrap().metadata;
    assert!(md.bool("a.flag").unwrap());
    assert_eq!(md.opt_f64("a.eps").unwrap(), Some(1e-5f32 as f64));
    assert_eq!(
        md.bool("a.name").unwrap_err().to_string(),
        "metadata key a.name: expected a BOOL, found STRING"
    );
    assert_eq!(
        md.opt_f64("a.name").unwrap_err().to_string(),
        "metadata key a.name: expected a number, found STRING"
    );
    assert_eq!(md.opt_bool("a.missing").unwrap(), None);
}
