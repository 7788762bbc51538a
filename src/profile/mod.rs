//! Profiles of quant formats: bits per weight, quantization error on gaussian rows and on a
//! model's own weights, and kernel throughput on every kernel path of this CPU; also the
//! whole-model benchmark behind `strait bench` ([`bench`]).

pub mod accuracy;
pub mod bench;
pub mod machine;
pub mod quality;
pub mod rng;
pub mod speed;
pub mod svg;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::quant::{self, GgmlType};
use accuracy::ErrorStats;
use serde::Serialize;
use speed::PathSpeed;
use std::time::Duration;

/// The formats profiled when none are named: every block format and the 16-bit floats. The
/// dot types Q8_1 and Q8_K exist for activations only and are left out unless named.
pub fn default_types() -> Vec<GgmlType> {
    GgmlType::ALL
        .into_iter()
        .filter(|t| {
            (t.is_quantized() || matches!(t, GgmlType::F16 | GgmlType::BF16))
                && !matches!(t, GgmlType::Q8_1 | GgmlType::Q8K)
        })
        .collect()
}

/// A format's family, for the chart's colours.
pub fn family(ty: GgmlType) -> usize {
    use GgmlType as T;
    match ty {
        T::Q2K | T::Q3K | T::Q4K | T::Q5K | T::Q6K | T::Q8K => 0,
        T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0 | T::Q8_1 | T::Q1_0 | T::Q2_0 => 1,
        T::IQ1S
        | T::IQ1M
        | T::IQ2XXS
        | T::IQ2XS
        | T::IQ2S
        | T::IQ3XXS
        | T::IQ3S
        | T::IQ4NL
        | T::IQ4XS => 2,
        T::MXFP4 | T::NVFP4 | T::TQ1_0 | T::TQ2_0 => 3,
        _ => 4,
    }
}

pub const FAMILIES: [&str; 5] = ["k-quants", "legacy", "i-quants", "fp4, ternary", "float"];

/// What to profile.
#[derive(Clone, Debug)]
pub struct Options {
    pub types: Vec<GgmlType>,
    /// Gaussian rows and their length (a multiple of 256, so every format fits).
    pub rows: usize,
    pub n: usize,
    pub seed: u64,
    /// Rows taken from each weight tensor of the model, if one is given.
    pub model_rows: usize,
    /// Time spent on each throughput figure.
    pub time: Duration,
    /// Rows in the throughput working set (kept small enough to stay in cache).
    pub speed_rows: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            types: default_types(),
            rows: 64,
            n: 4096,
            seed: 42,
            model_rows: 32,
            time: Duration::from_millis(60),
            speed_rows: 8,
        }
    }
}

/// Error figures.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct ErrorFigures {
    pub rmse: f64,
    pub max_abs: f64,
    pub relative: f64,
    pub values: u64,
}

impl From<&ErrorStats> for ErrorFigures {
    fn from(s: &ErrorStats) -> Self {
        ErrorFigures {
            rmse: s.rmse(),
            max_abs: s.max_abs,
            relative: s.relative(),
            values: s.n,
        }
    }
}

/// The quality of a model requantized to one format, against the base model.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct ModelQuality {
    pub perplexity: f64,
    /// Mean KL divergence of the format's token distributions from the base model's.
    pub kl_divergence: f64,
}

/// One format's profile.
#[derive(Clone, Debug, Serialize)]
pub struct FormatProfile {
    #[serde(rename = "type")]
    pub ty: String,
    pub bits_per_weight: f64,
    pub family: &'static str,
    /// Why nothing was measured, for a skipped format.
    pub skipped: Option<String>,
    /// How it was measured, where that differs from the others.
    pub note: Option<String>,
    pub gaussian: Option<ErrorFigures>,
    pub model: Option<ErrorFigures>,
    /// Model tensors left out because their rows are not a whole number of blocks.
    pub model_tensors_unfit: usize,
    pub speed: Vec<PathSpeed>,
    pub quality: Option<ModelQuality>,
}

