//! Tensor names and shapes per architecture, and views of the weights into the mapped file.
//!
//! A [`ModelTensors`] is resolved and shape-checked once at load; a [`LayerWeights`] is a set of
//! borrowed views, made per layer from the mapping (or, later, from any other memory holding
//! the same bytes).

use super::config::Config;
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::GgmlType;

/// A 2-D weight matrix as ggml stores it: `rows` rows of `cols` values of type `ty`.
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    pub ty: GgmlType,
    /// Values per row (ggml's ne0), the input width of `W·x`.
    pub cols: usize,
    /// Rows (ne1), the output width of `W·x`.
    pub rows: usize,
    pub data: &'a [u8],
}

impl<'a> WeightView<'a> {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// The weights of one transformer layer.
#[derive(Clone, Copy, Debug)]
pub struct LayerWeights<'a> {
    pub attn_norm: &'a [f32], // (dim,)
    pub wq: WeightView<'a>,   // (q_dim, dim)
    pub wk: WeightView<'a>,   // (k_dim, dim)
    pub wv: WeightView<'a>,   // (v_dim, dim)
    pub bq: Option<&'a [f32]>,
    pub bk: Option<&'a [f32]>,
    pub bv: Option<&'a [f32]>,
    pub q_norm: Option<&'a [f32]>, // (head_dim_k,)
    pub k_norm: Option<&'a [f32]>, // (head_dim_k,)
    pub wo: WeightView<'a>,        // (dim, n_head * head_dim_v)
    pub post_attn_norm: Option<&'a [f32]>,
    pub ffn_norm: &'a [f32],
    pub w_gate: WeightView<'a>, // (n_ff, dim)
    pub w_up: WeightView<'a>,   // (n_ff, dim)
    pub w_down: WeightView<'a>, // (dim, n_ff)
    pub post_ffn_norm: Option<&'a [f32]>,
}

/// The tensor infos of one layer, resolved and shape-checked.
#[derive(Clone, Debug)]
pub struct LayerTensors {
    pub attn_norm: TensorInfo,
    pub wq: TensorInfo,
    pub wk: TensorInfo,
    pub wv: TensorInfo,
    pub bq: Option<TensorInfo>,
    pub bk: Option<TensorInfo>,
    pub bv: Option<TensorInfo>,
    pub q_norm: Option<TensorInfo>,
    pub k_norm: Option<TensorInfo>,
    pub wo: TensorInfo,
    pub post_attn_norm: Option<TensorInfo>,
    pub ffn_norm: TensorInfo,
    pub w_gate: TensorInfo,
    pub w_up: TensorInfo,
    pub w_down: TensorInfo,
    pub post_ffn_norm: Option<TensorInfo>,
}

impl LayerTensors {
    /// Every tensor of the layer, for sizing and streaming.
    pub fn all(&self) -> Vec<&TensorInfo> {
        let mut v = vec![
            &self.attn_norm,
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.ffn_norm,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ];
        for t in [
            &self.bq,
            &self.bk,
            &self.bv,
            &self.q_norm,
            &self.k_norm,
            &self.post_attn_norm,
            &self.post_ffn_norm,
        ]
        .into_iter()
        .flatten()
        {
            v.push(t);
        }
        v
    }
}

/// Every weight tensor of a model, resolved and shape-checked against its [`Config`].
#[derive(Clone, Debug)]
pub struct ModelTensors {
    pub token_embd: TensorInfo,
    pub output_norm: TensorInfo,
    /// `output.weight`, or `token_embd.weight` when the output is tied.
    pub output: TensorInfo,
    /// RoPE frequency factors (`rope_freqs.weight`), when the model has them.
    pub rope_freqs: Option<TensorInfo>,
    pub layers: Vec<LayerTensors>,
}

