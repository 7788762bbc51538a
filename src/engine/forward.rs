//! The forward pass: embeddings, one [`forward_layer`] per layer, the output head.
//!
//! All buffers live in [`State`], allocated once for a batch size and a context length.

use super::kv::KvCache;
use crate::backend::cpu::team::{self, Parts};
use crate::backend::cpu::{self, fast, matmul};
use crate::error::{Error, Result};
use crate::model::{Activation, Config, LayerWeights, WeightView};
use crate::quant::{self, GgmlType};

/// Activations and scratch for a batch of up to `n_batch` tokens.
///
/// Besides the residual stream, a layer needs its buffers in two phases that never overlap in
/// time: attention (normed input, q, k, v, the head-major output, the token-major output, the
/// projected output) and the feed-forward network (normed input, gate, up, the projected
/// output). Both phases share one arena, and inside a phase a buffer takes the place of one
/// that is no longer read (see `AttnLayout` and `FfnLayout`), so a token costs the width of
/// the wider phase instead of the sum of every buffer.
///
/// A layer takes at most [`LAYER_ROWS`] tokens at a time: a larger batch goes through each
/// layer in even parts (every token is computed exactly as in one part: each row of a matmul,
/// each query of attention is independent of the others, and a part writes its keys and values
/// before its queries read them), so the arena holds `min(n_batch, LAYER_ROWS)` rows.
pub struct State {
    pub n_batch: usize,
    /// Tokens a layer processes at a time: the rows of the arena.
    pub n_part: usize,
    /// Rows of logits a batch may produce.
    pub n_out: usize,
    pub x: Vec<f32>, // (n_batch, dim) the residual stream
    /// (n_part, the wider of the two phases) per-layer scratch, free between layers.
    pub(crate) arena: Vec<f32>,
    pub rope_cs: Vec<f32>, // (n_rot) cos/sin pairs of one position
    pub scores: Vec<f32>,  // (n_head, n_ctx) attention weights of one query
    pub q_dot: Vec<u8>,    // (n_head, bytes of one query head in the K cache's dot type)
    pub q_h: Vec<f32>,     // (n_head, head_dim_k) one query head rounded to f16
    pub v_row: Vec<f32>,   // (n_head, head_dim_v) one dequantized value head
    pub act: Vec<u8>,      // quantized activations of the largest matmul
    pub out_x: Vec<f32>,   // (n_out, dim) normed rows that produce logits
    pub logits: Vec<f32>,  // (n_out, n_vocab)
}

/// The most tokens a layer processes at a time. Each part is one more pass over the layer's
/// weights, which stay in cache between parts, but the batched matmul kernels unpack the
/// weights again for each: a 512-token pass in two parts takes about 2% more CPU time on
/// Gemma 3 (Q5_0, Q4_K, Q6_K), nothing measurable on SmolLM2 (Q4_1); smaller parts cost more.
pub const LAYER_ROWS: usize = 256;

/// Widths (values per token) of the attention phase's slots, in arena order:
/// `a` holds the normed input, later the token-major attention output; `b` holds q, later the
/// projected output; then k, v and the head-major attention output.
struct AttnLayout {
    a: usize,
    b: usize,
    k: usize,
    v: usize,
    h: usize,
}

impl AttnLayout {
    fn of(c: &Config) -> AttnLayout {
        let ad = c.n_head * c.head_dim_v;
        AttnLayout {
            a: c.dim.max(ad),
            b: c.q_dim().max(c.dim),
            k: c.k_dim(),
            v: c.v_dim(),
            h: ad,
        }
    }

    fn width(&self) -> usize {
        self.a + self.b + self.k + self.v + self.h
    }
}

/// Widths of the feed-forward phase's slots: the normed input, gate, and up (later the
/// projected output, written while gate is read).
struct FfnLayout {
    xb: usize,
    gate: usize,
    up: usize,
}

impl FfnLayout {
    fn of(c: &Config) -> FfnLayout {
        FfnLayout {
            xb: c.dim,
            gate: c.n_ff,
            up: c.n_ff.max(c.dim),
        }
    }

    fn width(&self) -> usize {
        self.xb + self.gate + self.up
    }
}

