//! `orgsync backup` / `orgsyncd restore` with real daemons: a backup taken
//! while a partner's 12,000-change load streams in restores to the digest
//! its manifest recorded, rejoins its partner (which resends what the
//! restored instance lost, while the restored instance jumps its log head
//! past what the partner already holds) and converges; a killed backup
//! leaves nothing; damaged archives are refused before anything is written.

use crate::support;
use crate::support::rogue::Rogue;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orgsync_daemon::backup::restore::verify;
use support::{
    bin, contacts_ndjson, custom_values, digest_of, run, stderr, wait_for, Guard, Instance,
};

const LOAD: usize = 12_000;
const PASS: &str = "correct horse battery staple";
/// How long each step of the rogue test may take.
const STEP: Duration = Duration::from_secs(60);

fn backup_cmd(inst: &Instance, out: &Path, pass_file: &Path) -> Command {
    let mut c = Command::new(bin("orgsync"));
    c.arg("--dir")
        .arg(&inst.dir)
        .args(["backup", "--with-secrets", "-o"])
        .arg(out)
        .arg("--passphrase-file")
        .arg(pass_file)
        .env_remove("ORGSYNC_DIR")
        .env_remove("ORGSYNC_BACKUP_PASSPHRASE")
        .stdin(Stdio::null());
    c
}

fn restore_cmd(archive: &Path, dir: &Path, pass_file: &Path) -> std::process::Output {
    run(Command::new(bin("orgsyncd"))
        .arg("restore")
        .arg(archive)
        .arg("--dir")
        .arg(dir)
        .arg("--passphrase-file")
        .arg(pass_file)
        .env_remove("ORGSYNC_DIR")
        .env_remove("ORGSYNC_BACKUP_PASSPHRASE")
        .stdin(Stdio::null()))
}

fn batch_count(objects: &[serde_json::Value], batch: &str) -> usize {
    custom_values(objects, "batch")
        .iter()
        .filter(|b| *b == batch)
        .count()
}

