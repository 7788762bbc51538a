//! The engine: KV cache, the forward pass over a model, the generate loop.
//!
//! [`Model`] owns the mapped file and its resolved tensors; an [`Engine`] holds everything a
//! sequence needs (KV cache, buffers, threads), allocated before the first token.

pub mod calibrate;
pub mod chat;
pub mod forward;
pub mod generate;
pub mod kv;
pub mod logits;
pub mod perplexity;
pub mod plan;
pub mod stream;

pub use forward::{forward_layer, State};
pub use kv::KvCache;

use crate::backend::cpu::team::Team;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::{Config, LayerWeights, ModelTensors, WeightView};
use crate::quant::GgmlType;
use std::path::Path;

/// A model file with its checked config and tensors; weights stay in the mapping.
pub struct Model {
    pub file: GgufFile,
    pub config: Config,
    pub tensors: ModelTensors,
}

impl Model {
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let file = GgufFile::open(path)?;
        Model::from_file(file)
    }

    pub fn from_file(file: GgufFile) -> Result<Model> {
        let config = Config::from_gguf(&file)?;
        let tensors = ModelTensors::resolve(&file, &config)?;
        Ok(Model {
            file,
            config,
            tensors,
        })
    }

    /// The weights of layer `il`, as views into the mapping.
    pub fn layer(&self, il: usize) -> Result<LayerWeights<'_>> {
        self.tensors.layer(&self.file, il)
    }

    pub fn token_embd(&self) -> WeightView<'_> {
        ModelTensors::matrix(&self.file, &self.tensors.token_embd)
    }

    pub fn output(&self) -> WeightView<'_> {
        ModelTensors::matrix(&self.file, &self.tensors.output)
    }

    pub fn output_norm(&self) -> Result<&[f32]> {
        ModelTensors::vector(&self.file, &self.tensors.output_norm)
    }

    pub fn rope_factors(&self) -> Result<Option<&[f32]>> {
        self.tensors
            .rope_freqs
            .as_ref()
            .map(|t| ModelTensors::vector(&self.file, t))
            .transpose()
    }
}

/// How an [`Engine`] is sized.
#[derive(Clone, Debug)]
pub struct Options {
    /// Context length: positions in the KV cache.
    pub n_ctx: usize,
    /// Tokens per forward pass during prefill.
    pub n_ubatch: usize,
    pub kv_type: GgmlType,
    /// Logits for every position of a batch (perplexity, logits), not only the last.
    pub all_logits: bool,
    /// Threads; 0 for one per logical CPU.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            n_ctx: 4096,
            n_ubatch: 512,
            kv_type: GgmlType::F16,
            all_logits: false,
            threads: 0,
        }
    }
}

/// Which positions of an [`Engine::eval`] produce logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outputs {
    Last,
    All,
}

/// One sequence over a model: KV cache, buffers and a thread pool.
pub struct Engine<'m> {
    pub model: &'m Model,
    pub kv: KvCache,
    pub state: State,
    team: Team,
}

impl<'m> Engine<'m> {
    pub fn new(model: &'m Model, opts: &Options) -> Result<Engine<'m>> {
        let c = &model.config;
        if opts.n_ctx == 0 || opts.n_ubatch == 0 {
            return Err(Error::Invalid(format!(
                "context {} and batch {} must be positive",
                opts.n_ctx, opts.n_ubatch
            )));
        }
        let n_batch = opts.n_ubatch.min(opts.n_ctx);
        let n_out = if opts.all_logits { n_batch } else { 1 };
        let kv = KvCache::new(c, opts.n_ctx, opts.n_ubatch, opts.kv_type)?;
        let mut mats = vec![model.output()];
        for il in 0..c.n_layer {
            let l = model.layer(il)?;
            mats.extend([l.wq, l.wk, l.wv, l.wo, l.w_gate, l.w_up, l.w_down]);
        }
        let state = State::new(c, n_batch, n_out, &kv, &mats)?;
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let team = Team::new(threads)
            .map_err(|e| Error::Invalid(format!("cannot start {threads} threads: {e}")))?;
        crate::backend::cpu::init_tables();
        Ok(Engine {
            model,
            kv,
            state,
            team,
        })
    }

    pub fn config(&self) -> &Config {
        &self.model.config
    }

    /// Positions filled in the KV cache.
    pub fn n_past(&self) -> usize {
        self.kv.n_past
    }

    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx
    }

    /// Empties the KV cache.
    pub fn clear(&mut self) {
        self.kv.clear();
    }

