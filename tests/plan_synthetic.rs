//! The memory plan on a 70B llama-shaped model: a header written by strait's own writer as a
//! sparse file (the data region is never written), planned under 8 to 48 GiB with contexts
//! from 2k to 32k. Numbers are checked against sizes worked out by hand below.

mod common;

use std::path::PathBuf;
use std::time::Instant;
use strait::engine::plan::{
    plan, BufferKind, KvType, ModelShape, Offload, Place, PlanRequest, Rates, GIB, MIB,
};
use strait::gguf::{GgufFile, GgufWriter, Metadata, Value};
use strait::quant::GgmlType;

const N_LAYER: u64 = 80;
const DIM: u64 = 8192;
const N_HEAD: u64 = 64;
const N_KV: u64 = 8;
const FF: u64 = 28672;
const VOCAB: u64 = 32000;

/// A Q3_K_M-like mix, as llama.cpp's llama_tensor_get_type picks it: Q3_K for the big
/// matrices, Q4_K for attn_output and ffn_down, Q5_K for attn_v and ffn_down in the first
/// layers, Q6_K for the output.
fn layer_tensors(il: u64) -> Vec<(String, GgmlType, Vec<u64>)> {
    let kv = N_KV * DIM / N_HEAD;
    let v_ty = if il < 2 { GgmlType::Q5K } else { GgmlType::Q4K };
    let down_ty = if il < 8 { GgmlType::Q5K } else { GgmlType::Q4K };
    let b = |s: &str| format!("blk.{il}.{s}.weight");
    vec![
        (b("attn_norm"), GgmlType::F32, vec![DIM]),
        (b("attn_q"), GgmlType::Q3K, vec![DIM, DIM]),
        (b("attn_k"), GgmlType::Q3K, vec![DIM, kv]),
        (b("attn_v"), v_ty, vec![DIM, kv]),
        (b("attn_output"), GgmlType::Q4K, vec![DIM, DIM]),
        (b("ffn_norm"), GgmlType::F32, vec![DIM]),
        (b("ffn_gate"), GgmlType::Q3K, vec![DIM, FF]),
        (b("ffn_up"), GgmlType::Q3K, vec![DIM, FF]),
        (b("ffn_down"), down_ty, vec![FF, DIM]),
    ]
}

/// Writes the sparse 70B file once per test process and returns its path.
fn model_70b() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strait-plan70b-{}", std::process::id()));
    let path = dir.join("llama-70b-q3_k_m.gguf");
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("llama".into()));
    md.set("llama.block_count", Value::U32(N_LAYER as u32));
    md.set("llama.embedding_length", Value::U32(DIM as u32));
    md.set("llama.feed_forward_length", Value::U32(FF as u32));
    md.set("llama.attention.head_count", Value::U32(N_HEAD as u32));
    md.set("llama.attention.head_count_kv", Value::U32(N_KV as u32));
    md.set("llama.context_length", Value::U32(32768));
    let mut w = GgufWriter::new(md).unwrap();
    w.declare_tensor("token_embd.weight", GgmlType::Q3K, &[DIM, VOCAB])
        .unwrap();
    for il in 0..N_LAYER {
        for (name, ty, shape) in layer_tensors(il) {
            w.declare_tensor(&name, ty, &shape).unwrap();
        }
    }
    w.declare_tensor("output_norm.weight", GgmlType::F32, &[DIM])
        .unwrap();
    w.declare_tensor("output.weight", GgmlType::Q6K, &[DIM, VOCAB])
        .unwrap();
    // Another test thread may be writing it: write under a unique name, rename into place.
    let tmp = dir.join(format!("{:?}.gguf", std::thread::current().id()).replace(['(', ')'], ""));
    w.write_sparse(&tmp).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn shape_70b() -> ModelShape {
    let f = GgufFile::open(model_70b()).unwrap();
    ModelShape::from_header(f.metadata(), f.tensors()).unwrap()
}

/// Bytes of one layer image, by hand: each tensor's bytes rounded up to 256.
fn layer_bytes_by_hand(il: u64) -> u64 {
    layer_tensors(il)
        .iter()
        .map(|(_, ty, shape)| {
            let n: u64 = shape.iter().product();
            let b = n / ty.block_size() as u64 * ty.type_size() as u64;
            b.div_ceil(256) * 256
        })
        .sum()
}

fn req(budget: u64, n_ctx: u64, offload: Offload) -> PlanRequest {
    PlanRequest {
        budget,
        n_ctx,
        n_ubatch: 512,
        kv: KvType::F16,
        offload,
        rates: Rates::assumed(),
    }
}

const BUDGETS: [u64; 4] = [8 * GIB, 12 * GIB, 24 * GIB, 48 * GIB];
const CONTEXTS: [u64; 5] = [2048, 4096, 8192, 16384, 32768];