/// Splits the first `n * sum(widths)` values of `buf` into `N` slots of `n * widths[i]`.
fn split<const N: usize>(buf: &mut [f32], n: usize, widths: [usize; N]) -> [&mut [f32]; N] {
    let mut rest = buf;
    widths.map(|w| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(n * w);
        rest = tail;
        head
    })
}

impl State {
    /// Values per token of the per-layer scratch: the wider of the two phases.
    pub fn arena_width(c: &Config) -> usize {
        AttnLayout::of(c).width().max(FfnLayout::of(c).width())
    }

    /// Buffers for batches of `n_batch` tokens, `n_out` logit rows, a cache of `kv.n_ctx`.
    pub fn new(
        c: &Config,
        n_batch: usize,
        n_out: usize,
        kv: &KvCache,
        mats: &[WeightView],
    ) -> Result<State> {
        let n_part = n_batch.min(LAYER_ROWS);
        let q_dot_ty = kv_dot_type(kv.ty)?;
        let q_dot = q_dot_ty.row_bytes(c.head_dim_k as u64).ok_or_else(|| {
            Error::Unsupported(format!(
                "head dim {} is not a multiple of the {q_dot_ty} block size",
                c.head_dim_k
            ))
        })? as usize;
        let act = mats
            .iter()
            .map(|w| matmul::scratch_bytes(w, n_part.max(n_out)))
            .max()
            .unwrap_or(0);
        let width = State::arena_width(c);
        let bytes = n_batch as u64 * c.dim as u64 * 4
            + n_part as u64 * width as u64 * 4
            + n_out as u64 * (c.dim + c.n_vocab) as u64 * 4
            + c.n_head as u64 * kv.n_ctx as u64 * 4
            + act as u64;
        if bytes > isize::MAX as u64 / 2 {
            return Err(Error::Invalid(format!(
                "batch {n_batch} with {n_out} output rows needs {bytes} bytes of buffers"
            )));
        }
        let z = |n: usize| vec![0f32; n];
        // The two buffers that grow with the vocabulary and the context are allocated first,
        // with an error rather than an abort when memory runs out.
        let logits = super::kv::zeroed::<f32>(n_out * c.n_vocab, "the logits")?;
        let scores = super::kv::zeroed::<f32>(c.n_head * kv.n_ctx, "attention scores")?;
        Ok(State {
            n_batch,
            n_part,
            n_out,
            x: z(n_batch * c.dim),
            arena: z(n_part * width),
            rope_cs: z(c.n_rot),
            scores,
            q_dot: vec![0u8; c.n_head * q_dot],
            q_h: z(c.n_head * c.head_dim_k),
            v_row: z(c.n_head * c.head_dim_v),
            act: vec![0u8; act],
            out_x: z(n_out * c.dim),
            logits,
        })
    }

    /// Bytes of every buffer this state holds.
    pub fn allocated(&self) -> u64 {
        let f = self.x.len()
            + self.arena.len()
            + self.rope_cs.len()
            + self.scores.len()
            + self.q_h.len()
            + self.v_row.len()
            + self.out_x.len()
            + self.logits.len();
        (f * 4 + self.q_dot.len() + self.act.len()) as u64
    }
}

/// The type a query head is converted to for its dot product with the K cache.
fn kv_dot_type(ty: GgmlType) -> Result<GgmlType> {
    quant::scalar(ty)
        .map(|k| k.dot_type)
        .ok_or_else(|| Error::Unsupported(format!("KV cache type {ty} has no kernels")))
}

/// Writes the embeddings of `tokens` into `st.x`.
pub fn embed(c: &Config, st: &mut State, embd: &WeightView, tokens: &[u32]) -> Result<()> {
    let deq = quant::scalar(embd.ty)
        .and_then(|k| k.dequantize)
        .ok_or_else(|| Error::Unsupported(format!("embeddings of type {}", embd.ty)))?;
    for (t, &id) in tokens.iter().enumerate() {
        if id as usize >= c.n_vocab {
            return Err(Error::Invalid(format!(
                "token id {id} is outside the vocabulary of {} tokens",
                c.n_vocab
            )));
        }
        let x = &mut st.x[t * c.dim..(t + 1) * c.dim];
        deq(embd.row(id as usize), x);
        if let Some(s) = c.embed_scale {
            cpu::scale(x, s);
        }
    }
    Ok(())
}

