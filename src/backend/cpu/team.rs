//! A team of threads for the parallel loops of a forward pass.
//!
//! A decode step of a small model is a few hundred parallel loops of 5-20 µs each (one per
//! matmul, one per attention). Handing such a loop to rayon costs a job push, a steal and often
//! a wake-up: 0.4-1.6 µs more than the team for eight 1 µs tasks on two threads (`dispatch` in
//! `benches/matmul.rs`), up to a tenth of the step. The team's workers instead spin on one
//! cache line between loops (for a while: then they park), so a loop starts with a few stores,
//! as ggml's thread pool does.
//!
//! Each thread owns a contiguous share of a loop's tasks and takes them in order, so that a
//! matmul's rows reach each core as one stream that its prefetchers follow; a thread that runs
//! out takes tasks from the end of another's share.
//!
//! [`Team::install`] makes a team current on the calling thread; [`for_each`] runs on the
//! current team, or on rayon's pool when there is none (tests, benches, tools that run one
//! matmul). The calling thread works too: a team of `n` threads has `n - 1` workers.

use std::cell::RefCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks. The gaps between the loops of one forward
/// pass (norms, rope, the residual) are a few microseconds; the gap between two tokens, with
/// sampling, is tens. Past this, waking a parked worker (tens of µs) is paid once per token.
const SPIN: Duration = Duration::from_micros(200);
/// After this long, a waiting thread yields its core between checks: with more threads than
/// cores, the thread it waits for may be the one that needs it.
const BUSY: Duration = Duration::from_micros(20);

/// Waits until `ready()`, spinning, then yielding; gives up (false) after `limit`.
fn wait(ready: impl Fn() -> bool, limit: Option<Duration>) -> bool {
    let start = Instant::now();
    let mut spins = 0u32;
    while !ready() {
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(64) {
            std::hint::spin_loop();
            continue;
        }
        let waited = start.elapsed();
        if limit.is_some_and(|l| waited >= l) {
            return false;
        }
        if waited >= BUSY {
            std::thread::yield_now();
        }
    }
    true
}

/// A share of a loop's tasks is one word: loop number, next task, end.
const BITS: u32 = 20;
const MASK: u64 = (1 << BITS) - 1;
/// Tasks of one loop at most; [`for_each`] cuts larger ones.
const MAX_TASKS: usize = MASK as usize;
/// Loop numbers wrap at this; a share word names its loop.
const EPOCHS: u64 = 1 << (64 - 2 * BITS);

fn share(epoch: u64, next: usize, end: usize) -> u64 {
    epoch << (2 * BITS) | (next as u64) << BITS | end as u64
}

/// A cache line of its own, so that threads taking from their own shares do not contend.
#[repr(align(128))]
struct Padded<T>(T);

struct Launch {
    /// The loop's number: workers wait for it to change.
    epoch: AtomicU64,
    /// Its task, a `&(dyn Fn(usize) + Sync)` on its caller's stack; valid while any of the
    /// loop's tasks is not done.
    job: AtomicPtr<()>,
    /// The team is being dropped: workers return.
    stop: AtomicBool,
}

struct Shared {
    /// The current loop: all a waiting worker reads, in one cache line.
    launch: Padded<Launch>,
    /// Per thread (0: the one that started the loop, then the workers): its share.
    shares: Box<[Padded<AtomicU64>]>,
    /// Tasks of the current loop finished, added by each thread once it has no more.
    done: Padded<AtomicUsize>,
    /// A loop is running: a loop started from inside one runs on its thread alone.
    busy: AtomicBool,
    /// A task panicked; its payload, re-raised on the thread that started the loop.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    panicked: AtomicBool,
    /// Per worker: parked (or about to park) until the next loop.
    parked: Box<[AtomicBool]>,
    /// The workers, to unpark; set once all have started.
    workers: OnceLock<Vec<Thread>>,
}

