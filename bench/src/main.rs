//! `orgsync-bench`: the benchmark suite. Each scenario prints its figure next
//! to a raw baseline (sled, quinn, AEAD) measured in the same run, because
//! absolute times on shared machines drift; read the ratio column.
//!
//! The baselines run in this process; each scenario runs in a process of
//! its own (this binary, hidden `scenario` command) under a deadline. A
//! scenario that fails, hangs or outlives its deadline becomes one ERROR row
//! saying what it was waiting for, and the others still run: a process
//! wedged for good (every runtime thread blocked) is killed, and nothing it
//! left behind (sled's process-wide state, stray tasks) reaches the next.

mod baseline;
mod cluster;
mod cost;
mod keepalive;
mod machine;
mod peers;
mod procs;
mod progress;
mod report;
mod rounds;
mod scenarios;
mod through_share;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command as Process, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use report::Row;

/// The same allocator as `orgsyncd` (tuned the same way in `main`), so
/// in-process instances behave like the daemon.
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
    /// Deadline of every scenario, in seconds, instead of its own (see
    /// `bench/README.md`); a scenario still running then becomes an ERROR
    /// row saying what it was waiting for.
    #[arg(long, global = true, value_name = "SECS")]
    deadline: Option<u64>,
    /// Run the baselines and the scenarios N times (N odd) and report, per
    /// row, the round with the median ratio (or figure), with every round's
    /// value beside it: one run on a shared machine swings by up to 1.4x.
    #[arg(long, global = true, value_name = "N", default_value_t = 1, value_parser = odd_rounds)]
    repeat: usize,
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
    /// 1s. Scenario 1 through a real share (a flag rule, auto-approve on
    ///     B) next to scenario 1 as a mirror, measured in the same run.
    Share,
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
    /// Scenarios 1-3 and PouchDB and Syncthing on the same workloads (those
    /// installed by bench/peers/install.sh), each peer right after the
    /// scenarios it is compared with, then orgsync ÷ peer.
    Peers,
    /// The named scenarios, in the order given (with the baselines), e.g.
    /// `only replication share resume-file`.
    Only {
        /// Scenarios by their command name (`pouch-db`, `syncthing` for the
        /// peers).
        #[arg(required = true)]
        units: Vec<Unit>,
    },
    /// Runs one scenario in this process and prints its rows as JSON (the
    /// other commands start one such process per scenario).
    #[command(hide = true)]
    Scenario {
        /// Which one.
        unit: Unit,
        /// The baselines, as JSON.
        #[arg(long)]
        baselines: String,
    },
}

/// `--repeat`: an odd number of rounds, so the median is one round's row.
fn odd_rounds(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of rounds"))?;
    if n % 2 == 1 && n <= 99 {
        Ok(n)
    } else {
        Err(format!(
            "{n} rounds: use an odd number from 1 to 99, so the median is one round"
        ))
    }
}

/// A scenario run as one process.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Unit {
    /// Scenario 1: replication A->B.
    Replication,
    /// Scenario 1s: through a share vs a mirror.
    Share,
    /// Scenario 2: change latency.
    Latency,
    /// Scenario 3: a 256 MiB résumé.
    ResumeFile,
    /// Scenario 4 alone (no idle).
    InitialSync,
    /// Scenarios 4 and 5 (with the idle minute).
    Memory,
    /// Scenario 6: one instance to 20 partners.
    FanOut,
    /// Scenario 7: cost growth with 10k-1M objects stored.
    Growth,
    /// PouchDB against scenarios 1 and 2 (if installed).
    PouchDb,
    /// Syncthing against scenario 3 (if installed).
    Syncthing,
}

impl Unit {
    /// The scenarios `command` runs, in order.
    fn of(command: &Command) -> Vec<Unit> {
        use Unit::*;
        match command {
            Command::All => vec![
                Replication,
                Share,
                Latency,
                PouchDb,
                ResumeFile,
                Syncthing,
                Memory,
                FanOut,
                Growth,
            ],
            Command::Baselines | Command::Scenario { .. } => vec![],
            Command::Replication => vec![Replication],
            Command::Share => vec![Share],
            Command::Latency => vec![Latency],
            Command::ResumeFile => vec![ResumeFile],
            Command::InitialSync => vec![InitialSync],
            Command::Memory => vec![Memory],
            Command::FanOut => vec![FanOut],
            Command::Growth => vec![Growth],
            Command::Peers => vec![Replication, Latency, PouchDb, ResumeFile, Syncthing],
            Command::Only { units } => units.clone(),
        }
    }

