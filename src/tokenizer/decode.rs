//! Streaming decoding: token pieces are bytes, and a character may be split over several
//! tokens (byte tokens, byte-level BPE pieces). The decoder holds back an incomplete UTF-8
//! sequence until the tokens that complete it arrive.

use super::Tokenizer;
use crate::Result;

/// Turns ids into text one token at a time, for printing while generating.
pub struct Decoder<'t> {
    tok: &'t Tokenizer,
    pending: Vec<u8>,
    /// Remove one leading space from the first text (the SentencePiece prefix).
    strip_space: bool,
    piece: Vec<u8>,
}

impl<'t> Decoder<'t> {
    /// A decoder for text from its beginning: the space a SentencePiece vocabulary adds in
    /// front of the text is removed again.
    pub fn new(tok: &'t Tokenizer) -> Decoder<'t> {
        Decoder {
            tok,
            pending: Vec::new(),
            strip_space: tok.add_space_prefix(),
            piece: Vec::new(),
        }
    }

    /// A decoder for tokens that continue a prompt: every space is kept.
    pub fn continuing(tok: &'t Tokenizer) -> Decoder<'t> {
        Decoder {
            strip_space: false,
            ..Decoder::new(tok)
        }
    }

    /// Adds one token; returns the text that is complete so far, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.piece.clear();
        self.tok.push_piece(id, false, &mut self.piece)?;
        if self.piece.is_empty() {
            return Ok(None);
        }
        let mut piece = &self.piece[..];
        if self.strip_space {
            self.strip_space = false;
            if let Some(rest) = piece.strip_prefix(b" ") {
                piece = rest;
            }
        }
        self.pending.extend_from_slice(piece);
        let ready = complete_prefix(&self.pending);
        if ready == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&self.pending[..ready]).into_owned();
        self.pending.drain(..ready);
        Ok(Some(text))
    }

    /// The bytes still held back, with what is not valid UTF-8 replaced by U+FFFD.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// The length of the longest prefix that does not end inside a UTF-8 sequence that later
/// bytes could still complete. Invalid bytes count as complete (they print as U+FFFD).
fn complete_prefix(b: &[u8]) -> usize {
    let n = b.len();
    // A sequence is at most 4 bytes: look at the last 3 for a lead byte whose sequence is
    // cut off by the end of the buffer.
    for back in 1..=3.min(n) {
        let i = n - back;
        let c = b[i];
        if c & 0xC0 == 0x80 {
            continue;
        }
        let need = match c {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return n,
        };
        if need > back && std::str::from_utf8(&b[i..]).is_err_and(|e| e.error_len().is_none()) {
            return i;
        }
        return n;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::complete_prefix;

    #[test]
    fn holds_back_cut_sequences_only() {
        assert_eq!(complete_prefix(b"ab"), 2);
        assert_eq!(complete_prefix("é".as_bytes()), 2);
        assert_eq!(complete_prefix(&"é".as_bytes()[..1]), 0);
        assert_eq!(complete_prefix(&"a🦀".as_bytes()[..3]), 1);
        assert_eq!(complete_prefix(b"a\xFF"), 2);
        // A lead byte followed by a non-continuation byte cannot be completed.
        assert_eq!(complete_prefix(b"\xE2a"), 2);
    }
}
