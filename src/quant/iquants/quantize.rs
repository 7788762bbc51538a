//! The i-quant quantizers: a search over scales for the lattice point nearest to each group of
//! values, as ggml's `quantize_row_iq*_impl` (ggml-quants.c) do, step for step, so that the
//! bytes come out identical.
//!
//! The lattices (`iq2xs_init_impl`, `iq3xs_init_impl`): each grid point is a vector of levels
//! `l` (coordinates `2l + 1`); `map` sends a packed vector of levels to its grid index, or,
//! for a vector off the grid, to its list of nearest grid points. They are built once.

use super::grids::*;
use std::sync::OnceLock;
use super::QK_K;

/// `GROUP_MAX_EPS*`: a group whose largest magnitude is below this quantizes to zero.
const GROUP_MAX_EPS: f32 = 1e-15;
const GROUP_MAX_EPS_IQ3_XXS: f32 = 1e-8;
const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;
const GROUP_MAX_EPS_IQ1_M: f32 = 1e-7;
const GROUP_MAX_EPS_IQ1_S: f32 = 1e-12;

/// ggml's `nearest_int`: round to nearest, ties to even, by the 1.5 * 2^23 trick (valid for
/// |x| < 2^22; other inputs give the same arbitrary value ggml's gives).
#[inline]
pub(super) fn nearest_int(x: f32) -> i32 {
    let v = x + 12582912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// ggml's `MAX(a, b)`: `a > b ? a : b` (differs from `f32::max` on NaN).
#[inline]
fn fmax(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// A lattice: grid points as coordinates, and the map from packed levels to grid indices or
/// neighbour lists.
pub(super) struct Lattice {
    /// Coordinates per point (8 or 4).
    dim: usize,
    /// Bits per packed level (2 or 3).
    bits: u32,
    /// `dim` coordinates `2l + 1` per grid point.
    pos: Vec<i8>,
    /// Packed levels -> grid index (>= 0), or -(offset + 1) of a neighbour list, or
    /// `i32::MIN` where no quantizer can land (levels above `max_level`).
    map: Vec<i32>,
    /// Neighbour lists: a count, then that many grid indices.
    neighbours: Vec<u16>,
}

impl Lattice {
    /// `iq2xs_init_impl` / `iq3xs_init_impl`: `kgrid` packs the levels of each grid point;
    /// each off-grid vector gets the grid points at its `nwant` smallest squared distances,
    /// ordered by (distance, index). Only vectors with every level at most `max_level` get
    /// a list: the quantizers clamp their levels to that range, so no other is looked up.
    fn new(kgrid: &[u16], dim: usize, bits: u32, nwant: usize, max_level: usize) -> Lattice {
        let mask = (1usize << bits) - 1;
        let levels = |packed: usize, k: usize| (packed >> (bits as usize * k)) & mask;
        let mut pos = Vec::with_capacity(kgrid.len() * dim);
        for &g in kgrid {
            for k in 0..dim {
                pos.push(2 * levels(g as usize, k) as i8 + 1);
            }
        }
        let map_size = 1usize << (bits as usize * dim);
        let mut map = vec![i32::MIN; map_size];
        for (j, &g) in kgrid.iter().enumerate() {
            map[g as usize] = j as i32;
        }
        let mut neighbours = Vec::new();
        let mut d2 = vec![0i32; kgrid.len()];
        let mut p = vec![0i32; dim];
        for (u, slot) in map.iter_mut().enumerate() {
            if *slot >= 0 || (0..dim).any(|k| levels(u, k) > max_level) {
                continue;
            }
            for (k, pk) in p.iter_mut().enumerate() {
                *pk = 2 * levels(u, k) as i32 + 1;
            }
            for (j, d) in d2.iter_mut().enumerate() {
                *d = pos[j * dim..(j + 1) * dim]
                    .iter()
                    .zip(&p)
                    .map(|(&g, &pk)| (g as i32 - pk) * (g as i32 - pk))
                    .sum();
            }
            // the nwant smallest distinct distances, ascending
            let mut nearest: Vec<i32> = Vec::with_capacity(nwant + 1);
            for &d in &d2 {
                if nearest.contains(&d) {
                    continue;
                }
                let at = nearest.partition_point(|&v| v < d);
                if at < nwant {
                    nearest.insert(at, d);
                    nearest.truncate(nwant);
                }
            }
            *slot = -(neighbours.len() as i32 + 1);
            let start = neighbours.len();
            neighbours.push(0);
            for &v in &nearest {
                for (j, &d) in d2.iter().enumerate() {
                    if d == v {
                        neighbours.push(j as u16);
                    }
                }
            }
            neighbours[start] = (neighbours.len() - start - 1) as u16;
        }
        Lattice {
            dim,
            bits,
            pos,
            map,
            neighbours,
        }
    }

    /// The coordinates `2l + 1` of grid point `j`.
    #[inline]
    fn point(&self, j: usize) -> &[i8] {
        &self.pos[j * self.dim..(j + 1) * self.dim]
    }

    /// Packs a vector of levels into a map index.
    #[inline]
    fn pack(&self, l: &[i8]) -> usize {
        let mask = (1usize << self.bits) - 1;
        l.iter().enumerate().fold(0, |u, (k, &v)| {
            u | ((v as usize & mask) << (self.bits as usize * k))
        })
    }

    /// The grid index of packed levels `u`, if they are a grid point.
    #[inline]
    fn index(&self, u: usize) -> Option<usize> {
        let m = self.map[u];
        (m >= 0).then_some(m as usize)
    }

    /// The neighbour list of off-grid packed levels `u` (empty where none was built).
    #[inline]
    fn neighbours(&self, u: usize) -> &[u16] {
        let m = self.map[u];
        if m >= 0 || m == i32::MIN {
            return &[];
        }
        let at = (-(m + 1)) as usize;
        let n = self.neighbours[at] as usize;
        &self.neighbours[at + 1..at + 1 + n]
    }

    /// Writes the levels of grid point `j` to `l`.
    #[inline]
    fn levels_of(&self, j: usize, l: &mut [i8]) {
        for (l, &p) in l.iter_mut().zip(self.point(j)) {
            *l = (p - 1) / 2;
        }
    }

    /// `iq2_find_best_neighbour` / `iq3_find_best_neighbour`: the neighbour of `u` with the
    /// smallest weighted squared error at `scale`; writes its levels to `l`.
    fn best_neighbour(&self, u: usize, xval: &[f32], w: &[f32], scale: f32, l: &mut [i8]) -> usize {
        let list = self.neighbours(u);
        let mut best_d2 = f32::MAX;
        // ggml aborts when no distance is below FLT_MAX (NaN or infinite inputs); the first
        // neighbour stands in.
        let mut best = list.first().map_or(0, |&j| j as usize);
        for &j in list {
            let mut d2 = 0f32;
            for ((&p, &x), &w) in self.point(j as usize).iter().zip(xval).zip(w) {
                let diff = scale * p as f32 - x;
                d2 += w * diff * diff;
            }
            if d2 < best_d2 {
                best_d2 = d2;
                best = j as usize;
            }
        }
        self.levels_of(best, l);
        best
    }

    /// The grid index of the levels `l`; levels off the grid (only reachable from non-finite
    /// inputs, where ggml aborts) give index 0.
    #[inline]
    fn index_of(&self, l: &[i8]) -> usize {
        self.index(self.pack(l)).unwrap_or(0)
    }
}

macro_rules! lattice {
    ($name:ident, $kgrid:expr, $dim:expr, $bits:expr, $nwant:expr, $max_level:expr) => {
        pub(super) fn $name() -> &'static Lattice {
            static L: OnceLock<Lattice> = OnceLock::new();
            L.get_or_init(|| Lattice::new(&$kgrid, $dim, $bits, $nwant, $max_level))
        }
    };
}
// The quantizers clamp levels to kMaxQ - 1: 2 for the 2-bit grids, 7 for the 3-bit ones.
lattice!(iq2xxs_lattice, KGRID_IQ2XXS, 8, 2, 2, 2);
lattice!(iq2xs_lattice, KGRID_IQ2XS, 8, 2, 2, 2);
lattice!(iq2s_lattice, KGRID_IQ2S, 8, 2, 1, 2);
lattice!(iq1s_lattice, KGRID_IQ1S, 8, 2, 3, 2);
lattice!(iq3xxs_lattice, KGRID_IQ3XXS, 4, 3, 2, 7);
lattice!(iq3s_lattice, KGRID_IQ3S, 4, 3, 3, 7);

/// When the final pass snaps groups back onto the grid at the chosen scale.
#[derive(Clone, Copy, PartialEq)]
enum Refine {
    /// Every group, whenever the scale is positive (IQ2_XXS).
    Always,
    /// The groups the best trial left off the grid (IQ2_XS, IQ2_S, IQ3_XXS).
    OffGrid,
    /// Every group, if any was left off the grid (IQ3_S).
    AllIfAnyOff,
}

/// The parameters of the scale search of one type.
struct Search {
    lattice: &'static Lattice,
    /// `kMaxQ`: levels are clamped to `0..kMaxQ`.
    kmaxq: i32,
    /// The trial scales `(2 kMaxQ - 1 + is * step) / max` for `is` in `steps`.
    steps: std::ops::RangeInclusive<i32>,
    step: f32,
    /// The initial on-grid flags of the groups.
    on_grid_init: bool,
    refine: Refine,
}

/// `sumqx = sum w x q`, `sumq2 = sum w q^2` with `q = 2l + 1`.
#[inline]
fn lattice_sums(weight: &[f32], xval: &[f32], l: &[i8]) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for ((&w, &x), &l) in weight.iter().zip(xval).zip(l) {
        let q = (2 * l as i32 + 1) as f32;
        sumqx += w * x * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// The scale search shared by the IQ2 and IQ3 quantizers: tries the scales of `s`, snapping
/// each group of `xval` (magnitudes) to the lattice, keeps the best levels in `l`, then
/// refines. `max` divides the trial scales; `scale` is the starting scale. Returns the scale.
fn lattice_search(
    s: &Search,
    xval: &[f32],
    weight: &[f32],
    waux: &[f32],
    l: &mut [i8],
    max: f32,
    mut scale: f32,
) -> f32 {
    let lat = s.lattice;
    let dim = lat.dim;
    let n = xval.len();
    let groups = n / dim;
    let mut laux = [0i8; 32];
    let laux = &mut laux[..n];
    let mut on_grid = [s.on_grid_init; 8];
    let mut on_grid_aux = [true; 8];
    let mut best = 0f32;
    let rounded = |id: f32, x: f32| nearest_int(0.5 * (id * x - 1.0)).clamp(0, s.kmaxq - 1) as i8;
    for is in s.steps.clone() {
        let id = ((2 * s.kmaxq - 1) as f32 + is as f32 * s.step) / max;
        let this_scale = 1.0 / id;
        for k in 0..groups {
            let r = k * dim..(k + 1) * dim;
            for i in r.clone() {
                laux[i] = rounded(id, xval[i]);
            }
            let u = lat.pack(&laux[r.clone()]);
            on_grid_aux[k] = lat.index(u).is_some();
            if !on_grid_aux[k] {
                lat.best_neighbour(
                    u,
                    &xval[r.clone()],
                    &waux[r.clone()],
                    this_scale,
                    &mut laux[r],
                );
            }
        }
        let (sumqx, sumq2) = lattice_sums(weight, xval, laux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            l.copy_from_slice(laux);
            on_grid[..groups].copy_from_slice(&on_grid_aux[..groups]);
        }
    }
    let any_off = on_grid[..groups].iter().any(|&on| !on);
    let refine = match s.refine {
        Refine::Always => scale > 0.0,
        Refine::OffGrid | Refine::AllIfAnyOff => any_off && scale > 0.0,
    };
    if refine {
        let id = 1.0 / scale;
        for k in 0..groups {
            if s.refine == Refine::OffGrid && on_grid[k] {
                continue;
            }
            let r = k * dim..(k + 1) * dim;
            let mut lk = [0i8; 8];
            for (lk, &x) in lk.iter_mut().zip(&xval[r.clone()]) {
                *lk = rounded(id, x);
            }
            let u = lat.pack(&lk[..dim]);
            match lat.index(u) {
                Some(j) => lat.levels_of(j, &mut l[r]),
                None => {
                    lat.best_neighbour(u, &xval[r.clone()], &waux[r.clone()], scale, &mut l[r]);
                }
            }
        }
        let (sumqx, sumq2) = lattice_sums(weight, xval, l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    scale
}

/// Magnitudes of a group of 8 and the bit pattern of its negative values. With `even`, the
/// pattern is made even by flipping the value with the smallest `w x^2` (the IQ2_XXS, IQ2_XS
/// and IQ3_XXS sign codes store 7 bits, the 8th is the parity); returns the 7 stored bits.
fn signs8(xb: &[f32], weight: &[f32], xval: &mut [f32], even: bool) -> u8 {
    let mut s = 0u8;
    let mut nflip = 0;
    for i in 0..8 {
        if xb[i] >= 0.0 {
            xval[i] = xb[i];
        } else {
            xval[i] = -xb[i];
            nflip += 1;
            s |= 1 << i;
        }
    }
    if !even {
        return s;
    }
    if nflip % 2 == 1 {
        let mut imin = 0;
        let mut min = weight[0] * xb[0] * xb[0];
        for i in 1..8 {
            let ax = weight[i] * xb[i] * xb[i];
            if ax < min {
                min = ax;
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= 1 << imin;
    }
    s & 127
}

/// `sum x^2` over a super-block.
#[inline]
fn sum_sq(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |s, &v| s + v * v)
}

/// The 4-bit group scale `nearest_int(0.5 (scale / d - 1))` clamped to `0..=max`.
#[inline]
fn group_scale(id: f32, scale: f32, max: i32) -> u32 {
    nearest_int(0.5 * (id * scale - 1.0)).clamp(0, max) as u32
}

// ---- IQ3_XXS, IQ3_S

/// `quantize_row_iq3_xxs_impl(256, ...)`
pub(super) fn quantize_iq3_xxs(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    use super::BlockIQ3XXS;
    let search = Search {
        lattice: iq3xxs_lattice(),
        kmaxq: 8,
        steps: -15..=15,
        step: 0.2,
        on_grid_init: true,
        refine: Refine::OffGrid,
    };
    let blocks: &mut [BlockIQ3XXS] = bytemuck::cast_slice_mut(dst);
    for (ibl, (xbl, y)) in src.chunks_exact(QK_K).zip(blocks).enumerate() {
        let sigma2 = 2.0 * sum_sq(xbl) / QK_K as f32;
        let mut q3 = [0u8; 3 * QK_K / 8];
        let mut scales = [0f32; 8];
        let mut max_scale = 0f32;
        for (ib, xb) in xbl.chunks_exact(32).enumerate() {
            let mut weight = [0f32; 32];
            match imatrix {
                Some(qw) => {
                    let qw = &qw[QK_K * ibl + 32 * ib..];
                    for i in 0..32 {
                        weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
                    }
                }
                None => {
                    for i in 0..32 {
                        weight[i] = xb[i] * xb[i];
                    }
                }
            }
            let waux = weight.map(f32::sqrt);
            let mut xval = [0f32; 32];
            let mut signs = [0u8; 4];
            for k in 0..4 {
                let r = 8 * k..8 * k + 8;
                signs[k] = signs8(&xb[r.clone()], &weight[r.clone()], &mut xval[r], true);
            }
            let max = xval[1..].iter().fold(xval[0], |m, &v| fmax(m, v));
            if max < GROUP_MAX_EPS_IQ3_XXS {
                continue;
            }
            let mut l = [0i8; 32];
            let mut scale = lattice_search(
                &search,
                &xval,
                &weight,
                &waux,
                &mut l,
                max,
                max / (2 * search.kmaxq - 1) as f32,
            );
            if scale < 0.0 {
                scale = -scale;
                for s in &mut signs {
                    *s = !*s & 127;
                }
            }
            for k in 0..8 {
                q3[8 * ib + k] = search.lattice.index_of(&l[4 * k..4 * k + 4]) as u8;
            }
            let aux = signs[0] as u32
                | (signs[1] as u32) << 7
                | (signs[2] as u32) << 14
                | (signs[3] as u32) << 21;
            q3[64 + 4 * ib..64 + 4 * ib + 4].copy_from_slice(&aux.to_le_bytes());
            scales[ib] = scale;
            max_scale = fmax(max_scale, scale);
        }
        if max_scale == 0.0 {
            *y = bytemuck::Zeroable::zeroed();
            continue;
        }
        let d = max_scale / 31.0;
        y.d = super::F16::from_f32(d * 1.0125);
        let id = 1.0 / d;
        for ib in 0..8 {
            let l = group_scale(id, scales[ib], 15);
            q3[64 + 4 * ib + 3] |= (l << 4) as u8;
        }
        y.qs = q3;
    }
}

/// `quantize_row_iq3_s_impl(32, ...)`
pub(super) fn quantize_iq3_s(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    use super::BlockIQ3S;
    let search = Search {
        lattice: iq3s_lattice(),
        kmaxq: 8,
        steps: -9..=9,
        step: 0.2,
        on_grid_init: false,
        refine: Refine::AllIfAnyOff,
    };
    let blocks: &mut [BlockIQ3S] = bytemuck::cast_slice_mut(dst);
    for (ibl, (xbl, y)) in src.chunks_exact(QK_K).zip(blocks).enumerate() {
        *y = bytemuck::Zeroable::zeroed();
        let sigma2 = 2.0 * sum_sq(xbl) / QK_K as f32;
        let mut scales = [0f32; 8];
        let mut max_scale = 0f32;
        // ggml advances its qs and signs pointers only past groups that were not all zero,
        // so the groups after an all-zero one are stored one slot early.
        let mut slot = 0;
        for (ib, xb) in xbl.chunks_exact(32).enumerate() {
            let mut weight = [0f32; 32];
            match imatrix {
                Some(qw) => {
                    let qw = &qw[QK_K * ibl + 32 * ib..];
                    for i in 0..32 {
                        weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
                    }
                }
                None => {
                    for i in 0..32 {
                        weight[i] = xb[i] * xb[i];
                    }
                }
            }
            let waux = weight.map(f32::sqrt);
            let mut xval = [0f32; 32];
            let mut signs = [0u8; 4];
            for k in 0..4 {
                let r = 8 * k..8 * k + 8;
                signs[k] = signs8(&xb[r.clone()], &weight[r.clone()], &mut xval[r], false);
            }
            let max = xval[1..].iter().fold(xval[0], |m, &v| fmax(m, v));
            if max == 0.0 {
                continue;
            }
            let mut l = [0i8; 32];
            let mut scale = lattice_search(
                &search,
                &xval,
                &weight,
                &waux,
                &mut l,
                max,
                max / (2 * search.kmaxq - 1) as f32,
            );
            if scale < 0.0 {
                scale = -scale;
                for s in &mut signs {
                    *s = !*s;
                }
            }
            for k in 0..8 {
                let j = search.lattice.index_of(&l[4 * k..4 * k + 4]);
                y.qs[8 * slot + k] = (j & 255) as u8;
                y.qh[ib] |= ((j >> 8) << k) as u8;
            }
            y.signs[4 * slot..4 * slot + 4].copy_from_slice(&signs);
            slot += 1;
            scales[ib] = scale;
            max_scale = fmax(max_scale, scale);
        }
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        y.d = super::F16::from_f32(d * 1.033);
        let id = 1.0 / d;
        for ib in (0..8).step_by(2) {
            let l1 = group_scale(id, scales[ib], 15);
            let l2 = group_scale(id, scales[ib + 1], 15);
            y.scales[ib / 2] = (l1 | l2 << 4) as u8;
        }
    }
}

/// The importance of each value of a group: `qw sqrt(sigma2 + x^2)` with the importance matrix
/// `qw`, else `plain(x)`.
#[inline]
fn group_weights(
    weight: &mut [f32],
    xb: &[f32],
    qw: Option<&[f32]>,
    sigma2: f32,
    plain: impl Fn(f32) -> f32,
) {
    match qw {
        Some(qw) => {
            for ((w, &x), &q) in weight.iter_mut().zip(xb).zip(qw) {
                *w = q * (sigma2 + x * x).sqrt();
            }
        }
        None => {
            for (w, &x) in weight.iter_mut().zip(xb) {
                *w = plain(x);
            }
        }
    }
}

/// The importance-matrix slice of group `ib` (of `size` values) of super-block `ibl`.
#[inline]
fn imatrix_at(imatrix: Option<&[f32]>, ibl: usize, size: usize, ib: usize) -> Option<&[f32]> {
    imatrix.map(|w| &w[QK_K * ibl + size * ib..QK_K * ibl + size * (ib + 1)])
}

/// IQ2_XXS, IQ2_XS and IQ1_S need an importance matrix (ggml refuses to quantize them
/// without one); without it, every column is given the same importance.
fn flat_importance(x: f32, sigma2: f32) -> f32 {
    (sigma2 + x * x).sqrt()
}

/// `make_qp_quants`: levels `0..=nmax` and a scale for non-negative `x`, by weighted least
/// squares over a few trial scales and a few passes of coordinate descent.
fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], w: &[f32]) -> f32 {
    let max = x.iter().fold(0f32, |m, &v| fmax(m, v));
    if max < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (l, &x) in l.iter_mut().zip(x) {
        *l = nearest_int(iscale * x) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for ((&l, &x), &w) in l.iter().zip(x).zip(w) {
        let diff = x - scale * l as f32;
        best_mse += w * diff * diff;
    }
    for is in (-4..=4).filter(|&is| is != 0) {
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for (&x, &w) in x.iter().zip(w) {
            let l = nearest_int(iscale_is * x).min(nmax);
            let diff = x - scale_is * l as f32;
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for ((l, &x), &w) in l.iter_mut().zip(x).zip(w) {
        let li = nearest_int(iscale * x).min(nmax);
        *l = li as u8;
        sumlx += w * x * li as f32;
        suml2 += w * li as f32 * li as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for ((l, &x), &w) in l.iter_mut().zip(x).zip(w) {
            let lf = *l as f32;
            let mut slx = sumlx - w * x * lf;
            let mut sl2 = suml2 - w * lf * lf;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x * sl2 / slx).min(nmax);
                if new_l != *l as i32 {
                    slx += w * x * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *l = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

// ---- IQ2_XXS, IQ2_XS, IQ2_S

/// `quantize_row_iq2_xxs_impl`
pub(super) fn quantize_iq2_xxs(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    use super::BlockIQ2XXS;
    let search = Search {
        lattice: iq2xxs_lattice(),
        kmaxq: 3,
        steps: -6..=6,
        step: 0.1,
        on_grid_init: true,
        refine: Refine::Always,
    };
    let blocks: &mut [BlockIQ2XXS] = bytemuck::cast_slice_mut(dst);
    for (ibl, (xbl, y)) in src.chunks_exact(QK_K).zip(blocks).enumerate() {
        *y = bytemuck::Zeroable::zeroed();
        let sigma2 = sum_sq(xbl) / QK_K as f32;
        let mut q2 = [0u32; QK_K / 16];
        let mut scales = [0f32; QK_K / 32];
        let mut max_scale = 0f32;
        for (ib, xb) in xbl.chunks_exact(32).enumerate() {
            let mut weight = [0f32; 32];
            group_weights(
                &mut weight,
                xb,
                imatrix_at(imatrix, ibl, 32, ib),
                sigma2,
                |x| flat_importance(x, sigma2),
            );
            let waux = weight.map(f32::sqrt);
            let mut xval = [0f32; 32];
            let mut signs = [0u8; 4];
            for k in 0..4 {
                let r = 8 * k..8 * k + 8;
                signs[k] = signs8(&xb[r.clone()], &weight[r.clone()], &mut xval[r], true);
            }
            let max = xval[1..].iter().fold(xval[0], |m, &v| fmax(m, v));
            if max < GROUP_MAX_EPS {
                continue;
            }
            let mut lq = [0u8; 32];
            let scale = make_qp_quants(search.kmaxq + 1, &xval, &mut lq, &weight);
            let eff_max = scale * search.kmaxq as f32;
            if eff_max <= 0.0 {
                continue;
            }
            let mut l = lq.map(|v| v as i8);
            let mut scale = lattice_search(&search, &xval, &weight, &waux, &mut l, eff_max, scale);
            if scale < 0.0 {
                scale = -scale;
                for s in &mut signs {
                    *s = !*s & 127;
                }
            }
            for k in 0..4 {
                let j = search.lattice.index_of(&l[8 * k..8 * k + 8]) as u32;
                q2[2 * ib] |= j << (8 * k);
                q2[2 * ib + 1] |= (signs[k] as u32) << (7 * k);
            }
            scales[ib] = scale;
            max_scale = fmax(max_scale, scale);
        }
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        y.d = super::F16::from_f32(d);
        let id = 1.0 / d;
        for ib in 0..QK_K / 32 {
            q2[2 * ib + 1] |= group_scale(id, scales[ib], 15) << 28;
        }
        for (i, q) in q2.iter().enumerate() {
            y.qs[2 * i] = super::U16Le::new(*q as u16);
            y.qs[2 * i + 1] = super::U16Le::new((*q >> 16) as u16);
        }
    }
}

/// `quantize_row_iq2_xs_impl`
pub(super) fn quantize_iq2_xs(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    use super::BlockIQ2XS;
    let search = Search {
        lattice: iq2xs_lattice(),
        kmaxq: 3,
        steps: -9..=9,
        step: 0.1,
        on_grid_init: true,
        refine: Refine::OffGrid,
    };
    let blocks: &mut [BlockIQ2XS] = bytemuck::cast_slice_mut(dst);
    for (ibl, (xbl, y)) in src.chunks_exact(QK_K).zip(blocks).enumerate() {
        *y = bytemuck::Zeroable::zeroed();
        let sigma2 = sum_sq(xbl) / QK_K as f32;
        let mut scales = [0f32; QK_K / 16];
        let mut max_scale = 0f32;
        for (ib, xb) in xbl.chunks_exact(16).enumerate() {
            let mut weight = [0f32; 16];
            group_weights(
                &mut weight,
                xb,
                imatrix_at(imatrix, ibl, 16, ib),
                sigma2,
                |x| flat_importance(x, sigma2),
            );
            let waux = weight.map(f32::sqrt);
            let mut xval = [0f32; 16];
            let mut signs = [0u8; 2];
            for k in 0..2 {
                let r = 8 * k..8 * k + 8;
                signs[k] = signs8(&xb[r.clone()], &weight[r.clone()], &mut xval[r], true);
            }
            let max = xval[1..].iter().fold(xval[0], |m, &v| fmax(m, v));
            if max < GROUP_MAX_EPS {
                continue;
            }
            let mut l = [0i8; 16];
            let mut scale = lattice_search(
                &search,
                &xval,
                &weight,
                &waux,
                &mut l,
                max,
                max / (2 * search.kmaxq - 1) as f32,
            );
            if scale < 0.0 {
                scale = -scale;
                for s in &mut signs {
                    *s = !*s & 127;
                }
            }
            for k in 0..2 {
                let j = search.lattice.index_of(&l[8 * k..8 * k + 8]) as u16;
                y.qs[2 * ib + k] = super::U16Le::new(j | (signs[k] as u16) << 9);
            }
            scales[ib] = scale;
            max_scale = fmax(max_scale, scale);
        }
        if max_scale == 0.0 {
            *y = bytemuck::Zeroable::zeroed();
            continue;
        }
        let d = max_scale / 31.0;
        y.d = super::F16::from_f32(d);
        let id = 1.0 / d;
        for ib in 0..QK_K / 16 {
            let l = group_scale(id, scales[ib], 15) as u8;
            y.scales[ib / 2] |= l << (4 * (ib % 2));
        }
    }
}

/// `quantize_row_iq2_s_impl`
pub(super) fn quantize_iq2_s(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    use super::BlockIQ2S;
    let search = Search {
        lattice: iq2s_lattice(),
        kmaxq: 3,
        steps: -9..=9,
        step: 0.1,
        on_grid_init: true,
        refine: Refine::OffGrid,
    };
    let blocks: &mut [BlockIQ2S] = bytemuck::cast_slice_mut(dst);
    for (ibl, (xbl, y)) in src.chunks_exact(QK_K).zip(blocks).enumerate() {
        *y = bytemuck::Zeroable::zeroed();
        let sigma2 = 2.0 * sum_sq(xbl) / QK_K as f32;
        let mut scales = [0f32; QK_K / 16];
        let mut max_scale = 0f32;
        for (ib, xb) in xbl.chunks_exact(16).enumerate() {
            let mut weight = [0f32; 16];
            group_weights(
                &mut weight,
                xb,
                imatrix_at(imatrix, ibl, 16, ib),
                sigma2,
                |x| 0.25 * sigma2 + x * x,
            );
            let waux = weight.map(f32::sqrt);
            let mut xval = [0f32; 16];
            let mut signs = [0u8; 2];
            for k in 0..2 {
                let r = 8 * k..8 * k + 8;
                signs[k] = signs8(&xb[r.clone()], &weight[r.clone()], &mut xval[r], false);
            }
            let max = xval[1..].iter().fold(xval[0], |m, &v| fmax(m, v));
            if max < GROUP_MAX_EPS_IQ2_S {
                continue;
            }
            let mut l = [0i8; 16];
            let mut scale = lattice_search(
                &search,
                &xval,
                &weight,
                &waux,
                &mut l,
                max,
                max / (2 * search.kmaxq - 1) as f32,
            );
            if scale < 0.0 {
                scale = -scale;
                for s in &mut signs {
                    *s = !*s;
                }
            }
            for k in 0..2 {
                let j = search.lattice.index_of(&l[8 * k..8 * k + 8]);
                let i8 = 2 * ib + k;
                y.qs[i8] = (j & 255) as u8;
                y.qh[i8 / 4] |= ((j >> 8) << (2 * (i8 % 4))) as u8;
                y.qs[QK_K / 8 + i8] = signs[k];
            }
            scales[ib] = scale;
            max_scale = fmax(max_scale, scale);
        }
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        y.d = super::F16::from_f32(d * 0.9875);
        let id = 1.0 / d;
        for ib in 0..QK_K / 16 {
            let l = group_scale(id, scales[ib], 15) as u8;
            y.scales[ib / 2] |= l << (4 * (ib % 2));
        }
    }
}
