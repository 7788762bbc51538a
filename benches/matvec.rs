//! The matvec of a decode step against the machine's read bandwidth, side by side.
//!
//! For each format and thread count, rounds alternate a pass of matvecs (B = 1) over a working
//! set larger than the L3 cache with a plain sum over a buffer of the same size on the same
//! threads. Each round gives the ratio of the two speeds; on a machine whose bandwidth drifts
//! with its neighbours' load, that ratio is steadier than either speed alone.
//!
//! `cargo bench --bench matvec [-- FILTER]` (FILTER: a substring of "SHAPE TYPE tN");
//! `STRAIT_ROUNDS` rounds per line (default 25).
//!
//! Shapes: eight 4096x4096 matrices (75-142 MB), and the 90 FFN matrices of SmolLM2's 30
//! layers as 576x1536 (45-85 MB): more than a 32 MiB L3, as a decode step reads them.

use rayon::prelude::*;
use std::time::Instant;
use strait::backend::cpu::matmul::{matmul, scratch_bytes};
use strait::model::WeightView;

mod common;
use common::{pool, values, weights, THREADS, TYPES};

/// The wrapping sum of `buf` as u64 words, split over the pool as `matmul` splits rows.
fn sum(buf: &[u64]) -> u64 {
    buf.par_chunks(buf.len().div_ceil(rayon::current_num_threads() * 4).max(1))
        .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
        .reduce(|| 0, u64::wrapping_add)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    println!("shape         type    threads  matvec GiB/s  sum GiB/s  ratio (p25-p75)");
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
                let p = pool(t);
                let (mut mv, mut sm, mut ratio) = (vec![], vec![], vec![]);
                p.install(|| {
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
                        // The first round warms the caches, pages and threads.
                        if round > 0 {
                            let work = (bytes * passes) as f64 / gib;
                            let (a, b) = ((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64());
                            mv.push(work / a);
                            sm.push(work / b);
                            ratio.push(b / a);
                        }
                    }
                });
                let m = median(&mut ratio);
                let (lo, hi) = (ratio[ratio.len() / 4], ratio[ratio.len() * 3 / 4]);
                println!(
                    "{shape:13} {:7} t{t:<7} {:12.1}  {:9.1}  {:4.0}% ({:.0}-{:.0})",
                    ty.name(),
                    median(&mut mv),
                    median(&mut sm),
                    100.0 * m,
                    100.0 * lo,
                    100.0 * hi
                );
            }
        }
    }
}
