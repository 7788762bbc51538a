//! Lookup tables built once at load: byte strings -> ids in one arena with an open-addressing
//! index (no allocation per entry, so 262k-token vocabularies load quickly), and pairs of ids
//! -> merge rank.

/// Marks "no id".
pub const NONE: u32 = u32::MAX;

const EMPTY: u64 = u64::MAX;

#[inline]
pub fn hash_bytes(b: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(K).rotate_left(31);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    fmix(h)
}

/// Murmur3's finalizer: every input bit reaches every output bit.
#[inline]
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Byte strings numbered 0, 1, 2, ... in insertion order, with lookup by content.
#[derive(Clone)]
pub struct StringTable {
    arena: Vec<u8>,
    /// Start of string i in `arena`; one more entry than strings.
    offsets: Vec<u32>,
    /// Open addressing: (high 32 bits of the hash) << 32 | id, EMPTY where empty. Length is a
    /// power of two.
    slots: Vec<u64>,
}

impl StringTable {
    /// Slots for `n` strings at a load of at most 3/4.
    fn slots_for(n: usize) -> usize {
        (n.max(8) * 4 / 3 + 1).next_power_of_two()
    }

    /// A table of `strings` numbered in order. The index is filled bucket by bucket of slot
    /// position rather than in id order, so that its writes stay close together instead of
    /// missing the CPU cache once per string (a 262k vocabulary builds several times faster).
    /// Fails with the ids of a duplicate, or `None` past 4 GiB of text.
    pub fn build<'s>(
        strings: impl Iterator<Item = &'s [u8]>,
        n: usize,
    ) -> Result<StringTable, Option<(u32, u32)>> {
        let mut arena = Vec::new();
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u32);
        let mut hashes = Vec::with_capacity(n);
        for s in strings {
            arena.extend_from_slice(s);
            offsets.push(u32::try_from(arena.len()).map_err(|_| None)?);
            hashes.push(hash_bytes(s));
        }
        let n = hashes.len();
        if n >= NONE as usize {
            return Err(None);
        }
        let cap = Self::slots_for(n);
        let mask = cap - 1;
        // Counting sort of the ids by the top bits of their home slot.
        let bucket_bits = (cap.trailing_zeros()).min(12);
        let shift = cap.trailing_zeros() - bucket_bits;
        let bucket = |h: u64| (h as usize & mask) >> shift;
        let mut starts = vec![0u32; (1 << bucket_bits) + 1];
        for &h in &hashes {
            starts[bucket(h) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut order = vec![0u32; n];
        for (id, &h) in hashes.iter().enumerate() {
            let b = bucket(h);
            order[starts[b] as usize] = id as u32;
            starts[b] += 1;
        }
        let mut t = StringTable {
            arena,
            offsets,
            slots: vec![EMPTY; cap],
        };
        for &id in &order {
            let h = hashes[id as usize];
            let tag = h >> 32;
            let mut i = h as usize & mask;
            loop {
                let slot = t.slots[i];
                if slot == EMPTY {
                    t.slots[i] = tag << 32 | id as u64;
                    break;
                }
                let other = slot as u32;
                if slot >> 32 == tag && t.get(other) == t.get(id) {
                    return Err(Some((other.min(id), other.max(id))));
                }
                i = (i + 1) & mask;
            }
        }
        Ok(t)
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
        self.find_hashed(s, hash_bytes(s))
    }

    /// [`StringTable::find`] with the hash already computed by [`hash_bytes`].
    #[inline]
    pub fn find_hashed(&self, s: &[u8], h: u64) -> Option<u32> {
        let tag = h >> 32;
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                return None;
            }
            if slot >> 32 == tag && self.get(slot as u32) == s {
                return Some(slot as u32);
            }
            i = (i + 1) & mask;
        }
    }

    /// The ids of many strings (NONE where absent), looked up in the order of their slots so
    /// that the index is read nearly sequentially.
    pub fn find_batch(&self, queries: &[&[u8]]) -> Vec<u32> {
        let hashes: Vec<u64> = queries.iter().map(|q| hash_bytes(q)).collect();
        let cap = self.slots.len();
        let bucket_bits = cap.trailing_zeros().min(12);
        let shift = cap.trailing_zeros() - bucket_bits;
        let bucket = |h: u64| (h as usize & (cap - 1)) >> shift;
        let mut starts = vec![0u32; (1 << bucket_bits) + 1];
        for &h in &hashes {
            starts[bucket(h) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut order = vec![0u32; queries.len()];
        for (i, &h) in hashes.iter().enumerate() {
            let b = bucket(h);
            order[starts[b] as usize] = i as u32;
            starts[b] += 1;
        }
        // First the index alone, in slot order: the first slot whose tag matches is the
        // candidate (absent when the chain ends first).
        let mut out = vec![NONE; queries.len()];
        let mask = cap - 1;
        for &i in &order {
            let h = hashes[i as usize];
            let mut j = h as usize & mask;
            loop {
                let slot = self.slots[j];
                if slot == EMPTY {
                    break;
                }
                if slot >> 32 == h >> 32 {
                    out[i as usize] = slot as u32;
                    break;
                }
                j = (j + 1) & mask;
            }
        }
        // Then the texts, in query order (vocabularies number tokens roughly in merge order,
        // so this reads the text nearly in order too); a tag that matched another string
        // falls back to a full lookup.
        for (i, q) in queries.iter().enumerate() {
            let c = out[i];
            if c != NONE && self.get(c) != *q {
                out[i] = self.find_hashed(q, hashes[i]).unwrap_or(NONE);
            }
        }
        out
    }

    /// Appends `s` with the next id and returns it, or returns the id it already has
    /// (`Err`) without adding it again. Fails with `None` past 4 GiB of text.
    pub fn insert(&mut self, s: &[u8]) -> Option<Result<u32, u32>> {
        if (self.len() + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let h = hash_bytes(s);
        let tag = h >> 32;
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                break;
            }
            if slot >> 32 == tag && self.get(slot as u32) == s {
                return Some(Err(slot as u32));
            }
            i = (i + 1) & mask;
        }
        let id = u32::try_from(self.len()).ok().filter(|&id| id != NONE)?;
        self.arena.extend_from_slice(s);
        self.offsets.push(u32::try_from(self.arena.len()).ok()?);
        self.slots[i] = tag << 32 | id as u64;
        Some(Ok(id))
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        let mut slots = vec![EMPTY; cap];
        for id in 0..self.len() as u32 {
            let h = hash_bytes(self.get(id));
            let mut i = h as usize & (cap - 1);
            while slots[i] != EMPTY {
                i = (i + 1) & (cap - 1);
            }
            slots[i] = (h >> 32) << 32 | id as u64;
        }
        self.slots = slots;
    }
}

