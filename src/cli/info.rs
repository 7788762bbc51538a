//! `strait info`: the machine as strait sees it.

use strait::quant::arch;
use strait::Result;

#[derive(clap::Args)]
pub struct Args {}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

pub fn run(_args: Args) -> Result<()> {
    let chosen = arch::select()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("strait      {}", env!("CARGO_PKG_VERSION"));
    println!("cpu         {} ({threads} threads)", cpu_model());
    let feats = arch::cpu_features();
    if !feats.is_empty() {
        let have: Vec<&str> = feats.iter().filter(|f| f.1).map(|f| f.0).collect();
        let lack: Vec<&str> = feats.iter().filter(|f| !f.1).map(|f| f.0).collect();
        println!("features    {}", have.join(" "));
        if !lack.is_empty() {
            println!("missing     {}", lack.join(" "));
        }
    }
    let paths: Vec<&str> = arch::supported().iter().map(|p| p.name()).collect();
    println!("paths       {}", paths.join(", "));
    let why = if std::env::var_os("STRAIT_CPU").is_some() {
        "forced by STRAIT_CPU"
    } else {
        "the best this CPU supports"
    };
    println!("selected    {} ({why})", chosen.name());
    Ok(())
}