#[test]
fn header_reads_fast_and_sizes_match_the_hand_count() {
    let path = model_70b();
    let t = Instant::now();
    let f = GgufFile::open(&path).unwrap();
    let shape = ModelShape::from_header(f.metadata(), f.tensors()).unwrap();
    let p = plan(&shape, &req(12 * GIB, 8192, Offload::Auto)).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(secs < 1.0, "open + plan took {secs} s");
    assert!(p.device_total <= 12 * GIB);

    // The file is ~33 GB but almost all of it was never written.
    let total = f.file_size();
    assert!((30e9..36e9).contains(&(total as f64)), "file size {total}");
    // Layer 0: q 67108864 * 110/256 = 28835840, k 8388608 * 110/256 = 3604480,
    // v (Q5_K) 8388608 * 176/256 = 5767168, output (Q4_K) 67108864 * 144/256 = 37748736,
    // gate and up 234881024 * 110/256 = 100925440 each, down (Q5_K) 234881024 * 176/256 =
    // 161480704, two norms of 32768.
    let l0 = 28835840 + 3604480 + 5767168 + 37748736 + 2 * 100925440 + 161480704 + 2 * 32768;
    assert_eq!(layer_bytes_by_hand(0), l0);
    assert_eq!(shape.layers[0].bytes, l0);
    assert_eq!(shape.layers[79].bytes, layer_bytes_by_hand(79));
    // output (Q6_K) 262144000 * 210/256 = 215040000, norm 32768.
    assert_eq!(shape.head.bytes, 215040000 + 32768);
    assert_eq!(shape.n_ff, FF);
    assert_eq!(shape.n_head_kv, vec![N_KV; 80]);
}

#[test]
fn every_plan_fits_its_budget_and_grows_with_it() {
    let shape = shape_70b();
    for offload in [Offload::Stream, Offload::Cpu, Offload::Auto] {
        for ctx in CONTEXTS {
            let mut last: Option<(usize, f64)> = None;
            for budget in BUDGETS {
                let p = match plan(&shape, &req(budget, ctx, offload)) {
                    Ok(p) => p,
                    Err(e) => {
                        // Only streaming can fail here: a 32k f16 cache is 10 GiB.
                        assert_eq!(offload, Offload::Stream, "{e}");
                        assert!(ctx * 80 * 4 * 1024 > budget, "{budget} {ctx}: {e}");
                        continue;
                    }
                };
                assert!(p.device_total <= budget, "{} > {budget}", p.device_total);
                // The arena is the buffers end to end, none overlapping.
                let mut end = 0;
                for b in &p.device {
                    assert_eq!(b.offset, end, "{}", b.name);
                    end = (b.offset + b.bytes).div_ceil(256) * 256;
                }
                assert_eq!(end, p.device_total);
                let k = p.resident_layers();
                let tps = p.decode.tokens_per_s;
                if let Some((k0, tps0)) = last {
                    if offload != Offload::Auto {
                        assert!(k >= k0, "{offload:?} ctx {ctx}: {k0} then {k} layers");
                        assert!(
                            tps >= tps0 * 0.999,
                            "{offload:?} ctx {ctx}: {tps0} then {tps}"
                        );
                    }
                }
                last = Some((k, tps));
            }
        }
    }
}

