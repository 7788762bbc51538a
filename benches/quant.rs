//! Quant kernels per type and kernel path: the dot product with quantized activations,
//! dequantization of a row and activation quantization, over rows of 16M values (as ggml's
//! `test-quantize-perf`, larger than the caches), in bytes of quantized data per second.
//!
//! `cargo bench --bench quant -- --warm-up-time 1 --measurement-time 2 [filter]`
//! (`STRAIT_BENCH_VALUES=65536` runs cache-resident rows instead.)
//!
//! Time is the benchmark thread's CPU time on Linux, so that the figures are per core even
//! on a machine shared with other work; `STRAIT_BENCH_CLOCK=wall` measures wall time.

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkId, Criterion, Throughput};
use strait::quant::arch::{supported, Path};
use strait::quant::{self, GgmlType};

/// Values per row: 16M, or `STRAIT_BENCH_VALUES` (a multiple of 256).
fn row_len() -> usize {
    std::env::var("STRAIT_BENCH_VALUES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0 && n % 256 == 0)
        .unwrap_or(16 * 1024 * 1024)
}

const WEIGHTS: [GgmlType; 10] = [
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
];

const ACTIVATIONS: [GgmlType; 3] = [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8K];

/// Deterministic values in -1..1 (a small LCG; no dependency needed).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn quantized(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quant::quantize_row(ty, x, &mut q, None).unwrap();
    q
}

fn bench<M: Measurement>(c: &mut Criterion<M>) {
    let n = row_len();
    let x = values(n, 1);
    let y = values(n, 2);
    let paths: Vec<Path> = supported();
    for ty in WEIGHTS {
        let xq = quantized(ty, &x);
        let dot_ty = quant::scalar(ty).unwrap().dot_type;
        let yq = quantized(dot_ty, &y);
        let mut g = c.benchmark_group(ty.name());
        g.throughput(Throughput::Bytes(xq.len() as u64));
        g.sample_size(10);
        for &p in &paths {
            let k = p.kernels(ty).unwrap();
            let dot = k.vec_dot.unwrap();
            g.bench_function(BenchmarkId::new("dot", p.name()), |b| {
                b.iter(|| dot(n, &xq, &yq))
            });
        }
        let mut out = vec![0f32; n];
        for &p in &paths {
            let deq = p.kernels(ty).unwrap().dequantize.unwrap();
            g.bench_function(BenchmarkId::new("dequantize", p.name()), |b| {
                b.iter(|| deq(&xq, &mut out))
            });
        }
        g.finish();
    }
    for ty in ACTIVATIONS {
        let mut q = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
        let mut g = c.benchmark_group(ty.name());
        g.throughput(Throughput::Bytes(q.len() as u64));
        g.sample_size(10);
        for &p in &paths {
            let f = p.kernels(ty).unwrap().quantize.unwrap();
            g.bench_function(BenchmarkId::new("quantize", p.name()), |b| {
                b.iter(|| f(&y, &mut q, None))
            });
        }
        g.finish();
    }
}

fn main() {
    let wall = std::env::var("STRAIT_BENCH_CLOCK").as_deref() == Ok("wall");
    if wall || !cfg!(target_os = "linux") {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default()
            .with_measurement(CpuTime)
            .configure_from_args();
        bench(&mut c);
        c.final_summary();
    }
}

/// The calling thread's CPU time, in nanoseconds.
struct CpuTime;

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// `CLOCK_THREAD_CPUTIME_ID` on Linux.
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

fn thread_ns() -> u64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec (two 64-bit fields on x86-64/aarch64 Linux).
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
}

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_ns()
    }
    fn end(&self, t0: u64) -> u64 {
        thread_ns() - t0
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Nanoseconds of CPU time; throughput in GiB/s (or G elements/s).
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if ns < 1e3 {
            (1.0, "ns (cpu)")
        } else if ns < 1e6 {
            (1e-3, "µs (cpu)")
        } else if ns < 1e9 {
            (1e-6, "ms (cpu)")
        } else {
            (1e-9, "s (cpu)")
        };
        for v in values {
            *v *= factor;
        }
        unit
    }

    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let (n, unit, div) = match *t {
            Throughput::Bytes(b) => (b as f64, "GiB/s", (1u64 << 30) as f64),
            Throughput::BytesDecimal(b) => (b as f64, "GB/s", 1e9),
            Throughput::Elements(e) => (e as f64, "Gelem/s", 1e9),
        };
        for v in values {
            *v = n / (*v * 1e-9) / div;
        }
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}