impl FormatProfile {
    /// The fastest dot product over the paths (GB/s of weights), as the engine would run it.
    pub fn best_dot(&self) -> Option<f64> {
        self.speed.iter().filter_map(|s| s.dot).reduce(f64::max)
    }
}

/// A whole profile run.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub machine: machine::Machine,
    pub rows: usize,
    pub row_len: usize,
    pub seed: u64,
    pub model: Option<String>,
    pub model_tensors: usize,
    pub model_tensors_skipped: Vec<String>,
    /// Perplexity of the model as given, when quality was measured.
    pub perplexity_base: Option<f64>,
    /// Chunks of how many tokens the perplexity was measured on.
    pub perplexity_chunks: Option<(usize, usize)>,
    pub formats: Vec<FormatProfile>,
}

/// Profiles every format of `opts.types`; `model` adds the error on its weights. `progress`
/// hears of each format as it starts.
pub fn run(
    opts: &Options,
    model: Option<(&str, &GgufFile)>,
    progress: &mut dyn FnMut(GgmlType),
) -> Result<Profile> {
    if opts.n == 0 || !opts.n.is_multiple_of(quant::QK_K) || opts.rows == 0 {
        return Err(Error::Invalid(format!(
            "{} rows of {} values: need at least one row of a multiple of {} values",
            opts.rows,
            opts.n,
            quant::QK_K
        )));
    }
    // 2^28 values (1 GiB of f32) is far more than a stable figure needs.
    if opts.rows.checked_mul(opts.n).is_none_or(|v| v > 1 << 28) {
        return Err(Error::Invalid(format!(
            "{} rows of {} values is more than {} values",
            opts.rows,
            opts.n,
            1u64 << 28
        )));
    }
    let data = rng::Rng::new(opts.seed).gaussians(opts.rows * opts.n);
    let rows = match model {
        Some((_, f)) => Some(accuracy::ModelRows::load(f, opts.model_rows)?),
        None => None,
    };
    let paths = quant::kernel_paths();
    let mut formats = Vec::new();
    for &ty in &opts.types {
        progress(ty);
        let mut fp = FormatProfile {
            ty: ty.name().to_string(),
            bits_per_weight: ty.bits_per_weight(),
            family: FAMILIES[family(ty)],
            skipped: None,
            note: accuracy::needs_imatrix(ty)
                .then(|| "uniform importance matrix (its quantizer needs one)".to_string()),
            gaussian: None,
            model: None,
            model_tensors_unfit: 0,
            speed: Vec::new(),
            quality: None,
        };
        let k = match accuracy::kernels_for(ty) {
            Ok(k) => k,
            Err(why) => {
                fp.skipped = Some(why);
                fp.note = None;
                formats.push(fp);
                continue;
            }
        };
        fp.gaussian = Some((&accuracy::row_error(ty, &data, opts.n)?).into());
        if let Some(r) = &rows {
            let (s, unfit) = r.error(ty)?;
            fp.model_tensors_unfit = unfit;
            fp.model = (s.n > 0).then(|| (&s).into());
        }
        if let Some(w) = speed::Workload::new(&k, opts.n, opts.speed_rows.max(1), opts.seed) {
            for p in &paths {
                fp.speed.push(speed::measure(p, ty, &w, opts.time));
            }
        }
        formats.push(fp);
    }
    Ok(Profile {
        machine: machine::Machine::detect(),
        rows: opts.rows,
        row_len: opts.n,
        seed: opts.seed,
        model: model.map(|(name, _)| name.to_string()),
        model_tensors: rows.as_ref().map_or(0, |r| r.tensors.len()),
        model_tensors_skipped: rows.map(|r| r.skipped).unwrap_or_default(),
        perplexity_base: None,
        perplexity_chunks: None,
        formats,
    })
}

