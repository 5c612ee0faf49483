//! End-to-end: a daemon of this release (protocol 1..=2) and one held to
//! the previous release's protocol (`[sync] max_protocol_version = 1`, the
//! previous wire format kept byte-identical) pair and sync both ways:
//! records, a concurrent edit, a résumé file each way; both report the
//! negotiated version. When the older side is upgraded the pair moves to
//! protocol 2 and each side sees the other's clock skew. A daemon that
//! requires a version its partner does not speak syncs nothing, and both
//! sides' status and log say what is wrong and what to do.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use support::Instance;

const SYNC: Duration = Duration::from_secs(60);

/// Puts `lines` into the instance's `[sync]` section (the rig writes one).
fn set_sync(inst: &Instance, lines: &str) {
    let path = inst.dir.join("orgsync.toml");
    let text = std::fs::read_to_string(&path).expect("orgsync.toml");
    assert!(text.contains("[sync]\n"), "{text}");
    let text = text.replacen("[sync]\n", &format!("[sync]\n{lines}\n"), 1);
    std::fs::write(&path, text).expect("write orgsync.toml");
}

/// Removes a line put in by [`set_sync`].
fn unset_sync(inst: &Instance, line: &str) {
    let path = inst.dir.join("orgsync.toml");
    let text = std::fs::read_to_string(&path).expect("orgsync.toml");
    assert!(text.contains(line), "{text}");
    std::fs::write(&path, text.replacen(&format!("{line}\n"), "", 1)).expect("write");
}

/// `partner`'s entry in `inst`'s `orgsync status --json`.
fn partner(inst: &Instance, partner: &str) -> Json {
    let s = inst.status();
    s["partners"]
        .as_array()
        .expect("partners")
        .iter()
        .find(|p| p["name"] == partner)
        .cloned()
        .unwrap_or_else(|| panic!("{partner} missing from {}'s status: {s}", inst.name))
}

/// Waits until `inst` is connected to `name` and reports a protocol version.
fn wait_connected(inst: &Instance, name: &str) -> Json {
    support::wait_for(&format!("{} connected to {name}", inst.name), SYNC, || {
        let p = partner(inst, name);
        (p["connected"] == true && p["protocol_version"].is_u64()).then_some(p)
    })
}

/// Waits until `inst` holds object `id`.
fn wait_for_object(inst: &Instance, id: &str) {
    support::wait_for(&format!("{id} on {}", inst.name), SYNC, || {
        inst.cli(&["get", id]).status.success().then_some(())
    });
}

/// Deterministic, incompressible file content (BLAKE3's output stream).
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.finalize_xof().fill(&mut out);
    out
}

/// Attaches a résumé of `data` to `contact` on `inst`; returns its id.
fn attach(inst: &Instance, contact: &str, name: &str, data: &[u8]) -> String {
    let src = inst.dir.parent().expect("tmp").join(name);
    std::fs::write(&src, data).expect("write résumé");
    inst.cli_ok(&["attach-resume", contact, src.to_str().expect("utf-8")])
        .trim()
        .to_string()
}

/// Waits until `inst` serves résumé `id`; returns its content.
fn fetch(inst: &Instance, id: &str) -> Vec<u8> {
    let out = inst.dir.parent().expect("tmp").join(format!("got-{id}"));
    support::wait_for(&format!("résumé {id} on {}", inst.name), SYNC, || {
        inst.cli(&["get-resume", id, "-o", out.to_str().expect("utf-8")])
            .status
            .success()
            .then_some(())
    });
    std::fs::read(&out).expect("read fetched résumé")
}