/// One transformer layer over the `n` tokens in `st.x`, at positions `pos0..pos0 + n`; their
/// keys and values are written to the cache of layer `il`.
#[allow(clippy::too_many_arguments)]
pub fn forward_layer(
    il: usize,
    w: &LayerWeights,
    st: &mut State,
    kv: &mut KvCache,
    c: &Config,
    n: usize,
    pos0: usize,
    rope_factors: Option<&[f32]>,
) -> Result<()> {
    if n > st.n_batch {
        return Err(Error::Invalid(format!(
            "{n} tokens in one pass, buffers hold {}",
            st.n_batch
        )));
    }
    // Even parts, so that no part is much smaller than the others.
    let parts = n.div_ceil(st.n_part.max(1));
    let size = n.div_ceil(parts.max(1));
    let mut r0 = 0;
    while r0 < n {
        let r1 = (r0 + size).min(n);
        layer_part(il, w, st, kv, c, r0, r1 - r0, pos0, rope_factors)?;
        r0 = r1;
    }
    Ok(())
}

/// [`forward_layer`] for the `n` tokens from row `r0` of `st.x`, at positions `pos0 + r0..`.
#[allow(clippy::too_many_arguments)]
fn layer_part(
    il: usize,
    w: &LayerWeights,
    st: &mut State,
    kv: &mut KvCache,
    c: &Config,
    r0: usize,
    n: usize,
    pos0: usize,
    rope_factors: Option<&[f32]>,
) -> Result<()> {
    let pos0 = pos0 + r0;
    let (dim, qd, kd, vd) = (c.dim, c.q_dim(), c.k_dim(), c.v_dim());
    let ad = c.n_head * c.head_dim_v;
    let eps = c.norm_eps;

    // Attention phase: a = normed input, then attention output; b = q, then projected output.
    let l = AttnLayout::of(c);
    let [a, b, k, v, h] = split(&mut st.arena, n, [l.a, l.b, l.k, l.v, l.h]);

    // attention rmsnorm
    let xb = &mut a[..n * dim];
    let x = &mut st.x[r0 * dim..(r0 + n) * dim];
    rms_norm_rows(xb, x, w.attn_norm, eps, n);

    // qkv projections
    let (q, k, v) = (&mut b[..n * qd], &mut k[..n * kd], &mut v[..n * vd]);
    matmul::matmul_many(
        [&mut *q, &mut *k, &mut *v],
        xb,
        [&w.wq, &w.wk, &w.wv],
        n,
        &mut st.act,
    )?;
    for (buf, bias, width) in [
        (&mut *q, w.bq, qd),
        (&mut *k, w.bk, kd),
        (&mut *v, w.bv, vd),
    ] {
        if let Some(bias) = bias {
            for row in buf.chunks_exact_mut(width) {
                cpu::add(row, bias);
            }
        }
    }

    // per-head q/k norms
    if let Some(qn) = w.q_norm {
        cpu::rms_norm_inplace(q, qn, eps);
    }
    if let Some(kn) = w.k_norm {
        cpu::rms_norm_inplace(k, kn, eps);
    }

    // RoPE
    let (base, scale) = c.rope_of(il);
    if c.n_rot <= ROPE_MAX {
        // Over token blocks, each with its cos/sin table on the stack.
        let per = rows_per_block(n);
        let (qs, ks) = (Parts::new(&mut *q, per * qd), Parts::new(&mut *k, per * kd));
        by_rows(n, |t0, t1| {
            // SAFETY: block t0 / per is this task's alone.
            let (qb, kb) = unsafe { (qs.get(t0 / per), ks.get(t0 / per)) };
            let mut table = [0f32; ROPE_MAX];
            let cs = &mut table[..c.n_rot];
            for t in t0..t1 {
                let r = t - t0;
                cpu::rope_cache(cs, (pos0 + t) as i64, base, scale, rope_factors);
                cpu::rope(
                    &mut qb[r * qd..(r + 1) * qd],
                    c.head_dim_k,
                    cs,
                    c.rope_style,
                );
                cpu::rope(
                    &mut kb[r * kd..(r + 1) * kd],
                    c.head_dim_k,
                    cs,
                    c.rope_style,
                );
            }
        });
    } else {
        let cs = &mut st.rope_cs[..c.n_rot];
        for t in 0..n {
            cpu::rope_cache(cs, (pos0 + t) as i64, base, scale, rope_factors);
            cpu::rope(&mut q[t * qd..(t + 1) * qd], c.head_dim_k, cs, c.rope_style);
            cpu::rope(&mut k[t * kd..(t + 1) * kd], c.head_dim_k, cs, c.rope_style);
        }
    }
    if c.scale_q {
        cpu::scale(q, c.attn_scale);
    }

    // store k and v in the cache
    store_kv(kv, il, k, v, n, pos0, kd, vd)?;

    // attention: q -> h (head-major), then h -> a (token-major); q is not read again
    let scratch = Heads {
        scores: &mut st.scores,
        q_dot: &mut st.q_dot,
        q_h: &mut st.q_h,
        v_row: &mut st.v_row,
    };
    attention(c, il, q, &mut h[..n * ad], scratch, kv, n, pos0)?;
    let att = &mut a[..n * ad];
    to_token_major(att, &h[..n * ad], c.n_head, n, c.head_dim_v);

    // output projection, into b (q is dead)
    let xb2 = &mut b[..n * dim];
    matmul(xb2, att, &w.wo, n, &mut st.act)?;
    if let Some(pn) = w.post_attn_norm {
        cpu::rms_norm_inplace(xb2, pn, eps);
    }
    // residual
    cpu::add(x, xb2);

    // Feed-forward phase, in the same arena: normed input, gate, up (then projected output).
    let f = c.n_ff;
    let l = FfnLayout::of(c);
    let [xb, gate, up] = split(&mut st.arena, n, [l.xb, l.gate, l.up]);

    // ffn rmsnorm
    rms_norm_rows(xb, x, w.ffn_norm, eps, n);

    // gated feed-forward: down(act(gate(x)) * up(x))
    let (gate, up_f) = (&mut gate[..n * f], &mut up[..n * f]);
    matmul::matmul_many(
        [&mut *gate, &mut *up_f],
        xb,
        [&w.w_gate, &w.w_up],
        n,
        &mut st.act,
    )?;
    let per = rows_per_block(n);
    let gates = Parts::new(&mut *gate, per * f);
    let up_r = &*up_f;
    by_rows(n, |t0, t1| {
        // SAFETY: block t0 / per is this task's alone.
        let g = unsafe { gates.get(t0 / per) };
        let u = &up_r[t0 * f..t1 * f];
        match c.activation {
            Activation::SwiGlu => cpu::swiglu(g, u),
            Activation::GeGlu => cpu::geglu(g, u),
        }
    });
    // into the up slot (up is dead)
    let xb2 = &mut up[..n * dim];
    matmul(xb2, gate, &w.w_down, n, &mut st.act)?;
    if let Some(pn) = w.post_ffn_norm {
        cpu::rms_norm_inplace(xb2, pn, eps);
    }
    // residual
    cpu::add(x, xb2);
    Ok(())
}

