//! `strait check-reference DIR`

use std::path::PathBuf;
use strait::quant::check::{check_dir, render_table};
use strait::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// A directory of reference .gguf files made by ggml (one per quant type)
    pub dir: PathBuf,
}

/// Prints the table; an error when any check found a mismatch or any file could not be read.
pub fn run(args: Args) -> Result<()> {
    let reports = check_dir(&args.dir, &strait::quant::kernel_paths())?;
    print!("{}", render_table(&reports));
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.file.display().to_string())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{} of {} reference files failed: {}",
            failed.len(),
            reports.len(),
            failed.join(", ")
        )))
    }
}
