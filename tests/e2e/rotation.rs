//! Key rotation must be proven by the key it replaces (issue 13, part 1).
//!
//! The attack: M, a real second partner of Acme, sends a bundle claiming
//! partner Globex's account number at Globex's epoch + 1 with M's own key
//! and certificate. Before rotation proofs, `import` took it as a rotation
//! and swapped Globex's pinned key and certificate for M's. Here it is
//! played against the real `orgsync-keytool` (import, invite, join) and the
//! real daemon's pending-peer `partner accept`, with forged and broken
//! rotation chains; and a genuine rotation is shown to keep two real daemons
//! syncing.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use orgsync_keytool::bundle::Bundle;
use orgsync_keytool::pairing::{self, InviteListener, InviteParams, JoinParams};
use orgsync_keytool::{words, Identity, InstanceDir};
use orgsync_protocol::identity::{Fingerprint, OrgKeyPair};
use orgsync_protocol::rotation::{RotationChain, RotationLink};
use support::{bin, run, stderr, stdout, wait_for, Guard, Instance};

const SYNC: Duration = Duration::from_secs(60);

/// Runs `orgsync-keytool --dir DIR ARGS` (success or not).
fn keytool(inst: &Instance, args: &[&str]) -> Output {
    run(Command::new(bin("orgsync-keytool"))
        .arg("--dir")
        .arg(&inst.dir)
        .args(args))
}

fn partners_bytes(inst: &Instance) -> Vec<u8> {
    std::fs::read(inst.dir.join("partners.toml")).expect("partners.toml")
}

fn identity(inst: &Instance) -> Identity {
    InstanceDir::new(&inst.dir)
        .load_identity()
        .expect("load identity")
}

/// The bundle `inst` exports (`orgsync-keytool export`).
fn exported(inst: &Instance) -> Bundle {
    let path = inst.dir.parent().expect("tmp").join("own.bundle");
    inst.keytool(&["export", "-o", path.to_str().expect("utf-8")]);
    Bundle::parse(&std::fs::read_to_string(&path).expect("bundle")).expect("parse own bundle")
}

/// Writes `bundle` next to `inst` (for `import` / `partner accept`).
fn write_bundle(inst: &Instance, name: &str, bundle: &Bundle) -> String {
    let path = inst.dir.parent().expect("tmp").join(name);
    std::fs::write(&path, bundle.to_line() + "\n").expect("write bundle");
    path.to_str().expect("utf-8").to_string()
}

/// `import FILE --yes` must fail saying `why`, leaving partners.toml
/// byte-identical. Returns the refusal line.
fn import_refused(inst: &Instance, file: &str, why: &str) -> String {
    let before = partners_bytes(inst);
    let out = keytool(inst, &["import", file, "--yes"]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "{}: import {file} was accepted: {}",
        inst.name,
        stdout(&out)
    );
    assert!(err.contains(why), "import {file} said {err:?}, not {why:?}");
    assert_eq!(
        partners_bytes(inst),
        before,
        "{}: partners.toml changed on a refused import",
        inst.name
    );
    err.lines()
        .find(|l| l.contains("REFUSED"))
        .unwrap_or(err.trim())
        .to_string()
}

/// M's identity dressed up as Globex: Globex's account number at epoch
/// `epoch`, M's key, M's certificate. `self_proof` keeps M's own rotation
/// link (signed by M's key for M's account) so the bundle carries a proof
/// that does not start from Globex's key; otherwise it carries none.
fn forged_identity(m: &Instance, victim: &Identity, epoch: u32, self_proof: bool) -> Identity {
    let mut id = identity(m);
    id.org_id = victim.org_id;
    id.org_name = victim.org_name.clone();
    if self_proof {
        assert_eq!(id.epoch, epoch, "M rotated to the claimed epoch");
    } else {
        let key = id.keys.remove(&id.epoch).expect("current key");
        id.keys.clear();
        id.rotations.clear();
        id.keys.insert(epoch, key);
        id.epoch = epoch;
    }
    id
}

