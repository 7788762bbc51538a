//! Special tokens: the end-of-generation and other ids llama.cpp finds by their text, and the
//! cutting of special tokens out of a text before it is tokenized (`tokenizer_st_partition`).

use super::attr;
use super::table::StringTable;

/// A piece of the text being encoded: raw bytes `[start, start + len)` or a special token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fragment {
    Raw(usize, usize),
    Token(u32),
}

/// llama.cpp's `isspace` in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let j = hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        let at = i + j;
        if &hay[at + 1..at + needle.len()] == rest {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// Marks the tokens llama.cpp recognises by their text (llama_vocab::impl::load): eot, eom
/// and fim ids where the metadata gives none, "unused" control tokens, and the
/// end-of-generation set, which it returns sorted. These tokens become control tokens.
/// (llama.cpp walks a hash map here; the lowest id wins where several texts match.)
pub fn detect_by_text(
    pieces: &StringTable,
    n_vocab: u32,
    attrs: &mut [u16],
    eos: Option<u32>,
    eot: &mut Option<u32>,
    eom: &mut Option<u32>,
    [mut fim_pad, mut fim_rep, mut fim_sep]: [Option<u32>; 3],
) -> Vec<u32> {
    let id_of = |s: &str| pieces.find(s.as_bytes()).filter(|&i| i < n_vocab);
    let make_control = |attrs: &mut [u16], id: u32| attrs[id as usize] |= attr::CONTROL;
    let first_of = |texts: &[&str]| texts.iter().filter_map(|t| id_of(t)).min();
    if eot.is_none() {
        *eot = first_of(EOT_TEXTS);
        if let Some(id) = *eot {
            make_control(attrs, id);
        }
    }
    if eom.is_none() {
        *eom = id_of("<|eom_id|>");
        if let Some(id) = *eom {
            make_control(attrs, id);
        }
    }
    for (slot, texts) in [
        (&mut fim_pad, FIM_PAD_TEXTS),
        (&mut fim_rep, FIM_REP_TEXTS),
        (&mut fim_sep, FIM_SEP_TEXTS),
    ] {
        if slot.is_none() {
            *slot = first_of(texts);
            if let Some(id) = *slot {
                make_control(attrs, id);
            }
        }
    }
    for (i, a) in attrs.iter_mut().enumerate() {
        if *a & attr::CONTROL != 0 && *a & attr::UNUSED == 0 {
            let text = pieces.get(i as u32);
            if text.windows(6).any(|w| w == b"unused") {
                *a |= attr::UNUSED;
            }
        }
    }
    let mut eog: Vec<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
    for t in EOG_TEXTS {
        if let Some(id) = id_of(t) {
            eog.push(id);
            make_control(attrs, id);
        }
    }
    for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(id) = id_of(t) {
            attrs[id as usize] = attr::USER_DEFINED;
        }
    }
    eog.extend([eos, *eot, *eom].into_iter().flatten());
    eog.sort_unstable();
    eog.dedup();
    let text_of = |id: u32| pieces.get(id);
    let has = |eog: &[u32], t: &str| eog.iter().any(|&i| text_of(i) == t.as_bytes());
    // o200k_harmony and solar-open: "<|end|>" does not end generation there.
    let has_call = has(&eog, "<|call|>") || has(&eog, "<|calls|>");
    if has(&eog, "<|end|>") && has_call && (has(&eog, "<|return|>") || has(&eog, "<|flush|>")) {
        if let Some(id) = id_of("<|end|>") {
            eog.retain(|&i| i != id);
            attrs[id as usize] = attr::USER_DEFINED;
        }
    }
    if has(&eog, "<|tool_response>") && has(&eog, "</s>") {
        if let Some(id) = id_of("</s>") {
            eog.retain(|&i| i != id);
            attrs[id as usize] = attr::NORMAL;
        }
    }
    eog
}

/// Token ids by the key of their first one or two bytes ([`prefix_key`]).
struct PrefixIndex {
    /// One bit per key present, to skip most positions without a search.
    bits: Vec<u64>,
    /// Sorted keys, with the range of `ids` of each.
    keys: Vec<(u32, u32, u32)>,
    ids: Vec<u32>,
}