#[test]
fn streaming_plan_at_12_gib_checked_by_hand() {
    let shape = shape_70b();
    let p = plan(&shape, &req(12 * GIB, 4096, Offload::Stream)).unwrap();
    // KV: 4096 positions * 8 heads * 128 * 2 bytes, for K and for V: 16 MiB per layer.
    assert!(p.kv_bytes.iter().all(|&b| b == 16 * MIB));
    // Scratch for 512 tokens: x, xb, q 16 MiB each; k, v 2 MiB each; one head's scores
    // 512 * 4096 * 4 = 8 MiB; gate and up 512 * 28672 * 4 = 56 MiB each; quantized
    // activations 512 * 112 blocks * 292 (Q8_K) = 16744448; logits 32000 * 4 = 128000.
    let scratch: u64 = p
        .device
        .iter()
        .filter(|b| b.kind == BufferKind::Scratch)
        .map(|b| b.bytes)
        .sum();
    assert_eq!(
        scratch,
        3 * 16 * MIB + 2 * 2 * MIB + 8 * MIB + 2 * 56 * MIB + 16744448 + 128000
    );
    // The slots hold the largest streamed layer.
    let k = p.resident_layers();
    let largest = (k as u64..80).map(layer_bytes_by_hand).max().unwrap();
    assert_eq!(p.slot_bytes, largest);
    assert_eq!(p.slot(1).unwrap().bytes, largest);
    // What is left for layers: 12 GiB - scratch - 80 * 16 MiB - 2 slots, and the head when it
    // is resident. (Every buffer size here is a multiple of 256: alignment adds nothing.)
    let fit = |fixed: u64| -> u64 {
        let mut left = 12 * GIB - fixed;
        let mut n = 0;
        while n < 80 && layer_bytes_by_hand(n) <= left {
            left -= layer_bytes_by_hand(n);
            n += 1;
        }
        n
    };
    let fixed = scratch + 80 * 16 * MIB + 2 * largest;
    let with_head = fit(fixed + shape.head.bytes);
    let without_head = fit(fixed);
    // Streaming the 215 MB head lets one more 410 MB layer stay: fewer bytes stream.
    assert_eq!(without_head, with_head + 1);
    assert_eq!(p.placement[80], Place::Stream);
    assert_eq!(k as u64, without_head);
    assert!((20..=27).contains(&k), "{k}");
    // Decode streams every other layer over PCIe (25 GB/s): the copies are the bottleneck.
    let streamed: u64 = (k as u64..80).map(layer_bytes_by_hand).sum::<u64>() + shape.head.bytes;
    let expect = 25e9 / streamed as f64;
    assert!(
        (p.decode.tokens_per_s / expect - 1.0).abs() < 0.05,
        "decode {} tokens/s, copies alone allow {expect}",
        p.decode.tokens_per_s
    );
    assert_eq!(p.decode.bottleneck, "host-to-device copies");
    // One more GiB holds two more layers (each ~420 MB).
    let g = p.next_gib.as_ref().unwrap();
    assert!((2..=3).contains(&g.more_resident_layers), "{g:?}");
    assert!(g.decode_tokens_per_s > p.decode.tokens_per_s);
}

#[test]
fn cpu_wins_decode_and_streaming_wins_prefill() {
    let shape = shape_70b();
    let s = plan(&shape, &req(12 * GIB, 4096, Offload::Stream)).unwrap();
    let c = plan(&shape, &req(12 * GIB, 4096, Offload::Cpu)).unwrap();
    assert!(
        c.decode.tokens_per_s > s.decode.tokens_per_s,
        "decode: cpu {} stream {}",
        c.decode.tokens_per_s,
        s.decode.tokens_per_s
    );
    assert!(
        s.prefill.tokens_per_s > c.prefill.tokens_per_s,
        "prefill: cpu {} stream {}",
        c.prefill.tokens_per_s,
        s.prefill.tokens_per_s
    );
    // CPU layers keep their KV cache on the host, so more layers are resident.
    assert!(c.resident_layers() >= s.resident_layers());
    // Decode on the CPU path reads the non-resident weights at 60 GB/s.
    let host: u64 = (0..81)
        .filter(|&u| c.placement[u] == Place::Cpu)
        .map(|u| c.units[u].bytes)
        .sum();
    let expect = 1.0 / (host as f64 / 60e9);
    assert!(
        c.decode.tokens_per_s < expect && c.decode.tokens_per_s > 0.9 * expect,
        "decode {} tokens/s, host memory alone allows {expect}",
        c.decode.tokens_per_s
    );
    // Auto picks the mode with the shorter prompt-plus-128-tokens time.
    let a = plan(&shape, &req(12 * GIB, 4096, Offload::Auto)).unwrap();
    let cost = |p: &strait::engine::plan::Plan| p.prefill.seconds + 128.0 * p.decode.seconds;
    let best = if cost(&s) < cost(&c) {
        Offload::Stream
    } else {
        Offload::Cpu
    };
    assert_eq!(a.offload, Some(best));
}

