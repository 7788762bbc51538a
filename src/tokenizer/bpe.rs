//! Byte-level BPE, as llama.cpp's `llm_tokenizer_bpe_session`: each pre-tokenized word is
//! mapped through GPT-2's byte-to-unicode table, split into characters, and the adjacent pair
//! with the lowest merge rank is merged until none is left (ties: leftmost first).
//!
//! Pairs are looked up by piece id, not by string: every token and every merge part has an
//! id in one table, and each merge knows the id of its result, so a merge step is one hash
//! probe on two integers.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::pretokenize::{PreTokenizer, Scratch};
use super::table::{PairTable, StringTable, WordCache, NONE};
use super::unicode;
use super::Tokenizer;
use crate::{Error, Result};

pub struct Bpe {
    pub pre: PreTokenizer,
    /// (left piece, right piece) -> (rank, merged piece or NONE).
    merges: PairTable,
    /// The piece of each byte's byte-level character.
    byte_piece: [u32; 256],
    /// The token whose text is this single raw byte (llama.cpp's fallback for a symbol that
    /// is no token).
    single_byte_token: [u32; 256],
}

impl Bpe {
    /// Reads the merges ("left right", rank = position) and adds their parts to `pieces`
    /// after the tokens.
    pub fn new(
        pre: PreTokenizer,
        pieces: &mut StringTable,
        n_vocab: u32,
        merges: &[String],
    ) -> Result<Bpe> {
        // (rank, left, right, left + right) of each merge line; llama.cpp splits at the first
        // space after the first byte, and a line without one takes a rank but merges nothing.
        let mut concat = Vec::new();
        let mut lines = Vec::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let bytes = m.as_bytes();
            let Some(sp) = bytes.iter().skip(1).position(|&b| b == b' ').map(|p| p + 1) else {
                continue;
            };
            let start = concat.len();
            concat.extend_from_slice(&bytes[..sp]);
            concat.extend_from_slice(&bytes[sp + 1..]);
            lines.push((rank as u32, start, sp, concat.len()));
        }
        // Look everything up in one batch (in table order, which is much faster than one
        // lookup at a time), then add the parts that are no token.
        let mut queries: Vec<&[u8]> = Vec::with_capacity(lines.len() * 3);
        for &(_, start, sp, end) in &lines {
            queries.push(&concat[start..start + sp]);
            queries.push(&concat[start + sp..end]);
            queries.push(&concat[start..end]);
        }
        let mut found = pieces.find_batch(&queries);
        let mut added = false;
        for (i, q) in queries.iter().enumerate() {
            if i % 3 != 2 && found[i] == NONE {
                found[i] = match pieces.insert(q) {
                    Some(Ok(id)) | Some(Err(id)) => id,
                    None => return Err(Error::Invalid("merge text over 4 GiB".into())),
                };
                added = true;
            }
        }
        let mut entries = Vec::with_capacity(lines.len());
        for (k, &(rank, ..)) in lines.iter().enumerate() {
            let (a, b) = (found[3 * k], found[3 * k + 1]);
            let mut merged = found[3 * k + 2];
            if merged == NONE && added {
                // The merged text may be one of the parts just added.
                merged = pieces.find(queries[3 * k + 2]).unwrap_or(NONE);
            }
            entries.push((a, b, (rank, merged)));
        }
        let table = PairTable::build(&entries);
        let map = unicode::byte_map();
        let mut byte_piece = [NONE; 256];
        let mut single_byte_token = [NONE; 256];
        for b in 0..256usize {
            let (e, len) = &map.encoded[b];
            byte_piece[b] = pieces.find(&e[..*len as usize]).unwrap_or(NONE);
            single_byte_token[b] = pieces
                .find(&[b as u8])
                .filter(|&id| id < n_vocab)
                .unwrap_or(NONE);
        }
        Ok(Bpe {
            pre,
            merges: table,
            byte_piece,
            single_byte_token,
        })
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    piece: u32,
    /// Bytes of the original word.
    start: u32,
    len: u32,
    prev: i32,
    next: i32,
}

#[derive(PartialEq, Eq)]
struct Bigram {
    rank: u32,
    left: i32,
    right: i32,
    size: u32,
}

