//! Which type each tensor gets: llama-quantize's rules (`llama_tensor_get_type` in
//! llama.cpp's src/llama-quant.cpp), as a pure function of the tensor's name and shape, the
//! model's hyperparameters, the mix and counters over the tensors seen so far.

use super::mix::Mix;
use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value};
use crate::quant::GgmlType;

/// The hyperparameters the rules look at.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub arch: String,
    /// `{arch}.block_count`.
    pub n_layer: u32,
    /// Heads and key/value heads of the first layer (`n_gqa` = their ratio).
    pub n_head: u32,
    pub n_head_kv: u32,
    /// `{arch}.expert_count`, 0 for dense models.
    pub n_expert: u32,
    /// llama.cpp's `LLM_TYPE_70B` (a llama with 80 layers and grouped-query attention), the
    /// one model size the rules single out.
    pub is_70b: bool,
}

impl ModelInfo {
    /// Reads the hyperparameters from GGUF metadata.
    pub fn from_metadata(md: &Metadata) -> Result<ModelInfo> {
        let arch = md.str("general.architecture")?.to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let n_layer = md.u32(&key("block_count"))?;
        // Per-layer arrays are allowed for the head counts; the rules use layer 0.
        let first = |k: &str| -> Result<Option<u32>> {
            let k = key(k);
            if let Some(Value::Array(_)) = md.get(&k) {
                let v = md.opt_int_array(&k)?.unwrap_or_default();
                return match v.first() {
                    Some(&x) => u32::try_from(x).map(Some).map_err(|_| {
                        Error::Invalid(format!("metadata key {k}: {x} is not a head count"))
                    }),
                    None => Ok(None),
                };
            }
            md.opt_u32(&k)
        };
        let n_head = first("attention.head_count")?.unwrap_or(0);
        let n_head_kv = first("attention.head_count_kv")?.unwrap_or(n_head);
        let n_expert = md.opt_u32(&key("expert_count"))?.unwrap_or(0);
        let is_70b = arch == "llama" && n_layer == 80 && n_head != n_head_kv;
        Ok(ModelInfo {
            arch,
            n_layer,
            n_head,
            n_head_kv,
            n_expert,
            is_70b,
        })
    }

    /// Query heads per key/value head (`hparams.n_gqa()`), 0 without key/value heads.
    pub fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }
}

/// What the user asked for besides the mix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SelectOptions {
    pub mix: Mix,
    /// Every quantizable tensor gets the mix's default type (`--pure`).
    pub pure: bool,
    /// An importance matrix is given (some rules depend on it).
    pub has_imatrix: bool,
    /// `false` leaves output.weight as it is (`--leave-output-tensor`).
    pub quantize_output: bool,
    /// `--output-tensor-type`.
    pub output_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embd_type: Option<GgmlType>,
}

impl SelectOptions {
    pub fn new(mix: Mix) -> SelectOptions {
        SelectOptions {
            mix,
            pure: false,
            has_imatrix: false,
            quantize_output: true,
            output_type: None,
            token_embd_type: None,
        }
    }
}

/// Broad tensor roles (`tensor_category`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

impl Category {
    /// `tensor_get_category`: first match wins, by substring.
    pub fn of(name: &str) -> Category {
        if name == "output.weight" {
            return Category::Output;
        }
        if is_token_embd(name) {
            return Category::TokenEmbd;
        }
        const BY_SUBSTRING: &[(&str, Category)] = &[
            ("attn_qkv.weight", Category::AttnQkv),
            ("attn_kv_b.weight", Category::AttnKvB),
            ("attn_v.weight", Category::AttnV),
            ("attn_k.weight", Category::AttnK),
            ("attn_q.weight", Category::AttnQ),
            ("attn_output.weight", Category::AttnOutput),
            ("ffn_up", Category::FfnUp),
            ("ffn_gate", Category::FfnGate),
            ("ffn_down", Category::FfnDown),
        ];
        BY_SUBSTRING
            .iter()
            .find(|(s, _)| name.contains(s))
            .map_or(Category::Other, |&(_, c)| c)
    }

