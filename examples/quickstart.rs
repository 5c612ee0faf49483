//! Quickstart: two orgsync instances on loopback, paired, sharing records.
//!
//! Creates two instance directories in a temporary folder (organisation keys,
//! TLS identities), pairs them through the keytool library (each imports the
//! other's public bundle), starts both daemons (sled store, QUIC on
//! 127.0.0.1), writes an organization, contacts with a custom field, a
//! transaction and a résumé file on Acme, edits the same contact on both
//! sides at once, and prints what Globex holds and how long each change took
//! to arrive. Then it stops both daemons and removes the folder.
//!
//! Run: `cargo run --release --example quickstart`

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use orgsync::daemon::daemon::Daemon;
use orgsync::daemon::store::{BlobState, Edit, Store};
use orgsync::keytool::pairing::store_partner;
use orgsync::keytool::InstanceDir;
use orgsync::protocol::model::{Date, FieldKey, Kind, Object, ObjectId, Value};

/// How long any single step may take before the quickstart gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn free_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Each instance imports the other's bundle, as `orgsync-keytool import` does.
fn pair(a: &InstanceDir, b: &InstanceDir) -> Result<()> {
    for (me_dir, other_dir) in [(a, b), (b, a)] {
        let me = me_dir.load_identity()?;
        let other = other_dir.load_identity()?;
        let address = other_dir
            .listen_address()?
            .context("partner has no listen address")?;
        let bundle = other.bundle(vec![address]);
        store_partner(me_dir, &me, &bundle)?;
        println!(
            "  {:<16} imported {}'s bundle (fingerprint {})",
            me.org_name,
            other.org_name,
            bundle.cert_fingerprint.short()
        );
    }
    Ok(())
}

