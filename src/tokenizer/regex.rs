//! A small backtracking matcher with ECMAScript semantics (what llama.cpp gets from
//! `std::regex`) for the pre-tokenizer patterns that have no hand-written splitter.
//!
//! llama.cpp runs a pattern that uses `\p{..}` over a "collapsed" text in which every code
//! point above 0x7F is replaced by one byte for its category (0xD0..0xD5, 0x0B for
//! whitespace), and `\p{X}` by a class of that byte plus the ASCII members of X. A pattern
//! without `\p{..}` runs over the code points themselves, with non-ASCII whitespace replaced
//! by 0x0B. [`Mode`] selects which, and the caller maps the text accordingly
//! ([`collapse`], [`widen`]).
//!
//! Supported: alternation, `(..)`, `(?:..)`, `(?=..)`, `(?!..)`, classes with ranges, `\s \S
//! \d \p{N,L,P,M,S,Lu,Ll,Lt,Lm,Lo}`, quantifiers `? * + {n} {n,} {n,m}` (greedy), and `$`.

use super::unicode::{self, WHITESPACE_FLAG};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Collapsed,
    Wide,
}

/// The value llama.cpp's collapsed text holds for a code point.
#[inline]
pub fn collapse(cpt: u32) -> u32 {
    if cpt < 128 {
        return cpt;
    }
    let f = unicode::flags(cpt);
    if f & WHITESPACE_FLAG != 0 {
        return 0x0B;
    }
    match f & unicode::MASK_CATEGORIES {
        unicode::NUMBER => 0xD1,
        unicode::LETTER => 0xD2,
        unicode::PUNCTUATION => 0xD3,
        unicode::ACCENT_MARK => 0xD4,
        unicode::SYMBOL => 0xD5,
        _ => 0xD0,
    }
}

/// The value llama.cpp's wide text holds for a code point.
#[inline]
pub fn widen(cpt: u32) -> u32 {
    if cpt > 0x7F && unicode::flags(cpt) & WHITESPACE_FLAG != 0 {
        0x0B
    } else {
        cpt
    }
}

#[derive(Clone, Debug)]
struct Class {
    negated: bool,
    ranges: Vec<(u32, u32)>,
}

impl Class {
    #[inline]
    fn matches(&self, c: u32) -> bool {
        let inside = self.ranges.iter().any(|&(a, b)| a <= c && c <= b);
        inside != self.negated
    }
}

#[derive(Clone, Debug)]
enum Node {
    Class(Class),
    Group(Vec<Vec<Node>>),
    Repeat { node: Box<Node>, min: u32, max: u32 },
    Look { negated: bool, alts: Vec<Vec<Node>> },
    End,
}

/// A compiled pattern.
#[derive(Clone, Debug)]
pub struct Regex {
    alts: Vec<Vec<Node>>,
    pub mode: Mode,
}

const SPACE: [(u32, u32); 2] = [(0x09, 0x0D), (0x20, 0x20)];

fn category_ranges(name: &str) -> Option<Vec<(u32, u32)>> {
    // The collapsed byte of the category, then its ASCII members (llama.cpp's k_ucat_map).
    let r: Vec<(u32, u32)> = match name {
        "N" => vec![(0xD1, 0xD1), (0x30, 0x39)],
        "L" | "Lu" | "Ll" | "Lt" | "Lm" | "Lo" => {
            vec![(0xD2, 0xD2), (0x41, 0x5A), (0x61, 0x7A)]
        }
        "P" => vec![
            (0xD3, 0xD3),
            (0x21, 0x23),
            (0x25, 0x2A),
            (0x2C, 0x2F),
            (0x3A, 0x3B),
            (0x3F, 0x40),
            (0x5B, 0x5D),
            (0x5F, 0x5F),
            (0x7B, 0x7B),
            (0x7D, 0x7D),
        ],
        "M" => vec![(0xD4, 0xD4)],
        "S" => vec![
            (0xD5, 0xD5),
            (0x24, 0x24),
            (0x2B, 0x2B),
            (0x3C, 0x3E),
            (0x5E, 0x5E),
            (0x60, 0x60),
            (0x7C, 0x7C),
        ],
        _ => return None,
    };
    Some(r)
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    pattern: &'a str,
}

/// One escape inside or outside a class: a set of ranges, and whether it is a single char
/// (usable as a range end).
enum Escape {
    Char(u32),
    Set(Vec<(u32, u32)>, bool),
}

