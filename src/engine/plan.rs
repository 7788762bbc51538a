//! The memory plan: before anything is allocated, where every byte of a model goes on a device
//! with a budget, and how fast it will run.
//!
//! [`plan`] is a pure function from the model's header ([`ModelShape`]), a budget and the run
//! settings ([`PlanRequest`]) to a [`Plan`] that names every device buffer with its size and its
//! offset in one arena, every host buffer the placement needs, and the predicted prefill and
//! decode speed. The arena is allocated once from `Plan::device_total`, which never exceeds the
//! budget.
//!
//! Placement. The KV cache, the scratch buffers and (when it fits) the output head are on the
//! device. Then the first `k` layers are resident, for the largest `k` that fits. The other
//! layers are either streamed (copied into one of two slots before they run, double-buffered
//! against compute) or computed on the CPU (their KV cache on the host; the activations cross
//! to the host and back). Resident layers come first so that the copies of the first streamed
//! layers overlap the compute of the resident ones.
//!
//! Cost model. Each unit takes max(bytes / bandwidth, FLOPs / rate) on the path it runs on
//! (device memory, or host memory and the CPU's per-type matmul rate); streamed units add a
//! copy at the host-to-device bandwidth, simulated on two queues exactly as the executor issues
//! them, so copies overlap compute. Decode is one token, prefill one ubatch, both from the
//! start of the context (the weights dominate; attention grows with the context and is not in
//! the decode figure). `--offload auto` picks the mode with the shorter time for a prompt of one
//! ubatch followed by [`AUTO_DECODE_TOKENS`] generated tokens.

use crate::error::{Error, Result};
use crate::gguf::{Metadata, TensorInfo};
use crate::quant::GgmlType;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Alignment of every buffer in the arena and of every tensor in a layer image (bytes).
pub const ALIGN: u64 = 256;
pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// Longest context accepted (tokens); keeps every size product far from overflow.
pub const MAX_CTX: u64 = 1 << 24;
/// Longest micro-batch accepted (tokens).
pub const MAX_UBATCH: u64 = 1 << 16;
/// Device memory the driver takes for its own context and the kernels, outside the budget.
/// Assumption (no GPU measured): a CUDA context with strait's PTX modules loaded takes about
/// 300 MiB on current drivers; `strait calibrate` on a GPU machine replaces it.
pub const ASSUMED_CONTEXT_OVERHEAD: u64 = 300 * MIB;
/// Generated tokens in the workload `--offload auto` compares the modes on: a prompt of one
/// micro-batch followed by this many decoded tokens.
pub const AUTO_DECODE_TOKENS: u64 = 128;
/// Fixed cost of one host<->device transfer of activations (launch and sync), seconds.
const TRANSFER_LATENCY_S: f64 = 10e-6;

// ---------------------------------------------------------------------------------------------
// Sizes

fn mul(a: u64, b: u64, what: &str) -> Result<u64> {
    a.checked_mul(b)
        .ok_or_else(|| Error::Invalid(format!("{what}: {a} * {b} overflows 64 bits")))
}

fn add(a: u64, b: u64, what: &str) -> Result<u64> {
    a.checked_add(b)
        .ok_or_else(|| Error::Invalid(format!("{what}: {a} + {b} overflows 64 bits")))
}

pub fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

/// `12.3 GiB`, `456.7 MiB`, `12 B`: binary units, one decimal.
pub fn fmt_bytes(b: u64) -> String {
    let f = b as f64;
    if b >= GIB {
        format!("{:.2} GiB", f / GIB as f64)
    } else if b >= MIB {
        format!("{:.1} MiB", f / MIB as f64)
    } else if b >= KIB {
        format!("{:.1} KiB", f / KIB as f64)
    } else {
        format!("{b} B")
    }
}

/// A device budget as the user wrote it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    Bytes(u64),
    /// A percentage of the device's free memory.
    Percent(f64),
}

impl Budget {
    /// Parses `11.5GiB`, `12000MB` (decimal and binary units) or `90%`; a number without a
    /// unit, or `8G`, is rejected as ambiguous.
    pub fn parse(s: &str) -> Result<Budget> {
        let t = s.trim();
        let bad = |why: &str| {
            Error::Invalid(format!(
                "budget {s:?}: {why} (examples: 11.5GiB, 12000MB, 90%)"
            ))
        };
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad("not a number"))?;
            if !(v > 0.0 && v <= 100.0) {
                return Err(bad("a percentage must be above 0 and at most 100"));
            }
            return Ok(Budget::Percent(v));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let v: f64 = num.parse().map_err(|_| bad("not a number"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => KIB,
            "mib" => MIB,
            "gib" => GIB,
            "tib" => 1 << 40,
            "" => return Err(bad("give a unit: B, MB, GB, MiB or GiB")),
            _ => return Err(bad("unknown unit")),
        };
        let bytes = v * scale as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > (1u64 << 60) as f64 {
            return Err(bad("out of range"));
        }
        Ok(Budget::Bytes(bytes.floor() as u64))
    }