fn check_shape(t: &TensorInfo, shape: &[usize]) -> Result<()> {
    let ok =
        t.shape.len() == shape.len() && t.shape.iter().zip(shape).all(|(&a, &b)| a == b as u64);
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "tensor {} has shape {:?}, expected {:?}",
            t.name, t.shape, shape
        )))
    }
}

fn get(file: &GgufFile, name: &str, shape: &[usize]) -> Result<TensorInfo> {
    let t = file.require(name)?;
    check_shape(t, shape)?;
    Ok(t.clone())
}

fn get_opt(file: &GgufFile, name: &str, shape: &[usize]) -> Result<Option<TensorInfo>> {
    match file.tensor(name) {
        None => Ok(None),
        Some(t) => {
            check_shape(t, shape)?;
            Ok(Some(t.clone()))
        }
    }
}

fn vector(file: &GgufFile, name: &str, n: usize, required: bool) -> Result<Option<TensorInfo>> {
    let t = if required {
        Some(get(file, name, &[n])?)
    } else {
        get_opt(file, name, &[n])?
    };
    if let Some(t) = &t {
        if t.ty != GgmlType::F32 {
            return Err(Error::Unsupported(format!(
                "tensor {} is {}: norm and bias vectors must be F32",
                t.name, t.ty
            )));
        }
    }
    Ok(t)
}

fn req(file: &GgufFile, name: &str, n: usize) -> Result<TensorInfo> {
    Ok(vector(file, name, n, true)?.expect("required"))
}

