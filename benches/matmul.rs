//! The CPU matmul per weight type, batch size and thread count, against a bandwidth
//! reference: a plain sum over a buffer of the same size on the same threads, in the same run.
//!
//! `cargo bench --bench matmul -- --warm-up-time 1 --measurement-time 2 [filter]`
//!
//! Groups: `matvec/4096x4096x8` and `matvec/576x1536x90` (B = 1 over working sets of 45 MB or
//! more, larger than the L3 cache, in weight bytes per second: compare with `sum` of the same
//! group),
//! `batch/576x1536` (B = 1, 8, 32, 128, 512, in tokens per second) and `dispatch` (a rayon job
//! of 2 or 8 one-microsecond tasks against the same tasks on one thread). Wall time: on a
//! shared machine run the matvec and its `sum` back to back and compare only within one run.

use criterion::{BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
use strait::backend::cpu::matmul::{matmul, scratch_bytes};
use strait::model::WeightView;
use strait::quant::{self, GgmlType};

const TYPES: [GgmlType; 14] = [
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
const THREADS: [usize; 2] = [1, 2];

fn values(n: usize, seed: u64) -> Vec<f32> {
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
fn weights(ty: GgmlType, rows: usize, cols: usize, layers: usize) -> Vec<Vec<u8>> {
    let k = quant::scalar(ty).unwrap();
    let wrow = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut row = vec![0u8; wrow];
    (k.quantize.unwrap())(&values(cols, 1), &mut row, None);
    (0..layers).map(|_| row.repeat(rows)).collect()
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

/// Times `iters` runs of `f` inside the pool, so that no hop into the pool is counted.
fn timed(p: &rayon::ThreadPool, b: &mut criterion::Bencher, mut f: impl FnMut() + Send) {
    b.iter_custom(|iters| {
        p.install(|| {
            let t = std::time::Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed()
        })
    })
}

/// The bandwidth reference: the wrapping sum of `buf` as u64 words, split over the pool.
fn sum(buf: &[u64]) -> u64 {
    buf.par_chunks(buf.len().div_ceil(rayon::current_num_threads() * 4).max(1))
        .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
        .reduce(|| 0, u64::wrapping_add)
}

fn matvec(c: &mut Criterion, rows: usize, cols: usize, layers: usize) {
    let mut g = c.benchmark_group(format!("matvec/{rows}x{cols}x{layers}"));
    let x = values(cols, 2);
    let mut out = vec![0f32; rows];
    for ty in TYPES {
        let ws = weights(ty, rows, cols, layers);
        let bytes: usize = ws.iter().map(Vec::len).sum();
        g.throughput(Throughput::Bytes(bytes as u64));
        let views: Vec<WeightView> = ws
            .iter()
            .map(|d| WeightView {
                ty,
                cols,
                rows,
                data: d,
            })
            .collect();
        let mut scratch = vec![0u8; scratch_bytes(&views[0], 1)];
        let buf = vec![1u64; bytes / 8];
        for t in THREADS {
            let p = pool(t);
            g.bench_function(BenchmarkId::new(format!("{ty}"), format!("t{t}")), |b| {
                timed(&p, b, || {
                    for v in &views {
                        matmul(&mut out, &x, v, 1, &mut scratch).unwrap();
                    }
                })
            });
            g.bench_function(
                BenchmarkId::new(format!("{ty}-sum"), format!("t{t}")),
                |b| {
                    timed(&p, b, || {
                        std::hint::black_box(sum(&buf));
                    })
                },
            );
        }
    }
    g.finish();
}

fn batch(c: &mut Criterion) {
    let (rows, cols) = (576, 1536);
    let mut g = c.benchmark_group(format!("batch/{rows}x{cols}"));
    for ty in TYPES {
        let ws = weights(ty, rows, cols, 1);
        let view = WeightView {
            ty,
            cols,
            rows,
            data: &ws[0],
        };
        for bsz in [1usize, 4, 8, 16, 32, 128, 512] {
            let x = values(bsz * cols, 3);
            let mut out = vec![0f32; bsz * rows];
            let mut scratch = vec![0u8; scratch_bytes(&view, bsz)];
            g.throughput(Throughput::Elements(bsz as u64));
            for t in THREADS {
                let p = pool(t);
                g.bench_function(
                    BenchmarkId::new(format!("{ty}/B{bsz}"), format!("t{t}")),
                    |b| {
                        timed(&p, b, || {
                            matmul(&mut out, &x, &view, bsz, &mut scratch).unwrap()
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

/// What handing out a job costs on 2 threads: `chunks` tasks of about a microsecond each (an
/// 8th to a 16th of a 576x1536 Q4_1 matvec on one thread), through rayon and on the calling
/// thread alone. Overhead per job: the rayon time less half the serial time.
fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch");
    let p = pool(2);
    let work = |i: usize| {
        let mut a = i as u64;
        for _ in 0..1000 {
            a = std::hint::black_box(a.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        std::hint::black_box(a);
    };
    for chunks in [2usize, 8] {
        g.bench_function(BenchmarkId::new("serial", chunks), |b| {
            timed(&p, b, || (0..chunks).for_each(work))
        });
        g.bench_function(BenchmarkId::new("rayon", chunks), |b| {
            timed(&p, b, || (0..chunks).into_par_iter().for_each(work))
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    // Eight 4096x4096 matrices (75-142 MB), and the 90 FFN matrices of SmolLM2's 30 layers
    // (45-85 MB): more than the 32 MiB L3 of the test machine, as a decode step reads them.
    matvec(c, 4096, 4096, 8);
    matvec(c, 576, 1536, 90);
    batch(c);
    dispatch(c);
}

criterion::criterion_group!(group, benches);
criterion::criterion_main!(group);
