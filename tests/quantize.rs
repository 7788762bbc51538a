//! The quantization pipeline on small inputs: byte identity with ggml's quantizers through
//! the whole pipeline (mix -> types -> rows -> file), importance matrices in both file forms,
//! lossless F32 bases, thread independence and the errors of `strait quantize`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use strait::gguf::{Array, GgufFile, GgufWriter, Metadata, Value};
use strait::quant::{self, GgmlType};
use strait::quantize::{self, Imatrix, Mix, Options};

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strait-quantize-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// One ggml reference file of ../shared/reference/quant.
struct Reference {
    file: GgufFile,
}

impl Reference {
    fn open(ty: GgmlType) -> Reference {
        let p = common::reference(&format!("quant/{}.gguf", ty.name().to_lowercase()));
        Reference {
            file: GgufFile::open(p).unwrap(),
        }
    }
    fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.file.tensor(name).map(|t| self.file.data(t))
    }
}

/// The rows every reference file quantizes (20 rows of 1024) and its importance matrix.
fn reference_x() -> (Vec<f32>, Vec<f32>) {
    let r = Reference::open(GgmlType::Q4K);
    (
        f32s(r.bytes("x").unwrap()),
        f32s(r.bytes("imatrix").unwrap()),
    )
}

const LAYER_TENSORS: &[&str] = &[
    "attn_q.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_down.weight",
];

/// A one-layer llama whose weights all hold `x` (1024 x 20): the output, the token
/// embedding and four layer tensors, plus one norm. With `experts`, an expert tensor
/// `blk.0.ffn_up_exps.weight` of 2 experts x 10 rows.
fn write_model(path: &Path, x: &[f32], experts: bool) -> Vec<String> {
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("llama".into()));
    md.set("general.file_type", Value::U32(0));
    md.set("llama.block_count", Value::U32(1));
    md.set("llama.attention.head_count", Value::U32(1));
    md.set("llama.attention.head_count_kv", Value::U32(1));
    if experts {
        md.set("llama.expert_count", Value::U32(2));
    }
    let mut w = GgufWriter::new(md).unwrap();
    let mut names = vec!["output.weight".to_string(), "token_embd.weight".to_string()];
    names.extend(LAYER_TENSORS.iter().map(|n| format!("blk.0.{n}")));
    for n in &names {
        w.add_tensor(n, GgmlType::F32, &[1024, 20], f32_bytes(x))
            .unwrap();
    }
    if experts {
        w.add_tensor(
            "blk.0.ffn_up_exps.weight",
            GgmlType::F32,
            &[1024, 10, 2],
            f32_bytes(x),
        )
        .unwrap();
        names.push("blk.0.ffn_up_exps.weight".into());
    }
    w.add_tensor(
        "blk.0.attn_norm.weight",
        GgmlType::F32,
        &[1024],
        f32_bytes(&x[..1024]),
    )
    .unwrap();
    w.write_to_path(path).unwrap();
    names
}

/// An imatrix GGUF as llama-imatrix writes it: `NAME.in_sum2` (ne0 x n_mat) and
/// `NAME.counts` (1 x n_mat) per weight. The sums are `weights * count`, so that the derived
/// weights are exactly `weights`.
fn write_imatrix_gguf(path: &Path, entries: &[(&str, Vec<f32>)]) {
    let mut md = Metadata::new();
    md.set("general.type", Value::String("imatrix".into()));
    md.set(
        "imatrix.datasets",
        Value::Array(Array::String(vec!["calibration.txt".into()])),
    );
    md.set("imatrix.chunk_count", Value::U32(7));
    md.set("imatrix.chunk_size", Value::U32(512));
    let mut w = GgufWriter::new(md).unwrap();
    for (name, weights) in entries {
        let n_mat = weights.len() / 1024;
        let count = 4.0f32;
        let sums: Vec<f32> = weights.iter().map(|v| v * count).collect();
        w.add_tensor(
            &format!("{name}.in_sum2"),
            GgmlType::F32,
            &[1024, n_mat as u64],
            f32_bytes(&sums),
        )
        .unwrap();
        w.add_tensor(
            &format!("{name}.counts"),
            GgmlType::F32,
            &[1, n_mat as u64],
            f32_bytes(&vec![count; n_mat]),
        )
        .unwrap();
    }
    w.write_to_path(path).unwrap();
}

