//! Properties of the scalar kernels on random rows (several lengths, scales from 1e-30 to 3e4,
//! outliers, zero, constant and one-signed rows):
//! - quantize -> dequantize lands on the nearest value the block's stored scales can
//!   represent (up to the rounding of those scales to f16), and within a bound derived from
//!   the block's largest |x| that shows the scale itself was chosen well;
//! - the dot product equals the f64 dot of the dequantized rows within the tolerance of the
//!   reference vectors: 1e-5 * (|dot| + ‖x‖·‖y‖).

// `!(err <= bound)`: a NaN error must fail.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use proptest::prelude::*;
use strait::quant::blocks::{BlockQ8K, F16};
use strait::quant::fp4::{e8m0_to_fp32_half, ue4m3_to_fp32, KVALUES_MXFP4};
use strait::quant::iq4::KVALUES_IQ4NL;
use strait::quant::{dequantize_row, quantize_row, scalar, vec_dot, GgmlType, QK_K};

/// The types whose scalar kernels this suite covers.
const TYPES: [GgmlType; 18] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q1_0,
    GgmlType::Q2_0,
    GgmlType::MXFP4,
    GgmlType::NVFP4,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::Q8K,
];

/// The largest magnitude generated: f16 scales (and Q8_1's f16 sums of activations up to
/// 1000) stay finite below it.
const MAX_ABS: f32 = 3e4;

fn f16_at(b: &[u8], at: usize) -> f32 {
    F16([b[at], b[at + 1]]).to_f32()
}

/// One group of values sharing a scale: `len` values, each `d * level + m` for one level.
struct Group {
    len: usize,
    d: f32,
    m: f32,
    levels: Vec<f32>,
    /// How many f16 steps `d` holds: `d` (and `m`) went through f16 after the levels were
    /// picked, so each is off by up to half an f16 step, times this (IQ4_XS's block scale is
    /// the f16 super scale times a 6-bit integer); 0 for scales stored exactly.
    f16_steps: f32,
}

fn range(lo: i32, hi: i32) -> Vec<f32> {
    (lo..=hi).map(|v| v as f32).collect()
}

fn table(t: &[i8]) -> Vec<f32> {
    t.iter().map(|&v| v as f32).collect()
}

/// The scale groups of one block of `ty`, decoded from its bytes.
fn groups(ty: GgmlType, b: &[u8]) -> Vec<Group> {
    use GgmlType::*;
    let g = |len, d, m, levels, f16: bool| Group {
        len,
        d,
        m,
        levels,
        f16_steps: if f16 { 1.0 } else { 0.0 },
    };
    match ty {
        Q4_0 => vec![g(32, f16_at(b, 0), 0.0, range(-8, 7), true)],
        Q4_1 => vec![g(32, f16_at(b, 0), f16_at(b, 2), range(0, 15), true)],
        Q5_0 => vec![g(32, f16_at(b, 0), 0.0, range(-16, 15), true)],
        Q5_1 => vec![g(32, f16_at(b, 0), f16_at(b, 2), range(0, 31), true)],
        Q8_0 | Q8_1 => vec![g(32, f16_at(b, 0), 0.0, range(-128, 127), true)],
        Q1_0 => vec![g(128, f16_at(b, 0), 0.0, vec![-1.0, 1.0], true)],
        Q2_0 => vec![g(64, f16_at(b, 0), 0.0, range(-1, 2), true)],
        MXFP4 => vec![g(
            32,
            e8m0_to_fp32_half(b[0]),
            0.0,
            table(&KVALUES_MXFP4),
            false,
        )],
        NVFP4 => (0..4)
            .map(|s| g(16, ue4m3_to_fp32(b[s]), 0.0, table(&KVALUES_MXFP4), false))
            .collect(),
        IQ4NL => vec![g(32, f16_at(b, 0), 0.0, table(&KVALUES_IQ4NL), true)],
        IQ4XS => {
            let d = f16_at(b, 0);
            let h = u16::from_le_bytes([b[2], b[3]]);
            (0..8)
                .map(|ib| {
                    let lo = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf;
                    let ls = (lo as i32) | ((((h >> (2 * ib)) & 3) as i32) << 4);
                    let mut gr = g(32, d * (ls - 32) as f32, 0.0, table(&KVALUES_IQ4NL), true);
                    gr.f16_steps = (ls - 32).abs() as f32;
                    gr
                })
                .collect()
        }
        TQ1_0 => vec![g(256, f16_at(b, 52), 0.0, range(-1, 1), true)],
        TQ2_0 => vec![g(256, f16_at(b, 64), 0.0, range(-1, 1), true)],
        _ => unreachable!("{ty} has no scale groups"),
    }
}

