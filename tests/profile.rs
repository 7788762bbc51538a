//! `strait profile`: the outputs parse, the figures are positive and ordered as the formats'
//! bits per weight say, skipped formats are listed with the reason, and the chart is
//! well-formed SVG with one point per measured format.

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

fn fail(args: &[&str]) -> String {
    let out = strait(args);
    assert_eq!(out.status.code(), Some(1), "strait {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

const QUICK: [&str; 4] = ["--rows", "8", "--time-ms", "3"];
const KFAMILY: [&str; 6] = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0"];

fn formats(doc: &Value) -> &Vec<Value> {
    doc["formats"].as_array().expect("formats array")
}

fn find<'a>(doc: &'a Value, ty: &str) -> &'a Value {
    formats(doc)
        .iter()
        .find(|f| f["type"] == ty)
        .unwrap_or_else(|| panic!("{ty} missing"))
}

/// A small XML well-formedness check: tags nest and close, attributes are quoted, entities
/// are the five XML ones. Returns the number of elements of each class value seen.
fn check_xml(s: &str) -> std::collections::HashMap<String, usize> {
    let mut stack: Vec<String> = Vec::new();
    let mut classes = std::collections::HashMap::new();
    let mut rest = s;
    let mut roots = 0;
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        let mut t = text;
        while let Some(a) = t.find('&') {
            let end = t[a..].find(';').expect("entity ends") + a;
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&&t[a..=end]),
                "entity {}",
                &t[a..=end]
            );
            t = &t[end + 1..];
        }
        assert!(
            !stack.is_empty() || text.trim().is_empty(),
            "text outside the root: {text:?}"
        );
        let gt = rest[lt..].find('>').expect("tag closes") + lt;
        let tag = &rest[lt + 1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "closing </{name}>"
            );
            continue;
        }
        assert!(!tag.starts_with('!') && !tag.starts_with('?'), "{tag}");
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name = body
            .split_whitespace()
            .next()
            .expect("tag name")
            .to_string();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric()),
            "name {name}"
        );
        // Attributes: name="value" pairs.
        let mut attrs = body[name.len()..].trim();
        while !attrs.is_empty() {
            let eq = attrs
                .find("=\"")
                .unwrap_or_else(|| panic!("attribute in <{body}>"));
            let key = attrs[..eq].trim();
            assert!(!key.is_empty() && !key.contains(' '), "attribute {key:?}");
            let close = attrs[eq + 2..].find('"').expect("quote closes") + eq + 2;
            let value = &attrs[eq + 2..close];
            assert!(!value.contains('<'), "{value}");
            if key == "class" {
                *classes.entry(value.to_string()).or_insert(0) += 1;
            }
            attrs = attrs[close + 1..].trim();
        }
        if stack.is_empty() {
            roots += 1;
        }
        if !self_closing {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed {stack:?}");
    assert_eq!(roots, 1, "one root element");
    assert!(rest.trim().is_empty());
    classes
}

