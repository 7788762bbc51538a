//! Pre-tokenizers of byte-level BPE vocabularies: the split rules llama.cpp uses for each
//! `tokenizer.ggml.pre` (llm_tokenizer_bpe in src/llama-vocab.cpp). Each rule splits every
//! piece made by the rule before it. The GPT-2 and Llama 3 patterns and the lone `\p{N}` are
//! hand-written (as in llama.cpp's unicode.cpp); the others run through [`super::regex`].

use super::regex::{self, Mode, Regex};
use super::unicode::{self, LETTER, NUMBER, WHITESPACE_FLAG};
use crate::{Error, Result};

const GPT2: &str = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const LLAMA3: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN35: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// How a byte-level BPE vocabulary splits text before merging; from `tokenizer.ggml.pre`.
#[derive(Clone, Debug)]
pub struct PreTokenizer {
    steps: Vec<Step>,
    /// llama.cpp's `ignore_merges`: a word that is a token as a whole is not merged.
    pub ignore_merges: bool,
    /// llama.cpp's default for `add_bos_token` when the key is absent.
    pub add_bos: bool,
}

#[derive(Clone, Debug)]
enum Step {
    Gpt2,
    Llama3,
    /// `\p{N}`: every number code point on its own.
    Digits,
    Regex(Box<Regex>),
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp selects for `name`; an unknown name is an error.
    pub fn new(name: &str) -> Result<PreTokenizer> {
        let mut ignore_merges = false;
        let mut add_bos = false;
        let patterns: Vec<&str> = match name {
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => {
                ignore_merges = true;
                add_bos = true;
                vec![LLAMA3]
            }
            "dbrx" | "smaug-bpe" => vec![LLAMA3],
            "deepseek-llm" => vec![
                "[\r\n]",
                "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
                "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
                "\\s+$",
                "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
                "\\p{N}+",
            ],
            "deepseek-coder" => vec![
                "[\r\n]",
                "\\s?\\p{L}+",
                "\\s?\\p{P}+",
                "[一-龥ࠀ-一가-퟿]+",
                "\\p{N}",
            ],
            "falcon" => vec!["[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2, "[0-9][0-9][0-9]"],
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" => vec!["\\p{N}", GPT2],
            // (jina-v2-es/de are left out: llama.cpp gives their <mask> token an lstrip.)
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "mpt" | "olmo" | "jais"
            | "exaone4" => vec![GPT2],
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "stablelm2" | "hunyuan" | "megrez" => {
                vec![QWEN2]
            }
            "qwen35" => vec![QWEN35],
            "default" => vec![
                "[\\p{P}\\$\\+<=>\\^~\\|]+",
                GPT2,
                "\\p{N}+",
                "[0-9][0-9][0-9]",
            ],
            other => {
                return Err(Error::Unsupported(format!(
                    "pre-tokenizer {other:?} (tokenizer.ggml.pre)"
                )))
            }
        };
        let steps = patterns
            .into_iter()
            .map(|p| match p {
                GPT2 => Ok(Step::Gpt2),
                LLAMA3 => Ok(Step::Llama3),
                "\\p{N}" => Ok(Step::Digits),
                p => Regex::new(p)
                    .map(|r| Step::Regex(Box::new(r)))
                    .map_err(|e| Error::Invalid(format!("pre-tokenizer {name}: {e}"))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PreTokenizer {
            steps,
            ignore_merges,
            add_bos,
        })
    }

    /// Splits code points into words, as `[start, end)` ranges of `cpts`.
    pub fn split(&self, cpts: &[u32], scratch: &mut Scratch, out: &mut Vec<(usize, usize)>) {
        out.clear();
        out.push((0, cpts.len()));
        for step in &self.steps {
            std::mem::swap(out, &mut scratch.pieces);
            match step {
                Step::Gpt2 => split_gpt2(cpts, &scratch.pieces, out),
                Step::Llama3 => split_llama3(cpts, &scratch.pieces, out),
                Step::Digits => split_digits(cpts, &scratch.pieces, out),
                Step::Regex(re) => {
                    let map = match re.mode {
                        Mode::Collapsed => regex::collapse,
                        Mode::Wide => regex::widen,
                    };
                    scratch.values.clear();
                    scratch.values.extend(cpts.iter().map(|&c| map(c)));
                    re.split(&scratch.values, &scratch.pieces, out);
                }
            }
        }
    }
}

/// Buffers reused between calls.
#[derive(Default)]
pub struct Scratch {
    pieces: Vec<(usize, usize)>,
    values: Vec<u32>,
}

/// Flags of the code point at `pos` within `[a, b)`, 0 outside (llama.cpp's `_get_flags`).
struct View<'a> {
    cpts: &'a [u32],
    a: usize,
    b: usize,
}

const OUT_OF_RANGE: u32 = u32::MAX;

impl View<'_> {
    #[inline]
    fn cpt(&self, pos: usize) -> u32 {
        if self.a <= pos && pos < self.b {
            self.cpts[pos]
        } else {
            OUT_OF_RANGE
        }
    }

    #[inline]
    fn flags(&self, pos: usize) -> u16 {
        if self.a <= pos && pos < self.b {
            unicode::flags(self.cpts[pos])
        } else {
            0
        }
    }
}

#[inline]
fn is_ws(f: u16) -> bool {
    f & WHITESPACE_FLAG != 0
}
#[inline]
fn is_letter(f: u16) -> bool {
    f & LETTER != 0
}
#[inline]
fn is_number(f: u16) -> bool {
    f & NUMBER != 0
}

/// Emits `[prev, end)` when it is not empty.
struct Emit<'o> {
    out: &'o mut Vec<(usize, usize)>,
    prev: usize,
}