fn wait_for_object(inst: &Instance, id: &str) {
    wait_for(&format!("{id} on {}", inst.name), SYNC, || {
        inst.cli(&["get", id]).status.success().then_some(())
    });
}

/// A running `orgsync-keytool invite` with its code and address; stderr
/// lines are collected as they come.
struct Invite {
    proc: Guard,
    code: String,
    addr: String,
    stderr: mpsc::Receiver<String>,
}

/// A pairing code line: `N-word-word`.
fn is_code(line: &str) -> bool {
    let parts: Vec<&str> = line.split('-').collect();
    parts.len() == 3
        && parts[0].parse::<u32>().is_ok()
        && parts[1..]
            .iter()
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
}

fn start_invite(inst: &Instance) -> Invite {
    let mut child = Command::new(bin("orgsync-keytool"))
        .arg("--dir")
        .arg(&inst.dir)
        .args(["invite", "--listen", "127.0.0.1:0", "--expires", "2m"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn invite");
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    let proc = Guard(Some(child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (etx, erx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = etx.send(line);
        }
    });
    let (mut addr, mut code) = (None, None);
    let end = Instant::now() + Duration::from_secs(30);
    while addr.is_none() || code.is_none() {
        let left = end.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("invite printed its address and code");
        if let Some(rest) = line.strip_prefix("listening on ") {
            addr = rest.split_whitespace().next().map(str::to_string);
        } else if is_code(line.trim()) {
            code = Some(line.trim().to_string());
        }
    }
    Invite {
        proc,
        code: code.unwrap_or_default(),
        addr: addr.unwrap_or_default(),
        stderr: erx,
    }
}

impl Invite {
    /// Waits for the invite to exit; its status and whole stderr.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = wait_for("invite to exit", Duration::from_secs(30), || {
            self.proc.try_exited()
        });
        let mut text = String::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            text.push_str(&l);
            text.push('\n');
        }
        (status, text)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn pending_fps(inst: &Instance) -> Vec<String> {
    inst.cli_json(&["partner", "pending"])["pending"]
        .as_array()
        .expect("pending")
        .iter()
        .filter_map(|p| p["fingerprint"].as_str())
        .map(|f| f.parse::<Fingerprint>().expect("fingerprint").to_string())
        .collect()
}

