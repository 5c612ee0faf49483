//! `orgsync-bench`: the benchmark suite. Each scenario prints its figure next
//! to a raw baseline (sled, quinn, AEAD) measured in the same run, because
//! absolute times on shared machines drift; read the ratio column.

mod baseline;
mod cluster;
mod keepalive;
mod machine;
mod procs;
mod report;
mod scenarios;

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use report::Row;

/// The same allocator as `orgsyncd`, so in-process instances behave like
/// the daemon.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmarks of orgsync against raw sled, quinn and AEAD baselines.
///
/// Example: `cargo run --release -p orgsync-bench -- all`
/// (`--tiny` runs every scenario once at a tiny size; CI uses it so the
/// bench cannot rot, its figures mean nothing).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Run at a tiny size (seconds, not minutes); figures are not meaningful.
    #[arg(long, global = true)]
    tiny: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every scenario, then the table.
    All,
    /// Only the raw baselines: sled group commit, quinn stream throughput and
    /// round trip, AEAD.
    Baselines,
    /// 1. Sustained replication of 262-byte contacts A->B, durable on B,
    ///    next to raw sled group commit.
    Replication,
    /// 2. One change at a time through A's local API until B's event stream
    ///    reports it (p50/p99), next to the raw quinn round trip.
    Latency,
    /// 3. A 256 MiB résumé A->B next to raw quinn + AEAD.
    ResumeFile,
    /// 4. Initial sync of 1,000,000 objects to a freshly paired partner
    ///    (with the peak RSS of scenario 5).
    InitialSync,
    /// 5. Scenario 4, then RSS after a minute idle (no idle with --tiny).
    Memory,
    /// 6. One instance writing to 20 partners (whole instances in this
    ///    process): aggregate throughput and the slowest partner's lag.
    FanOut,
    /// 7. Scenarios 1 and 2 with 10k, 100k and 1M objects already stored.
    Growth,
}

/// Sizes of every scenario.
struct Sizes {
    replication: u64,
    latency: usize,
    resume: usize,
    initial: u64,
    idle: Duration,
    fan_out: u64,
    partners: usize,
    growth: Vec<u64>,
    growth_replication: u64,
    growth_latency: usize,
}

impl Sizes {
    fn new(tiny: bool) -> Sizes {
        if tiny {
            Sizes {
                replication: 5_000,
                latency: 50,
                resume: 4 << 20,
                initial: 10_000,
                idle: Duration::ZERO,
                fan_out: 500,
                partners: 3,
                growth: vec![1_000, 5_000],
                growth_replication: 2_000,
                growth_latency: 20,
            }
        } else {
            Sizes {
                replication: 200_000,
                latency: 1_000,
                resume: 256 << 20,
                initial: 1_000_000,
                idle: Duration::from_secs(60),
                fan_out: 20_000,
                partners: 20,
                growth: vec![10_000, 100_000, 1_000_000],
                growth_replication: 50_000,
                growth_latency: 300,
            }
        }
    }
}

/// The raw figures, looked up by the scenarios that compare with them.
fn figure(rows: &[Row], scenario: &str) -> Result<f64> {
    rows.iter()
        .find(|r| r.scenario == scenario)
        .map(|r| r.value)
        .ok_or_else(|| anyhow::anyhow!("baseline {scenario:?} was not measured"))
}

/// Adds a scenario's rows, or, when it failed, one failing row saying why,
/// so one broken scenario does not cost the table of the others.
fn record(rows: &mut Vec<Row>, scenario: &str, result: Result<Vec<Row>>) {
    match result {
        Ok(r) => rows.extend(r),
        Err(e) => {
            eprintln!("{scenario} failed: {e:#}");
            rows.push(Row {
                scenario: format!("{scenario}: ERROR {e:#}"),
                metric: "-".into(),
                value: f64::NAN,
                baseline: None,
                target: "runs".into(),
                pass: Some(false),
            });
        }
    }
}

const SLED: &str = "baseline: raw sled apply_batch(1000)+flush";
const QUINN_AEAD: &str = "baseline: raw quinn + AEAD 64 KiB chunks";
const RTT50: &str = "baseline: raw quinn round trip p50";
const RTT99: &str = "baseline: raw quinn round trip p99";