    /// attn_v-like tensors, the most sensitive to quantization.
    fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

fn is_token_embd(name: &str) -> bool {
    name == "token_embd.weight" || name == "per_layer_token_embd.weight"
}

/// ggml's `ggml_n_dims`: dimensions up to the last one above 1 (at least 1).
pub fn n_dims(shape: &[u64]) -> usize {
    shape.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// Counters over the model's tensors that some rules depend on (`quantize_state_impl`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub n_attention_wv: u32,
    pub n_ffn_down: u32,
    pub n_ffn_gate: u32,
    pub n_ffn_up: u32,
    pub i_attention_wv: u32,
    pub i_ffn_down: u32,
    pub i_ffn_gate: u32,
    pub i_ffn_up: u32,
    /// Tensors whose row length did not fit the chosen type.
    pub n_fallback: u32,
    /// No output.weight: the token embedding doubles as the output.
    pub has_tied_embeddings: bool,
}

impl Counters {
    /// `init_quantize_state_counters`, over the names of all tensors of the model.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>, info: &ModelInfo) -> Counters {
        let mut c = Counters {
            has_tied_embeddings: true,
            ..Counters::default()
        };
        for name in names {
            let cat = Category::of(name);
            if cat.is_attn_v() {
                c.n_attention_wv += 1;
            }
            if cat == Category::Output {
                c.has_tied_embeddings = false;
            }
        }
        c.n_ffn_down = info.n_layer;
        c.n_ffn_gate = info.n_layer;
        c.n_ffn_up = info.n_layer;
        c
    }
}

/// Whether llama-quantize quantizes this tensor at all (`tensor_allows_quantization`): only
/// 2-d and 3-d weights, and not norms, routers, small embeddings and the like.
pub fn allows_quantization(name: &str, shape: &[u64], opts: &SelectOptions) -> bool {
    if n_dims(shape) < 2 || !name.ends_with("weight") {
        return false;
    }
    if !opts.quantize_output && name == "output.weight" {
        return false;
    }
    const KEEP: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    if KEEP.iter().any(|s| name.contains(s)) {
        return false;
    }
    // Positional embeddings and token types (BERT).
    name != "position_embd.weight" && name != "token_types.weight"
}

/// The type chosen for one tensor, and the type the mix wanted when that did not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub ty: GgmlType,
    /// The mix's type when the row length forced another (`tensor_type_fallback`).
    pub fallback_from: Option<GgmlType>,
}

/// The type of one tensor (`llama_tensor_get_type`). `cur` is the tensor's type in the input;
/// tensors that are not quantized keep it. Call it for the tensors in file order: the
/// counters advance as the rules see attn_v and ffn tensors.
pub fn select_type(
    name: &str,
    shape: &[u64],
    cur: GgmlType,
    info: &ModelInfo,
    opts: &SelectOptions,
    counters: &mut Counters,
) -> Result<Choice> {
    let keep = Choice {
        ty: cur,
        fallback_from: None,
    };
    if !allows_quantization(name, shape, opts) {
        return Ok(keep);
    }
    let category = Category::of(name);
    if let (Some(t), Category::TokenEmbd) = (opts.token_embd_type, category) {
        return Ok(Choice {
            ty: t,
            fallback_from: None,
        });
    }
    if let (Some(t), Category::Output) = (opts.output_type, category) {
        return Ok(Choice {
            ty: t,
            fallback_from: None,
        });
    }
    let mut ty = opts.mix.default_type();
    if !ty.is_quantized() {
        return Ok(Choice {
            ty,
            fallback_from: None,
        });
    }
    if !opts.pure {
        ty = mix_rules(name, shape, ty, info, opts, category, counters)?;
    }
    fallback(name, shape[0], ty, counters)
}