    /// The name of its rows, and of its ERROR row.
    fn label(self) -> &'static str {
        match self {
            Unit::Replication => "1 replication",
            Unit::Share => "1s replication through a share",
            Unit::Latency => "2 latency",
            Unit::ResumeFile => "3 resume file",
            Unit::InitialSync | Unit::Memory => "4-5 initial sync",
            Unit::FanOut => "6 fan-out",
            Unit::Growth => "7 growth",
            Unit::PouchDb => "peers: PouchDB",
            Unit::Syncthing => "peers: Syncthing",
        }
    }

    /// Its name on the command line.
    fn arg(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// What is printed when it begins.
    fn announce(self, sizes: &Sizes) -> String {
        match self {
            Unit::Replication => format!(
                "scenario 1: replication ({} contacts)...",
                sizes.replication
            ),
            Unit::Share => format!(
                "scenario 1s: replication through a share vs a mirror ({} contacts each)...",
                sizes.replication
            ),
            Unit::Latency => format!("scenario 2: latency ({} changes)...", sizes.latency),
            Unit::ResumeFile => format!("scenario 3: résumé file ({} MiB)...", sizes.resume >> 20),
            Unit::InitialSync | Unit::Memory => format!(
                "scenarios 4 and 5: initial sync ({} objects)...",
                sizes.initial
            ),
            Unit::FanOut => format!(
                "scenario 6: fan-out of {} contacts to {} partners...",
                sizes.fan_out, sizes.partners
            ),
            Unit::Growth => format!("scenario 7: cost growth with {:?} stored...", sizes.growth),
            Unit::PouchDb => format!(
                "peers: PouchDB ({} records, {} changes)...",
                sizes.peers.records, sizes.peers.samples
            ),
            Unit::Syncthing => format!(
                "peers: Syncthing ({} MiB, {} pickups)...",
                sizes.peers.file >> 20,
                sizes.peers.pickups
            ),
        }
    }

    /// How long it may take: about five times a full-size run on the 2-core
    /// machine of `RESULTS.md` (the stops included), three minutes at the
    /// tiny size.
    fn deadline(self, tiny: bool) -> Duration {
        let minutes = match (tiny, self) {
            (_, Unit::PouchDb) => return peers::pouchdb_deadline(tiny),
            (_, Unit::Syncthing) => return peers::syncthing_deadline(tiny),
            (true, _) => 3,
            (
                false,
                Unit::Replication | Unit::Share | Unit::Latency | Unit::ResumeFile | Unit::FanOut,
            ) => 5,
            (false, Unit::InitialSync | Unit::Memory) => 10,
            (false, Unit::Growth) => 20,
        };
        Duration::from_secs(60 * minutes)
    }
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
    peers: peers::Sizes,
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
                peers: peers::Sizes::new(true),
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
                peers: peers::Sizes::new(false),
            }
        }
    }
}

/// The raw figures the scenarios compare with, handed to each scenario's
/// process.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Baselines {
    sled: f64,
    quinn_aead: f64,
    rtt50: f64,
    rtt99: f64,
    /// CPU seconds of raw sled per 100,000 records (issue 16 item 7).
    #[serde(default)]
    sled_cpu: f64,
}

impl Baselines {
    fn from_rows(rows: &[Row]) -> Result<Baselines> {
        Ok(Baselines {
            sled: figure(rows, SLED)?,
            quinn_aead: figure(rows, QUINN_AEAD)?,
            rtt50: figure(rows, RTT50)?,
            rtt99: figure(rows, RTT99)?,
            sled_cpu: figure(rows, SLED_CPU)?,
        })
    }
}

