//! Dot products and row dequantization of F32, F16, BF16, IQ4_NL, IQ4_XS, MXFP4 and the IQ1/IQ2/
//! IQ3 types on every kernel path of this CPU, one thread, rows of 16M values (as ggml's
//! `test-quantize-perf`), and the dot on 64K values that stay in L2. Throughput counts the
//! quantized bytes of the weight row.
//!
//! Times are this thread's CPU time, not wall time: on a shared machine the wall time mostly
//! measures how long the thread waited for a core.
//!
//! `cargo bench --bench quant_more -- --warm-up-time 1 --measurement-time 2 [filter]`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use strait::gguf::GgufFile;
use strait::quant::arch::{self, Path};
use strait::quant::{self, GgmlType, Kernels};

const N: usize = 16 << 20;
/// The row quantized once and repeated, so that setup stays quick for the slow quantizers.
const CHUNK: usize = 1 << 16;
/// A row that fits in L2 with its activations.
const SMALL: usize = 1 << 16;

const TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
    GgmlType::MXFP4,
    GgmlType::IQ1S,
    GgmlType::IQ1M,
    GgmlType::IQ2XXS,
    GgmlType::IQ2XS,
    GgmlType::IQ2S,
    GgmlType::IQ3XXS,
    GgmlType::IQ3S,
];

/// CPU time of this thread.
fn cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write; the clock id is a constant of this platform.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Runs `f` `iters` times and returns the CPU time it took.
fn timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let t0 = cpu_time();
    for _ in 0..iters {
        f();
    }
    cpu_time() - t0
}

fn values(seed: u32, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

/// A row of `N` values of `k.ty`: `CHUNK` values quantized by the scalar code, repeated; for a
/// type without a quantizer, the quantized rows of its reference file, repeated.
fn row(k: &Kernels, seed: u32) -> Vec<u8> {
    let q = match k.quantize {
        Some(quantize) => {
            let x = values(seed, CHUNK);
            let mut q = vec![0u8; k.ty.row_bytes(CHUNK as u64).unwrap() as usize];
            let w = vec![1.0f32; CHUNK];
            quantize(&x, &mut q, Some(&w));
            q
        }
        None => {
            let path = format!(
                "{}/../shared/reference/quant/{}.gguf",
                env!("CARGO_MANIFEST_DIR"),
                k.ty.name().to_lowercase()
            );
            let f = GgufFile::open(&path).unwrap();
            f.data(f.require("x.q").unwrap()).to_vec()
        }
    };
    let bytes = k.ty.row_bytes(N as u64).unwrap() as usize;
    q.repeat(bytes.div_ceil(q.len()))[..bytes].to_vec()
}

fn bench(c: &mut Criterion) {
    for ty in TYPES {
        let Some(scalar) = quant::scalar(ty) else {
            continue;
        };
        let dot = quant::scalar(scalar.dot_type).unwrap();
        let (x, y) = (row(&scalar, 1), row(&dot, 2));
        let mut out = vec![0f32; N];
        let mut g = c.benchmark_group(ty.name());
        g.throughput(Throughput::Bytes(x.len() as u64));
        g.sample_size(10);
        for p in arch::supported() {
            let Some(k) = p.own_kernels(ty) else { continue };
            let name = if p == Path::Scalar {
                "scalar"
            } else {
                p.name()
            };
            if let Some(f) = k.vec_dot {
                g.bench_function(BenchmarkId::new("dot", name), |b| {
                    b.iter_custom(|i| {
                        timed(i, || {
                            black_box(f(N, black_box(&x), black_box(&y)));
                        })
                    })
                });
            }
            if let Some(f) = k.dequantize {
                g.bench_function(BenchmarkId::new("dequantize", name), |b| {
                    b.iter_custom(|i| timed(i, || f(black_box(&x), black_box(&mut out))))
                });
            }
        }
        g.finish();
        // The same dot on a row that stays in L2, where compute rather than memory bounds it.
        let (xs, ys) = (&x[..x.len() / (N / SMALL)], &y[..y.len() / (N / SMALL)]);
        let mut g = c.benchmark_group(format!("{}/l2", ty.name()));
        g.throughput(Throughput::Bytes(xs.len() as u64));
        g.sample_size(10);
        for p in arch::supported() {
            let Some(f) = p.own_kernels(ty).and_then(|k| k.vec_dot) else {
                continue;
            };
            g.bench_function(BenchmarkId::new("dot", p.name()), |b| {
                b.iter_custom(|i| {
                    timed(i, || {
                        black_box(f(SMALL, black_box(xs), black_box(ys)));
                    })
                })
            });
        }
        g.finish();
    }
}

/// Two rows read together as a dot product reads them, `bx` and `by` bytes per 256 values, at
/// 16M values: a plain AVX-512 sum of both, and the same with both rows prefetched 20 KiB ahead
/// as the avx512 dot kernels do. Throughput counts the bytes of both rows: the ceiling that a
/// kernel's weights plus activations are measured against.
fn read(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        type Sum = unsafe fn(&[u8], &[u8], usize) -> i32;
        let pairs: [(&str, usize, usize, Sum); 5] = [
            ("q2_K+q8_K", 84, 292, sum2::<84, 292>),
            ("q4_K+q8_K", 144, 292, sum2::<144, 292>),
            ("q6_K+q8_K", 210, 292, sum2::<210, 292>),
            ("iq4_nl+q8_0", 144, 272, sum2::<144, 272>),
            ("f16+f16", 512, 512, sum2::<512, 512>),
        ];
        let mut g = c.benchmark_group("read2");
        g.sample_size(10);
        for (name, bx, by, sum) in pairs {
            let nb = N / 256;
            let x: Vec<u8> = (0..nb * bx).map(|i| i as u8).collect();
            let y: Vec<u8> = (0..nb * by).map(|i| (i * 7) as u8).collect();
            g.throughput(Throughput::Bytes((nb * (bx + by)) as u64));
            for (f, ahead) in [("sum", 0), ("sum+prefetch", 20 * 1024)] {
                g.bench_function(BenchmarkId::new(f, name), |b| {
                    b.iter_custom(|i| {
                        timed(i, || {
                            // SAFETY: avx512f was detected above.
                            black_box(unsafe { sum(black_box(&x), &y, ahead) });
                        })
                    })
                });
            }
        }
        g.finish();
    }
}

