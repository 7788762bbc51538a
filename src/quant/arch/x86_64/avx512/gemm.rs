//! Batched dot products: 16 weight rows in the 16 lanes of a register, 4 activation vectors
//! per step. A group of 16 rows is unpacked once into bytes interleaved four per row (as ggml's
//! repacked `gemm` kernels lay them out), so one `vpdpbusd` with a broadcast activation word
//! advances 16 rows; the unpacking is shared by every vector of the batch, and each activation
//! word by 16 rows.
//!
//! Three families:
//! - blocks of 32 with one scale (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) against Q8_0/Q8_1:
//!   weights are the signed values, activations are offset by 128 to be unsigned (`prepare`
//!   does it once per matmul) and `-128 * sum(w)` per row and block starts the integer sum, so
//!   every block sum equals `sum(w * y)` exactly;
//! - super-blocks of 256 with integer sub-block scales (Q2_K..Q6_K, IQ4_XS) against Q8_K:
//!   weights unsigned (`q + 32` for Q6_K, ...), each sub-block sum times its scale summed in
//!   32 bits, and the mins (or the offsets times the scales) against Q8_K's 16-value sums with
//!   `vpdpwssd`, as ggml's dot products do; two floats per super-block;
//! - F16, BF16 and F32, converted to f32 16 rows per register, against f32 activations with
//!   `vfmadd` (the products of F16/BF16 values are exact in f32).
//!
//! The integer sums are those of the scalar dot products; only the float summation order
//! differs.

use crate::quant::blocks::F16;
use crate::quant::iq4::{BlockIq4Xs, KVALUES_IQ4NL};
use crate::quant::kquants::{
    q3k_values, q4k_values, q5k_values, q6k_values, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K,
    BlockQ6K,
};
use crate::quant::{GgmlType, QK_K};
use std::arch::x86_64::*;

/// Rows per group.
pub const ROWS: usize = 16;

// Batches from which the batched kernels beat one `vec_dot` per output on a 576x1536 matrix,
// one thread (`benches/matmul.rs`).
const LEGACY_MIN_BATCH: usize = 4;
const K_MIN_BATCH: usize = 8;
const FLOAT_MIN_BATCH: usize = 16;
/// Activation vectors per kernel pass: `WIDE` while that many are left, then `COLS`. More
/// vectors per pass reuse each unpacked weight register more (B = 128: 4 -> 8 is 10-20%
/// faster), fewer waste less on a small batch.
const WIDE: usize = 8;
const COLS: usize = 4;

/// `put(c, &out)`: `out[r] = dot(w row r, a row c)` for `r < nr`, every `c < nc`; rows are
/// `wrow` and `arow` bytes apart, `w` holds `nr` rows and `a` `nc` activation rows (prepared by
/// [`Gemm::prepare`] where the kernel has one, else of the weights' dot type). Returns false,
/// having called `put` for nothing, when the shapes are not ones it handles (more than 16
/// rows, rows that are not whole blocks, buffers too short): the caller then computes those
/// rows another way.
pub type GemmFn = fn(
    cols: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    a: &[u8],
    arow: usize,
    nc: usize,
    put: &mut dyn FnMut(usize, &[f32]),
) -> bool;

/// Rewrites one quantized activation row (`cols` values of the dot type) into the form the
/// kernel reads; false when the lengths do not fit.
pub type PrepareFn = fn(cols: usize, xq: &[u8], dst: &mut [u8]) -> bool;

/// A batched kernel and, where it reads activations in its own form, how to make them.
#[derive(Clone, Copy)]
pub struct Gemm {
    pub run: GemmFn,
    pub prepare: Option<PrepareFn>,
    /// Bytes of one prepared activation row of so many values.
    prep_bytes: fn(usize) -> usize,
    /// The smallest batch for which unpacking a group once beats one `vec_dot` per output.
    pub min_batch: usize,
}

impl Gemm {
    /// Bytes of one prepared activation row of `cols` values (0 without `prepare`).
    pub fn prepared_bytes(&self, cols: usize) -> usize {
        match self.prepare {
            Some(_) => (self.prep_bytes)(cols),
            None => 0,
        }
    }
}

/// The batched kernel of `ty` when the avx512 path is the selected one.
pub fn gemm(ty: GgmlType) -> Option<Gemm> {
    if crate::quant::arch::selected() != crate::quant::arch::Path::Avx512
        || !super::super::has_avx512()
    {
        return None;
    }
    let legacy = |run: GemmFn| Gemm {
        run,
        prepare: Some(prepare),
        prep_bytes: |cols| cols / 32 * PREP_BLOCK,
        min_batch: LEGACY_MIN_BATCH,
    };
    let k = |run: GemmFn| Gemm {
        run,
        prepare: None,
        prep_bytes: |_| 0,
        min_batch: K_MIN_BATCH,
    };
    let float = |run: GemmFn, prepare: PrepareFn| Gemm {
        run,
        prepare: Some(prepare),
        prep_bytes: |cols| cols * 4,
        min_batch: FLOAT_MIN_BATCH,
    };
    // Non-capturing closures, so that each is a plain `fn` of the kernel for one format.
    Some(match ty {
        GgmlType::Q4_0 => legacy(|c, w, wr, nr, a, ar, nc, p| {
            legacy_gemm::<false>(Legacy::Q4_0, c, w, wr, nr, a, ar, nc, p)
        }),
        GgmlType::Q4_1 => legacy(|c, w, wr, nr, a, ar, nc, p| {
            legacy_gemm::<true>(Legacy::Q4_1, c, w, wr, nr, a, ar, nc, p)
        }),
        GgmlType::Q5_0 => legacy(|c, w, wr, nr, a, ar, nc, p| {
            legacy_gemm::<false>(Legacy::Q5_0, c, w, wr, nr, a, ar, nc, p)
        }),
        GgmlType::Q5_1 => legacy(|c, w, wr, nr, a, ar, nc, p| {
            legacy_gemm::<true>(Legacy::Q5_1, c, w, wr, nr, a, ar, nc, p)
        }),
        GgmlType::Q8_0 => legacy(|c, w, wr, nr, a, ar, nc, p| {
            legacy_gemm::<false>(Legacy::Q8_0, c, w, wr, nr, a, ar, nc, p)
        }),
        GgmlType::IQ4NL => legacy(|c, w, wr, nr, a, ar, nc, p| {
            legacy_gemm::<false>(Legacy::Iq4Nl, c, w, wr, nr, a, ar, nc, p)
        }),
        GgmlType::Q2K => {
            k(|c, w, wr, nr, a, ar, nc, p| k_gemm::<16>(KFormat::Q2K, c, w, wr, nr, a, ar, nc, p))
        }
        GgmlType::Q3K => {
            k(|c, w, wr, nr, a, ar, nc, p| k_gemm::<16>(KFormat::Q3K, c, w, wr, nr, a, ar, nc, p))
        }
        GgmlType::Q4K => {
            k(|c, w, wr, nr, a, ar, nc, p| k_gemm::<32>(KFormat::Q4K, c, w, wr, nr, a, ar, nc, p))
        }
        GgmlType::Q5K => {
            k(|c, w, wr, nr, a, ar, nc, p| k_gemm::<32>(KFormat::Q5K, c, w, wr, nr, a, ar, nc, p))
        }
        GgmlType::Q6K => {
            k(|c, w, wr, nr, a, ar, nc, p| k_gemm::<16>(KFormat::Q6K, c, w, wr, nr, a, ar, nc, p))
        }
        GgmlType::IQ4XS => {
            k(
                |c, w, wr, nr, a, ar, nc, p| {
                    k_gemm::<32>(KFormat::Iq4Xs, c, w, wr, nr, a, ar, nc, p)
                },
            )
        }
        GgmlType::F16 => float(
            |c, w, wr, nr, a, ar, nc, p| float_gemm(Float::F16, false, c, w, wr, nr, a, ar, nc, p),
            |cols, x, dst| prepare_float(Float::F16, cols, x, dst),
        ),
        // BF16 pairs straight into `vdpbf16ps`, as the BF16 dot product does where it can:
        // a gathered word is a pair of values of one row, a broadcast word the same pair of an
        // activation row; like that dot product, subnormal inputs and products count as zero.
        GgmlType::BF16 if is_x86_feature_detected!("avx512bf16") => Gemm {
            run: |c, w, wr, nr, a, ar, nc, p| {
                float_gemm(Float::BF16, true, c, w, wr, nr, a, ar, nc, p)
            },
            prepare: None,
            prep_bytes: |_| 0,
            min_batch: FLOAT_MIN_BATCH,
        },
        GgmlType::BF16 => float(
            |c, w, wr, nr, a, ar, nc, p| float_gemm(Float::BF16, false, c, w, wr, nr, a, ar, nc, p),
            |cols, x, dst| prepare_float(Float::BF16, cols, x, dst),
        ),
        GgmlType::F32 => float(
            |c, w, wr, nr, a, ar, nc, p| float_gemm(Float::F32, false, c, w, wr, nr, a, ar, nc, p),
            |cols, x, dst| prepare_float(Float::F32, cols, x, dst),
        ),
        _ => return None,
    })
}

