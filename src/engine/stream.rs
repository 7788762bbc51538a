//! The streaming executor: runs the units of a [`Plan`] in order on a [`Device`], resident
//! units from their place in the arena, streamed ones from two slots that are refilled while
//! the device computes, CPU units from host memory.
//!
//! Double buffering, as the executor issues it (streamed units numbered 0, 1, 2, ...; unit k
//! uses slot k % 2):
//! - copies 0 and 1 are issued first, waiting for the last compute that read their slot;
//! - compute k waits for copy k;
//! - copy k + 2 is issued right after compute k, waiting for it (it overwrites k's slot).
//!
//! So while compute k reads one slot, copy k + 1 fills the other. The device records a
//! [`Timeline`] of every copy and compute with the arena range it touched; [`Timeline::check`]
//! proves the order (no slot written while read, no slot read before its copy completed).
//!
//! [`HostDevice`] implements the device on the CPU: its arena is one allocation, its copy
//! queue a background thread; a range is never written and read at once (every access is
//! checked under a lock and a conflict is an error, not a wait).

use super::forward::{embed, forward_layer, output};
use super::plan::{Place, Plan, Unit};
use super::{Engine, Outputs};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo};
use crate::model::{LayerTensors, LayerWeights, WeightView};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Instant;

/// Bytes the host device's copy thread copies between yields.
pub const COPY_CHUNK: usize = 256 << 10;
/// Alignment of the host arena (a page: the arena may be registered for DMA).
pub const ARENA_ALIGN: usize = 4096;

/// What a queued operation is, for the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label {
    /// The pass (one forward over all units) it belongs to; resident uploads are pass 0.
    pub pass: usize,
    /// The unit: a layer index, or `n_layer` for the output head.
    pub unit: usize,
    /// The slot it writes (copy) or reads (compute), if any.
    pub slot: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// Host -> arena copy.
    Copy,
    /// Device compute reading weights from the arena.
    Compute,
    /// CPU compute reading weights from host memory.
    Host,
}

/// One operation as it ran. Times are seconds since the device was created.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub kind: SpanKind,
    pub label: Label,
    /// The arena range written (copy) or read (compute).
    pub range: Option<Range<u64>>,
    /// When it was issued, started (its waits over) and ended.
    pub issued: f64,
    pub start: f64,
    pub end: f64,
}

/// Totals of a timeline, seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TimelineSummary {
    pub copies: usize,
    pub copy_s: f64,
    pub compute_s: f64,
    pub host_s: f64,
    /// Time computes spent waiting for their copy.
    pub wait_s: f64,
    /// Copy time that ran while a compute ran.
    pub overlapped_s: f64,
    pub copied_bytes: u64,
}

impl std::fmt::Display for TimelineSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} copies, {:.1} MiB in {:.3} s ({:.3} s of it under compute); compute {:.3} s \
             on the device, {:.3} s on the CPU; {:.3} s waiting for copies",
            self.copies,
            self.copied_bytes as f64 / (1 << 20) as f64,
            self.copy_s,
            self.overlapped_s,
            self.compute_s,
            self.host_s,
            self.wait_s
        )
    }
}

/// Every operation a device ran, in the order they were recorded. A long run keeps the last
/// [`MAX_SPANS`] or so; older spans are folded into `earlier`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    pub spans: Vec<Span>,
    /// Totals of spans no longer kept.
    pub earlier: TimelineSummary,
}

/// Spans a device keeps before folding the older half into totals.
pub const MAX_SPANS: usize = 1 << 16;

impl TimelineSummary {
    fn add(&mut self, o: &TimelineSummary) {
        self.copies += o.copies;
        self.copy_s += o.copy_s;
        self.compute_s += o.compute_s;
        self.host_s += o.host_s;
        self.wait_s += o.wait_s;
        self.overlapped_s += o.overlapped_s;
        self.copied_bytes += o.copied_bytes;
    }
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

impl Timeline {
    pub fn copies(&self) -> impl Iterator<Item = &Span> {
        self.spans.iter().filter(|s| s.kind == SpanKind::Copy)
    }

    pub fn computes(&self) -> impl Iterator<Item = &Span> {
        self.spans.iter().filter(|s| s.kind == SpanKind::Compute)
    }

    /// The copy of a unit in a pass.
    pub fn copy_of(&self, pass: usize, unit: usize) -> Option<&Span> {
        self.copies()
            .find(|s| s.label.pass == pass && s.label.unit == unit)
    }