    /// The budget in bytes. `free` is the device's free memory, when there is a device.
    pub fn resolve(self, free: Option<u64>) -> Result<u64> {
        match (self, free) {
            (Budget::Bytes(b), _) => Ok(b),
            (Budget::Percent(p), Some(free)) => Ok((free as f64 * p / 100.0).floor() as u64),
            (Budget::Percent(p), None) => Err(Error::Invalid(format!(
                "a budget of {p}% is a share of the free GPU memory, and no GPU was found: \
                 give a size instead, like --vram 11.5GiB"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model as the plan sees it

/// One tensor of a unit, at its offset in the unit's image (the layout a slot holds).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageTensor {
    pub info: TensorInfo,
    pub offset: u64,
}

/// What is placed as a whole: one transformer block, or the output head.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Unit {
    /// `blk.7` or `output`.
    pub name: String,
    /// Bytes of the image: the tensors one after the other at [`ALIGN`]ed offsets.
    pub bytes: u64,
    #[serde(skip)]
    pub tensors: Vec<ImageTensor>,
}

impl Unit {
    pub fn new(name: impl Into<String>, infos: Vec<TensorInfo>) -> Result<Unit> {
        let name = name.into();
        let mut offset = 0u64;
        let mut tensors = Vec::with_capacity(infos.len());
        for info in infos {
            let size = info.size;
            tensors.push(ImageTensor { info, offset });
            offset = align_up(add(offset, size, &name)?);
        }
        Ok(Unit {
            name,
            bytes: offset,
            tensors,
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&ImageTensor> {
        self.tensors.iter().find(|t| t.info.name == name)
    }

    /// Elements of the matrices (tensors of 2 or more dimensions): 2 FLOPs each per token.
    pub fn matmul_params(&self) -> u64 {
        self.tensors
            .iter()
            .filter(|t| t.info.shape.len() >= 2)
            .map(|t| t.info.n_elements())
            .sum()
    }
}

/// The hyperparameters and tensor sizes a plan needs, read from a GGUF header only.
#[derive(Clone, Debug)]
pub struct ModelShape {
    pub arch: String,
    pub n_embd: u64,
    pub n_head: u64,
    /// KV heads of each layer.
    pub n_head_kv: Vec<u64>,
    pub head_dim_k: u64,
    pub head_dim_v: u64,
    /// The widest feed-forward layer.
    pub n_ff: u64,
    pub n_vocab: u64,
    pub n_ctx_train: u64,
    /// Sliding-window length, 0 when no layer uses one.
    pub n_swa: u64,
    /// Which layers attend over the sliding window only.
    pub swa_layers: Vec<bool>,
    pub layers: Vec<Unit>,
    /// Output norm and output matrix (the token embeddings when they are tied).
    pub head: Unit,
    /// Bytes of the token embedding table; it stays on the host (rows are gathered there).
    pub embd_bytes: u64,
}

impl ModelShape {
    /// Reads the shape from a header's metadata and tensor infos.
    pub fn from_header(md: &Metadata, tensors: &[TensorInfo]) -> Result<ModelShape> {
        let arch = md.str("general.architecture")?.to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let n_layer = md.u64(&key("block_count"))?;
        let n_embd = md.u64(&key("embedding_length"))?;
        let n_head = md.u64(&key("attention.head_count"))?;
        if n_layer == 0 || n_layer > 4096 || n_embd == 0 || n_head == 0 {
            return Err(Error::Invalid(format!(
                "{arch}: block_count {n_layer}, embedding_length {n_embd}, head_count {n_head}: \
                 each must be above 0 (and block_count at most 4096)"
            )));
        }
        let n_layer_us = n_layer as usize;
        let kv_key = key("attention.head_count_kv");
        let n_head_kv: Vec<u64> = match md.opt_int_array(&kv_key) {
            Ok(Some(v)) => v.iter().map(|&x| x.max(0) as u64).collect(),
            _ => vec![md.opt_u64(&kv_key)?.unwrap_or(n_head); n_layer_us],
        };
        if n_head_kv.len() != n_layer_us {
            return Err(Error::Invalid(format!(
                "{kv_key} has {} entries for {n_layer} layers",
                n_head_kv.len()
            )));
        }
        let head_dim_k = md
            .opt_u64(&key("attention.key_length"))?
            .unwrap_or(n_embd / n_head);
        let head_dim_v = md
            .opt_u64(&key("attention.value_length"))?
            .unwrap_or(n_embd / n_head);
        if head_dim_k == 0 || head_dim_v == 0 {
            return Err(Error::Invalid(format!(
                "{arch}: head dimensions {head_dim_k}/{head_dim_v} must be above 0"
            )));
        }
        let n_ctx_train = md.opt_u64(&key("context_length"))?.unwrap_or(0);
        // Sliding-window layers, as llama.cpp's set_swa_pattern(n): layer il attends over the
        // window when il % n < n - 1 (gemma2: every other layer, gemma3: 5 of every 6).
        let n_swa = md.opt_u64(&key("attention.sliding_window"))?.unwrap_or(0);
        let pattern = match arch.as_str() {
            "gemma2" => 2,
            "gemma3" => 6,
            "cohere2" => 4,
            _ => 0,
        };
        let swa_layers: Vec<bool> = (0..n_layer)
            .map(|il| n_swa > 0 && pattern > 0 && il % pattern < pattern - 1)
            .collect();

        let mut per_layer: Vec<Vec<TensorInfo>> = vec![Vec::new(); n_layer_us];
        let mut head = Vec::new();
        let mut embd = None;
        let mut output = None;
        for t in tensors {
            if let Some(rest) = t.name.strip_prefix("blk.") {
                let il: Option<usize> = rest.split('.').next().and_then(|s| s.parse().ok());
                match il {
                    Some(il) if il < n_layer_us => per_layer[il].push(t.clone()),
                    _ => {
                        return Err(Error::Invalid(format!(
                            "tensor {} names a layer outside 0..{n_layer}",
                            t.name
                        )))
                    }
                }
            } else if t.name == "token_embd.weight" {
                embd = Some(t.clone());
            } else if t.name == "output.weight" {
                output = Some(t.clone());
            } else if t.name.starts_with("output") {
                head.push(t.clone());
            }
        }
        let embd = embd.ok_or_else(|| Error::MissingTensor {
            name: "token_embd.weight".into(),
        })?;
        let n_vocab = embd.shape.get(1).copied().unwrap_or(1);
        // Tied embeddings: the head multiplies by the embedding table, so the head holds a
        // copy of it on the device while the table itself stays on the host for the lookup.
        head.push(output.unwrap_or_else(|| embd.clone()));
        let mut n_ff = md
            .opt_u64(&key("feed_forward_length"))
            .ok()
            .flatten()
            .unwrap_or(0);
        for (il, ts) in per_layer.iter().enumerate() {
            if ts.is_empty() {
                return Err(Error::Invalid(format!(
                    "layer {il} of {n_layer} has no tensors"
                )));
            }
            for t in ts {
                if t.name.contains("ffn_up") || t.name.contains("ffn_gate") {
                    n_ff = n_ff.max(t.shape.get(1).copied().unwrap_or(0));
                }
            }
        }
        let layers = per_layer
            .into_iter()
            .enumerate()
            .map(|(il, ts)| Unit::new(format!("blk.{il}"), ts))
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelShape {
            arch,
            n_embd,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ff: n_ff.max(n_embd),
            n_vocab,
            n_ctx_train,
            n_swa,
            swa_layers,
            layers,
            head: Unit::new("output", head)?,
            embd_bytes: embd.size,
        })
    }

    pub fn n_layer(&self) -> usize {
        self.layers.len()
    }

    /// Bytes of all weights (layers, head, embeddings; a tied table counted once).
    pub fn weight_bytes(&self) -> u64 {
        self.layers.iter().map(|u| u.bytes).sum::<u64>() + self.head.bytes + self.embd_bytes
    }

    /// Positions of the KV cache of layer `il` for a context of `n_ctx`: the whole context,
    /// or for a sliding-window layer the window plus one micro-batch (the positions a ubatch
    /// writes before the oldest ones leave the window).
    pub fn kv_len(&self, il: usize, n_ctx: u64, n_ubatch: u64) -> u64 {
        if self.swa_layers.get(il).copied().unwrap_or(false) {
            n_ctx.min(self.n_swa.saturating_add(n_ubatch))
        } else {
            n_ctx
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request

/// The element type of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum KvType {
    #[serde(rename = "f32")]
    F32,
    #[serde(rename = "f16")]
    F16,
    #[serde(rename = "q8_0")]
    Q8_0,
}

impl KvType {
    pub fn parse(s: &str) -> Result<KvType> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvType::F32),
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            _ => Err(Error::Invalid(format!(
                "KV cache type {s:?}: expected f16, q8_0 or f32"
            ))),
        }
    }

    pub fn ggml(self) -> GgmlType {
        match self {
            KvType::F32 => GgmlType::F32,
            KvType::F16 => GgmlType::F16,
            KvType::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// Bytes of one row of `n` values.
    fn row_bytes(self, n: u64) -> Result<u64> {
        self.ggml().row_bytes(n).ok_or_else(|| {
            Error::Invalid(format!(
                "a KV cache of {} needs head dimensions that are multiples of {}, this model has {n}",
                self.ggml(),
                self.ggml().block_size()
            ))
        })
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        })
    }
}

/// What happens to the layers that are not resident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Offload {
    /// Copied into a device slot each time they run.
    Stream,
    /// Computed on the CPU from host memory.
    Cpu,
    /// Whichever the cost model predicts is faster.
    Auto,
}

impl Offload {
    pub fn parse(s: &str) -> Result<Offload> {
        match s {
            "stream" => Ok(Offload::Stream),
            "cpu" => Ok(Offload::Cpu),
            "auto" => Ok(Offload::Auto),
            _ => Err(Error::Invalid(format!(
                "--offload {s:?}: expected stream, cpu or auto"
            ))),
        }
    }
}

/// A rate the cost model uses and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rate {
    pub value: f64,
    /// `assumed: ...` or `measured ...`.
    pub source: String,
}

impl Rate {
    pub fn assumed(value: f64, what: &str) -> Rate {
        Rate {
            value,
            source: format!("assumed: {what}"),
        }
    }

    pub fn is_assumed(&self) -> bool {
        self.source.starts_with("assumed")
    }
}

/// Bandwidths (GB/s, 1e9 bytes) and compute rates the cost model uses.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rates {
    /// Device memory read bandwidth.
    pub device_gbs: Rate,
    /// Device matmul throughput on quantized weights, TFLOPS.
    pub device_tflops: Rate,
    /// Host-to-device copies from pinned memory.
    pub h2d_gbs: Rate,
    /// Host memory read bandwidth, all cores.
    pub host_gbs: Rate,
    /// CPU quantized matmul throughput, GFLOPS, for types without a measurement of their own.
    pub cpu_gflops: Rate,
    /// Measured CPU matmul throughput per weight type (GFLOPS), by ggml type name.
    pub cpu_gflops_by_type: BTreeMap<String, f64>,
    /// Device memory taken by the driver's context, outside the budget.
    pub context_overhead: u64,
    pub context_overhead_source: String,
}

impl Rates {
    /// The documented defaults, each marked as an assumption.
    pub fn assumed() -> Rates {
        Rates {
            device_gbs: Rate::assumed(360.0, "a typical 12 GB card (RTX 3060 12 GB, 360 GB/s)"),
            device_tflops: Rate::assumed(
                25.0,
                "a typical 12 GB card, 25 TFLOPS on quantized matmul",
            ),
            h2d_gbs: Rate::assumed(25.0, "PCIe 4.0 x16 from pinned memory, ~25 GB/s"),
            host_gbs: Rate::assumed(60.0, "dual-channel DDR5, ~60 GB/s"),
            cpu_gflops: Rate::assumed(600.0, "an 8-core desktop CPU with SIMD kernels, 600 GFLOPS"),
            cpu_gflops_by_type: BTreeMap::new(),
            context_overhead: ASSUMED_CONTEXT_OVERHEAD,
            context_overhead_source: "assumed: a CUDA context with strait's kernels, ~300 MiB"
                .into(),
        }
    }

    /// CPU matmul throughput for weights of type `ty`, FLOP/s.
    fn cpu_flops(&self, ty: GgmlType) -> f64 {
        let g = self
            .cpu_gflops_by_type
            .get(ty.name())
            .copied()
            .unwrap_or(self.cpu_gflops.value);
        g.max(1e-6) * 1e9
    }
}

/// Everything besides the model that decides a plan.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    /// Device bytes the plan may use.
    pub budget: u64,
    pub n_ctx: u64,
    pub n_ubatch: u64,
    pub kv: KvType,
    pub offload: Offload,
    pub rates: Rates,
}

// ---------------------------------------------------------------------------------------------
// Plan

/// Where a unit's weights are when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// Resident in the arena.
    Device,
    /// Copied into a slot before it runs.
    Stream,
    /// Computed on the CPU from host memory.
    Cpu,
}