fn f16(p: &[u8]) -> f32 {
    F16([p[0], p[1]]).to_f32()
}

/// Buffers of one thread, grown to the largest shape seen and reused, so that a matmul
/// allocates nothing once its first call has run.
#[derive(Default)]
struct Scratch {
    wf: Vec<f32>,
    acc: Vec<f32>,
    wq: Vec<u8>,
    wi: Vec<i32>,
    wm: Vec<i32>,
    dw: Vec<f32>,
    mw: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// The first `n` elements of `v`, growing it only when it is shorter. Every element the
/// caller reads is written first, so stale values from an earlier call are never seen.
fn prefix<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}

/// Row `j` of a group: four bytes of word `g` at `(g * 16 + j) * 4`.
#[inline(always)]
fn interleave(dst: &mut [u8], j: usize, vals: &[u8]) {
    for (g, word) in vals.chunks_exact(4).enumerate() {
        let o = (g * ROWS + j) * 4;
        dst[o..o + 4].copy_from_slice(word);
    }
}

// ---------------------------------------------------------------------------------------------
// Blocks of 32 against Q8_0 / Q8_1.

/// A prepared activation block: d (f32), the Q8_1 sum `s` (f32, 0 for Q8_0), 32 bytes `q + 128`.
const PREP_BLOCK: usize = 40;

/// Q8_0 (34-byte) or Q8_1 (36-byte) blocks, told apart by the row length, into
/// [`PREP_BLOCK`]s.
fn prepare(cols: usize, xq: &[u8], dst: &mut [u8]) -> bool {
    let nb = cols / 32;
    if !cols.is_multiple_of(32) || dst.len() < nb * PREP_BLOCK {
        return false;
    }
    let (bs, qo) = if xq.len() == nb * 34 {
        (34, 2)
    } else if xq.len() == nb * 36 {
        (36, 4)
    } else {
        return false;
    };
    for (blk, out) in xq.chunks_exact(bs).zip(dst.chunks_exact_mut(PREP_BLOCK)) {
        out[..4].copy_from_slice(&f16(blk).to_le_bytes());
        let s = if qo == 4 { f16(&blk[2..]) } else { 0.0 };
        out[4..8].copy_from_slice(&s.to_le_bytes());
        for (o, &q) in out[8..].iter_mut().zip(&blk[qo..qo + 32]) {
            *o = q ^ 0x80;
        }
    }
    true
}

#[derive(Clone, Copy)]
enum Legacy {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Iq4Nl,
}

impl Legacy {
    fn block_bytes(self) -> usize {
        match self {
            Legacy::Q4_0 | Legacy::Iq4Nl => 18,
            Legacy::Q4_1 => 20,
            Legacy::Q5_0 => 22,
            Legacy::Q5_1 => 24,
            Legacy::Q8_0 => 34,
        }
    }