    pub fn compute_of(&self, pass: usize, unit: usize) -> Option<&Span> {
        self.spans
            .iter()
            .find(|s| s.kind != SpanKind::Copy && s.label.pass == pass && s.label.unit == unit)
    }

    /// Every ordering violation: a copy that wrote a range while a compute read it, a compute
    /// that read a slot before the copy of its unit completed. Empty when the order held.
    pub fn check(&self) -> Vec<String> {
        let mut bad = Vec::new();
        for c in self.copies() {
            let Some(cr) = &c.range else { continue };
            for r in self.computes() {
                let Some(rr) = &r.range else { continue };
                if overlaps(cr, rr) && c.start < r.end && r.start < c.end {
                    bad.push(format!(
                        "copy of unit {} (pass {}) wrote {cr:?} during {:.6}..{:.6} while compute \
                         of unit {} (pass {}) read {rr:?} during {:.6}..{:.6}",
                        c.label.unit,
                        c.label.pass,
                        c.start,
                        c.end,
                        r.label.unit,
                        r.label.pass,
                        r.start,
                        r.end
                    ));
                }
            }
        }
        for r in self.computes().filter(|r| r.label.slot.is_some()) {
            match self.copy_of(r.label.pass, r.label.unit) {
                None => bad.push(format!(
                    "compute of unit {} (pass {}) read slot {:?} that no copy filled",
                    r.label.unit, r.label.pass, r.label.slot
                )),
                Some(c) if c.end > r.start => bad.push(format!(
                    "compute of unit {} (pass {}) started at {:.6}, before its copy ended at {:.6}",
                    r.label.unit, r.label.pass, r.start, c.end
                )),
                Some(_) => {}
            }
        }
        bad
    }

    /// Totals over everything the device ran.
    pub fn summary(&self) -> TimelineSummary {
        let mut s = self.earlier;
        let computes: Vec<&Span> = self.computes().collect();
        for sp in &self.spans {
            let d = sp.end - sp.start;
            match sp.kind {
                SpanKind::Copy => {
                    s.copies += 1;
                    s.copy_s += d;
                    s.copied_bytes += sp.range.as_ref().map_or(0, |r| r.end - r.start);
                    s.overlapped_s += computes
                        .iter()
                        .map(|c| (sp.end.min(c.end) - sp.start.max(c.start)).max(0.0))
                        .sum::<f64>();
                }
                SpanKind::Compute => {
                    s.compute_s += d;
                    if sp.label.slot.is_some() {
                        s.wait_s += sp.start - sp.issued;
                    }
                }
                SpanKind::Host => s.host_s += d,
            }
        }
        s
    }
}

/// What a unit's compute reads its weights from.
pub enum Weights<'a> {
    /// Arena bytes the host can address (the host device).
    Bytes(&'a [u8]),
    /// An address and length in a device's arena.
    Device { addr: u64, len: u64 },
    /// Not on the device: computed on the CPU from the mapped file.
    Host,
}

/// One piece of a copy: host bytes and the arena offset they go to.
pub type CopyPart<'src> = (&'src [u8], u64);