/// (left id, right id) -> (rank, id of the merged string).
#[derive(Clone)]
pub struct PairTable {
    keys: Vec<u64>,
    values: Vec<(u32, u32)>,
    len: usize,
}

const EMPTY_KEY: u64 = u64::MAX;

#[inline]
fn hash_pair(k: u64) -> u64 {
    fmix(k)
}

impl PairTable {
    /// A table of `(left, right, (rank, merged))`; where a pair repeats, the lowest rank
    /// wins, as the first one does in llama.cpp. Filled bucket by bucket, as
    /// [`StringTable::build`].
    pub fn build(entries: &[(u32, u32, (u32, u32))]) -> PairTable {
        let n = entries.len();
        let cap = (n.max(8) * 2).next_power_of_two();
        let mask = cap - 1;
        let bucket_bits = cap.trailing_zeros().min(12);
        let shift = cap.trailing_zeros() - bucket_bits;
        let home = |a: u32, b: u32| hash_pair(Self::key(a, b)) as usize & mask;
        let mut starts = vec![0u32; (1 << bucket_bits) + 1];
        for &(a, b, _) in entries {
            starts[(home(a, b) >> shift) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut order = vec![0u32; n];
        for (i, &(a, b, _)) in entries.iter().enumerate() {
            let bk = home(a, b) >> shift;
            order[starts[bk] as usize] = i as u32;
            starts[bk] += 1;
        }
        let mut t = PairTable {
            keys: vec![EMPTY_KEY; cap],
            values: vec![(0, 0); cap],
            len: 0,
        };
        for &i in &order {
            let (a, b, v) = entries[i as usize];
            let k = Self::key(a, b);
            let mut j = home(a, b);
            loop {
                if t.keys[j] == EMPTY_KEY {
                    t.keys[j] = k;
                    t.values[j] = v;
                    t.len += 1;
                    break;
                }
                if t.keys[j] == k {
                    if v.0 < t.values[j].0 {
                        t.values[j] = v;
                    }
                    break;
                }
                j = (j + 1) & mask;
            }
        }
        t
    }

    #[cfg(test)]
    pub fn with_capacity(n: usize) -> PairTable {
        Self::build(&[]).grown_to(n)
    }

    #[cfg(test)]
    fn grown_to(mut self, n: usize) -> PairTable {
        let cap = (n.max(8) * 2).next_power_of_two();
        self.keys = vec![EMPTY_KEY; cap];
        self.values = vec![(0, 0); cap];
        self
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
    #[cfg(test)]
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
        let mut t = StringTable::build([b"w0".as_slice()].into_iter(), 1).unwrap();
        assert_eq!(t.insert(b"w0"), Some(Err(0)));
        let mut t = StringTable::build(std::iter::empty(), 0).unwrap();
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
        let dup = StringTable::build([b"a".as_slice(), b"b", b"a"].into_iter(), 3);
        assert!(matches!(dup, Err(Some((0, 2)))));
    }

    #[test]
    fn batch_lookup_agrees_with_single_lookups() {
        let words: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
        let t = StringTable::build(words.iter().map(|w| w.as_bytes()), words.len()).unwrap();
        let queries: Vec<String> = (0..12000).map(|i| format!("t{}", i * 7 % 9000)).collect();
        let q: Vec<&[u8]> = queries.iter().map(|s| s.as_bytes()).collect();
        let got = t.find_batch(&q);
        for (i, s) in q.iter().enumerate() {
            assert_eq!(got[i], t.find(s).unwrap_or(NONE), "{:?}", queries[i]);
        }
        assert!(got.contains(&NONE) && got.iter().any(|&x| x != NONE));
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
        let b = PairTable::build(&[(1, 2, (5, 0)), (3, 4, (6, 1)), (1, 2, (7, 2))]);
        assert_eq!(b.get(1, 2), Some((5, 0)));
        assert_eq!(b.get(3, 4), Some((6, 1)));
        assert_eq!(b.get(2, 1), None);
    }
}

/// A small direct-mapped cache in front of a [`StringTable`] for short keys that repeat (the
/// character pairs of a text): it stays in the CPU cache where the table does not.
pub struct LookupCache {
    /// Key bytes zero-padded to 15, then the key length + 1 (0 marks an empty entry).
    keys: Vec<u128>,
    values: Vec<u32>,
}

const CACHE_SIZE: usize = 4096;

impl Default for LookupCache {
    fn default() -> Self {
        LookupCache {
            keys: vec![0; CACHE_SIZE],
            values: vec![NONE; CACHE_SIZE],
        }
    }
}

impl LookupCache {
    /// The id of `s` in `table`, if present.
    #[inline]
    pub fn find(&mut self, table: &StringTable, s: &[u8]) -> Option<u32> {
        if s.len() > 15 {
            return table.find(s);
        }
        let mut k = [0u8; 16];
        k[..s.len()].copy_from_slice(s);
        k[15] = s.len() as u8 + 1;
        let key = u128::from_le_bytes(k);
        let slot =
            fmix((key as u64) ^ (key >> 64) as u64 ^ (key >> 120) as u64) as usize % CACHE_SIZE;
        if self.keys[slot] == key {
            let v = self.values[slot];
            return (v != NONE).then_some(v);
        }
        let found = table.find(s);
        self.keys[slot] = key;
        self.values[slot] = found.unwrap_or(NONE);
        found
    }
}

/// Memoized results per word: the ids a word's text gave, for texts where words repeat.
#[derive(Default)]
pub struct WordCache {
    texts: Vec<u8>,
    ids: Vec<u32>,
    /// (hash, text start, text len, ids start, ids len); empty where hash is 0 and len 0.
    slots: Vec<(u64, u32, u32, u32, u32)>,
    len: usize,
}

/// Entries past this are not cached (memory stays bounded on huge inputs).
const WORD_CACHE_MAX: usize = 1 << 16;

impl WordCache {
    /// The ids cached for `word`.
    #[inline]
    pub fn get(&self, word: &[u8]) -> Option<&[u32]> {
        if self.slots.is_empty() {
            return None;
        }
        let h = hash_bytes(word) | 1;
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let (sh, ts, tl, is, il) = self.slots[i];
            if sh == 0 {
                return None;
            }
            if sh == h && &self.texts[ts as usize..(ts + tl) as usize] == word {
                return Some(&self.ids[is as usize..(is + il) as usize]);
            }
            i = (i + 1) & mask;
        }
    }

    /// Remembers the ids of `word` (a word already present is not added again).
    pub fn put(&mut self, word: &[u8], ids: &[u32]) {
        if self.len >= WORD_CACHE_MAX || self.get(word).is_some() {
            return;
        }
        let (Ok(ts), Ok(tl), Ok(is), Ok(il)) = (
            u32::try_from(self.texts.len()),
            u32::try_from(word.len()),
            u32::try_from(self.ids.len()),
            u32::try_from(ids.len()),
        ) else {
            return;
        };
        if (self.len + 1) * 2 > self.slots.len() {
            let cap = (self.slots.len() * 2).max(1024);
            let old = std::mem::replace(&mut self.slots, vec![(0, 0, 0, 0, 0); cap]);
            for e in old.into_iter().filter(|e| e.0 != 0) {
                let mut i = e.0 as usize & (cap - 1);
                while self.slots[i].0 != 0 {
                    i = (i + 1) & (cap - 1);
                }
                self.slots[i] = e;
            }
        }
        let h = hash_bytes(word) | 1;
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        while self.slots[i].0 != 0 {
            i = (i + 1) & mask;
        }
        self.texts.extend_from_slice(word);
        self.ids.extend_from_slice(ids);
        self.slots[i] = (h, ts, tl, is, il);
        self.len += 1;
    }
}