impl<'a> Parser<'a> {
    fn err(&self, what: &str) -> String {
        format!("pattern {:?} at {}: {what}", self.pattern, self.pos)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn alts(&mut self) -> Result<Vec<Vec<Node>>, String> {
        let mut alts = vec![self.seq()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alts.push(self.seq()?);
        }
        Ok(alts)
    }

    fn seq(&mut self) -> Result<Vec<Node>, String> {
        let mut seq = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            let atom = self.quantified(atom)?;
            seq.push(atom);
        }
        Ok(seq)
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, String> {
        let (min, max) = match self.peek() {
            Some('?') => (0, 1),
            Some('*') => (0, u32::MAX),
            Some('+') => (1, u32::MAX),
            Some('{') => {
                let save = self.pos;
                self.pos += 1;
                let mut num = String::new();
                while let Some(c) = self.peek().filter(|c| c.is_ascii_digit() || *c == ',') {
                    num.push(c);
                    self.pos += 1;
                }
                if self.next() != Some('}') {
                    self.pos = save;
                    return Err(self.err("bad {n,m}"));
                }
                self.pos -= 1;
                let parse = |s: &str| s.parse::<u32>().map_err(|_| self.err("bad count"));
                match num.split_once(',') {
                    None => {
                        let n = parse(&num)?;
                        (n, n)
                    }
                    Some((a, "")) => (parse(a)?, u32::MAX),
                    Some((a, b)) => (parse(a)?, parse(b)?),
                }
            }
            _ => return Ok(atom),
        };
        self.pos += 1;
        if self.peek() == Some('?') {
            return Err(self.err("lazy quantifiers are not supported"));
        }
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }

    fn atom(&mut self) -> Result<Node, String> {
        let c = self.next().ok_or_else(|| self.err("unexpected end"))?;
        match c {
            '(' => {
                let look = if self.chars[self.pos..].starts_with(&['?', ':']) {
                    self.pos += 2;
                    None
                } else if self.chars[self.pos..].starts_with(&['?', '=']) {
                    self.pos += 2;
                    Some(false)
                } else if self.chars[self.pos..].starts_with(&['?', '!']) {
                    self.pos += 2;
                    Some(true)
                } else {
                    None
                };
                let alts = self.alts()?;
                if self.next() != Some(')') {
                    return Err(self.err("missing )"));
                }
                Ok(match look {
                    Some(negated) => Node::Look { negated, alts },
                    None => Node::Group(alts),
                })
            }
            '[' => self.class(),
            '$' => Ok(Node::End),
            '\\' => Ok(match self.escape()? {
                Escape::Char(c) => Node::Class(Class {
                    negated: false,
                    ranges: vec![(c, c)],
                }),
                Escape::Set(ranges, negated) => Node::Class(Class { negated, ranges }),
            }),
            '.' | '^' => Err(self.err("'.' and '^' are not supported")),
            c => Ok(Node::Class(Class {
                negated: false,
                ranges: vec![(c as u32, c as u32)],
            })),
        }
    }

    fn escape(&mut self) -> Result<Escape, String> {
        let c = self.next().ok_or_else(|| self.err("dangling \\"))?;
        Ok(match c {
            'r' => Escape::Char(0x0D),
            'n' => Escape::Char(0x0A),
            't' => Escape::Char(0x09),
            's' => Escape::Set(SPACE.to_vec(), false),
            'S' => Escape::Set(SPACE.to_vec(), true),
            'd' => Escape::Set(vec![(0x30, 0x39)], false),
            'p' => {
                if self.next() != Some('{') {
                    return Err(self.err("\\p without {"));
                }
                let mut name = String::new();
                loop {
                    match self.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(self.err("unterminated \\p{")),
                    }
                }
                let r = category_ranges(&name)
                    .ok_or_else(|| self.err(&format!("unknown category {name}")))?;
                Escape::Set(r, false)
            }
            c if c.is_ascii_alphanumeric() => {
                return Err(self.err(&format!("unsupported escape \\{c}")))
            }
            c => Escape::Char(c as u32),
        })
    }

    fn class(&mut self) -> Result<Node, String> {
        let negated = if self.peek() == Some('^') {
            self.pos += 1;
            true
        } else {
            false
        };
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = self.next().ok_or_else(|| self.err("unterminated class"))?;
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = if c == '\\' {
                match self.escape()? {
                    Escape::Char(c) => c,
                    Escape::Set(r, neg) => {
                        if neg {
                            return Err(self.err("negated set inside a class"));
                        }
                        ranges.extend(r);
                        continue;
                    }
                }
            } else {
                c as u32
            };
            // A range `lo-hi`, unless the '-' is the last char of the class.
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&c| c != ']') {
                self.pos += 1;
                let h = self.next().ok_or_else(|| self.err("unterminated range"))?;
                let hi = if h == '\\' {
                    match self.escape()? {
                        Escape::Char(c) => c,
                        Escape::Set(..) => return Err(self.err("set as a range end")),
                    }
                } else {
                    h as u32
                };
                if hi < lo {
                    return Err(self.err("reversed range"));
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Node::Class(Class { negated, ranges }))
    }
}

impl Regex {
    /// Compiles a pattern; the mode follows llama.cpp: collapsed when it uses `\p{..}`.
    pub fn new(pattern: &str) -> Result<Regex, String> {
        let mode = if pattern.contains("\\p{") {
            Mode::Collapsed
        } else {
            Mode::Wide
        };
        let mut p = Parser {
            chars: pattern.chars().collect(),
            pos: 0,
            pattern,
        };
        let alts = p.alts()?;
        if p.pos != p.chars.len() {
            return Err(p.err("unbalanced )"));
        }
        Ok(Regex { alts, mode })
    }

