//! `orgsync-bench`: the benchmark suite. Each scenario prints its figure next
//! to a raw baseline (sled, quinn, AEAD) measured in the same run, because
//! absolute times on shared machines drift; read the ratio column.

mod baseline;
mod machine;
mod report;

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use report::Row;

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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    match cli.command {
        Command::All | Command::Baselines => rows.extend(rt.block_on(baselines(cli.tiny))?),
    }
    println!("machine: {}", machine::describe());
    print!("{}", report::render(&rows));
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