    /// The 32 signed values of a block in value order, its scale and its min.
    #[inline(always)]
    fn unpack(self, blk: &[u8], v: &mut [i8; 32]) -> (f32, f32) {
        fn nib(qs: &[u8], v: &mut [i8; 32], f: impl Fn(u8) -> i8) {
            for k in 0..16 {
                v[k] = f(qs[k] & 0xF);
                v[16 + k] = f(qs[k] >> 4);
            }
        }
        fn high(qh: &[u8], v: &mut [i8; 32]) {
            let h = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
            for (k, x) in v.iter_mut().enumerate() {
                *x |= (((h >> k) & 1) << 4) as i8;
            }
        }
        match self {
            Legacy::Q4_0 => {
                nib(&blk[2..18], v, |q| q as i8 - 8);
                (f16(blk), 0.0)
            }
            Legacy::Iq4Nl => {
                nib(&blk[2..18], v, |q| KVALUES_IQ4NL[q as usize]);
                (f16(blk), 0.0)
            }
            Legacy::Q4_1 => {
                nib(&blk[4..20], v, |q| q as i8);
                (f16(blk), f16(&blk[2..]))
            }
            Legacy::Q5_0 => {
                nib(&blk[6..22], v, |q| q as i8);
                high(&blk[2..6], v);
                for x in v.iter_mut() {
                    *x -= 16;
                }
                (f16(blk), 0.0)
            }
            Legacy::Q5_1 => {
                nib(&blk[8..24], v, |q| q as i8);
                high(&blk[4..8], v);
                (f16(blk), f16(&blk[2..]))
            }
            Legacy::Q8_0 => {
                for (x, &q) in v.iter_mut().zip(&blk[2..34]) {
                    *x = q as i8;
                }
                (f16(blk), 0.0)
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn legacy_gemm<const MIN: bool>(
    ty: Legacy,
    cols: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    a: &[u8],
    arow: usize,
    nc: usize,
    put: &mut dyn FnMut(usize, &[f32]),
) -> bool {
    let bs = ty.block_bytes();
    let nb = cols / 32;
    if !cols.is_multiple_of(32) || nb == 0 || nr == 0 || nc == 0 || nr > ROWS {
        return false;
    }
    if wrow < nb * bs
        || arow < nb * PREP_BLOCK
        || w.len() < (nr - 1) * wrow + nb * bs
        || a.len() < (nc - 1) * arow + nb * PREP_BLOCK
    {
        return false;
    }
    SCRATCH.with(|scratch| {
        let s = &mut *scratch.borrow_mut();
        let wq = prefix(&mut s.wq, nb * 8 * ROWS * 4);
        let start = prefix(&mut s.wi, nb * ROWS);
        let dw = prefix(&mut s.dw, nb * ROWS);
        let mw = prefix(&mut s.mw, nb * ROWS);
        if ROWS * wrow < i32::MAX as usize {
            // SAFETY: the CPU runs these instructions (see below); `w` holds `nr` rows of `nb`
            // blocks (checked above) and the scratch slices `nb` groups.
            unsafe { legacy_unpack_simd(ty, nb, w, wrow, nr, wq, start, dw, mw) };
        } else {
            legacy_unpack(ty, nb, w, wrow, nr, wq, start, dw, mw);
        }
        let w = LegacyUnpacked::<MIN> {
            nb,
            wq,
            start,
            dw,
            mw,
        };
        passes(&w, a, arow, nc, nr, put);
    });
    true
}

/// A group of 16 rows unpacked for its family's kernel.
trait Unpacked {
    /// Bytes of one activation row that the kernel reads.
    fn act_bytes(&self) -> usize;
    /// `res[k] = the 16 rows against ya[k]`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL/VNNI, and every `ya` slice holds `act_bytes()` bytes.
    unsafe fn kernel<const C: usize>(&self, ya: [&[u8]; C], res: &mut [[f32; ROWS]; C]);
}

/// Every activation vector against the unpacked group, `WIDE` at a time while that many are
/// left, then `COLS`.
fn passes<U: Unpacked>(
    u: &U,
    a: &[u8],
    arow: usize,
    nc: usize,
    nr: usize,
    put: &mut dyn FnMut(usize, &[f32]),
) {
    let mut c0 = 0;
    while c0 < nc {
        c0 += if nc - c0 >= WIDE {
            pass::<U, WIDE>(u, a, arow, nc, c0, nr, put)
        } else {
            pass::<U, COLS>(u, a, arow, nc, c0, nr, put)
        };
    }
}

/// Activation vectors `c0 .. c0 + C` (the last one standing in for those past `nc`) against
/// the unpacked group; returns `C`.
fn pass<U: Unpacked, const C: usize>(
    u: &U,
    a: &[u8],
    arow: usize,
    nc: usize,
    c0: usize,
    nr: usize,
    put: &mut dyn FnMut(usize, &[f32]),
) -> usize {
    let mut res = [[0f32; ROWS]; C];
    let ya: [&[u8]; C] =
        std::array::from_fn(|k| &a[(c0 + k).min(nc - 1) * arow..][..u.act_bytes()]);
    // SAFETY: `gemm` hands these kernels out only when the CPU has AVX-512 F/BW/VL/VNNI;
    // every slice holds `act_bytes()` (cut above, from rows the callers checked).
    unsafe { u.kernel(ya, &mut res) };
    for (k, col) in res.iter().enumerate().take(nc - c0) {
        put(c0 + k, &col[..nr]);
    }
    C
}

/// A group of 16 rows as `legacy_unpack` leaves it.
struct LegacyUnpacked<'a, const MIN: bool> {
    nb: usize,
    wq: &'a [u8],
    start: &'a [i32],
    dw: &'a [f32],
    mw: &'a [f32],
}

impl<const MIN: bool> Unpacked for LegacyUnpacked<'_, MIN> {
    fn act_bytes(&self) -> usize {
        self.nb * PREP_BLOCK
    }
    unsafe fn kernel<const C: usize>(&self, ya: [&[u8]; C], res: &mut [[f32; ROWS]; C]) {
        legacy_kernel::<MIN, C>(self.nb, self.wq, self.start, self.dw, self.mw, ya, res)
    }
}

/// A group of 16 rows into the kernel's layout: values interleaved by word, and per row and
/// block the start `-128 * sum(v)`, the scale and the min. Rows past `nr` repeat the last one;
/// their sums are computed and dropped.
#[allow(clippy::too_many_arguments)]
fn legacy_unpack(
    ty: Legacy,
    nb: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    wq: &mut [u8],
    start: &mut [i32],
    dw: &mut [f32],
    mw: &mut [f32],
) {
    let bs = ty.block_bytes();
    for j in 0..ROWS {
        let row = &w[j.min(nr - 1) * wrow..][..nb * bs];
        for (b, blk) in row.chunks_exact(bs).enumerate() {
            let mut v = [0i8; 32];
            let (d, m) = ty.unpack(blk, &mut v);
            dw[b * ROWS + j] = d;
            mw[b * ROWS + j] = m;
            start[b * ROWS + j] = -128 * v.iter().map(|&x| x as i32).sum::<i32>();
            interleave(&mut wq[b * 512..][..512], j, bytemuck::cast_slice(&v));
        }
    }
}

/// [`legacy_unpack`] with gathers: each word of a block is one 16-row gather from the
/// quantized rows, so the group needs no transposition.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI and F16C; `w` must hold `nr` rows `wrow` bytes
/// apart of `nb` blocks each, `wrow * 16` must fit an i32, `wq` must hold `nb * 512` bytes and
/// `start`, `dw`, `mw` `nb * 16` values.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn legacy_unpack_simd(
    ty: Legacy,
    nb: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    wq: &mut [u8],
    start: &mut [i32],
    dw: &mut [f32],
    mw: &mut [f32],
) {
    let bs = ty.block_bytes();
    let rows: [i32; ROWS] = std::array::from_fn(|j| (j.min(nr - 1) * wrow) as i32);
    let idx = _mm512_loadu_si512(rows.as_ptr() as *const _);
    let low4 = _mm512_set1_epi8(0x0F);
    let ones = _mm512_set1_epi8(1);
    let table = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const _));
    let half = |v: __m512i| _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
    for b in 0..nb {
        // Every gathered word lies inside block b of a row below `nr` (offsets < bs - 3).
        let p = w.as_ptr().add(b * bs);
        let gather = |off: usize| _mm512_i32gather_epi32::<1>(idx, p.add(off) as *const _);
        let head = gather(0);
        _mm512_storeu_ps(dw.as_mut_ptr().add(b * ROWS), half(head));
        let (qs, qh) = match ty {
            Legacy::Q4_1 => (4, None),
            Legacy::Q5_0 => (6, Some(2)),
            Legacy::Q5_1 => (8, Some(4)),
            _ => (2, None),
        };
        let min = match ty {
            Legacy::Q4_1 | Legacy::Q5_1 => half(_mm512_srli_epi32::<16>(head)),
            _ => _mm512_setzero_ps(),
        };
        _mm512_storeu_ps(mw.as_mut_ptr().add(b * ROWS), min);
        let mut words = [_mm512_setzero_si512(); 8];
        if let Legacy::Q8_0 = ty {
            for (g, x) in words.iter_mut().enumerate() {
                *x = gather(2 + 4 * g);
            }
        } else {
            for g in 0..4 {
                let raw = gather(qs + 4 * g);
                words[g] = _mm512_and_si512(raw, low4);
                words[g + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), low4);
            }
        }
        if let Some(off) = qh {
            // Bit k of qh is bit 4 of value k: spread four bits to four bytes with one
            // multiply (the shifted copies do not overlap, so nothing carries).
            let h = gather(off);
            for (g, x) in words.iter_mut().enumerate() {
                let t = _mm512_and_si512(
                    _mm512_srl_epi32(h, _mm_cvtsi32_si128(4 * g as i32)),
                    _mm512_set1_epi32(0xF),
                );
                let spread = _mm512_and_si512(
                    _mm512_mullo_epi32(t, _mm512_set1_epi32(0x0020_4081)),
                    _mm512_set1_epi32(0x0101_0101),
                );
                *x = _mm512_or_si512(*x, _mm512_slli_epi32::<4>(spread));
            }
        }
        let offset = match ty {
            Legacy::Q4_0 => 8,
            Legacy::Q5_0 => 16,
            _ => 0,
        };
        let mut sum = _mm512_setzero_si512();
        for (g, x) in words.iter_mut().enumerate() {
            if let Legacy::Iq4Nl = ty {
                *x = _mm512_shuffle_epi8(table, *x);
            } else if offset != 0 {
                *x = _mm512_sub_epi8(*x, _mm512_set1_epi8(offset));
            }
            sum = _mm512_dpbusd_epi32(sum, ones, *x);
            _mm512_storeu_si512(wq.as_mut_ptr().add((b * 8 + g) * 64) as *mut _, *x);
        }
        let st = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32::<7>(sum));
        _mm512_storeu_si512(start.as_mut_ptr().add(b * ROWS) as *mut _, st);
    }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn legacy_kernel<const MIN: bool, const C: usize>(
    nb: usize,
    wq: &[u8],
    start: &[i32],
    dw: &[f32],
    mw: &[f32],
    ya: [&[u8]; C],
    res: &mut [[f32; ROWS]; C],
) {
    let mut acc = [_mm512_setzero_ps(); C];
    let pw = wq.as_ptr();
    for b in 0..nb {
        let st = _mm512_loadu_si512(start.as_ptr().add(b * ROWS) as *const _);
        let mut s0 = [st; C];
        let mut s1 = [_mm512_setzero_si512(); C];
        for g in (0..8).step_by(2) {
            let w0 = _mm512_loadu_si512(pw.add((b * 8 + g) * 64) as *const _);
            let w1 = _mm512_loadu_si512(pw.add((b * 8 + g + 1) * 64) as *const _);
            for k in 0..C {
                let y = ya[k].as_ptr().add(b * PREP_BLOCK + 8 + 4 * g);
                let y0 = _mm512_set1_epi32((y as *const i32).read_unaligned());
                let y1 = _mm512_set1_epi32((y.add(4) as *const i32).read_unaligned());
                s0[k] = _mm512_dpbusd_epi32(s0[k], y0, w0);
                s1[k] = _mm512_dpbusd_epi32(s1[k], y1, w1);
            }
        }
        let d = _mm512_loadu_ps(dw.as_ptr().add(b * ROWS));
        let m = _mm512_loadu_ps(mw.as_ptr().add(b * ROWS));
        for k in 0..C {
            let y = ya[k].as_ptr().add(b * PREP_BLOCK);
            let dy = _mm512_set1_ps((y as *const f32).read_unaligned());
            let s = _mm512_cvtepi32_ps(_mm512_add_epi32(s0[k], s1[k]));
            acc[k] = _mm512_fmadd_ps(s, _mm512_mul_ps(d, dy), acc[k]);
            if MIN {
                let sy = _mm512_set1_ps((y.add(4) as *const f32).read_unaligned());
                acc[k] = _mm512_fmadd_ps(m, sy, acc[k]);
            }
        }
    }
    for k in 0..C {
        _mm512_storeu_ps(res[k].as_mut_ptr(), acc[k]);
    }
}

