//! Hyperparameters of a model, read once from GGUF metadata and checked.
//!
//! Defaults and per-architecture rules follow llama.cpp's `llama_model::load_hparams`.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// The architectures strait runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Gemma3];

    /// The `general.architecture` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }

    pub fn from_name(name: &str) -> Result<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
                Error::Unsupported(format!(
                    "architecture {name:?} (strait supports: {})",
                    known.join(", ")
                ))
            })
    }
}

/// How RoPE pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): `LLAMA_ROPE_TYPE_NORM`.
    Normal,
    /// Halves (x[i], x[i + n_rot/2]): `LLAMA_ROPE_TYPE_NEOX`.
    Neox,
}

/// The gated feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// silu(gate) * up
    SwiGlu,
    /// gelu_tanh(gate) * up
    GeGlu,
}

/// Everything the forward pass and the memory plan need to know about a model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub arch: Arch,
    /// Vocabulary size: rows of `token_embd.weight`.
    pub n_vocab: usize,
    /// The context length the model was trained with.
    pub n_ctx_train: usize,
    /// Embedding width (`n_embd`).
    pub dim: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Width of one query/key head.
    pub head_dim_k: usize,
    /// Width of one value head.
    pub head_dim_v: usize,
    /// Hidden width of the feed-forward network.
    pub n_ff: usize,
    /// Dimensions of each head that RoPE rotates.
    pub n_rot: usize,
    pub rope_style: RopeStyle,
    /// RoPE base of the full-attention layers.
    pub rope_base: f32,
    /// RoPE position scale (1 / linear scaling factor) of the full-attention layers.
    pub rope_scale: f32,
    /// RoPE base and scale of the sliding-window layers.
    pub rope_base_swa: f32,
    pub rope_scale_swa: f32,
    pub norm_eps: f32,
    /// Scale of the attention scores, 1/sqrt(head_dim_k) unless the model says otherwise.
    pub attn_scale: f32,
    /// Where `attn_scale` is applied: to Q before the KQ product (gemma) or inside the softmax.
    pub scale_q: bool,
    /// Embeddings multiplied by sqrt(dim) (gemma).
    pub embed_scale: Option<f32>,
    /// q/k/v projections have biases (qwen2).
    pub qkv_bias: bool,
    /// RMS norms over each q and k head before RoPE (qwen3, gemma3).
    pub qk_norm: bool,
    /// RMS norms after attention and after the FFN, before the residual add (gemma3).
    pub post_norms: bool,
    pub activation: Activation,
    /// Sliding attention window in tokens, for the layers where `swa_layers[i]` is true.
    pub sliding_window: Option<usize>,
    pub swa_layers: Vec<bool>,
    /// tanh soft-capping of the final logits: cap * tanh(logit / cap).
    pub final_logit_softcap: Option<f32>,
    /// The output projection is `token_embd.weight` (no `output.weight` tensor).
    pub tied_output: bool,
}