impl PrefixIndex {
    fn new(tokens: impl Iterator<Item = u32>, pieces: &StringTable) -> PrefixIndex {
        let mut pairs: Vec<(u32, u32)> =
            tokens.map(|id| (prefix_key(pieces.get(id)), id)).collect();
        // Stable: ids keep their order (longest token first) within a key.
        pairs.sort_by_key(|p| p.0);
        let mut bits = vec![0u64; PREFIX_KEYS / 64];
        let mut keys: Vec<(u32, u32, u32)> = Vec::new();
        for (i, &(k, _)) in pairs.iter().enumerate() {
            bits[k as usize / 64] |= 1 << (k % 64);
            match keys.last_mut() {
                Some(last) if last.0 == k => last.2 += 1,
                _ => keys.push((k, i as u32, 1)),
            }
        }
        PrefixIndex {
            bits,
            keys,
            ids: pairs.into_iter().map(|p| p.1).collect(),
        }
    }

    #[inline]
    fn get(&self, k: u32) -> &[u32] {
        if self.bits[k as usize / 64] & (1 << (k % 64)) == 0 {
            return &[];
        }
        match self.keys.binary_search_by_key(&k, |e| e.0) {
            Ok(i) => {
                let (_, start, len) = self.keys[i];
                &self.ids[start as usize..(start + len) as usize]
            }
            Err(_) => &[],
        }
    }
}

/// The special tokens that can cut a text, with indexes by their first bytes.
pub struct Index {
    /// Longest first.
    tokens: Vec<u32>,
    /// All of them, for parsing special tokens.
    all: PrefixIndex,
    /// The user-defined ones, which cut the text even when special tokens are not parsed.
    user: PrefixIndex,
}

impl Index {
    pub fn new(tokens: Vec<u32>, pieces: &StringTable, attrs: &[u16]) -> Index {
        let cuts_always = |id: &u32| attrs[*id as usize] & (attr::CONTROL | attr::UNKNOWN) == 0;
        Index {
            all: PrefixIndex::new(tokens.iter().copied(), pieces),
            user: PrefixIndex::new(tokens.iter().copied().filter(cuts_always), pieces),
            tokens,
        }
    }

    /// Cuts special tokens out of the text, longest first, as llama.cpp's
    /// `tokenizer_st_partition`.
    pub fn partition(
        &self,
        text: &[u8],
        parse_special: bool,
        pieces: &StringTable,
        attrs: &[u16],
        n_vocab: u32,
    ) -> Vec<Fragment> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Raw(0, text.len()));
        // Only tokens that occur in the text can cut it; find those first.
        let mut present = vec![false; 0];
        let mut any = false;
        let index = if parse_special { &self.all } else { &self.user };
        for i in 0..text.len() {
            let two = prefix_key(&text[i..]);
            let one = (text[i] as u32) << 9 | 256;
            for k in [two, one] {
                for &id in index.get(k) {
                    if text[i..].starts_with(pieces.get(id)) {
                        if present.is_empty() {
                            present = vec![false; n_vocab as usize];
                        }
                        present[id as usize] = true;
                        any = true;
                    }
                }
                if k == one {
                    break;
                }
            }
        }
        if !any {
            return frags;
        }
        let mut next = Vec::new();
        for &id in &self.tokens {
            if !present[id as usize] {
                continue;
            }
            let a = attrs[id as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let tok = pieces.get(id);
            next.clear();
            for f in &frags {
                let Fragment::Raw(mut off, mut len) = *f else {
                    next.push(*f);
                    continue;
                };
                loop {
                    let Some(i) = find(&text[off..off + len], tok) else {
                        if len > 0 {
                            next.push(Fragment::Raw(off, len));
                        }
                        break;
                    };
                    let m = off + i;
                    let mut left = m - off;
                    if a & attr::LSTRIP != 0 {
                        while left > 0 && is_c_space(text[off + left - 1]) {
                            left -= 1;
                        }
                    }
                    if left > 0 {
                        next.push(Fragment::Raw(off, left));
                    }
                    next.push(Fragment::Token(id));
                    let end = off + len;
                    let mut r_off = m + tok.len();
                    if a & attr::RSTRIP != 0 {
                        while r_off < end && is_c_space(text[r_off]) {
                            r_off += 1;
                        }
                    }
                    off = r_off;
                    len = end - r_off;
                    if len == 0 {
                        break;
                    }
                }
            }
            std::mem::swap(&mut frags, &mut next);
        }
        frags
    }
}

/// The number of keys `prefix_key` can give.
const PREFIX_KEYS: usize = 256 << 9;

/// The index key of the first one or two bytes of a special token's text.
fn prefix_key(t: &[u8]) -> u32 {
    match t {
        [a, b, ..] => (*a as u32) << 9 | *b as u32,
        [a] => (*a as u32) << 9 | 256,
        [] => 256,
    }
}