// ---------------------------------------------------------------------------------------------
// Super-blocks of 256 against Q8_K.

/// One unpacked super-block of one row: unsigned values, per sub-block scale and the factor of
/// its activation sum, and the float multipliers of the two integer sums.
struct KBlock {
    u: [u8; QK_K],
    /// Sub-block scales (8 of 32 values or 16 of 16).
    sc: [i32; 16],
    /// Per sub-block factor of the activation sum.
    m: [i16; 16],
    d: f32,
    dm: f32,
}

impl KBlock {
    fn new() -> KBlock {
        KBlock {
            u: [0; QK_K],
            sc: [0; 16],
            m: [0; 16],
            d: 0.0,
            dm: 0.0,
        }
    }
}

type UnpackK = fn(&[u8], &mut KBlock);

/// Bytes of a Q8_K block: d (f32), 256 values, 16 sums of 16 (i16).
const Q8K_BYTES: usize = 292;

fn unsigned(v: &[i8; QK_K], off: i8, u: &mut [u8; QK_K]) {
    for (o, &x) in u.iter_mut().zip(v) {
        *o = x.wrapping_add(off) as u8;
    }
}

/// `d * sc * q - dmin * m`, sub-blocks of 16.
fn unpack_q2k(blk: &[u8], o: &mut KBlock) {
    let b: &BlockQ2K = bytemuck::from_bytes(blk);
    for half in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                o.u[128 * half + 32 * j + l] = (b.qs[32 * half + l] >> (2 * j)) & 3;
            }
        }
    }
    for (j, &s) in b.scales.iter().enumerate() {
        o.sc[j] = (s & 0xF) as i32;
        o.m[j] = (s >> 4) as i16;
    }
    o.d = b.d.to_f32();
    o.dm = -b.dmin.to_f32();
}

/// `d * sc * (q - 4)`, sub-blocks of 16, signed scales.
fn unpack_q3k(blk: &[u8], o: &mut KBlock) {
    let b: &BlockQ3K = bytemuck::from_bytes(blk);
    unsigned(&q3k_values(b), 4, &mut o.u);
    let sc = crate::quant::kquants::q3k_scales(&b.scales);
    for (j, &s) in sc.iter().enumerate() {
        o.sc[j] = s as i32;
        o.m[j] = s as i16;
    }
    o.d = b.d.to_f32();
    o.dm = -4.0 * o.d;
}

fn k4_scales(scales: &[u8; 12], o: &mut KBlock) {
    let (sc, m) = crate::quant::kquants::scales_mins_k4(scales);
    for j in 0..8 {
        o.sc[j] = sc[j] as i32;
        o.m[j] = m[j] as i16;
    }
}

/// `d * sc * q - dmin * m`, sub-blocks of 32.
fn unpack_q4k(blk: &[u8], o: &mut KBlock) {
    let b: &BlockQ4K = bytemuck::from_bytes(blk);
    unsigned(&q4k_values(b), 0, &mut o.u);
    k4_scales(&b.scales, o);
    o.d = b.d.to_f32();
    o.dm = -b.dmin.to_f32();
}

fn unpack_q5k(blk: &[u8], o: &mut KBlock) {
    let b: &BlockQ5K = bytemuck::from_bytes(blk);
    unsigned(&q5k_values(b), 0, &mut o.u);
    k4_scales(&b.scales, o);
    o.d = b.d.to_f32();
    o.dm = -b.dmin.to_f32();
}

/// `d * sc * (q - 32)`, sub-blocks of 16.
fn unpack_q6k(blk: &[u8], o: &mut KBlock) {
    let b: &BlockQ6K = bytemuck::from_bytes(blk);
    unsigned(&q6k_values(b), 32, &mut o.u);
    for j in 0..16 {
        o.sc[j] = b.scales[j] as i32;
        o.m[j] = b.scales[j] as i16;
    }
    o.d = b.d.to_f32();
    o.dm = -32.0 * o.d;
}

/// `d * (ls - 32) * kvalues[q]`, sub-blocks of 32; values offset by 128.
fn unpack_iq4xs(blk: &[u8], o: &mut KBlock) {
    let b: &BlockIq4Xs = bytemuck::from_bytes(blk);
    let h = u16::from_le_bytes(b.scales_h);
    for ib in 0..8 {
        let lo = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf;
        let hi = ((h >> (2 * ib)) & 3) as u8;
        let ls = (lo | (hi << 4)) as i32 - 32;
        o.sc[ib] = ls;
        o.m[ib] = ls as i16;
        for j in 0..16 {
            let q = b.qs[16 * ib + j];
            o.u[32 * ib + j] = (KVALUES_IQ4NL[(q & 0xf) as usize] as u8) ^ 0x80;
            o.u[32 * ib + 16 + j] = (KVALUES_IQ4NL[(q >> 4) as usize] as u8) ^ 0x80;
        }
    }
    o.d = b.d.to_f32();
    o.dm = -128.0 * o.d;
}

/// Per super-block of a group: 64 words of 16 rows, 16 scale vectors, 8 vectors of i16 pairs
/// of sub-block factors, d, dm.
const K_WQ: usize = QK_K / 4 * ROWS * 4;

