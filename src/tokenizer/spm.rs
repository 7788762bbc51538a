//! SentencePiece-style BPE over scores, as llama.cpp's `llm_tokenizer_spm_session`: the text
//! (spaces already escaped to U+2581) is split into UTF-8 characters, and the adjacent pair
//! whose concatenation is the token with the highest score is merged until no pair is a
//! token (ties: leftmost first). Symbols that are no token fall back to byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::table::{LookupCache, WordCache, NONE};
use super::unicode::utf8_len;
use super::Tokenizer;
use crate::Result;

#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    /// The token of a merged symbol (merges only make tokens); NONE for a single character.
    id: u32,
    prev: i32,
    next: i32,
}

struct Bigram {
    score: f32,
    id: u32,
    left: i32,
    right: i32,
    size: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Bigram {}

impl Ord for Bigram {
    // Highest score first, then leftmost; compared with `<` as llama.cpp does, so NaN scores
    // order like equal ones.
    fn cmp(&self, o: &Self) -> Ordering {
        if self.score < o.score {
            Ordering::Less
        } else if self.score > o.score {
            Ordering::Greater
        } else {
            o.left.cmp(&self.left)
        }
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Buffers reused across fragments.
#[derive(Default)]
pub struct Session {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Bigram>,
    segments: Vec<usize>,
    cache: LookupCache,
    words: WordCache,
    /// Merge the whole text with one queue (the oracle for the cutting, in tests).
    pub no_cut: bool,
}

const SPACE: &[u8] = "\u{2581}".as_bytes();

impl Session {
    pub fn tokenize(&mut self, tok: &Tokenizer, text: &[u8], out: &mut Vec<u32>) -> Result<()> {
        self.symbols.clear();
        self.segments.clear();
        self.segments.push(0);
        let mut offs = 0usize;
        while offs < text.len() {
            let len = utf8_len(text[offs]).min(text.len() - offs);
            let index = self.symbols.len();
            // No token spans a space marker that follows a byte no token has before one, so
            // the text can be cut there and each part merged on its own: the order of merges
            // within a part, and so the result, is the same as with one queue for all.
            if index > 0
                && !self.no_cut
                && text[offs..].starts_with(SPACE)
                && tok.spm_cut_after[text[offs - 1] as usize]
            {
                self.segments.push(index);
            }
            offs += len;
            self.symbols.push(Symbol {
                start: (offs - len) as u32,
                len: len as u32,
                id: NONE,
                prev: index as i32 - 1,
                next: index as i32 + 1,
            });
        }
        let n = self.symbols.len();
        self.segments.push(n);
        for w in 0..self.segments.len() - 1 {
            let (a, b) = (self.segments[w], self.segments[w + 1]);
            if a == b {
                continue;
            }
            let seg = &text[self.symbols[a].start as usize
                ..(self.symbols[b - 1].start + self.symbols[b - 1].len) as usize];
            if let Some(ids) = self.words.get(seg) {
                out.extend_from_slice(ids);
                continue;
            }
            let first_out = out.len();
            self.symbols[a].prev = -1;
            self.symbols[b - 1].next = -1;
            self.merge(tok, text, a, b);
            let mut i = a as i32;
            while i >= 0 {
                let s = self.symbols[i as usize];
                i = s.next;
                if s.id != NONE {
                    out.push(s.id);
                    continue;
                }
                let piece = &text[s.start as usize..(s.start + s.len) as usize];
                match self.cache.find(&tok.pieces, piece) {
                    Some(id) => out.push(id),
                    // Merged symbols are always tokens, so this is a single character:
                    // llama.cpp's resegment finds no merge for it and writes its bytes.
                    None => {
                        for &b in piece {
                            out.push(tok.spm_byte_token(b)?);
                        }
                    }
                }
            }
            self.words.put(seg, &out[first_out..]);
        }
        Ok(())
    }

    /// Merges the symbols `[a, b)`.
    fn merge(&mut self, tok: &Tokenizer, text: &[u8], a: usize, b: usize) {
        self.heap.clear();
        for i in a + 1..b {
            self.add_bigram(tok, text, i as i32 - 1, i as i32);
        }
        while let Some(bg) = self.heap.pop() {
            let (l, r) = (bg.left as usize, bg.right as usize);
            let (ls, rs) = (self.symbols[l], self.symbols[r]);
            if ls.len == 0 || rs.len == 0 || ls.len + rs.len != bg.size {
                continue;
            }
            self.symbols[l].len += rs.len;
            self.symbols[l].id = bg.id;
            self.symbols[r].len = 0;
            self.symbols[l].next = rs.next;
            if rs.next >= 0 {
                self.symbols[rs.next as usize].prev = bg.left;
            }
            self.add_bigram(tok, text, ls.prev, bg.left);
            self.add_bigram(tok, text, bg.left, rs.next);
        }
    }

    #[inline]
    fn add_bigram(&mut self, tok: &Tokenizer, text: &[u8], left: i32, right: i32) {
        if left < 0 || right < 0 {
            return;
        }
        let (l, r) = (self.symbols[left as usize], self.symbols[right as usize]);
        let piece = &text[l.start as usize..(r.start + r.len) as usize];
        if let Some(id) = self.cache.find(&tok.pieces, piece) {
            self.heap.push(Bigram {
                score: tok.scores[id as usize],
                id,
                left,
                right,
                size: l.len + r.len,
            });
        }
    }
}