/// The values of a group, in block order, for the types whose groups are contiguous runs.
fn check_block(ty: GgmlType, x: &[f32], got: &[f32], q: &[u8]) -> std::result::Result<(), String> {
    let mut at = 0;
    for gr in groups(ty, q) {
        let (xs, gs) = (&x[at..at + gr.len], &got[at..at + gr.len]);
        let kmax = gr.levels.iter().fold(0f32, |a, &l| a.max(l.abs()));
        // Levels were picked with the scale before f16 rounding: off by at most
        // max(2^-11 relative, 2^-25 absolute) per f16 step. A level nearest for that scale is
        // within 2 * kmax * |Δd| + 2 * |Δm| of the nearest for the stored one. Float
        // arithmetic adds a few ulps.
        let half_step = |v: f32, steps: f32| {
            if steps == 0.0 {
                0.0
            } else {
                v.abs() * 2f32.powi(-11) + steps * 2f32.powi(-25)
            }
        };
        let slack = |xi: f32| {
            let dd = half_step(gr.d, gr.f16_steps);
            let dm = half_step(gr.m, gr.f16_steps.min(1.0));
            2.0 * (kmax * dd + dm)
                + 4.0 * f32::EPSILON * (xi.abs() + kmax * gr.d.abs() + gr.m.abs())
        };
        for (j, (&xi, &yi)) in xs.iter().zip(gs).enumerate() {
            let nearest = gr
                .levels
                .iter()
                .map(|&l| (xi - (gr.d * l + gr.m)).abs())
                .fold(f32::INFINITY, f32::min);
            let err = (xi - yi).abs();
            if !(err <= nearest + slack(xi)) {
                return Err(format!(
                    "{ty} value {}: {xi:e} -> {yi:e}, the nearest level is {nearest:e} away \
                     (d {:e}, m {:e})",
                    at + j,
                    gr.d,
                    gr.m
                ));
            }
        }
        at += gr.len;
    }
    Ok(())
}

/// The error bound from the block's largest |x| alone: (factor, floor) with
/// `|x - dq| <= factor * amax + floor`, or None where only the stored-scale bound applies.
fn amax_bound(ty: GgmlType) -> Option<(f32, f32)> {
    use GgmlType::*;
    // The floors cover f16 scales that fall below the normal range (absolute error 2^-25 per
    // level) or to zero.
    let tiny = |kmax: f32| (kmax + 1.0) * 2f32.powi(-24);
    let slop = 2f32.powi(-9);
    Some(match ty {
        // d = max / -8: the one value at -max lands on level 7, one step off.
        Q4_0 => (1.0 / 8.0 + slop, tiny(8.0)),
        Q5_0 => (1.0 / 16.0 + slop, tiny(16.0)),
        // d = (max - min) / 15 <= 2 amax / 15, error half a step.
        Q4_1 => (1.0 / 15.0 + slop, tiny(16.0)),
        Q5_1 => (1.0 / 31.0 + slop, tiny(32.0)),
        Q8_0 | Q8_1 => (1.0 / 254.0 + slop, tiny(127.0)),
        // d = mean |x|: the error of a sign is at most amax.
        Q1_0 => (1.0 + slop, tiny(1.0)),
        // d = amax, levels -1..2: half a step.
        Q2_0 | TQ1_0 | TQ2_0 => (0.5 + slop, tiny(2.0)),
        // d = 2^(floor(log2 amax) - 3), levels up to 12 d: the top gap (8 d .. 12 d) and the
        // clamp above 12 d are both under amax / 2.
        MXFP4 => (0.5 + 2f32.powi(-20), 0.0),
        _ => return None,
    })
}