/// `n` threads: the caller and `n - 1` workers.
pub struct Team {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

impl Team {
    /// Starts `n - 1` workers (none for `n <= 1`).
    pub fn new(n: usize) -> std::io::Result<Team> {
        let workers = n.saturating_sub(1);
        let shared = Arc::new(Shared {
            launch: Padded(Launch {
                epoch: AtomicU64::new(0),
                job: AtomicPtr::new(std::ptr::null_mut()),
                stop: AtomicBool::new(false),
            }),
            shares: (0..=workers).map(|_| Padded(AtomicU64::new(0))).collect(),
            done: Padded(AtomicUsize::new(0)),
            busy: AtomicBool::new(false),
            panic: Mutex::new(None),
            panicked: AtomicBool::new(false),
            parked: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            workers: OnceLock::new(),
        });
        // Dropped on an early return, this stops the workers already started.
        let mut team = Team {
            shared: shared.clone(),
            handles: Vec::with_capacity(workers),
        };
        for i in 0..workers {
            let s = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("strait-worker-{i}"))
                .spawn(move || worker(s, i + 1))?;
            team.handles.push(h);
        }
        let _ = shared
            .workers
            .set(team.handles.iter().map(|h| h.thread().clone()).collect());
        Ok(team)
    }

    /// Threads that run a loop, the caller included.
    pub fn threads(&self) -> usize {
        self.handles.len() + 1
    }

    /// Runs `f` on this thread with this team current, so that [`for_each`] inside it runs on
    /// the team.
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Arc<Shared>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let prev = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = prev);
            }
        }
        let prev = CURRENT.with(|c| c.borrow_mut().replace(self.shared.clone()));
        let _restore = Restore(prev);
        f()
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.launch.0.stop.store(true, SeqCst);
        for h in self.handles.drain(..) {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// Threads of the current team, or of rayon's current pool.
pub fn threads() -> usize {
    CURRENT.with(|c| match &*c.borrow() {
        Some(s) => s.shares.len(),
        None => rayon::current_num_threads(),
    })
}

/// `f(i)` for every `i < n`: on the current team if this thread has one, else on rayon's pool.
pub fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    let team = CURRENT.with(|c| c.borrow().clone());
    match team {
        Some(s) => {
            for start in (0..n).step_by(MAX_TASKS) {
                let m = (n - start).min(MAX_TASKS);
                s.run(m, &|i| f(start + i));
            }
        }
        None => {
            use rayon::prelude::*;
            (0..n).into_par_iter().for_each(&f)
        }
    }
}

impl Shared {
    /// Runs a loop of `n <= MAX_TASKS` tasks and waits for it.
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let threads = self.shares.len();
        if threads == 1 || n <= 1 || self.busy.swap(true, Acquire) {
            // No workers, one task, or a loop inside a loop: this thread alone.
            (0..n).for_each(f);
            return;
        }
        // Every task of the previous loop is done (its `run` waited), so no thread reads
        // these until the new loop number is published.
        self.done.0.store(0, Relaxed);
        self.launch.0.job.store(&f as *const &_ as *mut (), Relaxed);
        let epoch = (self.launch.0.epoch.load(Relaxed) + 1) % EPOCHS;
        for (t, s) in self.shares.iter().enumerate() {
            s.0.store(
                share(epoch, t * n / threads, (t + 1) * n / threads),
                Relaxed,
            );
        }
        // SeqCst with the workers' `parked` flags: either a worker sees this loop before it
        // parks, or this thread sees it parked and wakes it.
        self.launch.0.epoch.store(epoch, SeqCst);
        for (i, p) in self.parked.iter().enumerate() {
            if p.load(SeqCst) && p.swap(false, SeqCst) {
                if let Some(t) = self.workers.get().and_then(|w| w.get(i)) {
                    t.unpark();
                }
            }
        }
        // The caller works too, and must not leave while a task runs: `f` is on its stack.
        let mine = catch_unwind(AssertUnwindSafe(|| self.work(0, epoch)));
        wait(|| self.done.0.load(Acquire) >= n, None);
        self.busy.store(false, Release);
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if self.panicked.swap(false, Relaxed) {
            if let Some(p) = self.panic.lock().ok().and_then(|mut p| p.take()) {
                resume_unwind(p);
            }
        }
    }

    /// Thread `me` runs tasks of loop `epoch`: its own share from the front, then the others'
    /// from their ends, until none is left.
    fn work(&self, me: usize, epoch: u64) {
        let threads = self.shares.len();
        // Read before any task is taken (it shares the cache line of the loop number), used
        // only once one is: see below.
        let job = self.launch.0.job.load(Relaxed) as *const &(dyn Fn(usize) + Sync);
        let mut ran = 0;
        for k in 0..threads {
            let v = (me + k) % threads;
            while let Some(i) = self.take(v, epoch, k == 0) {
                // SAFETY: a task of loop `epoch` was taken, so that loop was not done, then or
                // when `job` was read: its caller had stored `job` before publishing the loop
                // number this thread read, and stores the next loop's only once this one is
                // done. The caller waits for `done` to count this task before `f` leaves its
                // stack.
                let f = unsafe { *job };
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(i))) {
                    if let Ok(mut slot) = self.panic.lock() {
                        slot.get_or_insert(p);
                    }
                    self.panicked.store(true, Relaxed);
                }
                ran += 1;
            }
        }
        if ran > 0 {
            self.done.0.fetch_add(ran, Release);
        }
    }

    /// Takes a task of loop `epoch` from share `v`: its first, or its last.
    fn take(&self, v: usize, epoch: u64, first: bool) -> Option<usize> {
        let s = &self.shares[v].0;
        let mut w = s.load(Acquire);
        loop {
            let (next, end) = ((w >> BITS & MASK) as usize, (w & MASK) as usize);
            if w >> (2 * BITS) != epoch || next >= end {
                return None;
            }
            let (new, i) = if first {
                (share(epoch, next + 1, end), next)
            } else {
                (share(epoch, next, end - 1), end - 1)
            };
            match s.compare_exchange_weak(w, new, AcqRel, Acquire) {
                Ok(_) => return Some(i),
                Err(now) => w = now,
            }
        }
    }
}

