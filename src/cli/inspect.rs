//! `strait inspect MODEL`

use std::path::PathBuf;
use strait::gguf::GgufFile;
use strait::Result;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file (any shard of a split model)
    pub model: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let f = GgufFile::open(&args.model)?;
    println!("architecture  {}", f.architecture().unwrap_or("?"));
    println!("tensors       {}", f.tensors().len());
    println!("parameters    {}", f.n_params());
    Ok(())
}