#[test]
fn this_release_and_the_previous_protocol_sync_both_ways() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    // B plays the previous release: it speaks protocol 1 only.
    set_sync(&b, "max_protocol_version = 1");
    Instance::pair(&a, &b);
    a.start();
    b.start();
    let t0 = Instant::now();

    // Both report the negotiated version, and no clock (protocol 1 has none).
    for (inst, other) in [(&a, "Globex"), (&b, "Acme")] {
        let p = wait_connected(inst, other);
        assert_eq!(p["protocol_version"], 1, "{}: {p}", inst.name);
        assert_eq!(p["clock_skew_ms"], Json::Null, "{}: {p}", inst.name);
    }

    // Records both ways.
    let org_a = a.put("organization", &["--set", "name=Acme Corp"]);
    let ada = a.put(
        "contact",
        &[
            "--set",
            "first_name=Ada",
            "--set",
            &format!("organization={org_a}"),
            "--custom",
            "level=senior",
        ],
    );
    let grace = b.put(
        "contact",
        &["--set", "first_name=Grace", "--custom", "level=lead"],
    );
    // A résumé each way (256 KiB and 300 KiB: several chunks each).
    let cv_a = content(256 << 10, 7);
    let cv_b = content(300 << 10, 11);
    let resume_a = attach(&a, &ada, "ada.pdf", &cv_a);
    let resume_b = attach(&b, &grace, "grace.pdf", &cv_b);

    // A concurrent edit: both sides set the same field of Ada once B has
    // her, and each a field of its own.
    wait_for_object(&b, &ada);
    for (inst, field, side) in [
        (&a, "email=ada@acme.example", "a"),
        (&b, "phone=+33 1 23", "b"),
    ] {
        let status = format!("status={side}-side");
        inst.cli_ok(&["set", &ada, "--set", field, "--custom", &status]);
    }

    a.wait_synced(SYNC);
    b.wait_synced(SYNC);
    assert_eq!(fetch(&b, &resume_a), cv_a, "A's résumé on B");
    assert_eq!(fetch(&a, &resume_b), cv_b, "B's résumé on A");
    a.wait_synced(SYNC);
    b.wait_synced(SYNC);
    let (na, da) = a.digest();
    let (nb, db) = b.digest();
    assert_eq!(na, 5, "2 contacts, an organization and 2 résumés");
    assert_eq!((na, &da), (nb, &db), "A and B hold the same objects");
    let merged = a.cli_json(&["get", &ada]);
    assert_eq!(merged["fields"]["email"], "ada@acme.example");
    assert_eq!(merged["fields"]["phone"], "+33 1 23");
    let status = merged["custom"]["status"].as_str().expect("status");
    assert!(status == "a-side" || status == "b-side", "{status}");
    assert_eq!(
        b.cli_json(&["get", &ada])["custom"]["status"],
        status,
        "one value won on both sides"
    );
    let v1_ms = t0.elapsed().as_millis();
    for (inst, other) in [(&a, "Globex"), (&b, "Acme")] {
        let p = partner(inst, other);
        assert_eq!(p["protocol_version"], 1, "{}: {p}", inst.name);
        assert_eq!(p["not_acked"], 0, "{}: {p}", inst.name);
    }

    // B is upgraded: the pair moves to protocol 2, keeps syncing, and each
    // side measures the other's clock (same machine: a small skew).
    b.stop();
    unset_sync(&b, "max_protocol_version = 1");
    b.start();
    let t1 = Instant::now();
    let mut skews = Vec::new();
    for (inst, other) in [(&a, "Globex"), (&b, "Acme")] {
        let p = support::wait_for(
            &format!("{} to see {other} on protocol 2 with a clock", inst.name),
            SYNC,
            || {
                let p = partner(inst, other);
                (p["connected"] == true
                    && p["protocol_version"] == 2
                    && p["clock_skew_ms"].is_i64())
                .then_some(p)
            },
        );
        let skew = p["clock_skew_ms"].as_i64().expect("skew");
        assert!(
            skew.abs() < 1_000,
            "{}: skew {skew} ms on one machine",
            inst.name
        );
        skews.push(skew);
    }
    let after = b.put("contact", &["--set", "first_name=Katherine"]);
    wait_for_object(&a, &after);
    let edit = a.put("contact", &["--set", "first_name=Dorothy"]);
    wait_for_object(&b, &edit);
    a.wait_synced(SYNC);
    b.wait_synced(SYNC);
    assert_eq!(a.digest(), b.digest(), "still converged on protocol 2");
    eprintln!(
        "versions: A 1..=2 with B 1..=1 negotiated 1, synced 5 objects (2 résumés of 256/300 KiB, a concurrent edit) in {v1_ms} ms; after B's upgrade negotiated 2 in {} ms, clock skew A->B {} ms, B->A {} ms",
        t1.elapsed().as_millis(),
        skews[0],
        skews[1]
    );
    a.stop();
    b.stop();
}

#[test]
fn no_common_version_syncs_nothing_and_says_what_to_do() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    set_sync(&a, "min_protocol_version = 2");
    set_sync(&b, "max_protocol_version = 1");
    Instance::pair(&a, &b);
    a.start();
    b.start();
    let id = a.put("contact", &["--set", "first_name=Ada"]);

    let want_a = "Globex speaks protocol 1..=1, this instance needs 2..=2: upgrade Globex's orgsync or lower [sync] min_protocol_version";
    let want_b = "Acme speaks protocol 2..=2, this instance speaks only 1..=1: upgrade this instance's orgsync (or raise [sync] max_protocol_version if it was lowered) or ask Acme to lower its [sync] min_protocol_version";
    let t0 = Instant::now();
    for (inst, other, want) in [(&a, "Globex", want_a), (&b, "Acme", want_b)] {
        let p = support::wait_for(
            &format!("{}'s status to name the version problem", inst.name),
            SYNC,
            || {
                let p = partner(inst, other);
                (p["last_error"].as_str() == Some(want)).then_some(p)
            },
        );
        assert_eq!(p["connected"], false, "{}: {p}", inst.name);
        assert_eq!(p["protocol_version"], Json::Null, "{}: {p}", inst.name);
        let log = inst.log_text();
        assert!(
            log.contains(want),
            "{}'s log lacks {want:?}:\n{log}",
            inst.name
        );
    }
    let told_ms = t0.elapsed().as_millis();
    // Nothing went through, and it never will: A still has its change.
    assert!(
        !b.cli(&["get", &id]).status.success(),
        "the contact reached B without a common protocol"
    );
    assert_eq!(b.objects().len(), 0);
    assert_eq!(partner(&a, "Globex")["not_acked"], 1);
    eprintln!("versions: A 2..=2 with B 1..=1: refused, both sides told in {told_ms} ms");
    a.stop();
    b.stop();
}

#[test]
fn a_protocol_range_the_build_cannot_speak_is_refused_at_start() {
    let a = Instance::new("Acme");
    for (lines, key, says) in [
        (
            "max_protocol_version = 3",
            "sync.max_protocol_version",
            "out of range (allowed 1..=2",
        ),
        (
            "min_protocol_version = 2\nmax_protocol_version = 1",
            "sync.min_protocol_version",
            "2 is above sync.max_protocol_version (1)",
        ),
    ] {
        set_sync(&a, lines);
        let out = support::run(
            Command::new(support::bin("orgsyncd"))
                .arg("--dir")
                .arg(&a.dir)
                .env_remove("RUST_LOG"),
        );
        let err = support::stderr(&out);
        assert!(!out.status.success(), "orgsyncd started with {lines:?}");
        assert!(err.contains(key) && err.contains(says), "{lines:?}: {err}");
        assert!(
            err.contains(&Path::new("orgsync.toml").display().to_string()),
            "{err}"
        );
        for line in lines.lines() {
            unset_sync(&a, line);
        }
    }
}