#[test]
fn gaussian_profile_json_and_chart() {
    let dir = std::env::temp_dir().join(format!("strait-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("p.svg");
    let types = [&KFAMILY[..], &["Q4_0", "IQ2_XXS", "I32"]]
        .concat()
        .join(",");
    let mut args = vec!["profile", "-o", "json", "--types", &types];
    args.extend(QUICK);
    let svg_arg = svg.to_str().unwrap();
    args.extend(["--svg", svg_arg]);
    let doc: Value = serde_json::from_str(&ok(&args)).expect("profile JSON parses");
    assert_eq!(formats(&doc).len(), 9);
    assert_eq!(doc["rows"], 8);
    assert_eq!(doc["row_len"], 4096);

    // Error falls as bits per weight rise across the K-quant family.
    let mut last = (0.0, f64::INFINITY, f64::INFINITY);
    for ty in KFAMILY {
        let f = find(&doc, ty);
        let bpw = f["bits_per_weight"].as_f64().unwrap();
        let g = &f["gaussian"];
        let (rmse, rel) = (g["rmse"].as_f64().unwrap(), g["relative"].as_f64().unwrap());
        assert!(bpw > last.0, "{ty}: {bpw} bpw");
        assert!(
            rmse > 0.0 && rmse < last.1,
            "{ty}: rmse {rmse} after {}",
            last.1
        );
        assert!(rel > 0.0 && rel < last.2, "{ty}: relative {rel}");
        assert!(g["max_abs"].as_f64().unwrap() >= rmse);
        assert_eq!(g["values"], 8 * 4096);
        last = (bpw, rmse, rel);
        // The scalar path has every kernel; each figure is a positive rate.
        let speed = f["speed"].as_array().unwrap();
        assert_eq!(speed[0]["path"], "scalar");
        for s in speed {
            for k in ["dequantize", "activation", "dot"] {
                if s["path"] == "scalar" || !s[k].is_null() {
                    assert!(s[k].as_f64().unwrap() > 0.0, "{ty} {} {k}", s["path"]);
                }
            }
        }
    }
    // Gaussian data of unit variance: the relative error and the RMSE nearly agree.
    let q8 = &find(&doc, "Q8_0")["gaussian"];
    let ratio = q8["rmse"].as_f64().unwrap() / q8["relative"].as_f64().unwrap();
    assert!((ratio - 1.0).abs() < 0.05, "{ratio}");
    assert_eq!(find(&doc, "Q4_K")["bits_per_weight"], 4.5);

    // Formats that cannot be measured are listed with the reason; the imatrix ones say how.
    let i32 = find(&doc, "I32");
    assert_eq!(i32["skipped"], "I32 has no kernels in this build");
    assert!(i32["gaussian"].is_null());
    assert!(i32["speed"].as_array().unwrap().is_empty());
    let iq2 = find(&doc, "IQ2_XXS");
    assert!(iq2["skipped"].is_null());
    assert!(iq2["note"].as_str().unwrap().contains("uniform importance"));
    assert!(iq2["gaussian"]["relative"].as_f64().unwrap() > 0.1);

    // The chart: well-formed, one point per measured format in each of its two panels.
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    let classes = check_xml(&text);
    assert_eq!(
        classes.get("point"),
        Some(&16),
        "8 measured formats x 2 panels"
    );
    assert_eq!(classes.get("label"), Some(&16));
    for ty in ["Q2_K", "Q8_0", "IQ2_XXS"] {
        assert_eq!(
            text.matches(&format!("data-label=\"{ty}\"")).count(),
            2,
            "{ty}"
        );
    }
    assert!(!text.contains("data-label=\"I32\""));
    assert!(text.contains("skipped: I32"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_and_markdown_tables() {
    let mut args = vec!["profile", "-o", "csv", "--types", "Q4_0,Q8_0,I32"];
    args.extend(QUICK);
    let csv = ok(&args);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    let head: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(&head[..5], ["type", "bpw", "rmse", "max abs", "rel err"]);
    assert!(head.contains(&"scalar dot GB/s"));
    for l in &lines[1..] {
        assert_eq!(l.split(',').count(), head.len(), "{l}");
    }
    let q4: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(q4[0], "Q4_0");
    assert_eq!(q4[1], "4.5000");
    let q8: Vec<&str> = lines[2].split(',').collect();
    let rel = |r: &[&str]| r[4].parse::<f64>().unwrap();
    assert!(rel(&q8) > 0.0 && rel(&q8) < rel(&q4) / 4.0);
    assert!(lines[3].starts_with("I32,32.0000,-,-,-"), "{}", lines[3]);
    assert!(lines[3].ends_with("skipped: I32 has no kernels in this build"));

    let mut args = vec!["profile", "--types", "Q8_0"];
    args.extend(QUICK);
    let md = ok(&args);
    assert!(md.contains("| type | bpw"), "{md}");
    assert!(md.contains("| Q8_0 | 8.5000 |"), "{md}");
}

#[test]
fn model_weights_error() {
    let m = common::reference("models/tiny-llama3-q3_k_m.gguf");
    let mut args = vec!["profile", "-o", "json", "--types", "Q4_0,Q8_0,Q4_K"];
    args.extend(QUICK);
    args.extend(["--model", m.to_str().unwrap(), "--model-rows", "4"]);
    let svg = std::env::temp_dir().join(format!("strait-profile-model-{}.svg", std::process::id()));
    args.extend(["--svg", svg.to_str().unwrap()]);
    let doc: Value = serde_json::from_str(&ok(&args)).unwrap();
    // Three panels: gaussian error, the model's error, speed. Q4_K reproduces the model's
    // Q4_K tensors exactly: its zero error is a hollow point on the bottom edge.
    let text = std::fs::read_to_string(&svg).unwrap();
    std::fs::remove_file(&svg).unwrap();
    assert_eq!(check_xml(&text).get("point"), Some(&9));
    assert!(text.contains("Quantization error, tiny-llama3-q3_k_m"));
    assert!(text.contains(">Q4_K (0)</text>"));
    assert_eq!(doc["model"], "tiny-llama3-q3_k_m.gguf");
    // 4 layers of 7 matrices, the embedding and the output matrix.
    assert_eq!(doc["model_tensors"], 30);
    let rel = |ty: &str| find(&doc, ty)["model"]["relative"].as_f64().unwrap();
    assert!(rel("Q8_0") > 0.0 && rel("Q8_0") < rel("Q4_0") / 4.0);
    assert!(rel("Q4_0") < 0.2);
    // Rows of 128 values are not whole 256-value blocks: only the 256-wide down projections
    // fit Q4_K; the others are counted.
    let q4k = find(&doc, "Q4_K");
    assert_eq!(q4k["model_tensors_unfit"], 26);
    assert_eq!(q4k["model"]["values"], 4 * 4 * 256);
    assert_eq!(q4k["model"]["relative"], 0.0);
}

#[test]
fn perplexity_and_kl_of_requantized_models() {
    let dir = std::env::temp_dir().join(format!("strait-profile-ppl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text_path = dir.join("text.txt");
    let words = [
        "the", "river", "runs", "past", "a", "mill", "where", "grain", "is", "ground",
    ];
    let text: Vec<String> = (0..400)
        .map(|i| words[(i * 7 + i / 3) % words.len()].to_string())
        .collect();
    std::fs::write(&text_path, text.join(" ")).unwrap();
    let m = common::reference("models/tiny-qwen2-q4_k_m.gguf");
    let mut args = vec!["profile", "-o", "json", "--types", "Q8_0,Q4_0,IQ2_XXS"];
    args.extend(QUICK);
    args.extend(["--model", m.to_str().unwrap(), "--model-rows", "2"]);
    args.extend([
        "--perplexity",
        text_path.to_str().unwrap(),
        "--chunks",
        "2",
        "--ctx",
        "32",
    ]);
    let doc: Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(doc["perplexity_chunks"], serde_json::json!([2, 32]));
    let base = doc["perplexity_base"].as_f64().unwrap();
    assert!(base > 1.0, "{base}");
    let q = |ty: &str| find(&doc, ty)["quality"].clone();
    let (q8, q4) = (q("Q8_0"), q("Q4_0"));
    for x in [&q8, &q4] {
        assert!(x["perplexity"].as_f64().unwrap() > 1.0);
    }
    let kl8 = q8["kl_divergence"].as_f64().unwrap();
    let kl4 = q4["kl_divergence"].as_f64().unwrap();
    assert!(kl8 > 0.0 && kl8 < kl4, "KL Q8_0 {kl8}, Q4_0 {kl4}");
    // Q8_0 barely moves the distributions: its perplexity is within 5% of the base.
    let p8 = q8["perplexity"].as_f64().unwrap();
    assert!((p8 / base - 1.0).abs() < 0.05, "{p8} vs {base}");
    let iq2 = find(&doc, "IQ2_XXS");
    assert!(iq2["quality"].is_null());
    assert!(iq2["note"]
        .as_str()
        .unwrap()
        .contains("needs an importance matrix"));
    // The requantized files are removed.
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("strait-profile-")
                && e.file_name().to_string_lossy().ends_with(".gguf")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_are_errors() {
    assert!(fail(&["profile", "--types", "Q4_0,Q9_9"]).contains("unknown type \"Q9_9\""));
    assert!(fail(&["profile", "--row-len", "100"]).contains("multiple of 256"));
    assert!(fail(&["profile", "--rows", "0"]).contains("at least one row"));
    assert!(fail(&["profile", "--rows", "1000000"]).contains("more than 268435456 values"));
    assert!(fail(&["profile", "--model", "/nonexistent.gguf"]).contains("/nonexistent.gguf"));
    assert!(fail(&["profile", "--perplexity", "x.txt"]).contains("needs --model"));
}

/// The quality pass scores the same positions as `strait perplexity` and gets its number.
#[test]
fn quality_perplexity_equals_the_engine_perplexity() {
    use strait::engine::{perplexity::perplexity, Engine, Model, Options};
    use strait::profile::quality;
    let model = Model::load(common::reference("models/tiny-llama3-q3_k_m.gguf")).unwrap();
    let text = "Free software is a matter of liberty, not price. ".repeat(12);
    let chunks = quality::chunks(&model, &text, 24, 3).unwrap();
    assert_eq!(chunks.len(), 3);
    let ours = quality::score(&model, &chunks, 1, None, true).unwrap();
    let tok = strait::tokenizer::Tokenizer::from_gguf(&model.file).unwrap();
    let tokens = tok.encode(&text, true, false).unwrap();
    let opts = Options {
        n_ctx: 24,
        n_ubatch: 24,
        all_logits: true,
        threads: 1,
        ..Options::default()
    };
    let mut engine = Engine::new(&model, &opts).unwrap();
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let r = perplexity(&mut engine, &tokens[..3 * 24], 24, bos, |_, _| {}).unwrap();
    assert_eq!(r.scored, 3 * 11);
    assert!(
        (ours.perplexity / r.ppl - 1.0).abs() < 1e-6,
        "{} vs {}",
        ours.perplexity,
        r.ppl
    );
    // Its own distributions against themselves: no divergence.
    let lp = ours.logprobs.unwrap();
    assert_eq!(lp.len(), 3 * 11 * model.config.n_vocab);
    let again = quality::score(&model, &chunks, 1, Some(&lp), false).unwrap();
    assert!(again.kl_divergence.unwrap().abs() < 1e-6);
}