/// A device with one arena, a copy queue and a compute queue, and events between them.
/// `'src` is the lifetime of the host memory copies read from.
pub trait Device<'src> {
    type Event: Clone + std::fmt::Debug + Send;

    /// Allocates the arena. Called once, before anything else.
    fn alloc(&mut self, bytes: u64) -> Result<()>;

    /// Queues a copy of `parts` into the arena after every event of `after`; returns the event
    /// of its completion.
    fn copy(
        &mut self,
        parts: &[CopyPart<'src>],
        range: Range<u64>,
        after: &[Self::Event],
        label: Label,
    ) -> Result<Self::Event>;

    /// Queues a compute that reads `range` of the arena, after every event of `after`.
    fn compute<R>(
        &mut self,
        range: Range<u64>,
        after: &[Self::Event],
        label: Label,
        f: impl FnOnce(Weights<'_>) -> Result<R>,
    ) -> Result<(R, Self::Event)>;

    /// Runs a compute on the CPU (weights in host memory), in order with the compute queue.
    fn host<R>(&mut self, label: Label, f: impl FnOnce() -> Result<R>) -> Result<R>;

    /// Blocks until `ev` has completed.
    fn wait(&mut self, ev: &Self::Event) -> Result<()>;

    /// Everything that ran so far.
    fn timeline(&self) -> Timeline;

    /// The highest arena byte any operation touched (its end offset).
    fn high_water(&self) -> u64;
}

// ---------------------------------------------------------------------------------------------
// The host device

/// The arena of the host device: one zeroed allocation, shared with the copy thread.
struct Arena {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the arena is plain bytes; every access goes through `Shared::acquire`, which never
// lets a write overlap any other access of the same range.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

impl Arena {
    fn new(len: usize) -> Result<Arena> {
        let layout = std::alloc::Layout::from_size_align(len.max(1), ARENA_ALIGN)
            .map_err(|e| Error::Invalid(format!("an arena of {len} bytes: {e}")))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(Error::Invalid(format!(
                "cannot allocate an arena of {len} bytes"
            )));
        }
        Ok(Arena { ptr, len })
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len.max(1), ARENA_ALIGN)
            .expect("checked in Arena::new");
        // SAFETY: allocated in Arena::new with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr, layout) }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

struct QueueState {
    /// Copies issued and completed (they complete in order).
    issued: u64,
    completed: u64,
    /// The first error of the copy thread.
    error: Option<String>,
    /// Arena ranges in use now.
    active: Vec<(u64, Range<u64>, Access)>,
    next_access: u64,
}

struct Shared {
    arena: Mutex<Option<Arc<Arena>>>,
    state: Mutex<QueueState>,
    done: Condvar,
    spans: Mutex<Timeline>,
    high_water: AtomicU64,
    t0: Instant,
}

impl Shared {
    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn arena(&self) -> Result<Arc<Arena>> {
        self.arena
            .lock()
            .map_err(|_| poisoned())?
            .clone()
            .ok_or_else(|| Error::Invalid("the arena is not allocated".into()))
    }

    /// Claims `range` for an access; an error if it is outside the arena or conflicts with an
    /// access in progress (a write with anything).
    fn acquire(&self, range: &Range<u64>, access: Access, len: usize) -> Result<u64> {
        if range.start > range.end || range.end > len as u64 {
            return Err(Error::Invalid(format!(
                "arena range {range:?} is outside the arena of {len} bytes"
            )));
        }
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        if let Some((_, r, a)) = st.active.iter().find(|(_, r, a)| {
            overlaps(r, range) && (access == Access::Write || *a == Access::Write)
        }) {
            return Err(Error::Invalid(format!(
                "arena range {range:?} ({access:?}) conflicts with {r:?} ({a:?}) in progress"
            )));
        }
        st.next_access += 1;
        let id = st.next_access;
        st.active.push((id, range.clone(), access));
        self.high_water.fetch_max(range.end, Ordering::Relaxed);
        Ok(id)
    }

    fn release(&self, id: u64) {
        if let Ok(mut st) = self.state.lock() {
            st.active.retain(|(i, _, _)| *i != id);
        }
    }

    fn record(&self, span: Span) {
        if let Ok(mut t) = self.spans.lock() {
            if t.spans.len() >= MAX_SPANS {
                let old = Timeline {
                    spans: t.spans.drain(..MAX_SPANS / 2).collect(),
                    earlier: TimelineSummary::default(),
                };
                t.earlier.add(&old.summary());
            }
            t.spans.push(span);
        }
    }

    /// Blocks until copy `seq` has completed; the copy thread's error if it failed.
    fn wait_copy(&self, seq: u64) -> Result<()> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        loop {
            if let Some(e) = &st.error {
                return Err(Error::Invalid(format!("copy queue: {e}")));
            }
            if st.completed >= seq {
                return Ok(());
            }
            st = self.done.wait(st).map_err(|_| poisoned())?;
        }
    }
}

fn poisoned() -> Error {
    Error::Invalid("a streaming thread panicked".into())
}

/// An event of the host device: a copy's sequence number, or an operation that has already
/// completed (computes run synchronously).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostEvent {
    Copy(u64),
    Done,
}

struct CopyJob<'src> {
    seq: u64,
    parts: Vec<CopyPart<'src>>,
    range: Range<u64>,
    after: Vec<u64>,
    label: Label,
    issued: f64,
}

/// The device interface on the CPU: an arena in host memory, copies on a background thread,
/// computes on the calling thread. Made by [`with_host_device`].
pub struct HostDevice<'src> {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<CopyJob<'src>>,
}