impl Emit<'_> {
    #[inline]
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev;
        if len > 0 {
            self.out.push((self.prev, end));
        }
        self.prev = end;
        len
    }
}

#[inline]
fn ascii_lower(c: u32) -> u32 {
    if (b'A' as u32..=b'Z' as u32).contains(&c) {
        c + 32
    } else {
        c
    }
}

/// The length of a contraction `'s 't 're 've 'm 'll 'd` at `pos`, if one starts there.
#[inline]
fn contraction(v: &View, pos: usize, fold_case: bool) -> usize {
    if v.cpt(pos) != '\'' as u32 || pos + 1 >= v.b {
        return 0;
    }
    // llama.cpp folds case with its Unicode lowercase map; only ASCII letters can fold to the
    // letters compared here (the map's non-ASCII entries that reach ASCII are U+0130 -> i and
    // U+212A -> k).
    let f = |c: u32| if fold_case { ascii_lower(c) } else { c };
    let n1 = f(v.cpt(pos + 1));
    if [b's', b't', b'm', b'd'].iter().any(|&c| n1 == c as u32) {
        return 2;
    }
    if pos + 2 < v.b {
        let n2 = f(v.cpt(pos + 2));
        let pair = |a: u8, b: u8| n1 == a as u32 && n2 == b as u32;
        if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
            return 3;
        }
    }
    0
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, as
/// `unicode_regex_split_custom_gpt2`.
fn split_gpt2(cpts: &[u32], pieces: &[(usize, usize)], out: &mut Vec<(usize, usize)>) {
    out.clear();
    for &(a, b) in pieces {
        let v = View { cpts, a, b };
        let mut e = Emit { out, prev: a };
        let mut pos = a;
        while pos < b {
            let cpt = v.cpt(pos);
            let flags = v.flags(pos);

            let n = contraction(&v, pos, false);
            if n > 0 {
                pos += e.add(pos + n);
                continue;
            }

            let space = cpt == ' ' as u32;
            let mut flags2 = if space { v.flags(pos + 1) } else { flags };
            if is_letter(flags2) {
                pos += space as usize;
                while is_letter(flags2) {
                    pos += 1;
                    flags2 = v.flags(pos);
                }
                e.add(pos);
                continue;
            }
            if is_number(flags2) {
                pos += space as usize;
                while is_number(flags2) {
                    pos += 1;
                    flags2 = v.flags(pos);
                }
                e.add(pos);
                continue;
            }
            let other = |f: u16| !(is_ws(f) || is_letter(f) || is_number(f)) && f != 0;
            if other(flags2) {
                pos += space as usize;
                while other(flags2) {
                    pos += 1;
                    flags2 = v.flags(pos);
                }
                e.add(pos);
                continue;
            }

            let mut num_ws = 0;
            while is_ws(v.flags(pos + num_ws)) {
                num_ws += 1;
            }
            if num_ws > 1 && v.cpt(pos + num_ws) != OUT_OF_RANGE {
                pos += num_ws - 1;
                e.add(pos);
                continue;
            }
            if num_ws > 0 {
                pos += num_ws;
                e.add(pos);
                continue;
            }
            pos += 1;
            e.add(pos);
        }
    }
}