/// The takeover bundle (M claims Globex's account at Globex's epoch + 1)
/// is refused at `import`, at code pairing in both roles, and at the
/// daemon's pending-peer `accept`; Acme's partners.toml and store stay
/// byte/digest-identical and Globex keeps syncing with Acme.
#[test]
fn a_partner_cannot_take_over_another_partners_account() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    let m = Instance::new("Mallory");
    Instance::pair(&a, &b);
    Instance::pair(&a, &m);
    a.start();
    b.start();
    let first = b.put("organization", &["--set", "name=Before the attack"]);
    wait_for_object(&a, &first);

    let gid = identity(&b);
    let before = partners_bytes(&a);
    let digest_before = a.digest();
    let mut outcomes = Vec::new();

    // 1. import: the bundle with no proof, then with M's own "proof".
    let mid = identity(&m);
    let takeover = Bundle {
        org_name: gid.org_name.clone(),
        org_id: gid.org_id,
        public_key: mid.public_key(),
        epoch: gid.epoch + 1,
        cert_fingerprint: mid.fingerprint,
        addresses: vec![format!("127.0.0.1:{}", m.port)],
        rotation: None,
    };
    let f = write_bundle(&a, "takeover.bundle", &takeover);
    let line = import_refused(&a, &f, "without proof from the old key");
    assert!(
        line.contains("by phone") && line.contains("orgsync-keytool revoke"),
        "{line}"
    );
    outcomes.push(format!("import, no proof: {line}"));
    m.keytool(&["rotate"]);
    let self_proven = forged_identity(&m, &gid, 1, true).bundle(takeover.addresses.clone());
    assert!(self_proven.rotation.is_some());
    let f = write_bundle(&a, "takeover-proof.bundle", &self_proven);
    let line = import_refused(&a, &f, "does not start from the key on file");
    outcomes.push(format!("import, M-signed proof: {line}"));

    // 2. Code pairing, Acme invites (real binary), M joins as "Globex".
    let rt = runtime();
    for self_proof in [false, true] {
        let forged = forged_identity(&m, &gid, 1, self_proof);
        let inv = start_invite(&a);
        let code = words::normalize(&inv.code).expect("code");
        let m_dir = InstanceDir::new(&m.dir);
        let joined = rt.block_on(pairing::join(JoinParams {
            dir: &m_dir,
            identity: &forged,
            connect: inv.addr.clone(),
            expected: identity(&a).org_id,
            code,
            addresses: vec![],
        }));
        let err = joined
            .expect_err("Acme paired with the forged Globex")
            .to_string();
        let (status, inv_err) = inv.finish();
        assert!(!status.success(), "invite succeeded: {inv_err}");
        let why = if self_proof {
            "does not start from the key on file"
        } else {
            "without proof from the old key"
        };
        assert!(err.contains(why), "joiner saw {err:?}");
        assert!(inv_err.contains(why), "inviter said {inv_err:?}");
        assert_eq!(partners_bytes(&a), before, "partners.toml changed (invite)");
        outcomes.push(format!(
            "invite (self_proof={self_proof}): refused, joiner saw: {}",
            err.lines().next().unwrap_or_default()
        ));
    }

    // 3. Code pairing, M invites as "Globex", Acme's admin joins with
    //    Globex's account number (real binary).
    {
        let forged = forged_identity(&m, &gid, 1, false);
        // quinn binds its socket on the runtime.
        let _rt = rt.enter();
        let listener = InviteListener::bind(&forged, "127.0.0.1:0".parse().expect("addr"))
            .expect("bind forged invite");
        let addr = listener.local_addr().expect("addr").to_string();
        let code = words::generate();
        let m_dir = InstanceDir::new(&m.dir);
        let join_cmd = {
            let (dir, code, account) = (a.dir.clone(), code.clone(), gid.org_id.to_string());
            move || {
                run(Command::new(bin("orgsync-keytool"))
                    .arg("--dir")
                    .arg(&dir)
                    .args(["join", "--connect", &addr, "--account", &account, &code]))
            }
        };
        let (invited, out) = rt.block_on(async {
            let mut log = |_: String| {};
            let invite = listener.run(
                InviteParams {
                    dir: &m_dir,
                    identity: &forged,
                    code: code.clone(),
                    addresses: vec![],
                    expires_at: Instant::now() + Duration::from_secs(60),
                    linger: Duration::ZERO,
                },
                &mut log,
            );
            let join = tokio::task::spawn_blocking(join_cmd);
            let (invited, out) = tokio::join!(invite, join);
            (invited, out.expect("join task"))
        });
        assert!(invited.is_err(), "the forged invite paired");
        assert!(!out.status.success(), "join succeeded: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains("without proof from the old key"), "{err}");
        assert_eq!(partners_bytes(&a), before, "partners.toml changed (join)");
        outcomes.push(format!(
            "join: refused: {}",
            err.lines()
                .find(|l| l.contains("REFUSED"))
                .unwrap_or(err.trim())
        ));
    }

    // 4. The daemon's pending-peer accept: Newco (unknown to Acme) connects,
    //    then its admin "sends" a bundle claiming Globex's account number
    //    with Newco's key and certificate.
    let mut n = Instance::new("Newco");
    n.trust(&a);
    n.start();
    let nid = identity(&n);
    let nfp = nid.fingerprint.to_string();
    wait_for("Newco to be pending at Acme", SYNC, || {
        pending_fps(&a).contains(&nfp).then_some(())
    });
    let mut accept_bundle = takeover.clone();
    accept_bundle.public_key = nid.public_key();
    accept_bundle.cert_fingerprint = nid.fingerprint;
    let f = write_bundle(&a, "takeover-accept.bundle", &accept_bundle);
    let log_from = a.log_text().len();
    let out = a.cli(&["partner", "accept", &nfp, "--bundle", &f]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "partner accept: {err}");
    assert!(err.contains("without proof from the old key"), "{err}");
    assert_eq!(partners_bytes(&a), before, "partners.toml changed (accept)");
    let audit = a.cli_json(&["audit"]);
    let refused = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "partner.accept.refused")
        .unwrap_or_else(|| panic!("no partner.accept.refused in {audit}"))
        .clone();
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("without proof from the old key")),
        "{refused}"
    );
    let logged = a.log_text()[log_from..].contains("pending peer not paired: refused");
    assert!(logged, "no warning in Acme's log:\n{}", a.log_tail());
    outcomes.push(format!(
        "pending accept: exit 2, audited partner.accept.refused, warned: {}",
        err.lines().next().unwrap_or_default()
    ));
    n.stop();

    // Nothing changed at Acme, and Globex still syncs both ways.
    assert_eq!(partners_bytes(&a), before);
    assert_eq!(a.digest(), digest_before, "Acme's store changed");
    let t = Instant::now();
    let from_b = b.put("organization", &["--set", "name=After the attack (B)"]);
    let from_a = a.put("organization", &["--set", "name=After the attack (A)"]);
    wait_for_object(&a, &from_b);
    wait_for_object(&b, &from_a);
    let resumed = t.elapsed();
    // (Mallory's daemon is not running: Acme's own wait-synced would wait
    // for it too.)
    b.wait_synced(SYNC);
    wait_for("Acme and Globex to converge", SYNC, || {
        (a.digest() == b.digest()).then_some(())
    });
    for o in &outcomes {
        eprintln!("rotation takeover: {o}");
    }
    eprintln!(
        "rotation takeover: 6 attempts (2 import, 2 invite, 1 join, 1 pending accept) refused; \
         partners.toml byte-identical, store digest unchanged; Globex<->Acme writes both ways \
         arrived in {} ms",
        resumed.as_millis()
    );
    a.stop();
    b.stop();
}