/// The legacy .dat form of the same matrix: values stored as sums over `ncall` calls.
fn write_imatrix_dat(path: &Path, entries: &[(&str, Vec<f32>)]) {
    let ncall = 2i32;
    let mut b = Vec::new();
    b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
    for (name, weights) in entries {
        b.extend_from_slice(&(name.len() as i32).to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&ncall.to_le_bytes());
        b.extend_from_slice(&(weights.len() as i32).to_le_bytes());
        for v in weights {
            b.extend_from_slice(&(v * ncall as f32).to_le_bytes());
        }
    }
    b.extend_from_slice(&7i32.to_le_bytes());
    b.extend_from_slice(&3i32.to_le_bytes());
    b.extend_from_slice(b"dat");
    std::fs::write(path, b).unwrap();
}

fn run(input: &Path, output: &Path, opts: &Options) -> quantize::Summary {
    let f = GgufFile::open(input).unwrap();
    let plan = quantize::plan(&f, opts).unwrap();
    quantize::quantize(&f, &plan, output, opts, &mut |_| {}).unwrap()
}

/// Every tensor of `out` equals ggml's quantization of `x` to its type (`x.qi` when an
/// importance matrix was used and the type takes one); returns the types seen.
fn assert_matches_ggml(out: &Path, with_imatrix: bool) -> Vec<GgmlType> {
    let f = GgufFile::open(out).unwrap();
    let mut seen = Vec::new();
    let mut refs: HashMap<GgmlType, Reference> = HashMap::new();
    let (x, _) = reference_x();
    for t in f.tensors() {
        if t.name.ends_with("_norm.weight") {
            assert_eq!(t.ty, GgmlType::F32);
            continue;
        }
        let r = refs.entry(t.ty).or_insert_with(|| Reference::open(t.ty));
        assert_eq!(f32s(r.bytes("x").unwrap()), x, "{} x differs", t.ty);
        let mut want = match (with_imatrix, r.bytes("x.qi")) {
            (true, Some(qi)) => qi.to_vec(),
            _ => r.bytes("x.q").unwrap().to_vec(),
        };
        if with_imatrix && t.name.contains("_exps") && t.ty.is_quantized() {
            // The second expert (rows 10..20) is quantized with its own, reversed weights.
            let (_, w) = reference_x();
            let w: Vec<f32> = w.into_iter().rev().collect();
            let row = t.ty.row_bytes(1024).unwrap() as usize;
            for r in 10..20 {
                quant::quantize_row(
                    t.ty,
                    &x[r * 1024..(r + 1) * 1024],
                    &mut want[r * row..(r + 1) * row],
                    Some(&w),
                )
                .unwrap();
            }
        }
        let want = want.as_slice();
        assert!(
            f.data(t) == want,
            "{} ({}): bytes differ from ggml's{}",
            t.name,
            t.ty,
            if with_imatrix { " (with imatrix)" } else { "" }
        );
        seen.push(t.ty);
    }
    seen
}

/// The mixes, each with the types its rules give this one-layer model.
const MIXES: &[Mix] = &[
    Mix::Q2K,
    Mix::Q3KS,
    Mix::Q3KM,
    Mix::Q3KL,
    Mix::Q4KS,
    Mix::Q4KM,
    Mix::Q5KS,
    Mix::Q5KM,
    Mix::Q6K,
    Mix::Q8_0,
    Mix::Q4_0,
    Mix::Q4_1,
    Mix::Q5_0,
    Mix::Q5_1,
    Mix::IQ4NL,
    Mix::IQ4XS,
    Mix::MXFP4Moe,
    Mix::F16,
    Mix::BF16,
    Mix::F32,
];

