//! One activation vector against many weight rows (the matvec of a decode step) for the
//! blocks of 32 values with 4-bit quants: Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, and IQ4_XS (IQ4_NL
//! blocks with 6-bit scales in super-blocks of 256).
//!
//! The activation row is rewritten once per matvec (`prepare`) into the order in which the
//! weights unpack, together with everything that depends on it alone: the weights' offset
//! times each block's activation sum, the activation scales spread over the lanes of their
//! blocks, and Q8_1's sums. A row then takes four blocks (128 values) at a time, one block
//! per 128-bit lane: their nibble bytes split into two registers, two `vpdpbusd` starting
//! from the prepared offset correction, the scales packed in a general register and spread
//! with one `vpermps`, and one `vfmadd`. The general dot product spends about twice the
//! instructions per block, on the activation side and on per-block scale handling.
//!
//! (One 64-byte load per four blocks and `vpermi2b` would need fewer instructions, and runs
//! faster while the weights are in L2; streamed from memory on Zen 5 it runs slower than
//! these 16-byte loads.)
//!
//! Needs AVX-512 BITALG: `vpshufbitqmb` turns each block's 32 fifth bits into a byte mask. Every
//! AVX-512 CPU since Ice Lake and Zen 4 has it.

use crate::quant::arch::x86_64::{ahead, prefetch};
use crate::quant::blocks::F16;
use crate::quant::iq4::KVALUES_IQ4NL;
use crate::quant::GgmlType;
use std::arch::x86_64::*;

/// Values per group of four blocks.
const GROUP: usize = 128;

/// Prepared bytes per group: the activations paired with the low nibbles (64 x i8) and with
/// the high ones (64 x i8), the offset correction (16 x i32), the activation scale (16 x f32)
/// and Q8_1's `s` (16 x f32); lanes `4k .. 4k + 4` belong to block `k` of the group.
const PREP_GROUP: usize = 320;

/// `out[r] = dot(w row r, the prepared activation a)` for `r < nr`; rows are `wrow` bytes
/// apart. Returns false, having written nothing, when the shapes are not ones it handles:
/// the caller then computes those rows another way.
pub type GemvFn =
    fn(cols: usize, w: &[u8], wrow: usize, nr: usize, a: &[u8], out: &mut [f32]) -> bool;

/// A matvec kernel and how to prepare its activation row (`cols` values of the dot type,
/// Q8_0 or Q8_1); `prepare` returns false when the lengths do not fit.
#[derive(Clone, Copy)]
pub struct Gemv {
    pub run: GemvFn,
    pub prepare: fn(cols: usize, xq: &[u8], dst: &mut [u8]) -> bool,
}

impl Gemv {
    /// Bytes of one prepared activation row of `cols` values.
    pub fn prepared_bytes(cols: usize) -> usize {
        cols.div_ceil(GROUP) * PREP_GROUP
    }
}

/// The matvec kernel of `ty` when the avx512 path is the selected one and the CPU has BITALG.
pub fn gemv(ty: GgmlType) -> Option<Gemv> {
    if crate::quant::arch::selected() != crate::quant::arch::Path::Avx512 || !supported() {
        return None;
    }
    // Non-capturing closures, so that each is a plain `fn` of the kernel for one format.
    Some(match ty {
        GgmlType::Q4_0 => Gemv {
            run: |c, w, wr, nr, a, o| run::<Q4_0>(c, w, wr, nr, a, o),
            prepare: |c, x, d| prepare::<Q4_0>(c, x, d),
        },
        GgmlType::Q4_1 => Gemv {
            run: |c, w, wr, nr, a, o| run::<Q4_1>(c, w, wr, nr, a, o),
            prepare: |c, x, d| prepare::<Q4_1>(c, x, d),
        },
        GgmlType::Q5_0 => Gemv {
            run: |c, w, wr, nr, a, o| run::<Q5_0>(c, w, wr, nr, a, o),
            prepare: |c, x, d| prepare::<Q5_0>(c, x, d),
        },
        GgmlType::Q5_1 => Gemv {
            run: |c, w, wr, nr, a, o| run::<Q5_1>(c, w, wr, nr, a, o),
            prepare: |c, x, d| prepare::<Q5_1>(c, x, d),
        },
        GgmlType::IQ4NL => Gemv {
            run: |c, w, wr, nr, a, o| run::<Iq4Nl>(c, w, wr, nr, a, o),
            prepare: |c, x, d| prepare::<Iq4Nl>(c, x, d),
        },
        GgmlType::IQ4XS => Gemv {
            run: run_iq4xs,
            prepare: prepare_q8k,
        },
        _ => return None,
    })
}