/// What a device buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    Scratch,
    /// The KV cache of a layer.
    Kv(usize),
    /// The resident weights of a unit (layer index; the head is `n_layer`).
    Weights(usize),
    /// Streaming slot 0 or 1.
    Slot(usize),
}

/// One device buffer: a range of the arena.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Buffer {
    pub name: String,
    pub kind: BufferKind,
    pub offset: u64,
    pub bytes: u64,
}

/// One host buffer the placement allocates (the mapped weights are not counted: they are the
/// file).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostBuffer {
    pub name: String,
    pub bytes: u64,
    /// Page-locked, for copies to the device.
    pub pinned: bool,
}

/// Busy time of each resource over one pass, seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Busy {
    pub device_memory: f64,
    pub device_compute: f64,
    pub copies: f64,
    pub host_memory: f64,
    pub cpu_compute: f64,
}

/// Predicted time of one pass over the model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// Tokens in the pass (1 for decode, the ubatch for prefill).
    pub tokens: u64,
    pub seconds: f64,
    pub tokens_per_s: f64,
    /// The resource with the most busy time.
    pub bottleneck: String,
    pub busy: Busy,
}

/// What one more GiB of budget would buy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NextGib {
    pub more_resident_layers: i64,
    pub decode_tokens_per_s: f64,
    pub prefill_tokens_per_s: f64,
}

