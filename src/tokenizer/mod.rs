//! Tokenizers built from GGUF metadata that give the ids llama.cpp gives (src/llama-vocab.cpp):
//! SentencePiece-style (`tokenizer.ggml.model = "llama"`) and GPT-2-style byte-level BPE
//! (`"gpt2"`) with the pre-tokenizer named by `tokenizer.ggml.pre`.
//!
//! Encoding first cuts special tokens out of the text (control tokens only when asked to
//! parse them, user-defined ones always), then tokenizes each remaining fragment.

mod bpe;
mod decode;
mod pretokenize;
mod regex;
mod special;
mod spm;
mod table;
mod unicode;
mod unicode_data;

pub use decode::Decoder;

use crate::gguf::{Array, GgufFile, Metadata, Value};
use crate::{Error, Result};
use special::Fragment;
use table::{StringTable, NONE};

/// Token attributes, as llama.cpp's `llama_token_attr`.
pub mod attr {
    pub const UNDEFINED: u16 = 0;
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
}

/// The two tokenizer families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `tokenizer.ggml.model = "llama"`: SentencePiece scores and byte fallback.
    SentencePiece,
    /// `tokenizer.ggml.model = "gpt2"`: byte-level BPE with ranked merges.
    BytePairEncoding,
}

/// A tokenizer for one vocabulary.
pub struct Tokenizer {
    kind: Kind,
    n_vocab: u32,
    /// Token texts (ids below `n_vocab`), then for BPE the merge parts that are no token.
    pieces: StringTable,
    scores: Vec<f32>,
    attrs: Vec<u16>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    /// End-of-generation ids, sorted.
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    /// Control, user-defined and unknown tokens, longest first.
    specials: special::Index,
    spm_bytes: [u32; 256],
    /// Bytes after which a SentencePiece text may be cut before a space marker: no token has
    /// the byte right before a U+2581 inside it.
    spm_cut_after: [bool; 256],
    bpe: Option<bpe::Bpe>,
    pre_name: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("pre", &self.pre_name)
            .field("n_vocab", &self.n_vocab)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

/// Token ids from a metadata key, ignoring negative values (some converters write -1 for
/// "none").
fn opt_id(md: &Metadata, key: &str) -> Result<Option<u32>> {
    Ok(md.opt_i64(key)?.and_then(|v| u32::try_from(v).ok()))
}

impl Tokenizer {
    /// The tokenizer of a model file.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        Tokenizer::from_metadata(file.metadata())
    }