#[test]
fn backup_under_load_restores_rejoins_and_converges() {
    let work = tempfile::tempdir().expect("tmp");
    let pass_file = work.path().join("pass");
    std::fs::write(&pass_file, format!("{PASS}\n")).expect("pass file");
    let mut a = Instance::new("bka");
    let mut b = Instance::new("bkb");
    Instance::pair(&a, &b);
    // Small, ack-paced batches from B: the load streams into A steadily for
    // seconds instead of in a few 1000-change bursts, so the backup lands
    // in the middle of it.
    let cfg = b.dir.join("orgsync.toml");
    let text = std::fs::read_to_string(&cfg).expect("orgsync.toml");
    std::fs::write(
        &cfg,
        text.replacen(
            "[sync]\n",
            "[sync]\nmax_batch_changes = 20\nmax_unacked = 40\n",
            1,
        ),
    )
    .expect("orgsync.toml");
    a.start();
    b.start();

    // A's own records, which B receives before the backup.
    a.drop_file("before.ndjson", &contacts_ndjson("a-before", 0, 100));
    wait_for("A's 100 records at B", Duration::from_secs(60), || {
        (batch_count(&b.objects(), "a-before") == 100).then_some(())
    });

    // The load: 12,000 changes written on B, streaming into A.
    b.drop_file("load.ndjson", &contacts_ndjson("b-load", 0, LOAD));
    let applied = |i: &Instance| i.metric("orgsync_changes_applied_total");
    wait_for(
        "B's load to stream into A",
        Duration::from_secs(120),
        || (applied(&a) >= 1000).then_some(()),
    );
    let archive = work.path().join("a.osb");
    let applied_before = applied(&a);
    let t = Instant::now();
    let out = run(&mut backup_cmd(&a, &archive, &pass_file));
    let backup_time = t.elapsed();
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    let applied_after = applied(&a);
    assert!(
        applied_after > applied_before && applied_after < LOAD as u64,
        "A kept applying during the backup ({applied_before} -> {applied_after} of {LOAD})"
    );
    let bytes = std::fs::read(&archive).expect("archive");
    let manifest = verify(&bytes, Some(PASS.as_bytes()))
        .expect("the archive verifies")
        .manifest;
    eprintln!("{}", stderr(&out).trim());
    assert!(manifest.with_secrets);
    assert_eq!(manifest.log_head, 100, "A's own log at the snapshot");
    let snapshot_load = (manifest.objects - 100) as u64;
    assert!(
        snapshot_load >= applied_before && snapshot_load <= applied_after,
        "the snapshot point lies inside the backup: {snapshot_load} of B's changes, applied {applied_before}..{applied_after}"
    );

    // The load finishes and reaches A; A writes more that B acknowledges.
    wait_for("the load at A", Duration::from_secs(300), || {
        (a.digest().0 == 100 + LOAD).then_some(())
    });
    a.drop_file("lost.ndjson", &contacts_ndjson("a-lost", 0, 20));
    wait_for("A's later records at B", Duration::from_secs(60), || {
        (batch_count(&b.objects(), "a-lost") == 20).then_some(())
    });
    a.wait_synced(Duration::from_secs(60));
    let a_acked_by_b = a.acked_by("bkb");
    assert_eq!(a_acked_by_b, 120);

    // A's disk is lost. Restore into a new directory while B is down.
    a.stop();
    b.stop();
    let mut a2 = Instance::new("bka2");
    std::fs::remove_dir_all(&a2.dir).expect("clear the restore target");
    let t = Instant::now();
    let out = restore_cmd(&archive, &a2.dir, &pass_file);
    let restore_time = t.elapsed();
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    eprintln!("{}", support::stdout(&out).trim());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: PathBuf| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(a2.dir.clone()), 0o700);
        assert_eq!(mode(a2.dir.join("secrets")), 0o700);
        assert_eq!(mode(a2.dir.join("secrets/tls.key")), 0o600);
    }
    a2.start();
    let restored = a2.digest();
    assert_eq!(
        restored,
        (manifest.objects, manifest.digest.clone()),
        "the restored instance holds exactly the snapshot"
    );
    let status = a2.status();
    assert_ne!(
        status["instance"].as_str(),
        Some(manifest.instance.as_str()),
        "a restored instance gets a new instance id"
    );

    // B comes back: it resends what A lost, A2 jumps its log past B's cursor.
    let t = Instant::now();
    b.start();
    wait_for(
        "B's whole load at the restored A",
        Duration::from_secs(300),
        || (batch_count(&a2.objects(), "b-load") == LOAD).then_some(()),
    );
    assert!(
        a2.log_text().contains("restored from a backup"),
        "the jump is logged"
    );
    // New writes of the restored instance get numbers B has never seen.
    a2.drop_file("new.ndjson", &contacts_ndjson("a-new", 0, 10));
    wait_for(
        "the restored A's new records at B",
        Duration::from_secs(60),
        || (batch_count(&b.objects(), "a-new") == 10).then_some(()),
    );
    a2.wait_synced(Duration::from_secs(60));
    assert!(
        a2.log_head() > a_acked_by_b,
        "the log head jumped past B's cursor"
    );
    let converge = t.elapsed();

    // Both hold the same records, except A's 20 records written after the
    // snapshot: they exist only as B's copy (B never sends A's changes back).
    let b_objects: Vec<_> = b
        .objects()
        .into_iter()
        .filter(|o| o["custom"]["batch"] != "a-lost")
        .collect();
    let a2_digest = a2.digest();
    assert_eq!(digest_of(&b_objects), a2_digest, "converged");
    let unchanged = a2.metric("orgsync_changes_unchanged_total");
    eprintln!(
        "backup: archive {} bytes, backup {:.0} ms (A applied {applied_before}->{applied_after} of B's {LOAD} changes meanwhile), write pause {:.1} ms, snapshot {} objects; restore {:.0} ms; rejoin+converge {:.1} s ({} objects, {unchanged} resent changes already held)",
        bytes.len(),
        backup_time.as_secs_f64() * 1000.0,
        manifest.write_pause_us as f64 / 1000.0,
        manifest.objects,
        restore_time.as_secs_f64() * 1000.0,
        converge.as_secs_f64(),
        a2_digest.0,
    );
    Instance::stop_all(&mut [&mut a2, &mut b], Duration::from_secs(10));
}