#[allow(clippy::too_many_arguments)]
fn k_gemm<const L: usize>(
    kind: KFormat,
    cols: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    a: &[u8],
    arow: usize,
    nc: usize,
    put: &mut dyn FnMut(usize, &[f32]),
) -> bool {
    let bs = kind.bytes();
    let nb = cols / QK_K;
    if !cols.is_multiple_of(QK_K) || nb == 0 || nr == 0 || nc == 0 || nr > ROWS {
        return false;
    }
    if wrow < nb * bs
        || arow < nb * Q8K_BYTES
        || w.len() < (nr - 1) * wrow + nb * bs
        || a.len() < (nc - 1) * arow + nb * Q8K_BYTES
    {
        return false;
    }
    let ns = QK_K / L;
    SCRATCH.with(|scratch| {
        let s = &mut *scratch.borrow_mut();
        let wq = prefix(&mut s.wq, nb * K_WQ);
        let sc = prefix(&mut s.wi, nb * ns * ROWS);
        let mp = prefix(&mut s.wm, nb * 8 * ROWS);
        let dw = prefix(&mut s.dw, nb * ROWS);
        let mw = prefix(&mut s.mw, nb * ROWS);
        let out = KOut { wq, sc, mp, dw, mw };
        if ROWS * wrow < i32::MAX as usize {
            // SAFETY: the CPU runs these instructions (see `gemm`); `w` holds `nr` rows of
            // `nb` super-blocks of `kind` (checked above), `out` `nb` groups.
            unsafe { k_unpack_simd(kind, nb, w, wrow, nr, out) }
        } else {
            k_unpack::<L>(kind.scalar(), bs, nb, w, wrow, nr, out)
        }
        let g = KGroup::<L> {
            nb,
            wq: &*wq,
            sc: &*sc,
            mp: &*mp,
            dw: &*dw,
            mw: &*mw,
        };
        passes(&g, a, arow, nc, nr, put);
    });
    true
}

/// A group of 16 rows as `k_unpack` leaves it.
struct KGroup<'a, const L: usize> {
    nb: usize,
    wq: &'a [u8],
    sc: &'a [i32],
    mp: &'a [i32],
    dw: &'a [f32],
    mw: &'a [f32],
}

impl<const L: usize> Unpacked for KGroup<'_, L> {
    fn act_bytes(&self) -> usize {
        self.nb * Q8K_BYTES
    }
    unsafe fn kernel<const C: usize>(&self, ya: [&[u8]; C], res: &mut [[f32; ROWS]; C]) {
        k_kernel::<L, C>(
            self.nb, self.wq, self.sc, self.mp, self.dw, self.mw, ya, res,
        )
    }
}

/// A group's unpacked super-blocks: words of 16 rows, sub-block scale vectors, i16 pairs of
/// activation-sum factors, d, dm (see `k_kernel`).
struct KOut<'a> {
    wq: &'a mut [u8],
    sc: &'a mut [i32],
    mp: &'a mut [i32],
    dw: &'a mut [f32],
    mw: &'a mut [f32],
}

/// 16 rows (past `nr`, the last one again) of `nb` super-blocks into the kernel's layout.
fn k_unpack<const L: usize>(
    unpack: UnpackK,
    bs: usize,
    nb: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    o: KOut<'_>,
) {
    let ns = QK_K / L;
    let mut kb = KBlock::new();
    for j in 0..ROWS {
        let row = &w[j.min(nr - 1) * wrow..][..nb * bs];
        for (b, blk) in row.chunks_exact(bs).enumerate() {
            unpack(blk, &mut kb);
            interleave(&mut o.wq[b * K_WQ..][..K_WQ], j, &kb.u);
            for t in 0..ns {
                o.sc[(b * ns + t) * ROWS + j] = kb.sc[t];
            }
            // Pair p meets Q8_K's sums 2p and 2p+1: one factor per 16 values.
            for p in 0..8 {
                let (lo, hi) = if L == 16 {
                    (kb.m[2 * p], kb.m[2 * p + 1])
                } else {
                    (kb.m[p], kb.m[p])
                };
                o.mp[(b * 8 + p) * ROWS + j] =
                    (lo as u16 as u32 | ((hi as u16 as u32) << 16)) as i32;
            }
            o.dw[b * ROWS + j] = kb.d;
            o.mw[b * ROWS + j] = kb.dm;
        }
    }
}

/// The super-block formats of the batched kernel.
#[derive(Clone, Copy, Debug)]
enum KFormat {
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Iq4Xs,
}

impl KFormat {
    fn bytes(self) -> usize {
        match self {
            KFormat::Q2K => 84,
            KFormat::Q3K => 110,
            KFormat::Q4K => 144,
            KFormat::Q5K => 176,
            KFormat::Q6K => 210,
            KFormat::Iq4Xs => 136,
        }
    }

    /// Sub-blocks of 16 values (else of 32).
    fn sub16(self) -> bool {
        matches!(self, KFormat::Q2K | KFormat::Q3K | KFormat::Q6K)
    }

    /// The scalar unpacking of one super-block: the specification of `k_unpack_simd`, and its
    /// fallback for rows too far apart for 32-bit gather offsets.
    fn scalar(self) -> UnpackK {
        match self {
            KFormat::Q2K => unpack_q2k,
            KFormat::Q3K => unpack_q3k,
            KFormat::Q4K => unpack_q4k,
            KFormat::Q5K => unpack_q5k,
            KFormat::Q6K => unpack_q6k,
            KFormat::Iq4Xs => unpack_iq4xs,
        }
    }
}

