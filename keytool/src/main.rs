//! `orgsync-keytool`: organisation identities, bundles and pairing (not built yet).
use clap::Parser;

/// Creates organisation identities and pairs instances.
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
        "orgsync-keytool is not implemented yet (instance directory {})",
        args.dir.display()
    )
}
