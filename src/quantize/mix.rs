//! Quantization mixes: llama.cpp's `llama_ftype`, the value written to `general.file_type`.

use crate::error::{Error, Result};
use crate::quant::GgmlType;
use std::fmt;

/// A file type as llama-quantize names it: one default tensor type plus the rules of the mix
/// (see [`select`](super::select)). The discriminant is the `llama_ftype` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Mix {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 7,
    Q5_0 = 8,
    Q5_1 = 9,
    Q2K = 10,
    Q3KS = 11,
    Q3KM = 12,
    Q3KL = 13,
    Q4KS = 14,
    Q4KM = 15,
    Q5KS = 16,
    Q5KM = 17,
    Q6K = 18,
    IQ2XXS = 19,
    IQ2XS = 20,
    Q2KS = 21,
    IQ3XS = 22,
    IQ3XXS = 23,
    IQ1S = 24,
    IQ4NL = 25,
    IQ3S = 26,
    IQ3M = 27,
    IQ2S = 28,
    IQ2M = 29,
    IQ4XS = 30,
    IQ1M = 31,
    BF16 = 32,
    TQ1_0 = 36,
    TQ2_0 = 37,
    MXFP4Moe = 38,
    NVFP4 = 39,
    Q1_0 = 40,
}

/// Every mix with its name, in the order llama-quantize lists them.
const NAMES: &[(&str, Mix)] = &[
    ("Q1_0", Mix::Q1_0),
    ("Q4_0", Mix::Q4_0),
    ("Q4_1", Mix::Q4_1),
    ("MXFP4_MOE", Mix::MXFP4Moe),
    ("NVFP4", Mix::NVFP4),
    ("Q5_0", Mix::Q5_0),
    ("Q5_1", Mix::Q5_1),
    ("IQ2_XXS", Mix::IQ2XXS),
    ("IQ2_XS", Mix::IQ2XS),
    ("IQ2_S", Mix::IQ2S),
    ("IQ2_M", Mix::IQ2M),
    ("IQ1_S", Mix::IQ1S),
    ("IQ1_M", Mix::IQ1M),
    ("TQ1_0", Mix::TQ1_0),
    ("TQ2_0", Mix::TQ2_0),
    ("Q2_K", Mix::Q2K),
    ("Q2_K_S", Mix::Q2KS),
    ("IQ3_XXS", Mix::IQ3XXS),
    ("IQ3_S", Mix::IQ3S),
    ("IQ3_M", Mix::IQ3M),
    ("IQ3_XS", Mix::IQ3XS),
    ("Q3_K_S", Mix::Q3KS),
    ("Q3_K_M", Mix::Q3KM),
    ("Q3_K_L", Mix::Q3KL),
    ("IQ4_NL", Mix::IQ4NL),
    ("IQ4_XS", Mix::IQ4XS),
    ("Q4_K_S", Mix::Q4KS),
    ("Q4_K_M", Mix::Q4KM),
    ("Q5_K_S", Mix::Q5KS),
    ("Q5_K_M", Mix::Q5KM),
    ("Q6_K", Mix::Q6K),
    ("Q8_0", Mix::Q8_0),
    ("F16", Mix::F16),
    ("BF16", Mix::BF16),
    ("F32", Mix::F32),
];

/// Other spellings llama-quantize accepts.
const ALIASES: &[(&str, Mix)] = &[
    ("Q3_K", Mix::Q3KM),
    ("Q4_K", Mix::Q4KM),
    ("Q5_K", Mix::Q5KM),
    ("MXFP4", Mix::MXFP4Moe),
];

impl Mix {
    /// Every mix, in the order llama-quantize lists them.
    pub fn all() -> impl Iterator<Item = Mix> {
        NAMES.iter().map(|&(_, m)| m)
    }

    /// The `llama_ftype` value, written as `general.file_type`.
    pub fn ftype(self) -> u32 {
        self as u32
    }

