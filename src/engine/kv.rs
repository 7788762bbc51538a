//! The KV cache: per layer, one row of keys and one row of values per position, stored as
//! F16 (default), F32 or Q8_0.

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
    /// Per layer: (n_ctx, k_row) bytes.
    pub k: Vec<Vec<u8>>,
    /// Per layer: (n_ctx, v_row) bytes.
    pub v: Vec<Vec<u8>>,
    /// Positions filled so far.
    pub n_past: usize,
}

impl KvCache {
    /// Bytes a cache of `n_ctx` positions of type `ty` takes for `c`.
    pub fn bytes(c: &Config, n_ctx: usize, ty: GgmlType) -> Result<u64> {
        let (kr, _) = row_bytes(ty, c.n_head_kv, c.head_dim_k)?;
        let (vr, _) = row_bytes(ty, c.n_head_kv, c.head_dim_v)?;
        Ok((kr + vr) as u64 * n_ctx as u64 * c.n_layer as u64)
    }

    pub fn new(c: &Config, n_ctx: usize, ty: GgmlType) -> Result<KvCache> {
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
        let total = (k_row + v_row) as u64 * n_ctx as u64 * c.n_layer as u64;
        if n_ctx == 0 || total > isize::MAX as u64 {
            return Err(Error::Invalid(format!(
                "a KV cache of {n_ctx} positions ({total} bytes) cannot be allocated"
            )));
        }
        let layer = |row: usize| zeroed::<u8>(row * n_ctx, "the KV cache");
        Ok(KvCache {
            ty,
            n_ctx,
            k_row,
            k_head,
            v_row,
            v_head,
            k: (0..c.n_layer)
                .map(|_| layer(k_row))
                .collect::<Result<_>>()?,
            v: (0..c.n_layer)
                .map(|_| layer(v_row))
                .collect::<Result<_>>()?,
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

/// A zeroed buffer of `n` values, or an error naming `what` when memory runs out.
pub(crate) fn zeroed<T: Clone + Default>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::Invalid(format!(
            "cannot allocate {} bytes for {what}",
            n as u128 * std::mem::size_of::<T>() as u128
        ))
    })?;
    v.resize(n, T::default());
    Ok(v)
}
