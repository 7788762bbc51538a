//! The i-quant quantizers: a search over scales for the lattice point nearest to each group of
//! values, as ggml's `quantize_row_iq*_impl` (ggml-quants.c) do, step for step, so that the
//! bytes come out identical.
//!
//! The lattices (`iq2xs_init_impl`, `iq3xs_init_impl`): each grid point is a vector of levels
//! `l` (coordinates `2l + 1`); `map` sends a packed vector of levels to its grid index, or,
//! for a vector off the grid, to its list of nearest grid points. They are built once.

// Index loops follow ggml's, which interleave several arrays by group index.
#![allow(clippy::needless_range_loop)]

use super::grids::*;
use super::QK_K;
use crate::quant::common::GROUP_MAX_EPS;
use crate::quant::common::{c_max, imatrix_weights, make_qp_quants, max_abs, nearest_int, sum_sq};
use std::sync::OnceLock;

/// `GROUP_MAX_EPS*`: a group whose largest magnitude is below this quantizes to zero.
const GROUP_MAX_EPS_IQ3_XXS: f32 = 1e-8;
const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;
const GROUP_MAX_EPS_IQ1_M: f32 = 1e-7;
const GROUP_MAX_EPS_IQ1_S: f32 = 1e-12;

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

/// The 4-bit group scale `nearest_int(0.5 (scale / d - 1))` clamped to `0..=max`.
#[inline]
fn group_scale(id: f32, scale: f32, max: i32) -> u32 {
    nearest_int(0.5 * (id * scale - 1.0)).clamp(0, max) as u32
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
        Some(qw) => imatrix_weights(weight, xb, qw, sigma2),
        None => {
            for (w, &x) in weight.iter_mut().zip(xb) {
                *w = plain(x);
            }
        }
    }
}

/// One group of `N` values (`K` octets) as the grid quantizers start it: the importance weights
/// (`plain(x)` without an importance matrix), their square roots, the magnitudes and each
/// octet's sign pattern (`signs8`), and the largest magnitude.
struct Group<const N: usize, const K: usize> {
    weight: [f32; N],
    waux: [f32; N],
    xval: [f32; N],
    signs: [u8; K],
    max: f32,
}

impl<const N: usize, const K: usize> Group<N, K> {
    /// Group `ib` of super-block `ibl`.
    #[inline]
    fn new(
        xb: &[f32],
        imatrix: Option<&[f32]>,
        ibl: usize,
        ib: usize,
        sigma2: f32,
        plain: impl Fn(f32) -> f32,
        even: bool,
    ) -> Self {
        let mut weight = [0f32; N];
        let qw = imatrix_at(imatrix, ibl, N, ib);
        group_weights(&mut weight, xb, qw, sigma2, plain);
        let waux = weight.map(f32::sqrt);
        let mut xval = [0f32; N];
        let mut signs = [0u8; K];
        for k in 0..K {
            let r = 8 * k..8 * k + 8;
            signs[k] = signs8(&xb[r.clone()], &weight[r.clone()], &mut xval[r], even);
        }
        let max = xval[1..].iter().fold(xval[0], |m, &v| c_max(m, v));
        Group {
            weight,
            waux,
            xval,
            signs,
            max,
        }
    }

    /// `lattice_search` from the scale that puts the largest magnitude on the top level.
    fn search_from_max(&self, search: &Search, l: &mut [i8]) -> f32 {
        let scale = self.max / (2 * search.kmaxq - 1) as f32;
        lattice_search(
            search,
            &self.xval,
            &self.weight,
            &self.waux,
            l,
            self.max,
            scale,
        )
    }
}

