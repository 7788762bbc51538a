//! `strait inspect MODEL`: what a GGUF file holds, as aligned tables or as JSON.

use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use strait::gguf::{Array, GgufFile, Value};
use strait::quant::GgmlType;
use strait::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file (any shard of a split model)
    pub model: PathBuf,
    /// List every tensor: name, type, shape, bytes, offset
    #[arg(long)]
    pub tensors: bool,
    /// Print JSON instead of tables
    #[arg(long)]
    pub json: bool,
}

/// Tensors and bytes of one ggml type.
#[derive(Default)]
struct TypeCount {
    tensors: u64,
    bytes: u64,
}

/// What inspect reports, gathered once for both output forms.
struct Report<'a> {
    f: &'a GgufFile,
    arch: Option<&'a str>,
    name: Option<&'a str>,
    types: BTreeMap<GgmlType, TypeCount>,
    hparams: Vec<(&'a str, &'a Value)>,
    tokenizer: Option<&'a str>,
    vocab_size: Option<usize>,
    chat_template: Option<usize>,
}

impl<'a> Report<'a> {
    fn new(f: &'a GgufFile) -> Result<Report<'a>> {
        let md = f.metadata();
        let arch = md.opt_str("general.architecture")?;
        let mut types: BTreeMap<GgmlType, TypeCount> = BTreeMap::new();
        for t in f.tensors() {
            let c = types.entry(t.ty).or_default();
            c.tensors += 1;
            c.bytes += t.size;
        }
        let hparams = match arch {
            Some(arch) => {
                let prefix = format!("{arch}.");
                md.iter().filter(|(k, _)| k.starts_with(&prefix)).collect()
            }
            None => Vec::new(),
        };
        Ok(Report {
            f,
            arch,
            name: md.opt_str("general.name")?,
            types,
            hparams,
            tokenizer: md.opt_str("tokenizer.ggml.model")?,
            vocab_size: md.opt_array("tokenizer.ggml.tokens")?.map(Array::len),
            chat_template: md.opt_str("tokenizer.chat_template")?.map(str::len),
        })
    }

    fn text(&self, tensors: bool) -> String {
        let f = self.f;
        let mut out = String::new();
        let paths: Vec<String> = f.paths().iter().map(|p| p.display().to_string()).collect();
        let tokenizer = match (self.tokenizer, self.vocab_size) {
            (Some(m), Some(n)) => format!("{m}, {n} tokens"),
            (Some(m), None) => format!("{m}, no vocabulary"),
            (None, Some(n)) => format!("unknown kind, {n} tokens"),
            (None, None) => "none".to_string(),
        };
        let mut summary = vec![
            ("file", paths.join("\n")),
            ("architecture", self.arch.unwrap_or("(none)").to_string()),
            ("name", self.name.unwrap_or("(none)").to_string()),
            ("gguf version", f.version().to_string()),
            (
                "file size",
                format!("{} ({} bytes)", human_bytes(f.file_size()), f.file_size()),
            ),
            (
                "parameters",
                format!("{} ({})", human_count(f.n_params()), f.n_params()),
            ),
            ("tensors", f.tensors().len().to_string()),
            ("tokenizer", tokenizer),
            (
                "chat template",
                match self.chat_template {
                    Some(n) => format!("yes ({n} bytes)"),
                    None => "no".to_string(),
                },
            ),
        ];
        if f.paths().len() > 1 {
            summary.insert(1, ("shards", f.paths().len().to_string()));
        }
        let width = summary.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &summary {
            // Continuation lines (more shard paths) line up under the first value.
            let v = v.replace('\n', &format!("\n{:width$}  ", ""));
            out.push_str(&format!("{k:<width$}  {v}\n"));
        }

        let total: u64 = self.types.values().map(|c| c.bytes).sum();
        let mut rows = vec![row(["type", "tensors", "bytes", "size", "share"])];
        for (ty, c) in &self.types {
            rows.push(vec![
                ty.name().to_string(),
                c.tensors.to_string(),
                c.bytes.to_string(),
                human_bytes(c.bytes),
                format!("{:.1}%", 100.0 * c.bytes as f64 / total.max(1) as f64),
            ]);
        }
        out.push_str("\nquant types\n");
        out.push_str(&table(&rows, &[false, true, true, true, true]));

        if let Some(arch) = self.arch {
            out.push_str(&format!("\nhyperparameters ({arch}.*)\n"));
            let rows: Vec<Vec<String>> = self
                .hparams
                .iter()
                .map(|(k, v)| vec![k.to_string(), short_value(v)])
                .collect();
            out.push_str(&table(&rows, &[false, false]));
        }

        if tensors {
            let split = f.paths().len() > 1;
            let mut header = row(["name", "type", "shape", "bytes", "offset"]);
            let mut right = vec![false, false, false, true, true];
            if split {
                header.push("shard".to_string());
                right.push(true);
            }
            let mut rows = vec![header];
            for t in f.tensors() {
                let mut r = vec![
                    t.name.clone(),
                    t.ty.name().to_string(),
                    format!("{:?}", t.shape),
                    t.size.to_string(),
                    t.offset.to_string(),
                ];
                if split {
                    r.push((t.shard + 1).to_string());
                }
                rows.push(r);
            }
            out.push_str("\ntensors (offsets from the start of the data section)\n");
            out.push_str(&table(&rows, &right));
        }
        out
    }

    fn json(&self, tensors: bool) -> serde_json::Value {
        let f = self.f;
        let types: Vec<_> = self
            .types
            .iter()
            .map(|(ty, c)| json!({ "type": ty.name(), "tensors": c.tensors, "bytes": c.bytes }))
            .collect();
        let hparams: serde_json::Map<String, serde_json::Value> = self
            .hparams
            .iter()
            .map(|(k, v)| (k.to_string(), json_value(v)))
            .collect();
        let files: Vec<String> = f.paths().iter().map(|p| p.display().to_string()).collect();
        let mut out = json!({
            "files": files,
            "architecture": self.arch,
            "name": self.name,
            "gguf_version": f.version(),
            "file_size": f.file_size(),
            "parameters": f.n_params(),
            "tensor_count": f.tensors().len(),
            "alignment": f.alignment(),
            "quant_types": types,
            "hyperparameters": hparams,
            "tokenizer": { "model": self.tokenizer, "vocab_size": self.vocab_size },
            "chat_template": self.chat_template.is_some(),
        });
        if tensors {
            out["tensors"] = f
                .tensors()
                .iter()
                .map(|t| {
                    json!({
                        "name": t.name,
                        "type": t.ty.name(),
                        "shape": t.shape,
                        "bytes": t.size,
                        "offset": t.offset,
                        "shard": t.shard + 1,
                    })
                })
                .collect();
        }
        out
    }
}

pub fn run(args: Args) -> Result<()> {
    let f = GgufFile::open(&args.model)?;
    let report = Report::new(&f)?;
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report.json(args.tensors))
            .map_err(|e| Error::Invalid(format!("JSON output: {e}")))?;
        s.push('\n');
        s
    } else {
        report.text(args.tensors)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("standard output", e)),
        Ok(()) => Ok(()),
    }
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

