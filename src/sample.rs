//! Samplers: pick the next token from the logits.
//!
//! The chain and its order are llama.cpp's default: penalties, top-k, top-p, min-p,
//! temperature, then a draw from the distribution with a seeded generator. A temperature of 0
//! (or below) is greedy: the largest logit after the penalties. Every buffer is allocated
//! once, in [`Sampler::new`].

use crate::error::{Error, Result};

/// Sampling settings, with llama.cpp's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities sum to at least p (1.0: all).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one (0.0: none).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of recent tokens by this (1.0: off).
    pub repeat_penalty: f32,
    /// Subtract count * frequency_penalty from the logits of recent tokens.
    pub frequency_penalty: f32,
    /// Subtract presence_penalty from the logits of recent tokens.
    pub presence_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0x5EED,
        }
    }
}

impl Params {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Params {
        Params {
            temperature: 0.0,
            ..Params::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f32| Err(Error::Invalid(format!("{what} {v} is out of range")));
        if !self.temperature.is_finite() {
            return bad("temperature", self.temperature);
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad("top-p (0..1)", self.top_p);
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min-p (0..1)", self.min_p);
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return bad("repeat penalty (> 0)", self.repeat_penalty);
        }
        if !self.frequency_penalty.is_finite() || !self.presence_penalty.is_finite() {
            return bad("frequency/presence penalty", self.frequency_penalty);
        }
        Ok(())
    }
}

/// A small, fast, seedable generator: SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks tokens; remembers the recent ones for the penalties.
pub struct Sampler {
    pub params: Params,
    rng: Rng,
    /// Candidates (id, logit), then (id, probability).
    cand: Vec<(u32, f32)>,
    /// Occurrences of each token in the penalty window.
    counts: Vec<u32>,
    /// The last `penalty_last_n` tokens, a ring.
    recent: Vec<u32>,
    recent_at: usize,
}

impl Sampler {
    pub fn new(params: Params, n_vocab: usize) -> Result<Sampler> {
        params.validate()?;
        Ok(Sampler {
            rng: Rng::new(params.seed),
            cand: Vec::with_capacity(n_vocab),
            counts: vec![0; n_vocab],
            recent: Vec::with_capacity(params.penalty_last_n),
            recent_at: 0,
            params,
        })
    }

    /// Records a token (prompt or generated) for the penalties.
    pub fn accept(&mut self, id: u32) {
        let n = self.params.penalty_last_n;
        if n == 0 {
            return;
        }
        if self.recent.len() < n {
            self.recent.push(id);
        } else {
            self.recent[self.recent_at] = id;
            self.recent_at = (self.recent_at + 1) % n;
        }
    }

    /// Forgets the recent tokens.
    pub fn reset(&mut self) {
        self.recent.clear();
        self.recent_at = 0;
    }

    /// The next token from `logits` (one per vocabulary entry).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.cand.clear();
        self.cand
            .extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        self.apply_penalties();
        let p = &self.params;
        if p.temperature <= 0.0 {
            return argmax(&self.cand);
        }
        // top-k (sorted, largest first)
        let k = if p.top_k == 0 {
            self.cand.len()
        } else {
            p.top_k.min(self.cand.len())
        };
        if k < self.cand.len() {
            self.cand
                .select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            self.cand.truncate(k);
        }
        self.cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        // top-p over the softmax at temperature 1
        if p.top_p < 1.0 {
            let max = self.cand[0].1;
            let total: f64 = self.cand.iter().map(|c| ((c.1 - max) as f64).exp()).sum();
            let mut cum = 0.0;
            let mut keep = self.cand.len();
            for (i, c) in self.cand.iter().enumerate() {
                cum += ((c.1 - max) as f64).exp() / total;
                if cum >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            self.cand.truncate(keep.max(1));
        }
        // min-p: logit >= max + ln(min_p)
        if p.min_p > 0.0 {
            let floor = self.cand[0].1 + p.min_p.ln();
            let keep = self.cand.iter().take_while(|c| c.1 >= floor).count();
            self.cand.truncate(keep.max(1));
        }
        // temperature, then a draw
        let t = p.temperature;
        let max = self.cand[0].1 / t;
        let mut total = 0.0f64;
        for c in self.cand.iter_mut() {
            c.1 = ((c.1 / t - max) as f64).exp() as f32;
            total += c.1 as f64;
        }
        let r = self.rng.next_f64() * total;
        let mut cum = 0.0f64;
        for c in &self.cand {
            cum += c.1 as f64;
            if r < cum {
                return c.0;
            }
        }
        self.cand[self.cand.len() - 1].0
    }

    fn apply_penalties(&mut self) {
        let p = &self.params;
        if self.recent.is_empty()
            || (p.repeat_penalty == 1.0 && p.frequency_penalty == 0.0 && p.presence_penalty == 0.0)
        {
            return;
        }
        for &id in &self.recent {
            if let Some(c) = self.counts.get_mut(id as usize) {
                *c += 1;
            }
        }
        for &id in &self.recent {
            let Some(&n) = self.counts.get(id as usize) else {
                continue;
            };
            if n == 0 {
                continue; // already penalized
            }
            let l = &mut self.cand[id as usize].1;
            if *l <= 0.0 {
                *l *= p.repeat_penalty;
            } else {
                *l /= p.repeat_penalty;
            }
            *l -= n as f32 * p.frequency_penalty + p.presence_penalty;
            self.counts[id as usize] = 0;
        }
    }
}

/// The id of the largest logit (the first one on ties).
pub fn argmax(cand: &[(u32, f32)]) -> u32 {
    let mut best = 0;
    for (i, c) in cand.iter().enumerate() {
        if c.1 > cand[best].1 {
            best = i;
        }
    }
    cand.get(best).map_or(0, |c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest() {
        let mut s = Sampler::new(Params::greedy(), 4).unwrap();
        assert_eq!(s.sample(&[0.1, 2.0, -1.0, 1.9]), 1);
    }

    #[test]
    fn repeat_penalty_moves_the_choice() {
        let mut s = Sampler::new(
            Params {
                repeat_penalty: 1.5,
                ..Params::greedy()
            },
            4,
        )
        .unwrap();
        s.accept(1);
        // 2.0 / 1.5 = 1.33 < 1.9
        assert_eq!(s.sample(&[0.1, 2.0, -1.0, 1.9]), 3);
    }

    #[test]
    fn seeded_draws_repeat() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = Sampler::new(
                Params {
                    seed,
                    temperature: 1.0,
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.0,
                    ..Params::default()
                },
                100,
            )
            .unwrap();
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(
            Params {
                top_k: 1,
                temperature: 5.0,
                ..Params::default()
            },
            4,
        )
        .unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.1, 2.0, -1.0, 1.9]), 1);
        }
    }

    #[test]
    fn min_p_drops_unlikely() {
        // p(3) / p(1) = e^-3 < 0.1: only token 1 survives min-p 0.1
        let mut s = Sampler::new(
            Params {
                min_p: 0.1,
                top_k: 0,
                top_p: 1.0,
                temperature: 1.0,
                ..Params::default()
            },
            4,
        )
        .unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&[-10.0, 3.0, -10.0, 0.0]), 1);
        }
    }
}