/// Runs `f` with a host device whose copy thread lives for the duration of the call (the
/// device is dropped, and its queue closed, when `f` returns).
pub fn with_host_device<'src, R>(f: impl FnOnce(HostDevice<'src>) -> R) -> R {
    let shared = Arc::new(Shared {
        arena: Mutex::new(None),
        state: Mutex::new(QueueState {
            issued: 0,
            completed: 0,
            error: None,
            active: Vec::new(),
            next_access: 0,
        }),
        done: Condvar::new(),
        spans: Mutex::new(Timeline::default()),
        high_water: AtomicU64::new(0),
        t0: Instant::now(),
    });
    let (tx, rx) = mpsc::channel::<CopyJob<'src>>();
    std::thread::scope(|s| {
        let worker = Arc::clone(&shared);
        s.spawn(move || copy_thread(&worker, rx));
        // When `f` drops the device the queue closes; the scope then joins the copy thread.
        f(HostDevice { shared, jobs: tx })
    })
}

fn copy_thread(sh: &Shared, rx: mpsc::Receiver<CopyJob<'_>>) {
    while let Ok(job) = rx.recv() {
        let result = (|| -> Result<()> {
            for &seq in &job.after {
                sh.wait_copy(seq)?;
            }
            let arena = sh.arena()?;
            let id = sh.acquire(&job.range, Access::Write, arena.len)?;
            let start = sh.now();
            for (src, off) in &job.parts {
                let end = off + src.len() as u64;
                if *off < job.range.start || end > job.range.end {
                    sh.release(id);
                    return Err(Error::Invalid(format!(
                        "copy part {off}..{end} is outside its range {:?}",
                        job.range
                    )));
                }
                // In chunks, yielding between them: on a busy host the compute thread keeps
                // its core (a DMA engine does not take a core from compute either).
                for (i, chunk) in src.chunks(COPY_CHUNK).enumerate() {
                    let at = *off as usize + i * COPY_CHUNK;
                    // SAFETY: `at..at + chunk.len()` lies in `off..end`, inside `job.range`,
                    // which `acquire` checked is inside the arena and claimed for writing: no
                    // other access overlaps it until release.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            chunk.as_ptr(),
                            arena.ptr.add(at),
                            chunk.len(),
                        )
                    };
                    std::thread::yield_now();
                }
            }
            let end = sh.now();
            sh.release(id);
            sh.record(Span {
                kind: SpanKind::Copy,
                label: job.label,
                range: Some(job.range.clone()),
                issued: job.issued,
                start,
                end,
            });
            Ok(())
        })();
        let Ok(mut st) = sh.state.lock() else { return };
        match result {
            Ok(()) => st.completed = job.seq,
            Err(e) => {
                if st.error.is_none() {
                    st.error = Some(e.to_string());
                }
            }
        }
        sh.done.notify_all();
    }
}

impl<'src> HostDevice<'src> {
    fn wait_all(&self, after: &[HostEvent]) -> Result<()> {
        for ev in after {
            if let HostEvent::Copy(seq) = ev {
                self.shared.wait_copy(*seq)?;
            }
        }
        Ok(())
    }

    /// Bytes of the arena (0 before `alloc`).
    pub fn arena_bytes(&self) -> u64 {
        self.shared.arena().map_or(0, |a| a.len as u64)
    }
}