/// The Llama 3 pattern, as `unicode_regex_split_custom_llama3`.
fn split_llama3(cpts: &[u32], pieces: &[(usize, usize)], out: &mut Vec<(usize, usize)>) {
    out.clear();
    let is_crlf = |c: u32| c == '\r' as u32 || c == '\n' as u32;
    for &(a, b) in pieces {
        let v = View { cpts, a, b };
        let mut e = Emit { out, prev: a };
        let mut pos = a;
        while pos < b {
            let cpt = v.cpt(pos);
            let flags = v.flags(pos);

            let n = contraction(&v, pos, true);
            if n > 0 {
                pos += e.add(pos + n);
                continue;
            }

            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(is_crlf(cpt) || is_number(flags))
                && (is_letter(flags) || is_letter(v.flags(pos + 1)))
            {
                pos += 1;
                while is_letter(v.flags(pos)) {
                    pos += 1;
                }
                e.add(pos);
                continue;
            }

            // \p{N}{1,3}
            if is_number(flags) {
                let mut ini = pos;
                while is_number(v.flags(pos)) {
                    pos += 1;
                    if pos - ini >= 3 {
                        e.add(pos);
                        ini = pos;
                    }
                }
                e.add(pos);
                continue;
            }

            // <space>?[^\s\p{L}\p{N}]+[\r\n]*
            let space = cpt == ' ' as u32;
            let mut flags2 = if space { v.flags(pos + 1) } else { flags };
            let other = |f: u16| !(is_ws(f) || is_letter(f) || is_number(f));
            // llama.cpp tests the flags of `pos` itself for being defined here.
            if other(flags2) && flags != 0 {
                pos += space as usize;
                while other(flags2) && flags2 != 0 {
                    pos += 1;
                    flags2 = v.flags(pos);
                }
                while is_crlf(v.cpt(pos)) {
                    pos += 1;
                }
                e.add(pos);
                continue;
            }

            let mut num_ws = 0;
            let mut last_crlf_end = 0;
            while is_ws(v.flags(pos + num_ws)) {
                if is_crlf(v.cpt(pos + num_ws)) {
                    last_crlf_end = pos + num_ws + 1;
                }
                num_ws += 1;
            }
            // \s*[\r\n]+
            if last_crlf_end > 0 {
                pos = last_crlf_end;
                e.add(pos);
                continue;
            }
            // \s+(?!\S)
            if num_ws > 1 && v.cpt(pos + num_ws) != OUT_OF_RANGE {
                pos += num_ws - 1;
                e.add(pos);
                continue;
            }
            // \s+
            if num_ws > 0 {
                pos += num_ws;
                e.add(pos);
                continue;
            }
            pos += 1;
            e.add(pos);
        }
    }
}

/// `\p{N}` over llama.cpp's collapsed text: every number code point becomes its own piece.
fn split_digits(cpts: &[u32], pieces: &[(usize, usize)], out: &mut Vec<(usize, usize)>) {
    out.clear();
    for &(a, b) in pieces {
        let mut last = a;
        for (pos, &c) in cpts.iter().enumerate().take(b).skip(a) {
            let digit = if c < 128 {
                (b'0' as u32..=b'9' as u32).contains(&c)
            } else {
                regex::collapse(c) == 0xD1
            };
            if digit {
                if pos > last {
                    out.push((last, pos));
                }
                out.push((pos, pos + 1));
                last = pos + 1;
            }
        }
        if last < b {
            out.push((last, b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: &str, text: &str) -> Vec<String> {
        let p = PreTokenizer::new(pre).unwrap();
        let cpts: Vec<u32> = text.chars().map(|c| c as u32).collect();
        let mut out = Vec::new();
        p.split(&cpts, &mut Scratch::default(), &mut out);
        out.iter()
            .map(|&(a, b)| text.chars().skip(a).take(b - a).collect())
            .collect()
    }

    #[test]
    fn gpt2_splits() {
        assert_eq!(
            words("gpt-2", "Hello world's  end 123!!"),
            vec!["Hello", " world", "'s", " ", " end", " 123", "!!"]
        );
    }

    #[test]
    fn llama3_splits() {
        assert_eq!(
            words("llama-bpe", "I'M 12345 ok\n\n  x"),
            vec!["I", "'M", " ", "123", "45", " ok", "\n\n", " ", " x"]
        );
    }

    #[test]
    fn smollm_splits_digits_first() {
        assert_eq!(words("smollm", "ab 42"), vec!["ab", " ", "4", "2"]);
    }

    #[test]
    fn hand_written_matches_the_matcher() {
        // The hand-written splitters agree with the general matcher on these inputs (where
        // llama.cpp's custom code and std::regex agree).
        let text = "Hi, I'm 1234 años — 3.5\r\n\n  tabs\t\tend ";
        let cpts: Vec<u32> = text.chars().map(|c| c as u32).collect();
        for (pat, step) in [(LLAMA3, Step::Llama3), (GPT2, Step::Gpt2)] {
            let re = Regex::new(pat).unwrap();
            let vals: Vec<u32> = cpts.iter().map(|&c| regex::collapse(c)).collect();
            let mut a = Vec::new();
            re.split(&vals, &[(0, cpts.len())], &mut a);
            let mut b = Vec::new();
            match step {
                Step::Llama3 => split_llama3(&cpts, &[(0, cpts.len())], &mut b),
                _ => split_gpt2(&cpts, &[(0, cpts.len())], &mut b),
            }
            assert_eq!(a, b, "{pat}");
        }
    }

    #[test]
    fn unknown_pre_tokenizer_is_named() {
        let e = PreTokenizer::new("nonesuch").unwrap_err().to_string();
        assert!(e.contains("nonesuch"), "{e}");
    }
}