/// Where every byte goes, and how fast it will run.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub arch: String,
    pub budget: u64,
    pub n_ctx: u64,
    pub n_ubatch: u64,
    pub kv: KvType,
    pub offload_requested: Offload,
    /// What non-resident layers do (`None` when every layer is resident).
    pub offload: Option<Offload>,
    pub units: Vec<Unit>,
    /// The place of each unit: layers in order, then the head.
    pub placement: Vec<Place>,
    /// Bytes of each layer's KV cache (on the device, or on the host for CPU layers).
    pub kv_bytes: Vec<u64>,
    /// The arena, buffer by buffer.
    pub device: Vec<Buffer>,
    /// The arena size: the end of the last buffer. Never more than `budget`.
    pub device_total: u64,
    pub host: Vec<HostBuffer>,
    pub host_total: u64,
    /// Bytes of one streaming slot (0 when nothing streams).
    pub slot_bytes: u64,
    /// Non-resident weights, read from the mapped file.
    pub host_weight_bytes: u64,
    /// The token embedding table, read on the host.
    pub embd_bytes: u64,
    pub decode: Estimate,
    pub prefill: Estimate,
    pub rates: Rates,
    pub next_gib: Option<NextGib>,
}

impl Plan {
    pub fn n_layer(&self) -> usize {
        self.units.len() - 1
    }

    /// Layers resident on the device.
    pub fn resident_layers(&self) -> usize {
        self.placement[..self.n_layer()]
            .iter()
            .filter(|p| **p == Place::Device)
            .count()
    }

    pub fn buffer(&self, kind: BufferKind) -> Option<&Buffer> {
        self.device.iter().find(|b| b.kind == kind)
    }

    /// The arena range of a streaming slot.
    pub fn slot(&self, i: usize) -> Option<&Buffer> {
        self.buffer(BufferKind::Slot(i))
    }

    /// The arena range of a resident unit's weights.
    pub fn resident(&self, unit: usize) -> Option<&Buffer> {
        self.buffer(BufferKind::Weights(unit))
    }
}

/// One placement under consideration.
#[derive(Clone, Copy, Debug)]
struct Choice {
    mode: Offload,
    head_on_device: bool,
    resident: usize,
}

/// The buffers of a choice, before its speed is known.
struct Layout {
    placement: Vec<Place>,
    kv_bytes: Vec<u64>,
    device: Vec<Buffer>,
    device_total: u64,
    host: Vec<HostBuffer>,
    slot_bytes: u64,
}