/// [`k_unpack`] with one 16-row gather per word.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/VNNI and F16C; `w` must hold `nr` rows `wrow` bytes apart
/// of `nb` super-blocks of `kind`, `wrow * 16` must fit an i32, and `o` must hold `nb` groups.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::needless_range_loop)]
unsafe fn k_unpack_simd(kind: KFormat, nb: usize, w: &[u8], wrow: usize, nr: usize, o: KOut<'_>) {
    let bs = kind.bytes();
    let rows: [i32; ROWS] = std::array::from_fn(|j| (j.min(nr - 1) * wrow) as i32);
    let idx = _mm512_loadu_si512(rows.as_ptr() as *const _);
    let c = _mm512_set1_epi32;
    let and = _mm512_and_si512;
    let or = _mm512_or_si512;
    let half = |v: __m512i| _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
    let ns = if kind.sub16() { 16 } else { 8 };
    // Pairs of i16 factors of two sub-blocks of 16 from their 32-bit values.
    let pairs = |v: &[__m512i; 16], m: &mut [__m512i; 8]| {
        for (p, m) in m.iter_mut().enumerate() {
            *m = or(
                and(v[2 * p], c(0xFFFF)),
                _mm512_slli_epi32::<16>(v[2 * p + 1]),
            );
        }
    };
    let neg =
        |x: __m512| _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), c(i32::MIN)));
    let iq4 = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const _));
    for b in 0..nb {
        // Every gathered word lies inside super-block b of a row below `nr`.
        let p = w.as_ptr().add(b * bs);
        let gather = |off: usize| _mm512_i32gather_epi32::<1>(idx, p.add(off) as *const _);
        let wq = o.wq.as_mut_ptr().add(b * K_WQ);
        let put = |word: usize, v: __m512i| _mm512_storeu_si512(wq.add(word * 64) as *mut _, v);
        let sc = o.sc.as_mut_ptr().add(b * ns * ROWS);
        let mp = o.mp.as_mut_ptr().add(b * 8 * ROWS);
        let (d, dm);
        let mut scales = [_mm512_setzero_si512(); 16];
        let mut mins = [_mm512_setzero_si512(); 8];
        match kind {
            KFormat::Q4K | KFormat::Q5K => {
                let head = gather(0);
                d = half(head);
                // -dmin, by its sign bit as the scalar negation.
                let dmin = _mm512_castps_si512(half(_mm512_srli_epi32::<16>(head)));
                dm = _mm512_castsi512_ps(_mm512_xor_si512(dmin, c(i32::MIN)));
                // get_scale_min_k4 on 16 rows at once.
                let (d0, d1, d2) = (gather(4), gather(8), gather(12));
                let byte = |v: __m512i, k: u32| {
                    and(
                        _mm512_srl_epi32(v, _mm_cvtsi32_si128(8 * k as i32)),
                        c(0xFF),
                    )
                };
                for j in 0..4u32 {
                    let k = j as usize;
                    scales[k] = and(byte(d0, j), c(63));
                    mins[k] = and(byte(d1, j), c(63));
                    let hi_s = _mm512_slli_epi32::<4>(_mm512_srli_epi32::<6>(byte(d0, j)));
                    let hi_m = _mm512_slli_epi32::<4>(_mm512_srli_epi32::<6>(byte(d1, j)));
                    scales[4 + k] = or(and(byte(d2, j), c(0xF)), hi_s);
                    mins[4 + k] = or(_mm512_srli_epi32::<4>(byte(d2, j)), hi_m);
                }
                let (qs, qh) = if let KFormat::Q5K = kind {
                    (48, Some(16))
                } else {
                    (16, None)
                };
                for g in 0..4 {
                    for i in 0..8 {
                        let raw = gather(qs + 32 * g + 4 * i);
                        let mut lo = and(raw, c(0x0F0F_0F0F));
                        let mut hi = and(_mm512_srli_epi32::<4>(raw), c(0x0F0F_0F0F));
                        if let Some(qh) = qh {
                            let h = gather(qh + 4 * i);
                            let bit = |k: u32| {
                                _mm512_slli_epi32::<4>(and(
                                    _mm512_srl_epi32(h, _mm_cvtsi32_si128(k as i32)),
                                    c(0x0101_0101),
                                ))
                            };
                            lo = or(lo, bit(2 * g as u32));
                            hi = or(hi, bit(2 * g as u32 + 1));
                        }
                        put(16 * g + i, lo);
                        put(16 * g + 8 + i, hi);
                    }
                }
            }
            KFormat::Q2K => {
                let tail = gather(80);
                d = half(tail);
                dm = neg(half(_mm512_srli_epi32::<16>(tail)));
                for h in 0..2 {
                    for i in 0..8 {
                        let raw = gather(16 + 32 * h + 4 * i);
                        for j in 0..4u32 {
                            let v = _mm512_srl_epi32(raw, _mm_cvtsi32_si128(2 * j as i32));
                            put(32 * h + 8 * j as usize + i, and(v, c(0x0303_0303)));
                        }
                    }
                }
                let mut m16 = [_mm512_setzero_si512(); 16];
                for k in 0..4 {
                    let v = gather(4 * k);
                    for b in 0..4 {
                        let byte = and(
                            _mm512_srl_epi32(v, _mm_cvtsi32_si128(8 * b as i32)),
                            c(0xFF),
                        );
                        scales[4 * k + b] = and(byte, c(0xF));
                        m16[4 * k + b] = _mm512_srli_epi32::<4>(byte);
                    }
                }
                pairs(&m16, &mut mins);
            }
            KFormat::Q3K => {
                d = half(_mm512_srli_epi32::<16>(gather(106)));
                dm = _mm512_mul_ps(d, _mm512_set1_ps(-4.0));
                let hm: [__m512i; 8] = std::array::from_fn(|i| gather(4 * i));
                for h in 0..2 {
                    for i in 0..8 {
                        let raw = gather(32 + 32 * h + 4 * i);
                        for k in 0..4 {
                            let low = and(
                                _mm512_srl_epi32(raw, _mm_cvtsi32_si128(2 * k as i32)),
                                c(0x0303_0303),
                            );
                            let high = and(
                                _mm512_srl_epi32(hm[i], _mm_cvtsi32_si128((4 * h + k) as i32)),
                                c(0x0101_0101),
                            );
                            put(32 * h + 8 * k + i, or(low, _mm512_slli_epi32::<2>(high)));
                        }
                    }
                }
                // q3k_scales on 16 rows at once.
                let (d0, d1, d2) = (gather(96), gather(100), gather(104));
                let byte = |v: __m512i, k: usize| {
                    and(
                        _mm512_srl_epi32(v, _mm_cvtsi32_si128(8 * k as i32)),
                        c(0xFF),
                    )
                };
                for j in 0..16 {
                    let sj = if j % 8 < 4 { d0 } else { d1 };
                    let low = if j < 8 {
                        and(byte(sj, j % 4), c(0xF))
                    } else {
                        _mm512_srli_epi32::<4>(byte(sj, j % 4))
                    };
                    let high = and(
                        _mm512_srl_epi32(byte(d2, j % 4), _mm_cvtsi32_si128(2 * (j / 4) as i32)),
                        c(3),
                    );
                    scales[j] = _mm512_sub_epi32(or(low, _mm512_slli_epi32::<4>(high)), c(32));
                }
                pairs(&scales, &mut mins);
            }
            KFormat::Iq4Xs => {
                let head = gather(0);
                d = half(head);
                dm = _mm512_mul_ps(d, _mm512_set1_ps(-128.0));
                let sh = _mm512_srli_epi32::<16>(head);
                let sl = gather(4);
                for ib in 0..8 {
                    let lo = and(
                        _mm512_srl_epi32(
                            sl,
                            _mm_cvtsi32_si128((8 * (ib / 2) + 4 * (ib % 2)) as i32),
                        ),
                        c(0xF),
                    );
                    let hi = and(_mm512_srl_epi32(sh, _mm_cvtsi32_si128(2 * ib as i32)), c(3));
                    scales[ib] = _mm512_sub_epi32(or(lo, _mm512_slli_epi32::<4>(hi)), c(32));
                    mins[ib] = scales[ib];
                    for i in 0..4 {
                        let raw = gather(8 + 16 * ib + 4 * i);
                        // kvalues + 128, unsigned: flip the sign bit of each looked-up byte.
                        let look = |n: __m512i| {
                            _mm512_xor_si512(_mm512_shuffle_epi8(iq4, n), _mm512_set1_epi8(-128))
                        };
                        put(8 * ib + i, look(and(raw, c(0x0F0F_0F0F))));
                        put(
                            8 * ib + 4 + i,
                            look(and(_mm512_srli_epi32::<4>(raw), c(0x0F0F_0F0F))),
                        );
                    }
                }
            }
            KFormat::Q6K => {
                d = half(_mm512_srli_epi32::<16>(gather(206)));
                dm = _mm512_mul_ps(d, _mm512_set1_ps(-32.0));
                for h in 0..2 {
                    for i in 0..8 {
                        let a = gather(64 * h + 4 * i);
                        let bq = gather(64 * h + 32 + 4 * i);
                        let hb = gather(128 + 32 * h + 4 * i);
                        let high = |k: u32| {
                            _mm512_slli_epi32::<4>(and(
                                _mm512_srl_epi32(hb, _mm_cvtsi32_si128(k as i32)),
                                c(0x0303_0303),
                            ))
                        };
                        let low = |v: __m512i| and(v, c(0x0F0F_0F0F));
                        put(32 * h + i, or(low(a), high(0)));
                        put(32 * h + 8 + i, or(low(bq), high(2)));
                        put(32 * h + 16 + i, or(low(_mm512_srli_epi32::<4>(a)), high(4)));
                        put(
                            32 * h + 24 + i,
                            or(low(_mm512_srli_epi32::<4>(bq)), high(6)),
                        );
                    }
                }
                let s16 = &mut scales;
                for k in 0..4 {
                    let v = gather(192 + 4 * k);
                    s16[4 * k] = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(v));
                    s16[4 * k + 1] = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<16>(v));
                    s16[4 * k + 2] = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<8>(v));
                    s16[4 * k + 3] = _mm512_srai_epi32::<24>(v);
                }
                for (p, m) in mins.iter_mut().enumerate() {
                    *m = or(
                        and(s16[2 * p], c(0xFFFF)),
                        _mm512_slli_epi32::<16>(s16[2 * p + 1]),
                    );
                }
            }
        }
        for (t, v) in scales.iter().take(ns).enumerate() {
            _mm512_storeu_si512(sc.add(t * ROWS) as *mut _, *v);
        }
        for (pi, m) in mins.iter().enumerate() {
            // Pairs of 16-value factors already; one factor per 32 values goes in both halves.
            let pair = if kind.sub16() {
                *m
            } else {
                or(and(*m, c(0xFFFF)), _mm512_slli_epi32::<16>(*m))
            };
            _mm512_storeu_si512(mp.add(pi * ROWS) as *mut _, pair);
        }
        _mm512_storeu_ps(o.dw.as_mut_ptr().add(b * ROWS), d);
        _mm512_storeu_ps(o.mw.as_mut_ptr().add(b * ROWS), dm);
    }
}