/// The group size over which `amax_bound` takes its amax.
fn amax_group(ty: GgmlType) -> usize {
    ty.block_size()
}

/// NVFP4's bound per group of 16, levels `kvalues * raw / 2` for the UE4M3 scale `raw` of
/// amax / 6: rounded half up to 3 mantissa bits, raw is within 2^-4 of amax / 6, so the top
/// level 6 raw is within amax / 16 of amax and the widest gap (4 raw .. 6 raw) is 2 raw, at
/// most amax / 3 (1 + 1/16); subnormal scales (amax / 6 < 2^-6) are within 2^-10 absolute.
/// ggml encodes every scale from 240 up (exponent 15) as its largest, 448: there the widest
/// half gap is 448 and values above 6 * 448 = 2688 clamp.
fn nvfp4_bound(amax: f32) -> f32 {
    if amax / 6.0 >= 240.0 {
        448.0 + (amax - 2688.0).max(0.0)
    } else {
        0.18 * amax + 6.0 * 2f32.powi(-10)
    }
}

/// IQ4_NL's bound per block, on the error weighted by x^2 as its quantizer weighs it: the first
/// candidate scale (max / 127) puts every value within 14 / 127 amax of a level (the grid's top
/// level is 113), and the search only lowers the weighted error.
fn iq4_nl_weighted(x: &[f32], got: &[f32]) -> std::result::Result<(), String> {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
    let (mut num, mut den) = (0f64, 0f64);
    for (&a, &b) in x.iter().zip(got) {
        let w = (a as f64) * (a as f64);
        num += w * (a as f64 - b as f64).powi(2);
        den += w;
    }
    let rms = if den > 0.0 { (num / den).sqrt() } else { 0.0 };
    let bound = 0.111 * amax + 1e-5;
    if rms <= bound {
        Ok(())
    } else {
        Err(format!("IQ4_NL weighted rms error {rms:e} > {bound:e}"))
    }
}

/// Checks quantize -> dequantize of one row.
fn roundtrip(ty: GgmlType, x: &[f32]) -> std::result::Result<(), String> {
    let n = x.len();
    let mut q = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
    quantize_row(ty, x, &mut q, None).map_err(|e| e.to_string())?;
    let mut got = vec![0f32; n];
    if ty == GgmlType::Q8K {
        // The dequantizer of the k-quants' dot type: d * q.
        for (b, y) in bytemuck::cast_slice::<u8, BlockQ8K>(&q)
            .iter()
            .zip(got.chunks_exact_mut(QK_K))
        {
            for (v, &qi) in y.iter_mut().zip(&b.qs) {
                *v = b.d.get() * qi as f32;
            }
        }
    } else {
        dequantize_row(ty, &q, &mut got).map_err(|e| e.to_string())?;
    }
    match ty {
        GgmlType::F32 => {
            if got != x {
                return Err("F32 does not round-trip".into());
            }
        }
        GgmlType::F16 | GgmlType::BF16 => {
            // Round to nearest: half an ulp of 11 (f16) or 8 (bf16) bits, and f16's
            // subnormal step 2^-24 below its normal range.
            let (rel, abs) = if ty == GgmlType::F16 {
                (2f32.powi(-11), 2f32.powi(-25))
            } else {
                (2f32.powi(-8), 2f32.powi(-134))
            };
            for (i, (&a, &b)) in x.iter().zip(&got).enumerate() {
                if !((a - b).abs() <= (a.abs() * rel).max(abs)) {
                    return Err(format!("{ty} value {i}: {a:e} -> {b:e}"));
                }
            }
        }
        GgmlType::Q8K => {
            // d = max / -127 in f32: half a step, and the clamp at 127 of the opposite extreme.
            for (xb, gb) in x.chunks_exact(QK_K).zip(got.chunks_exact(QK_K)) {
                let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (&a, &b) in xb.iter().zip(gb) {
                    let bound = amax / 127.0 * (1.0 + 1e-5);
                    if !((a - b).abs() <= bound) {
                        return Err(format!("Q8_K: {a:e} -> {b:e}, bound {bound:e}"));
                    }
                }
            }
        }
        _ => {
            let bs = ty.block_size();
            let tb = ty.type_size();
            for (i, ((xb, gb), qb)) in x
                .chunks_exact(bs)
                .zip(got.chunks_exact(bs))
                .zip(q.chunks_exact(tb))
                .enumerate()
            {
                check_block(ty, xb, gb, qb).map_err(|e| format!("block {i}: {e}"))?;
                if let Some((k, floor)) = amax_bound(ty) {
                    let g = amax_group(ty);
                    for (xs, gs) in xb.chunks_exact(g).zip(gb.chunks_exact(g)) {
                        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                        for (&a, &b) in xs.iter().zip(gs) {
                            let bound = k * amax + floor;
                            if !((a - b).abs() <= bound) {
                                return Err(format!(
                                    "{ty} block {i}: {a:e} -> {b:e}, amax {amax:e}, bound {bound:e}"
                                ));
                            }
                        }
                    }
                }
                if ty == GgmlType::NVFP4 {
                    for (xs, gs) in xb.chunks_exact(16).zip(gb.chunks_exact(16)) {
                        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                        for (&a, &b) in xs.iter().zip(gs) {
                            if !((a - b).abs() <= nvfp4_bound(amax)) {
                                return Err(format!("NVFP4 block {i}: {a:e} -> {b:e}"));
                            }
                        }
                    }
                }
                if ty == GgmlType::IQ4NL {
                    iq4_nl_weighted(xb, gb).map_err(|e| format!("block {i}: {e}"))?;
                }
            }
        }
    }
    Ok(())
}