/// Scratch buffers for a pass over `n_ubatch` tokens: the worst case of one micro-batch.
/// Attention runs one head at a time, so its score buffer holds one head's scores; the output
/// head turns the last position of the ubatch into logits.
fn scratch(shape: &ModelShape, n_ctx: u64, n_ubatch: u64) -> Result<Vec<(String, u64)>> {
    let ub = n_ubatch;
    let max_kv_heads = shape.n_head_kv.iter().copied().max().unwrap_or(0);
    let n_kv_max = (0..shape.n_layer())
        .map(|il| shape.kv_len(il, n_ctx, ub))
        .max()
        .unwrap_or(n_ctx);
    let q_width = mul(shape.n_head, shape.head_dim_k, "q width")?;
    let o_width = mul(shape.n_head, shape.head_dim_v, "attention output width")?;
    let widest = shape.n_embd.max(shape.n_ff).max(q_width).max(o_width);
    // Activations quantized to the weights' dot type: the largest of Q8_0, Q8_1, Q8_K rows.
    let dot_row = [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8K]
        .iter()
        .map(|t| {
            let bs = t.block_size() as u64;
            mul(widest.div_ceil(bs), t.type_size() as u64, "quantized row")
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let f32s = |n: u64, what: &str| -> Result<u64> { mul(mul(ub, n, what)?, 4, what) };
    Ok(vec![
        ("x (residual)".into(), f32s(shape.n_embd, "x")?),
        ("xb (normed)".into(), f32s(shape.n_embd.max(o_width), "xb")?),
        ("q".into(), f32s(q_width, "q")?),
        (
            "k".into(),
            f32s(mul(max_kv_heads, shape.head_dim_k, "k")?, "k")?,
        ),
        (
            "v".into(),
            f32s(mul(max_kv_heads, shape.head_dim_v, "v")?, "v")?,
        ),
        ("att (one head)".into(), f32s(n_kv_max, "att")?),
        ("hb (ffn gate)".into(), f32s(shape.n_ff, "hb")?),
        ("hb2 (ffn up)".into(), f32s(shape.n_ff, "hb2")?),
        ("xq (quantized)".into(), mul(ub, dot_row, "xq")?),
        // Generation needs the logits of the last position of a ubatch only.
        (
            "logits (last position)".into(),
            mul(shape.n_vocab, 4, "logits")?,
        ),
    ])
}

fn layout(shape: &ModelShape, req: &PlanRequest, c: Choice) -> Result<Layout> {
    let n = shape.n_layer();
    let (n_ctx, ub) = (req.n_ctx, req.n_ubatch);
    let off_place = if c.mode == Offload::Cpu {
        Place::Cpu
    } else {
        Place::Stream
    };
    let mut placement: Vec<Place> = (0..n)
        .map(|il| {
            if il < c.resident {
                Place::Device
            } else {
                off_place
            }
        })
        .collect();
    placement.push(if c.head_on_device {
        Place::Device
    } else {
        off_place
    });
    let units: Vec<&Unit> = shape.layers.iter().chain([&shape.head]).collect();

    let mut device = Vec::new();
    let mut end = 0u64;
    let mut push = |device: &mut Vec<Buffer>, name: String, kind, bytes: u64| -> Result<()> {
        let offset = end;
        end = align_up(add(offset, bytes, "arena")?);
        device.push(Buffer {
            name,
            kind,
            offset,
            bytes,
        });
        Ok(())
    };
    let mut host = Vec::new();
    let any_cpu = placement.contains(&Place::Cpu);
    for (name, bytes) in scratch(shape, n_ctx, ub)? {
        if any_cpu {
            host.push(HostBuffer {
                name: format!("cpu scratch {name}"),
                bytes,
                pinned: false,
            });
        }
        push(&mut device, name, BufferKind::Scratch, bytes)?;
    }
    let mut kv_bytes = Vec::with_capacity(n);
    for (il, (&heads, &place)) in shape.n_head_kv.iter().zip(&placement).enumerate() {
        let len = shape.kv_len(il, n_ctx, ub);
        let k = mul(
            len,
            req.kv.row_bytes(mul(heads, shape.head_dim_k, "k row")?)?,
            "kv",
        )?;
        let v = mul(
            len,
            req.kv.row_bytes(mul(heads, shape.head_dim_v, "v row")?)?,
            "kv",
        )?;
        let bytes = add(k, v, "kv")?;
        kv_bytes.push(bytes);
        let name = format!("kv blk.{il} ({len} positions)");
        if place == Place::Cpu {
            host.push(HostBuffer {
                name,
                bytes,
                pinned: false,
            });
        } else {
            push(&mut device, name, BufferKind::Kv(il), bytes)?;
        }
    }
    // The head first, then the layers: the head runs every token whatever the ubatch.
    let order = std::iter::once(n).chain(0..n);
    for u in order {
        if placement[u] == Place::Device {
            let unit = units[u];
            push(
                &mut device,
                format!("{} weights", unit.name),
                BufferKind::Weights(u),
                unit.bytes,
            )?;
        }
    }
    let slot_bytes = units
        .iter()
        .zip(&placement)
        .filter(|(_, p)| **p == Place::Stream)
        .map(|(u, _)| u.bytes)
        .max()
        .unwrap_or(0);
    if slot_bytes > 0 {
        for s in 0..2 {
            push(
                &mut device,
                format!("slot {s}"),
                BufferKind::Slot(s),
                slot_bytes,
            )?;
            host.push(HostBuffer {
                name: format!("staging {s}"),
                bytes: slot_bytes,
                pinned: true,
            });
        }
    }
    Ok(Layout {
        placement,
        kv_bytes,
        device,
        device_total: end,
        host,
        slot_bytes,
    })
}

/// Predicts one pass of `n_tokens` by simulating the two device queues the way the streaming
/// executor issues work: copy k+2 is issued after compute k (its slot's last user), compute k
/// waits for copy k; copies overlap compute.
fn estimate(shape: &ModelShape, req: &PlanRequest, placement: &[Place], n_tokens: u64) -> Estimate {
    let r = &req.rates;
    let dev_bw = r.device_gbs.value.max(1e-6) * 1e9;
    let dev_flops = r.device_tflops.value.max(1e-6) * 1e12;
    let h2d = r.h2d_gbs.value.max(1e-6) * 1e9;
    let host_bw = r.host_gbs.value.max(1e-6) * 1e9;
    let n = shape.n_layer();
    let units: Vec<&Unit> = shape.layers.iter().chain([&shape.head]).collect();
    let nt = n_tokens as f64;
    // Attention over a fresh context: token t attends to t+1 positions.
    let att_pairs = nt * (nt + 1.0) / 2.0;
    let att_flops = 2.0 * shape.n_head as f64 * (shape.head_dim_k + shape.head_dim_v) as f64;
    let mut busy = Busy::default();
    // Per unit: device time, CPU time, copy time.
    let per_unit: Vec<(f64, f64, f64)> = units
        .iter()
        .enumerate()
        .map(|(u, unit)| {
            // The head only turns the last position into logits.
            let toks = if u == n { 1.0 } else { nt };
            let att = if u == n { 0.0 } else { att_flops * att_pairs };
            let bytes = unit.bytes as f64;
            let flops = 2.0 * unit.matmul_params() as f64 * toks + att;
            let dev = (bytes / dev_bw).max(flops / dev_flops);
            let cpu_compute: f64 = unit
                .tensors
                .iter()
                .filter(|t| t.info.shape.len() >= 2)
                .map(|t| 2.0 * t.info.n_elements() as f64 * toks / r.cpu_flops(t.info.ty))
                .sum::<f64>()
                + att / r.cpu_flops(GgmlType::F32);
            let cpu = (bytes / host_bw).max(cpu_compute);
            (dev, cpu, bytes / h2d)
        })
        .collect();
    let cross = nt * shape.n_embd as f64 * 4.0 / h2d + TRANSFER_LATENCY_S;
    let streamed: Vec<usize> = (0..units.len())
        .filter(|&u| placement[u] == Place::Stream)
        .collect();
    let mut copy_done = vec![0.0f64; units.len()];
    let mut copy_free = 0.0f64;
    let mut slot_free = [0.0f64; 2];
    let issue_copy = |k: usize,
                      copy_free: &mut f64,
                      copy_done: &mut [f64],
                      slot_free: &[f64; 2],
                      busy: &mut Busy| {
        let u = streamed[k];
        let start = copy_free.max(slot_free[k % 2]);
        *copy_free = start + per_unit[u].2;
        copy_done[u] = *copy_free;
        busy.copies += per_unit[u].2;
    };
    for k in 0..streamed.len().min(2) {
        issue_copy(k, &mut copy_free, &mut copy_done, &slot_free, &mut busy);
    }
    let mut t = 0.0f64;
    let mut on_host = false;
    let mut next_stream = 0usize;
    for u in 0..units.len() {
        let (dev, cpu, _) = per_unit[u];
        let bytes = units[u].bytes as f64;
        let is_cpu = placement[u] == Place::Cpu;
        if is_cpu != on_host {
            t += cross;
            busy.copies += cross;
            on_host = is_cpu;
        }
        if is_cpu {
            t += cpu;
            let mem = bytes / host_bw;
            busy.host_memory += mem;
            busy.cpu_compute += cpu - mem;
            continue;
        }
        if placement[u] == Place::Stream {
            t = t.max(copy_done[u]);
        }
        t += dev;
        let mem = bytes / dev_bw;
        busy.device_memory += mem;
        busy.device_compute += dev - mem;
        if placement[u] == Place::Stream {
            slot_free[next_stream % 2] = t;
            if next_stream + 2 < streamed.len() {
                issue_copy(
                    next_stream + 2,
                    &mut copy_free,
                    &mut copy_done,
                    &slot_free,
                    &mut busy,
                );
            }
            next_stream += 1;
        }
    }
    if on_host {
        t += cross;
        busy.copies += cross;
    }
    let named = [
        (busy.device_memory, "device memory bandwidth"),
        (busy.device_compute, "device compute"),
        (busy.copies, "host-to-device copies"),
        (busy.host_memory, "host memory bandwidth (CPU layers)"),
        (busy.cpu_compute, "CPU compute (CPU layers)"),
    ];
    let bottleneck = named
        .iter()
        .fold((f64::MIN, ""), |a, b| if b.0 > a.0 { *b } else { a })
        .1
        .to_string();
    Estimate {
        tokens: n_tokens,
        seconds: t,
        tokens_per_s: if t > 0.0 { nt / t } else { f64::INFINITY },
        bottleneck,
        busy,
    }
}

fn check_request(shape: &ModelShape, req: &PlanRequest) -> Result<()> {
    if req.n_ctx == 0 || req.n_ctx > MAX_CTX {
        return Err(Error::Invalid(format!(
            "context length {} must be between 1 and {MAX_CTX}",
            req.n_ctx
        )));
    }
    if req.n_ubatch == 0 || req.n_ubatch > MAX_UBATCH {
        return Err(Error::Invalid(format!(
            "ubatch {} must be between 1 and {MAX_UBATCH}",
            req.n_ubatch
        )));
    }
    if shape.layers.is_empty() {
        return Err(Error::Invalid("the model has no layers".into()));
    }
    Ok(())
}

/// The modes a request allows.
fn modes(o: Offload) -> &'static [Offload] {
    match o {
        Offload::Stream => &[Offload::Stream],
        Offload::Cpu => &[Offload::Cpu],
        Offload::Auto => &[Offload::Stream, Offload::Cpu],
    }
}

/// The smallest arena over every placement the request allows.
fn min_total(shape: &ModelShape, req: &PlanRequest) -> Result<u64> {
    let mut best = u64::MAX;
    for &mode in modes(req.offload) {
        for head_on_device in [false, true] {
            for resident in 0..=shape.n_layer() {
                let c = Choice {
                    mode,
                    head_on_device,
                    resident,
                };
                best = best.min(layout(shape, req, c)?.device_total);
            }
        }
    }
    Ok(best)
}

/// The plan for one request, without the look at the next GiB.
fn plan_once(shape: &ModelShape, req: &PlanRequest) -> Result<Plan> {
    check_request(shape, req)?;
    let n = shape.n_layer();
    let mut best: Option<(f64, Choice, Layout, Estimate, Estimate)> = None;
    for &mode in modes(req.offload) {
        for head_on_device in [true, false] {
            // The most resident layers that fit (the total is not monotone in k: a layer that
            // becomes resident may shrink the slots, so every k is tried).
            let fit = (0..=n).rev().find_map(|resident| {
                let c = Choice {
                    mode,
                    head_on_device,
                    resident,
                };
                match layout(shape, req, c) {
                    Ok(l) if l.device_total <= req.budget => Some(Ok((c, l))),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            });
            let Some(fit) = fit else { continue };
            let (c, l) = fit?;
            let decode = estimate(shape, req, &l.placement, 1);
            let prefill = estimate(shape, req, &l.placement, req.n_ubatch);
            let cost = prefill.seconds + AUTO_DECODE_TOKENS as f64 * decode.seconds;
            if best.as_ref().is_none_or(|b| cost < b.0) {
                best = Some((cost, c, l, decode, prefill));
            }
        }
    }
    let Some((_, c, l, decode, prefill)) = best else {
        return Err(no_fit(shape, req)?);
    };
    Ok(build(shape, req, c, l, decode, prefill))
}

fn build(
    shape: &ModelShape,
    req: &PlanRequest,
    c: Choice,
    l: Layout,
    decode: Estimate,
    prefill: Estimate,
) -> Plan {
    let offloaded = l.placement.iter().any(|p| *p != Place::Device);
    let host_weight_bytes = shape
        .layers
        .iter()
        .chain([&shape.head])
        .zip(&l.placement)
        .filter(|(_, p)| **p != Place::Device)
        .map(|(u, _)| u.bytes)
        .sum();
    let host_total = l.host.iter().map(|h| h.bytes).sum();
    Plan {
        arch: shape.arch.clone(),
        budget: req.budget,
        n_ctx: req.n_ctx,
        n_ubatch: req.n_ubatch,
        kv: req.kv,
        offload_requested: req.offload,
        offload: offloaded.then_some(c.mode),
        units: shape.layers.iter().chain([&shape.head]).cloned().collect(),
        placement: l.placement,
        kv_bytes: l.kv_bytes,
        device: l.device,
        device_total: l.device_total,
        host: l.host,
        host_total,
        slot_bytes: l.slot_bytes,
        host_weight_bytes,
        embd_bytes: shape.embd_bytes,
        decode,
        prefill,
        rates: req.rates.clone(),
        next_gib: None,
    }
}

/// The plan of one placement: the first `resident` layers on the device, the head on the
/// device or not, every other unit streamed (`req.offload` is `Stream`) or on the CPU
/// (`Cpu`). An error when it does not fit the budget. (`plan` chooses the placement itself.)
pub fn plan_placement(
    shape: &ModelShape,
    req: &PlanRequest,
    resident: usize,
    head_on_device: bool,
) -> Result<Plan> {
    check_request(shape, req)?;
    if req.offload == Offload::Auto || resident > shape.n_layer() {
        return Err(Error::Invalid(format!(
            "a fixed placement needs --offload stream or cpu and at most {} resident layers",
            shape.n_layer()
        )));
    }
    let c = Choice {
        mode: req.offload,
        head_on_device,
        resident,
    };
    let l = layout(shape, req, c)?;
    if l.device_total > req.budget {
        return Err(Error::Invalid(format!(
            "{resident} resident layers need {} bytes, over the budget of {}",
            l.device_total, req.budget
        )));
    }
    let decode = estimate(shape, req, &l.placement, 1);
    let prefill = estimate(shape, req, &l.placement, req.n_ubatch);
    Ok(build(shape, req, c, l, decode, prefill))
}

/// The error when nothing fits: the smallest budget that works, and what would make this one
/// fit.
fn no_fit(shape: &ModelShape, req: &PlanRequest) -> Result<Error> {
    let need = min_total(shape, req)?;
    let mut msg = format!(
        "no plan fits a budget of {} ({} bytes) with a context of {} and a {} KV cache: \
         the smallest budget that works is {} ({need} bytes)",
        fmt_bytes(req.budget),
        req.budget,
        req.n_ctx,
        req.kv,
        fmt_bytes(need)
    );
    let mut fixes = Vec::new();
    if req.kv == KvType::F16 {
        let q = PlanRequest {
            kv: KvType::Q8_0,
            ..req.clone()
        };
        if let Some(need_q) = min_total(shape, &q).ok().filter(|&t| t < need) {
            let fits = if need_q <= req.budget {
                ", which fits"
            } else {
                ""
            };
            fixes.push(format!(
                "a q8_0 KV cache (--kv q8_0) needs {}{fits}",
                fmt_bytes(need_q)
            ));
        }
    }
    // The longest context that fits, in steps of 256 tokens (binary search: the minimum
    // total grows with the context).
    let fits_ctx = |ctx: u64| -> bool {
        let r = PlanRequest {
            n_ctx: ctx,
            n_ubatch: req.n_ubatch.min(ctx),
            ..req.clone()
        };
        min_total(shape, &r).is_ok_and(|t| t <= req.budget)
    };
    let (mut lo, mut hi) = (0u64, req.n_ctx / 256);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if mid > 0 && fits_ctx(mid * 256) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo > 0 {
        fixes.push(format!("a context of {} (-c {}) fits", lo * 256, lo * 256));
    }
    // Scratch grows with the ubatch: the largest power of two below it that fits.
    let mut ub = req.n_ubatch.next_power_of_two() / 2;
    while ub >= 1 {
        let r = PlanRequest {
            n_ubatch: ub,
            ..req.clone()
        };
        if min_total(shape, &r).is_ok_and(|t| t <= req.budget) {
            fixes.push(format!("a ubatch of {ub} (--ubatch {ub}) fits"));
            break;
        }
        ub /= 2;
    }
    if !fixes.is_empty() {
        let _ = write!(msg, "; {}", fixes.join("; "));
    }
    Ok(Error::Invalid(msg))
}

/// Plans a model under a request: see the module documentation.
pub fn plan(shape: &ModelShape, req: &PlanRequest) -> Result<Plan> {
    let mut p = plan_once(shape, req)?;
    if p.placement.iter().any(|pl| *pl != Place::Device) {
        let more = PlanRequest {
            budget: req.budget.saturating_add(GIB),
            ..req.clone()
        };
        if let Ok(q) = plan_once(shape, &more) {
            p.next_gib = Some(NextGib {
                more_resident_layers: q.resident_layers() as i64 - p.resident_layers() as i64,
                decode_tokens_per_s: q.decode.tokens_per_s,
                prefill_tokens_per_s: q.prefill.tokens_per_s,
            });
        }
    }
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// Printing

fn place_name(p: Place) -> &'static str {
    match p {
        Place::Device => "device",
        Place::Stream => "stream",
        Place::Cpu => "cpu",
    }
}

impl Plan {
    /// Two lines: the placement and arena, the predicted speed.
    pub fn summary(&self) -> String {
        let n = self.n_layer();
        let count = |p: Place| self.placement[..n].iter().filter(|x| **x == p).count();
        let head = place_name(self.placement[n]);
        format!(
            "plan: {} of {n} layers resident, {} streamed, {} on the CPU, output head {head}; \
             arena {} of a {} budget (+{} device context)\n\
             predicted: prefill {:.1} tokens/s ({}), decode {:.1} tokens/s ({})",
            count(Place::Device),
            count(Place::Stream),
            count(Place::Cpu),
            fmt_bytes(self.device_total),
            fmt_bytes(self.budget),
            fmt_bytes(self.rates.context_overhead),
            self.prefill.tokens_per_s,
            self.prefill.bottleneck,
            self.decode.tokens_per_s,
            self.decode.bottleneck
        )
    }

    /// The plan as a table: layers (runs of equal layers folded), buffers, totals, speed.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let n = self.n_layer();
        let _ = writeln!(
            s,
            "{}: {} layers, context {}, ubatch {}, KV {}, budget {} ({} bytes)",
            self.arch,
            n,
            self.n_ctx,
            self.n_ubatch,
            self.kv,
            fmt_bytes(self.budget),
            self.budget
        );
        let _ = writeln!(
            s,
            "\n{:<16} {:<7} {:>14} {:>12} {:>14}",
            "layers", "place", "weights", "kv cache", "device bytes"
        );
        let mut i = 0;
        while i < n {
            let key = (self.placement[i], self.units[i].bytes, self.kv_bytes[i]);
            let mut j = i + 1;
            while j < n && (self.placement[j], self.units[j].bytes, self.kv_bytes[j]) == key {
                j += 1;
            }
            let count = (j - i) as u64;
            let label = if j - i == 1 {
                format!("blk.{i}")
            } else {
                format!("blk.{i}-{}", j - 1)
            };
            let kv_on_dev = key.0 != Place::Cpu;
            let w_on_dev = key.0 == Place::Device;
            let dev = count * (u64::from(w_on_dev) * key.1 + u64::from(kv_on_dev) * key.2);
            let _ = writeln!(
                s,
                "{:<16} {:<7} {:>14} {:>12} {:>14}",
                label,
                place_name(key.0),
                format!("{}x {}", count, fmt_bytes(key.1)),
                fmt_bytes(key.2),
                dev
            );
            i = j;
        }
        let head = &self.units[n];
        let _ = writeln!(
            s,
            "{:<16} {:<7} {:>14} {:>12} {:>14}",
            "output",
            place_name(self.placement[n]),
            fmt_bytes(head.bytes),
            "-",
            if self.placement[n] == Place::Device {
                head.bytes
            } else {
                0
            }
        );
        let sum_kind = |f: &dyn Fn(&BufferKind) -> bool| -> u64 {
            self.device
                .iter()
                .filter(|b| f(&b.kind))
                .map(|b| align_up(b.bytes))
                .sum()
        };
        let _ = writeln!(s, "\ndevice arena (each buffer aligned to {ALIGN} bytes):");
        for (label, total) in [
            (
                "scratch (activations)",
                sum_kind(&|k| matches!(k, BufferKind::Scratch)),
            ),
            ("kv cache", sum_kind(&|k| matches!(k, BufferKind::Kv(_)))),
            (
                "resident weights",
                sum_kind(&|k| matches!(k, BufferKind::Weights(_))),
            ),
            (
                "streaming slots (2)",
                sum_kind(&|k| matches!(k, BufferKind::Slot(_))),
            ),
        ] {
            let _ = writeln!(s, "  {label:<24} {:>12} {total:>14}", fmt_bytes(total));
        }
        let _ = writeln!(
            s,
            "  {:<24} {:>12} {:>14}   of {} budget, {} left",
            "total",
            fmt_bytes(self.device_total),
            self.device_total,
            fmt_bytes(self.budget),
            fmt_bytes(self.budget - self.device_total)
        );
        let _ = writeln!(
            s,
            "  device context overhead {} outside the budget ({})",
            fmt_bytes(self.rates.context_overhead),
            self.rates.context_overhead_source
        );
        let pinned: u64 = self.host.iter().filter(|h| h.pinned).map(|h| h.bytes).sum();
        let _ = writeln!(
            s,
            "token embeddings stay on the host (rows gathered per ubatch): {}",
            fmt_bytes(self.embd_bytes)
        );
        let _ = writeln!(
            s,
            "host: {} of weights read from the file, {} pinned staging, {} other buffers",
            fmt_bytes(self.host_weight_bytes),
            fmt_bytes(pinned),
            fmt_bytes(self.host_total - pinned)
        );
        let mode = match self.offload {
            None => "every layer resident".to_string(),
            Some(m) => format!(
                "non-resident layers: {} (--offload {})",
                place_name(if m == Offload::Cpu {
                    Place::Cpu
                } else {
                    Place::Stream
                }),
                match self.offload_requested {
                    Offload::Auto => "auto",
                    Offload::Stream => "stream",
                    Offload::Cpu => "cpu",
                }
            ),
        };
        let _ = writeln!(s, "\n{mode}");
        for (name, e) in [("prefill", &self.prefill), ("decode", &self.decode)] {
            let _ = writeln!(
                s,
                "predicted {name:<7} {:>9.1} tokens/s ({} tokens in {:.3} s), bottleneck: {}",
                e.tokens_per_s, e.tokens, e.seconds, e.bottleneck
            );
        }
        if let Some(g) = &self.next_gib {
            let _ = writeln!(
                s,
                "one more GiB: {:+} resident layers, prefill {:.1} tokens/s, decode {:.1} tokens/s",
                g.more_resident_layers, g.prefill_tokens_per_s, g.decode_tokens_per_s
            );
        }
        let r = &self.rates;
        let _ = writeln!(s, "\nrates used:");
        for (label, rate, unit) in [
            ("device memory", &r.device_gbs, "GB/s"),
            ("device compute", &r.device_tflops, "TFLOPS"),
            ("host-to-device", &r.h2d_gbs, "GB/s"),
            ("host memory", &r.host_gbs, "GB/s"),
            ("CPU matmul", &r.cpu_gflops, "GFLOPS"),
        ] {
            let _ = writeln!(
                s,
                "  {label:<15} {:>8.1} {unit:<6} {}",
                rate.value, rate.source
            );
        }
        for (ty, g) in &r.cpu_gflops_by_type {
            let _ = writeln!(s, "  CPU matmul {ty:<5}{:>7.1} GFLOPS measured", g);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_with_units_and_percentages() {
        assert_eq!(
            Budget::parse("11.5GiB").unwrap(),
            Budget::Bytes(11 * GIB + GIB / 2)
        );
        assert_eq!(
            Budget::parse("12000MB").unwrap(),
            Budget::Bytes(12_000_000_000)
        );
        assert_eq!(Budget::parse(" 512 MiB").unwrap(), Budget::Bytes(512 * MIB));
        assert_eq!(Budget::parse("90%").unwrap(), Budget::Percent(90.0));
        for bad in ["12", "12G", "abc", "-1GiB", "0%", "101%", "1e99GB", ""] {
            assert!(Budget::parse(bad).is_err(), "{bad}");
        }
        let e = Budget::Percent(90.0).resolve(None).unwrap_err().to_string();
        assert!(e.contains("no GPU"), "{e}");
        assert_eq!(Budget::Percent(50.0).resolve(Some(1000)).unwrap(), 500);
    }

    fn t(name: &str, shape: &[u64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            ty: GgmlType::F32,
            shape: shape.to_vec(),
            offset: 0,
            size: shape.iter().product::<u64>() * 4,
            shard: 0,
        }
    }

    /// Hostile hyperparameters give errors (or valid plans), never a panic.
    #[test]
    fn hostile_headers_are_errors() {
        use crate::gguf::Value;
        let tensors = vec![
            t("token_embd.weight", &[64, 10]),
            t("blk.0.attn_q.weight", &[64, 64]),
            t("blk.1.attn_q.weight", &[64, 64]),
        ];
        let keys = [
            "block_count",
            "embedding_length",
            "attention.head_count",
            "attention.head_count_kv",
            "attention.key_length",
            "attention.value_length",
            "attention.sliding_window",
            "feed_forward_length",
        ];
        let values = [0u64, 1, 2, 3, 31, 1 << 20, u32::MAX as u64, u64::MAX];
        let base = |md: &mut Metadata| {
            md.set("general.architecture", Value::String("gemma3".into()));
            md.set("gemma3.block_count", Value::U32(2));
            md.set("gemma3.embedding_length", Value::U32(64));
            md.set("gemma3.attention.head_count", Value::U32(4));
        };
        let mut ok = 0;
        for key in keys {
            for &v in &values {
                let mut md = Metadata::new();
                base(&mut md);
                md.set(format!("gemma3.{key}"), Value::U64(v));
                let Ok(shape) = ModelShape::from_header(&md, &tensors) else {
                    continue;
                };
                for kv in [KvType::F16, KvType::Q8_0] {
                    let req = PlanRequest {
                        budget: GIB,
                        n_ctx: MAX_CTX,
                        n_ubatch: 512,
                        kv,
                        offload: Offload::Auto,
                        rates: Rates::assumed(),
                    };
                    if let Ok(p) = plan(&shape, &req) {
                        assert!(p.device_total <= GIB);
                        let _ = p.table();
                        ok += 1;
                    }
                }
            }
        }
        assert!(ok > 0, "no header planned at all");
        let mut md = Metadata::new();
        base(&mut md);
        md.set(
            "gemma3.attention.head_count_kv",
            Value::Array(crate::gguf::Array::U32(vec![1, 2, 3])),
        );
        let e = ModelShape::from_header(&md, &tensors)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 entries for 2 layers"), "{e}");
        let mut md = Metadata::new();
        base(&mut md);
        let bad = vec![
            t("token_embd.weight", &[64, 10]),
            t("blk.7.attn_q.weight", &[64]),
        ];
        let e = ModelShape::from_header(&md, &bad).unwrap_err().to_string();
        assert!(e.contains("blk.7.attn_q.weight"), "{e}");
    }
}