/// The widest RoPE whose cos/sin table a task keeps on its stack; wider ones run serially.
const ROPE_MAX: usize = 512;

/// `f(t0, t1)` over blocks of the `n` token rows, on the current team: the per-row steps of a
/// layer (norms, RoPE, the gated activation) are independent across tokens. One block for a
/// few tokens, where handing out work costs more than it saves.
fn by_rows(n: usize, f: impl Fn(usize, usize) + Sync) {
    let per = rows_per_block(n);
    let blocks = n.div_ceil(per);
    if blocks <= 1 {
        f(0, n);
        return;
    }
    team::for_each(blocks, |b| f(b * per, ((b + 1) * per).min(n)));
}

/// Rows per block of [`by_rows`] (about four blocks per thread, at least eight rows each), for
/// cutting the buffers it writes into [`Parts`] alike.
fn rows_per_block(n: usize) -> usize {
    n.div_ceil(team::threads() * 4).max(8)
}

/// `out = rms_norm(x) * w` per row of `dim`, over token blocks.
fn rms_norm_rows(out: &mut [f32], x: &[f32], w: &[f32], eps: f32, n: usize) {
    let dim = w.len();
    let per = rows_per_block(n);
    let outs = Parts::new(&mut out[..n * dim], per * dim);
    by_rows(n, |t0, t1| {
        // SAFETY: block t0 / per is this task's alone.
        let o = unsafe { outs.get(t0 / per) };
        cpu::rms_norm(o, &x[t0 * dim..t1 * dim], w, eps);
    });
}