fn supported() -> bool {
    super::super::has_avx512() && is_x86_feature_detected!("avx512bitalg")
}

/// A block format as the kernel sees it.
trait Format {
    /// Bytes per block.
    const BS: usize;
    /// Where the 16 nibble bytes start.
    const QS: usize;
    /// Where the 32 fifth bits start (Q5_0, Q5_1).
    const QH: Option<usize>;
    /// `d` at 0 and a min `m` at 2 (the activations are then Q8_1, else Q8_0).
    const MIN: bool;
    /// The values are `u - OFFSET` for the unsigned `u` the unpacking gives.
    const OFFSET: i32;
    /// The nibbles index `KVALUES_IQ4NL` (plus 128, to be unsigned).
    const TABLE: bool = false;
}

struct Q4_0;
impl Format for Q4_0 {
    const BS: usize = 18;
    const QS: usize = 2;
    const QH: Option<usize> = None;
    const MIN: bool = false;
    const OFFSET: i32 = 8;
}

struct Q4_1;
impl Format for Q4_1 {
    const BS: usize = 20;
    const QS: usize = 4;
    const QH: Option<usize> = None;
    const MIN: bool = true;
    const OFFSET: i32 = 0;
}

struct Q5_0;
impl Format for Q5_0 {
    const BS: usize = 22;
    const QS: usize = 6;
    const QH: Option<usize> = Some(2);
    const MIN: bool = false;
    const OFFSET: i32 = 16;
}

struct Q5_1;
impl Format for Q5_1 {
    const BS: usize = 24;
    const QS: usize = 8;
    const QH: Option<usize> = Some(4);
    const MIN: bool = true;
    const OFFSET: i32 = 0;
}

/// IQ4_NL; IQ4_XS's blocks of 32 hold the same values (`prepare_q8k` takes this offset).
struct Iq4Nl;
impl Format for Iq4Nl {
    const BS: usize = 18;
    const QS: usize = 2;
    const QH: Option<usize> = None;
    const MIN: bool = false;
    const OFFSET: i32 = 128;
    const TABLE: bool = true;
}

/// Bit `j` (low nibbles) or `16 + j` (high nibbles) of a block's fifth bits for byte `16k + j`.
const fn bit_index(high: bool) -> [u8; 64] {
    let mut idx = [0u8; 64];
    let mut p = 0;
    while p < 64 {
        idx[p] = (p % 16) as u8 + if high { 16 } else { 0 };
        p += 1;
    }
    idx
}
const BITS_LO: [u8; 64] = bit_index(false);
const BITS_HI: [u8; 64] = bit_index(true);

/// The constant registers of a kernel, loaded once per call.
struct Consts {
    /// Element `k` to lanes `4k .. 4k + 4`, and elements `2k` / `2k + 1` to them.
    quarter: __m512i,
    even: __m512i,
    odd: __m512i,
    bits_lo: __m512i,
    bits_hi: __m512i,
    table: __m512i,
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg")]
unsafe fn consts() -> Consts {
    let load = |p: *const u8| _mm512_loadu_si512(p as *const _);
    let mut table = [0u8; 16];
    for (t, &v) in table.iter_mut().zip(KVALUES_IQ4NL.iter()) {
        *t = (v as i32 + 128) as u8;
    }
    Consts {
        quarter: _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
        even: _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6),
        odd: _mm512_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7),
        bits_lo: load(BITS_LO.as_ptr()),
        bits_hi: load(BITS_HI.as_ptr()),
        table: _mm512_broadcast_i32x4(_mm_loadu_si128(table.as_ptr() as *const __m128i)),
    }
}

/// The 16 bytes at `at` of each of the first `n` of the four blocks at `x`, block k in lane k
/// (zero for the blocks from `n` on).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg")]
unsafe fn lanes<F: Format>(x: *const u8, n: usize, at: usize) -> __m512i {
    let l = |k: usize| {
        if k < n {
            _mm_loadu_si128(x.add(k * F::BS + at) as *const __m128i)
        } else {
            _mm_setzero_si128()
        }
    };
    let v = _mm512_inserti32x4::<1>(_mm512_castsi128_si512(l(0)), l(1));
    _mm512_inserti32x4::<3>(_mm512_inserti32x4::<2>(v, l(2)), l(3))
}