impl<'src> Device<'src> for HostDevice<'src> {
    type Event = HostEvent;

    fn alloc(&mut self, bytes: u64) -> Result<()> {
        let mut a = self.shared.arena.lock().map_err(|_| poisoned())?;
        if a.is_some() {
            return Err(Error::Invalid("the arena is allocated once".into()));
        }
        let len = usize::try_from(bytes)
            .map_err(|_| Error::Invalid(format!("an arena of {bytes} bytes")))?;
        *a = Some(Arc::new(Arena::new(len)?));
        Ok(())
    }

    fn copy(
        &mut self,
        parts: &[CopyPart<'src>],
        range: Range<u64>,
        after: &[HostEvent],
        label: Label,
    ) -> Result<HostEvent> {
        let seq = {
            let mut st = self.shared.state.lock().map_err(|_| poisoned())?;
            st.issued += 1;
            st.issued
        };
        let job = CopyJob {
            seq,
            parts: parts.to_vec(),
            range,
            after: after
                .iter()
                .filter_map(|e| match e {
                    HostEvent::Copy(s) => Some(*s),
                    HostEvent::Done => None,
                })
                .collect(),
            label,
            issued: self.shared.now(),
        };
        self.jobs
            .send(job)
            .map_err(|_| Error::Invalid("the copy thread has stopped".into()))?;
        Ok(HostEvent::Copy(seq))
    }

    fn compute<R>(
        &mut self,
        range: Range<u64>,
        after: &[HostEvent],
        label: Label,
        f: impl FnOnce(Weights<'_>) -> Result<R>,
    ) -> Result<(R, HostEvent)> {
        let issued = self.shared.now();
        self.wait_all(after)?;
        let arena = self.shared.arena()?;
        let id = self.shared.acquire(&range, Access::Read, arena.len)?;
        let start = self.shared.now();
        // SAFETY: `acquire` checked the range is inside the arena and claimed it for reading:
        // no write overlaps it until `release`, which comes after the last use of the slice
        // (`f` cannot keep it: `Weights<'_>` is bound to this call).
        let bytes = unsafe {
            std::slice::from_raw_parts(
                arena.ptr.add(range.start as usize),
                (range.end - range.start) as usize,
            )
        };
        let r = f(Weights::Bytes(bytes));
        let end = self.shared.now();
        self.shared.release(id);
        self.shared.record(Span {
            kind: SpanKind::Compute,
            label,
            range: Some(range),
            issued,
            start,
            end,
        });
        Ok((r?, HostEvent::Done))
    }

    fn host<R>(&mut self, label: Label, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let start = self.shared.now();
        let r = f();
        let end = self.shared.now();
        self.shared.record(Span {
            kind: SpanKind::Host,
            label,
            range: None,
            issued: start,
            start,
            end,
        });
        r
    }

    fn wait(&mut self, ev: &HostEvent) -> Result<()> {
        self.wait_all(std::slice::from_ref(ev))
    }

    fn timeline(&self) -> Timeline {
        self.shared
            .spans
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    fn high_water(&self) -> u64 {
        self.shared.high_water.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// The executor

/// Runs passes over the units of a plan on a device.
pub struct Executor<'src, D: Device<'src>> {
    dev: D,
    placement: Vec<Place>,
    units: Vec<Unit>,
    /// Per unit: its arena range when resident.
    resident: Vec<Option<Range<u64>>>,
    slots: Vec<Range<u64>>,
    /// Streamed units in order.
    streamed: Vec<usize>,
    /// Per streamed unit: its copy parts placed in its slot, made once.
    stream_parts: Vec<Vec<CopyPart<'src>>>,
    /// Per streamed unit: the event of its copy in the current pass.
    copies: Vec<Option<D::Event>>,
    /// The last compute that read each slot.
    slot_last_read: [Option<D::Event>; 2],
    pass: usize,
    arena: u64,
}

impl<'src, D: Device<'src>> Executor<'src, D> {
    /// Allocates the arena of `plan` on `dev` (once) and uploads the resident units.
    /// `sources[u][t]` are the bytes of tensor `t` of unit `u`'s image.
    pub fn new(mut dev: D, plan: &Plan, sources: Vec<Vec<&'src [u8]>>) -> Result<Self> {
        if plan.device_total > plan.budget {
            return Err(Error::Invalid(format!(
                "the plan's arena of {} bytes is over its budget of {}",
                plan.device_total, plan.budget
            )));
        }
        if sources.len() != plan.units.len() {
            return Err(Error::Invalid(format!(
                "{} units of sources for a plan of {} units",
                sources.len(),
                plan.units.len()
            )));
        }
        for (unit, src) in plan.units.iter().zip(&sources) {
            let sizes: Vec<u64> = unit.tensors.iter().map(|t| t.info.size).collect();
            let got: Vec<u64> = src.iter().map(|s| s.len() as u64).collect();
            if sizes != got {
                return Err(Error::Invalid(format!(
                    "unit {}: tensors of {sizes:?} bytes, sources of {got:?}",
                    unit.name
                )));
            }
        }
        dev.alloc(plan.device_total)?;
        let n = plan.units.len();
        let mut resident = vec![None; n];
        let mut uploads = Vec::new();
        for u in 0..n {
            if plan.placement[u] != Place::Device {
                continue;
            }
            let b = plan
                .resident(u)
                .ok_or_else(|| Error::Invalid(format!("unit {u} is resident but has no buffer")))?;
            let range = b.offset..b.offset + plan.units[u].bytes;
            let parts = image_parts(&plan.units[u], &sources[u], range.start);
            let label = Label {
                pass: 0,
                unit: u,
                slot: None,
            };
            uploads.push(dev.copy(&parts, range.clone(), &[], label)?);
            resident[u] = Some(range);
        }
        for ev in &uploads {
            dev.wait(ev)?;
        }
        let slots: Vec<Range<u64>> = (0..2)
            .filter_map(|i| plan.slot(i).map(|b| b.offset..b.offset + b.bytes))
            .collect();
        let streamed: Vec<usize> = (0..n)
            .filter(|&u| plan.placement[u] == Place::Stream)
            .collect();
        if !streamed.is_empty() && slots.len() != 2 {
            return Err(Error::Invalid(
                "the plan streams units but has no slots".into(),
            ));
        }
        let stream_parts = streamed
            .iter()
            .enumerate()
            .map(|(k, &u)| image_parts(&plan.units[u], &sources[u], slots[k % 2].start))
            .collect();
        let copies = vec![None; streamed.len()];
        Ok(Executor {
            dev,
            placement: plan.placement.clone(),
            units: plan.units.clone(),
            resident,
            slots,
            streamed,
            stream_parts,
            copies,
            slot_last_read: [None, None],
            pass: 0,
            arena: plan.device_total,
        })
    }

    pub fn device(&self) -> &D {
        &self.dev
    }

    pub fn arena_bytes(&self) -> u64 {
        self.arena
    }

    fn issue_copy(&mut self, k: usize) -> Result<D::Event> {
        let u = self.streamed[k];
        let s = k % 2;
        let range = self.slots[s].start..self.slots[s].start + self.units[u].bytes;
        let label = Label {
            pass: self.pass,
            unit: u,
            slot: Some(s),
        };
        self.dev.copy(
            &self.stream_parts[k],
            range,
            self.slot_last_read[s].as_slice(),
            label,
        )
    }

    /// One pass over every unit in order: `run(index, unit, weights)` computes a unit.
    pub fn pass(
        &mut self,
        mut run: impl FnMut(usize, &Unit, Weights<'_>) -> Result<()>,
    ) -> Result<()> {
        self.pass += 1;
        // The copies of a pass live in a buffer made once: a pass allocates nothing.
        self.copies.iter_mut().for_each(|c| *c = None);
        for k in 0..self.streamed.len().min(2) {
            self.copies[k] = Some(self.issue_copy(k)?);
        }
        let mut k = 0;
        for u in 0..self.units.len() {
            let label = Label {
                pass: self.pass,
                unit: u,
                slot: None,
            };
            match self.placement[u] {
                Place::Device => {
                    let range = self.resident[u].clone().expect("set in new");
                    let unit = &self.units[u];
                    self.dev.compute(range, &[], label, |w| run(u, unit, w))?;
                }
                Place::Cpu => {
                    let unit = &self.units[u];
                    self.dev.host(label, || run(u, unit, Weights::Host))?
                }
                Place::Stream => {
                    let s = k % 2;
                    let range = self.slots[s].start..self.slots[s].start + self.units[u].bytes;
                    let label = Label {
                        slot: Some(s),
                        ..label
                    };
                    let unit = &self.units[u];
                    let ((), ev) =
                        self.dev
                            .compute(range, self.copies[k].as_slice(), label, |w| {
                                run(u, unit, w)
                            })?;
                    self.slot_last_read[s] = Some(ev);
                    if k + 2 < self.streamed.len() {
                        self.copies[k + 2] = Some(self.issue_copy(k + 2)?);
                    }
                    k += 1;
                }
            }
        }
        Ok(())
    }
}

/// The copy parts of a unit's image placed at `base`.
fn image_parts<'src>(unit: &Unit, sources: &[&'src [u8]], base: u64) -> Vec<CopyPart<'src>> {
    unit.tensors
        .iter()
        .zip(sources)
        .map(|(t, s)| (*s, base + t.offset))
        .collect()
}

/// The host bytes of every tensor of every unit of `plan`, from the mapped file.
pub fn file_sources<'m>(plan: &Plan, file: &'m GgufFile) -> Result<Vec<Vec<&'m [u8]>>> {
    plan.units
        .iter()
        .map(|u| {
            u.tensors
                .iter()
                .map(|t| {
                    let info = file.require(&t.info.name)?;
                    if info.size != t.info.size {
                        return Err(Error::Invalid(format!(
                            "tensor {} has {} bytes in the file, {} in the plan",
                            t.info.name, info.size, t.info.size
                        )));
                    }
                    Ok(file.data(info))
                })
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Weights from a unit image

/// The bytes of tensor `t` in the image `bytes` of `unit`.
pub fn image_tensor<'a>(unit: &Unit, bytes: &'a [u8], t: &TensorInfo) -> Result<&'a [u8]> {
    let it = unit.tensor(&t.name).ok_or_else(|| Error::MissingTensor {
        name: format!("{} in the image of {}", t.name, unit.name),
    })?;
    let (start, len) = (it.offset as usize, it.info.size as usize);
    bytes.get(start..start + len).ok_or_else(|| {
        Error::Invalid(format!(
            "tensor {} at {start}+{len} is outside the image of {} bytes",
            t.name,
            bytes.len()
        ))
    })
}

