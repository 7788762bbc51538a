//! Measured rates for the plan's cost model, kept in `~/.cache/strait/calibration.json`.
//!
//! `strait calibrate` measures host memory read bandwidth and the forward pass's CPU
//! quantized-matmul throughput on this machine. The file also holds the device measurements (free memory, context
//! overhead, copy and memory bandwidth, compute), filled in by a calibration on a machine with
//! a GPU; rates that were never measured fall back to [`Rates::assumed`], marked as such.

use super::plan::{Rate, Rates};
use crate::backend::cpu::matmul;
use crate::error::{Error, Result};
use crate::model::WeightView;
use crate::quant::{self, GgmlType};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Version of the file layout; a file of another version is ignored with a warning.
pub const CALIBRATION_VERSION: u32 = 1;

/// Host measurements.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostCalibration {
    /// Threads the measurements ran on.
    pub threads: usize,
    /// Read bandwidth over a buffer much larger than the caches, GB/s (1e9 bytes).
    pub read_gbs: f64,
    /// Matmul throughput (weights of the type times activations of its dot type), GFLOPS,
    /// by ggml type name.
    pub matmul_gflops: BTreeMap<String, f64>,
    /// Which kernel path measured it (`scalar`, `avx2`, ...).
    pub kernels: String,
}

/// Device measurements (made on a machine with a GPU).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceCalibration {
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Memory the driver's context and the kernels took, outside any budget.
    pub context_overhead_bytes: u64,
    /// Host-to-device copies from pinned memory, GB/s.
    pub h2d_pinned_gbs: f64,
    /// Device-to-host copies into pinned memory, GB/s.
    pub d2h_pinned_gbs: f64,
    /// Device memory read bandwidth, GB/s.
    pub memory_gbs: f64,
    /// Quantized matmul throughput, TFLOPS.
    pub matmul_tflops: f64,
}

/// The calibration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub version: u32,
    /// Seconds since the Unix epoch when it was measured.
    pub measured_at: u64,
    pub host: Option<HostCalibration>,
    pub device: Option<DeviceCalibration>,
}

/// `$HOME/.cache/strait/calibration.json`.
pub fn default_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".cache/strait/calibration.json"))
}

impl Calibration {
    /// Reads a calibration file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Calibration>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let c: Calibration = serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!(
                "{}: not a calibration file ({e}); run strait calibrate again",
                path.display()
            ))
        })?;
        if c.version != CALIBRATION_VERSION {
            return Err(Error::Invalid(format!(
                "{}: calibration version {} (this strait writes {CALIBRATION_VERSION}); \
                 run strait calibrate again",
                path.display(),
                c.version
            )));
        }
        Ok(Some(c))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Invalid(format!("calibration: {e}")))?;
        std::fs::write(path, text).map_err(|e| Error::io(path, e))
    }

    /// The rates for the cost model: measured ones where present, the assumptions elsewhere.
    pub fn rates(&self) -> Rates {
        let mut r = Rates::assumed();
        let when = format!(
            "measured by strait calibrate (unix time {})",
            self.measured_at
        );
        if let Some(h) = &self.host {
            if h.read_gbs > 0.0 {
                r.host_gbs = Rate {
                    value: h.read_gbs,
                    source: format!("{when}, {} threads", h.threads),
                };
            }
            let measured: Vec<f64> = h
                .matmul_gflops
                .values()
                .copied()
                .filter(|g| *g > 0.0)
                .collect();
            if !measured.is_empty() {
                // Types never measured run at the median measured rate.
                let mut sorted = measured.clone();
                sorted.sort_by(f64::total_cmp);
                r.cpu_gflops = Rate {
                    value: sorted[sorted.len() / 2],
                    source: format!("{when}, {} kernels, median of the types", h.kernels),
                };
                r.cpu_gflops_by_type = h.matmul_gflops.clone();
            }
        }
        if let Some(d) = &self.device {
            let m = |v: f64, old: Rate| {
                if v > 0.0 {
                    Rate {
                        value: v,
                        source: format!("{when} on {}", d.name),
                    }
                } else {
                    old
                }
            };
            r.device_gbs = m(d.memory_gbs, r.device_gbs);
            r.device_tflops = m(d.matmul_tflops, r.device_tflops);
            r.h2d_gbs = m(d.h2d_pinned_gbs, r.h2d_gbs);
            if d.context_overhead_bytes > 0 {
                r.context_overhead = d.context_overhead_bytes;
                r.context_overhead_source = format!("{when} on {}", d.name);
            }
        }
        r
    }
}

/// The rates from the default calibration file, or the assumptions when there is none. A
/// file that cannot be read is reported in the returned note and ignored.
pub fn load_rates() -> (Rates, Option<String>) {
    let Some(path) = default_path() else {
        return (Rates::assumed(), None);
    };
    match Calibration::load(&path) {
        Ok(Some(c)) => (c.rates(), None),
        Ok(None) => (Rates::assumed(), None),
        Err(e) => (Rates::assumed(), Some(format!("ignoring calibration: {e}"))),
    }
}

/// Host read bandwidth over `bytes` of memory, GB/s: the best of `reps` parallel passes that
/// sum the buffer as u64 words.
pub fn measure_read_gbs(bytes: usize, reps: usize) -> f64 {
    let words = (bytes / 8).max(1);
    let buf: Vec<u64> = (0..words as u64).collect();
    let chunk = (words / (rayon::current_num_threads() * 4)).max(4096);
    let mut best = 0.0f64;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(chunk)
            .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
            .reduce(|| 0, u64::wrapping_add);
        black_box(s);
        let secs = t.elapsed().as_secs_f64();
        if secs > 0.0 {
            best = best.max((words * 8) as f64 / secs / 1e9);
        }
    }
    best
}

