//! `orgsync`: the admin CLI of the orgsync daemon (not built yet).
use clap::Parser;

/// Admin CLI of the orgsync daemon.
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
        "orgsync is not implemented yet (instance directory {})",
        args.dir.display()
    )
}
