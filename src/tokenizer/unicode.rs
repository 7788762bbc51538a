//! Code points as llama.cpp sees them (src/unicode.cpp): its UTF-8 decoder, its category flags
//! and GPT-2's byte-to-unicode map.

use std::sync::OnceLock;

use super::unicode_data::{RANGE_FLAGS, WHITESPACE};

pub const UNDEFINED: u16 = 0x0001;
pub const NUMBER: u16 = 0x0002;
pub const LETTER: u16 = 0x0004;
pub const ACCENT_MARK: u16 = 0x0010;
pub const PUNCTUATION: u16 = 0x0020;
pub const SYMBOL: u16 = 0x0040;
pub const MASK_CATEGORIES: u16 = 0x00FF;
pub const WHITESPACE_FLAG: u16 = 0x0100;

/// One past the last code point.
pub const MAX_CODEPOINTS: u32 = 0x110000;

/// The flags of every code point, built once (2.2 MB; a few hundred microseconds).
fn flags_table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = vec![0u16; MAX_CODEPOINTS as usize];
        for w in RANGE_FLAGS.windows(2) {
            let (start, flags) = w[0];
            let end = w[1].0.min(MAX_CODEPOINTS);
            t[start as usize..end as usize].fill(flags);
        }
        for &c in WHITESPACE.iter() {
            t[c as usize] |= WHITESPACE_FLAG;
        }
        t
    })
}

/// Flags of a code point, as `unicode_cpt_flags_from_cpt`: code points past the table are
/// UNDEFINED.
#[inline]
pub fn flags(cpt: u32) -> u16 {
    match flags_table().get(cpt as usize) {
        Some(&f) => f,
        None => UNDEFINED,
    }
}

/// The length llama.cpp gives a UTF-8 sequence from its first byte (`unicode_len_utf8`).
#[inline]
pub fn utf8_len(b: u8) -> usize {
    const LOOKUP: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[(b >> 4) as usize]
}

/// Decodes bytes into code points the way `unicode_cpts_from_utf8` does: continuation bytes
/// are checked but overlong forms and surrogates are accepted, and each invalid byte becomes
/// U+FFFD.
pub fn cpts_from_utf8(bytes: &[u8], out: &mut Vec<u32>) {
    out.clear();
    out.reserve(bytes.len());
    let n = bytes.len();
    let cont = |i: usize| i < n && bytes[i] & 0xC0 == 0x80;
    let mut i = 0;
    while i < n {
        let b0 = bytes[i] as u32;
        if b0 & 0x80 == 0 {
            out.push(b0);
            i += 1;
        } else if b0 & 0x40 == 0 {
            out.push(0xFFFD);
            i += 1;
        } else if b0 & 0x20 == 0 {
            if i + 1 < n && cont(i + 1) {
                out.push(((b0 & 0x1F) << 6) | (bytes[i + 1] as u32 & 0x3F));
                i += 2;
            } else {
                out.push(0xFFFD);
                i += 1;
            }
        } else if b0 & 0x10 == 0 {
            if i + 2 < n && cont(i + 1) && cont(i + 2) {
                out.push(
                    ((b0 & 0x0F) << 12)
                        | ((bytes[i + 1] as u32 & 0x3F) << 6)
                        | (bytes[i + 2] as u32 & 0x3F),
                );
                i += 3;
            } else {
                out.push(0xFFFD);
                i += 1;
            }
        } else if b0 & 0x08 == 0 {
            if i + 3 < n && cont(i + 1) && cont(i + 2) && cont(i + 3) {
                out.push(
                    ((b0 & 0x07) << 18)
                        | ((bytes[i + 1] as u32 & 0x3F) << 12)
                        | ((bytes[i + 2] as u32 & 0x3F) << 6)
                        | (bytes[i + 3] as u32 & 0x3F),
                );
                i += 4;
            } else {
                out.push(0xFFFD);
                i += 1;
            }
        } else {
            out.push(0xFFFD);
            i += 1;
        }
    }
}

