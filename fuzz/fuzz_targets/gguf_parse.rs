//! `Header::parse` and the metadata accessors on arbitrary bytes: an `Err` or a header whose
//! every tensor lies inside the input, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait::gguf::{Header, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = Header::parse(data) else {
        return;
    };
    assert!(h.alignment.is_power_of_two());
    assert_eq!(h.data_offset % h.alignment, 0);
    for t in &h.tensors {
        let start = h.data_offset + t.offset;
        assert!(start + t.size <= data.len() as u64, "{t:?} outside {} bytes", data.len());
        assert!((1..=4).contains(&t.shape.len()));
        assert_eq!(t.ty.row_bytes(t.n_elements()), Some(t.size));
        let _ = (t.row_len(), t.n_rows(), t.row_bytes());
    }
    let md = &h.metadata;
    for (key, value) in md.iter() {
        let _ = (md.u32(key), md.u64(key), md.i32(key), md.i64(key), md.usize(key));
        let _ = (md.f32(key), md.opt_bool(key), md.str(key), md.opt_array(key));
        let _ = (md.opt_str_array(key), md.opt_f32_array(key), md.opt_int_array(key));
        let _ = (value.describe(), value.to_string(), value.as_f64());
        if let Value::Array(a) = value {
            let _ = (a.len(), a.elem_type(), a.to_i64_vec());
        }
    }
});
