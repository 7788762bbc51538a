//! Kernel paths chosen once at run time from the CPU's features.
//!
//! Each path (`avx2`, `avx512`) provides the kernels it has; the table a program uses takes every
//! kernel from the best path that has it and falls back to the scalar reference code, which is
//! compiled on every target. `STRAIT_CPU=scalar|avx2|avx512` forces a path, so tests and benches
//! can run every path this CPU supports.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;

use super::{GgmlType, Kernels};
use crate::error::{Error, Result};
use std::sync::OnceLock;

/// A kernel path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    Scalar,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// AVX-512 F, BW, VL and VNNI (with AVX2).
    Avx512,
}

impl Path {
    pub const ALL: [Path; 3] = [Path::Scalar, Path::Avx2, Path::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Path::Scalar => "scalar",
            Path::Avx2 => "avx2",
            Path::Avx512 => "avx512",
        }
    }

    pub fn from_name(s: &str) -> Option<Path> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            Path::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => x86_64::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => x86_64::has_avx512(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The kernels this path itself has for `ty` (fields are `None` where it has none).
    pub fn own_kernels(self, ty: GgmlType) -> Option<Kernels> {
        if !self.is_supported() {
            return None;
        }
        match self {
            Path::Scalar => super::scalar(ty),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => x86_64::avx2::kernels(ty),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => x86_64::avx512::kernels(ty),
            #[cfg(not(target_arch = "x86_64"))]
            _ => None,
        }
    }

    /// The full table for `ty` on this path: each kernel from this path if it has it, else
    /// from the paths below it, down to the scalar code.
    pub fn kernels(self, ty: GgmlType) -> Option<Kernels> {
        let mut k = super::scalar(ty)?;
        for p in Self::ALL
            .into_iter()
            .filter(|&p| p != Path::Scalar && p <= self)
        {
            if let Some(own) = p.own_kernels(ty) {
                k.dequantize = own.dequantize.or(k.dequantize);
                k.quantize = own.quantize.or(k.quantize);
                k.vec_dot = own.vec_dot.or(k.vec_dot);
            }
        }
        Some(k)
    }
}

/// Every path this CPU supports, scalar first.
pub fn supported() -> Vec<Path> {
    Path::ALL.into_iter().filter(|p| p.is_supported()).collect()
}

/// The path in use: `STRAIT_CPU` if set, else the best the CPU supports.
pub fn select() -> Result<Path> {
    match std::env::var("STRAIT_CPU") {
        Ok(name) if !name.is_empty() => {
            let p = Path::from_name(&name).ok_or_else(|| {
                Error::Invalid(format!(
                    "STRAIT_CPU={name}: expected scalar, avx2 or avx512"
                ))
            })?;
            if !p.is_supported() {
                return Err(Error::Invalid(format!(
                    "STRAIT_CPU={name}: this CPU does not support the {name} path (supported: {})",
                    supported()
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Ok(p)
        }
        _ => Ok(*supported().last().unwrap_or(&Path::Scalar)),
    }
}

static SELECTED: OnceLock<Path> = OnceLock::new();

/// The path chosen once for this process (an unusable `STRAIT_CPU` falls back to the best
/// supported path; `select` reports it as an error for the CLI to print).
pub fn selected() -> Path {
    *SELECTED
        .get_or_init(|| select().unwrap_or_else(|_| *supported().last().unwrap_or(&Path::Scalar)))
}

static TABLE: OnceLock<Vec<Option<Kernels>>> = OnceLock::new();

/// The kernels of `ty` on the selected path, from a table built once.
pub fn kernels(ty: GgmlType) -> Option<Kernels> {
    let table = TABLE.get_or_init(|| {
        let path = selected();
        let max_id = GgmlType::ALL.iter().map(|t| t.id()).max().unwrap_or(0) as usize;
        let mut v = vec![None; max_id + 1];
        for t in GgmlType::ALL {
            v[t.id() as usize] = path.kernels(t);
        }
        v
    });
    table.get(ty.id() as usize).copied().flatten()
}

/// The CPU features that matter to strait, with whether this CPU has them.
pub fn cpu_features() -> Vec<(&'static str, bool)> {
    #[cfg(target_arch = "x86_64")]
    {
        x86_64::features()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_table_is_complete_where_scalar_is() {
        for p in supported() {
            for ty in GgmlType::ALL {
                let (full, scalar) = (p.kernels(ty), crate::quant::scalar(ty));
                assert_eq!(full.is_some(), scalar.is_some(), "{} {ty}", p.name());
                if let (Some(f), Some(s)) = (full, scalar) {
                    assert_eq!(f.dot_type, s.dot_type);
                    assert_eq!(f.dequantize.is_some(), s.dequantize.is_some());
                    assert_eq!(f.vec_dot.is_some(), s.vec_dot.is_some());
                }
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for p in Path::ALL {
            assert_eq!(Path::from_name(p.name()), Some(p));
        }
        assert_eq!(Path::from_name("neon"), None);
    }
}