/// Adds the group of four blocks at `x`, against its prepared activations at `p`, to `acc`
/// (and the min terms to `accm`). Only the first `n` blocks are read: the others count as
/// zero quants and scales (and have zero prepared activations), which add nothing. (`n` is
/// 4 but in a row's last group, where inlining removes the checks.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg")]
unsafe fn group<F: Format>(
    x: *const u8,
    n: usize,
    p: *const u8,
    c: &Consts,
    acc: &mut __m512,
    accm: &mut __m512,
) {
    let q = lanes::<F>(x, n, F::QS);
    let nib = _mm512_set1_epi8(0x0F);
    let mut lo = _mm512_and_si512(q, nib);
    let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), nib);
    if F::QH.is_some() {
        let qh = |k: usize| {
            if k < n {
                u32_at(x.add(k * F::BS + F::QH.unwrap_or(0)))
            } else {
                0
            }
        };
        let h = _mm_set_epi64x((qh(2) | qh(3) << 32) as i64, (qh(0) | qh(1) << 32) as i64);
        let h = _mm512_permutexvar_epi32(c.quarter, _mm512_castsi128_si512(h));
        let sixteen = _mm512_set1_epi8(0x10);
        lo = _mm512_mask_add_epi8(lo, _mm512_bitshuffle_epi64_mask(h, c.bits_lo), lo, sixteen);
        hi = _mm512_mask_add_epi8(hi, _mm512_bitshuffle_epi64_mask(h, c.bits_hi), hi, sixteen);
    }
    if F::TABLE {
        lo = _mm512_shuffle_epi8(c.table, lo);
        hi = _mm512_shuffle_epi8(c.table, hi);
    }
    let load = |o: usize| _mm512_loadu_si512(p.add(o) as *const _);
    // Starting from the correction makes each block's integer sum that of its values.
    let s = _mm512_dpbusd_epi32(load(128), lo, load(0));
    let s = _mm512_dpbusd_epi32(s, hi, load(64));
    // The scales through general registers: fewer shuffles than gathering 128-bit lanes.
    let (d, m) = if F::MIN {
        // d and m of each block, as [d0 m0 d1 m1 ..].
        let dm = |k: usize| if k < n { u32_at(x.add(k * F::BS)) } else { 0 };
        let f = _mm256_cvtph_ps(_mm_set_epi64x(
            (dm(2) | dm(3) << 32) as i64,
            (dm(0) | dm(1) << 32) as i64,
        ));
        let f = _mm512_castps256_ps512(f);
        (
            _mm512_permutexvar_ps(c.even, f),
            _mm512_permutexvar_ps(c.odd, f),
        )
    } else {
        let d = |k: usize| if k < n { u16_at(x.add(k * F::BS)) } else { 0 };
        let f = _mm_cvtph_ps(_mm_cvtsi64_si128(
            (d(0) | d(1) << 16 | d(2) << 32 | d(3) << 48) as i64,
        ));
        let f = _mm512_castps128_ps512(f);
        (_mm512_permutexvar_ps(c.quarter, f), _mm512_setzero_ps())
    };
    let dd = _mm512_mul_ps(d, _mm512_loadu_ps(p.add(192) as *const f32));
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), dd, *acc);
    if F::MIN {
        *accm = _mm512_fmadd_ps(m, _mm512_loadu_ps(p.add(256) as *const f32), *accm);
    }
}

#[inline(always)]
unsafe fn u16_at(p: *const u8) -> u64 {
    (p as *const u16).read_unaligned() as u64
}

#[inline(always)]
unsafe fn u32_at(p: *const u8) -> u64 {
    (p as *const u32).read_unaligned() as u64
}

