//! The streaming executor's schedule on the host device, with a synthetic compute that
//! checksums the weights it is given and sleeps: right bytes in every slot, no slot written
//! while read, no slot read before its copy completed, arena within the budget, copies
//! overlapped with compute, for every number of resident layers.

use std::time::Duration;
use strait::engine::plan::{
    plan_placement, KvType, ModelShape, Offload, Place, PlanRequest, Rates,
};
use strait::engine::stream::{
    with_host_device, Device, Executor, Label, Span, SpanKind, Timeline, Weights,
};
use strait::gguf::{Metadata, TensorInfo, Value};
use strait::quant::GgmlType;

const N_LAYER: usize = 6;

fn tensor(name: &str, shape: &[u64]) -> TensorInfo {
    TensorInfo {
        name: name.into(),
        ty: GgmlType::F32,
        shape: shape.to_vec(),
        offset: 0,
        size: shape.iter().product::<u64>() * 4,
        shard: 0,
    }
}

/// A llama-shaped header with layers of about 4 MiB (two tensors of unequal size, so images
/// have inner offsets) and a smaller head.
fn shape() -> ModelShape {
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("llama".into()));
    md.set("llama.block_count", Value::U32(N_LAYER as u32));
    md.set("llama.embedding_length", Value::U32(64));
    md.set("llama.feed_forward_length", Value::U32(128));
    md.set("llama.attention.head_count", Value::U32(4));
    let mut ts = vec![tensor("token_embd.weight", &[64, 100])];
    for il in 0..N_LAYER {
        // Layer sizes differ a little so the slots hold the largest.
        ts.push(tensor(
            &format!("blk.{il}.attn_norm.weight"),
            &[64 + il as u64],
        ));
        ts.push(tensor(&format!("blk.{il}.ffn_up.weight"), &[64, 16384]));
    }
    ts.push(tensor("output_norm.weight", &[64]));
    ts.push(tensor("output.weight", &[64, 1000]));
    ModelShape::from_header(&md, &ts).unwrap()
}

fn req(offload: Offload) -> PlanRequest {
    PlanRequest {
        budget: u64::MAX,
        n_ctx: 256,
        n_ubatch: 16,
        kv: KvType::F16,
        offload,
        rates: Rates::assumed(),
    }
}