#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn k_kernel<const L: usize, const C: usize>(
    nb: usize,
    wq: &[u8],
    sc: &[i32],
    mp: &[i32],
    dw: &[f32],
    mw: &[f32],
    ya: [&[u8]; C],
    res: &mut [[f32; ROWS]; C],
) {
    let ns = QK_K / L;
    let words = L / 4;
    let mut acc = [_mm512_setzero_ps(); C];
    for b in 0..nb {
        let pw = wq.as_ptr().add(b * K_WQ);
        let mut isum = [_mm512_setzero_si512(); C];
        let mut msum = [_mm512_setzero_si512(); C];
        for t in 0..ns {
            let mut s0 = [_mm512_setzero_si512(); C];
            let mut s1 = [_mm512_setzero_si512(); C];
            for g in (0..words).step_by(2) {
                let word = t * words + g;
                let w0 = _mm512_loadu_si512(pw.add(word * 64) as *const _);
                let w1 = _mm512_loadu_si512(pw.add((word + 1) * 64) as *const _);
                for k in 0..C {
                    let y = ya[k].as_ptr().add(b * Q8K_BYTES + 4 + 4 * word);
                    let y0 = _mm512_set1_epi32((y as *const i32).read_unaligned());
                    let y1 = _mm512_set1_epi32((y.add(4) as *const i32).read_unaligned());
                    s0[k] = _mm512_dpbusd_epi32(s0[k], w0, y0);
                    s1[k] = _mm512_dpbusd_epi32(s1[k], w1, y1);
                }
            }
            let scv = _mm512_loadu_si512(sc.as_ptr().add((b * ns + t) * ROWS) as *const _);
            for k in 0..C {
                let s = _mm512_add_epi32(s0[k], s1[k]);
                isum[k] = _mm512_add_epi32(isum[k], _mm512_mullo_epi32(s, scv));
            }
        }
        for p in 0..8 {
            let mv = _mm512_loadu_si512(mp.as_ptr().add((b * 8 + p) * ROWS) as *const _);
            for k in 0..C {
                let y = ya[k].as_ptr().add(b * Q8K_BYTES + 4 + QK_K + 4 * p);
                let bsum = _mm512_set1_epi32((y as *const i32).read_unaligned());
                msum[k] = _mm512_dpwssd_epi32(msum[k], mv, bsum);
            }
        }
        let d = _mm512_loadu_ps(dw.as_ptr().add(b * ROWS));
        let m = _mm512_loadu_ps(mw.as_ptr().add(b * ROWS));
        for k in 0..C {
            let y = ya[k].as_ptr().add(b * Q8K_BYTES);
            let dy = _mm512_set1_ps((y as *const f32).read_unaligned());
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[k]), _mm512_mul_ps(d, dy), acc[k]);
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(msum[k]), _mm512_mul_ps(m, dy), acc[k]);
        }
    }
    for k in 0..C {
        _mm512_storeu_ps(res[k].as_mut_ptr(), acc[k]);
    }
}

// ---------------------------------------------------------------------------------------------
// F16, BF16 and F32 against f32 activations.

#[derive(Clone, Copy)]
enum Float {
    F16,
    BF16,
    F32,
}

impl Float {
    fn bytes(self) -> usize {
        match self {
            Float::F16 | Float::BF16 => 2,
            Float::F32 => 4,
        }
    }

    fn value(self, b: &[u8]) -> f32 {
        match self {
            Float::F16 => f16(b),
            Float::BF16 => f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16),
            Float::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }
}

/// An activation row of the dot type (F16, BF16 or F32) as f32 little-endian bytes. The dot
/// type's values are exact in f32, so the products are those of the scalar dot product.
fn prepare_float(ty: Float, cols: usize, xq: &[u8], dst: &mut [u8]) -> bool {
    if xq.len() != cols * ty.bytes() || dst.len() < cols * 4 {
        return false;
    }
    for (x, out) in xq.chunks_exact(ty.bytes()).zip(dst.chunks_exact_mut(4)) {
        out.copy_from_slice(&ty.value(x).to_le_bytes());
    }
    true
}

/// Values of a row per unpacked chunk: 16 KiB of f32 for 16 rows, kept in L1.
const KC: usize = 256;
const FCOLS: usize = 8;

#[allow(clippy::too_many_arguments)]
fn float_gemm(
    ty: Float,
    dp: bool,
    cols: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    a: &[u8],
    arow: usize,
    nc: usize,
    put: &mut dyn FnMut(usize, &[f32]),
) -> bool {
    let vb = ty.bytes();
    // Bytes per activation value: f32 as prepared, or the BF16 dot type itself with `dp`.
    let ab = if dp { 2 } else { 4 };
    // Pairs of 2-byte values are gathered as one word: an even row length keeps the last
    // word inside the row.
    if cols == 0 || nr == 0 || nc == 0 || nr > ROWS || (vb == 2 && !cols.is_multiple_of(2)) {
        return false;
    }
    if wrow < cols * vb
        || arow < cols * ab
        || w.len() < (nr - 1) * wrow + cols * vb
        || a.len() < (nc - 1) * arow + cols * ab
        || ROWS * wrow >= i32::MAX as usize
    {
        return false;
    }
    SCRATCH.with(|scratch| {
        let s = &mut *scratch.borrow_mut();
        let wf = prefix(&mut s.wf, KC * ROWS);
        let acc = prefix(&mut s.acc, nc * ROWS);
        acc.fill(0.0);
        for k0 in (0..cols).step_by(KC) {
            let kc = (cols - k0).min(KC);
            // SAFETY: the CPU runs these instructions (see `gemm`: AVX-512 BF16 with `dp`);
            // `w` holds `nr` rows of `cols` values (checked above), `wf` KC * 16 floats (or
            // words of BF16 pairs, the same bytes).
            unsafe {
                if dp {
                    bf16_unpack(k0, kc, w, wrow, nr, bytemuck::cast_slice_mut(wf))
                } else {
                    float_unpack(ty, k0, kc, w, wrow, nr, wf)
                }
            };
            for c0 in (0..nc).step_by(FCOLS) {
                let n = (nc - c0).min(FCOLS);
                let mut part = [[0f32; ROWS]; FCOLS];
                for (k, p) in part.iter_mut().enumerate().take(n) {
                    p.copy_from_slice(&acc[(c0 + k) * ROWS..][..ROWS]);
                }
                let ya: [&[u8]; FCOLS] =
                    std::array::from_fn(|k| &a[(c0 + k.min(n - 1)) * arow + k0 * ab..][..kc * ab]);
                // SAFETY: as above; every activation slice holds `kc` values.
                unsafe {
                    if dp {
                        bf16_kernel(kc, bytemuck::cast_slice(wf), ya, &mut part)
                    } else {
                        float_kernel(kc, wf, ya, &mut part)
                    }
                };
                for (k, p) in part.iter().enumerate().take(n) {
                    acc[(c0 + k) * ROWS..][..ROWS].copy_from_slice(p);
                }
            }
        }
        for c in 0..nc {
            put(c, &acc[c * ROWS..][..nr]);
        }
    });
    true
}