/// How quality is measured: the model file, the text, chunk size and count, threads.
pub struct QualityOptions<'a> {
    pub model: &'a std::path::Path,
    pub text: &'a str,
    pub n_ctx: usize,
    pub chunks: usize,
    pub threads: usize,
    /// Where the requantized models are written (each removed after use).
    pub tmp_dir: &'a std::path::Path,
}

/// Adds perplexity and KL divergence to every measured format of `p`: the model is
/// requantized to each format and scored against the model as given. A format that cannot
/// be made gets a note instead.
pub fn add_quality(
    p: &mut Profile,
    q: &QualityOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let base = crate::engine::Model::load(q.model)?;
    let chunks = quality::chunks(&base, q.text, q.n_ctx, q.chunks)?;
    progress("base model");
    let scored = quality::score(&base, &chunks, q.threads, None, true)?;
    let base_lp = scored.logprobs.unwrap_or_default();
    p.perplexity_base = Some(scored.perplexity);
    p.perplexity_chunks = Some((chunks.len(), q.n_ctx));
    for f in p.formats.iter_mut().filter(|f| f.skipped.is_none()) {
        let Some(ty) = GgmlType::from_name(&f.ty) else {
            continue;
        };
        progress(&f.ty);
        let needs = quality::mix_for(ty).is_some_and(|m| {
            crate::quantize::select::requires_imatrix("blk.0.ffn_down.weight", ty, m)
        });
        let made = if needs {
            Err(format!("the {ty} model needs an importance matrix"))
        } else {
            quality::requantize(&base.file, ty, q.tmp_dir, q.threads).map_err(|e| e.to_string())
        };
        let path = match made {
            Ok(path) => path,
            Err(e) => {
                let why = format!("no perplexity: {e}");
                f.note = Some(f.note.take().map_or(why.clone(), |n| format!("{n}; {why}")));
                continue;
            }
        };
        let result = crate::engine::Model::load(&path)
            .and_then(|m| quality::score(&m, &chunks, q.threads, Some(&base_lp), false));
        let _ = std::fs::remove_file(&path);
        let s = result?;
        f.quality = Some(ModelQuality {
            perplexity: s.perplexity,
            kl_divergence: s.kl_divergence.unwrap_or(0.0),
        });
    }
    Ok(())
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"))
}

fn sci(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.3e}"))
}