impl ModelTensors {
    /// Resolves every tensor `config` needs in `file` and checks its shape.
    pub fn resolve(file: &GgufFile, c: &Config) -> Result<ModelTensors> {
        let token_embd = get(file, "token_embd.weight", &[c.dim, c.n_vocab])?;
        let output_norm = req(file, "output_norm.weight", c.dim)?;
        let output = match get_opt(file, "output.weight", &[c.dim, c.n_vocab])? {
            Some(t) => t,
            None => token_embd.clone(),
        };
        let rope_freqs = vector(file, "rope_freqs.weight", c.n_rot / 2, false)?;
        let mut layers = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}");
            let qkv_bias = c.qkv_bias;
            layers.push(LayerTensors {
                attn_norm: req(file, &n("attn_norm.weight"), c.dim)?,
                wq: get(file, &n("attn_q.weight"), &[c.dim, c.q_dim()])?,
                wk: get(file, &n("attn_k.weight"), &[c.dim, c.k_dim()])?,
                wv: get(file, &n("attn_v.weight"), &[c.dim, c.v_dim()])?,
                bq: vector(file, &n("attn_q.bias"), c.q_dim(), qkv_bias)?,
                bk: vector(file, &n("attn_k.bias"), c.k_dim(), qkv_bias)?,
                bv: vector(file, &n("attn_v.bias"), c.v_dim(), qkv_bias)?,
                q_norm: vector(file, &n("attn_q_norm.weight"), c.head_dim_k, c.qk_norm)?,
                k_norm: vector(file, &n("attn_k_norm.weight"), c.head_dim_k, c.qk_norm)?,
                wo: get(
                    file,
                    &n("attn_output.weight"),
                    &[c.n_head * c.head_dim_v, c.dim],
                )?,
                post_attn_norm: vector(
                    file,
                    &n("post_attention_norm.weight"),
                    c.dim,
                    c.post_norms,
                )?,
                ffn_norm: req(file, &n("ffn_norm.weight"), c.dim)?,
                w_gate: get(file, &n("ffn_gate.weight"), &[c.dim, c.n_ff])?,
                w_up: get(file, &n("ffn_up.weight"), &[c.dim, c.n_ff])?,
                w_down: get(file, &n("ffn_down.weight"), &[c.n_ff, c.dim])?,
                post_ffn_norm: vector(file, &n("post_ffw_norm.weight"), c.dim, c.post_norms)?,
            });
        }
        let m = ModelTensors {
            token_embd,
            output_norm,
            output,
            rope_freqs,
            layers,
        };
        m.check_kernels(file)?;
        Ok(m)
    }

    /// Every matrix needs a dot product kernel, and the embeddings a dequantizer.
    fn check_kernels(&self, file: &GgufFile) -> Result<()> {
        let _ = file;
        let need_dot = |t: &TensorInfo| -> Result<()> {
            let k = crate::quant::scalar(t.ty).ok_or_else(|| {
                Error::Unsupported(format!(
                    "tensor {} has type {} with no kernels",
                    t.name, t.ty
                ))
            })?;
            let dk = crate::quant::scalar(k.dot_type);
            if k.vec_dot.is_none() || dk.and_then(|d| d.quantize).is_none() {
                return Err(Error::Unsupported(format!(
                    "tensor {} has type {}: its dot product with {} is not implemented",
                    t.name, t.ty, k.dot_type
                )));
            }
            if !(t.row_len() as usize).is_multiple_of(k.dot_type.block_size()) {
                return Err(Error::Unsupported(format!(
                    "tensor {}: row length {} is not a multiple of the {} block size {}",
                    t.name,
                    t.row_len(),
                    k.dot_type,
                    k.dot_type.block_size()
                )));
            }
            Ok(())
        };
        for l in &self.layers {
            for t in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                need_dot(t)?;
            }
        }
        need_dot(&self.output)?;
        if crate::quant::scalar(self.token_embd.ty)
            .and_then(|k| k.dequantize)
            .is_none()
        {
            return Err(Error::Unsupported(format!(
                "tensor token_embd.weight has type {} with no dequantizer",
                self.token_embd.ty
            )));
        }
        Ok(())
    }

    /// A view of a matrix.
    pub fn matrix<'a>(file: &'a GgufFile, t: &TensorInfo) -> WeightView<'a> {
        WeightView {
            ty: t.ty,
            cols: t.shape[0] as usize,
            rows: t.n_rows() as usize,
            data: file.data(t),
        }
    }

    /// A view of an F32 vector; an error if the mapping leaves it misaligned.
    pub fn vector<'a>(file: &'a GgufFile, t: &TensorInfo) -> Result<&'a [f32]> {
        bytemuck::try_cast_slice(file.data(t))
            .map_err(|e| Error::Invalid(format!("tensor {} cannot be read as F32: {e:?}", t.name)))
    }

    fn opt_vector<'a>(file: &'a GgufFile, t: &Option<TensorInfo>) -> Result<Option<&'a [f32]>> {
        t.as_ref().map(|t| Self::vector(file, t)).transpose()
    }

    /// The weights of layer `il`, as views into `file`.
    pub fn layer<'a>(&self, file: &'a GgufFile, il: usize) -> Result<LayerWeights<'a>> {
        let l = self.layers.get(il).ok_or_else(|| {
            Error::Invalid(format!(
                "layer {il} of {} does not exist",
                self.layers.len()
            ))
        })?;
        let m = |t: &TensorInfo| Self::matrix(file, t);
        Ok(LayerWeights {
            attn_norm: Self::vector(file, &l.attn_norm)?,
            wq: m(&l.wq),
            wk: m(&l.wk),
            wv: m(&l.wv),
            bq: Self::opt_vector(file, &l.bq)?,
            bk: Self::opt_vector(file, &l.bk)?,
            bv: Self::opt_vector(file, &l.bv)?,
            q_norm: Self::opt_vector(file, &l.q_norm)?,
            k_norm: Self::opt_vector(file, &l.k_norm)?,
            wo: m(&l.wo),
            post_attn_norm: Self::opt_vector(file, &l.post_attn_norm)?,
            ffn_norm: Self::vector(file, &l.ffn_norm)?,
            w_gate: m(&l.w_gate),
            w_up: m(&l.w_up),
            w_down: m(&l.w_down),
            post_ffn_norm: Self::opt_vector(file, &l.post_ffn_norm)?,
        })
    }
}