/// The raw figures, looked up by the scenarios that compare with them.
fn figure(rows: &[Row], scenario: &str) -> Result<f64> {
    rows.iter()
        .find(|r| r.scenario == scenario)
        .map(|r| r.value)
        .ok_or_else(|| anyhow!("baseline {scenario:?} was not measured"))
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
const SLED_CPU: &str = "baseline: raw sled CPU per 100k records";

/// Runs one scenario in this process.
async fn run_unit(unit: Unit, b: Baselines, sizes: Sizes, deadline: Duration) -> Result<Vec<Row>> {
    match unit {
        Unit::Replication => scenarios::replication(sizes.replication, b.sled, b.sled_cpu).await,
        Unit::Share => through_share::share_vs_mirror(sizes.replication, b.sled).await,
        Unit::Latency => scenarios::latency(sizes.latency, b.rtt50, b.rtt99).await,
        Unit::ResumeFile => scenarios::resume_file(sizes.resume, b.quinn_aead).await,
        Unit::InitialSync => {
            scenarios::initial_sync(sizes.initial, Duration::ZERO, b.sled, b.sled_cpu).await
        }
        Unit::Memory => {
            scenarios::initial_sync(sizes.initial, sizes.idle, b.sled, b.sled_cpu).await
        }
        Unit::FanOut => scenarios::fan_out(sizes.fan_out, sizes.partners).await,
        Unit::Growth => {
            let rtt = (b.rtt50, b.rtt99);
            let (g, rep, lat) = (
                &sizes.growth,
                sizes.growth_replication,
                sizes.growth_latency,
            );
            scenarios::cost_growth(g, rep, lat, b.sled, rtt).await
        }
        Unit::PouchDb => run_peer(peers::run_pouchdb, sizes.peers, deadline).await,
        Unit::Syncthing => run_peer(peers::run_syncthing, sizes.peers, deadline).await,
    }
}

/// Runs a peer's measurement (blocking: it polls processes and files) on a
/// thread of its own. Its waits end a little before `deadline`, so its
/// processes are stopped before this process exits; Ctrl-C ends them the
/// same way.
async fn run_peer(
    run: fn(&peers::Sizes, Instant) -> Result<Vec<Row>>,
    sizes: peers::Sizes,
    deadline: Duration,
) -> Result<Vec<Row>> {
    let end = Instant::now() + deadline.saturating_sub(Duration::from_secs(5));
    let ctrl_c = tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            peers::interrupt();
        }
    });
    let rows = tokio::task::spawn_blocking(move || run(&sizes, end)).await;
    ctrl_c.abort();
    rows.context("the peer's thread panicked")?
}

/// Runs one scenario in this process under `deadline` (the `scenario`
/// command): the rows, or why there are none.
async fn run_unit_here(
    unit: Unit,
    b: Baselines,
    tiny: bool,
    deadline: Duration,
) -> Result<Vec<Row>> {
    let sizes = Sizes::new(tiny);
    match tokio::time::timeout(deadline, run_unit(unit, b, sizes, deadline)).await {
        Ok(rows) => rows,
        Err(_) => Err(anyhow!(
            "no result within {} s; was waiting for: {}",
            deadline.as_secs(),
            progress::current()
        )),
    }
}

/// A row as the scenario process prints it (JSON has no NaN).
#[derive(Serialize, Deserialize)]
struct WireRow {
    scenario: String,
    metric: String,
    value: Option<f64>,
    baseline: Option<f64>,
    target: String,
    pass: Option<bool>,
}

/// Prefix of the line with the scenario process's result.
const RESULT: &str = "orgsync-bench result: ";

/// What the scenario process prints on stdout (one line, after [`RESULT`]).
#[derive(Serialize, Deserialize)]
enum Outcome {
    Rows(Vec<WireRow>),
    Error(String),
}

impl From<&Row> for WireRow {
    fn from(r: &Row) -> WireRow {
        WireRow {
            scenario: r.scenario.clone(),
            metric: r.metric.clone(),
            value: Some(r.value).filter(|v| !v.is_nan()),
            baseline: r.baseline,
            target: r.target.clone(),
            pass: r.pass,
        }
    }
}

impl From<WireRow> for Row {
    fn from(r: WireRow) -> Row {
        Row {
            scenario: r.scenario,
            metric: r.metric,
            value: r.value.unwrap_or(f64::NAN),
            baseline: r.baseline,
            target: r.target,
            pass: r.pass,
        }
    }
}

/// How long past its own deadline a scenario process may take before it is
/// killed (its deadline fires inside it unless every thread is blocked).
const KILL_GRACE: Duration = Duration::from_secs(30);

