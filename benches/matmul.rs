//! The CPU matmul per weight type, batch size and thread count.
//!
//! `cargo bench --bench matmul -- --warm-up-time 1 --measurement-time 2 [filter]`
//!
//! Groups: `batch/576x1536` (B = 1, 4, 8, 16, 32, 128, 512, in tokens per second, on a
//! [`Team`] as in the engine) and `dispatch` (a loop of 2 or 8 one-microsecond tasks on a team
//! and through rayon, against the same tasks on one thread). The matvec against the read
//! bandwidth is `benches/matvec.rs`.

use criterion::{BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
use strait::backend::cpu::matmul::{matmul, scratch_bytes};
use strait::backend::cpu::team::{self, Team};
use strait::model::WeightView;

mod common;
use common::{pool, values, weights, THREADS, TYPES};

/// Times `iters` runs of `f` with the team current.
fn timed(t: &Team, b: &mut criterion::Bencher, mut f: impl FnMut()) {
    b.iter_custom(|iters| {
        t.install(|| {
            let t = std::time::Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed()
        })
    })
}

/// Times `iters` runs of `f` inside the pool, so that no hop into the pool is counted.
fn timed_rayon(p: &rayon::ThreadPool, b: &mut criterion::Bencher, mut f: impl FnMut() + Send) {
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
                let tm = Team::new(t).unwrap();
                g.bench_function(
                    BenchmarkId::new(format!("{ty}/B{bsz}"), format!("t{t}")),
                    |b| {
                        timed(&tm, b, || {
                            matmul(&mut out, &x, &view, bsz, &mut scratch).unwrap()
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

/// What handing out a loop costs on 2 threads: `chunks` tasks of about a microsecond each (an
/// 8th to a 16th of a 576x1536 Q4_1 matvec on one thread), on a team, through rayon, and on the
/// calling thread alone. Overhead per loop: the parallel time less half the serial time.
fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch");
    let p = pool(2);
    let tm = Team::new(2).unwrap();
    let work = |i: usize| {
        let mut a = i as u64;
        for _ in 0..1000 {
            a = std::hint::black_box(a.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        std::hint::black_box(a);
    };
    for chunks in [2usize, 8] {
        g.bench_function(BenchmarkId::new("serial", chunks), |b| {
            timed(&tm, b, || (0..chunks).for_each(work))
        });
        g.bench_function(BenchmarkId::new("team", chunks), |b| {
            timed(&tm, b, || team::for_each(chunks, work))
        });
        g.bench_function(BenchmarkId::new("rayon", chunks), |b| {
            timed_rayon(&p, b, || (0..chunks).into_par_iter().for_each(work))
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    batch(c);
    dispatch(c);
}

criterion::criterion_group!(group, benches);
criterion::criterion_main!(group);
