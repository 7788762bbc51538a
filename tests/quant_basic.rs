//! Every kernel of the types in float, legacy, fp4, iq4 and ternary against ggml's reference
//! vectors in ../shared/reference/quant, on every kernel path this CPU runs.

mod common;

use common::check_quant;
use strait::quant::GgmlType;

#[test]
fn f32() {
    assert_eq!(
        check_quant(GgmlType::F32),
        ["dequantize", "quantize_imatrix"]
    );
}

#[test]
fn f16() {
    assert_eq!(check_quant(GgmlType::F16), ["quantize_imatrix"]);
}

#[test]
fn bf16() {
    assert_eq!(check_quant(GgmlType::BF16), ["quantize_imatrix"]);
}

#[test]
fn q4_0() {
    assert_eq!(check_quant(GgmlType::Q4_0), Vec::<&str>::new());
}

#[test]
fn q4_1() {
    assert_eq!(check_quant(GgmlType::Q4_1), Vec::<&str>::new());
}

#[test]
fn q5_0() {
    assert_eq!(check_quant(GgmlType::Q5_0), Vec::<&str>::new());
}

#[test]
fn q5_1() {
    assert_eq!(check_quant(GgmlType::Q5_1), Vec::<&str>::new());
}

#[test]
fn q8_0() {
    assert_eq!(check_quant(GgmlType::Q8_0), Vec::<&str>::new());
}

#[test]
fn q8_1() {
    // A dot type only: ggml has no Q8_1 dequantizer and no importance-matrix quantizer.
    assert_eq!(
        check_quant(GgmlType::Q8_1),
        ["dequantize", "quantize_imatrix"]
    );
}

#[test]
fn q1_0() {
    assert_eq!(check_quant(GgmlType::Q1_0), Vec::<&str>::new());
}

#[test]
fn q2_0() {
    assert_eq!(check_quant(GgmlType::Q2_0), Vec::<&str>::new());
}

#[test]
fn mxfp4() {
    assert_eq!(check_quant(GgmlType::MXFP4), Vec::<&str>::new());
}

#[test]
fn nvfp4() {
    assert_eq!(check_quant(GgmlType::NVFP4), Vec::<&str>::new());
}

/// IQ4_XS, TQ1_0 and TQ2_0 take Q8_K activations, whose quantizer belongs to the k-quants:
/// where it is missing the activation check is skipped, and only then.
fn without_q8k() -> Vec<&'static str> {
    match strait::quant::scalar(GgmlType::Q8K).and_then(|k| k.quantize) {
        Some(_) => vec![],
        None => vec!["activation"],
    }
}

#[test]
fn iq4_nl() {
    assert_eq!(check_quant(GgmlType::IQ4NL), Vec::<&str>::new());
}

#[test]
fn iq4_xs() {
    assert_eq!(check_quant(GgmlType::IQ4XS), without_q8k());
}

#[test]
fn tq1_0() {
    assert_eq!(check_quant(GgmlType::TQ1_0), without_q8k());
}

#[test]
fn tq2_0() {
    assert_eq!(check_quant(GgmlType::TQ2_0), without_q8k());
}