/// Sums blocks of `BX` bytes of `x` and `BY` bytes of `y` in turn, 64 bytes a load into four
/// accumulators, prefetching both `ahead` bytes (together) ahead when `ahead > 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum2<const BX: usize, const BY: usize>(x: &[u8], y: &[u8], ahead: usize) -> i32 {
    use std::arch::x86_64::*;
    let nb = (x.len() / BX).min(y.len() / BY);
    let blocks = ahead / (BX + BY);
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut k = 0;
    for i in 0..nb {
        let (xb, yb) = (x.as_ptr().add(i * BX), y.as_ptr().add(i * BY));
        if blocks > 0 {
            let (xp, yp) = (xb.wrapping_add(blocks * BX), yb.wrapping_add(blocks * BY));
            let mut o = 0;
            while o < BX {
                _mm_prefetch::<_MM_HINT_T0>(xp.wrapping_add(o) as *const i8);
                o += 64;
            }
            let mut o = 0;
            while o < BY {
                _mm_prefetch::<_MM_HINT_T0>(yp.wrapping_add(o) as *const i8);
                o += 64;
            }
        }
        // Every byte: the last word of a block overlaps the one before it.
        let mut o = 0;
        while o < BX {
            let v = _mm512_loadu_si512(xb.add(o.min(BX - 64)) as *const _);
            acc[k % 4] = _mm512_add_epi32(acc[k % 4], v);
            k += 1;
            o += 64;
        }
        let mut o = 0;
        while o < BY {
            let v = _mm512_loadu_si512(yb.add(o.min(BY - 64)) as *const _);
            acc[k % 4] = _mm512_add_epi32(acc[k % 4], v);
            k += 1;
            o += 64;
        }
    }
    let s = _mm512_add_epi32(
        _mm512_add_epi32(acc[0], acc[1]),
        _mm512_add_epi32(acc[2], acc[3]),
    );
    _mm512_reduce_add_epi32(s)
}

criterion_group!(benches, bench, read);
criterion_main!(benches);