/// head-major -> token-major: `att[t, h*hv + d] = att_h[h, t, d]`.
fn to_token_major(att: &mut [f32], att_h: &[f32], n_head: usize, n: usize, hv: usize) {
    let ad = n_head * hv;
    for h in 0..n_head {
        for t in 0..n {
            let src = &att_h[(h * n + t) * hv..(h * n + t + 1) * hv];
            att[t * ad + h * hv..t * ad + (h + 1) * hv].copy_from_slice(src);
        }
    }
}

/// Per-head scratch of [`attention`], one slice of each per head.
struct Heads<'a> {
    scores: &'a mut [f32],
    q_dot: &'a mut [u8],
    q_h: &'a mut [f32],
    v_row: &'a mut [f32],
}

#[allow(clippy::too_many_arguments)]
fn store_kv(
    kv: &mut KvCache,
    il: usize,
    k: &[f32],
    v: &[f32],
    n: usize,
    pos0: usize,
    kd: usize,
    vd: usize,
) -> Result<()> {
    if pos0 + n > kv.n_ctx {
        return Err(Error::Invalid(format!(
            "positions {pos0}..{} do not fit in a context of {}",
            pos0 + n,
            kv.n_ctx
        )));
    }
    let quantize = quant::scalar(kv.ty)
        .and_then(|k| k.quantize)
        .ok_or_else(|| Error::Unsupported(format!("KV cache type {}", kv.ty)))?;
    let (kr, vr) = (kv.k_row, kv.v_row);
    for t in 0..n {
        let p = kv.row(il, pos0 + t);
        quantize(
            &k[t * kd..(t + 1) * kd],
            &mut kv.k[il][p * kr..(p + 1) * kr],
            None,
        );
        quantize(
            &v[t * vd..(t + 1) * vd],
            &mut kv.v[il][p * vr..(p + 1) * vr],
            None,
        );
    }
    Ok(())
}

