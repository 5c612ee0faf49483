//! Console demo: two paired orgsync instances with sample data and a web
//! console each, to click through.
//!
//! Creates two instances in a temporary folder and pairs them (as the
//! quickstart does, through the keytool library), starts both daemons with
//! their local API (so `orgsync --dir DIR ...` works against them) and web
//! console on loopback, and writes sample data: Acme shares its VIP flag
//! and a kind with Globex, Globex's inbox receives the records, and Globex
//! asks Acme for more (a share request). Each console gets a throwaway
//! admin with a random password, printed with both addresses. Runs until
//! Ctrl-C, then stops both daemons and removes the folder.
//!
//! Run: `cargo run --release --example console_demo`

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use orgsync::daemon::api::LocalServices;
use orgsync::daemon::daemon::Daemon;
use orgsync::daemon::governance::{inbox, requests, shares, Governance};
use orgsync::daemon::store::Edit;
use orgsync::daemon::web::accounts::{Accounts, Role};
use orgsync::keytool::pairing::store_partner;
use orgsync::keytool::InstanceDir;
use orgsync::protocol::model::{FieldKey, Kind, ObjectId, Value};
use orgsync::protocol::share::{AccessType, Selection, Selector};
use rand::RngCore;

/// How long any single step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn free_udp() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_tcp() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A random password of 20 letters and digits (OS random numbers).
fn password() -> String {
    const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..20)
        .map(|_| {
            // 56 symbols: rejection sampling keeps the choice unbiased.
            loop {
                let v = (rng.next_u32() & 0x3f) as usize;
                if v < CHARS.len() {
                    break CHARS[v] as char;
                }
            }
        })
        .collect()
}

/// Each instance imports the other's bundle, as `orgsync-keytool import` does.
fn pair(a: &InstanceDir, b: &InstanceDir) -> Result<()> {
    for (me_dir, other_dir) in [(a, b), (b, a)] {
        let me = me_dir.load_identity()?;
        let other = other_dir.load_identity()?;
        let address = other_dir
            .listen_address()?
            .context("partner has no listen address")?;
        store_partner(me_dir, &me, &other.bundle(vec![address]))?;
    }
    Ok(())
}

/// Polls `cond` every 20 ms until it holds or [`STEP_TIMEOUT`] passes.
async fn until(what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let end = Instant::now() + STEP_TIMEOUT;
    while !cond()? {
        if Instant::now() > end {
            bail!("{what}: not done within {STEP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn gov(d: &Daemon) -> Result<&Governance> {
    d.governance().context("governance is off")
}

/// Writes Acme's sample records: an organisation, a VIP flag and three
/// contacts (two flagged VIP); returns the flag's id.
async fn sample_data(d: &Daemon) -> Result<ObjectId> {
    let s = d.store();
    let new = |k| Edit::new(ObjectId::new_v7(now_ms()), k);
    let org = new(Kind::Organization)
        .set_std("name", Value::Text("Analytical Engines Ltd".into()))
        .set_std("city", Value::Text("London".into()));
    let org_id = org.id;
    let vip = new(Kind::Flag).set_std("name", Value::Text("VIP".into()));
    let vip_id = vip.id;
    s.write(vec![org, vip]).await?;
    for (first, last, flagged) in [
        ("Ada", "Lovelace", true),
        ("Charles", "Babbage", true),
        ("Mary", "Somerville", false),
    ] {
        let mut e = new(Kind::Contact)
            .set_std("first_name", Value::Text(first.into()))
            .set_std("last_name", Value::Text(last.into()))
            .set_std("organization", Value::Ref(org_id));
        if flagged {
            e = e.set(FieldKey::Flag(vip_id), Value::Bool(true));
        }
        s.write(vec![e]).await?;
    }
    Ok(vip_id)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut consoles: Vec<(String, SocketAddr, String, String)> = Vec::new();
    let dirs = [
        (
            InstanceDir::new(root.path().join("acme")),
            "Acme Recruiting",
        ),
        (
            InstanceDir::new(root.path().join("globex")),
            "Globex Staffing",
        ),
    ];
    for (dir, name) in &dirs {
        let listen = format!("127.0.0.1:{}", free_udp()?);
        InstanceDir::create(dir.path(), name, &listen)?;
        let web = SocketAddr::from(([127, 0, 0, 1], free_tcp()?));
        let cfg = dir.config_path();
        let mut text = std::fs::read_to_string(&cfg)?;
        text.push_str(&format!("\n[web]\nenabled = true\nlisten = \"{web}\"\n"));
        std::fs::write(&cfg, text)?;
        let pw = password();
        Accounts::new(dir.path()).add("demo-admin", Role::Admin, &pw)?;
        consoles.push((name.to_string(), web, "demo-admin".into(), pw));
    }
    pair(&dirs[0].0, &dirs[1].0)?;

    let mut running = Vec::new();
    for (dir, name) in &dirs {
        let d = Daemon::start(dir.path())
            .await
            .with_context(|| format!("starting {name}'s daemon"))?;
        let api = LocalServices::start(&d, dir.path()).await?;
        d.start_web(dir.path()).await?;
        running.push((d, api));
    }
    let (a, b) = (&running[0].0, &running[1].0);
    until("both daemons connected", || {
        Ok([a, b]
            .iter()
            .all(|d| d.engine().status().iter().any(|(_, s)| s.connected)))
    })
    .await?;

    // Acme shares its VIP flag with Globex; the records wait in Globex's inbox.
    let vip = sample_data(a).await?;
    let (ga, gb) = (gov(a)?, gov(b)?);
    let globex = b.identity().org_id;
    let acme = a.identity().org_id;
    let rule: Selector = format!("flag:{vip}").parse()?;
    shares::create(
        ga,
        shares::NewShare {
            partners: vec![globex],
            selection: Selection { rules: vec![rule] },
            access: AccessType::Operator,
            terms: None,
            label: "VIP candidates".into(),
            request: None,
            code_valid_ms: None,
            by: "demo".into(),
        },
    )
    .await?;
    until("the shared records in Globex's inbox", || {
        Ok(!inbox::list(gb, None)?.is_empty())
    })
    .await?;
    // Globex asks Acme for its transactions too.
    let want: Selector = "kind:transaction".parse()?;
    requests::send(
        gb,
        &acme,
        Selection { rules: vec![want] },
        None,
        "Placement fees for the VIP candidates, please.".into(),
        "demo",
    )
    .await?;

    println!(
        "orgsync console demo: two paired instances in {}",
        root.path().display()
    );
    for (name, web, user, pw) in &consoles {
        println!("  {name:<16} http://{web}/   sign in as {user} / {pw}");
    }
    for ((dir, name), _) in dirs.iter().zip(&consoles) {
        println!(
            "  {name:<16} CLI: orgsync --dir {} status",
            dir.path().display()
        );
    }
    println!("Acme shared its VIP contacts with Globex (waiting in Globex's Incoming page), and Globex asked Acme for transactions.");
    println!("Try About on one console to create a one-time pairing code. Ctrl-C stops both daemons and removes the folder.");
    tokio::signal::ctrl_c().await?;
    println!("\nstopping both daemons");
    for (d, api) in running {
        api.stop().await;
        d.stop().await;
    }
    println!("stopped cleanly; removing {}", root.path().display());
    // Dropping `root` removes the folder.
    Ok(())
}
