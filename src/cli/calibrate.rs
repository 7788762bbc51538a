//! `strait calibrate`: measures this machine for the plan's cost model.

use strait::engine::calibrate::{self, Calibration};
use strait::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Bytes read for the memory bandwidth measurement, in MiB
    #[arg(long, default_value_t = 1024)]
    pub read_mib: usize,
    /// Print the result without saving it
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: Args) -> Result<()> {
    let path = calibrate::default_path()
        .ok_or_else(|| Error::Invalid("HOME is not set: nowhere to save the calibration".into()))?;
    if args.read_mib == 0 || args.read_mib > 64 * 1024 {
        return Err(Error::Invalid(format!(
            "--read-mib {} must be between 1 and 65536",
            args.read_mib
        )));
    }
    eprintln!("measuring host memory and CPU matmul throughput...");
    let mut c = calibrate::calibrate_host(args.read_mib << 20, 1024, calibrate::MIN_MEASURE_S);
    // Device measurements made elsewhere are kept.
    if let Ok(Some(old)) = Calibration::load(&path) {
        c.device = old.device;
    }
    let h = c.host.as_ref().expect("calibrate_host fills the host part");
    println!(
        "host memory read   {:8.1} GB/s ({} threads)",
        h.read_gbs, h.threads
    );
    for (ty, g) in &h.matmul_gflops {
        println!("CPU matmul {ty:<7} {g:8.2} GFLOPS ({} kernels)", h.kernels);
    }
    if c.device.is_none() {
        println!("no GPU measured: device rates stay assumptions");
    }
    if args.dry_run {
        return Ok(());
    }
    c.save(&path)?;
    println!("saved {}", path.display());
    Ok(())
}
