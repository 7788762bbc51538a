//! Lookup tables built once at load: byte strings -> ids in one arena with an open-addressing
//! index (no allocation per entry, so 262k-token vocabularies load quickly), and pairs of ids
//! -> merge rank.

/// Marks "no id".
pub const NONE: u32 = u32::MAX;

#[inline]
fn hash_bytes(b: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    // Mix the high bits down: the index uses the low ones.
    h ^ (h >> 29)
}

/// Byte strings numbered 0, 1, 2, ... in insertion order, with lookup by content.
#[derive(Clone, Default)]
pub struct StringTable {
    arena: Vec<u8>,
    /// Start of string i in `arena`; one more entry than strings.
    offsets: Vec<u32>,
    /// Open addressing: string ids, NONE where empty. Length is a power of two.
    slots: Vec<u32>,
}

impl StringTable {
    pub fn with_capacity(n: usize, bytes: usize) -> StringTable {
        let cap = (n.max(8) * 2).next_power_of_two();
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        StringTable {
            arena: Vec::with_capacity(bytes),
            offsets,
            slots: vec![NONE; cap],
        }
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    #[inline]
    pub fn get(&self, id: u32) -> &[u8] {
        let i = id as usize;
        &self.arena[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The id of `s`, if present.
    #[inline]
    pub fn find(&self, s: &[u8]) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = hash_bytes(s) as usize & mask;
        loop {
            let id = self.slots[i];
            if id == NONE {
                return None;
            }
            if self.get(id) == s {
                return Some(id);
            }
            i = (i + 1) & mask;
        }
    }

    /// Appends `s` with the next id and returns it, or returns the id it already has
    /// (`Err`) without adding it again. Fails with `None` past 4 GiB of text.
    pub fn insert(&mut self, s: &[u8]) -> Option<Result<u32, u32>> {
        if (self.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = hash_bytes(s) as usize & mask;
        loop {
            let id = self.slots[i];
            if id == NONE {
                break;
            }
            if self.get(id) == s {
                return Some(Err(id));
            }
            i = (i + 1) & mask;
        }
        let id = u32::try_from(self.len()).ok().filter(|&id| id != NONE)?;
        self.arena.extend_from_slice(s);
        self.offsets.push(u32::try_from(self.arena.len()).ok()?);
        self.slots[i] = id;
        Some(Ok(id))
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        let mut slots = vec![NONE; cap];
        for id in 0..self.len() as u32 {
            let mut i = hash_bytes(self.get(id)) as usize & (cap - 1);
            while slots[i] != NONE {
                i = (i + 1) & (cap - 1);
            }
            slots[i] = id;
        }
        self.slots = slots;
    }
}

/// (left id, right id) -> (rank, id of the merged string).
#[derive(Clone, Default)]
pub struct PairTable {
    keys: Vec<u64>,
    values: Vec<(u32, u32)>,
    len: usize,
}

const EMPTY_KEY: u64 = u64::MAX;

#[inline]
fn hash_pair(k: u64) -> u64 {
    let h = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 32)
}

impl PairTable {
    pub fn with_capacity(n: usize) -> PairTable {
        let cap = (n.max(8) * 2).next_power_of_two();
        PairTable {
            keys: vec![EMPTY_KEY; cap],
            values: vec![(0, 0); cap],
            len: 0,
        }
    }

    #[inline]
    fn key(a: u32, b: u32) -> u64 {
        ((a as u64) << 32) | b as u64
    }

    #[inline]
    pub fn get(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        let k = Self::key(a, b);
        let mask = self.keys.len() - 1;
        let mut i = hash_pair(k) as usize & mask;
        loop {
            let stored = self.keys[i];
            if stored == k {
                return Some(self.values[i]);
            }
            if stored == EMPTY_KEY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts unless the pair is present: the first rank of a pair wins, as in llama.cpp.
    pub fn insert_first(&mut self, a: u32, b: u32, value: (u32, u32)) {
        if (self.len + 1) * 2 > self.keys.len() {
            let old_keys = std::mem::take(&mut self.keys);
            let old_values = std::mem::take(&mut self.values);
            let cap = old_keys.len() * 2;
            self.keys = vec![EMPTY_KEY; cap];
            self.values = vec![(0, 0); cap];
            self.len = 0;
            for (k, v) in old_keys.into_iter().zip(old_values) {
                if k != EMPTY_KEY {
                    self.insert_first((k >> 32) as u32, k as u32, v);
                }
            }
        }
        let k = Self::key(a, b);
        let mask = self.keys.len() - 1;
        let mut i = hash_pair(k) as usize & mask;
        loop {
            let stored = self.keys[i];
            if stored == k {
                return;
            }
            if stored == EMPTY_KEY {
                self.keys[i] = k;
                self.values[i] = value;
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_grow() {
        let mut t = StringTable::with_capacity(2, 0);
        let words: Vec<String> = (0..1000).map(|i| format!("w{i}")).collect();
        for (i, w) in words.iter().enumerate() {
            assert_eq!(t.insert(w.as_bytes()), Some(Ok(i as u32)));
        }
        assert_eq!(t.insert(b"w7"), Some(Err(7)));
        for (i, w) in words.iter().enumerate() {
            assert_eq!(t.find(w.as_bytes()), Some(i as u32));
            assert_eq!(t.get(i as u32), w.as_bytes());
        }
        assert_eq!(t.find(b"nope"), None);
        assert_eq!(t.insert(b""), Some(Ok(1000)));
        assert_eq!(t.find(b""), Some(1000));
    }

    #[test]
    fn pairs_keep_the_first_rank() {
        let mut p = PairTable::with_capacity(1);
        for i in 0..500u32 {
            p.insert_first(i, i + 1, (i, i * 2));
        }
        p.insert_first(3, 4, (99, 99));
        assert_eq!(p.get(3, 4), Some((3, 6)));
        assert_eq!(p.get(4, 3), None);
        assert_eq!(p.get(499, 500), Some((499, 998)));
    }
}