/// Broken chains built from Globex's real rotation (three `rotate`s): each
/// refused at `import` with its own message, partners.toml byte-identical;
/// the genuine chain is accepted by a partner that knows epoch 0 and by one
/// that does not know Globex at all.
#[test]
fn broken_rotation_chains_are_refused_each_with_its_reason() {
    let a = Instance::new("Acme");
    let b = Instance::new("Globex");
    let c = Instance::new("Initech");
    Instance::pair(&a, &b);
    for _ in 0..3 {
        b.keytool(&["rotate"]);
    }
    let good = exported(&b);
    assert_eq!(good.epoch, 3);
    let chain = good
        .rotation
        .clone()
        .expect("a rotated bundle carries its proof");
    assert_eq!(chain.links.len(), 3);
    let gid = identity(&b);

    let with_chain = |edit: &dyn Fn(&mut Bundle, &mut RotationChain)| {
        let mut bundle = good.clone();
        let mut c = chain.clone();
        edit(&mut bundle, &mut c);
        bundle.rotation = Some(c);
        bundle
    };
    // An impostor's chain: its own keys from epoch 0 to 3, for Globex's
    // account number and certificate.
    let mk: Vec<OrgKeyPair> = (0..=3).map(|_| OrgKeyPair::generate()).collect();
    let impostor = RotationChain {
        base_key: mk[0].public(),
        links: (1..=3u32)
            .map(|e| {
                let i = e as usize;
                RotationLink::sign(&mk[i - 1], &gid.org_id, e, mk[i].public(), gid.fingerprint)
            })
            .collect(),
    };
    let mut wrong_key = good.clone();
    wrong_key.public_key = mk[3].public();
    wrong_key.rotation = Some(impostor);
    let mut no_proof = good.clone();
    no_proof.rotation = None;
    let cases: Vec<(&str, Bundle, &str)> = vec![
        ("no proof", no_proof, "without proof from the old key"),
        (
            "chain signed by the wrong key",
            wrong_key.clone(),
            "does not start from the key on file for epoch 0",
        ),
        (
            "tampered link",
            with_chain(&|_, c| c.links[1].public_key = OrgKeyPair::generate().public()),
            "rotation to epoch 2 is not validly signed by the key of epoch 1",
        ),
        (
            "skipped epoch",
            with_chain(&|_, c| {
                c.links.remove(1);
            }),
            "skips from epoch 1 to epoch 3",
        ),
        (
            "swapped certificate",
            with_chain(&|b, _| b.cert_fingerprint = Fingerprint([0x5a; 32])),
            "is not the one its rotation proof was signed for",
        ),
    ];
    let before = partners_bytes(&a);
    let mut lines = std::collections::BTreeSet::new();
    for (what, bundle, why) in &cases {
        let f = write_bundle(&a, "broken.bundle", bundle);
        let line = import_refused(&a, &f, why);
        eprintln!("rotation chains: {what}: {line}");
        lines.insert(line);
    }
    assert_eq!(lines.len(), cases.len(), "each refusal has its own message");
    assert_eq!(partners_bytes(&a), before);

    // A partner that does not know Globex: the impostor's chain does not
    // start from the key the account number is the hash of.
    let f = write_bundle(&c, "impostor.bundle", &wrong_key);
    let line = import_refused(&c, &f, "does not belong to the genesis key");
    assert!(line.contains("account number is not proven"), "{line}");
    eprintln!("rotation chains: unknown account, impostor chain: {line}");

    // The genuine chain: a rotation 0 -> 3 for Acme, a new partner at epoch
    // 3 for Initech.
    let f = write_bundle(&a, "good.bundle", &good);
    let out = a.keytool(&["import", &f, "--yes"]);
    assert!(out.contains("Updated (key rotation)"), "{out}");
    let f = write_bundle(&c, "good.bundle", &good);
    let out = c.keytool(&["import", &f, "--yes"]);
    assert!(out.contains("Added"), "{out}");
    for inst in [&a, &c] {
        let p = InstanceDir::new(&inst.dir)
            .load_partners()
            .expect("partners");
        let g = p.iter().find(|p| p.org_id == gid.org_id).expect("Globex");
        assert_eq!((g.epoch, g.public_key), (3, gid.public_key()));
    }
    eprintln!(
        "rotation chains: {} broken bundles refused with {} distinct messages, partners.toml \
         byte-identical; genuine chain 0->3 ({} chars) accepted by a known and a new partner",
        cases.len() + 1,
        lines.len() + 1,
        good.to_line().len()
    );
}

