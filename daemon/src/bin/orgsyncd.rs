//! `orgsyncd`: the orgsync daemon (not built yet).
use clap::Parser;

/// The orgsync daemon: keeps this instance's records in sync with its partners.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Instance directory.
    #[arg(long, env = "ORGSYNC_DIR")]
    dir: std::path::PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "orgsyncd is not implemented yet (instance directory {})",
        args.dir.display()
    )
}