/// `tensor_type_fallback`: a type whose block fits the row length.
fn fallback(name: &str, ncols: u64, ty: GgmlType, counters: &mut Counters) -> Result<Choice> {
    use GgmlType as T;
    if ncols.is_multiple_of(ty.block_size() as u64) {
        return Ok(Choice {
            ty,
            fallback_from: None,
        });
    }
    counters.n_fallback += 1;
    let alt = match ty {
        T::IQ1S | T::IQ1M | T::IQ2XXS | T::IQ2XS | T::IQ2S | T::IQ3XXS | T::IQ3S | T::IQ4XS => {
            T::IQ4NL
        }
        T::Q2_0 | T::Q2K | T::Q3K | T::TQ1_0 | T::TQ2_0 => T::Q4_0,
        T::Q4K => T::Q5_0,
        T::Q5K => T::Q5_1,
        T::Q6K => T::Q8_0,
        _ => {
            return Err(Error::Invalid(format!(
                "tensor {name}: rows of {ncols} values are not a multiple of the {ty} block size {} and no fallback type is defined for {ty}",
                ty.block_size()
            )))
        }
    };
    // Rows not even a multiple of 32: only F16 can hold them.
    let alt = if ncols.is_multiple_of(alt.block_size() as u64) {
        alt
    } else {
        T::F16
    };
    Ok(Choice {
        ty: alt,
        fallback_from: Some(ty),
    })
}

/// `use_more_bits`: the first and last eighth of the layers and every third one between.
fn use_more_bits(i_layer: i64, n_layer: i64) -> bool {
    // `%` truncates as C's does.
    i_layer < n_layer / 8 || i_layer >= 7 * n_layer / 8 || (i_layer - n_layer / 8) % 3 == 2
}

/// The layer a ffn tensor belongs to: the counter for dense models, the `blk.N.` of the name
/// for mixtures of experts (whose expert tensors need not come in layer order).
fn layer_info(i: u32, n_layer: u32, name: &str, info: &ModelInfo) -> Result<(i64, i64)> {
    if info.n_expert.max(1) > 1 {
        let layer = layer_of(name).ok_or_else(|| {
            Error::Invalid(format!("cannot determine the layer of tensor {name}"))
        })?;
        if layer < 0 || layer >= i64::from(n_layer) {
            return Err(Error::Invalid(format!(
                "tensor {name}: layer {layer} is not in [0, {n_layer})"
            )));
        }
        return Ok((layer, i64::from(n_layer)));
    }
    Ok((i64::from(i), i64::from(n_layer)))
}

/// The number after `blk.` as `sscanf(name, "blk.%d.")` reads it.
pub fn layer_of(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    let rest = rest.trim_start();
    let (neg, digits) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let v: i64 = digits[..end].parse().unwrap_or(i64::MAX);
    Some(if neg { -v } else { v })
}