/// A real rotation on each side in turn keeps two real daemons syncing:
/// Acme rotates and restarts, Globex imports the new bundle (its daemon
/// reloads partners.toml by itself); then the other way round. Writes made
/// on both sides after each rotation arrive on the other side.
#[test]
fn two_daemons_keep_syncing_across_real_rotations() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    Instance::pair(&a, &b);
    a.start();
    b.start();
    let x = a.put("organization", &["--set", "name=Epoch 0 (A)"]);
    let y = b.put("organization", &["--set", "name=Epoch 0 (B)"]);
    wait_for_object(&b, &x);
    wait_for_object(&a, &y);

    let mut times = Vec::new();
    for round in 0..2 {
        let (rot, other) = if round == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let t = Instant::now();
        rot.keytool(&["rotate"]);
        rot.stop();
        rot.start();
        // The partner imports the new bundle (a proven rotation).
        other.trust(rot);
        let rid = identity(rot);
        let p = InstanceDir::new(&other.dir)
            .load_partners()
            .expect("partners");
        let entry = p.iter().find(|p| p.org_id == rid.org_id).expect("entry");
        assert_eq!(
            (entry.epoch, entry.public_key),
            (rid.epoch, rid.public_key())
        );
        let from_rot = rot.put(
            "organization",
            &[
                "--set",
                &format!("name=After rotation {round} (rotated side)"),
            ],
        );
        let from_other = other.put(
            "organization",
            &[
                "--set",
                &format!("name=After rotation {round} (other side)"),
            ],
        );
        wait_for_object(other, &from_rot);
        wait_for_object(rot, &from_other);
        times.push(t.elapsed());
    }
    a.wait_synced(SYNC);
    b.wait_synced(SYNC);
    assert_eq!(a.digest(), b.digest(), "Acme and Globex converged");
    assert_eq!(identity(&a).epoch, 1);
    assert_eq!(identity(&b).epoch, 1);
    for inst in [&a, &b] {
        assert!(
            !inst.log_text().contains("panicked"),
            "{} panicked:\n{}",
            inst.name,
            inst.log_tail()
        );
    }
    eprintln!(
        "rotation sync: 2 rotations (Acme then Globex, each rotate + restart + partner import): \
         writes on both sides arrived in {} ms / {} ms (from the rotate); {} objects, digests equal",
        times[0].as_millis(),
        times[1].as_millis(),
        a.digest().0
    );
    a.stop();
    b.stop();
}