/// Values `k0..k0 + kc` of 16 rows (past `nr`, the last again) as f32, 16 rows per value.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL and F16C; `w` must hold `nr` rows `wrow` bytes apart of at
/// least `k0 + kc` values (an even count for 2-byte types), `wrow * 16` must fit an i32, and
/// `wf` must hold `kc * 16` floats.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn float_unpack(
    ty: Float,
    k0: usize,
    kc: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    wf: &mut [f32],
) {
    let rows: [i32; ROWS] = std::array::from_fn(|j| (j.min(nr - 1) * wrow) as i32);
    let idx = _mm512_loadu_si512(rows.as_ptr() as *const _);
    let out = wf.as_mut_ptr();
    let p = w.as_ptr();
    let gather = |off: usize| _mm512_i32gather_epi32::<1>(idx, p.add(off) as *const _);
    match ty {
        Float::F32 => {
            for k in 0..kc {
                let v = _mm512_castsi512_ps(gather(4 * (k0 + k)));
                _mm512_storeu_ps(out.add(k * ROWS), v);
            }
        }
        Float::F16 | Float::BF16 => {
            // k0 and the chunk length are even but for the row's last chunk, whose length is
            // even because the row's is.
            for k in (0..kc).step_by(2) {
                let g = gather(2 * (k0 + k));
                let (lo, hi) = if let Float::F16 = ty {
                    (
                        _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g)),
                        _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(g))),
                    )
                } else {
                    (
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(g)),
                        _mm512_castsi512_ps(_mm512_and_si512(g, _mm512_set1_epi32(-65536))),
                    )
                };
                _mm512_storeu_ps(out.add(k * ROWS), lo);
                _mm512_storeu_ps(out.add((k + 1) * ROWS), hi);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn float_kernel(kc: usize, wf: &[f32], ya: [&[u8]; FCOLS], part: &mut [[f32; ROWS]; FCOLS]) {
    let mut acc: [__m512; FCOLS] = std::array::from_fn(|c| _mm512_loadu_ps(part[c].as_ptr()));
    let pw = wf.as_ptr();
    for k in 0..kc {
        let wv = _mm512_loadu_ps(pw.add(k * ROWS));
        for c in 0..FCOLS {
            let y = (ya[c].as_ptr().add(4 * k) as *const f32).read_unaligned();
            acc[c] = _mm512_fmadd_ps(wv, _mm512_set1_ps(y), acc[c]);
        }
    }
    for c in 0..FCOLS {
        _mm512_storeu_ps(part[c].as_mut_ptr(), acc[c]);
    }
}

/// Pairs `k0..k0 + kc` of 16 rows (past `nr`, the last again), one word per row and pair.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/BF16; `w` must hold `nr` rows `wrow` bytes apart of at least
/// `k0 + kc` values, `kc` even, `wrow * 16` fitting an i32, and `wp` `kc / 2 * 16` words.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn bf16_unpack(k0: usize, kc: usize, w: &[u8], wrow: usize, nr: usize, wp: &mut [i32]) {
    let rows: [i32; ROWS] = std::array::from_fn(|j| (j.min(nr - 1) * wrow) as i32);
    let idx = _mm512_loadu_si512(rows.as_ptr() as *const _);
    for k in 0..kc / 2 {
        let g = _mm512_i32gather_epi32::<1>(idx, w.as_ptr().add(2 * (k0 + 2 * k)) as *const _);
        _mm512_storeu_si512(wp.as_mut_ptr().add(k * ROWS) as *mut _, g);
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn bf16_kernel(kc: usize, wp: &[i32], ya: [&[u8]; FCOLS], part: &mut [[f32; ROWS]; FCOLS]) {
    let mut acc: [__m512; FCOLS] = std::array::from_fn(|c| _mm512_loadu_ps(part[c].as_ptr()));
    for k in 0..kc / 2 {
        let wv: __m512bh =
            std::mem::transmute(_mm512_loadu_si512(wp.as_ptr().add(k * ROWS) as *const _));
        for c in 0..FCOLS {
            let y = (ya[c].as_ptr().add(4 * k) as *const i32).read_unaligned();
            let yv: __m512bh = std::mem::transmute(_mm512_set1_epi32(y));
            acc[c] = _mm512_dpbf16_ps(acc[c], wv, yv);
        }
    }
    for c in 0..FCOLS {
        _mm512_storeu_ps(part[c].as_mut_ptr(), acc[c]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gathering unpacker lays out exactly what the scalar one does, for every legacy
    /// format, any bytes (NaN scales included: compared as bits) and partial groups.
    #[test]
    fn simd_unpack_equals_scalar() {
        if !super::super::super::has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut byte = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        };
        for ty in [
            Legacy::Q4_0,
            Legacy::Q4_1,
            Legacy::Q5_0,
            Legacy::Q5_1,
            Legacy::Q8_0,
            Legacy::Iq4Nl,
        ] {
            for (nr, nb, pad) in [(16, 3, 0), (5, 2, 7), (1, 1, 0)] {
                let wrow = nb * ty.block_bytes() + pad;
                let w: Vec<u8> = (0..nr * wrow).map(|_| byte()).collect();
                let run = |simd: bool| {
                    let mut wq = vec![0u8; nb * 512];
                    let mut st = vec![0i32; nb * ROWS];
                    let mut dw = vec![0f32; nb * ROWS];
                    let mut mw = vec![0f32; nb * ROWS];
                    if simd {
                        // SAFETY: AVX-512 checked above; the buffers have the sizes required.
                        unsafe {
                            legacy_unpack_simd(
                                ty, nb, &w, wrow, nr, &mut wq, &mut st, &mut dw, &mut mw,
                            )
                        };
                    } else {
                        legacy_unpack(ty, nb, &w, wrow, nr, &mut wq, &mut st, &mut dw, &mut mw);
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    (wq, st, bits(&dw), bits(&mw))
                };
                assert!(
                    run(true) == run(false),
                    "block {} nr {nr}",
                    ty.block_bytes()
                );
            }
        }
    }

    /// The gathering super-block unpacker equals the scalar one for every super-block format.
    #[test]
    fn simd_k_unpack_equals_scalar() {
        if !super::super::super::has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut byte = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        };
        for kind in [
            KFormat::Q2K,
            KFormat::Q3K,
            KFormat::Q4K,
            KFormat::Q5K,
            KFormat::Q6K,
            KFormat::Iq4Xs,
        ] {
            let (bs, unpack, l16) = (kind.bytes(), kind.scalar(), kind.sub16());
            for (nr, nb, pad) in [(16, 2, 0), (3, 1, 5), (1, 2, 0)] {
                let wrow = nb * bs + pad;
                let w: Vec<u8> = (0..nr * wrow).map(|_| byte()).collect();
                let run = |simd: bool| {
                    let mut wq = vec![0u8; nb * K_WQ];
                    let mut sc = vec![0i32; nb * 16 * ROWS];
                    let mut mp = vec![0i32; nb * 8 * ROWS];
                    let mut dw = vec![0f32; nb * ROWS];
                    let mut mw = vec![0f32; nb * ROWS];
                    let ns = if l16 { 16 } else { 8 };
                    let o = KOut {
                        wq: &mut wq,
                        sc: &mut sc[..nb * ns * ROWS],
                        mp: &mut mp,
                        dw: &mut dw,
                        mw: &mut mw,
                    };
                    if simd {
                        // SAFETY: AVX-512 checked above; the buffers have the sizes required.
                        unsafe { k_unpack_simd(kind, nb, &w, wrow, nr, o) };
                    } else if l16 {
                        k_unpack::<16>(unpack, bs, nb, &w, wrow, nr, o);
                    } else {
                        k_unpack::<32>(unpack, bs, nb, &w, wrow, nr, o);
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    (wq, sc, mp, bits(&dw), bits(&mw))
                };
                let (a, b) = (run(true), run(false));
                assert!(a.0 == b.0, "{kind:?} nr {nr}: values");
                assert!(a.1 == b.1, "{kind:?} nr {nr}: scales");
                assert!(a.2 == b.2, "{kind:?} nr {nr}: min pairs");
                assert!(a.3 == b.3 && a.4 == b.4, "{kind:?} nr {nr}: d, dm");
            }
        }
    }
}