async fn run(command: Command, tiny: bool) -> Result<Vec<Row>> {
    let sizes = Sizes::new(tiny);
    let mut rows = baselines(tiny).await?;
    let all = matches!(command, Command::All);
    if all || matches!(command, Command::Replication) {
        eprintln!(
            "scenario 1: replication ({} contacts)...",
            sizes.replication
        );
        let sled = figure(&rows, SLED)?;
        record(
            &mut rows,
            "1 replication",
            scenarios::replication(sizes.replication, sled).await,
        );
    }
    if all || matches!(command, Command::Latency) {
        eprintln!("scenario 2: latency ({} changes)...", sizes.latency);
        let (p50, p99) = (figure(&rows, RTT50)?, figure(&rows, RTT99)?);
        record(
            &mut rows,
            "2 latency",
            scenarios::latency(sizes.latency, p50, p99).await,
        );
    }
    if all || matches!(command, Command::ResumeFile) {
        eprintln!("scenario 3: résumé file ({} MiB)...", sizes.resume >> 20);
        let aead = figure(&rows, QUINN_AEAD)?;
        record(
            &mut rows,
            "3 resume file",
            scenarios::resume_file(sizes.resume, aead).await,
        );
    }
    let idle = match command {
        Command::All | Command::Memory => Some(sizes.idle),
        Command::InitialSync => Some(Duration::ZERO),
        _ => None,
    };
    if let Some(idle) = idle {
        eprintln!(
            "scenarios 4 and 5: initial sync ({} objects)...",
            sizes.initial
        );
        record(
            &mut rows,
            "4-5 initial sync",
            scenarios::initial_sync(sizes.initial, idle).await,
        );
    }
    if all || matches!(command, Command::FanOut) {
        eprintln!(
            "scenario 6: fan-out of {} contacts to {} partners...",
            sizes.fan_out, sizes.partners
        );
        record(
            &mut rows,
            "6 fan-out",
            scenarios::fan_out(sizes.fan_out, sizes.partners).await,
        );
    }
    if all || matches!(command, Command::Growth) {
        eprintln!("scenario 7: cost growth with {:?} stored...", sizes.growth);
        let sled = figure(&rows, SLED)?;
        let rtt = (figure(&rows, RTT50)?, figure(&rows, RTT99)?);
        let growth = scenarios::cost_growth(
            &sizes.growth,
            sizes.growth_replication,
            sizes.growth_latency,
            sled,
            rtt,
        )
        .await;
        record(&mut rows, "7 growth", growth);
    }
    Ok(rows)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // The daemons' logs (warnings and up, or RUST_LOG) on stderr: a stop
    // that had to abort a task says which one here.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rows = rt.block_on(run(cli.command, cli.tiny))?;
    println!("machine: {}", machine::describe());
    println!(
        "daemons: scenarios 4-5 run each daemon as its own orgsyncd process (RSS per process); 1-3, 6, 7 run whole instances in this process (separate dirs, stores, QUIC endpoints on loopback)"
    );
    print!("{}", report::render(&rows));
    if let Some(failed) = rows.iter().find(|r| r.value.is_nan()) {
        // The table is printed; the exit status still says a scenario broke.
        anyhow::bail!("{}", failed.scenario);
    }
    Ok(())
}

/// The raw figures every scenario is compared with.
async fn baselines(tiny: bool) -> Result<Vec<Row>> {
    let (records, bytes, rtts, budget) = if tiny {
        (5_000, 4 << 20, 100, Duration::from_millis(50))
    } else {
        (200_000, 256 << 20, 2_000, Duration::from_millis(500))
    };
    eprintln!("baseline: sled group commit ({records} x 262 B, flush per 1000)...");
    let sled = baseline::sled_group_commit(records, 1_000, 64 << 20)?;
    eprintln!("baseline: quinn single stream ({} MiB)...", bytes >> 20);
    let quinn = baseline::quinn_stream_throughput(bytes).await?;
    eprintln!("baseline: quinn + AEAD (64 KiB chunks)...");
    let quinn_aead = baseline::quinn_aead_throughput(bytes, 64 << 10).await?;
    eprintln!("baseline: quinn round trip ({rtts} ping-pongs)...");
    let (p50, p99) = baseline::quinn_round_trip(rtts).await?;
    eprintln!("baseline: AEAD...");
    let aead_small = baseline::aead_throughput(baseline::RECORD_LEN, budget);
    let aead_large = baseline::aead_throughput(64 << 10, budget);
    Ok(vec![
        Row::info(
            "baseline: raw sled apply_batch(1000)+flush",
            "objects/s",
            sled,
        ),
        Row::info("baseline: raw quinn, one stream", "MB/s", quinn),
        Row::info(
            "baseline: raw quinn + AEAD 64 KiB chunks",
            "MB/s",
            quinn_aead,
        ),
        Row::info("baseline: raw quinn round trip p50", "us", p50),
        Row::info("baseline: raw quinn round trip p99", "us", p99),
        Row::info(
            "baseline: raw XChaCha20-Poly1305, 262 B",
            "MB/s",
            aead_small,
        ),
        Row::info(
            "baseline: raw XChaCha20-Poly1305, 64 KiB",
            "MB/s",
            aead_large,
        ),
    ])
}
