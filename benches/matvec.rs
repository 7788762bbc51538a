//! The matvec of a decode step against the machine's read bandwidth, side by side.
//!
//! For each format and thread count, rounds alternate a pass of matvecs (B = 1) over a working
//! set larger than the L3 cache with two plain sums on the same threads: over a buffer of the
//! same size, and over 512 MiB. Each round gives the ratios of the speeds; on a machine whose
//! bandwidth drifts with its neighbours' load, they are steadier than any speed alone.
//!
//! The 512 MiB sum is the machine's read bandwidth from memory. A same-size buffer of 45-85 MB
//! is not much larger than the L3 cache, which keeps part of it between passes: its sum reads
//! a share from the cache (on a 32 MiB L3: 62 GiB/s at 45 MB, 52 at 65 MB, 44 from 134 MB on,
//! on two cores).
//!
//! The matvecs run as in the engine: on a [`Team`], one `matmul` per matrix.
//!
//! `cargo bench --bench matvec [-- FILTER]` (FILTER: a substring of "SHAPE TYPE tN");
//! `STRAIT_ROUNDS` rounds per line (default 25).
//!
//! Shapes: eight 4096x4096 matrices (75-142 MB), and the 90 FFN matrices of SmolLM2's 30
//! layers as 576x1536 (45-85 MB): more than a 32 MiB L3, as a decode step reads them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;
use strait::backend::cpu::matmul::{matmul, scratch_bytes};
use strait::backend::cpu::team::{self, Team};
use strait::model::WeightView;

mod common;
use common::{values, weights, THREADS, TYPES};

/// The wrapping sum of `buf` as u64 words, on the current team, split as `matmul` splits rows.
fn sum(buf: &[u64]) -> u64 {
    let chunk = buf.len().div_ceil(team::threads() * 4).max(1);
    let total = AtomicU64::new(0);
    team::for_each(buf.len().div_ceil(chunk), |i| {
        let c = &buf[i * chunk..((i + 1) * chunk).min(buf.len())];
        total.fetch_add(c.iter().fold(0u64, |a, &x| a.wrapping_add(x)), Relaxed);
    });
    total.into_inner()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median and quartiles, in percent.
fn spread(v: &mut [f64]) -> String {
    let m = median(v);
    let (lo, hi) = (v[v.len() / 4], v[v.len() * 3 / 4]);
    format!("{:4.0}% ({:.0}-{:.0})", 100.0 * m, 100.0 * lo, 100.0 * hi)
}

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let rounds: usize = std::env::var("STRAIT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25)
        .max(1);
    let gib = (1u64 << 30) as f64;
    let big = vec![1u64; (512 << 20) / 8];
    println!(
        "shape         type    threads  matvec  same-size sum  512 MiB sum  GiB/s   of 512 MiB (p25-p75)  of same size"
    );
    for (rows, cols, layers) in [(4096, 4096, 8), (576, 1536, 90)] {
        let shape = format!("{rows}x{cols}x{layers}");
        let x = values(cols, 2);
        let mut out = vec![0f32; rows];
        for ty in TYPES {
            if !THREADS
                .iter()
                .any(|t| format!("{shape} {ty} t{t}").contains(&filter))
            {
                continue;
            }
            let ws = weights(ty, rows, cols, layers);
            let bytes: usize = ws.iter().map(Vec::len).sum();
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
            // Passes per timing: about 10 ms of work.
            let passes = (400_000_000 / bytes).clamp(1, 20);
            for t in THREADS {
                if !format!("{shape} {ty} t{t}").contains(&filter) {
                    continue;
                }
                let tm = Team::new(t).unwrap();
                let (mut mv, mut same, mut dram) = (vec![], vec![], vec![]);
                let (mut of_dram, mut of_same) = (vec![], vec![]);
                tm.install(|| {
                    for round in 0..=rounds {
                        let t0 = Instant::now();
                        for _ in 0..passes {
                            for v in &views {
                                matmul(&mut out, &x, v, 1, &mut scratch).unwrap();
                            }
                        }
                        let t1 = Instant::now();
                        for _ in 0..passes {
                            std::hint::black_box(sum(&buf));
                        }
                        let t2 = Instant::now();
                        std::hint::black_box(sum(&big));
                        let t3 = Instant::now();
                        // The first round warms the caches, pages and threads.
                        if round > 0 {
                            let work = (bytes * passes) as f64 / gib;
                            let a = work / (t1 - t0).as_secs_f64();
                            let b = work / (t2 - t1).as_secs_f64();
                            let c = (big.len() * 8) as f64 / gib / (t3 - t2).as_secs_f64();
                            mv.push(a);
                            same.push(b);
                            dram.push(c);
                            of_dram.push(a / c);
                            of_same.push(a / b);
                        }
                    }
                });
                println!(
                    "{shape:13} {:7} t{t:<7} {:6.1}  {:13.1}  {:11.1}         {}        {}",
                    ty.name(),
                    median(&mut mv),
                    median(&mut same),
                    median(&mut dram),
                    spread(&mut of_dram),
                    spread(&mut of_same),
                );
            }
        }
    }
}