impl Profile {
    fn path_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for f in &self.formats {
            for s in &f.speed {
                if !names.contains(&s.path) {
                    names.push(s.path);
                }
            }
        }
        names
    }

    /// Header and rows of the table, as cells.
    pub fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let paths = self.path_names();
        let mut head: Vec<String> = ["type", "bpw", "rmse", "max abs", "rel err"]
            .map(String::from)
            .to_vec();
        if self.model.is_some() {
            head.extend(["model rmse", "model rel err"].map(String::from));
        }
        for p in &paths {
            head.push(format!("{p} deq GB/s"));
            head.push(format!("{p} act GB/s"));
            head.push(format!("{p} dot GB/s"));
        }
        let quality = self.formats.iter().any(|f| f.quality.is_some());
        if quality {
            head.extend(["ppl", "mean KL"].map(String::from));
        }
        head.push("note".into());
        let mut rows = Vec::new();
        for f in &self.formats {
            let mut r = vec![f.ty.clone(), format!("{:.4}", f.bits_per_weight)];
            let g = f.gaussian.as_ref();
            r.push(sci(g.map(|g| g.rmse)));
            r.push(sci(g.map(|g| g.max_abs)));
            r.push(sci(g.map(|g| g.relative)));
            if self.model.is_some() {
                r.push(sci(f.model.map(|m| m.rmse)));
                r.push(sci(f.model.map(|m| m.relative)));
            }
            for p in &paths {
                let s = f.speed.iter().find(|s| s.path == *p);
                r.push(opt(s.and_then(|s| s.dequantize), 2));
                r.push(opt(s.and_then(|s| s.activation), 2));
                r.push(opt(s.and_then(|s| s.dot), 2));
            }
            if quality {
                r.push(opt(f.quality.map(|q| q.perplexity), 4));
                r.push(opt(f.quality.map(|q| q.kl_divergence), 6));
            }
            let mut note = Vec::new();
            if let Some(s) = &f.skipped {
                note.push(format!("skipped: {s}"));
            }
            if let Some(n) = &f.note {
                note.push(n.clone());
            }
            if f.model_tensors_unfit > 0 {
                note.push(format!(
                    "{} model tensors have rows that are not whole blocks",
                    f.model_tensors_unfit
                ));
            }
            r.push(note.join("; "));
            rows.push(r);
        }
        (head, rows)
    }

    /// The chart: error against bits per weight, and dot-product speed against bits per
    /// weight, one point per measured format.
    pub fn svg(&self) -> String {
        let pts = |f: &dyn Fn(&FormatProfile) -> Option<f64>| -> Vec<svg::Point> {
            self.formats
                .iter()
                .filter_map(|p| {
                    let ty = GgmlType::from_name(&p.ty)?;
                    Some(svg::Point {
                        label: p.ty.clone(),
                        x: p.bits_per_weight,
                        y: f(p)?,
                        series: family(ty),
                    })
                })
                .collect()
        };
        let err_panel = |source: &str, points| svg::Panel {
            title: format!("Quantization error, {source}"),
            x_label: "bits per weight".into(),
            y_label: "relative RMS error ‖x − dq(q(x))‖ / ‖x‖".into(),
            points,
        };
        let mut panels = vec![err_panel(
            "gaussian rows",
            pts(&|p| p.gaussian.map(|g| g.relative)),
        )];
        if let Some(m) = &self.model {
            let short = m.trim_end_matches(".gguf");
            panels.push(err_panel(short, pts(&|p| p.model.map(|m| m.relative))));
        }
        panels.push(svg::Panel {
            title: "Dot-product speed (fastest kernel path)".into(),
            x_label: "bits per weight".into(),
            y_label: "GB/s of weights, one thread".into(),
            points: pts(&|p| p.best_dot()),
        });
        let skipped: Vec<&str> = self
            .formats
            .iter()
            .filter(|f| f.skipped.is_some())
            .map(|f| f.ty.as_str())
            .collect();
        let mut note = format!(
            "strait {} on {} ({}); {} rows of {} gaussian values, seed {}",
            self.machine.version,
            self.machine.cpu,
            self.machine.paths.join(", "),
            self.rows,
            self.row_len,
            self.seed
        );
        if let Some(m) = &self.model {
            note += &format!("; model {m}");
        }
        if let Some(l) = self.machine.load_average {
            note += &format!("; load average {l:.1} at the start");
        }
        if !skipped.is_empty() {
            note += &format!("; skipped: {}", skipped.join(", "));
        }
        svg::render("strait profile: quant formats", &note, &panels, &FAMILIES)
    }
}

/// Cells as a markdown table.
pub fn markdown(head: &[String], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            let pad = w
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c.chars().count());
            s += &format!(" {c}{} |", " ".repeat(pad));
        }
        s + "\n"
    };
    let mut out = line(head);
    out += "|";
    for &n in &w {
        out += &format!(" {} |", "-".repeat(n.max(3)));
    }
    out += "\n";
    for r in rows {
        out += &line(r);
    }
    out
}

/// Cells as CSV (RFC 4180 quoting).
pub fn csv(head: &[String], rows: &[Vec<String>]) -> String {
    let cell = |c: &String| {
        if c.contains([',', '"', '\n']) {
            format!("\"{}\"", c.replace('"', "\"\""))
        } else {
            c.clone()
        }
    };
    let mut out = String::new();
    for r in std::iter::once(head).chain(rows.iter().map(|r| &r[..])) {
        out += &r.iter().map(cell).collect::<Vec<_>>().join(",");
        out += "\n";
    }
    out
}
