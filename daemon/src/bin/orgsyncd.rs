//! `orgsyncd`: the orgsync daemon. Runs in the foreground until SIGINT or
//! SIGTERM, then closes its connections and flushes its store. SIGHUP
//! re-reads partners.toml and orgsync.toml (both are also watched and
//! reloaded when they change). Serves the local API on DIR/api.sock and
//! ingests files dropped in DIR/import/. Under systemd it reports
//! readiness (`Type=notify`) and logs without timestamps to the journal.

// Nothing but clap's help goes to standard output.
#![deny(clippy::print_stdout)]
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use orgsync_daemon::config::{Config, LogFormat};
use orgsync_daemon::daemon::Daemon;
use orgsync_keytool::outln;
use tokio::signal::unix::{signal, SignalKind};

#[path = "orgsyncd/systemd.rs"]
mod systemd;

/// mimalloc instead of glibc malloc: the store's write and apply paths
/// allocate and free many small and node-sized buffers (sled, decoded
/// objects); glibc spent 25-35% of that CPU in malloc bookkeeping, and
/// mimalloc returns freed memory to the system (see
/// `orgsync_daemon::allocator` for when), which the idle RSS target
/// relies on.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The orgsync daemon: keeps this instance's records in sync with its partners.
#[derive(Parser)]
#[command(
    name = "orgsyncd",
    version,
    after_help = "Runs in the foreground until SIGINT or SIGTERM; SIGHUP re-reads partners.toml and orgsync.toml. Under systemd (Type=notify) it reports readiness once listening.\n\nExamples:\n  orgsync-keytool --dir /var/lib/orgsync init --org 'Acme Recruiting'\n  orgsyncd --dir /var/lib/orgsync\n  ORGSYNC_DIR=/var/lib/orgsync RUST_LOG=debug orgsyncd\n  systemctl enable --now orgsyncd   (from the .deb package)"
)]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
struct Args {
    /// Instance directory (created by `orgsync-keytool init`).
    #[arg(long, env = "ORGSYNC_DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Recreate an instance directory from a backup archive (verified first).
    #[command(
        after_help = "Example:\n  orgsyncd restore /var/backups/orgsync.osb --dir /srv/orgsync-restored"
    )]
    Restore(orgsync_daemon::backup::cli::RestoreArgs),
}

/// Changes the log filter of the running subscriber.
type LogReload =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Sets up logging; returns the handle that changes the level later, or
/// `None` when RUST_LOG is set (it wins over the configured level).
fn init_logs(config: Option<&Config>) -> Option<LogReload> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let from_env = EnvFilter::try_from_default_env().ok();
    let pinned = from_env.is_some();
    let filter = from_env
        .unwrap_or_else(|| EnvFilter::new(config.map(|c| c.log.level.as_str()).unwrap_or("info")));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let json = config.is_some_and(|c| c.log.format == LogFormat::Json);
    // The journal stamps each line itself and shows escapes as text.
    let journal = systemd::stderr_is_journal();
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match (json, journal) {
        (true, false) => registry.with(layer.json()).init(),
        (true, true) => registry.with(layer.json().without_time()).init(),
        (false, true) => registry.with(layer.without_time().with_ansi(false)).init(),
        (false, false) => registry
            // Colour codes only for a person at a terminal, not in log files.
            .with(layer.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .init(),
    }
    (!pinned).then_some(handle)
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            orgsync_keytool::cli::print_error(e.as_ref());
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    orgsync_daemon::allocator::tune();
    orgsync_daemon::idle::set_release_hook(orgsync_daemon::allocator::release);
    let args: Args = orgsync_keytool::cli::parse_args();
    if let Some(Cmd::Restore(r)) = &args.command {
        // The message already names the cause: printed once, not as a chain.
        let done =
            orgsync_daemon::backup::cli::restore_cmd(r).map_err(|e| anyhow::anyhow!("{e}"))?;
        outln!("{done}");
        return Ok(());
    }
    let dir = args
        .dir
        .context("no instance directory: pass --dir DIR or set ORGSYNC_DIR")?;
    // Read the config once before the runtime to set up logging; the
    // daemon reads it again and reports errors with file, line and key.
    let config = Config::load(&dir);
    let log_reload = init_logs(config.as_ref().ok());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(dir, log_reload))
}

/// Applies `log.level` changes from orgsync.toml to the subscriber.
fn follow_log_level(daemon: &Daemon, handle: LogReload) -> tokio::task::JoinHandle<()> {
    let mut level = daemon.log_level();
    tokio::spawn(async move {
        while level.changed().await.is_ok() {
            let directive = level.borrow_and_update().clone();
            // orgsync.toml validated the directive, so it parses.
            let filter = tracing_subscriber::EnvFilter::new(&directive);
            match handle.reload(filter) {
                Ok(()) => tracing::info!(level = %directive, "log level changed"),
                Err(e) => tracing::warn!(error = %e, "cannot change the log level"),
            }
        }
    })
}

/// Tells the service manager `state`; a failure is logged, not fatal (the
/// daemon works the same without systemd).
fn notify_systemd(state: &str) {
    if let Err(e) = systemd::notify(state) {
        tracing::warn!(error = %orgsync_keytool::cli::error_chain(&e), "cannot notify systemd");
    }
}

async fn run(dir: PathBuf, log_reload: Option<LogReload>) -> anyhow::Result<()> {
    let daemon = Daemon::start(&dir)
        .await
        .with_context(|| format!("cannot start orgsyncd in {}", dir.display()))?;
    let local = match orgsync_daemon::api::LocalServices::start(&daemon, &dir).await {
        Ok(l) => l,
        Err(e) => {
            daemon.stop().await;
            return Err(e).context("cannot start the local API");
        }
    };
    // The web console: on when [web] enabled = true, or when console
    // accounts exist (SIGHUP starts it after the first `orgsync admin add`).
    if let Err(e) = daemon.start_web(&dir).await {
        local.stop().await;
        daemon.stop().await;
        return Err(e).context("cannot start the web console");
    }
    let level_task = log_reload.map(|h| follow_log_level(&daemon, h));
    // Listening on the network, the API socket and the drop folder: a
    // `Type=notify` unit counts as started from here.
    notify_systemd("READY=1\nSTATUS=syncing");
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                match daemon.reload_partners() {
                    Ok(()) => tracing::info!("SIGHUP: partners reloaded"),
                    Err(e) => tracing::error!(error = %e, "cannot reload partners; keeping the previous set"),
                }
                // Logs what it applied, or why it kept the previous file.
                let _ = daemon.reload_config();
                if let Err(e) = daemon.start_web(&dir).await {
                    tracing::error!(error = %e, "cannot start the web console");
                }
            }
        }
    }
    notify_systemd("STOPPING=1");
    if let Some(t) = level_task {
        t.abort();
    }
    // One deadline for all: the daemon stops the local API and drop folder
    // started for it first (and logs, by name, what it had to abort).
    drop(local);
    daemon.stop().await;
    Ok(())
}