/// A negative group scale made positive by flipping every sign bit (those under `mask`).
#[inline]
fn positive_scale(scale: f32, signs: &mut [u8], mask: u8) -> f32 {
    if scale < 0.0 {
        for s in signs {
            *s = !*s & mask;
        }
        -scale
    } else {
        scale
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
            let g = Group::<32, 4>::new(xb, imatrix, ibl, ib, sigma2, |x| x * x, true);
            let (max, mut signs) = (g.max, g.signs);
            if max < GROUP_MAX_EPS_IQ3_XXS {
                continue;
            }
            let mut l = [0i8; 32];
            let scale = g.search_from_max(&search, &mut l);
            let scale = positive_scale(scale, &mut signs, 127);
            for k in 0..8 {
                q3[8 * ib + k] = search.lattice.index_of(&l[4 * k..4 * k + 4]) as u8;
            }
            let aux = signs[0] as u32
                | (signs[1] as u32) << 7
                | (signs[2] as u32) << 14
                | (signs[3] as u32) << 21;
            q3[64 + 4 * ib..64 + 4 * ib + 4].copy_from_slice(&aux.to_le_bytes());
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
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
            let g = Group::<32, 4>::new(xb, imatrix, ibl, ib, sigma2, |x| x * x, false);
            let (max, mut signs) = (g.max, g.signs);
            if max == 0.0 {
                continue;
            }
            let mut l = [0i8; 32];
            let scale = g.search_from_max(&search, &mut l);
            let scale = positive_scale(scale, &mut signs, 255);
            for k in 0..8 {
                let j = search.lattice.index_of(&l[4 * k..4 * k + 4]);
                y.qs[8 * slot + k] = (j & 255) as u8;
                y.qh[ib] |= ((j >> 8) << k) as u8;
            }
            y.signs[4 * slot..4 * slot + 4].copy_from_slice(&signs);
            slot += 1;
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
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
            let g = Group::<32, 4>::new(
                xb,
                imatrix,
                ibl,
                ib,
                sigma2,
                |x| flat_importance(x, sigma2),
                true,
            );
            let (max, mut signs) = (g.max, g.signs);
            if max < GROUP_MAX_EPS {
                continue;
            }
            let mut lq = [0u8; 32];
            let scale = make_qp_quants(search.kmaxq + 1, &g.xval, &mut lq, &g.weight);
            let eff_max = scale * search.kmaxq as f32;
            if eff_max <= 0.0 {
                continue;
            }
            let mut l = lq.map(|v| v as i8);
            let scale =
                lattice_search(&search, &g.xval, &g.weight, &g.waux, &mut l, eff_max, scale);
            let scale = positive_scale(scale, &mut signs, 127);
            for k in 0..4 {
                let j = search.lattice.index_of(&l[8 * k..8 * k + 8]) as u32;
                q2[2 * ib] |= j << (8 * k);
                q2[2 * ib + 1] |= (signs[k] as u32) << (7 * k);
            }
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
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
            let g = Group::<16, 2>::new(
                xb,
                imatrix,
                ibl,
                ib,
                sigma2,
                |x| flat_importance(x, sigma2),
                true,
            );
            let (max, mut signs) = (g.max, g.signs);
            if max < GROUP_MAX_EPS {
                continue;
            }
            let mut l = [0i8; 16];
            let scale = g.search_from_max(&search, &mut l);
            let scale = positive_scale(scale, &mut signs, 127);
            for k in 0..2 {
                let j = search.lattice.index_of(&l[8 * k..8 * k + 8]) as u16;
                y.qs[2 * ib + k] = super::U16Le::new(j | (signs[k] as u16) << 9);
            }
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
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
            let g = Group::<16, 2>::new(
                xb,
                imatrix,
                ibl,
                ib,
                sigma2,
                |x| 0.25 * sigma2 + x * x,
                false,
            );
            let (max, mut signs) = (g.max, g.signs);
            if max < GROUP_MAX_EPS_IQ2_S {
                continue;
            }
            let mut l = [0i8; 16];
            let scale = g.search_from_max(&search, &mut l);
            let scale = positive_scale(scale, &mut signs, 255);
            for k in 0..2 {
                let j = search.lattice.index_of(&l[8 * k..8 * k + 8]);
                let i8 = 2 * ib + k;
                y.qs[i8] = (j & 255) as u8;
                y.qh[i8 / 4] |= ((j >> 8) << (2 * (i8 % 4))) as u8;
                y.qs[QK_K / 8 + i8] = signs[k];
            }
            scales[ib] = scale;
            max_scale = c_max(max_scale, scale);
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

// ---- IQ1_S, IQ1_M

impl Lattice {
    /// `iq1_find_best_neighbour2`: the neighbour of `u` with the smallest weighted squared
    /// error when level `l` stands for `scale * xg[l]`; writes its levels to `l`.
    fn best_neighbour_iq1(
        &self,
        u: usize,
        x: &[f32],
        w: &[f32],
        scale: f32,
        xg: &[f32; 3],
        l: &mut [i8],
    ) -> usize {
        let d2 = |j: usize| {
            let mut d2 = 0f32;
            for ((&p, &x), &w) in self.point(j).iter().zip(x).zip(w) {
                let diff = scale * xg[((p - 1) / 2) as usize] - x;
                d2 += w * diff * diff;
            }
            d2
        };
        let mut best_d2 = f32::MAX;
        let mut best = None;
        for &j in self.neighbours(u) {
            let d = d2(j as usize);
            if d < best_d2 {
                best_d2 = d;
                best = Some(j as usize);
            }
        }
        // ggml then searches the whole grid (reading past its inputs) and aborts when that
        // fails too; this only happens for non-finite inputs, where any point will do.
        if best.is_none() {
            for j in 0..self.pos.len() / self.dim {
                let d = d2(j);
                if d < best_d2 {
                    best_d2 = d;
                    best = Some(j);
                }
            }
        }
        let best = best.unwrap_or(0);
        self.levels_of(best, l);
        best
    }
}

/// The indices of `x` in ascending order of value, equal values in index order (the order
/// glibc's merge-sort `qsort` gives `iq1_sort_helper`).
fn sorted_order<const N: usize>(x: &[f32]) -> [usize; N] {
    let mut idx: [usize; N] = std::array::from_fn(|i| i);
    for i in 1..N {
        let mut j = i;
        while j > 0 && x[idx[j - 1]] > x[idx[j]] {
            idx.swap(j - 1, j);
            j -= 1;
        }
    }
    idx
}

/// The levels 0, 1, 2 of the best three-way split of a sorted group: the first `i1` values
/// (in sorted order) get level 0, up to `i2` level 1, the rest level 2.
fn split_levels(l: &mut [i8], idx: &[usize], i1: usize, i2: usize) {
    for (j, &i) in idx.iter().enumerate() {
        l[i] = if j < i1 {
            0
        } else if j < i2 {
            1
        } else {
            2
        };
    }
}

/// `quantize_row_iq1_s_impl`
pub(super) fn quantize_iq1_s(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    use super::BlockIQ1S;
    const BS: usize = 32;
    let lat = iq1s_lattice();
    let x_p = [-1.0 + IQ1S_DELTA, IQ1S_DELTA, 1.0 + IQ1S_DELTA];
    let x_m = [-1.0 - IQ1S_DELTA, -IQ1S_DELTA, 1.0 - IQ1S_DELTA];
    let blocks: &mut [BlockIQ1S] = bytemuck::cast_slice_mut(dst);
    for (ibl, (xbl, y)) in src.chunks_exact(QK_K).zip(blocks).enumerate() {
        *y = bytemuck::Zeroable::zeroed();
        let sigma2 = 2.0 * sum_sq(xbl) / QK_K as f32;
        let mut scales = [0f32; QK_K / BS];
        let mut shifts = [1i8; QK_K / BS];
        let mut max_scale = 0f32;
        for (ib, xb) in xbl.chunks_exact(BS).enumerate() {
            let mut weight = [0f32; BS];
            group_weights(
                &mut weight,
                xb,
                imatrix_at(imatrix, ibl, BS, ib),
                sigma2,
                |x| flat_importance(x, sigma2),
            );
            let max = max_abs(xb);
            if max < GROUP_MAX_EPS_IQ1_S {
                continue;
            }
            // The weighted least-squares optimum over all splits of the sorted values into
            // the three levels, with either sign of the shift.
            let idx = sorted_order::<BS>(xb);
            let mut sumx = [0f32; BS + 1];
            let mut sumw = [0f32; BS + 1];
            for (j, &i) in idx.iter().enumerate() {
                sumx[j + 1] = sumx[j] + weight[i] * xb[i];
                sumw[j + 1] = sumw[j] + weight[i];
            }
            let mut best_score = -f32::MAX;
            let mut scale = max;
            let mut best: Option<(usize, usize, i8)> = None;
            for i1 in 0..=BS {
                for i2 in i1..=BS {
                    for (xx, shift) in [(&x_p, 1i8), (&x_m, -1)] {
                        let sumqx = (sumx[i1] - sumx[0]) * xx[0]
                            + (sumx[i2] - sumx[i1]) * xx[1]
                            + (sumx[BS] - sumx[i2]) * xx[2];
                        let sumq2 = (sumw[i1] - sumw[0]) * xx[0] * xx[0]
                            + (sumw[i2] - sumw[i1]) * xx[1] * xx[1]
                            + (sumw[BS] - sumw[i2]) * xx[2] * xx[2];
                        if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                            scale = sumqx / sumq2;
                            best_score = scale * sumqx;
                            best = Some((i1, i2, shift));
                        }
                    }
                }
            }
            let Some((i1, i2, mut shift)) = best else {
                continue;
            };
            let mut l = [0i8; BS];
            split_levels(&mut l, &idx, i1, i2);
            if scale < 0.0 {
                for v in &mut l {
                    *v = 2 - *v;
                }
                scale = -scale;
                shift = -shift;
            }
            let xx = if shift == 1 { &x_p } else { &x_m };
            let mut index = [0usize; BS / 8];
            let mut all_on_grid = true;
            for k in 0..BS / 8 {
                let r = 8 * k..8 * k + 8;
                let u = lat.pack(&l[r.clone()]);
                index[k] = match lat.index(u) {
                    Some(j) => j,
                    None => {
                        all_on_grid = false;
                        let (x, w) = (&xb[r.clone()], &weight[r.clone()]);
                        lat.best_neighbour_iq1(u, x, w, scale, xx, &mut l[r])
                    }
                };
            }
            if !all_on_grid {
                let (mut sumqx, mut sumq2) = (0f32, 0f32);
                for k in 0..BS / 8 {
                    for (j, &p) in lat.point(index[k]).iter().enumerate() {
                        let w = weight[8 * k + j];
                        let q = xx[((p - 1) / 2) as usize];
                        sumqx += w * q * xb[8 * k + j];
                        sumq2 += w * q * q;
                    }
                }
                if sumqx > 0.0 && sumq2 > 0.0 {
                    scale = sumqx / sumq2;
                }
            }
            let mut h = 0u16;
            for (k, &j) in index.iter().enumerate() {
                y.qs[(BS / 8) * ib + k] = (j & 255) as u8;
                h |= ((j >> 8) << (3 * k)) as u16;
            }
            y.qh[ib] = super::U16Le::new(h);
            scales[ib] = scale;
            shifts[ib] = shift;
            max_scale = c_max(max_scale, scale);
        }
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 15.0;
        y.d = super::F16::from_f32(d * 1.125);
        let id = 1.0 / d;
        for ib in 0..QK_K / BS {
            let mut l = group_scale(id, scales[ib], 7) as u16;
            if shifts[ib] == -1 {
                l |= 8;
            }
            y.qh[ib] = super::U16Le::new(y.qh[ib].get() | l << 12);
        }
    }
}

/// `quantize_row_iq1_m_impl`, with the split search of current ggml (per-half prefix sums;
/// the older triple loop rounds differently and breaks near-ties the other way).
pub(super) fn quantize_iq1_m(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    use super::BlockIQ1M;
    const BS: usize = 16;
    let lat = iq1s_lattice();
    let x_p = [-1.0 + IQ1M_DELTA, IQ1M_DELTA, 1.0 + IQ1M_DELTA];
    let x_m = [-1.0 - IQ1M_DELTA, -IQ1M_DELTA, 1.0 - IQ1M_DELTA];
    // shift signs (first group of 8, second group of 8): 0: +,+  1: +,-  2: -,+  3: -,-
    let negative = |k: usize, half: usize| if half == 0 { k >= 2 } else { k % 2 == 1 };
    let xx_of = |k: usize, half: usize| if negative(k, half) { &x_m } else { &x_p };
    let masks = [0x00u8, 0x80, 0x08, 0x88];
    let blocks: &mut [BlockIQ1M] = bytemuck::cast_slice_mut(dst);
    for (ibl, (xbl, y)) in src.chunks_exact(QK_K).zip(blocks).enumerate() {
        *y = bytemuck::Zeroable::zeroed();
        let sigma2 = 2.0 * sum_sq(xbl) / QK_K as f32;
        let mut scales = [0f32; QK_K / BS];
        let mut shifts = [0usize; QK_K / BS];
        let mut max_scale = 0f32;
        let mut weight = [0f32; BS];
        for (ib, xb) in xbl.chunks_exact(BS).enumerate() {
            group_weights(
                &mut weight,
                xb,
                imatrix_at(imatrix, ibl, BS, ib),
                sigma2,
                |x| x * x,
            );
            let max = max_abs(xb);
            if max < GROUP_MAX_EPS_IQ1_M {
                continue;
            }
            let idx = sorted_order::<BS>(xb);
            let mut best_score = -f32::MAX;
            let mut scale = max;
            let mut best: Option<(usize, usize, usize)> = None;
            // Prefix sums of w x and w per half of the group (each half has its own shift
            // sign). As x[0] - x[1] = x[1] - x[2] = -1 for both shift signs, the sum of
            // w x q over a split is T x[2] - px[i1] - px[i2].
            let mut px = [[0f32; BS + 1]; 2];
            let mut pw = [[0f32; BS + 1]; 2];
            for (j, &i) in idx.iter().enumerate() {
                let h = i / (BS / 2);
                px[h][j + 1] = px[h][j] + weight[i] * xb[i];
                px[1 - h][j + 1] = px[1 - h][j];
                pw[h][j + 1] = pw[h][j] + weight[i];
                pw[1 - h][j + 1] = pw[1 - h][j];
            }
            let txs = [px[0][BS], px[1][BS]];
            let tws = [pw[0][BS], pw[1][BS]];
            let (p2, m2) = (x_p[2], x_m[2]);
            let cp1 = x_p[0] * x_p[0] - x_p[1] * x_p[1];
            let cp2 = x_p[1] * x_p[1] - x_p[2] * x_p[2];
            let cm1 = x_m[0] * x_m[0] - x_m[1] * x_m[1];
            let cm2 = x_m[1] * x_m[1] - x_m[2] * x_m[2];
            for i1 in 0..=BS {
                for i2 in i1..=BS {
                    let (mut qx_p, mut qx_m, mut q2_p, mut q2_m) =
                        ([0f32; 2], [0f32; 2], [0f32; 2], [0f32; 2]);
                    for h in 0..2 {
                        let sx = px[h][i1] + px[h][i2];
                        qx_p[h] = txs[h] * p2 - sx;
                        qx_m[h] = txs[h] * m2 - sx;
                        q2_p[h] = tws[h] * p2 * p2 + pw[h][i1] * cp1 + pw[h][i2] * cp2;
                        q2_m[h] = tws[h] * m2 * m2 + pw[h][i1] * cm1 + pw[h][i2] * cm2;
                    }
                    let sumqx = [
                        qx_p[0] + qx_p[1],
                        qx_p[0] + qx_m[1],
                        qx_m[0] + qx_p[1],
                        qx_m[0] + qx_m[1],
                    ];
                    let sumq2 = [
                        q2_p[0] + q2_p[1],
                        q2_p[0] + q2_m[1],
                        q2_m[0] + q2_p[1],
                        q2_m[0] + q2_m[1],
                    ];
                    for k in 0..4 {
                        if sumq2[k] > 0.0 && sumqx[k] * sumqx[k] > best_score * sumq2[k] {
                            scale = sumqx[k] / sumq2[k];
                            best_score = scale * sumqx[k];
                            best = Some((i1, i2, k));
                        }
                    }
                }
            }
            let Some((i1, i2, mut best_k)) = best else {
                continue;
            };
            let mut l = [0i8; BS];
            split_levels(&mut l, &idx, i1, i2);
            if scale < 0.0 {
                for v in &mut l {
                    *v = 2 - *v;
                }
                scale = -scale;
                best_k = 3 - best_k;
            }
            let mut index = [0usize; 2];
            let mut all_on_grid = true;
            for half in 0..2 {
                let r = 8 * half..8 * half + 8;
                let u = lat.pack(&l[r.clone()]);
                index[half] = match lat.index(u) {
                    Some(j) => j,
                    None => {
                        all_on_grid = false;
                        let (x, w) = (&xb[r.clone()], &weight[r.clone()]);
                        let xx = xx_of(best_k, half);
                        lat.best_neighbour_iq1(u, x, w, scale, xx, &mut l[r])
                    }
                };
            }
            if !all_on_grid {
                let (mut sumqx, mut sumq2) = (0f32, 0f32);
                for half in 0..2 {
                    let xx = xx_of(best_k, half);
                    for (j, &p) in lat.point(index[half]).iter().enumerate() {
                        let w = weight[8 * half + j];
                        let q = xx[((p - 1) / 2) as usize];
                        sumqx += w * q * xb[8 * half + j];
                        sumq2 += w * q * q;
                    }
                }
                if sumqx > 0.0 && sumq2 > 0.0 {
                    scale = sumqx / sumq2;
                }
            }
            y.qs[2 * ib] = (index[0] & 255) as u8;
            y.qs[2 * ib + 1] = (index[1] & 255) as u8;
            y.qh[ib] = ((index[0] >> 8) | ((index[1] >> 8) << 4)) as u8;
            scales[ib] = scale;
            shifts[ib] = best_k;
            max_scale = c_max(max_scale, scale);
        }
        if max_scale == 0.0 {
            continue;
        }
        // the 3-bit group scales, then the super-block scale refitted to them
        let mut sc = [0u16; 4];
        let mut d = max_scale / 15.0;
        let id = 1.0 / d;
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for (ib, xb) in xbl.chunks_exact(BS).enumerate() {
            let l = group_scale(id, scales[ib], 7);
            sc[ib / 4] |= (l << (3 * (ib % 4))) as u16;
            y.qh[ib] |= masks[shifts[ib]];
            group_weights(
                &mut weight,
                xb,
                imatrix_at(imatrix, ibl, BS, ib),
                sigma2,
                |x| x * x,
            );
            for half in 0..2 {
                let xx = xx_of(shifts[ib], half);
                let j =
                    y.qs[2 * ib + half] as usize | ((y.qh[ib] as usize) << (8 - 4 * half)) & 0x700;
                for (i, &p) in lat.point(j).iter().enumerate() {
                    let w = weight[8 * half + i];
                    let q = xx[((p - 1) / 2) as usize] * (2 * l + 1) as f32;
                    sumqx += w * q * xb[8 * half + i];
                    sumq2 += w * q * q;
                }
            }
        }
        if sumq2 > 0.0 {
            d = sumqx / sumq2;
        }
        let s = super::F16::from_f32(d * 1.1125);
        let s = u16::from_le_bytes(s.0);
        sc[0] |= (s & 0x000f) << 12;
        sc[1] |= (s & 0x00f0) << 8;
        sc[2] |= (s & 0x0f00) << 4;
        sc[3] |= s & 0xf000;
        for (k, v) in sc.iter().enumerate() {
            y.scales[2 * k..2 * k + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
}