    /// The mix with this `llama_ftype` value.
    pub fn from_ftype(v: u32) -> Option<Mix> {
        Self::all().find(|m| m.ftype() == v)
    }

    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|&&(_, m)| m == self)
            .map(|&(n, _)| n)
            .unwrap_or("?")
    }

    /// Parses a mix name (any case, with the aliases `Q3_K`, `Q4_K`, `Q5_K`, `MXFP4`) or a
    /// `llama_ftype` number. The error lists the valid names.
    pub fn parse(s: &str) -> Result<Mix> {
        let found = NAMES
            .iter()
            .chain(ALIASES)
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|&(_, m)| m)
            .or_else(|| s.parse::<u32>().ok().and_then(Mix::from_ftype));
        found.ok_or_else(|| {
            let names: Vec<&str> = NAMES.iter().map(|&(n, _)| n).collect();
            Error::Invalid(format!(
                "unknown quantization type {s:?}; valid types: {} (aliases: Q3_K, Q4_K, Q5_K, MXFP4)",
                names.join(", ")
            ))
        })
    }

    /// The type most tensors get (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        use GgmlType as T;
        match self {
            Mix::F32 => T::F32,
            Mix::F16 => T::F16,
            Mix::BF16 => T::BF16,
            Mix::Q4_0 => T::Q4_0,
            Mix::Q4_1 => T::Q4_1,
            Mix::Q5_0 => T::Q5_0,
            Mix::Q5_1 => T::Q5_1,
            Mix::Q8_0 => T::Q8_0,
            Mix::Q1_0 => T::Q1_0,
            Mix::MXFP4Moe => T::MXFP4,
            Mix::NVFP4 => T::NVFP4,
            Mix::Q2KS | Mix::Q2K => T::Q2K,
            Mix::IQ3XS => T::IQ3S,
            Mix::Q3KS | Mix::Q3KM | Mix::Q3KL => T::Q3K,
            Mix::Q4KS | Mix::Q4KM => T::Q4K,
            Mix::Q5KS | Mix::Q5KM => T::Q5K,
            Mix::Q6K => T::Q6K,
            Mix::TQ1_0 => T::TQ1_0,
            Mix::TQ2_0 => T::TQ2_0,
            Mix::IQ2XXS => T::IQ2XXS,
            Mix::IQ2XS | Mix::IQ2S => T::IQ2XS,
            Mix::IQ2M => T::IQ2S,
            Mix::IQ3XXS => T::IQ3XXS,
            Mix::IQ1S => T::IQ1S,
            Mix::IQ1M => T::IQ1M,
            Mix::IQ4NL => T::IQ4NL,
            Mix::IQ4XS => T::IQ4XS,
            Mix::IQ3S | Mix::IQ3M => T::IQ3S,
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ids_and_aliases() {
        for m in Mix::all() {
            assert_eq!(Mix::parse(m.name()).unwrap(), m);
            assert_eq!(Mix::parse(&m.ftype().to_string()).unwrap(), m);
            assert_eq!(Mix::from_ftype(m.ftype()), Some(m));
        }
        assert_eq!(Mix::parse("q4_k").unwrap(), Mix::Q4KM);
        assert_eq!(Mix::parse("Q4_K_M").unwrap().ftype(), 15);
        assert_eq!(Mix::parse("Q3_K_M").unwrap().ftype(), 12);
        assert_eq!(Mix::parse("mxfp4").unwrap().ftype(), 38);
        assert_eq!(Mix::parse("IQ4_XS").unwrap().ftype(), 30);
        assert_eq!(Mix::parse("BF16").unwrap().ftype(), 32);
        let e = Mix::parse("Q4_Z").unwrap_err().to_string();
        assert!(
            e.contains("Q4_Z") && e.contains("Q4_K_M") && e.contains("IQ4_XS"),
            "{e}"
        );
    }
}