fn run<F: Format>(
    cols: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    a: &[u8],
    out: &mut [f32],
) -> bool {
    let nb = cols / 32;
    if !cols.is_multiple_of(32)
        || wrow < nb * F::BS
        || (nr > 0 && w.len() < (nr - 1) * wrow + nb * F::BS)
        || a.len() < Gemv::prepared_bytes(cols)
        || out.len() < nr
    {
        return false;
    }
    // SAFETY: `gemv` hands this kernel out only when `supported()` confirmed every feature
    // it is compiled for; the lengths were checked above.
    unsafe { rows::<F>(nb, w, wrow, nr, a, out) };
    true
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg")]
unsafe fn rows<F: Format>(nb: usize, w: &[u8], wrow: usize, nr: usize, a: &[u8], out: &mut [f32]) {
    let c = consts();
    let full = nb / 4;
    let rem = nb % 4;
    let ahead = ahead();
    let gs = 4 * F::BS;
    let pa = a.as_ptr();
    for (r, o) in out.iter_mut().enumerate().take(nr) {
        // SAFETY (all pointer arithmetic below): row r's nb blocks lie inside `w`, and the
        // prepared row has every group of it.
        let x = w.as_ptr().add(r * wrow);
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut accm = _mm512_setzero_ps();
        let mut g = 0;
        let at = |g: usize| {
            let xg = x.add(g * gs);
            if ahead > 0 {
                prefetch(xg.wrapping_add(ahead), gs);
            }
            xg
        };
        while g + 2 <= full {
            group::<F>(at(g), 4, pa.add(g * PREP_GROUP), &c, &mut acc0, &mut accm);
            group::<F>(
                at(g + 1),
                4,
                pa.add((g + 1) * PREP_GROUP),
                &c,
                &mut acc1,
                &mut accm,
            );
            g += 2;
        }
        if g < full {
            group::<F>(at(g), 4, pa.add(g * PREP_GROUP), &c, &mut acc0, &mut accm);
        }
        if rem > 0 {
            let x = x.add(full * gs);
            group::<F>(x, rem, pa.add(full * PREP_GROUP), &c, &mut acc1, &mut accm);
        }
        let mut v = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        if F::MIN {
            v += _mm512_reduce_add_ps(accm);
        }
        *o = v;
    }
}

fn prepare<F: Format>(cols: usize, xq: &[u8], dst: &mut [u8]) -> bool {
    let nb = cols / 32;
    let (bs, qo) = if F::MIN { (36, 4) } else { (34, 2) };
    if !cols.is_multiple_of(32) || xq.len() < nb * bs || dst.len() < Gemv::prepared_bytes(cols) {
        return false;
    }
    let block = |b: usize| {
        let blk = &xq[b * bs..(b + 1) * bs];
        let s = if F::MIN {
            F16([blk[2], blk[3]]).to_f32()
        } else {
            0.0
        };
        (&blk[qo..qo + 32], F16([blk[0], blk[1]]).to_f32(), s)
    };
    // SAFETY: `gemv` hands this out only when `supported()`; lengths checked above.
    unsafe { prepare_blocks(nb, F::OFFSET, dst, block) };
    true
}

/// `prepare` for Q8_K activations (IQ4_XS): each super-block's `d` for its eight blocks.
fn prepare_q8k(cols: usize, xq: &[u8], dst: &mut [u8]) -> bool {
    const Q8K: usize = 292;
    let nsb = cols / 256;
    if !cols.is_multiple_of(256) || xq.len() < nsb * Q8K || dst.len() < Gemv::prepared_bytes(cols) {
        return false;
    }
    let block = |b: usize| {
        let sb = &xq[(b / 8) * Q8K..(b / 8 + 1) * Q8K];
        let q = 4 + 32 * (b % 8);
        (
            &sb[q..q + 32],
            f32::from_le_bytes([sb[0], sb[1], sb[2], sb[3]]),
            0.0,
        )
    };
    // SAFETY: as in `prepare`.
    unsafe { prepare_blocks(cols / 32, Iq4Nl::OFFSET, dst, block) };
    true
}

/// Writes the prepared groups of `nb` blocks of 32 activations; `block(b)` gives block b's
/// quants, scale and (Q8_1) sum. Blocks past `nb` in the last group are zero.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg")]
unsafe fn prepare_blocks<'a>(
    nb: usize,
    offset: i32,
    dst: &mut [u8],
    block: impl Fn(usize) -> (&'a [u8], f32, f32),
) {
    let ones = _mm_set1_epi8(1);
    let neg_offset = _mm_set1_epi32(-offset);
    for g in 0..nb.div_ceil(4) {
        let p = dst.as_mut_ptr().add(g * PREP_GROUP);
        for k in 0..4 {
            let b = 4 * g + k;
            let (lo, hi, d, s) = if b < nb {
                let (q, d, s) = block(b);
                let q = q.as_ptr();
                (
                    _mm_loadu_si128(q as *const __m128i),
                    _mm_loadu_si128(q.add(16) as *const __m128i),
                    d,
                    s,
                )
            } else {
                (_mm_setzero_si128(), _mm_setzero_si128(), 0.0, 0.0)
            };
            // SAFETY: the group's PREP_GROUP bytes lie inside `dst` (checked by the callers).
            _mm_storeu_si128(p.add(16 * k) as *mut __m128i, lo);
            _mm_storeu_si128(p.add(64 + 16 * k) as *mut __m128i, hi);
            let sums = _mm_dpbusd_epi32(_mm_dpbusd_epi32(_mm_setzero_si128(), ones, lo), ones, hi);
            _mm_storeu_si128(
                p.add(128 + 16 * k) as *mut __m128i,
                _mm_mullo_epi32(sums, neg_offset),
            );
            _mm_storeu_ps(p.add(192 + 16 * k) as *mut f32, _mm_set1_ps(d));
            _mm_storeu_ps(
                p.add(256 + 16 * k) as *mut f32,
                _mm_setr_ps(s, 0.0, 0.0, 0.0),
            );
        }
    }
}

/// IQ4_XS against Q8_K: super-blocks of 256 values whose eight blocks of 32 are IQ4_NL blocks
/// with 6-bit scales `ls - 32` under one f16 `d`; two groups per super-block.
fn run_iq4xs(cols: usize, w: &[u8], wrow: usize, nr: usize, a: &[u8], out: &mut [f32]) -> bool {
    let nsb = cols / 256;
    if !cols.is_multiple_of(256)
        || wrow < nsb * IQ4XS_BS
        || (nr > 0 && w.len() < (nr - 1) * wrow + nsb * IQ4XS_BS)
        || a.len() < Gemv::prepared_bytes(cols)
        || out.len() < nr
    {
        return false;
    }
    // SAFETY: as in `run`.
    unsafe { rows_iq4xs(nsb, w, wrow, nr, a, out) };
    true
}

const IQ4XS_BS: usize = 136;

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg")]
unsafe fn rows_iq4xs(nsb: usize, w: &[u8], wrow: usize, nr: usize, a: &[u8], out: &mut [f32]) {
    let c = consts();
    let ahead = ahead();
    let upper = _mm512_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7);
    let shift_l = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    let shift_h = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    let pa = a.as_ptr();
    let nib = _mm512_set1_epi8(0x0F);
    for (r, o) in out.iter_mut().enumerate().take(nr) {
        // SAFETY (all pointer arithmetic below): row r's super-blocks lie inside `w`, and
        // the prepared row has both groups of each.
        let x = w.as_ptr().add(r * wrow);
        let mut acc = [_mm512_setzero_ps(); 2];
        for sb in 0..nsb {
            let xb = x.add(sb * IQ4XS_BS);
            if ahead > 0 {
                prefetch(xb.wrapping_add(ahead), IQ4XS_BS);
            }
            // The eight scales d * (ls - 32), ls = 4 low bits from scales_l, 2 high from
            // scales_h.
            let sl = _mm256_set1_epi32(u32_at(xb.add(4)) as i32);
            let sh = _mm256_set1_epi32(u16_at(xb.add(2)) as i32);
            let ls = _mm256_or_si256(
                _mm256_and_si256(_mm256_srlv_epi32(sl, shift_l), _mm256_set1_epi32(0xF)),
                _mm256_slli_epi32::<4>(_mm256_and_si256(
                    _mm256_srlv_epi32(sh, shift_h),
                    _mm256_set1_epi32(3),
                )),
            );
            let d = F16([*xb, *xb.add(1)]).to_f32();
            let scales = _mm512_castps256_ps512(_mm256_mul_ps(
                _mm256_cvtepi32_ps(_mm256_sub_epi32(ls, _mm256_set1_epi32(32))),
                _mm256_set1_ps(d),
            ));
            for (h, acc) in acc.iter_mut().enumerate() {
                // Four 16-byte loads, as `lanes`, though these 64 bytes are contiguous.
                let l = |k: usize| _mm_loadu_si128(xb.add(8 + 64 * h + 16 * k) as *const __m128i);
                let q = _mm512_inserti32x4::<1>(_mm512_castsi128_si512(l(0)), l(1));
                let q = _mm512_inserti32x4::<3>(_mm512_inserti32x4::<2>(q, l(2)), l(3));
                let lo = _mm512_shuffle_epi8(c.table, _mm512_and_si512(q, nib));
                let hi =
                    _mm512_shuffle_epi8(c.table, _mm512_and_si512(_mm512_srli_epi16::<4>(q), nib));
                let p = pa.add((2 * sb + h) * PREP_GROUP);
                let load = |o: usize| _mm512_loadu_si512(p.add(o) as *const _);
                let s = _mm512_dpbusd_epi32(load(128), lo, load(0));
                let s = _mm512_dpbusd_epi32(s, hi, load(64));
                let idx = if h == 0 { c.quarter } else { upper };
                let dd = _mm512_mul_ps(
                    _mm512_permutexvar_ps(idx, scales),
                    _mm512_loadu_ps(p.add(192) as *const f32),
                );
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), dd, *acc);
            }
        }
        *o = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
    }
}