    /// The tokenizer described by `tokenizer.ggml.*` metadata, with llama.cpp's defaults for
    /// absent keys.
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer> {
        let model = md.str("tokenizer.ggml.model")?;
        let kind = match model {
            "llama" => Kind::SentencePiece,
            "gpt2" => Kind::BytePairEncoding,
            other => {
                return Err(Error::Unsupported(format!(
                    "tokenizer model {other:?} (tokenizer.ggml.model)"
                )))
            }
        };
        let pre_key = md.opt_str("tokenizer.ggml.pre")?;

        let tokens =
            md.opt_str_array("tokenizer.ggml.tokens")?
                .ok_or_else(|| Error::MissingKey {
                    key: "tokenizer.ggml.tokens".into(),
                })?;
        let n = tokens.len();
        let n_vocab = u32::try_from(n)
            .ok()
            .filter(|&v| v < NONE)
            .ok_or_else(|| Error::Invalid(format!("vocabulary of {n} tokens is too large")))?;

        let scores: Vec<f32> = match md.get("tokenizer.ggml.scores") {
            None => vec![0.0; n],
            Some(Value::Array(Array::F32(v))) => v.clone(),
            Some(Value::Array(Array::I32(v))) => v.iter().map(|&x| x as f32).collect(),
            Some(v) => {
                return Err(Error::MetadataType {
                    key: "tokenizer.ggml.scores".into(),
                    expected: "an ARRAY of F32 or I32",
                    found: v.describe(),
                })
            }
        };
        if scores.len() < n {
            return Err(Error::Invalid(format!(
                "tokenizer.ggml.scores has {} entries for {n} tokens",
                scores.len()
            )));
        }
        let mut attrs = match md.get("tokenizer.ggml.token_type") {
            None => vec![attr::NORMAL; n],
            Some(Value::Array(Array::I32(v))) => {
                if v.len() < n {
                    return Err(Error::Invalid(format!(
                        "tokenizer.ggml.token_type has {} entries for {n} tokens",
                        v.len()
                    )));
                }
                v[..n]
                    .iter()
                    .map(|&t| match t {
                        1 => attr::NORMAL,
                        2 => attr::UNKNOWN,
                        3 => attr::CONTROL,
                        4 => attr::USER_DEFINED,
                        5 => attr::UNUSED,
                        6 => attr::BYTE,
                        _ => attr::UNDEFINED,
                    })
                    .collect()
            }
            Some(v) => {
                return Err(Error::MetadataType {
                    key: "tokenizer.ggml.token_type".into(),
                    expected: "an ARRAY of I32",
                    found: v.describe(),
                })
            }
        };

        // llama.cpp names empty tokens so that they stay unique.
        let empty_names: Vec<String> = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_empty())
            .map(|(i, _)| format!("[EMPTY_{i}]"))
            .collect();
        let mut empty_iter = empty_names.iter();
        let texts = tokens.iter().map(|t| {
            if t.is_empty() {
                empty_iter.next().map_or(&[][..], |s| s.as_bytes())
            } else {
                t.as_bytes()
            }
        });
        let mut pieces = StringTable::build(texts, n).map_err(|dup| match dup {
            Some((a, b)) => Error::Invalid(format!(
                "duplicate token in vocabulary: {:?} has ids {a} and {b}",
                tokens[a as usize]
            )),
            None => Error::Invalid("vocabulary text over 4 GiB".into()),
        })?;

        // Defaults of llama.cpp's llama_vocab::impl::load.
        let (mut bos, mut eos, mut unk) = match kind {
            Kind::SentencePiece => (Some(1), Some(2), Some(0)),
            Kind::BytePairEncoding => (Some(11), Some(11), None),
        };
        let (mut add_bos, mut add_eos, mut add_space_prefix, pre, pre_name) = match kind {
            Kind::SentencePiece => (true, false, true, None, "default".to_string()),
            Kind::BytePairEncoding => {
                let name = pre_key.unwrap_or("default");
                let p = pretokenize::PreTokenizer::new(name)?;
                (p.add_bos, false, false, Some(p), name.to_string())
            }
        };
        if let Some(v) = md.opt_bool("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }

        let in_range = |id: Option<u32>| id.filter(|&i| i < n_vocab);
        bos = in_range(bos);
        eos = in_range(eos);
        unk = in_range(unk);
        let mut eot = None;
        let mut eom = None;
        let mut pad = None;
        let mut fim_pad = None;
        let mut fim_rep = None;
        let mut fim_sep = None;
        for (key, slot) in [
            ("tokenizer.ggml.bos_token_id", &mut bos),
            ("tokenizer.ggml.eos_token_id", &mut eos),
            ("tokenizer.ggml.eot_token_id", &mut eot),
            ("tokenizer.ggml.eom_token_id", &mut eom),
            ("tokenizer.ggml.unknown_token_id", &mut unk),
            ("tokenizer.ggml.padding_token_id", &mut pad),
            ("tokenizer.ggml.fim_pad_token_id", &mut fim_pad),
            ("tokenizer.ggml.fim_rep_token_id", &mut fim_rep),
            ("tokenizer.ggml.fim_sep_token_id", &mut fim_sep),
        ] {
            // An id past the vocabulary keeps the default, as in llama.cpp.
            if let Some(id) = in_range(opt_id(md, key)?) {
                *slot = Some(id);
            }
        }
        if let Some(v) = md.opt_bool("tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        if let Some(v) = md.opt_bool("tokenizer.ggml.add_eos_token")? {
            add_eos = v;
        }
        if add_bos && bos.is_none() {
            return Err(Error::Invalid(
                "tokenizer.ggml.add_bos_token is true, but tokenizer.ggml.bos_token_id is not set"
                    .into(),
            ));
        }
        if add_eos && eos.is_none() {
            return Err(Error::Invalid(
                "tokenizer.ggml.add_eos_token is true, but tokenizer.ggml.eos_token_id is not set"
                    .into(),
            ));
        }

        let eog = special::detect_by_text(
            &pieces,
            n_vocab,
            &mut attrs,
            eos,
            &mut eot,
            &mut eom,
            [fim_pad, fim_rep, fim_sep],
        );

        let id_of = |s: &str| pieces.find(s.as_bytes()).filter(|&i| i < n_vocab);
        let mut specials: Vec<u32> = (0..n_vocab)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(pieces.get(i).len()));

