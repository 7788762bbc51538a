//! What the matmul benches share: the formats, deterministic data and thread pools.

#![allow(dead_code)]

use strait::quant::{self, GgmlType};

/// The formats of the real models, and the float types.
pub const TYPES: [GgmlType; 14] = [
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
];

pub const THREADS: [usize; 2] = [1, 2];

/// Deterministic values in -1..1 (a small LCG).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
        })
        .collect()
}

/// `layers` weight matrices of `rows x cols` of type `ty` (one row quantized, then repeated:
/// the bytes are what the kernel reads; their values do not change its speed).
pub fn weights(ty: GgmlType, rows: usize, cols: usize, layers: usize) -> Vec<Vec<u8>> {
    let k = quant::scalar(ty).unwrap();
    let wrow = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut row = vec![0u8; wrow];
    (k.quantize.unwrap())(&values(cols, 1), &mut row, None);
    (0..layers).map(|_| row.repeat(rows)).collect()
}

pub fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}