impl Ord for Bigram {
    // BinaryHeap pops the greatest: lowest rank first, then leftmost.
    fn cmp(&self, o: &Self) -> Ordering {
        o.rank.cmp(&self.rank).then(o.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Buffers reused across words and calls.
#[derive(Default)]
pub struct Session {
    cpts: Vec<u32>,
    words: Vec<(usize, usize)>,
    scratch: Scratch,
    word: Vec<u8>,
    encoded: Vec<u8>,
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Bigram>,
    cache: WordCache,
}

impl Session {
    pub fn tokenize(
        &mut self,
        bpe: &Bpe,
        tok: &Tokenizer,
        text: &[u8],
        out: &mut Vec<u32>,
    ) -> Result<()> {
        unicode::cpts_from_utf8(text, &mut self.cpts);
        bpe.pre
            .split(&self.cpts, &mut self.scratch, &mut self.words);
        let map = unicode::byte_map();
        for wi in 0..self.words.len() {
            let (a, b) = self.words[wi];
            self.word.clear();
            for &c in &self.cpts[a..b] {
                if unicode::push_utf8(c, &mut self.word).is_none() {
                    return Err(Error::Invalid(format!(
                        "code point 0x{c:X} is past U+10FFFF and cannot be tokenized"
                    )));
                }
            }
            if let Some(ids) = self.cache.get(&self.word) {
                out.extend_from_slice(ids);
                continue;
            }
            let first_out = out.len();
            if bpe.pre.ignore_merges {
                self.encoded.clear();
                for &byte in &self.word {
                    map.push_encoded(byte, &mut self.encoded);
                }
                if let Some(id) = tok.pieces.find(&self.encoded).filter(|&i| i < tok.n_vocab) {
                    out.push(id);
                    self.cache.put(&self.word, &out[first_out..]);
                    continue;
                }
            }
            self.merge_word(bpe);
            self.emit(bpe, tok, out);
            self.cache.put(&self.word, &out[first_out..]);
        }
        Ok(())
    }

    fn merge_word(&mut self, bpe: &Bpe) {
        let n = self.word.len();
        self.symbols.clear();
        self.heap.clear();
        for (i, &byte) in self.word.iter().enumerate() {
            self.symbols.push(Symbol {
                piece: bpe.byte_piece[byte as usize],
                start: i as u32,
                len: 1,
                prev: i as i32 - 1,
                next: if i + 1 == n { -1 } else { i as i32 + 1 },
            });
        }
        for i in 1..n {
            self.add_bigram(bpe, i as i32 - 1, i as i32);
        }
        while let Some(bg) = self.heap.pop() {
            let (l, r) = (bg.left as usize, bg.right as usize);
            let (ls, rs) = (self.symbols[l], self.symbols[r]);
            // Skip pairs that changed since they were queued.
            if ls.len == 0 || rs.len == 0 || ls.len + rs.len != bg.size {
                continue;
            }
            let Some((_, merged)) = bpe.merges.get(ls.piece, rs.piece) else {
                continue;
            };
            self.symbols[l].len += rs.len;
            self.symbols[l].piece = merged;
            self.symbols[l].next = rs.next;
            self.symbols[r].len = 0;
            if rs.next >= 0 {
                self.symbols[rs.next as usize].prev = bg.left;
            }
            self.add_bigram(bpe, ls.prev, bg.left);
            self.add_bigram(bpe, bg.left, rs.next);
        }
    }

    #[inline]
    fn add_bigram(&mut self, bpe: &Bpe, left: i32, right: i32) {
        if left < 0 || right < 0 {
            return;
        }
        let (l, r) = (self.symbols[left as usize], self.symbols[right as usize]);
        if l.piece == NONE || r.piece == NONE {
            return;
        }
        if let Some((rank, _)) = bpe.merges.get(l.piece, r.piece) {
            self.heap.push(Bigram {
                rank,
                left,
                right,
                size: l.len + r.len,
            });
        }
    }

    fn emit(&self, bpe: &Bpe, tok: &Tokenizer, out: &mut Vec<u32>) {
        if self.symbols.is_empty() {
            return;
        }
        let map = unicode::byte_map();
        let mut i = 0i32;
        while i >= 0 {
            let s = self.symbols[i as usize];
            i = s.next;
            if s.len == 0 {
                continue;
            }
            if s.piece < tok.n_vocab {
                out.push(s.piece);
                continue;
            }
            // Not a token: llama.cpp looks up each byte of the byte-level text on its own and
            // drops those that are no token.
            for &byte in &self.word[s.start as usize..(s.start + s.len) as usize] {
                let (e, len) = &map.encoded[byte as usize];
                for &x in &e[..*len as usize] {
                    let id = bpe.single_byte_token[x as usize];
                    if id != NONE {
                        out.push(id);
                    }
                }
            }
        }
    }
}