/// Rows as columns padded to their widest cell; `right` says which are right-aligned.
fn table(rows: &[Vec<String>], right: &[bool]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::from("  ");
        for (i, cell) in r.iter().enumerate() {
            let w = widths[i];
            if i > 0 {
                line.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                line.push_str(&format!("{cell:>w$}"));
            } else {
                line.push_str(&format!("{cell:<w$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.2} {}", UNITS[u])
    }
}

fn human_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999_999 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

/// A value on one line: strings as they are, short arrays in full, long ones by type and length.
fn short_value(v: &Value) -> String {
    const SHOWN: usize = 16;
    match v {
        Value::String(s) => s.escape_debug().to_string(),
        Value::Array(a) if a.len() <= SHOWN => match json_array(a) {
            serde_json::Value::Array(items) if !matches!(a, Array::Array(_)) => {
                let items: Vec<String> = items.iter().map(|x| x.to_string()).collect();
                format!("[{}]", items.join(", "))
            }
            _ => v.to_string(),
        },
        other => other.to_string(),
    }
}

/// An f32 as the shortest decimal that reads back as it (1e-5, not 9.999999747378752e-6).
fn json_f32(x: f32) -> serde_json::Value {
    let shortest: f64 = x.to_string().parse().unwrap_or(x as f64);
    json!(shortest)
}

fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::F32(x) => json_f32(*x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => json_array(a),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F64(x) => json!(x),
    }
}

fn json_array(a: &Array) -> serde_json::Value {
    match a {
        Array::U8(v) => json!(v),
        Array::I8(v) => json!(v),
        Array::U16(v) => json!(v),
        Array::I16(v) => json!(v),
        Array::U32(v) => json!(v),
        Array::I32(v) => json!(v),
        Array::F32(v) => v.iter().map(|&x| json_f32(x)).collect(),
        Array::Bool(v) => json!(v),
        Array::String(v) => json!(v),
        Array::Array(v) => v.iter().map(json_array).collect(),
        Array::U64(v) => json!(v),
        Array::I64(v) => json!(v),
        Array::F64(v) => json!(v),
    }
}