    /// The end of the match that starts at `start`, with `end` the end of the text the
    /// pattern may see.
    pub fn match_at(&self, text: &[u32], start: usize, end: usize) -> Option<usize> {
        let m = Matcher { text, end };
        let mut found = None;
        m.alts(&self.alts, start, &mut |p| {
            found = Some(p);
            true
        });
        found
    }

    /// Splits each piece `[a, b)` of `pieces` into matches and the gaps between them, as
    /// llama.cpp's `unicode_regex_split_stl` does.
    pub fn split(&self, text: &[u32], pieces: &[(usize, usize)], out: &mut Vec<(usize, usize)>) {
        out.clear();
        for &(a, b) in pieces {
            let mut last = a;
            let mut pos = a;
            while pos < b {
                match self.match_at(text, pos, b) {
                    Some(e) if e > pos => {
                        if pos > last {
                            out.push((last, pos));
                        }
                        out.push((pos, e));
                        last = e;
                        pos = e;
                    }
                    _ => pos += 1,
                }
            }
            if last < b {
                out.push((last, b));
            }
        }
    }
}

struct Matcher<'t> {
    text: &'t [u32],
    end: usize,
}

impl Matcher<'_> {
    fn alts(&self, alts: &[Vec<Node>], pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
        alts.iter().any(|seq| self.seq(seq, pos, k))
    }

    fn seq(&self, seq: &[Node], pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
        match seq.split_first() {
            None => k(pos),
            Some((node, rest)) => self.node(node, pos, &mut |p| self.seq(rest, p, k)),
        }
    }

    #[inline]
    fn class_at(&self, c: &Class, pos: usize) -> bool {
        pos < self.end && c.matches(self.text[pos])
    }

    fn node(&self, node: &Node, pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
        match node {
            Node::Class(c) => self.class_at(c, pos) && k(pos + 1),
            Node::Group(alts) => self.alts(alts, pos, k),
            Node::End => pos == self.end && k(pos),
            Node::Look { negated, alts } => {
                let found = self.alts(alts, pos, &mut |_| true);
                found != *negated && k(pos)
            }
            Node::Repeat { node, min, max } => match node.as_ref() {
                // The common case, without recursion: take as many as possible, then give
                // them back one by one.
                Node::Class(c) => {
                    let mut n = 0u32;
                    while n < *max && self.class_at(c, pos + n as usize) {
                        n += 1;
                    }
                    if n < *min {
                        return false;
                    }
                    (*min..=n).rev().any(|i| k(pos + i as usize))
                }
                inner => self.repeat(inner, *min, *max, 0, pos, k),
            },
        }
    }

    fn repeat(
        &self,
        inner: &Node,
        min: u32,
        max: u32,
        count: u32,
        pos: usize,
        k: &mut dyn FnMut(usize) -> bool,
    ) -> bool {
        if count < max
            && self.node(inner, pos, &mut |p| {
                // ECMAScript: an iteration past the minimum that matches empty fails.
                if p == pos && count >= min {
                    return false;
                }
                self.repeat(inner, min, max, count + 1, p, k)
            })
        {
            return true;
        }
        count >= min && k(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pattern: &str, text: &str) -> Vec<String> {
        let re = Regex::new(pattern).unwrap();
        let cpts: Vec<u32> = text.chars().map(|c| c as u32).collect();
        let vals: Vec<u32> = match re.mode {
            Mode::Collapsed => cpts.iter().map(|&c| collapse(c)).collect(),
            Mode::Wide => cpts.iter().map(|&c| widen(c)).collect(),
        };
        let mut out = Vec::new();
        re.split(&vals, &[(0, vals.len())], &mut out);
        out.iter()
            .map(|&(a, b)| {
                cpts[a..b]
                    .iter()
                    .map(|&c| char::from_u32(c).unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn backtracks_like_ecmascript() {
        assert_eq!(
            split("\\s+(?!\\S)|\\s+", "a   b"),
            vec!["a", "  ", " ", "b"]
        );
        assert_eq!(
            split("\\s*[\\r\\n]+", "x \n \n  y"),
            vec!["x", " \n \n", "  y"]
        );
        assert_eq!(split("\\p{N}{1,3}", "12345"), vec!["123", "45"]);
        assert_eq!(split("\\s+$", "a  "), vec!["a", "  "]);
        assert_eq!(split("[一-龥]+", "ab中文c"), vec!["ab", "中文", "c"]);
        assert_eq!(split("\\p{L}+", "héllo wörld"), vec!["héllo", " ", "wörld"]);
    }

    #[test]
    fn rejects_what_it_cannot_do() {
        assert!(Regex::new("a+?").is_err());
        assert!(Regex::new("(a").is_err());
        assert!(Regex::new("\\p{Han}").is_err());
    }
}
