//! The machine a measurement ran on, and its measured host read bandwidth.

use crate::quant::arch;
use serde::Serialize;
use std::time::Instant;

/// Build, CPU and kernel paths, as reports print them.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub version: String,
    /// `release` or `debug`.
    pub build: &'static str,
    pub cpu: String,
    pub logical_cpus: usize,
    /// The CPU features strait checks that this CPU has.
    pub features: Vec<&'static str>,
    /// Kernel paths this CPU supports, scalar first.
    pub paths: Vec<&'static str>,
    /// The path the engine uses.
    pub selected: &'static str,
    /// The GPU used, if any.
    pub gpu: Option<String>,
    /// The 1-minute load average when the run started (other work on the machine).
    pub load_average: Option<f64>,
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

impl Machine {
    pub fn detect() -> Machine {
        Machine {
            version: env!("CARGO_PKG_VERSION").to_string(),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            cpu: cpu_model(),
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            features: arch::cpu_features()
                .into_iter()
                .filter(|f| f.1)
                .map(|f| f.0)
                .collect(),
            paths: arch::supported().iter().map(|p| p.name()).collect(),
            selected: arch::selected().name(),
            gpu: None,
            load_average: load_average(),
        }
    }
}

/// Host memory read bandwidth in GB/s with `threads` threads: the best of `rounds` sums over
/// a buffer of `bytes` (far larger than the caches), each thread reading its own part.
pub fn host_read_bandwidth(bytes: usize, threads: usize, rounds: usize) -> f64 {
    let words = (bytes / 8).max(1 << 16);
    let buf: Vec<u64> = (0..words as u64).collect();
    let threads = threads.max(1);
    let part = words.div_ceil(threads);
    let mut best = 0f64;
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = buf
                .chunks(part)
                .map(|c| {
                    s.spawn(move || {
                        // Four independent sums let the loads overlap.
                        let mut acc = [0u64; 4];
                        for q in c.chunks_exact(4) {
                            for i in 0..4 {
                                acc[i] = acc[i].wrapping_add(q[i]);
                            }
                        }
                        acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        let secs = start.elapsed().as_secs_f64();
        best = best.max((words * 8) as f64 / secs / 1e9);
    }
    best
}