    /// Drops positions `n_keep..n_keep + n_discard` from the cache and moves the later ones
    /// down, re-rotating their keys by `-n_discard` positions (llama.cpp's context shift:
    /// RoPE angles are linear in the position, so a rotation by the difference moves a key).
    ///
    /// A sliding-window layer holds only its last `rows` positions: the shift is an error
    /// when the window of the next token would reach a position that layer no longer holds
    /// (only possible with a large `n_keep`).
    pub fn shift_context(&mut self, n_keep: usize, n_discard: usize) -> Result<()> {
        let c = &self.model.config;
        let n_past = self.kv.n_past;
        if n_discard == 0 || n_keep + n_discard > n_past {
            return Err(Error::Invalid(format!(
                "cannot discard {n_discard} positions after {n_keep} of {n_past}"
            )));
        }
        let new_past = n_past - n_discard;
        for il in 0..c.n_layer {
            let (rows, Some(w)) = (self.kv.rows[il], c.sliding_window) else {
                continue;
            };
            if rows >= n_past || !c.is_swa(il) {
                continue;
            }
            // Held: the last `rows` old positions. The next query reads new positions from
            // new_past + 1 - w; each maps to an old one (kept ones to themselves).
            let oldest = n_past - rows;
            let lost = ((new_past + 1).saturating_sub(w)..new_past).find(|&x| {
                let old = if x < n_keep { x } else { x + n_discard };
                old < oldest
            });
            if let Some(x) = lost {
                return Err(Error::Invalid(format!(
                    "context shift keeping {n_keep} of {n_past} positions: layer {il} keeps \
                     only the last {rows} and position {x} has left it (lower --keep)"
                )));
            }
        }
        let kern = crate::quant::scalar(self.kv.ty);
        let (Some(deq), Some(quant)) = (
            kern.and_then(|k| k.dequantize),
            kern.and_then(|k| k.quantize),
        ) else {
            return Err(Error::Unsupported(format!("KV cache type {}", self.kv.ty)));
        };
        let rope_factors = self.model.rope_factors()?;
        let kd = c.k_dim();
        let (kr, vr) = (self.kv.k_row, self.kv.v_row);
        let cs = &mut self.state.rope_cs[..c.n_rot];
        // One key row of scratch: the arena holds at least one token of k (free between passes).
        let tmp = &mut self.state.arena[..kd];
        for il in 0..c.n_layer {
            let (base, scale) = c.rope_of(il);
            crate::backend::cpu::rope_cache(cs, -(n_discard as i64), base, scale, rope_factors);
            let rows = self.kv.rows[il];
            let first = (n_keep + n_discard).max(n_past.saturating_sub(rows));
            let (k, v) = (&mut self.kv.k[il], &mut self.kv.v[il]);
            if rows >= n_past {
                // The whole context: rows are positions, and each moves down.
                for p in first..n_past {
                    deq(&k[p * kr..(p + 1) * kr], tmp);
                    crate::backend::cpu::rope(tmp, c.head_dim_k, cs, c.rope_style);
                    let d = p - n_discard;
                    quant(tmp, &mut k[d * kr..(d + 1) * kr], None);
                }
                v.copy_within(first * vr..n_past * vr, (first - n_discard) * vr);
                continue;
            }
            // A ring: a moved row may land on one not yet moved, so move from a copy.
            let mut old_k = kv::zeroed::<u8>(k.len(), "a context shift")?;
            old_k.copy_from_slice(k);
            let mut old_v = kv::zeroed::<u8>(v.len(), "a context shift")?;
            old_v.copy_from_slice(v);
            for p in first..n_past {
                let (s, d) = (p % rows, (p - n_discard) % rows);
                deq(&old_k[s * kr..(s + 1) * kr], tmp);
                crate::backend::cpu::rope(tmp, c.head_dim_k, cs, c.rope_style);
                quant(tmp, &mut k[d * kr..(d + 1) * kr], None);
                v[d * vr..(d + 1) * vr].copy_from_slice(&old_v[s * vr..(s + 1) * vr]);
            }
        }
        self.kv.n_past = new_past;
        Ok(())
    }

    /// Runs `tokens` at the next positions, in batches, and calls `on_logits(i, logits)` for
    /// token `i` of `tokens` (every token with [`Outputs::All`], the last one with
    /// [`Outputs::Last`]).
    pub fn eval(
        &mut self,
        tokens: &[u32],
        outputs: Outputs,
        mut on_logits: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        let free = self.kv.n_ctx - self.kv.n_past;
        if tokens.len() > free {
            return Err(Error::Invalid(format!(
                "context full: {} tokens do not fit, {} of {} positions are free",
                tokens.len(),
                free,
                self.kv.n_ctx
            )));
        }
        if outputs == Outputs::All && self.state.n_out < self.state.n_batch {
            return Err(Error::Invalid(
                "logits at every position need an engine made with all_logits".into(),
            ));
        }
        let n_batch = self.state.n_batch;
        let mut done = 0;
        for chunk in tokens.chunks(n_batch) {
            let last = done + chunk.len() == tokens.len();
            let rows = match outputs {
                Outputs::All => 0..chunk.len(),
                Outputs::Last if last => chunk.len() - 1..chunk.len(),
                Outputs::Last => 0..0,
            };
            self.forward(chunk, rows.clone())?;
            let v = self.model.config.n_vocab;
            for (i, r) in rows.enumerate() {
                on_logits(done + r, &self.state.logits[i * v..(i + 1) * v]);
            }
            done += chunk.len();
        }
        Ok(())
    }

    /// Evaluates `tokens` and returns the logits of the last one.
    pub fn eval_last(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.eval(tokens, Outputs::Last, |_, _| {})?;
        Ok(&self.state.logits[..self.model.config.n_vocab])
    }

    /// One forward pass of at most `n_batch` tokens; logits of batch rows `rows`.
    fn forward(&mut self, tokens: &[u32], rows: std::ops::Range<usize>) -> Result<()> {
        let model = self.model;
        let c = &model.config;
        let n = tokens.len();
        let pos0 = self.kv.n_past;
        let st = &mut self.state;
        let kv = &mut self.kv;
        let rope_factors = model.rope_factors()?;
        self.team.install(|| -> Result<()> {
            forward::embed(c, st, &model.token_embd(), tokens)?;
            for il in 0..c.n_layer {
                let w = model.layer(il)?;
                forward_layer(il, &w, st, kv, c, n, pos0, rope_factors)?;
            }
            if !rows.is_empty() {
                forward::output(c, st, model.output_norm()?, &model.output(), rows)?;
            }
            Ok(())
        })?;
        self.kv.n_past += n;
        Ok(())
    }
}