#[test]
fn no_fit_names_the_smallest_budget_and_the_fixes() {
    let shape = shape_70b();
    // A 32k f16 cache is 80 * 128 MiB = 10 GiB: streaming cannot fit in 8 GiB.
    let r = req(8 * GIB, 32768, Offload::Stream);
    let e = plan(&shape, &r).unwrap_err().to_string();
    assert!(e.contains("smallest budget that works is"), "{e}");
    assert!(e.contains("--kv q8_0"), "{e}");
    assert!(e.contains("-c "), "{e}");
    let need: u64 = e
        .split("works is ")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {e}"));
    // By hand: the cache, scratch with 64 MiB of scores (512 * 32768 * 4), and two slots of
    // the largest layer (layer 0, 439353344 bytes), with the head streamed through them.
    let scratch = 3 * 16 * MIB + 2 * 2 * MIB + 64 * MIB + 2 * 56 * MIB + 16744448 + 128000;
    assert_eq!(need, 80 * 128 * MIB + scratch + 2 * 439353344);
    assert!(plan(&shape, &req(need, 32768, Offload::Stream)).is_ok());
    assert!(plan(&shape, &req(need - 1, 32768, Offload::Stream)).is_err());
    // The suggested context fits.
    let ctx: u64 = e
        .split("-c ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(plan(&shape, &req(8 * GIB, ctx, Offload::Stream)).is_ok());
    assert!(plan(&shape, &req(8 * GIB, ctx + 256, Offload::Stream)).is_err());
    // q8_0 halves the cache (34 bytes per 32 values instead of 64).
    let q = PlanRequest {
        kv: KvType::Q8_0,
        ..req(12 * GIB, 32768, Offload::Stream)
    };
    let p = plan(&shape, &q).unwrap();
    assert_eq!(p.kv_bytes[0], 32768 * 2 * 1024 / 32 * 34);
}

#[test]
fn gemma3_sliding_layers_keep_only_the_window() {
    let f = GgufFile::open(common::model(common::GEMMA3)).unwrap();
    let shape = ModelShape::from_header(f.metadata(), f.tensors()).unwrap();
    let p = plan(&shape, &req(GIB, 8192, Offload::Stream)).unwrap();
    // 1 KV head of 256: a full layer holds 8192 positions * 256 * 2 bytes * 2 = 8 MiB, a
    // sliding layer the window of 512 plus a ubatch of 512: 1 MiB. Layers 5, 11, 17 are full.
    for (il, &b) in p.kv_bytes.iter().enumerate() {
        let full = il % 6 == 5;
        assert_eq!(b, if full { 8 * MIB } else { MIB }, "layer {il}");
    }
    assert_eq!(p.resident_layers(), 18);
    assert_eq!(p.offload, None);
}

/// Runs the strait binary with a HOME of its own (no calibration file: assumed rates).
fn strait(args: &[&str]) -> (bool, String, String, f64) {
    let home = std::env::temp_dir().join(format!("strait-plan-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(args)
        .env("HOME", &home)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        secs,
    )
}

#[test]
fn plan_command_prints_the_table_and_json() {
    let path = model_70b();
    let m = path.to_str().unwrap();
    let (ok, out, err, secs) = strait(&["plan", "-m", m, "--vram", "12GiB", "-c", "8192"]);
    assert!(ok, "{err}");
    assert!(secs < 1.0, "strait plan took {secs} s");
    for want in [
        "blk.0-1",
        "predicted prefill",
        "predicted decode",
        "bottleneck",
        "one more GiB",
        "assumed: PCIe 4.0",
        "device context overhead",
    ] {
        assert!(out.contains(want), "no {want:?} in\n{out}");
    }

    let (ok, out, err, _) = strait(&[
        "plan",
        "-m",
        m,
        "--vram",
        "24GiB",
        "--json",
        "--offload",
        "cpu",
    ]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(j["device_total"].as_u64().unwrap() <= 24 * GIB);
    assert_eq!(j["offload"], "cpu");
    assert_eq!(j["placement"].as_array().unwrap().len(), 81);
    assert_eq!(j["kv_bytes"][0].as_u64().unwrap(), 16 * MIB);

    let (ok, _, err, _) = strait(&[
        "plan",
        "-m",
        m,
        "--vram",
        "8GiB",
        "-c",
        "32768",
        "--offload",
        "stream",
    ]);
    assert!(!ok);
    assert!(err.contains("smallest budget that works"), "{err}");
    let (ok, _, err, _) = strait(&["plan", "-m", m, "--vram", "90%"]);
    assert!(!ok);
    assert!(err.contains("no GPU was found"), "{err}");
    let (ok, _, err, _) = strait(&["plan", "-m", m, "--vram", "12", "--kv", "q4"]);
    assert!(!ok && err.contains("give a unit"), "{err}");
}

#[test]
fn calibrate_saves_rates_that_plan_uses() {
    let home = std::env::temp_dir().join(format!("strait-cal-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strait"))
            .args(args)
            .env("HOME", &home)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cal = run(&["calibrate", "--read-mib", "64"]);
    assert!(cal.contains("CPU matmul Q4_K"), "{cal}");
    let file = home.join(".cache/strait/calibration.json");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let read = c["host"]["read_gbs"].as_f64().unwrap();
    assert!(read > 0.1, "{c}");
    let m = model_70b();
    let plan = run(&["plan", "-m", m.to_str().unwrap(), "--vram", "12GiB"]);
    let host_line = plan.lines().find(|l| l.contains("host memory ")).unwrap();
    assert!(
        host_line.contains("measured by strait calibrate"),
        "{host_line}"
    );
    assert!(
        host_line.contains(&format!("{read:.1}")),
        "{host_line} vs {read}"
    );
    assert!(
        plan.contains("assumed: PCIe 4.0"),
        "device rates stay assumed"
    );
    std::fs::remove_dir_all(&home).unwrap();
}