/// Grouped-query attention of the `n` queries in `q` over the cache of layer `il`, into `att_h`
/// (head-major: (n_head, n, head_dim_v)), with the causal mask and, on sliding-window layers, the window. As ggml without flash attention:
/// each query head is converted to the K cache's dot type for KQ, the softmax runs in f32, and
/// the weights are converted to F16 before they meet an F16 V.
#[allow(clippy::too_many_arguments)]
fn attention(
    c: &Config,
    il: usize,
    q: &[f32],
    att_h: &mut [f32],
    heads: Heads,
    kv: &KvCache,
    n: usize,
    pos0: usize,
) -> Result<()> {
    let (hk, hv) = (c.head_dim_k, c.head_dim_v);
    let qd = c.q_dim();
    let group = c.n_head / c.n_head_kv;
    let kq_scale = if c.scale_q { 1.0 } else { c.attn_scale };
    let window = if c.is_swa(il) { c.sliding_window } else { None };
    let kern =
        quant::best(kv.ty).ok_or_else(|| Error::Unsupported(format!("KV cache type {}", kv.ty)))?;
    let (vec_dot, deq) = match (kern.vec_dot, kern.dequantize) {
        (Some(d), Some(q)) => (d, q),
        _ => return Err(Error::Unsupported(format!("KV cache type {}", kv.ty))),
    };
    let to_dot = quant::best(kern.dot_type)
        .and_then(|k| k.quantize)
        .ok_or_else(|| Error::Unsupported(format!("quantizing queries to {}", kern.dot_type)))?;
    let n_ctx = kv.n_ctx;
    let qdot_bytes = heads.q_dot.len() / c.n_head;
    let (k_cache, v_cache) = (&kv.k[il], &kv.v[il]);
    let (k_row, k_head, v_row, v_head) = (kv.k_row, kv.k_head, kv.v_row, kv.v_head);
    let v_f16 = kv.ty == GgmlType::F16;
    // Position j is in row j % rows (a ring on sliding-window layers).
    let rows = kv.rows[il];

    // Per head: its output rows and its own scratch.
    let outs = Parts::new(&mut att_h[..c.n_head * n * hv], n * hv);
    let scores = Parts::new(heads.scores, n_ctx);
    let q_dots = Parts::new(heads.q_dot, qdot_bytes);
    let v_tmps = Parts::new(heads.v_row, hv);
    let q_hs = Parts::new(heads.q_h, hk);
    team::for_each(c.n_head, |h| {
        // SAFETY: each task takes the parts of its own head.
        let (out_h, scores, q_dot, v_tmp, q_h) = unsafe {
            (
                outs.get(h),
                scores.get(h),
                q_dots.get(h),
                v_tmps.get(h),
                q_hs.get(h),
            )
        };
        let g = h / group;
        let k_heads = fast::CacheHeads {
            data: k_cache,
            row: k_row,
            off: g * k_head,
            rows,
        };
        let v_heads = fast::CacheHeads {
            data: v_cache,
            row: v_row,
            off: g * v_head,
            rows,
        };
        for t in 0..n {
            let pos = pos0 + t;
            let lo = match window {
                // ggml masks key positions p0 with pos - p0 >= window.
                Some(w) => (pos + 1).saturating_sub(w),
                None => 0,
            };
            let s = &mut scores[..pos + 1 - lo];
            let qh = &q[t * qd + h * hk..t * qd + (h + 1) * hk];
            if v_f16 {
                // Q meets an F16 K as F16 (ggml converts src1 to the dot type).
                fast::round_f16(q_h, qh);
            } else {
                to_dot(qh, q_dot, None);
            }
            let out = &mut out_h[t * hv..(t + 1) * hv];
            if v_f16 {
                fast::scores_f16(s, k_heads, lo, q_h, kq_scale);
                cpu::softmax(s);
                fast::mix_f16(out, s, v_heads, lo);
                continue;
            }
            let mut j = lo % rows;
            for s in s.iter_mut() {
                let kh = &k_cache[j * k_row + g * k_head..j * k_row + (g + 1) * k_head];
                *s = vec_dot(hk, kh, q_dot) * kq_scale;
                j = if j + 1 == rows { 0 } else { j + 1 };
            }
            cpu::softmax(s);
            out.fill(0.0);
            let mut j = lo % rows;
            for &p in s.iter() {
                let vh = &v_cache[j * v_row + g * v_head..j * v_row + (g + 1) * v_head];
                deq(vh, v_tmp);
                for (o, &x) in out.iter_mut().zip(v_tmp.iter()) {
                    *o += p * x;
                }
                j = if j + 1 == rows { 0 } else { j + 1 };
            }
        }
    });
    Ok(())
}

/// Logits of the rows `rows` of `st.x` (indices into the batch), into `st.logits`.
pub fn output(
    c: &Config,
    st: &mut State,
    norm: &[f32],
    w: &WeightView,
    rows: std::ops::Range<usize>,
) -> Result<()> {
    let m = rows.len();
    if m > st.n_out {
        return Err(Error::Invalid(format!(
            "{m} logit rows requested, buffers hold {}",
            st.n_out
        )));
    }
    let dim = c.dim;
    cpu::rms_norm(
        &mut st.out_x[..m * dim],
        &st.x[rows.start * dim..rows.end * dim],
        norm,
        c.norm_eps,
    );
    matmul(
        &mut st.logits[..m * c.n_vocab],
        &st.out_x[..m * dim],
        w,
        m,
        &mut st.act,
    )?;
    if let Some(cap) = c.final_logit_softcap {
        for l in &mut st.logits[..m * c.n_vocab] {
            *l = cap * (*l / cap).tanh();
        }
    }
    Ok(())
}