#[test]
fn every_mix_reproduces_ggml_bytes() {
    let dir = tmp_dir("mixes");
    let (x, _) = reference_x();
    let input = dir.join("in.gguf");
    write_model(&input, &x, true);
    for &mix in MIXES {
        let out = dir.join(format!("{mix}.gguf"));
        run(&input, &out, &Options::new(mix));
        let types = assert_matches_ggml(&out, false);
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.metadata().u32("general.file_type").unwrap(), mix.ftype());
        // The mix's own type is among those written (the expert tensor for MXFP4).
        assert!(types.contains(&mix.default_type()), "{mix}: {types:?}");
    }
    // Spot checks of the rules on this model (one layer: use_more_bits is true for it).
    let types = |mix: Mix| -> HashMap<String, GgmlType> {
        let f = GgufFile::open(dir.join(format!("{mix}.gguf"))).unwrap();
        f.tensors().iter().map(|t| (t.name.clone(), t.ty)).collect()
    };
    let q4km = types(Mix::Q4KM);
    assert_eq!(q4km["output.weight"], GgmlType::Q6K);
    assert_eq!(q4km["blk.0.attn_v.weight"], GgmlType::Q6K);
    assert_eq!(q4km["blk.0.ffn_down.weight"], GgmlType::Q6K);
    assert_eq!(q4km["blk.0.attn_q.weight"], GgmlType::Q4K);
    let q3km = types(Mix::Q3KM);
    assert_eq!(q3km["blk.0.attn_v.weight"], GgmlType::Q5K);
    assert_eq!(q3km["blk.0.attn_output.weight"], GgmlType::Q4K);
    assert_eq!(types(Mix::Q2K)["blk.0.ffn_down.weight"], GgmlType::Q3K);
    let mx = types(Mix::MXFP4Moe);
    assert_eq!(mx["blk.0.ffn_up_exps.weight"], GgmlType::MXFP4);
    assert_eq!(mx["blk.0.attn_q.weight"], GgmlType::Q8_0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pure_single_types_reproduce_ggml_bytes() {
    let dir = tmp_dir("pure");
    let (x, _) = reference_x();
    let input = dir.join("in.gguf");
    write_model(&input, &x, false);
    for mix in [Mix::Q4_0, Mix::Q4KM, Mix::Q6K, Mix::IQ4XS, Mix::Q5_1] {
        let out = dir.join(format!("{mix}.gguf"));
        let mut o = Options::new(mix);
        o.select.pure = true;
        run(&input, &out, &o);
        let types = assert_matches_ggml(&out, false);
        assert!(
            types.iter().all(|&t| t == mix.default_type()),
            "{mix}: {types:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn imatrix_files_in_both_forms_reproduce_ggml_bytes() {
    let dir = tmp_dir("imatrix");
    let (x, weights) = reference_x();
    let input = dir.join("in.gguf");
    let names = write_model(&input, &x, true);
    // Each expert has its own weights: the second expert's are the first's reversed.
    let reversed: Vec<f32> = weights.iter().rev().copied().collect();
    let entries: Vec<(&str, Vec<f32>)> = names
        .iter()
        .map(|n| {
            let mut w = weights.clone();
            if n.contains("_exps") {
                w.extend_from_slice(&reversed);
            }
            (n.as_str(), w)
        })
        .collect();
    let gguf = dir.join("imatrix.gguf");
    let dat = dir.join("imatrix.dat");
    write_imatrix_gguf(&gguf, &entries);
    write_imatrix_dat(&dat, &entries);
    for (file, datasets) in [(&gguf, "calibration.txt"), (&dat, "dat")] {
        let m = Imatrix::load(file).unwrap();
        assert_eq!(m.entries.len(), names.len());
        assert_eq!(m.get("blk.0.attn_q.weight").unwrap(), weights.as_slice());
        assert_eq!(
            m.get("blk.0.ffn_up_exps.weight").unwrap()[1024..],
            reversed[..]
        );
        assert_eq!(m.chunk_count, 7);
        for mix in [
            Mix::Q4KM,
            Mix::Q3KS,
            Mix::Q2K,
            Mix::IQ4XS,
            Mix::Q4_0,
            Mix::MXFP4Moe,
        ] {
            let out = dir.join(format!("{mix}-i.gguf"));
            let mut o = Options::new(mix);
            o.imatrix = Some((m.clone(), file.display().to_string()));
            run(&input, &out, &o);
            assert_matches_ggml(&out, true);
            let f = GgufFile::open(&out).unwrap();
            let md = f.metadata();
            assert_eq!(
                md.opt_str("quantize.imatrix.file").unwrap(),
                Some(file.display().to_string().as_str())
            );
            assert_eq!(
                md.opt_str("quantize.imatrix.dataset").unwrap(),
                Some(datasets)
            );
            assert_eq!(
                md.u32("quantize.imatrix.entries_count").unwrap(),
                names.len() as u32
            );
            assert_eq!(md.u32("quantize.imatrix.chunks_count").unwrap(), 7);
            std::fs::remove_file(&out).unwrap();
        }
    }
    // IQ2_XXS is refused without one, as llama-quantize refuses it.
    let f = GgufFile::open(&input).unwrap();
    let e = quantize::plan(&f, &Options::new(Mix::IQ2XXS))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("IQ2_XXS") && e.contains("importance matrix"),
        "{e}"
    );

    // With an imatrix, Q4_0 guards ffn_down of the first eighth of the layers with Q4_1 (of
    // one layer: none), and a wrong-sized entry is an error naming the sizes.
    let mut bad = Imatrix::load(&gguf).unwrap();
    bad.entries
        .insert("blk.0.attn_q.weight".into(), vec![1.0; 512]);
    let mut o = Options::new(Mix::Q4KM);
    o.imatrix = Some((bad, "bad".into()));
    let f = GgufFile::open(&input).unwrap();
    let e = quantize::plan(&f, &o).unwrap_err().to_string();
    assert!(e.contains("512") && e.contains("1024"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn output_does_not_depend_on_threads() {
    let dir = tmp_dir("threads");
    let input = common::reference("models/tiny-qwen3-q5_k_m.gguf");
    let mut bytes = Vec::new();
    for threads in [1, 3] {
        let out = dir.join(format!("t{threads}.gguf"));
        let mut o = Options::new(Mix::Q4KM);
        o.threads = threads;
        run(&input, &out, &o);
        bytes.push(std::fs::read(&out).unwrap());
    }
    assert!(
        bytes[0] == bytes[1],
        "1 and 3 threads wrote different files"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Dequantizes a whole tensor.
fn dequantize(f: &GgufFile, name: &str) -> Vec<f32> {
    let t = f.require(name).unwrap();
    let n_per_row = t.shape[0] as usize;
    let data = f.data(t);
    let row = t.ty.row_bytes(n_per_row as u64).unwrap() as usize;
    let mut out = vec![0f32; t.n_elements() as usize];
    for (d, s) in out.chunks_exact_mut(n_per_row).zip(data.chunks_exact(row)) {
        if t.ty == GgmlType::F32 {
            d.copy_from_slice(&f32s(s));
        } else {
            quant::dequantize_row(t.ty, s, d).unwrap();
        }
    }
    out
}

#[test]
fn f32_base_is_lossless_and_requantizes_like_the_original() {
    let dir = tmp_dir("f32");
    let src_path = common::reference("models/tiny-llama3-q3_k_m.gguf");
    let base = dir.join("base.gguf");
    run(&src_path, &base, &Options::new(Mix::F32));
    let src = GgufFile::open(&src_path).unwrap();
    let f = GgufFile::open(&base).unwrap();
    assert_eq!(f.metadata().u32("general.file_type").unwrap(), 0);
    assert_eq!(f.tensors().len(), src.tensors().len());
    for t in src.tensors() {
        let b = f.require(&t.name).unwrap();
        assert_eq!(b.ty, GgmlType::F32, "{}", t.name);
        assert_eq!(b.shape, t.shape);
        let (a, b) = (dequantize(&src, &t.name), dequantize(&f, &t.name));
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{}: F32 base differs from the dequantized original",
            t.name
        );
    }
    // The metadata is the original's, in order, with file_type moved to the end.
    let keys =
        |f: &GgufFile| -> Vec<String> { f.metadata().iter().map(|(k, _)| k.to_string()).collect() };
    assert_eq!(keys(&f), keys(&src));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn strait(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn cli_errors_are_clear_and_leave_nothing_behind() {
    let dir = tmp_dir("cli");
    let (x, _) = reference_x();
    let input = dir.join("in.gguf");
    write_model(&input, &x, false);
    let inp = input.to_str().unwrap();
    let out = dir.join("out.gguf");
    let outp = out.to_str().unwrap();

    let (ok, text) = strait(&["quantize", inp, outp, "Q4_Z"]);
    assert!(!ok);
    assert!(
        text.contains("unknown quantization type") && text.contains("Q4_K_M"),
        "{text}"
    );
    assert!(!out.exists());

    let (ok, text) = strait(&["quantize", inp, inp, "Q8_0", "--force"]);
    assert!(!ok && text.contains("is the input file"), "{text}");

    let (ok, text) = strait(&["quantize", inp, outp, "Q8_0", "--threads", "2"]);
    assert!(ok, "{text}");
    assert!(text.contains("bpw"), "{text}");
    let (ok, text) = strait(&["quantize", inp, outp, "Q8_0"]);
    assert!(
        !ok && text.contains("already exists") && text.contains("--force"),
        "{text}"
    );
    let (ok, text) = strait(&["quantize", inp, outp, "Q6_K", "--force"]);
    assert!(ok, "{text}");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.metadata().u32("general.file_type").unwrap(), 18);

    // --imatrix in both forms, and a file that is neither.
    let (_, weights) = reference_x();
    let names = write_model(&input, &x, false);
    let entries: Vec<(&str, Vec<f32>)> = names
        .iter()
        .map(|n| (n.as_str(), weights.clone()))
        .collect();
    let (ig, id) = (dir.join("i.gguf"), dir.join("i.dat"));
    write_imatrix_gguf(&ig, &entries);
    write_imatrix_dat(&id, &entries);
    for i in [&ig, &id] {
        let (ok, text) = strait(&[
            "quantize",
            inp,
            outp,
            "IQ4_XS",
            "--force",
            "--imatrix",
            i.to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        assert!(text.contains("6 entries"), "{text}");
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(
            f.metadata().u32("quantize.imatrix.entries_count").unwrap(),
            6
        );
    }
    std::fs::write(dir.join("junk.dat"), b"not an imatrix").unwrap();
    let junk = dir.join("junk.dat");
    let (ok, text) = strait(&[
        "quantize",
        inp,
        outp,
        "IQ4_XS",
        "--force",
        "--imatrix",
        junk.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("junk.dat"), "{text}");

    // A value F16 cannot hold, and a NaN: an error naming the tensor, no file left.
    let mut big = x.clone();
    big[5 * 1024 + 3] = 1.0e6;
    let input2 = dir.join("big.gguf");
    write_model(&input2, &big, false);
    let out2 = dir.join("out2.gguf");
    let (ok, text) = strait(&[
        "quantize",
        input2.to_str().unwrap(),
        out2.to_str().unwrap(),
        "F16",
    ]);
    assert!(
        !ok && text.contains("row 5") && text.contains("F16 cannot represent"),
        "{text}"
    );
    let mut nan = x.clone();
    nan[7] = f32::NAN;
    write_model(&input2, &nan, false);
    let (ok, text) = strait(&[
        "quantize",
        input2.to_str().unwrap(),
        out2.to_str().unwrap(),
        "Q4_K_M",
    ]);
    assert!(!ok && text.contains("NaN"), "{text}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !left.iter().any(|n| n.starts_with("out2")),
        "left behind: {left:?}"
    );

    // Rows that fit no type of the mix (40 values for Q8_0).
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("llama".into()));
    md.set("llama.block_count", Value::U32(1));
    let mut w = GgufWriter::new(md).unwrap();
    w.add_tensor(
        "blk.0.attn_q.weight",
        GgmlType::F32,
        &[40, 2],
        vec![0u8; 320],
    )
    .unwrap();
    let odd = dir.join("odd.gguf");
    w.write_to_path(&odd).unwrap();
    let (ok, text) = strait(&[
        "quantize",
        odd.to_str().unwrap(),
        out2.to_str().unwrap(),
        "Q8_0",
    ]);
    assert!(
        !ok && text.contains("40") && text.contains("no fallback"),
        "{text}"
    );
    assert!(!out2.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn f16_and_bf16_inputs_are_converted_exactly() {
    let dir = tmp_dir("half");
    for ty in [GgmlType::F16, GgmlType::BF16] {
        let r = Reference::open(ty);
        let (xq, xdq) = (r.bytes("x.q").unwrap(), f32s(r.bytes("x.dq").unwrap()));
        let mut md = Metadata::new();
        md.set("general.architecture", Value::String("llama".into()));
        md.set("llama.block_count", Value::U32(1));
        let mut w = GgufWriter::new(md).unwrap();
        w.add_tensor("blk.0.attn_q.weight", ty, &[1024, 20], xq.to_vec())
            .unwrap();
        let input = dir.join(format!("{ty}.gguf"));
        w.write_to_path(&input).unwrap();
        for mix in [Mix::Q8_0, Mix::Q4KM, Mix::F32, Mix::F16, Mix::BF16] {
            let out = dir.join(format!("{ty}-{mix}.gguf"));
            run(&input, &out, &Options::new(mix));
            let f = GgufFile::open(&out).unwrap();
            let t = f.require("blk.0.attn_q.weight").unwrap();
            let to = mix.default_type();
            assert_eq!(t.ty, to);
            let mut want = vec![0u8; to.row_bytes(1024 * 20).unwrap() as usize];
            let row = want.len() / 20;
            for (d, s) in want.chunks_exact_mut(row).zip(xdq.chunks_exact(1024)) {
                if to == GgmlType::F32 {
                    d.copy_from_slice(&f32_bytes(s));
                } else {
                    quant::quantize_row(to, s, d, None).unwrap();
                }
            }
            assert!(f.data(t) == want.as_slice(), "{ty} -> {mix}");
            if to == ty {
                assert!(f.data(t) == xq, "{ty} -> {mix}: not copied");
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