/// `llama_tensor_get_type_impl`: the mix's promotions and demotions.
fn mix_rules(
    name: &str,
    shape: &[u64],
    default: GgmlType,
    info: &ModelInfo,
    opts: &SelectOptions,
    category: Category,
    qs: &mut Counters,
) -> Result<GgmlType> {
    use GgmlType as T;
    use Mix as M;
    let ftype = opts.mix;
    let mut new_type = default;
    let n_gqa = info.n_gqa();
    let n_expert = info.n_expert;
    let falcon = info.is_falcon();
    let has_imatrix = opts.has_imatrix;
    let iq_low = matches!(
        ftype,
        M::IQ2XXS | M::IQ2XS | M::IQ1S | M::IQ2S | M::IQ2M | M::IQ1M
    );
    let iq2s_or_m = matches!(ftype, M::IQ2S | M::IQ2M);

    if category == Category::Output || (qs.has_tied_embeddings && category == Category::TokenEmbd) {
        // The output (and a token embedding that doubles as it).
        let nx = shape[0];
        if ftype == M::MXFP4Moe || falcon || !nx.is_multiple_of(new_type.block_size() as u64) {
            new_type = T::Q8_0;
        } else if matches!(
            ftype,
            M::IQ2XXS | M::IQ2XS | M::IQ3XXS | M::IQ1S | M::IQ2S | M::IQ2M | M::IQ1M
        ) {
            new_type = T::Q5K;
        } else if new_type != T::Q8_0 {
            new_type = T::Q6K;
        }
    } else if ftype == M::MXFP4Moe {
        // Expert tensors (3-d) in MXFP4, everything else in Q8_0.
        let expert_role = matches!(
            category,
            Category::FfnUp | Category::FfnGate | Category::FfnDown
        );
        let ne2 = shape.get(2).copied().unwrap_or(1);
        new_type = if ne2 > 1 && (info.arch != "bailingmoe3" || expert_role) {
            T::MXFP4
        } else {
            T::Q8_0
        };
    } else if category == Category::TokenEmbd {
        if matches!(ftype, M::IQ2XXS | M::IQ2XS | M::IQ1S | M::IQ1M) {
            new_type = T::Q2K;
        } else if matches!(ftype, M::IQ2S | M::IQ2M | M::IQ3XXS) {
            new_type = T::IQ3S;
        } else if matches!(ftype, M::TQ1_0 | M::TQ2_0) {
            new_type = T::Q4K;
        }
    } else if iq_low {
        if category.is_attn_v() {
            new_type = if n_gqa >= 4 || n_expert >= 4 {
                T::Q4K
            } else if iq2s_or_m {
                T::IQ3S
            } else {
                T::Q2K
            };
            qs.i_attention_wv += 1;
        } else if n_expert == 8 && category == Category::AttnK {
            new_type = T::Q4K;
        } else if category == Category::FfnDown {
            if qs.i_ffn_down < qs.n_ffn_down / 8 {
                new_type = if iq2s_or_m { T::IQ3S } else { T::Q2K };
            }
            qs.i_ffn_down += 1;
        } else if category == Category::AttnOutput {
            if n_expert == 8 {
                new_type = T::Q5K;
            } else if matches!(ftype, M::IQ1S | M::IQ1M) {
                new_type = T::IQ2XXS;
            } else if iq2s_or_m {
                new_type = T::IQ3S;
            }
        }
    } else if category.is_attn_v() {
        let i = qs.i_attention_wv;
        match ftype {
            M::Q2K => new_type = if n_gqa >= 4 { T::Q4K } else { T::Q3K },
            M::Q2KS if n_gqa >= 4 => new_type = T::Q4K,
            M::IQ3XXS => {
                new_type = if n_gqa >= 4 {
                    T::Q4K
                } else if !has_imatrix {
                    T::IQ3S
                } else {
                    T::IQ3XXS
                }
            }
            M::IQ3XS | M::IQ3S if n_gqa >= 4 => new_type = T::Q4K,
            M::IQ3M => new_type = T::Q4K,
            M::Q3KM => new_type = if i < 2 { T::Q5K } else { T::Q4K },
            M::Q3KL => new_type = T::Q5K,
            M::IQ4NL | M::IQ4XS if n_gqa >= 4 => new_type = T::Q5K,
            M::Q4KM | M::Q5KM if use_more_bits(i64::from(i), i64::from(qs.n_attention_wv)) => {
                new_type = T::Q6K
            }
            M::Q4KS if i < 4 => new_type = T::Q5K,
            _ => {}
        }
        if info.is_70b && matches!(new_type, T::Q3K | T::Q4K) {
            // 8 heads share each attn_v: more bits cost little.
            new_type = T::Q5K;
        }
        if n_expert == 8 {
            new_type = T::Q8_0;
        }
        qs.i_attention_wv += 1;
    } else if category == Category::AttnK {
        if n_expert == 8 {
            new_type = T::Q8_0;
        } else if ftype == M::IQ3XS {
            new_type = T::IQ3XXS;
        } else if ftype == M::IQ3XXS {
            new_type = T::IQ2S;
        }
    } else if category == Category::AttnQ {
        if ftype == M::IQ3XS {
            new_type = T::IQ3XXS;
        } else if ftype == M::IQ3XXS {
            new_type = T::IQ2S;
        }
    } else if category == Category::FfnDown {
        let (i_layer, n_layer) = layer_info(qs.i_ffn_down, qs.n_ffn_down, name, info)?;
        let more = use_more_bits(i_layer, n_layer);
        match ftype {
            M::Q2K => new_type = T::Q3K,
            M::Q2KS if i_layer < n_layer / 8 => new_type = T::Q4K,
            M::IQ3XXS if !has_imatrix => {
                new_type = if i_layer < n_layer / 8 {
                    T::Q4K
                } else {
                    T::Q3K
                }
            }
            M::Q3KM => {
                new_type = if i_layer < n_layer / 16 {
                    T::Q5K
                } else if !falcon || more {
                    T::Q4K
                } else {
                    T::Q3K
                }
            }
            M::IQ3M if i_layer < n_layer / 8 || (n_expert == 8 && more) => new_type = T::Q4K,
            M::Q3KL => new_type = if falcon { T::Q4K } else { T::Q5K },
            M::Q4KM => {
                if falcon {
                    new_type = if i_layer < n_layer / 16 {
                        T::Q6K
                    } else if more {
                        T::Q5K
                    } else {
                        T::Q4K
                    };
                } else if more {
                    new_type = T::Q6K;
                }
            }
            M::IQ4NL | M::IQ4XS if i_layer < n_layer / 8 && !has_imatrix => new_type = T::Q5K,
            M::Q5KM if more => new_type = T::Q6K,
            M::Q4KS if !falcon && i_layer < n_layer / 8 => new_type = T::Q5K,
            M::Q4_0 | M::Q5_0 if has_imatrix && i_layer < n_layer / 8 => {
                // Guards the first ffn_down layers, only with an importance matrix so that
                // quantizing without one stays as it always was.
                new_type = if ftype == M::Q4_0 { T::Q4_1 } else { T::Q5_1 };
            }
            _ => {}
        }
        qs.i_ffn_down += 1;
    } else if category == Category::AttnOutput {
        if !falcon {
            if n_expert == 8 {
                if matches!(
                    ftype,
                    M::Q2K
                        | M::IQ3XS
                        | M::IQ3XXS
                        | M::Q3KS
                        | M::Q3KM
                        | M::IQ4NL
                        | M::Q4KS
                        | M::Q4KM
                        | M::IQ3S
                        | M::IQ3M
                        | M::IQ4XS
                ) {
                    new_type = T::Q5K;
                }
            } else {
                match ftype {
                    M::Q2K => new_type = T::Q3K,
                    M::IQ3XXS => new_type = T::IQ3S,
                    M::Q3KM | M::IQ3M => new_type = T::Q4K,
                    M::Q3KL => new_type = T::Q5K,
                    _ => {}
                }
            }
        } else if ftype == M::Q3KL {
            new_type = T::Q4K;
        }
    } else if category == Category::AttnQkv {
        match ftype {
            M::Q3KM | M::Q3KL | M::IQ3M => new_type = T::Q4K,
            M::Q4KM => new_type = T::Q5K,
            M::Q5KM => new_type = T::Q6K,
            _ => {}
        }
    } else if category == Category::FfnGate {
        let (i_layer, n_layer) = layer_info(qs.i_ffn_gate, qs.n_ffn_gate, name, info)?;
        if ftype == M::IQ3XS && i_layer >= n_layer / 8 && i_layer < 7 * n_layer / 8 {
            new_type = T::IQ3XXS;
        }
        qs.i_ffn_gate += 1;
    } else if category == Category::FfnUp {
        let (i_layer, n_layer) = layer_info(qs.i_ffn_up, qs.n_ffn_up, name, info)?;
        if ftype == M::IQ3XS && i_layer >= n_layer / 8 && i_layer < 7 * n_layer / 8 {
            new_type = T::IQ3XXS;
        }
        qs.i_ffn_up += 1;
    }
    Ok(new_type)
}