        // Per-model attributes (llama.cpp sets these from the model name).
        let name = md
            .opt_str("general.name")
            .ok()
            .flatten()
            .unwrap_or("")
            .to_lowercase();
        if name.contains("phi-3") || name.contains("phi3") {
            for &id in &specials {
                attrs[id as usize] |= attr::RSTRIP;
            }
            if let Some(id) = id_of("</s>") {
                attrs[id as usize] |= attr::RSTRIP;
            }
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(id) = id_of(t) {
                    attrs[id as usize] &= !attr::RSTRIP;
                }
            }
        }

        let specials = special::Index::new(specials, &pieces, &attrs);

        let mut spm_cut_after = [true; 256];
        if kind == Kind::SentencePiece {
            let marker = "\u{2581}".as_bytes();
            for id in 0..n_vocab {
                let t = pieces.get(id);
                let mut i = 1;
                while i + marker.len() <= t.len() {
                    match t[i..].iter().position(|&b| b == marker[0]) {
                        Some(j) if t[i + j..].starts_with(marker) => {
                            spm_cut_after[t[i + j - 1] as usize] = false;
                            i += j + 1;
                        }
                        Some(j) => i += j + 1,
                        None => break,
                    }
                }
            }
        }
        let mut spm_bytes = [NONE; 256];
        if kind == Kind::SentencePiece {
            for (b, slot) in spm_bytes.iter_mut().enumerate() {
                let hex = format!("<0x{b:02X}>");
                *slot = match pieces.find(hex.as_bytes()) {
                    Some(id) => id,
                    None => pieces.find(&[b as u8]).unwrap_or(NONE),
                };
            }
        }

        let bpe = match pre {
            Some(pre) => {
                let merges = md.opt_str_array("tokenizer.ggml.merges")?.ok_or_else(|| {
                    Error::MissingKey {
                        key: "tokenizer.ggml.merges".into(),
                    }
                })?;
                // Build the code point tables now rather than in the first encode.
                let _ = (unicode::flags(0), unicode::byte_map());
                Some(bpe::Bpe::new(pre, &mut pieces, n_vocab, merges)?)
            }
            None => None,
        };

        Ok(Tokenizer {
            kind,
            n_vocab,
            pieces,
            scores: scores[..n].to_vec(),
            attrs,
            bos,
            eos,
            eot,
            eom,
            unk,
            pad,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            specials,
            spm_bytes,
            spm_cut_after,
            bpe,
            pre_name,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The pre-tokenizer's name (`default` for SentencePiece).
    pub fn pre_tokenizer(&self) -> &str {
        &self.pre_name
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab as usize
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    pub fn eom(&self) -> Option<u32> {
        self.eom
    }

    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    pub fn pad(&self) -> Option<u32> {
        self.pad
    }

    /// Whether BOS / EOS are added when encoding with `add_special`.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether the SentencePiece space prefix is added (and removed again when decoding).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// Whether generation stops at this token (eos, eot, eom and the end-of-turn tokens
    /// llama.cpp recognises by their text, such as `<end_of_turn>` and `<|im_end|>`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// The token's text as stored in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&[u8]> {
        (id < self.n_vocab).then(|| self.pieces.get(id))
    }

    /// The token's attributes ([`attr`]).
    pub fn token_attr(&self, id: u32) -> Option<u16> {
        self.attrs.get(id as usize).copied()
    }

    pub fn token_score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// The id of a token with exactly this text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.pieces
            .find(text.as_bytes())
            .filter(|&i| i < self.n_vocab)
    }

    fn check_id(&self, id: u32) -> Result<()> {
        if id < self.n_vocab {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "token id {id} is out of range: the vocabulary has {} tokens",
                self.n_vocab
            )))
        }
    }

    /// The bytes a token stands for in output text, as llama.cpp's `token_to_piece`: control
    /// and unknown tokens are empty unless `special`, byte tokens give their byte, the
    /// SentencePiece space marker becomes a space. A piece may be part of a UTF-8 sequence.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.push_piece(id, special, &mut out)?;
        Ok(out)
    }

    /// Appends the piece of `id` to `out` (see [`Tokenizer::token_to_piece`]).
    pub fn push_piece(&self, id: u32, special: bool, out: &mut Vec<u8>) -> Result<()> {
        self.check_id(id)?;
        let a = self.attrs[id as usize];
        let text = self.pieces.get(id);
        let special_attr = attr::UNKNOWN | attr::CONTROL;
        if !special && a & special_attr != 0 {
            return Ok(());
        }
        if a & (special_attr | attr::USER_DEFINED) != 0 {
            out.extend_from_slice(text);
        } else if a & attr::NORMAL != 0 {
            match self.kind {
                Kind::SentencePiece => unescape_spaces(text, out),
                Kind::BytePairEncoding => decode_byte_level(text, out),
            }
        } else if a & attr::BYTE != 0 {
            out.push(token_to_byte(text));
        }
        Ok(())
    }

    /// Decodes ids to text: the pieces of all tokens (control tokens left out), without the
    /// space the SentencePiece prefix added, invalid UTF-8 replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut d = Decoder::new(self);
        let mut s = String::new();
        for &id in ids {
            if let Some(t) = d.push(id)? {
                s.push_str(&t);
            }
        }
        s.push_str(&d.finish());
        Ok(s)
    }

    /// Encodes text. `add_special` adds BOS / EOS where the model asks for them;
    /// `parse_special` turns the text of control tokens (`<|im_start|>`) into those tokens.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        self.encode_bytes(text.as_bytes(), add_special, parse_special)
    }

    /// [`Tokenizer::encode`] over bytes that need not be UTF-8 (llama.cpp replaces each bad
    /// byte by U+FFFD for BPE and falls back to byte tokens for SentencePiece).
    pub fn encode_bytes(
        &self,
        text: &[u8],
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        self.encode_with(text, add_special, parse_special, false)
    }

    fn encode_with(
        &self,
        text: &[u8],
        add_special: bool,
        parse_special: bool,
        no_cut: bool,
    ) -> Result<Vec<u32>> {
        let fragments =
            self.specials
                .partition(text, parse_special, &self.pieces, &self.attrs, self.n_vocab);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        match self.kind {
            Kind::SentencePiece => {
                let mut prev_special = true;
                if add_special && self.add_bos {
                    out.extend(self.bos);
                }
                let mut buf = Vec::new();
                let mut session = spm::Session::default();
                session.no_cut = no_cut;
                for f in &fragments {
                    match *f {
                        Fragment::Raw(start, len) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.extend_from_slice("\u{2581}".as_bytes());
                            }
                            escape_spaces(&text[start..start + len], &mut buf);
                            session.tokenize(self, &buf, &mut out)?;
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
                if add_special && self.add_eos {
                    out.extend(self.eos);
                }
            }
            Kind::BytePairEncoding => {
                let Some(bpe) = &self.bpe else {
                    return Err(Error::Invalid("BPE tokenizer without merges".into()));
                };
                if add_special && self.add_bos {
                    out.extend(self.bos);
                }
                let mut session = bpe::Session::default();
                for f in &fragments {
                    match *f {
                        Fragment::Raw(start, len) => {
                            session.tokenize(bpe, self, &text[start..start + len], &mut out)?
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
                if add_special && self.add_eos {
                    out.extend(self.eos);
                }
            }
        }
        Ok(out)
    }

    fn spm_byte_token(&self, b: u8) -> Result<u32> {
        match self.spm_bytes[b as usize] {
            NONE => Err(Error::Invalid(format!(
                "byte 0x{b:02X} has no token (<0x{b:02X}>) in this vocabulary"
            ))),
            id => Ok(id),
        }
    }
}

/// ' ' -> U+2581, as llama.cpp's `llama_escape_whitespace`.
fn escape_spaces(text: &[u8], out: &mut Vec<u8>) {
    for &b in text {
        if b == b' ' {
            out.extend_from_slice("\u{2581}".as_bytes());
        } else {
            out.push(b);
        }
    }
}

/// U+2581 -> ' '.
fn unescape_spaces(text: &[u8], out: &mut Vec<u8>) {
    let marker = "\u{2581}".as_bytes();
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(marker) {
            out.push(b' ');
            i += marker.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
}

/// Byte-level text back to bytes, as llama.cpp's `llama_decode_text` (code points outside
/// the byte map are written as it writes them).
fn decode_byte_level(text: &[u8], out: &mut Vec<u8>) {
    let map = unicode::byte_map();
    let mut cpts = Vec::new();
    unicode::cpts_from_utf8(text, &mut cpts);
    for &c in &cpts {
        match map.byte_of(c) {
            Some(b) => out.push(b),
            None => {
                let mut utf8 = Vec::new();
                let _ = unicode::push_utf8(c, &mut utf8);
                out.extend_from_slice(b"[UNK_BYTE_0x");
                for b in utf8 {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text);
                out.push(b']');
            }
        }
    }
}

/// The byte of a `<0xNN>` token (llama.cpp reads two hex digits at offset 3 with strtol).
fn token_to_byte(text: &[u8]) -> u8 {
    let digits = text.get(3..text.len().min(5)).unwrap_or(&[]);
    let mut v = 0u8;
    for &d in digits {
        let x = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => break,
        };
        v = v.wrapping_mul(16).wrapping_add(x);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(rel: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/reference")
            .join(rel)
    }

    /// Cutting a SentencePiece text at safe space markers gives the ids of one queue over the
    /// whole text. Gemma 3 has a token with a space marker inside (`>▁</`), so its cut rule
    /// must leave `>` + space alone.
    #[test]
    fn cutting_sentencepiece_text_is_exact() {
        let mut text = String::new();
        text.push_str("a> </b <b> </b> a> </x> >  </ x>> </> </   ");
        text.push_str("The quick brown fox   jumps\n\n over the lazy dog. ");
        if let Ok(gpl) = std::fs::read_to_string("/usr/share/common-licenses/GPL-3") {
            text.push_str(&gpl[..gpl.len().min(8000)]);
        }
        let json = std::fs::read_to_string(reference("tokenizer/tokenize.json")).unwrap();
        text.push_str(&json);
        let home = std::env::var_os("HOME").unwrap_or_default();
        let gemma =
            std::path::Path::new(&home).join(".cache/strait/models/gemma-3-270m-q4_k_m.gguf");
        let mut files = vec![
            reference("tokenizer/vocab/ggml-vocab-llama-spm.gguf"),
            reference("tokenizer/vocab/ggml-vocab-phi-3.gguf"),
        ];
        let models = std::env::var_os("STRAIT_MODELS")
            .map(std::path::PathBuf::from)
            .map(|d| d.join("gemma-3-270m-q4_k_m.gguf"))
            .unwrap_or(gemma);
        files.push(models);
        for path in files {
            let f = GgufFile::open(&path).unwrap();
            let tok = Tokenizer::from_gguf(&f).unwrap();
            for t in ["a> </b", "x> </y> z", text.as_str()] {
                let cut = tok.encode_with(t.as_bytes(), true, false, false).unwrap();
                let whole = tok.encode_with(t.as_bytes(), true, false, true).unwrap();
                assert_eq!(cut, whole, "{} {:?}", path.display(), &t[..t.len().min(20)]);
            }
        }
    }
}