/// CPU matmul throughput for weights of type `ty`, GFLOPS: the forward pass's own matmul
/// (activations quantized to the dot type, the fastest dot kernel of this CPU, rows split over
/// the threads) of a `rows` x `cols` matrix of quantized weights with `batch` activation
/// vectors, the best of at least `reps` runs. `None` when the type has no kernels.
pub fn measure_matmul_gflops(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    batch: usize,
    reps: usize,
    min_s: f64,
) -> Option<f64> {
    let quantize_w = quant::scalar(ty)?.quantize?;
    let row_bytes = ty.row_bytes(cols as u64)? as usize;
    // Deterministic pseudo-random values in [-1, 1).
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
    };
    let src: Vec<f32> = (0..cols).map(|_| rnd()).collect();
    let mut w_row = vec![0u8; row_bytes];
    quantize_w(&src, &mut w_row, None);
    let data: Vec<u8> = w_row.repeat(rows);
    let w = WeightView {
        ty,
        cols,
        rows,
        data: &data,
    };
    let x: Vec<f32> = (0..cols * batch).map(|_| rnd()).collect();
    let mut scratch = vec![0u8; matmul::scratch_bytes(&w, batch)];
    let mut out = vec![0f32; rows * batch];
    let mut best = 0.0f64;
    // At least `reps` runs and at least `min_s` seconds in all: one short run on a busy host
    // says little.
    let begin = Instant::now();
    let mut runs = 0;
    while runs < reps.max(1) || begin.elapsed().as_secs_f64() < min_s {
        runs += 1;
        let t = Instant::now();
        matmul::matmul(&mut out, &x, &w, batch, &mut scratch).ok()?;
        black_box(&out);
        let secs = t.elapsed().as_secs_f64();
        if secs > 0.0 {
            best = best.max(2.0 * (rows * cols * batch) as f64 / secs / 1e9);
        }
    }
    Some(best)
}

/// Activation vectors per measured matmul: a prefill-like batch, where compute (not memory)
/// sets the pace.
pub const CALIBRATION_BATCH: usize = 16;

/// Shortest time a matmul measurement runs, seconds.
pub const MIN_MEASURE_S: f64 = 0.2;

/// The weight types `strait calibrate` measures: every quantized type with a quantizer and a
/// dot product, but the activation-only types.
pub fn calibrated_types() -> Vec<GgmlType> {
    GgmlType::ALL
        .into_iter()
        .filter(|t| t.is_quantized() && !matches!(t, GgmlType::Q8_1 | GgmlType::Q8K))
        .filter(|&t| quant::scalar(t).is_some_and(|k| k.quantize.is_some() && k.vec_dot.is_some()))
        .filter(|t| 4096 % t.block_size() == 0)
        .collect()
}

/// Measures this host and returns a calibration without device measurements; each matmul
/// measurement runs at least `min_s` seconds.
pub fn calibrate_host(read_bytes: usize, matmul_rows: usize, min_s: f64) -> Calibration {
    let read_gbs = measure_read_gbs(read_bytes, 5);
    let mut matmul_gflops = BTreeMap::new();
    for ty in calibrated_types() {
        if let Some(g) = measure_matmul_gflops(ty, matmul_rows, 4096, CALIBRATION_BATCH, 3, min_s) {
            matmul_gflops.insert(ty.name().to_string(), g);
        }
    }
    Calibration {
        version: CALIBRATION_VERSION,
        measured_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        host: Some(HostCalibration {
            threads: rayon::current_num_threads(),
            read_gbs,
            matmul_gflops,
            kernels: quant::arch::selected().name().into(),
        }),
        device: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_rates_replace_assumptions_and_round_trip() {
        let mut c = calibrate_host(8 << 20, 64, 0.0);
        let h = c.host.as_ref().unwrap();
        assert!(h.read_gbs > 0.1, "read bandwidth {}", h.read_gbs);
        assert!(h.matmul_gflops["Q4_0"] > 0.0 && h.matmul_gflops["Q8_0"] > 0.0);
        c.device = Some(DeviceCalibration {
            name: "test card".into(),
            h2d_pinned_gbs: 12.5,
            context_overhead_bytes: 123 << 20,
            ..Default::default()
        });
        let r = c.rates();
        assert_eq!(r.host_gbs.value, h.read_gbs);
        assert!(!r.host_gbs.is_assumed());
        assert_eq!(r.h2d_gbs.value, 12.5);
        assert!(
            r.device_gbs.is_assumed(),
            "an unmeasured rate stays assumed"
        );
        assert_eq!(r.context_overhead, 123 << 20);

        let dir = std::env::temp_dir().join(format!("strait-cal-{}", std::process::id()));
        let path = dir.join("calibration.json");
        c.save(&path).unwrap();
        // JSON keeps floats to within a unit in the last place.
        let back = Calibration::load(&path).unwrap().unwrap();
        assert_eq!((back.version, back.measured_at), (c.version, c.measured_at));
        assert_eq!(back.device, c.device);
        let (a, b) = (back.host.unwrap(), c.host.unwrap());
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * y.abs();
        assert!(close(a.read_gbs, b.read_gbs));
        assert_eq!(a.matmul_gflops.len(), b.matmul_gflops.len());
        for (ty, g) in &b.matmul_gflops {
            assert!(close(a.matmul_gflops[ty], *g), "{ty}");
        }
        std::fs::write(&path, "{\"version\": 99}").unwrap();
        assert!(Calibration::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(Calibration::load(&path).unwrap(), None);
    }
}
