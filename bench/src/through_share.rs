//! Scenario 1s (issue 16 item 5): replication through a real share instead
//! of a mirror, so the authority checks and the inbox are on the measured
//! path. The mirror rate is measured in the same process just before, on a
//! fresh pair, and is the row's baseline.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use orgsync_daemon::governance::{inbox, shares, CONFIG_FILE};
use orgsync_daemon::store::Edit;
use orgsync_protocol::model::{FieldKey, Kind, ObjectId, Value};
use orgsync_protocol::share::{AccessType, Selection, Selector};

use crate::cluster::{contact, Node};
use crate::progress;
use crate::report::Row;
use crate::scenarios::{paired, replication_on, start_pair, CONNECT_TIMEOUT};

/// Makes `node` an ordinary instance: no mirror, so a partner gets only
/// what a share selects (what `Node::create` sets for the other scenarios
/// is taken back before the daemon starts).
fn no_mirror(node: &Node) -> Result<()> {
    std::fs::write(node.dir.join(CONFIG_FILE), "")
        .with_context(|| format!("writing {}'s governance config", node.name()))
}

/// Scenario 1 (mirror) and then the same `n` contacts A→B through a share:
/// on A a flag and a share of it with B (operator access), on B the inbox
/// policy for A set to auto-approve, each contact written on A carrying
/// the flag, in batches of 1,000. The clock runs from A's first write until
/// B holds the last contact and counts `n` flagged contacts (B applies them
/// only once the share announced them and the inbox approved them).
pub async fn share_vs_mirror(n: u64, sled_baseline: f64) -> Result<Vec<Row>> {
    let mirror_root = tempfile::tempdir()?;
    let (mut ma, mut mb) = paired(mirror_root.path())?;
    progress::waiting_for("the mirror run (scenario 1) to finish");
    let mirror = replication_on(&mut ma, &mut mb, n, sled_baseline, 0.0).await?;
    let mirror_rate = mirror
        .last()
        .map(|r| r.value)
        .context("scenario 1 gave no rate")?;
    drop(mirror_root);

    let root = tempfile::tempdir()?;
    let (mut a, mut b) = paired(root.path())?;
    no_mirror(&a)?;
    no_mirror(&b)?;
    start_pair(&mut a, &mut b, false).await?;
    let gov_a = a
        .daemon()
        .governance()
        .context("A runs without governance")?;
    let gov_b = b
        .daemon()
        .governance()
        .context("B runs without governance")?;
    let flag = ObjectId::new_v7(1_690_000_000_000);
    a.daemon()
        .store()
        .write(vec![
            Edit::new(flag, Kind::Flag).set_std("name", Value::Text("Bench".into()))
        ])
        .await?;
    inbox::set_auto(gov_b, &a.org, true, "bench")
        .await
        .map_err(|e| anyhow::anyhow!("B's inbox policy: {e}"))?;
    shares::create(
        gov_a,
        shares::NewShare {
            partners: vec![b.org],
            selection: Selection {
                rules: vec![Selector::Flag(flag)],
            },
            access: AccessType::Operator,
            terms: None,
            label: "bench".into(),
            request: None,
            code_valid_ms: None,
            by: "bench".into(),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("sharing the flag with B: {e}"))?;
    progress::waiting_for(format!("{} to receive the shared flag", b.name()));
    wait_for(&b, flag, Duration::from_millis(5)).await?;

    let store_a = a.daemon().store().clone();
    let start = Instant::now();
    progress::waiting_for(format!("{} to write {n} flagged contacts", a.name()));
    let mut last = flag;
    let mut i = 0;
    while i < n {
        let k = 1_000.min(n - i);
        let batch: Vec<Edit> = (i..i + k)
            .map(|j| contact(j).set(FieldKey::Flag(flag), Value::Bool(true)))
            .collect();
        last = batch.last().map_or(last, |e| e.id);
        store_a.write(batch).await?;
        i += k;
    }
    let written = start.elapsed();
    progress::waiting_for(format!("{} to hold the {n} shared contacts", b.name()));
    wait_for(&b, last, Duration::from_millis(1)).await?;
    let mut secs = start.elapsed().as_secs_f64();
    // The last contact in does not prove the others are: count them (a
    // count that falls short is repeated, and the clock then stops at the
    // count that finds them all, an upper bound).
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let held = count_flagged(&b, flag)?;
        if held == n {
            break;
        }
        if Instant::now() > deadline {
            bail!("B holds {held} of the {n} shared contacts");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        secs = start.elapsed().as_secs_f64();
    }
    eprintln!(
        "share: {n} flagged contacts written on A in {:.2} s, all on B after {secs:.2} s (mirror in the same run: {mirror_rate:.0}/s)",
        written.as_secs_f64()
    );
    a.stop().await?;
    b.stop().await?;
    let rate = n as f64 / secs;
    Ok(vec![
        Row::info(
            "1s share: A's local write rate meanwhile",
            "objects/s",
            n as f64 / written.as_secs_f64(),
        ),
        Row {
            scenario: "1s replication through a share (flag, auto-approve) vs mirror".into(),
            metric: "objects/s".into(),
            value: rate,
            baseline: Some(mirror_rate),
            target: ">= 0.9x mirror".into(),
            pass: Some(rate >= 0.9 * mirror_rate),
        },
    ])
}

/// Waits until `node` holds object `id`.
async fn wait_for(node: &Node, id: ObjectId, every: Duration) -> Result<()> {
    let store = node.daemon().store();
    let deadline = Instant::now() + Duration::from_secs(600).max(CONNECT_TIMEOUT);
    while store.get(id)?.is_none() {
        if Instant::now() > deadline {
            bail!("{} never received {id}", node.name());
        }
        tokio::time::sleep(every).await;
    }
    Ok(())
}

/// How many contacts on `node` carry `flag`.
fn count_flagged(node: &Node, flag: ObjectId) -> Result<u64> {
    let store = node.daemon().store();
    let mut after = None;
    let mut count = 0;
    loop {
        let page = store.list(Some(Kind::Contact), after, 10_000)?;
        let Some(last) = page.last() else {
            return Ok(count);
        };
        after = Some(last.id);
        count += page
            .iter()
            .filter(|o| o.get(&FieldKey::Flag(flag)) == Some(&Value::Bool(true)))
            .count() as u64;
    }
}
