//! Batched dot products of Q8_0 and Q4_1 weights: 16 weight rows in the 16 lanes of a register,
//! 4 activation vectors per step. A group of 16 rows is unpacked once into unsigned bytes,
//! interleaved four bytes per row (as ggml's repacked `gemm` kernels), so one `vpdpbusd` with
//! a broadcast activation word advances 16 rows; the unpacking is shared by every vector of
//! the batch, and each activation word by 16 rows. The integer block sums are those of
//! `legacy::dot_pairs` (weights `u - 128` for Q8_0, unsigned with a min for Q4_1); only the
//! float summation order differs.

use crate::quant::blocks::F16;
use crate::quant::GgmlType;
use std::arch::x86_64::*;

/// Rows per group.
pub const ROWS: usize = 16;
const COLS: usize = 4;

/// `put(r, c, dot(w row r, a row c))` for `r < nr`, `c < nc`; rows are `wrow` and `xrow`
/// bytes apart, `w` holds `nr` rows and `a` `nc` activation rows (of the weights' dot type).
/// Returns false, having called `put` for nothing, when the shapes are not ones it handles
/// (more than 16 rows, rows that are not whole blocks, buffers too short): the caller then
/// computes those rows another way.
pub type GemmFn = fn(
    cols: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    a: &[u8],
    xrow: usize,
    nc: usize,
    put: &mut dyn FnMut(usize, usize, f32),
) -> bool;

/// The batched kernel of `ty` when the avx512 path is the selected one.
pub fn gemm(ty: GgmlType) -> Option<GemmFn> {
    if crate::quant::arch::selected() != crate::quant::arch::Path::Avx512
        || !super::super::has_avx512()
    {
        return None;
    }
    match ty {
        GgmlType::Q8_0 => Some(gemm_q8_0),
        GgmlType::Q4_1 => Some(gemm_q4_1),
        _ => None,
    }
}

fn f16(p: &[u8]) -> f32 {
    F16([p[0], p[1]]).to_f32()
}

#[allow(clippy::too_many_arguments)]
fn gemm_q8_0(
    cols: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    a: &[u8],
    xrow: usize,
    nc: usize,
    put: &mut dyn FnMut(usize, usize, f32),
) -> bool {
    gemm_checked(false, cols, w, wrow, nr, a, xrow, nc, put)
}

#[allow(clippy::too_many_arguments)]
fn gemm_q4_1(
    cols: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    a: &[u8],
    xrow: usize,
    nc: usize,
    put: &mut dyn FnMut(usize, usize, f32),
) -> bool {
    gemm_checked(true, cols, w, wrow, nr, a, xrow, nc, put)
}

#[allow(clippy::too_many_arguments)]
fn gemm_checked(
    min: bool,
    cols: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    a: &[u8],
    xrow: usize,
    nc: usize,
    put: &mut dyn FnMut(usize, usize, f32),
) -> bool {
    let (bs, ybs) = if min { (20, 36) } else { (34, 34) };
    let nb = cols / 32;
    if !cols.is_multiple_of(32) || nb == 0 || nr == 0 || nc == 0 || nr > ROWS {
        return false;
    }
    if wrow < nb * bs
        || xrow < nb * ybs
        || w.len() < (nr - 1) * wrow + nb * bs
        || a.len() < (nc - 1) * xrow + nb * ybs
    {
        return false;
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        gemm_group(
            min,
            bs,
            ybs,
            nb,
            w,
            wrow,
            nr,
            a,
            xrow,
            nc,
            put,
            &mut scratch,
        )
    });
    true
}