/// A Q8_K row built directly (its quantizer belongs to the k-quants): random scale and quants,
/// with the group sums filled in. Returns the bytes and the dequantized values.
fn q8k_row(n: usize, d: f32, qs: &[i8]) -> (Vec<u8>, Vec<f32>) {
    let mut blocks: Vec<BlockQ8K> = vec![bytemuck::Zeroable::zeroed(); n / QK_K];
    let mut deq = vec![0f32; n];
    for (ib, b) in blocks.iter_mut().enumerate() {
        b.d = strait::quant::blocks::F32Le::new(d);
        for j in 0..QK_K {
            b.qs[j] = qs[(ib * QK_K + j) % qs.len()];
            deq[ib * QK_K + j] = d * b.qs[j] as f32;
        }
        for g in 0..QK_K / 16 {
            let s: i32 = b.qs[g * 16..(g + 1) * 16].iter().map(|&v| v as i32).sum();
            b.bsums[g] = strait::quant::blocks::I16Le::new(s as i16);
        }
    }
    (bytemuck::cast_slice(&blocks).to_vec(), deq)
}

/// Checks vec_dot of quantized x and y against the f64 dot of their dequantized forms.
fn dot(ty: GgmlType, x: &[f32], y: &[f32], q8k: (f32, &[i8])) -> std::result::Result<(), String> {
    let n = x.len();
    let k = scalar(ty).unwrap();
    let dt = k.dot_type;
    let mut xq = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
    quantize_row(ty, x, &mut xq, None).map_err(|e| e.to_string())?;
    let mut xdq = vec![0f32; n];
    dequantize_row(ty, &xq, &mut xdq).map_err(|e| e.to_string())?;
    let (yq, ydq) = if dt == GgmlType::Q8K {
        q8k_row(n, q8k.0, q8k.1)
    } else {
        let mut yq = vec![0u8; dt.row_bytes(n as u64).unwrap() as usize];
        quantize_row(dt, y, &mut yq, None).map_err(|e| e.to_string())?;
        let mut ydq = vec![0f32; n];
        dequantize_row(dt, &yq, &mut ydq).map_err(|e| e.to_string())?;
        (yq, ydq)
    };
    let mut want: f64 = xdq
        .iter()
        .zip(&ydq)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum();
    if dt == GgmlType::Q8_1 && matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        // ggml's min term m * s uses the block's f16 sum s, not d * sum(q).
        let bs = ty.type_size();
        for (xb, yb) in xq.chunks_exact(bs).zip(yq.chunks_exact(36)) {
            let m = f16_at(xb, 2) as f64;
            let (d, s) = (f16_at(yb, 0) as f64, f16_at(yb, 2) as f64);
            let sum: f64 = yb[4..].iter().map(|&v| v as i8 as f64).sum();
            want += m * (s - d * sum);
        }
    }
    let got = vec_dot(ty, n, &xq, &yq).map_err(|e| e.to_string())? as f64;
    let norm = |v: &[f32]| v.iter().map(|&a| a as f64 * a as f64).sum::<f64>().sqrt();
    let scale = want.abs() + norm(&xdq) * norm(&ydq);
    // Products of f32 and bf16 values can underflow in f32 (as in ggml): each loses at most
    // the smallest subnormal.
    if (got - want).abs() <= 1e-5 * scale + n as f64 * f64::from(f32::from_bits(1)) {
        Ok(())
    } else {
        Err(format!(
            "{ty} dot of {n}: {got:e} vs {want:e} (scaled error {:e})",
            (got - want).abs() / scale
        ))
    }
}