/// Waits until `daemon` has an established session with every partner.
async fn wait_connected(daemon: &Daemon) -> Result<()> {
    let end = Instant::now() + STEP_TIMEOUT;
    loop {
        let status = daemon.engine().status();
        if !status.is_empty() && status.iter().all(|(_, s)| s.connected) {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("partners did not connect within {STEP_TIMEOUT:?}: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `edit` on `from` and waits until `to` reports the object; returns
/// the time from the start of the write (durable on A) to the event on B
/// (durable on B).
async fn write_and_time(from: &Store, to: &Store, edit: Edit) -> Result<(ObjectId, Duration)> {
    let id = edit.id;
    let mut events = to.subscribe_events();
    let start = Instant::now();
    from.write(vec![edit]).await?;
    let arrived = tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            match events.recv().await {
                Ok(ev) if ev.id == id => return Ok(start.elapsed()),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(anyhow::anyhow!("event stream closed: {e}")),
            }
        }
    })
    .await
    .context("change did not arrive")??;
    Ok((id, arrived))
}

fn text(obj: &Object, field: &str) -> String {
    obj.get_std(field)
        .map(|v| v.to_string())
        .unwrap_or_default()
}

fn describe(obj: &Object) -> String {
    match obj.kind {
        Kind::Contact => {
            let level = obj
                .get(&FieldKey::Custom("level".into()))
                .map(|v| format!(", custom level={v}"))
                .unwrap_or_default();
            format!(
                "{} {} <{}>{level}",
                text(obj, "first_name"),
                text(obj, "last_name"),
                text(obj, "email")
            )
        }
        Kind::Organization => format!("{} ({})", text(obj, "name"), text(obj, "city")),
        Kind::Transaction => format!(
            "{} on {}: {} {}",
            text(obj, "type"),
            text(obj, "date"),
            text(obj, "amount"),
            text(obj, "currency")
        ),
        Kind::Resume => format!("{} ({} bytes)", text(obj, "file_name"), text(obj, "size")),
        Kind::Flag => text(obj, "name"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let root = tempfile::tempdir()?;
    println!("== 1. Two instances in {}", root.path().display());
    let a_dir = InstanceDir::new(root.path().join("acme"));
    let b_dir = InstanceDir::new(root.path().join("globex"));
    for (dir, name) in [(&a_dir, "Acme Recruiting"), (&b_dir, "Globex Staffing")] {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let id = InstanceDir::create(dir.path(), name, &listen)?;
        // This tour shows sync, so the two instances are mirrors of each
        // other (both sides say so); between separate organisations
        // `orgsync share add` decides what a partner gets.
        std::fs::write(
            dir.path().join(orgsync_daemon::governance::CONFIG_FILE),
            "mirror_all_partners = true\n",
        )?;
        println!("  {name:<16} account {}  listens on {listen}", id.org_id);
    }

    println!("\n== 2. Pairing (public bundles; in real life: orgsync-keytool invite/join)");
    pair(&a_dir, &b_dir)?;

    println!("\n== 3. Starting both daemons (sled store, QUIC with pinned certificates)");
    let a = Daemon::start(a_dir.path())
        .await
        .context("starting Acme's daemon")?;
    let b = Daemon::start(b_dir.path())
        .await
        .context("starting Globex's daemon")?;
    let t = Instant::now();
    wait_connected(&a).await?;
    wait_connected(&b).await?;
    println!(
        "  connected after {:.1} ms (as mirrors: both sides set mirror_all_partners, so every record \
         flows both ways and either side may edit it; between separate organisations \
         `orgsync share add` decides what goes)",
        t.elapsed().as_secs_f64() * 1e3
    );
    let (sa, sb) = (a.store().clone(), b.store().clone());

    println!("\n== 4. Acme writes records; each is pushed to Globex at once");
    let mut timings = Vec::new();
    let org = Edit::new(ObjectId::new_v7(now_ms()), Kind::Organization)
        .set_std("name", Value::Text("Analytical Engines Ltd".into()))
        .set_std("category", Value::Text("engineering".into()))
        .set_std("city", Value::Text("London".into()));
    let (org_id, d) = write_and_time(&sa, &sb, org).await?;
    timings.push(("organization", d));
    let ada = Edit::new(ObjectId::new_v7(now_ms()), Kind::Contact)
        .set_std("first_name", Value::Text("Ada".into()))
        .set_std("last_name", Value::Text("Lovelace".into()))
        .set_std("email", Value::Text("ada@analytical.example".into()))
        .set_std("role", Value::Text("candidate".into()))
        .set_std("organization", Value::Ref(org_id))
        .set(
            FieldKey::Custom("level".into()),
            Value::Choice("senior".into()),
        );
    let (ada_id, d) = write_and_time(&sa, &sb, ada).await?;
    timings.push(("contact with custom field", d));
    let charles = Edit::new(ObjectId::new_v7(now_ms()), Kind::Contact)
        .set_std("first_name", Value::Text("Charles".into()))
        .set_std("last_name", Value::Text("Babbage".into()))
        .set_std("email", Value::Text("charles@analytical.example".into()))
        .set_std("organization", Value::Ref(org_id));
    let (_, d) = write_and_time(&sa, &sb, charles).await?;
    timings.push(("contact", d));
    let placement = Edit::new(ObjectId::new_v7(now_ms()), Kind::Transaction)
        .set_std("type", Value::Text("placement fee".into()))
        .set_std(
            "date",
            Value::Date(Date::new(2026, 11, 23).context("valid date")?),
        )
        .set_std("amount", Value::Number(4200.0))
        .set_std("currency", Value::Text("GBP".into()))
        .set_std("contact", Value::Ref(ada_id))
        .set_std("organization", Value::Ref(org_id));
    let (_, d) = write_and_time(&sa, &sb, placement).await?;
    timings.push(("transaction", d));

    // A 4 MiB résumé file: metadata as a Resume record, content as a blob on
    // its own streams, verified by BLAKE3 before it becomes visible on B.
    let cv_path = root.path().join("ada-lovelace-cv.pdf");
    write_resume_file(&cv_path)?;
    let start = Instant::now();
    let resume = orgsync::daemon::api::attach_resume_file(&sa, ada_id, &cv_path, None)
        .await
        .context("attaching the résumé")?;
    let hash = resume
        .fields
        .iter()
        .find_map(|(k, v)| match (k, v) {
            (FieldKey::Std(name), Some(Value::Hash(h))) if name == "hash" => Some(*h),
            _ => None,
        })
        .context("résumé edit has no hash")?;
    let (_, d) = write_and_time(&sa, &sb, resume).await?;
    timings.push(("résumé record", d));
    let d = wait_blob(&sb, &hash, start).await?;
    timings.push(("résumé file (4 MiB, verified)", d));
    let copy = std::fs::read(sb.blob_files().path_of(&hash))?;
    let original = std::fs::read(&cv_path)?;
    if copy != original {
        bail!("résumé content differs on Globex");
    }

    println!("  {:<32} {:>12}", "change", "arrived after");
    for (what, d) in &timings {
        println!("  {what:<32} {:>9.2} ms", d.as_secs_f64() * 1e3);
    }

    println!("\n== 5. Both edit Ada's email at the same moment");
    let on_a = Edit::new(ada_id, Kind::Contact)
        .set_std("email", Value::Text("ada@acme-edit.example".into()));
    let on_b = Edit::new(ada_id, Kind::Contact)
        .set_std("email", Value::Text("ada@globex-edit.example".into()));
    let (ra, rb) = tokio::join!(sa.write(vec![on_a]), sb.write(vec![on_b]));
    let (ra, rb) = (ra?, rb?);
    for (who, email, receipt) in [
        ("Acme  ", "ada@acme-edit.example  ", &ra),
        ("Globex", "ada@globex-edit.example", &rb),
    ] {
        let field = receipt.objects[0]
            .fields
            .get(&FieldKey::Std("email".into()));
        if let Some(state) = field {
            let v = state.version;
            println!(
                "  {who} wrote {email} at clock {} by instance {}",
                v.hlc, v.instance
            );
        }
    }
    let end = Instant::now() + STEP_TIMEOUT;
    let (ea, eb) = loop {
        let (oa, ob) = (sa.get(ada_id)?, sb.get(ada_id)?);
        let (ea, eb) = (
            oa.as_ref().map(|o| text(o, "email")),
            ob.as_ref().map(|o| text(o, "email")),
        );
        if ea == eb {
            break (ea, eb);
        }
        if Instant::now() > end {
            bail!("the replicas did not converge: Acme {ea:?}, Globex {eb:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let _ = eb;
    println!(
        "  both now hold {}: the later write by (hybrid clock, instance id) wins, on both sides",
        ea.unwrap_or_default()
    );

    println!("\n== 6. What Globex holds");
    let mut all = Vec::new();
    for kind in [
        Kind::Organization,
        Kind::Contact,
        Kind::Transaction,
        Kind::Resume,
    ] {
        all.extend(sb.list(Some(kind), None, 1000)?);
    }
    println!("  {:<13} {:<38} record", "kind", "id");
    for obj in &all {
        println!(
            "  {:<13} {:<38} {}",
            obj.kind.to_string(),
            obj.id.to_string(),
            describe(obj)
        );
    }

    println!("\n== 7. Stopping both daemons");
    a.stop().await;
    b.stop().await;
    println!("  stopped cleanly; removing {}", root.path().display());
    println!("\nNext: `cargo run --release --example console_demo` starts two paired instances with their web consoles to click through.");
    Ok(())
}

/// Waits until the blob is complete on `store`; returns the time since `start`.
async fn wait_blob(store: &Store, hash: &[u8; 32], start: Instant) -> Result<Duration> {
    let end = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(entry) = store.blob(hash)? {
            if entry.state == BlobState::Complete {
                return Ok(start.elapsed());
            }
        }
        if Instant::now() > end {
            bail!("résumé content did not arrive within {STEP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A stand-in résumé: 4 MiB of text.
fn write_resume_file(path: &Path) -> Result<()> {
    let line = "Ada Lovelace. Analyst, Analytical Engine; first published algorithm (1843).\n";
    let mut body = String::with_capacity(4 << 20);
    while body.len() < (4 << 20) - line.len() {
        body.push_str(line);
    }
    std::fs::write(path, body)?;
    Ok(())
}