impl Config {
    /// Reads and checks the hyperparameters of `file`.
    pub fn from_gguf(file: &GgufFile) -> Result<Config> {
        let md = file.metadata();
        let arch = Arch::from_name(file.architecture()?)?;
        let a = arch.name();
        let key = |k: &str| format!("{a}.{k}");

        let dim = md.usize(&key("embedding_length"))?;
        let n_layer = md.usize(&key("block_count"))?;
        let n_head = md.usize(&key("attention.head_count"))?;
        let n_head_kv = md
            .opt_usize(&key("attention.head_count_kv"))?
            .unwrap_or(n_head);
        let n_ff = md.usize(&key("feed_forward_length"))?;
        let n_ctx_train = md.usize(&key("context_length"))?;
        let norm_eps = md.f32(&key("attention.layer_norm_rms_epsilon"))?;
        if n_head == 0 || n_head_kv == 0 || n_layer == 0 || dim == 0 || n_ff == 0 {
            return Err(Error::Invalid(format!(
                "{a}: dim {dim}, layers {n_layer}, heads {n_head}, kv heads {n_head_kv}, ffn {n_ff} must all be positive"
            )));
        }
        if n_head % n_head_kv != 0 {
            return Err(Error::Invalid(format!(
                "{a}: {n_head} query heads are not a multiple of {n_head_kv} kv heads"
            )));
        }
        let head_dim_default = if dim % n_head == 0 { dim / n_head } else { 0 };
        let head_dim_k = md
            .opt_usize(&key("attention.key_length"))?
            .unwrap_or(head_dim_default);
        let head_dim_v = md
            .opt_usize(&key("attention.value_length"))?
            .unwrap_or(head_dim_default);
        if head_dim_k == 0 || head_dim_v == 0 || head_dim_k % 2 != 0 {
            return Err(Error::Invalid(format!(
                "{a}: head dims k {head_dim_k} / v {head_dim_v} (dim {dim}, {n_head} heads): need positive, even k"
            )));
        }
        let n_rot = md
            .opt_usize(&key("rope.dimension_count"))?
            .unwrap_or(head_dim_k);
        if n_rot > head_dim_k || n_rot % 2 != 0 {
            return Err(Error::Invalid(format!(
                "{a}: rope dimension count {n_rot} must be even and at most the head dim {head_dim_k}"
            )));
        }
        let rope_base = md.opt_f32(&key("rope.freq_base"))?.unwrap_or(10000.0);
        let rope_scale = match md.opt_str(&key("rope.scaling.type"))? {
            None | Some("none") => 1.0,
            Some("linear") => {
                let f = md.opt_f32(&key("rope.scaling.factor"))?.unwrap_or(1.0);
                if !(f > 0.0 && f.is_finite()) {
                    return Err(Error::Invalid(format!(
                        "{a}.rope.scaling.factor = {f}: must be positive"
                    )));
                }
                1.0 / f
            }
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "RoPE scaling type {other:?} (strait supports none and linear)"
                )))
            }
        };
        let n_vocab = file.require("token_embd.weight")?.n_rows() as usize;
        let tied_output = file.tensor("output.weight").is_none();
        let attn_scale_key = md.opt_f32(&key("attention.scale"))?;
        let final_logit_softcap = md
            .opt_f32(&key("final_logit_softcapping"))?
            .filter(|&c| c > 0.0);

        let mut c = Config {
            arch,
            n_vocab,
            n_ctx_train,
            dim,
            n_layer,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ff,
            n_rot,
            rope_style: RopeStyle::Normal,
            rope_base,
            rope_scale,
            rope_base_swa: rope_base,
            rope_scale_swa: rope_scale,
            norm_eps,
            attn_scale: attn_scale_key.unwrap_or(1.0 / (head_dim_k as f32).sqrt()),
            scale_q: false,
            embed_scale: None,
            qkv_bias: false,
            qk_norm: false,
            post_norms: false,
            activation: Activation::SwiGlu,
            sliding_window: None,
            swa_layers: vec![false; n_layer],
            final_logit_softcap: None,
            tied_output,
        };
        match arch {
            Arch::Llama => {}
            Arch::Qwen2 => {
                c.rope_style = RopeStyle::Neox;
                c.qkv_bias = true;
            }
            Arch::Qwen3 => {
                c.rope_style = RopeStyle::Neox;
                c.qk_norm = true;
            }
            Arch::Gemma3 => {
                c.rope_style = RopeStyle::Neox;
                c.qk_norm = true;
                c.post_norms = true;
                c.activation = Activation::GeGlu;
                c.embed_scale = Some((dim as f32).sqrt());
                c.scale_q = true;
                // llama.cpp: 1/sqrt(n_embd / n_head) for the 27B model (62 layers), else
                // 1/sqrt(head_dim_k); an explicit attention.scale wins.
                c.attn_scale = attn_scale_key.unwrap_or(if n_layer == 62 {
                    1.0 / ((dim / n_head) as f32).sqrt()
                } else {
                    1.0 / (head_dim_k as f32).sqrt()
                });
                let window = md.usize(&key("attention.sliding_window"))?;
                if window == 0 {
                    return Err(Error::Invalid(format!("{a}.attention.sliding_window is 0")));
                }
                c.sliding_window = Some(window);
                // Every 6th layer attends to the whole context, the others to the window
                // (llama.cpp's set_swa_pattern(6)); the local layers use RoPE base 10000.
                let pattern = md
                    .opt_usize(&key("attention.sliding_window_pattern"))?
                    .unwrap_or(6);
                if pattern == 0 {
                    return Err(Error::Invalid(format!(
                        "{a}.attention.sliding_window_pattern is 0"
                    )));
                }
                c.swa_layers = (0..n_layer).map(|il| il % pattern < pattern - 1).collect();
                c.rope_base_swa = 10000.0;
                c.rope_scale_swa = 1.0;
                // The iSWA graph of llama.cpp applies no final soft-capping.
                let _ = final_logit_softcap;
            }
        }
        if arch != Arch::Gemma3 {
            c.final_logit_softcap = final_logit_softcap;
        }
        Ok(c)
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim_k
    }

    /// Width of all key heads together (one row of the K cache).
    pub fn k_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_k
    }

    /// Width of all value heads together (one row of the V cache).
    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }

    /// Whether layer `il` attends only to a sliding window.
    pub fn is_swa(&self, il: usize) -> bool {
        self.sliding_window.is_some() && self.swa_layers.get(il).copied().unwrap_or(false)
    }

    /// RoPE (base, position scale) of layer `il`.
    pub fn rope_of(&self, il: usize) -> (f32, f32) {
        if self.is_swa(il) {
            (self.rope_base_swa, self.rope_scale_swa)
        } else {
            (self.rope_base, self.rope_scale)
        }
    }
}