/// Pseudo-random bytes for every tensor of every unit.
fn sources(shape: &ModelShape) -> Vec<Vec<Vec<u8>>> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    shape
        .layers
        .iter()
        .chain([&shape.head])
        .map(|u| {
            u.tensors
                .iter()
                .map(|t| {
                    (0..t.info.size)
                        .map(|_| {
                            state ^= state << 13;
                            state ^= state >> 7;
                            state ^= state << 17;
                            state as u8
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs `passes` passes of a plan with `resident` layers; returns the timeline and the
/// highest arena byte touched.
fn run(resident: usize, head: bool, offload: Offload, passes: usize) -> (Timeline, u64, u64) {
    let shape = shape();
    let free = plan_placement(&shape, &req(offload), resident, head).unwrap();
    // The budget is exactly the arena: not one byte to spare.
    let r = PlanRequest {
        budget: free.device_total,
        ..req(offload)
    };
    let plan = plan_placement(&shape, &r, resident, head).unwrap();
    assert_eq!(plan.resident_layers(), resident);
    let src = sources(&shape);
    let expected: Vec<Vec<u64>> = src
        .iter()
        .map(|u| u.iter().map(|t| checksum(t)).collect())
        .collect();
    let borrowed: Vec<Vec<&[u8]>> = src
        .iter()
        .map(|u| u.iter().map(|t| t.as_slice()).collect())
        .collect();
    with_host_device(|dev| {
        let mut exec = Executor::new(dev, &plan, borrowed).unwrap();
        let mut order = Vec::new();
        for _ in 0..passes {
            exec.pass(|u, unit, w| {
                order.push(u);
                let got: Vec<u64> = match w {
                    Weights::Bytes(b) => unit
                        .tensors
                        .iter()
                        .map(|t| checksum(&b[t.offset as usize..(t.offset + t.info.size) as usize]))
                        .collect(),
                    Weights::Host => {
                        assert_eq!(plan.placement[u], Place::Cpu);
                        src[u].iter().map(|t| checksum(t)).collect()
                    }
                    Weights::Device { .. } => panic!("the host device hands out bytes"),
                };
                assert_eq!(got, expected[u], "unit {u}: wrong bytes");
                std::thread::sleep(Duration::from_millis(3));
                Ok(())
            })
            .unwrap();
        }
        let units: Vec<usize> = (0..=N_LAYER).collect();
        assert_eq!(order, units.repeat(passes), "units run in order");
        let d = exec.device();
        (d.timeline(), d.high_water(), plan.budget)
    })
}

#[test]
fn every_resident_count_streams_in_order_within_budget() {
    let (mut pairs, mut overlapped, mut overlap_s) = (0, 0, 0.0);
    for resident in 0..=N_LAYER {
        for head in [false, true] {
            let (tl, high, budget) = run(resident, head, Offload::Stream, 3);
            let bad = tl.check();
            assert!(bad.is_empty(), "{resident} resident: {bad:#?}");
            assert!(
                high <= budget,
                "{resident} resident: touched {high} of {budget}"
            );
            let streamed: Vec<usize> = (resident..N_LAYER)
                .chain((!head).then_some(N_LAYER))
                .collect();
            assert_eq!(
                tl.copies().count(),
                resident + usize::from(head) + 3 * streamed.len()
            );
            for pass in 1..=3 {
                for w in streamed.windows(2) {
                    // While unit k computes, the copy of the next streamed unit is queued and
                    // (unless the OS keeps the copy thread off the CPU) runs.
                    let c = tl.compute_of(pass, w[0]).unwrap();
                    let next = tl.copy_of(pass, w[1]).unwrap();
                    assert!(
                        next.issued < c.end,
                        "pass {pass}: copy of {} issued at {} after compute of {} ended at {}",
                        w[1],
                        next.issued,
                        w[0],
                        c.end
                    );
                    pairs += 1;
                    if next.start < c.end {
                        overlapped += 1;
                    }
                }
            }
            overlap_s += tl.summary().overlapped_s;
        }
    }
    // A busy host may delay the copy thread now and then; most copies still run under compute.
    assert!(
        overlapped * 4 >= pairs * 3,
        "only {overlapped} of {pairs} copies started before the compute before them ended"
    );
    assert!(overlap_s > 0.0);
}

#[test]
fn cpu_layers_run_on_the_host_from_the_sources() {
    for resident in [0, 3, N_LAYER] {
        let (tl, high, budget) = run(resident, resident > 0, Offload::Cpu, 2);
        assert!(tl.check().is_empty());
        assert!(high <= budget);
        let host = tl.spans.iter().filter(|s| s.kind == SpanKind::Host).count();
        assert_eq!(host, 2 * (N_LAYER - resident + usize::from(resident == 0)));
        assert!(tl.spans.iter().all(|s| s.label.slot.is_none()));
    }
}

#[test]
fn the_checker_finds_a_slot_read_while_written_and_a_read_before_its_copy() {
    let span = |kind, unit, start: f64, end: f64| Span {
        kind,
        label: Label {
            pass: 1,
            unit,
            slot: Some(0),
        },
        range: Some(0..100),
        issued: start,
        start,
        end,
    };
    let good = Timeline {
        spans: vec![
            span(SpanKind::Copy, 0, 0.0, 1.0),
            span(SpanKind::Compute, 0, 1.0, 2.0),
        ],
        ..Timeline::default()
    };
    assert!(good.check().is_empty());
    let early = Timeline {
        spans: vec![
            span(SpanKind::Copy, 0, 0.0, 1.0),
            span(SpanKind::Compute, 0, 0.5, 2.0),
        ],
        ..Timeline::default()
    };
    // Both: the read began before the copy ended, and they overlap in time on one range.
    assert_eq!(early.check().len(), 2, "{:?}", early.check());
    let overwrite = Timeline {
        spans: vec![
            span(SpanKind::Copy, 0, 0.0, 1.0),
            span(SpanKind::Compute, 0, 1.0, 3.0),
            span(SpanKind::Copy, 2, 2.0, 4.0),
        ],
        ..Timeline::default()
    };
    let bad = overwrite.check();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("copy of unit 2"), "{bad:?}");
}
