//! `strait bench` on the tiny reference models: JSON, CSV and markdown parse, every result is
//! a positive rate from the requested repetitions, and unusable flags are errors.

mod common;

use serde_json::Value;
use std::process::{Command, Output};

fn strait(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(args)
        .output()
        .expect("run strait")
}

fn ok(args: &[&str]) -> String {
    let out = strait(args);
    assert!(
        out.status.success(),
        "strait {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tiny(name: &str) -> String {
    common::reference(&format!("models/{name}"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn json_two_models_two_thread_counts() {
    let models = format!(
        "{},{}",
        tiny("tiny-qwen2-q4_k_m.gguf"),
        tiny("tiny-llama3-q3_k_m.gguf")
    );
    let doc: Value = serde_json::from_str(&ok(&[
        "bench", "-m", &models, "-p", "16", "-n", "8", "-r", "2", "-t", "1,2", "-o", "json",
    ]))
    .expect("bench JSON parses");
    let m = &doc["machine"];
    assert!(m["cpu"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(m["paths"]
        .as_array()
        .unwrap()
        .contains(&Value::from("scalar")));
    assert!(m["gpu"].is_null());
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 8, "2 models x 2 thread counts x (pp, tg)");
    let tests: Vec<(&str, u64, &str)> = results
        .iter()
        .map(|r| {
            (
                r["model_type"].as_str().unwrap(),
                r["threads"].as_u64().unwrap(),
                r["test"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(tests[0], ("qwen2 Q4_K_M", 1, "pp16"));
    assert_eq!(tests[1], ("qwen2 Q4_K_M", 1, "tg8"));
    assert_eq!(tests[3], ("qwen2 Q4_K_M", 2, "tg8"));
    assert_eq!(tests[6], ("llama Q3_K_M", 2, "pp16"));
    for r in results {
        let samples = r["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 2);
        assert!(samples.iter().all(|s| s.as_f64().unwrap() > 0.0));
        let (mean, sd) = (r["mean"].as_f64().unwrap(), r["stddev"].as_f64().unwrap());
        let (a, b) = (samples[0].as_f64().unwrap(), samples[1].as_f64().unwrap());
        assert!((mean - (a + b) / 2.0).abs() < 1e-9 * mean);
        assert!((sd - (a - b).abs() / 2f64.sqrt()).abs() < 1e-9 * mean.max(1.0));
        assert!(r["size_bytes"].as_u64().unwrap() > 1 << 20);
        assert!(r["params"].as_u64().unwrap() > 1_000_000);
        let per_token = r["weight_bytes_per_token"].as_u64().unwrap();
        assert!(per_token > 0 && per_token < r["size_bytes"].as_u64().unwrap());
        // Coarse (1/100 s ticks over runs of milliseconds) and it counts every thread of the
        // process, so only its sign is certain here.
        if let Some(c) = r["cpu_percent"].as_f64() {
            assert!(c >= 0.0 && c.is_finite(), "CPU share {c}");
        }
        if r["test"] == "tg8" {
            let gbs = r["achieved_gbs"].as_f64().unwrap();
            assert!((gbs - per_token as f64 * mean / 1e9).abs() < 1e-9 * gbs.max(1.0));
            assert!(r["host_gbs"].as_f64().unwrap() > 0.1);
        } else {
            assert!(r["achieved_gbs"].is_null());
        }
    }
}

#[test]
fn csv_and_markdown() {
    let m = tiny("tiny-qwen3-q5_k_m.gguf");
    let csv = ok(&[
        "bench", "-m", &m, "-p", "16", "-n", "8", "-r", "2", "-t", "2", "-o", "csv",
    ]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    let head: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(head[..3], ["model", "model_type", "size_bytes"]);
    let col = |name: &str| head.iter().position(|&h| h == name).unwrap();
    for l in &lines[1..] {
        let cells: Vec<&str> = l.split(',').collect();
        assert_eq!(cells.len(), head.len(), "{l}");
        assert!(cells[col("avg_ts")].parse::<f64>().unwrap() > 0.0);
        assert!(cells[col("stddev_ts")].parse::<f64>().unwrap() >= 0.0);
    }
    assert!(lines[1].contains(",pp16,16,"));
    assert!(lines[2].contains(",tg8,8,"));

    let md = ok(&[
        "bench",
        "-m",
        &m,
        "-p",
        "0",
        "-n",
        "4",
        "-r",
        "2",
        "-t",
        "1",
        "--no-bandwidth",
    ]);
    assert!(md.contains("| model"), "{md}");
    assert!(md.contains("| qwen3 Q5_K_M"), "{md}");
    assert!(md.contains("| tg4 "), "{md}");
    assert!(!md.contains("pp"), "no prompt test with -p 0: {md}");
    assert!(md.contains(" ± "));
}

/// Two budgets for the 4-layer tiny qwen2 with a context of 16: 1MB holds 2 layers (the others
/// run on the CPU from the mapped file), 40MB holds every layer.
#[test]
fn vram_budgets_run_through_the_streaming_executor() {
    let m = tiny("tiny-qwen2-q4_k_m.gguf");
    let run = |fmt: &str| {
        ok(&[
            "bench",
            "-m",
            &m,
            "-p",
            "16",
            "-n",
            "8",
            "-r",
            "2",
            "-t",
            "1",
            "--vram",
            "1MB,40MB",
            "--no-bandwidth",
            "-o",
            fmt,
        ])
    };
    let doc: Value = serde_json::from_str(&run("json")).expect("bench JSON parses");
    let results = doc["results"].as_array().unwrap();
    let rows: Vec<(&str, u64, u64, &str)> = results
        .iter()
        .map(|r| {
            (
                r["vram"].as_str().unwrap(),
                r["resident_layers"].as_u64().unwrap(),
                r["n_layer"].as_u64().unwrap(),
                r["test"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("1MB", 2, 4, "pp16"),
            ("1MB", 2, 4, "tg8"),
            ("40MB", 4, 4, "pp16"),
            ("40MB", 4, 4, "tg8"),
        ]
    );
    for r in results {
        let samples = r["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 2);
        assert!(samples.iter().all(|s| s.as_f64().unwrap() > 0.0), "{r}");
        assert!(r["mean"].as_f64().unwrap() > 0.0);
    }

    let csv = run("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5, "{csv}");
    let head: Vec<&str> = lines[0].split(',').collect();
    let col = |name: &str| head.iter().position(|&h| h == name).unwrap();
    let cells: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
    let got: Vec<(&str, &str, &str)> = cells
        .iter()
        .map(|c| (c[col("vram")], c[col("resident_layers")], c[col("n_layer")]))
        .collect();
    assert_eq!(
        got,
        [
            ("1MB", "2", "4"),
            ("1MB", "2", "4"),
            ("40MB", "4", "4"),
            ("40MB", "4", "4")
        ]
    );
    assert!(cells
        .iter()
        .all(|c| c[col("avg_ts")].parse::<f64>().unwrap() > 0.0));

    let md = run("md");
    assert!(md.contains("| vram ") && md.contains("| resident "), "{md}");
    assert!(md.contains("| 1MB  | 2/4      | tg8 "), "{md}");
    assert!(md.contains("| 40MB | 4/4      | pp16 "), "{md}");
    // Without a budget the columns say so.
    let plain = ok(&[
        "bench",
        "-m",
        &m,
        "-p",
        "0",
        "-n",
        "4",
        "-r",
        "1",
        "-t",
        "1",
        "--no-bandwidth",
    ]);
    assert!(plain.contains("| -    | -        | tg4 "), "{plain}");
}

#[test]
fn unusable_flags_are_errors() {
    let m = tiny("tiny-qwen2-q4_k_m.gguf");
    let err = |args: &[&str]| {
        let out = strait(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let small = err(&["bench", "-m", &m, "-p", "16", "-n", "8", "--vram", "10KB"]);
    assert!(
        small.contains("--vram 10KB") && small.contains("smallest budget that works"),
        "{small}"
    );
    let dev = err(&["bench", "-m", &m, "--device", "cuda0"]);
    assert!(
        dev.contains("cuda0") && dev.contains("no GPU backend"),
        "{dev}"
    );
    assert!(err(&["bench", "-m", &m, "-t", "0"]).contains("-t 0"));
    assert!(err(&["bench", "-m", &m, "-r", "0", "-p", "4", "-n", "0"]).contains("repetitions"));
    assert!(err(&["bench", "-m", &m, "-p", "0", "-n", "0"]).contains("nothing to measure"));
    assert!(err(&["bench", "-m", "/nonexistent.gguf"]).contains("/nonexistent.gguf"));
    assert!(err(&["bench", "-m", &m, "-p", "100000000"]).contains("training context"));
}
