//! `orgsyncd`: the orgsync daemon. Runs in the foreground until SIGINT or
//! SIGTERM, then closes its connections and flushes its store. SIGHUP
//! re-reads partners.toml. Serves the local API on DIR/api.sock and ingests
//! files dropped in DIR/import/.
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use orgsync_daemon::config::Config;
use orgsync_daemon::daemon::Daemon;
use tokio::signal::unix::{signal, SignalKind};

/// mimalloc instead of glibc malloc: the store's write and apply paths
/// allocate and free many small and node-sized buffers (sled, decoded
/// objects); glibc spent 25-35% of that CPU in malloc bookkeeping, and
/// mimalloc returns freed memory to the system on its own, which the idle
/// RSS target relies on.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The orgsync daemon: keeps this instance's records in sync with its partners.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Instance directory (created by `orgsync-keytool init`).
    #[arg(long, env = "ORGSYNC_DIR")]
    dir: PathBuf,
}

fn init_logs(config: Option<&Config>) {
    // RUST_LOG, when set, wins over the configured level.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let level = config.map(|c| c.log.level.as_str()).unwrap_or("info");
        tracing_subscriber::EnvFilter::new(level)
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line, without a backtrace.
            eprintln!("orgsyncd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Read the config once before the runtime to set up logging; the
    // daemon reads it again and reports errors with file, line and key.
    let config = Config::load(&args.dir);
    init_logs(config.as_ref().ok());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args.dir))
}

async fn run(dir: PathBuf) -> anyhow::Result<()> {
    let daemon = Daemon::start(&dir)
        .await
        .with_context(|| format!("cannot start orgsyncd in {}", dir.display()))?;
    let local = match orgsync_daemon::api::LocalServices::start(&daemon, &dir).await {
        Ok(l) => l,
        Err(e) => {
            daemon.shutdown().await;
            return Err(e).context("cannot start the local API");
        }
    };
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => match daemon.reload_partners() {
                Ok(()) => tracing::info!("partners reloaded"),
                Err(e) => tracing::error!(error = %e, "cannot reload partners; keeping the previous set"),
            },
        }
    }
    local.shutdown().await;
    daemon.shutdown().await;
    Ok(())
}