fn image_matrix<'a>(unit: &Unit, bytes: &'a [u8], t: &TensorInfo) -> Result<WeightView<'a>> {
    Ok(WeightView {
        ty: t.ty,
        cols: t.shape[0] as usize,
        rows: t.n_rows() as usize,
        data: image_tensor(unit, bytes, t)?,
    })
}

fn image_vector<'a>(unit: &Unit, bytes: &'a [u8], t: &TensorInfo) -> Result<&'a [f32]> {
    bytemuck::try_cast_slice(image_tensor(unit, bytes, t)?)
        .map_err(|e| Error::Invalid(format!("tensor {} cannot be read as F32: {e:?}", t.name)))
}

/// The weights of a layer whose image is `bytes` (a slot or a resident range).
pub fn layer_from_image<'a>(
    lt: &LayerTensors,
    unit: &Unit,
    bytes: &'a [u8],
) -> Result<LayerWeights<'a>> {
    let m = |t: &TensorInfo| image_matrix(unit, bytes, t);
    let v = |t: &TensorInfo| image_vector(unit, bytes, t);
    let ov = |t: &Option<TensorInfo>| t.as_ref().map(v).transpose();
    Ok(LayerWeights {
        attn_norm: v(&lt.attn_norm)?,
        wq: m(&lt.wq)?,
        wk: m(&lt.wk)?,
        wv: m(&lt.wv)?,
        bq: ov(&lt.bq)?,
        bk: ov(&lt.bk)?,
        bv: ov(&lt.bv)?,
        q_norm: ov(&lt.q_norm)?,
        k_norm: ov(&lt.k_norm)?,
        wo: m(&lt.wo)?,
        post_attn_norm: ov(&lt.post_attn_norm)?,
        ffn_norm: v(&lt.ffn_norm)?,
        w_gate: m(&lt.w_gate)?,
        w_up: m(&lt.w_up)?,
        w_down: m(&lt.w_down)?,
        post_ffn_norm: ov(&lt.post_ffn_norm)?,
    })
}