/// Runs one scenario in a process of its own and waits for its rows, at
/// most its deadline and [`KILL_GRACE`]; a process still running then is
/// killed, and the error names the last step it reported.
fn run_unit_in_child(unit: Unit, b: Baselines, tiny: bool, deadline: Duration) -> Result<Vec<Row>> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let mut cmd = Process::new(exe);
    if tiny {
        cmd.arg("--tiny");
    }
    cmd.arg("--deadline")
        .arg(deadline.as_secs().to_string())
        .arg("scenario")
        .arg(unit.arg())
        .arg("--baselines")
        .arg(serde_json::to_string(&b)?)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting the scenario process")?;
    // Its stderr goes on to ours, but for the progress lines: the last is
    // kept to say where a killed process was.
    let step = Arc::new(Mutex::new(String::from("starting")));
    let stderr = child.stderr.take().context("scenario stderr")?;
    let forward = std::thread::spawn({
        let step = step.clone();
        move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                match line.strip_prefix(progress::PREFIX) {
                    Some(s) => *step.lock().unwrap_or_else(PoisonError::into_inner) = s.to_string(),
                    None => eprintln!("{line}"),
                }
            }
        }
    });
    let mut stdout = child.stdout.take().context("scenario stdout")?;
    let read = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let end = Instant::now() + deadline + KILL_GRACE;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > end {
            // Killing a process that just exited on its own fails harmlessly.
            let _ = child.kill();
            let _ = child.wait();
            let _ = forward.join();
            let step = step.lock().unwrap_or_else(PoisonError::into_inner).clone();
            bail!(
                "no result within {} s, the process was killed; was waiting for: {step}",
                (deadline + KILL_GRACE).as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = forward.join();
    let out = read
        .join()
        .map_err(|_| anyhow!("the stdout reader panicked"))?
        .context("reading the scenario's output")?;
    // Programs the scenario runs (e.g. `orgsync wait-synced`) print on the
    // same stdout: the result is the line with the prefix.
    let line = out
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(RESULT))
        .with_context(|| format!("the scenario process ({status}) printed no result: {out:?}"))?;
    let outcome: Outcome = serde_json::from_str(line).context("the scenario's result")?;
    match outcome {
        Outcome::Rows(rows) => Ok(rows.into_iter().map(Row::from).collect()),
        Outcome::Error(e) => Err(anyhow!(e)),
    }
}

fn main() -> Result<()> {
    orgsync_daemon::allocator::tune();
    orgsync_keytool::cli::default_sigpipe();
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
    if let Command::Scenario { unit, baselines } = &cli.command {
        let b: Baselines = serde_json::from_str(baselines).context("--baselines")?;
        let deadline = cli
            .deadline
            .map_or_else(|| unit.deadline(cli.tiny), Duration::from_secs);
        let outcome = match rt.block_on(run_unit_here(*unit, b, cli.tiny, deadline)) {
            Ok(rows) => Outcome::Rows(rows.iter().map(WireRow::from).collect()),
            Err(e) => Outcome::Error(format!("{e:#}")),
        };
        println!("{RESULT}{}", serde_json::to_string(&outcome)?);
        // Out at once: a scenario cut short leaves daemons and tasks behind.
        std::process::exit(0);
    }
    let sizes = Sizes::new(cli.tiny);
    let mut rounds = Vec::with_capacity(cli.repeat);
    for round in 1..=cli.repeat {
        if cli.repeat > 1 {
            eprintln!("round {round} of {}:", cli.repeat);
        }
        let mut rows = rt.block_on(baselines(cli.tiny))?;
        let b = Baselines::from_rows(&rows)?;
        for unit in Unit::of(&cli.command) {
            eprintln!("{}", unit.announce(&sizes));
            let deadline = cli
                .deadline
                .map_or_else(|| unit.deadline(cli.tiny), Duration::from_secs);
            let result = run_unit_in_child(unit, b, cli.tiny, deadline);
            record(&mut rows, unit.label(), result);
        }
        let ratios = peers::ratios(&rows);
        rows.extend(ratios);
        rounds.push(rows);
    }
    println!("machine: {}", machine::describe());
    println!(
        "daemons: scenarios 4-5 run each daemon as its own orgsyncd process (RSS per process); 1-3, 6, 7 run whole instances in one bench process per scenario (separate dirs, stores, QUIC endpoints on loopback)"
    );
    if cli.repeat == 1 {
        print!("{}", report::render(&rounds[0]));
    } else {
        for (i, rows) in rounds.iter().enumerate() {
            println!("\nround {} of {}:", i + 1, cli.repeat);
            print!("{}", report::render(rows));
        }
        println!(
            "\nmedian of {} rounds (each row is its median round's, ranked by ratio, or by figure where there is no baseline or the target is a figure):",
            cli.repeat
        );
        print!(
            "{}",
            report::render_medians(&rounds::medians(&rounds), cli.repeat)
        );
    }
    let rows: Vec<Row> = rounds.into_iter().flatten().collect();
    // Rows without a figure but without a verdict (a peer not installed)
    // are not failures.
    if let Some(failed) = rows
        .iter()
        .find(|r| r.value.is_nan() && r.pass == Some(false))
    {
        // The table is printed; the exit status still says a scenario broke.
        bail!("{}", failed.scenario);
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
    let cpu_before = cost::cpu_secs(None)?;
    let sled = baseline::sled_group_commit(records, 1_000, 64 << 20)?;
    let sled_cpu = cost::per_100k(cost::cpu_secs(None)? - cpu_before, records as u64);
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
        Row::info(SLED_CPU, "CPU s/100k", sled_cpu),
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