/// The proof is bounded (the last 16 epochs): a partner whose key on file
/// is older, or a new partner of an organisation rotated more than 16
/// times, is refused with a message saying so (and what to do).
#[test]
fn a_partner_more_than_16_epochs_behind_is_told_so() {
    let a = Instance::new("Acme");
    let b = Instance::new("Globex");
    let c = Instance::new("Initech");
    Instance::pair(&a, &b);
    for _ in 0..17 {
        b.keytool(&["rotate"]);
    }
    let bundle = exported(&b);
    let chain = bundle.rotation.as_ref().expect("proof");
    assert_eq!((bundle.epoch, chain.links.len()), (17, 16));
    let f = write_bundle(&a, "far.bundle", &bundle);
    let known = import_refused(
        &a,
        &f,
        "the key on file is of epoch 0, but the bundle's rotation proof only reaches back to epoch 1",
    );
    assert!(known.contains("by phone"), "{known}");
    let f = write_bundle(&c, "far.bundle", &bundle);
    let new = import_refused(&c, &f, "not to the genesis key");
    eprintln!(
        "rotation bound: 17 rotations, bundle of {} chars: known partner at epoch 0: {known}",
        bundle.to_line().len()
    );
    eprintln!("rotation bound: new partner: {new}");
}

/// Code pairing never replaces a known partner's key, even a genuinely
/// rotated one with a valid proof: Globex rotates, then joins Acme's
/// invitation (both real binaries) and is refused; importing its bundle
/// (the proof checked) is the way, and works.
#[test]
fn code_pairing_never_replaces_a_known_key_even_a_proven_one() {
    let a = Instance::new("Acme");
    let b = Instance::new("Globex");
    Instance::pair(&a, &b);
    b.keytool(&["rotate"]);
    let before = partners_bytes(&a);
    let inv = start_invite(&a);
    let out = keytool(
        &b,
        &[
            "join",
            "--connect",
            &inv.addr,
            "--account",
            &a.account(),
            &inv.code,
        ],
    );
    let (status, inv_err) = inv.finish();
    let err = stderr(&out);
    assert!(!out.status.success(), "join succeeded: {}", stdout(&out));
    assert!(!status.success(), "invite succeeded: {inv_err}");
    let why = "pairing never replaces a known partner's key or certificate";
    assert!(err.contains(why), "joiner saw {err:?}");
    assert!(inv_err.contains(why), "inviter said {inv_err:?}");
    assert_eq!(partners_bytes(&a), before, "partners.toml changed");
    // The import of the rotated bundle (proof checked) is accepted.
    a.trust(&b);
    let p = InstanceDir::new(&a.dir).load_partners().expect("partners");
    assert_eq!(p[0].epoch, 1);
    eprintln!(
        "rotation pairing: proven rotation by join/invite refused ({}); import accepted it",
        inv_err
            .lines()
            .find(|l| l.contains(why))
            .unwrap_or_default()
            .trim()
    );
}