#[test]
fn killed_backup_leaves_nothing_and_damaged_archives_are_refused() {
    let work = tempfile::tempdir().expect("tmp");
    let pass_file = work.path().join("pass");
    std::fs::write(&pass_file, format!("{PASS}\n")).expect("pass file");
    let wrong_file = work.path().join("wrong");
    std::fs::write(&wrong_file, "not the passphrase\n").expect("pass file");
    let mut a = Instance::new("bkk");
    a.start();
    a.drop_file("data.ndjson", &contacts_ndjson("data", 0, 3000));
    wait_for("the records", Duration::from_secs(120), || {
        (a.log_head() >= 3000).then_some(())
    });

    // kill -9 while the archive is being written: caught with its nameless
    // file open, nothing is left in the output directory.
    let out_dir = work.path().join("out");
    std::fs::create_dir(&out_dir).expect("out dir");
    let archive = out_dir.join("a.osb");
    let mut kills = 0;
    for _ in 0..20 {
        let child = backup_cmd(&a, &archive, &pass_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn backup");
        let pid = child.id();
        let mut guard = Guard(Some(child));
        let fd_dir = PathBuf::from(format!("/proc/{pid}/fd"));
        let caught = wait_for("the backup to run", Duration::from_secs(30), || {
            if guard.try_exited().is_some() {
                return Some(false);
            }
            let open_tmp = std::fs::read_dir(&fd_dir).ok()?.flatten().any(|e| {
                std::fs::read_link(e.path())
                    .map(|t| t.starts_with(&out_dir) && t.to_string_lossy().ends_with("(deleted)"))
                    .unwrap_or(false)
            });
            open_tmp.then_some(true)
        });
        if caught {
            guard.kill9();
            kills += 1;
            let left: Vec<_> = std::fs::read_dir(&out_dir)
                .expect("list")
                .flatten()
                .collect();
            assert!(left.is_empty(), "a killed backup left {left:?}");
            if kills >= 3 {
                break;
            }
        } else {
            // It finished before we saw it: remove and try again.
            let _ = std::fs::remove_file(&archive);
        }
    }
    assert!(kills >= 1, "never caught a backup in progress");

    // A complete archive, then three damaged copies.
    let out = run(&mut backup_cmd(&a, &archive, &pass_file));
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    let bytes = std::fs::read(&archive).expect("archive");
    let truncated = work.path().join("truncated.osb");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let flipped = work.path().join("flipped.osb");
    let mut f = bytes.clone();
    let at = f.len() / 2;
    f[at] ^= 0x40;
    std::fs::write(&flipped, &f).expect("write");
    let cases = [
        (&archive, &wrong_file, "wrong passphrase"),
        (&truncated, &pass_file, "truncated"),
        (&flipped, &pass_file, "corrupt"),
    ];
    let mut messages = Vec::new();
    for (file, pass, expect) in cases {
        let target = work.path().join(format!("restore-{expect}"));
        let out = restore_cmd(file, &target, pass);
        let msg = stderr(&out);
        assert!(!out.status.success(), "{expect}: restore succeeded");
        assert!(msg.contains(expect), "{expect}: message was {msg}");
        assert!(!target.exists(), "{expect}: something was written");
        messages.push(msg.trim().to_string());
    }
    // A non-empty target is refused before reading the archive.
    let out = restore_cmd(&archive, &a.dir, &pass_file);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    eprintln!(
        "backup kill/damage: {kills} backups killed mid-write left nothing; refused: {}",
        messages.join(" | ")
    );
    a.stop();
}

/// What if a partner lies after a restore? A restored instance lets each
/// partner move its log head once, in that partner's first session after
/// the restore (the partner may hold entries the lost disk had). A rogue
/// partner that claims even more of the log in a later session is refused,
/// and the head it claimed is never taken.
#[test]
fn a_partner_moves_a_restored_head_only_in_its_first_session() {
    let work = tempfile::tempdir().expect("tmp");
    let pass_file = work.path().join("pass");
    std::fs::write(&pass_file, format!("{PASS}\n")).expect("pass file");
    let mut a = Instance::new("Rsa");
    let mallory = Instance::new("Mallory"); // never started: the rogue is Mallory
    Instance::pair(&a, &mallory);
    a.start();
    a.drop_file("own.ndjson", &contacts_ndjson("a-own", 0, 10));
    wait_for("A's 10 records in its log", Duration::from_secs(60), || {
        (a.log_head() == 10).then_some(())
    });
    let archive = work.path().join("a.osb");
    let out = run(&mut backup_cmd(&a, &archive, &pass_file));
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    a.stop();
    let mut a2 = Instance::new("Rsa2");
    std::fs::remove_dir_all(&a2.dir).expect("clear the restore target");
    let out = restore_cmd(&archive, &a2.dir, &pass_file);
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    a2.start();
    assert_eq!(a2.log_head(), 10, "the restored log");

    // The restored instance listens where A did (its config came back).
    let addr = SocketAddr::from(([127, 0, 0, 1], a.port));
    let rogue = Rogue::new(&mallory.dir, "Rsa", addr);
    // First session after the restore: Mallory says it applied up to 1,000
    // (A's lost disk could have had that much); the head jumps past it.
    let first = rogue
        .connect_claiming(1_000)
        .unwrap_or_else(|e| panic!("the first session after the restore was refused: {e}"));
    wait_for("the jump past Mallory's cursor", STEP, || {
        (a2.log_head() >= 1_000).then_some(())
    });
    let jumped = a2.log_head();
    // Established is when A2 records that Mallory has reconciled.
    wait_for("the session with Mallory established", STEP, || {
        a2.log_text()
            .lines()
            .any(|l| l.contains("session established") && l.contains("partner=Mallory"))
            .then_some(())
    });
    drop(first);

    // A later session claiming more: refused, the head stays.
    // The rogue's side may see the session established (it got A2's
    // Hello) before A2 has checked the rogue's: then A2 closes it.
    let reason = match rogue.connect_claiming(5_000) {
        Ok(conn) => conn.closed(STEP).reason,
        Err(e) => e,
    };
    wait_for("A2 to log the refusal", STEP, || {
        a2.log_text()
            .contains("claims to have applied our log up to 5000")
            .then_some(())
    });
    assert_eq!(a2.log_head(), jumped, "the refused claim moved the head");
    // A2's next record gets the number after the one jump.
    a2.drop_file("next.ndjson", &contacts_ndjson("a-next", 0, 1));
    wait_for("A2's next record in its log", STEP, || {
        (a2.log_head() == jumped + 1).then_some(())
    });
    // An honest claim (what A2 really holds) is still welcome.
    let honest = rogue.connect_claiming(jumped);
    assert!(
        honest.is_ok(),
        "an honest session was refused: {:?}",
        honest.err()
    );
    eprintln!(
        "restore claims: first session jumped the head 10 -> {jumped}; a later claim of 5000 was refused ({reason}); the head stayed, the next record got {}",
        jumped + 1
    );
}