/// The output norm and output matrix from the head's image.
pub fn head_from_image<'a>(
    norm: &TensorInfo,
    output: &TensorInfo,
    unit: &Unit,
    bytes: &'a [u8],
) -> Result<(&'a [f32], WeightView<'a>)> {
    Ok((
        image_vector(unit, bytes, norm)?,
        image_matrix(unit, bytes, output)?,
    ))
}

// ---------------------------------------------------------------------------------------------
// The forward pass through an executor

/// [`Engine::eval`] with every layer's weights where the plan put them: resident ranges and
/// slots of the executor's arena, or the mapped file for CPU layers. The logits are the same
/// as the engine's own, bit for bit: the same kernels read the same bytes.
pub fn eval_streamed<'m, D: Device<'m> + Send>(
    engine: &mut Engine<'m>,
    exec: &mut Executor<'m, D>,
    tokens: &[u32],
    outputs: Outputs,
    mut on_logits: impl FnMut(usize, &[f32]),
) -> Result<()> {
    if tokens.is_empty() {
        return Ok(());
    }
    let free = engine.kv.n_ctx - engine.kv.n_past;
    if tokens.len() > free {
        return Err(Error::Invalid(format!(
            "context full: {} tokens do not fit, {} of {} positions are free",
            tokens.len(),
            free,
            engine.kv.n_ctx
        )));
    }
    if outputs == Outputs::All && engine.state.n_out < engine.state.n_batch {
        return Err(Error::Invalid(
            "logits at every position need an engine made with all_logits".into(),
        ));
    }
    let n_batch = engine.state.n_batch;
    let v = engine.model.config.n_vocab;
    let mut done = 0;
    for chunk in tokens.chunks(n_batch) {
        let last = done + chunk.len() == tokens.len();
        let rows = match outputs {
            Outputs::All => 0..chunk.len(),
            Outputs::Last if last => chunk.len() - 1..chunk.len(),
            Outputs::Last => 0..0,
        };
        forward_streamed(engine, exec, chunk, rows.clone())?;
        for (i, r) in rows.enumerate() {
            on_logits(done + r, &engine.state.logits[i * v..(i + 1) * v]);
        }
        done += chunk.len();
    }
    Ok(())
}

