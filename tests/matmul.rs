//! The CPU matmul against the scalar reference: every output is the scalar `vec_dot` of a
//! weight row with the scalar-quantized activation row, within the dot tolerance, for batches
//! of 1 to 9 vectors, several shapes and the formats of the real models.

use proptest::prelude::*;
use strait::backend::cpu::matmul::{matmul, scratch_bytes};
use strait::model::WeightView;
use strait::quant::{self, GgmlType};

const TYPES: [GgmlType; 15] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(2862933555777941757)
        .wrapping_add(3037000493);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
        })
        .collect()
}

fn check(ty: GgmlType, rows: usize, cols: usize, batch: usize, seed: u64) {
    check_within(ty, rows, cols, batch, seed, 1e-3);
}

/// Every output within `tol` of the sum of |w·x| of the scalar `vec_dot`.
fn check_within(ty: GgmlType, rows: usize, cols: usize, batch: usize, seed: u64, tol: f32) {
    let k = quant::scalar(ty).unwrap();
    let wrow = ty.row_bytes(cols as u64).unwrap() as usize;
    let w = values(rows * cols, seed);
    let mut wq = vec![0u8; rows * wrow];
    for (dst, src) in wq.chunks_mut(wrow).zip(w.chunks(cols)) {
        (k.quantize.unwrap())(src, dst, None);
    }
    let view = WeightView {
        ty,
        cols,
        rows,
        data: &wq,
    };
    let x = values(batch * cols, seed ^ 0x5555);
    let mut out = vec![f32::NAN; batch * rows];
    let mut scratch = vec![0u8; scratch_bytes(&view, batch)];
    matmul(&mut out, &x, &view, batch, &mut scratch).unwrap();

    let dk = quant::scalar(k.dot_type).unwrap();
    let xrow = k.dot_type.row_bytes(cols as u64).unwrap() as usize;
    let mut xq = vec![0u8; xrow];
    for b in 0..batch {
        let xb = &x[b * cols..(b + 1) * cols];
        (dk.quantize.unwrap())(xb, &mut xq, None);
        for r in 0..rows {
            let want = (k.vec_dot.unwrap())(cols, &wq[r * wrow..(r + 1) * wrow], &xq);
            // Bound: float reassociation over |w|·|x| summed, with f16 block scales.
            let mag: f32 = w[r * cols..(r + 1) * cols]
                .iter()
                .zip(xb)
                .map(|(a, b)| (a * b).abs())
                .sum();
            let got = out[b * rows + r];
            assert!(
                (got - want).abs() <= tol * mag + 1e-4,
                "{ty} {rows}x{cols} batch {batch}: out[{b}][{r}] = {got}, scalar {want}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn matmul_matches_scalar(
        t in 0..TYPES.len(),
        batch in 1usize..=9,
        rows in prop::sample::select(vec![1usize, 3, 7, 64, 129, 576]),
        blocks in 1usize..=6,
        seed in any::<u64>(),
    ) {
        let ty = TYPES[t];
        check(ty, rows, blocks * ty.block_size(), batch, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Batches large enough for the batched kernels, rows not a multiple of their group.
    #[test]
    fn large_batches_match_scalar(
        t in 0..TYPES.len(),
        batch in 32usize..=41,
        rows in prop::sample::select(vec![1usize, 15, 17, 45, 129]),
        blocks in 1usize..=6,
        seed in any::<u64>(),
    ) {
        let ty = TYPES[t];
        check(ty, rows, blocks * ty.block_size(), batch, seed);
    }
}

#[test]
fn model_shapes() {
    for ty in TYPES {
        // SmolLM2's FFN down (576 x 1536) and a large square matrix split over threads.
        check(ty, 576, 1536, 3, 1);
        check(ty, 1024, 512, 1, 2);
        check(ty, 576, 1536, 37, 3);
    }
}

/// The batched kernels compute the integer block sums of the scalar dot products and differ
/// only in the float summation order: far closer than the dot tolerance, for every format.
#[test]
fn batched_kernels_equal_vec_dot() {
    for ty in TYPES {
        let cols = 2 * ty.block_size().max(256);
        for (rows, batch) in [
            (17, 32),
            (5, 37),
            (48, 64),
            (3, 5),
            (16, 9),
            // Either side of where the formats with a matvec kernel switch to the batched one.
            (16, 11),
            (16, 12),
            (33, 1),
            (7, 3),
        ] {
            check_within(ty, rows, cols, batch, rows as u64 ^ 7, 2e-6);
        }
        if ty.block_size() == 32 {
            // The matvec kernel's partial last group of 1, 2 or 3 blocks.
            for blocks in [17, 18, 19, 1, 2] {
                check_within(ty, 9, 32 * blocks, 1, blocks as u64, 2e-6);
                check_within(ty, 9, 32 * blocks, 2, blocks as u64, 2e-6);
            }
        }
        if ty.block_size() == 1 {
            // A partial last chunk, and an odd length the float kernel leaves to vec_dot.
            check_within(ty, 20, 300, 12, 5, 2e-6);
            check_within(ty, 20, 301, 12, 6, 2e-6);
        }
    }
}

#[test]
fn short_buffers_are_errors() {
    let ty = GgmlType::Q8_0;
    let wq = vec![0u8; 4 * 34];
    let view = WeightView {
        ty,
        cols: 32,
        rows: 4,
        data: &wq,
    };
    let mut scratch = vec![0u8; scratch_bytes(&view, 2)];
    let mut out = vec![0f32; 7];
    assert!(matmul(&mut out, &[0.0; 64], &view, 2, &mut scratch).is_err());
    let mut out = vec![0f32; 8];
    assert!(matmul(&mut out, &[0.0; 63], &view, 2, &mut scratch).is_err());
    assert!(matmul(&mut out, &[0.0; 64], &view, 2, &mut scratch[..67]).is_err());
}

/// Several matrices with the same input in one call give exactly what one call each gives,
/// for every path through the product (one vector, a few, a batch; one type, mixed types).
#[test]
fn matmul_many_equals_one_at_a_time() {
    use strait::backend::cpu::matmul::matmul_many;
    // A multiple of 256, for the K-quants.
    let cols = 768;
    let quantized = |ty: GgmlType, rows: usize, seed: u64| {
        let k = quant::scalar(ty).unwrap();
        let wrow = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut wq = vec![0u8; rows * wrow];
        for (dst, src) in wq
            .chunks_mut(wrow)
            .zip(values(rows * cols, seed).chunks(cols))
        {
            (k.quantize.unwrap())(src, dst, None);
        }
        wq
    };
    for (types, rows) in [
        ([GgmlType::Q4_1; 3], [576, 192, 192]),
        ([GgmlType::Q4K; 3], [64, 1, 200]),
        (
            [GgmlType::Q4_0, GgmlType::Q6K, GgmlType::Q4_0],
            [100, 100, 100],
        ),
    ] {
        let data: Vec<Vec<u8>> = (0..3)
            .map(|i| quantized(types[i], rows[i], i as u64 + 1))
            .collect();
        let views: Vec<WeightView> = (0..3)
            .map(|i| WeightView {
                ty: types[i],
                cols,
                rows: rows[i],
                data: &data[i],
            })
            .collect();
        for batch in [1, 3, 40] {
            let x = values(batch * cols, 9);
            let bytes = views.iter().map(|v| scratch_bytes(v, batch)).max().unwrap();
            let mut scratch = vec![0u8; bytes];
            let mut one: Vec<Vec<f32>> = rows.iter().map(|&r| vec![0.0; batch * r]).collect();
            for (out, v) in one.iter_mut().zip(&views) {
                matmul(out, &x, v, batch, &mut scratch).unwrap();
            }
            let mut all: Vec<Vec<f32>> = rows.iter().map(|&r| vec![1.0; batch * r]).collect();
            let [a, b, c] = &mut all[..] else {
                unreachable!()
            };
            matmul_many(
                [a, b, c],
                &x,
                [&views[0], &views[1], &views[2]],
                batch,
                &mut scratch,
            )
            .unwrap();
            for i in 0..3 {
                let same = one[i]
                    .iter()
                    .zip(&all[i])
                    .all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(same, "{:?} batch {batch}: matrix {i} differs", types);
            }
        }
    }
    // A short output is an error, as in `matmul`.
    let data = quantized(GgmlType::Q4_0, 8, 1);
    let v = WeightView {
        ty: GgmlType::Q4_0,
        cols,
        rows: 8,
        data: &data,
    };
    let mut scratch = vec![0u8; scratch_bytes(&v, 1)];
    let (mut a, mut b) = (vec![0f32; 8], vec![0f32; 7]);
    let x = values(cols, 3);
    assert!(matmul_many([&mut a[..], &mut b[..]], &x, [&v, &v], 1, &mut scratch).is_err());
}
