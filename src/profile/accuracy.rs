//! Quantization error: rows are quantized to a type, dequantized, and compared with the input.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::quant::{self, GgmlType, Kernels};

/// Sums from which the error figures follow; rows add up, so one tensor or a whole model
/// gives one figure.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorStats {
    /// Values compared.
    pub n: u64,
    pub sum_sq_err: f64,
    pub sum_sq: f64,
    pub max_abs: f64,
}

impl ErrorStats {
    pub fn add_row(&mut self, x: &[f32], y: &[f32]) {
        for (&a, &b) in x.iter().zip(y) {
            let d = (a as f64 - b as f64).abs();
            self.sum_sq_err += d * d;
            self.sum_sq += a as f64 * a as f64;
            self.max_abs = self.max_abs.max(d);
        }
        self.n += x.len().min(y.len()) as u64;
    }

    pub fn merge(&mut self, o: &ErrorStats) {
        self.n += o.n;
        self.sum_sq_err += o.sum_sq_err;
        self.sum_sq += o.sum_sq;
        self.max_abs = self.max_abs.max(o.max_abs);
    }

    /// Root mean square error.
    pub fn rmse(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        (self.sum_sq_err / self.n as f64).sqrt()
    }

    /// ‖x − dq(q(x))‖ / ‖x‖: the error relative to the data's own size.
    pub fn relative(&self) -> f64 {
        if self.sum_sq == 0.0 {
            return 0.0;
        }
        (self.sum_sq_err / self.sum_sq).sqrt()
    }
}

/// The types whose quantizer llama.cpp refuses to run without an importance matrix
/// (ggml asserts `quant_weights` for them); a uniform one stands in.
pub fn needs_imatrix(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::IQ2XXS | GgmlType::IQ2XS | GgmlType::IQ1S)
}

/// The kernels used to measure `ty`'s error, or why it cannot be measured.
pub fn kernels_for(ty: GgmlType) -> std::result::Result<Kernels, String> {
    let k = quant::scalar(ty).ok_or_else(|| format!("{ty} has no kernels in this build"))?;
    if k.quantize.is_none() {
        return Err(format!("{ty} has no quantizer in this build"));
    }
    if k.dequantize.is_none() {
        return Err(format!("{ty} has no dequantizer in this build"));
    }
    Ok(k)
}

/// Quantizes each row of `n` values of `data` to `ty` and back; `data.len()` is a multiple of
/// `n`, and `n` of the block size (checked).
pub fn row_error(ty: GgmlType, data: &[f32], n: usize) -> Result<ErrorStats> {
    let k = kernels_for(ty).map_err(Error::Unsupported)?;
    let (Some(quantize), Some(dequantize)) = (k.quantize, k.dequantize) else {
        return Err(Error::Unsupported(format!("{ty} cannot round-trip")));
    };
    let row_bytes = ty
        .row_bytes(n as u64)
        .filter(|_| n > 0 && data.len().is_multiple_of(n))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{} values in rows of {n} do not fit {ty} blocks of {}",
                data.len(),
                ty.block_size()
            ))
        })? as usize;
    let ones = vec![1.0f32; n];
    let imatrix = needs_imatrix(ty).then_some(&ones[..]);
    let mut q = vec![0u8; row_bytes];
    let mut y = vec![0f32; n];
    let mut s = ErrorStats::default();
    for x in data.chunks_exact(n) {
        quantize(x, &mut q, imatrix);
        dequantize(&q, &mut y);
        s.add_row(x, &y);
    }
    Ok(s)
}

/// Rows of a model's weight matrices, dequantized to f32: up to `max_rows` rows of each 2-d
/// (or higher) tensor whose type strait can dequantize, spread evenly over the tensor.
pub struct ModelRows {
    /// (tensor name, row length, rows one after another).
    pub tensors: Vec<(String, usize, Vec<f32>)>,
    /// Tensors left out, and why.
    pub skipped: Vec<String>,
}

impl ModelRows {
    pub fn load(file: &GgufFile, max_rows: usize) -> Result<ModelRows> {
        let mut tensors = Vec::new();
        let mut skipped = Vec::new();
        for t in file.tensors() {
            if t.shape.iter().filter(|&&d| d > 1).count() < 2 || !t.name.ends_with(".weight") {
                continue;
            }
            let deq = quant::scalar(t.ty).and_then(|k| k.dequantize);
            let Some(deq) = deq else {
                skipped.push(format!("{} ({} cannot be dequantized)", t.name, t.ty));
                continue;
            };
            let (n, rows) = (t.row_len() as usize, t.n_rows() as usize);
            let rb = t.row_bytes() as usize;
            let data = file.data(t);
            if n == 0
                || rows == 0
                || t.ty.row_bytes(n as u64) != Some(rb as u64)
                || data.len() < rb.saturating_mul(rows)
            {
                skipped.push(format!("{} (data shorter than its shape)", t.name));
                continue;
            }
            let take = rows.min(max_rows.max(1));
            let mut out = vec![0f32; take * n];
            for (i, dst) in out.chunks_exact_mut(n).enumerate() {
                let r = i * rows / take;
                deq(&data[r * rb..(r + 1) * rb], dst);
            }
            tensors.push((t.name.clone(), n, out));
        }
        Ok(ModelRows { tensors, skipped })
    }

    /// The error of `ty` over every tensor whose rows are a whole number of its blocks, and
    /// the tensors (by count) that do not fit.
    pub fn error(&self, ty: GgmlType) -> Result<(ErrorStats, usize)> {
        let mut total = ErrorStats::default();
        let mut unfit = 0;
        for (_, n, rows) in &self.tensors {
            if n % ty.block_size() != 0 {
                unfit += 1;
                continue;
            }
            total.merge(&row_error(ty, rows, *n)?);
        }
        Ok((total, unfit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_a_known_difference() {
        let mut s = ErrorStats::default();
        s.add_row(&[3.0, 4.0], &[3.0, 2.0]);
        assert_eq!(s.n, 2);
        assert!((s.rmse() - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(s.max_abs, 2.0);
        assert!((s.relative() - 0.4).abs() < 1e-12);
    }

    #[test]
    fn q8_0_error_is_small_and_rows_must_fit() {
        let x = crate::profile::rng::Rng::new(1).gaussians(4 * 256);
        let s = row_error(GgmlType::Q8_0, &x, 256).unwrap();
        assert!(
            s.relative() > 0.0 && s.relative() < 0.01,
            "{}",
            s.relative()
        );
        assert!(row_error(GgmlType::Q4K, &x, 128).is_err());
    }
}