/// A random row: uniform values times 10^exp, with an optional outlier, zeros, a constant
/// run and a single sign, clamped to MAX_ABS.
fn row(max_exp: i32) -> impl Strategy<Value = Vec<f32>> {
    (
        prop::collection::vec(-1f32..1f32, 4096),
        prop::sample::select(vec![-30, -8, -3, -1, 0, 1, 2, 3, 4]),
        0usize..4096,
        prop::sample::select(vec![1f32, 1f32, 30.0, 1e-3]),
        0u8..5,
    )
        .prop_map(move |(mut v, exp, at, outlier, shape)| {
            let s = 10f32.powi(exp.min(max_exp));
            for a in v.iter_mut() {
                *a *= s;
            }
            match shape {
                1 => v.iter_mut().step_by(3).for_each(|a| *a = 0.0),
                2 => v.iter_mut().take(300).for_each(|a| *a = s * 0.5),
                3 => v.iter_mut().for_each(|a| *a = a.abs()),
                4 => v.iter_mut().for_each(|a| *a = -a.abs()),
                _ => {}
            }
            v[at] *= outlier;
            v.iter_mut().for_each(|a| *a = a.clamp(-MAX_ABS, MAX_ABS));
            v
        })
}

/// A length of whole blocks of `ty`, at most 4096.
fn len_for(ty: GgmlType, blocks: usize) -> usize {
    let bs = ty.block_size().max(32);
    let max_blocks = 4096 / bs;
    bs * (1 + blocks % max_blocks)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn quantize_then_dequantize_stays_within_the_bound(x in row(4), blocks in 0usize..128) {
        for ty in TYPES {
            if scalar(ty).and_then(|k| k.quantize).is_none() {
                // Q8_K's quantizer lives with the k-quants.
                prop_assert_eq!(ty, GgmlType::Q8K);
                continue;
            }
            let n = len_for(ty, blocks);
            if let Err(e) = roundtrip(ty, &x[..n]) {
                prop_assert!(false, "{}", e);
            }
        }
    }

    #[test]
    fn dot_matches_the_f64_dot_of_the_dequantized_rows(
        x in row(4),
        // Activations up to 1e3 keep Q8_1's f16 block sums finite.
        y in row(3),
        blocks in 0usize..128,
        q8k_d in 1e-6f32..1e2,
        q8k_qs in prop::collection::vec(-127i8..=127, 256),
    ) {
        for ty in TYPES {
            if ty == GgmlType::Q8_1 || ty == GgmlType::Q8K {
                continue; // dot types only
            }
            let n = len_for(ty, blocks);
            if let Err(e) = dot(ty, &x[..n], &y[..n], (q8k_d, &q8k_qs)) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}

#[test]
fn roundtrip_catches_a_wrong_level() {
    // The bound is tight enough to see one quant off by one level.
    let x: Vec<f32> = (0..32).map(|i| (i as f32 - 15.5) / 4.0).collect();
    let mut q = vec![0u8; 18];
    quantize_row(GgmlType::Q4_0, &x, &mut q, None).unwrap();
    q[2 + 5] ^= 0x01;
    let mut got = vec![0f32; 32];
    dequantize_row(GgmlType::Q4_0, &q, &mut got).unwrap();
    assert!(check_block(GgmlType::Q4_0, &x, &got, &q).is_err());
}