/// Worker `me` (its share's index): waits for each loop, then works on it.
fn worker(s: Arc<Shared>, me: usize) {
    // A loop started from a task runs on this thread alone (`busy`), not on rayon's pool.
    CURRENT.with(|c| *c.borrow_mut() = Some(s.clone()));
    let park = &s.parked[me - 1];
    let mut seen = 0u64;
    loop {
        // Spin, then park, until a loop newer than the last one seen.
        let newer = || s.launch.0.epoch.load(Acquire) != seen || s.launch.0.stop.load(Relaxed);
        if !wait(newer, Some(SPIN)) {
            park.store(true, SeqCst);
            if s.launch.0.epoch.load(SeqCst) == seen {
                // A loop started after the store above finds the flag set and unparks this
                // thread; one started before it is seen by the load.
                while park.load(SeqCst) && !s.launch.0.stop.load(SeqCst) {
                    std::thread::park();
                }
            }
            park.store(false, SeqCst);
        }
        if s.launch.0.stop.load(Relaxed) {
            return;
        }
        seen = s.launch.0.epoch.load(Acquire);
        s.work(me, seen);
    }
}

/// A slice cut into chunks of `size` values (the last may be shorter) that the tasks of one
/// loop take by index, each its own: what `par_chunks_mut` is to rayon.
pub struct Parts<'a, T> {
    ptr: *mut T,
    len: usize,
    size: usize,
    _life: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a `Parts` hands out disjoint chunks of a slice it borrows mutably, so sharing it
// between threads is sharing `&mut [T]` pieces, which needs `T: Send`.
unsafe impl<T: Send> Sync for Parts<'_, T> {}
unsafe impl<T: Send> Send for Parts<'_, T> {}

impl<'a, T> Parts<'a, T> {
    pub fn new(s: &'a mut [T], size: usize) -> Parts<'a, T> {
        Parts {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            size: size.max(1),
            _life: std::marker::PhantomData,
        }
    }

    /// Number of chunks.
    pub fn count(&self) -> usize {
        self.len.div_ceil(self.size)
    }

    /// Chunk `i` (empty past the end).
    ///
    /// # Safety
    /// No other reference to chunk `i` may be live: each task of a [`for_each`] takes only the
    /// chunks of its own index.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self, i: usize) -> &'a mut [T] {
        let start = i.saturating_mul(self.size).min(self.len);
        let end = start.saturating_add(self.size).min(self.len);
        // SAFETY: start..end is inside the borrowed slice, and the caller guarantees that no
        // other reference to it is live.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), end - start) }
    }
}
