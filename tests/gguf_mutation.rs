//! Real headers, mutated (truncated, bits flipped, lengths and counts made huge, bytes cut
//! out): the parser answers with an `Err` or a valid header, never a panic.

mod common;

use proptest::prelude::*;
use std::sync::OnceLock;
use strait::gguf::Header;

/// The header of a real file: its bytes up to the data section (tensors then point past the
/// end), or the whole file when it is small.
fn header_of(path: std::path::PathBuf, whole: bool) -> Vec<u8> {
    let bytes = std::fs::read(&path).unwrap();
    if whole {
        return bytes;
    }
    // The data section starts where parsing the whole file says it does.
    let h = Header::parse(&bytes).unwrap();
    bytes[..h.data_offset as usize].to_vec()
}

/// The inputs: SmolLM2's header (GPT-2 BPE vocabulary and merges), the header of a small
/// SentencePiece model (scores, token types), and a whole small file whose tensors are present.
fn inputs() -> &'static [Vec<u8>] {
    static INPUTS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    INPUTS.get_or_init(|| {
        vec![
            header_of(common::model(common::SMOLLM2), false),
            header_of(common::reference("models/tiny-llamaspm-q2_k.gguf"), false),
            header_of(common::reference("quant/q4_0.gguf"), true),
        ]
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Truncate(prop::sample::Index),
    FlipBit(prop::sample::Index, u8),
    SetU64(prop::sample::Index, u64),
    SetU32(prop::sample::Index, u32),
    Cut(prop::sample::Index, usize),
}

/// Values that make counts and lengths cross every limit.
fn huge_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX / 2 + 1),
        Just((1 << 30) + 1),
        Just(1 << 40),
        Just(u32::MAX as u64),
        Just(0),
        0u64..100,
        any::<u64>(),
    ]
}

fn huge_u32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(u32::MAX), Just(0), 0u32..70, any::<u32>()]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<prop::sample::Index>(), huge_u64()).prop_map(|(i, v)| Mutation::SetU64(i, v)),
        (any::<prop::sample::Index>(), huge_u32()).prop_map(|(i, v)| Mutation::SetU32(i, v)),
        (any::<prop::sample::Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Cut(i, n)),
    ]
}

/// Most fields that matter (counts, types, the first keys) are near the start: half of the
/// positions fall in the first 256 bytes.
fn position(i: &prop::sample::Index, len: usize, near_start: bool) -> usize {
    if near_start {
        i.index(len.min(256))
    } else {
        i.index(len)
    }
}

fn apply(buf: &mut Vec<u8>, m: &Mutation, near_start: bool) {
    if buf.is_empty() {
        return;
    }
    let len = buf.len();
    match m {
        Mutation::Truncate(i) => buf.truncate(position(i, len, near_start)),
        Mutation::FlipBit(i, bit) => buf[position(i, len, near_start)] ^= 1 << bit,
        Mutation::SetU64(i, v) => {
            let at = position(i, len, near_start);
            let end = (at + 8).min(len);
            buf[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
        }
        Mutation::SetU32(i, v) => {
            let at = position(i, len, near_start);
            let end = (at + 4).min(len);
            buf[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
        }
        Mutation::Cut(i, n) => {
            let at = position(i, len, near_start);
            buf.drain(at..(at + n).min(len));
        }
    }
}

/// An accepted header is consistent with the bytes it came from.
fn check_valid(h: &Header, len: usize) {
    assert!(h.alignment.is_power_of_two());
    for t in &h.tensors {
        assert!(h.data_offset + t.offset + t.size <= len as u64);
        assert_eq!(t.ty.row_bytes(t.n_elements()), Some(t.size));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn mutated_real_headers_never_panic(
        which in 0usize..3,
        mutations in prop::collection::vec((mutation(), any::<bool>()), 1..5),
    ) {
        let mut buf = inputs()[which].clone();
        for (m, near_start) in &mutations {
            apply(&mut buf, m, *near_start);
        }
        if let Ok(h) = Header::parse(&buf) {
            check_valid(&h, buf.len());
        }
    }
}

#[test]
fn unmutated_inputs_parse_as_expected() {
    let inputs = inputs();
    // Headers alone: the first tensor's data is missing.
    for buf in &inputs[..2] {
        let e = Header::parse(buf).unwrap_err().to_string();
        assert!(e.contains("the data section has 0 bytes"), "{e}");
    }
    let h = Header::parse(&inputs[2]).unwrap();
    check_valid(&h, inputs[2].len());
}

#[test]
fn every_truncation_of_a_real_header_is_an_error() {
    // SmolLM2's header cut at every byte of its first 4 KiB, then at 256 points over the rest.
    let buf = &inputs()[0];
    let step = buf.len() / 256;
    for n in (0..4096).chain((4096..buf.len()).step_by(step)) {
        assert!(Header::parse(&buf[..n]).is_err(), "{n} bytes");
    }
}
