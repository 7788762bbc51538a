//! The thread team of the forward pass: every task of every loop runs exactly once, on any
//! number of threads, after the workers have parked, inside another loop, and past a panic.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;
use strait::backend::cpu::team::{self, Parts, Team};

/// Runs a loop of `n` tasks on the current team and checks that each ran once.
fn once_each(n: usize) {
    let runs: Vec<AtomicU8> = (0..n).map(|_| AtomicU8::new(0)).collect();
    team::for_each(n, |i| {
        runs[i].fetch_add(1, Relaxed);
    });
    if let Some(i) = runs.iter().position(|r| r.load(Relaxed) != 1) {
        panic!("task {i} of {n} ran {} times", runs[i].load(Relaxed));
    }
}

#[test]
fn every_task_runs_once() {
    for threads in [1, 2, 3, 5] {
        let t = Team::new(threads).unwrap();
        assert_eq!(t.threads(), threads);
        t.install(|| {
            assert_eq!(team::threads(), threads);
            for n in [0, 1, 2, 3, 4, 5, 7, 64, 1000, 100_000] {
                once_each(n);
            }
        });
    }
}

#[test]
fn more_tasks_than_one_loop_holds() {
    let t = Team::new(2).unwrap();
    t.install(|| once_each(2_100_000));
}

#[test]
fn many_short_loops_in_a_row() {
    let t = Team::new(3).unwrap();
    let sum = AtomicU64::new(0);
    t.install(|| {
        for k in 0..20_000u64 {
            team::for_each(1 + (k % 9) as usize, |i| {
                sum.fetch_add(k * 16 + i as u64, Relaxed);
            });
        }
    });
    let want: u64 = (0..20_000u64)
        .map(|k| (0..1 + k % 9).map(|i| k * 16 + i).sum::<u64>())
        .sum();
    assert_eq!(sum.into_inner(), want);
}

#[test]
fn loops_after_the_workers_parked() {
    let t = Team::new(3).unwrap();
    t.install(|| {
        for _ in 0..5 {
            // Longer than the workers spin.
            std::thread::sleep(Duration::from_millis(5));
            once_each(50);
        }
    });
}

#[test]
fn the_workers_take_part() {
    // Tasks that wait for a second thread can only finish if a worker runs some of them.
    let t = Team::new(2).unwrap();
    let started = AtomicU64::new(0);
    t.install(|| {
        team::for_each(2, |_| {
            started.fetch_add(1, Relaxed);
            while started.load(Relaxed) < 2 {
                std::hint::spin_loop();
            }
        })
    });
    assert_eq!(started.into_inner(), 2);
}

#[test]
fn a_loop_inside_a_loop_runs() {
    let t = Team::new(3).unwrap();
    let runs: Vec<AtomicU8> = (0..8 * 8).map(|_| AtomicU8::new(0)).collect();
    t.install(|| {
        team::for_each(8, |i| {
            team::for_each(8, |j| {
                runs[i * 8 + j].fetch_add(1, Relaxed);
            })
        })
    });
    assert!(runs.iter().all(|r| r.load(Relaxed) == 1));
}

#[test]
fn a_panic_reaches_the_caller_and_the_team_goes_on() {
    let t = Team::new(2).unwrap();
    for bad in [0, 37, 99] {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.install(|| {
                team::for_each(100, |i| {
                    if i == bad {
                        panic!("task {i}");
                    }
                })
            })
        }));
        let msg = r.expect_err("the panic is re-raised");
        assert_eq!(
            msg.downcast_ref::<String>().unwrap(),
            &format!("task {bad}")
        );
        t.install(|| once_each(100));
    }
}

#[test]
fn without_a_team_loops_run_on_rayon() {
    once_each(1000);
    assert_eq!(team::threads(), rayon::current_num_threads());
}

#[test]
fn parts_are_the_chunks_of_the_slice() {
    let mut v: Vec<u32> = (0..10).collect();
    let p = Parts::new(&mut v, 4);
    assert_eq!(p.count(), 3);
    let t = Team::new(2).unwrap();
    t.install(|| {
        team::for_each(p.count(), |i| {
            // SAFETY: each task takes the chunk of its own index.
            let c = unsafe { p.get(i) };
            assert_eq!(c.len(), if i == 2 { 2 } else { 4 });
            for x in c {
                *x += 100 * (i as u32 + 1);
            }
        })
    });
    // SAFETY: no other chunk is borrowed.
    assert!(unsafe { p.get(3) }.is_empty());
    assert_eq!(v, [100, 101, 102, 103, 204, 205, 206, 207, 308, 309]);
}