/// Appends the UTF-8 form of a code point as `unicode_cpt_to_utf8` writes it (surrogates are
/// encoded like any other code point). `None` for code points past U+10FFFF, which llama.cpp
/// rejects with an exception.
#[inline]
pub fn push_utf8(cpt: u32, out: &mut Vec<u8>) -> Option<()> {
    if cpt <= 0x7F {
        out.push(cpt as u8);
    } else if cpt <= 0x7FF {
        out.extend_from_slice(&[0xC0 | ((cpt >> 6) & 0x1F) as u8, 0x80 | (cpt & 0x3F) as u8]);
    } else if cpt <= 0xFFFF {
        out.extend_from_slice(&[
            0xE0 | ((cpt >> 12) & 0x0F) as u8,
            0x80 | ((cpt >> 6) & 0x3F) as u8,
            0x80 | (cpt & 0x3F) as u8,
        ]);
    } else if cpt <= 0x10FFFF {
        out.extend_from_slice(&[
            0xF0 | ((cpt >> 18) & 0x07) as u8,
            0x80 | ((cpt >> 12) & 0x3F) as u8,
            0x80 | ((cpt >> 6) & 0x3F) as u8,
            0x80 | (cpt & 0x3F) as u8,
        ]);
    } else {
        return None;
    }
    Some(())
}

/// GPT-2's byte-to-unicode map: printable bytes stand for themselves, the others are moved to
/// U+0100 and up, in byte order.
pub struct ByteMap {
    /// The UTF-8 form of the code point each byte maps to.
    pub encoded: [([u8; 2], u8); 256],
    /// Code point -> byte, for code points below 0x200 (all of the map's images).
    decode: [i16; 0x200],
}

pub fn byte_map() -> &'static ByteMap {
    static MAP: OnceLock<ByteMap> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut cpt_of = [0u32; 256];
        let mut n = 0;
        for b in 0..256u32 {
            let printable = (0x21..=0x7E).contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b);
            cpt_of[b as usize] = if printable {
                b
            } else {
                n += 1;
                255 + n
            };
        }
        let mut encoded = [([0u8; 2], 0u8); 256];
        let mut decode = [-1i16; 0x200];
        for b in 0..256 {
            let c = cpt_of[b];
            let mut buf = Vec::with_capacity(2);
            let _ = push_utf8(c, &mut buf);
            let mut e = [0u8; 2];
            e[..buf.len()].copy_from_slice(&buf);
            encoded[b] = (e, buf.len() as u8);
            decode[c as usize] = b as i16;
        }
        ByteMap { encoded, decode }
    })
}

impl ByteMap {
    /// The byte a code point of the map stands for.
    #[inline]
    pub fn byte_of(&self, cpt: u32) -> Option<u8> {
        match self.decode.get(cpt as usize) {
            Some(&b) if b >= 0 => Some(b as u8),
            _ => None,
        }
    }

    #[inline]
    pub fn push_encoded(&self, byte: u8, out: &mut Vec<u8>) {
        let (e, len) = &self.encoded[byte as usize];
        out.extend_from_slice(&e[..*len as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_match_llama_tables() {
        assert_eq!(flags('a' as u32), LETTER);
        assert_eq!(flags('7' as u32), NUMBER);
        assert_eq!(flags(' ' as u32), 0x0008 | WHITESPACE_FLAG);
        assert_eq!(flags('\n' as u32), 0x0080 | WHITESPACE_FLAG);
        assert_eq!(flags('$' as u32), SYMBOL);
        assert_eq!(flags(0x0301), ACCENT_MARK);
        assert_eq!(flags(0x3000), 0x0008 | WHITESPACE_FLAG);
        assert_eq!(flags(0x110000), UNDEFINED);
    }

    #[test]
    fn decoder_replaces_each_bad_byte() {
        let mut v = Vec::new();
        cpts_from_utf8(b"a\xC3\xA9\xFF\xE2\x82", &mut v);
        assert_eq!(v, vec![0x61, 0xE9, 0xFFFD, 0xFFFD, 0xFFFD]);
    }

    #[test]
    fn byte_map_is_gpt2s() {
        let m = byte_map();
        assert_eq!(&m.encoded[b' ' as usize].0, "Ġ".as_bytes());
        assert_eq!(&m.encoded[b'\n' as usize].0, "Ċ".as_bytes());
        assert_eq!(m.byte_of('Ġ' as u32), Some(b' '));
        assert_eq!(m.byte_of('a' as u32), Some(b'a'));
        assert_eq!(m.byte_of(0x41F), None);
    }
}
