//! The KV cache: per layer, one row of keys and one row of values per position, stored as
//! F16 (default), F32 or Q8_0.
//!
//! A sliding-window layer keeps the window plus one micro-batch of positions, as a ring
//! (position `p` in row `p % rows`), as llama.cpp's SWA cache does: a micro-batch of `n`
//! tokens at `pos0` writes `n` rows, and its first query still reads the `window - 1` positions
//! before `pos0`, so `window + n_ubatch` rows are never overwritten while read. The mask never
//! reads older positions. Other layers keep the whole context.

use crate::error::{Error, Result};
use crate::model::Config;
use crate::quant::{self, GgmlType};

/// The element types a KV cache may use.
pub const KV_TYPES: [GgmlType; 3] = [GgmlType::F16, GgmlType::F32, GgmlType::Q8_0];

/// Keys and values of every layer for `n_ctx` positions.
pub struct KvCache {
    pub ty: GgmlType,
    pub n_ctx: usize,
    /// Bytes of one key row (all kv heads) and of one key head.
    pub k_row: usize,
    pub k_head: usize,
    pub v_row: usize,
    pub v_head: usize,
    /// Per layer: the rows it keeps (`n_ctx`, or fewer on a sliding-window layer).
    pub rows: Vec<usize>,
    /// Per layer: (rows, k_row) bytes.
    pub k: Vec<Vec<u8>>,
    /// Per layer: (rows, v_row) bytes.
    pub v: Vec<Vec<u8>>,
    /// Positions filled so far.
    pub n_past: usize,
}

/// Rows layer `il` keeps for a context of `n_ctx` and micro-batches of `n_ubatch`: the whole
/// context, or on a sliding-window layer the window plus one micro-batch.
pub fn layer_rows(c: &Config, il: usize, n_ctx: usize, n_ubatch: usize) -> usize {
    match c.sliding_window {
        Some(w) if c.is_swa(il) => n_ctx.min(w.saturating_add(n_ubatch)),
        _ => n_ctx,
    }
}

impl KvCache {
    /// Bytes a cache of `n_ctx` positions of type `ty` takes for `c` with micro-batches of
    /// `n_ubatch`.
    pub fn bytes(c: &Config, n_ctx: usize, n_ubatch: usize, ty: GgmlType) -> Result<u64> {
        let (kr, _) = row_bytes(ty, c.n_head_kv, c.head_dim_k)?;
        let (vr, _) = row_bytes(ty, c.n_head_kv, c.head_dim_v)?;
        let rows: u64 = (0..c.n_layer)
            .map(|il| layer_rows(c, il, n_ctx, n_ubatch) as u64)
            .sum();
        Ok((kr + vr) as u64 * rows)
    }

    /// Bytes this cache holds.
    pub fn allocated(&self) -> u64 {
        self.k.iter().chain(&self.v).map(|b| b.len() as u64).sum()
    }

    /// The row of position `p` in layer `il`.
    #[inline]
    pub fn row(&self, il: usize, p: usize) -> usize {
        p % self.rows[il]
    }

    pub fn new(c: &Config, n_ctx: usize, n_ubatch: usize, ty: GgmlType) -> Result<KvCache> {
        if !KV_TYPES.contains(&ty) {
            return Err(Error::Unsupported(format!(
                "KV cache type {ty} (strait supports f16, f32, q8_0)"
            )));
        }
        let k = quant::scalar(ty);
        if k.and_then(|k| k.quantize).is_none()
            || k.and_then(|k| k.dequantize).is_none()
            || k.and_then(|k| k.vec_dot).is_none()
        {
            return Err(Error::Unsupported(format!(
                "KV cache type {ty}: its kernels are not available"
            )));
        }
        let (k_row, k_head) = row_bytes(ty, c.n_head_kv, c.head_dim_k)?;
        let (v_row, v_head) = row_bytes(ty, c.n_head_kv, c.head_dim_v)?;
        let total = KvCache::bytes(c, n_ctx, n_ubatch, ty)?;
        if n_ctx == 0 || n_ubatch == 0 || total > isize::MAX as u64 {
            return Err(Error::Invalid(format!(
                "a KV cache of {n_ctx} positions ({total} bytes) cannot be allocated"
            )));
        }
        let rows: Vec<usize> = (0..c.n_layer)
            .map(|il| layer_rows(c, il, n_ctx, n_ubatch))
            .collect();
        let layer = |row: usize, n: usize| zeroed::<u8>(row * n, "the KV cache");
        Ok(KvCache {
            ty,
            n_ctx,
            k_row,
            k_head,
            v_row,
            v_head,
            k: rows
                .iter()
                .map(|&n| layer(k_row, n))
                .collect::<Result<_>>()?,
            v: rows
                .iter()
                .map(|&n| layer(v_row, n))
                .collect::<Result<_>>()?,
            rows,
            n_past: 0,
        })
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.n_past = 0;
    }
}

fn row_bytes(ty: GgmlType, n_heads: usize, head_dim: usize) -> Result<(usize, usize)> {
    let head = ty.row_bytes(head_dim as u64).ok_or_else(|| {
        Error::Unsupported(format!(
            "KV cache type {ty}: head dim {head_dim} is not a multiple of its block size {}",
            ty.block_size()
        ))
    })? as usize;
    Ok((head * n_heads, head))
}

/// A zeroed buffer of `n` values, or an error naming `what` when memory runs out. The memory
/// comes zeroed from the allocator (fresh pages for large buffers), so the parts of a KV cache
/// that a short context never reaches take no physical memory.
pub(crate) fn zeroed<T: bytemuck::Zeroable + Clone>(n: usize, what: &str) -> Result<Vec<T>> {
    bytemuck::allocation::try_zeroed_vec(n).map_err(|_| {
        Error::Invalid(format!(
            "cannot allocate {} bytes for {what}",
            n as u128 * std::mem::size_of::<T>() as u128
        ))
    })
}