/// Types that llama-quantize refuses to make without an importance matrix
/// (`tensor_requires_imatrix`).
pub fn requires_imatrix(name: &str, ty: GgmlType, mix: Mix) -> bool {
    use GgmlType as T;
    if is_token_embd(name) || name == "output.weight" {
        return false;
    }
    match ty {
        T::IQ3XXS | T::IQ2XXS | T::IQ2XS | T::IQ2S | T::IQ1M | T::IQ1S => true,
        T::Q2K => mix == Mix::Q2KS,
        _ => false,
    }
}

/// The order llama-quantize writes tensors in (`weight_name_comparer`): tensors outside the
/// blocks first, then block by block, by name within each.
pub fn output_order<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
    let names: Vec<&str> = names.into_iter().collect();
    let mut idx: Vec<usize> = (0..names.len()).collect();
    idx.sort_by(|&a, &b| {
        let la = layer_of(names[a]).unwrap_or(-1);
        let lb = layer_of(names[b]).unwrap_or(-1);
        la.cmp(&lb).then_with(|| names[a].cmp(names[b]))
    });
    idx
}

/// The types of all tensors of a model, in the order given (which should be
/// [`output_order`]): `(name, shape, current type)` each.
pub fn select_all<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [u64], GgmlType)> + Clone,
    info: &ModelInfo,
    opts: &SelectOptions,
) -> Result<(Vec<Choice>, Counters)> {
    let mut counters = Counters::new(tensors.clone().into_iter().map(|t| t.0), info);
    let choices = tensors
        .into_iter()
        .map(|(name, shape, cur)| select_type(name, shape, cur, info, opts, &mut counters))
        .collect::<Result<Vec<_>>>()?;
    Ok((choices, counters))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_layers_match_llama_cpp() {
        // Gemma 3 270M (18 layers) Q4_K_M promotes attn_v and ffn_down of these layers.
        let got: Vec<i64> = (0..18).filter(|&i| use_more_bits(i, 18)).collect();
        assert_eq!(got, vec![0, 1, 4, 7, 10, 13, 15, 16, 17]);
        let got: Vec<i64> = (0..4).filter(|&i| use_more_bits(i, 4)).collect();
        assert_eq!(got, vec![2, 3]);
        // n_layer < 8: (i - 0) % 3 == 2.
        let got: Vec<i64> = (0..7).filter(|&i| use_more_bits(i, 7)).collect();
        assert_eq!(got, vec![2, 5, 6]);
    }

    #[test]
    fn dims_layers_and_order() {
        assert_eq!(n_dims(&[128]), 1);
        assert_eq!(n_dims(&[128, 1]), 1);
        assert_eq!(n_dims(&[128, 4]), 2);
        assert_eq!(n_dims(&[128, 4, 8]), 3);
        assert_eq!(layer_of("blk.12.attn_q.weight"), Some(12));
        assert_eq!(layer_of("output.weight"), None);
        let names = [
            "blk.10.a",
            "token_embd.weight",
            "blk.2.b",
            "blk.2.a",
            "output.weight",
        ];
        let order: Vec<&str> = output_order(names).into_iter().map(|i| names[i]).collect();
        assert_eq!(
            order,
            [
                "output.weight",
                "token_embd.weight",
                "blk.2.a",
                "blk.2.b",
                "blk.10.a"
            ]
        );
    }

    #[test]
    fn fallbacks_follow_block_sizes() {
        let mut c = Counters::default();
        let f = |ty, n, c: &mut Counters| fallback("t", n, ty, c).map(|x| x.ty);
        assert_eq!(f(GgmlType::Q4K, 128, &mut c).unwrap(), GgmlType::Q5_0);
        assert_eq!(f(GgmlType::Q6K, 640, &mut c).unwrap(), GgmlType::Q8_0);
        assert_eq!(f(GgmlType::IQ4XS, 96, &mut c).unwrap(), GgmlType::IQ4NL);
        assert_eq!(f(GgmlType::Q3K, 40, &mut c).unwrap(), GgmlType::F16);
        assert_eq!(f(GgmlType::Q4K, 256, &mut c).unwrap(), GgmlType::Q4K);
        assert_eq!(c.n_fallback, 4);
        let e = f(GgmlType::Q8_0, 40, &mut c).unwrap_err().to_string();
        assert!(e.contains("40") && e.contains("Q8_0"), "{e}");
    }
}