/// Buffers of one thread, grown to the largest shape seen and reused, so that a matmul
/// allocates nothing once its first call has run.
#[derive(Default)]
struct Scratch {
    wq: Vec<u8>,
    dw: Vec<f32>,
    mw: Vec<f32>,
    dy: Vec<f32>,
    sy: Vec<f32>,
    start: Vec<i32>,
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

#[allow(clippy::too_many_arguments)]
fn gemm_group(
    min: bool,
    bs: usize,
    ybs: usize,
    nb: usize,
    w: &[u8],
    wrow: usize,
    nr: usize,
    a: &[u8],
    xrow: usize,
    nc: usize,
    put: &mut dyn FnMut(usize, usize, f32),
    scratch: &mut Scratch,
) {
    let Scratch {
        wq,
        dw,
        mw,
        dy,
        sy,
        start,
    } = scratch;
    // Unpack: block b, word g, row j -> 4 unsigned bytes at ((b * 8 + g) * 16 + j) * 4.
    let wq = prefix(wq, nb * 512);
    let dw = prefix(dw, nb * ROWS);
    let mw = prefix(mw, nb * ROWS);
    for j in 0..ROWS {
        let row = &w[j.min(nr - 1) * wrow..][..nb * bs];
        for (b, blk) in row.chunks_exact(bs).enumerate() {
            dw[b * ROWS + j] = f16(blk);
            let mut u = [0u8; 32];
            if min {
                mw[b * ROWS + j] = f16(&blk[2..]);
                for k in 0..16 {
                    u[k] = blk[4 + k] & 0x0F;
                    u[16 + k] = blk[4 + k] >> 4;
                }
            } else {
                for k in 0..32 {
                    u[k] = blk[2 + k] ^ 0x80;
                }
            }
            for g in 0..8 {
                let o = ((b * 8 + g) * ROWS + j) * 4;
                wq[o..o + 4].copy_from_slice(&u[4 * g..4 * g + 4]);
            }
        }
    }
    // Per activation block: d, the Q8_1 sum term, and the Q8_0 offset start -128 * sum(q).
    let dy = prefix(dy, nc * nb);
    let sy = prefix(sy, nc * nb);
    let start = prefix(start, nc * nb);
    for c in 0..nc {
        let row = &a[c * xrow..][..nb * ybs];
        for (b, blk) in row.chunks_exact(ybs).enumerate() {
            dy[c * nb + b] = f16(blk);
            if min {
                sy[c * nb + b] = f16(&blk[2..]);
            } else {
                start[c * nb + b] = -128 * blk[2..34].iter().map(|&q| q as i8 as i32).sum::<i32>();
            }
        }
    }
    let yq = if min { 4 } else { 2 };
    let mut c0 = 0;
    while c0 < nc {
        let cs: [usize; COLS] = std::array::from_fn(|k| (c0 + k).min(nc - 1));
        let ya: [&[u8]; COLS] = std::array::from_fn(|k| &a[cs[k] * xrow..][..nb * ybs]);
        let p: [[&[f32]; COLS]; 3] = [
            std::array::from_fn(|k| &dy[cs[k] * nb..][..nb]),
            std::array::from_fn(|k| &sy[cs[k] * nb..][..nb]),
            std::array::from_fn(|k| unsafe_cast(&start[cs[k] * nb..][..nb])),
        ];
        // SAFETY: `gemm` hands these out only when the CPU has AVX-512 F/BW/VL/VNNI; every
        // slice holds `nb` blocks (checked and cut above).
        let res = unsafe { kernel(min, nb, ybs, yq, wq, dw, mw, ya, p) };
        for (k, col) in res.iter().enumerate() {
            if c0 + k < nc {
                for (j, &v) in col.iter().enumerate().take(nr) {
                    put(j, c0 + k, v);
                }
            }
        }
        c0 += COLS;
    }
}

/// The i32 starts travel as their bits in an f32 slice, to share one array type.
fn unsafe_cast(s: &[i32]) -> &[f32] {
    // SAFETY: i32 and f32 have the same size and alignment, and every bit pattern is an f32.
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const f32, s.len()) }
}

#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn kernel(
    min: bool,
    nb: usize,
    ybs: usize,
    yq: usize,
    wq: &[u8],
    dw: &[f32],
    mw: &[f32],
    ya: [&[u8]; COLS],
    p: [[&[f32]; COLS]; 3],
) -> [[f32; ROWS]; COLS] {
    let mut acc = [_mm512_setzero_ps(); COLS];
    let pw = wq.as_ptr();
    for b in 0..nb {
        let mut s0 = [_mm512_setzero_si512(); COLS];
        let mut s1 = [_mm512_setzero_si512(); COLS];
        if !min {
            for k in 0..COLS {
                s0[k] = _mm512_set1_epi32(p[2][k][b].to_bits() as i32);
            }
        }
        for g in (0..8).step_by(2) {
            let w0 = _mm512_loadu_si512(pw.add((b * 8 + g) * 64) as *const _);
            let w1 = _mm512_loadu_si512(pw.add((b * 8 + g + 1) * 64) as *const _);
            for k in 0..COLS {
                let y = ya[k].as_ptr().add(b * ybs + yq + 4 * g);
                let y0 = _mm512_set1_epi32((y as *const i32).read_unaligned());
                let y1 = _mm512_set1_epi32((y.add(4) as *const i32).read_unaligned());
                s0[k] = _mm512_dpbusd_epi32(s0[k], w0, y0);
                s1[k] = _mm512_dpbusd_epi32(s1[k], w1, y1);
            }
        }
        let d = _mm512_loadu_ps(dw.as_ptr().add(b * ROWS));
        let m = _mm512_loadu_ps(mw.as_ptr().add(b * ROWS));
        for k in 0..COLS {
            let s = _mm512_cvtepi32_ps(_mm512_add_epi32(s0[k], s1[k]));
            let dd = _mm512_mul_ps(d, _mm512_set1_ps(p[0][k][b]));
            acc[k] = _mm512_fmadd_ps(s, dd, acc[k]);
            if min {
                acc[k] = _mm512_fmadd_ps(m, _mm512_set1_ps(p[1][k][b]), acc[k]);
            }
        }
    }
    let mut res = [[0f32; ROWS]; COLS];
    for k in 0..COLS {
        _mm512_storeu_ps(res[k].as_mut_ptr(), acc[k]);
    }
    res
}