/// [`Engine::eval_last`] through the executor: evaluates `tokens` and returns the logits of
/// the last one.
pub fn eval_last_streamed<'e, 'm, D: Device<'m> + Send>(
    engine: &'e mut Engine<'m>,
    exec: &mut Executor<'m, D>,
    tokens: &[u32],
) -> Result<&'e [f32]> {
    eval_streamed(engine, exec, tokens, Outputs::Last, |_, _| {})?;
    Ok(&engine.state.logits[..engine.model.config.n_vocab])
}

/// One pass of at most `n_batch` tokens; logits of batch rows `rows`.
fn forward_streamed<'m, D: Device<'m> + Send>(
    engine: &mut Engine<'m>,
    exec: &mut Executor<'m, D>,
    tokens: &[u32],
    rows: Range<usize>,
) -> Result<()> {
    let model = engine.model;
    let c = &model.config;
    let t = &model.tensors;
    let n = tokens.len();
    let pos0 = engine.kv.n_past;
    let st = &mut engine.state;
    let kv = &mut engine.kv;
    let rope_factors = model.rope_factors()?;
    embed(c, st, &model.token_embd(), tokens)?;
    // On the engine's threads, as its own forward pass.
    engine.team.install(|| {
        exec.pass(|u, unit, w| {
            if u < c.n_layer {
                let lw = match w {
                    Weights::Bytes(b) => layer_from_image(&t.layers[u], unit, b)?,
                    Weights::Host => model.layer(u)?,
                    Weights::Device { .. } => return Err(device_weights()),
                };
                return forward_layer(u, &lw, st, kv, c, n, pos0, rope_factors);
            }
            if rows.is_empty() {
                return Ok(());
            }
            let (norm, out) = match w {
                Weights::Bytes(b) => head_from_image(&t.output_norm, &t.output, unit, b)?,
                Weights::Host => (model.output_norm()?, model.output()),
                Weights::Device { .. } => return Err(device_weights()),
            };
            output(c, st, norm, &out, rows.clone())
        })
    })?;
    engine.kv.n_past += n;
    Ok(())
}

fn device_weights() -> Error {
    Error::Unsupported("the CPU forward pass cannot read weights in GPU memory".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_never_overlaps_another_access() {
        with_host_device(|mut dev: HostDevice<'_>| {
            dev.alloc(1000).unwrap();
            let sh = &dev.shared;
            let w = sh.acquire(&(100..200), Access::Write, 1000).unwrap();
            assert!(sh.acquire(&(150..160), Access::Read, 1000).is_err());
            assert!(sh.acquire(&(199..300), Access::Write, 1000).is_err());
            let r = sh.acquire(&(200..300), Access::Read, 1000).unwrap();
            let r2 = sh.acquire(&(250..260), Access::Read, 1000).unwrap();
            assert!(sh.acquire(&(0..201), Access::Write, 1000).is_err());
            assert!(
                sh.acquire(&(900..1001), Access::Read, 1000).is_err(),
                "outside"
            );
            sh.release(w);
            sh.release(r);
            assert!(
                sh.acquire(&(200..300), Access::Write, 1000).is_err(),
                "r2 still reads"
            );
            sh.release(r2);
            sh.acquire(&(0..1000), Access::Write, 1000).unwrap();
            assert_eq!(dev.high_water(), 1000);
        });
    }

    #[test]
    fn a_long_run_keeps_its_totals_in_bounded_memory() {
        with_host_device(|dev: HostDevice<'_>| {
            let n = MAX_SPANS + 10;
            for i in 0..n {
                dev.shared.record(Span {
                    kind: SpanKind::Copy,
                    label: Label {
                        pass: i,
                        unit: 0,
                        slot: Some(0),
                    },
                    range: Some(0..10),
                    issued: 0.0,
                    start: i as f64,
                    end: i as f64 + 0.5,
                });
            }
            let t = dev.timeline();
            assert!(t.spans.len() <= MAX_SPANS);
            let s = t.summary();
            assert_eq!(s.copies, n);
            assert_eq!(s.copied_bytes, 10 * n as u64);
            assert!((s.copy_s - 0.5 * n as f64).abs() < 1e-6);
        });
    }
}
