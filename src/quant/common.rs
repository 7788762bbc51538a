//! Helpers the scalar quantizers share: C's float semantics and ggml's scale searches
//! (`make_qx_quants`, `make_qkx2_quants` / `make_qkx3_quants`, `make_qp_quants` in
//! ggml-quants.c).
//!
//! Float expressions keep ggml's evaluation order and use no fused multiply-add: the quantized
//! bytes depend on every rounding.
#![allow(clippy::needless_range_loop)]

/// `GROUP_MAX_EPS`: a group whose largest magnitude is below this quantizes to zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// C's `(int)f` as x86 compiles it (`cvttss2si`): truncation, and `INT_MIN` for NaN and
/// values out of range, where Rust's `as` would saturate. Narrower C casts (`(int8_t)f`,
/// `(uint8_t)f`) take the low bits of this.
#[inline]
pub(crate) fn c_int(f: f32) -> i32 {
    if !(-2147483648.0..2147483648.0).contains(&f) {
        i32::MIN
    } else {
        f as i32
    }
}

/// C's `MAX(a, b)` macro on floats: `a > b ? a : b` (so NaN in `b` wins, NaN in `a` loses,
/// unlike `f32::max`).
#[inline]
pub(crate) fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// ggml's `nearest_int`: round to nearest, ties to even, by adding 1.5 * 2^23 and reading the
/// low mantissa bits. Exact for |x| <= 2^22; beyond that, and for NaN and inf, it returns the
/// same wrapped value as ggml (NaN -> 0, inf -> -2^22), never panicking.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12582912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Sum of squares in order, as ggml's loops accumulate it.
#[inline]
pub(crate) fn sum_sq(x: &[f32]) -> f32 {
    x.iter().fold(0.0, |s, &v| s + v * v)
}

/// The largest |x|, the first one on ties (ggml's `if (amax < fabsf(v))` scan): returns
/// (amax, the signed value there).
#[inline]
pub(crate) fn abs_max(x: &[f32]) -> (f32, f32) {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

/// ggml's `amax = MAX(amax, fabsf(x[j]))` loop from 0. Not `abs_max`: `MAX` lets a NaN through
/// (until the next value replaces it), where `amax < fabsf(v)` skips it.
#[inline]
pub(crate) fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, &v| c_max(m, v.abs()))
}

/// ggml's importance weights of one group: `qw * sqrt(sigma2 + x^2)`.
#[inline]
pub(crate) fn imatrix_weights(out: &mut [f32], xb: &[f32], qw: &[f32], sigma2: f32) {
    for ((w, &x), &q) in out.iter_mut().zip(xb).zip(qw) {
        *w = q * (sigma2 + x * x).sqrt();
    }
}

/// `make_qx_quants` with `rmse_type == 1`: symmetric quants `L` in `0..2*nmax` (stored with
/// the `+nmax` offset) and the scale, minimizing the error weighted by `qw` (or `x^2`), trying
/// 18 scales around `nmax / max|x|`. `out` is as long as `x`.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], out: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let (amax, max) = abs_max(x);
    if amax < GROUP_MAX_EPS {
        out.fill(0);
        return 0.0;
    }
    let w = |i: usize| match qw {
        Some(q) => q[i],
        None => x[i] * x[i],
    };
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);

    let mut iscale = -(nmax as f32) / max;
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for (i, &v) in x.iter().enumerate() {
        let l = quant(iscale, v);
        out[i] = (l + nmax) as i8;
        let w = w(i);
        let lf = l as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    // `suml2 ? ... : 0`: NaN counts as true in C.
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for (i, &v) in x.iter().enumerate() {
            let lf = quant(iscale, v) as f32;
            let w = w(i);
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (nmax + quant(iscale, v)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Parameters of the scale search in `make_qkx2_quants` / `make_qkx3_quants`.
pub(crate) struct QkxSearch {
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    /// Weighted absolute error instead of squared.
    pub use_mad: bool,
}

/// The search `make_qkx3_quants` does in the importance-weighted quantizers.
pub(crate) const QKX3_SEARCH: QkxSearch = QkxSearch {
    rmin: -0.9,
    rdelta: 0.05,
    nstep: 36,
    use_mad: false,
};

/// `make_qkx2_quants` (and `make_qkx3_quants` with weights, which differs only in testing
/// `max <= min` instead of `max == min`: the same after `min` is clamped to <= 0): asymmetric
/// quants `L` in `0..=nmax` with a scale and a min (returned as `(scale, -min)`), trying
/// `nstep + 1` scales and solving the weighted least squares for scale and min at each.
/// `out` and `laux` are as long as `x`.
pub(crate) fn make_qkx_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    out: &mut [u8],
    laux: &mut [u8],
    p: &QkxSearch,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        out.fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if p.use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (max - min);
        let mut sum_l = 0f32;
        let mut sum_l2 = 0f32;
        let mut sum_xl = 0f32;
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `make_qp_quants`: quants `L` in `0..=nmax` of non-negative values (sub-block scales and
/// mins, i-quant group magnitudes) with one scale, weighted by `qw`; searches 8 scales, then
/// refines one value at a time for up to 5 passes. Like ggml, `L` is a byte: a negative quant
/// wraps, and the refinement reads the wrapped value back. `out` and `qw` are as long as `x`.
pub(crate) fn make_qp_quants(nmax: i32, x: &[f32], out: &mut [u8], qw: &[f32]) -> f32 {
    let mut max = 0f32;
    for &v in x {
        max = c_max(max, v);
    }
    if max < GROUP_MAX_EPS {
        out.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..x.len() {
        let diff = x[i] - scale * out[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..x.len() {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..x.len() {
        let l = nearest_int(iscale * x[i]).min(nmax);
        out[i] = l as u8;
        let w = qw[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..x.len() {
            let w = qw[i];
            let li = out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != out[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        out[i] = new_l as u8;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even_and_wraps_like_ggml() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-0.4), 0);
        assert_eq!(nearest_int(-3.7), -4);
        assert_eq!(nearest_int(1000.7), 1001);
        assert_eq!(nearest_int(4194303.0), 4194303);
        assert_eq!(nearest_int(f32::NAN), 0);
        assert_eq!(nearest_int(f32::INFINITY), -0x40_0000);
    }

    #[test]
    fn c_int_matches_x86_truncation() {
        assert_eq!(c_int(2.9), 2);
        assert_eq!(c_int(-2.9), -2);
        assert_eq!(c_int(f32::NAN), i32::MIN);
        assert_eq!(c_int(f32::INFINITY), i32::MIN);
        assert_eq!(c_int(3e9), i32::MIN);
    }

    #[test]
    fn c_max_keeps_nan_in_b_only() {
        assert!(c_max(f32::NAN, 1.0) == 1.0);
        assert!(c_max(1.0, f32::NAN).is_nan());
    }

    #[test]
    fn abs_max_keeps_the_first_of_equal_magnitudes() {
        assert_eq!(abs_max(&[1.0, -3.0, 3.0, 2.0]), (3.0, -3.0));
        assert_eq!(abs_max(&[]), (0.0, 0.0));
    }
}
