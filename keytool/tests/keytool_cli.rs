//! End-to-end: init, show, export/import, list, revoke, rotate and the
//! permission checks, with the real binary on temp dirs.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;
use orgsync_keytool::bundle::Bundle;
use orgsync_keytool::InstanceDir;
use orgsync_protocol::identity::OrgKeyPair;

fn export_line(dir: &std::path::Path) -> String {
    stdout(&ok(dir, &["export"])).trim().to_string()
}

fn import_text(dir: &std::path::Path, text: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["import", "-"];
    args.extend_from_slice(extra);
    let mut child = cmd(dir)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn init_creates_the_layout_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let o = ok(&a, &["init", "--org", "Acme Recruiting"]);
    let out = stdout(&o);
    let acct = account(&a);
    assert!(out.contains(&acct), "init prints the account number: {out}");
    let id = InstanceDir::new(&a).load_identity().unwrap();
    assert!(out.contains(&id.fingerprint.to_string()), "{out}");

    assert_eq!(mode(&a), 0o700);
    assert_eq!(mode(&a.join("secrets")), 0o700);
    assert_eq!(mode(&a.join("secrets/org-0.key")), 0o600);
    assert_eq!(mode(&a.join("secrets/tls.key")), 0o600);
    assert_eq!(mode(&a.join("partners.toml")), 0o600);
    assert_eq!(mode(&a.join("identity.toml")), 0o644);
    assert_eq!(mode(&a.join("tls.crt")), 0o644);
    let key = std::fs::read_to_string(a.join("secrets/org-0.key")).unwrap();
    assert_eq!(key.len(), 65);
    assert!(key.ends_with('\n'));
    assert!(key[..64]
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert!(std::fs::read_to_string(a.join("secrets/tls.key"))
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(
        std::fs::read_to_string(a.join("orgsync.toml")).unwrap(),
        "# orgsync instance configuration. See `orgsyncd --help`.\n\
         listen = \"127.0.0.1:7700\"\n\
         \n\
         [store]\n\
         # sled page cache, in MiB.\n\
         cache_capacity_mb = 64\n"
    );
    let ident: toml::Table =
        toml::from_str(&std::fs::read_to_string(a.join("identity.toml")).unwrap()).unwrap();
    for key in [
        "org_name",
        "org_id",
        "instance_id",
        "epoch",
        "genesis_public_key",
        "public_keys",
        "cert_fingerprint",
        "created_at",
    ] {
        assert!(ident.contains_key(key), "identity.toml lacks {key}");
    }
    assert_eq!(ident["org_id"].as_str(), Some(acct.as_str()));

    let before = std::fs::read(a.join("identity.toml")).unwrap();
    let key_before = std::fs::read(a.join("secrets/org-0.key")).unwrap();
    let err = fails(&a, &["init", "--org", "Other"]);
    assert!(err.contains("already holds an orgsync identity"), "{err}");
    assert_eq!(std::fs::read(a.join("identity.toml")).unwrap(), before);
    assert_eq!(
        std::fs::read(a.join("secrets/org-0.key")).unwrap(),
        key_before
    );
}

#[test]
fn commands_on_an_uninitialised_dir_say_to_run_init() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(&tmp.path().join("nothing"), &["show"]);
    assert!(err.contains("orgsync-keytool --dir"), "{err}");
    assert!(err.contains("init --org NAME"), "{err}");
    let o = std::process::Command::new(BIN)
        .env_remove("ORGSYNC_DIR")
        .arg("show")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--dir DIR or set ORGSYNC_DIR"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn export_import_pairs_both_ways_and_keys_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let b = init(tmp.path(), "b", "Globex", "0.0.0.0:7800");
    let bundle_file = tmp.path().join("acme.bundle");
    ok(
        &a,
        &[
            "export",
            "--address",
            "acme.example:7700",
            "-o",
            bundle_file.to_str().unwrap(),
        ],
    );
    let o = ok(&b, &["import", bundle_file.to_str().unwrap(), "--yes"]);
    assert!(stdout(&o).contains("Added partner Acme"), "{}", stdout(&o));
    // import shows what is being imported, fingerprint included.
    let id_a = InstanceDir::new(&a).load_identity().unwrap();
    assert!(stderr(&o).contains(&id_a.fingerprint.to_string()));
    assert!(stderr(&o).contains(&account(&a)));

    // B listens on a wildcard: its bundle carries no address, with a warning.
    let o = ok(&b, &["export"]);
    assert!(stderr(&o).contains("no address"), "{}", stderr(&o));
    let line = stdout(&o);
    let o = import_text(&a, &line, &["--yes", "--address", "globex.example:7800"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let pa = partners(&a);
    assert_eq!(pa.len(), 1);
    assert_eq!(pa[0].addresses, vec!["globex.example:7800".to_string()]);
    let pb = partners(&b);
    assert_eq!(pb[0].addresses, vec!["acme.example:7700".to_string()]);
    assert_pair_keys_agree(&a, &b);

    let list = stdout(&ok(&a, &["list"]));
    assert!(list.contains("Globex") && list.contains("paired"), "{list}");
    let json: serde_json::Value =
        serde_json::from_slice(&ok(&a, &["list", "--json"]).stdout).unwrap();
    assert_eq!(json[0]["name"], "Globex");
    assert_eq!(json[0]["state"], "paired");
}

#[test]
fn import_needs_a_terminal_or_yes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let b = init(tmp.path(), "b", "Globex", "127.0.0.1:7800");
    let f = tmp.path().join("a.bundle");
    std::fs::write(&f, export_line(&a)).unwrap();
    let err = fails(&b, &["import", f.to_str().unwrap()]);
    assert!(err.contains("not a terminal"), "{err}");
    assert!(err.contains("--yes"), "{err}");
    let o = import_text(&b, &export_line(&a), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("standard input"), "{}", stderr(&o));
    assert!(partners(&b).is_empty());
}

#[test]
fn importing_the_same_partner_again_updates_and_never_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let b = init(tmp.path(), "b", "Globex", "127.0.0.1:7800");
    let line = export_line(&a);
    assert!(import_text(&b, &line, &["--yes"]).status.success());
    let first = partners(&b);
    let o = import_text(&b, &line, &["--yes"]);
    assert!(stdout(&o).contains("nothing changed"), "{}", stdout(&o));
    let line2 = stdout(&ok(&a, &["export", "--address", "new.acme.example:7701"]));
    let o = import_text(&b, &line2, &["--yes"]);
    assert!(
        stdout(&o).contains("Updated partner Acme"),
        "{}",
        stdout(&o)
    );
    let after = partners(&b);
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0].addresses,
        vec!["new.acme.example:7701".to_string()]
    );
    assert_eq!(after[0].added_at, first[0].added_at);
    assert_eq!(after[0].public_key, first[0].public_key);
}

#[test]
fn a_different_key_under_a_known_account_number_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let b = init(tmp.path(), "b", "Globex", "127.0.0.1:7800");
    // B rotated once; A knows B at epoch 1.
    ok(&b, &["rotate"]);
    assert!(import_text(&a, &export_line(&b), &["--yes"])
        .status
        .success());
    let known = partners(&a);
    let real = Bundle::parse(&export_line(&b)).unwrap();

    // Same account number and epoch, another key: refused loudly.
    let mut forged = real.clone();
    forged.public_key = OrgKeyPair::generate().public();
    let o = import_text(&a, &forged.to_line(), &["--yes"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("REFUSED"), "{err}");
    assert!(err.contains("already known with another key"), "{err}");
    assert!(err.contains(&account(&b)), "{err}");
    // An older epoch (rollback) with another key: refused too.
    let mut rollback = forged.clone();
    rollback.epoch = 0;
    rollback.org_id = real.org_id;
    let o = import_text(&a, &rollback.to_line(), &["--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(partners(&a), known, "nothing changed");
}

#[test]
fn malformed_bundles_are_rejected_with_distinct_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let b = init(tmp.path(), "b", "Globex", "127.0.0.1:7800");
    let line = export_line(&a);
    let truncated = line[..line.len() / 2].to_string();
    let mut bad_check = line.clone();
    let last = bad_check.pop().unwrap();
    bad_check.push(if last == '0' { '1' } else { '0' });
    let wrong_version = line.replacen(":v1:", ":v9:", 1);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..200)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();

    let mut messages = Vec::new();
    for (what, content, expect) in [
        ("truncated", truncated.into_bytes(), "cut short"),
        (
            "wrong checksum",
            bad_check.into_bytes(),
            "checksum does not match",
        ),
        (
            "wrong version",
            wrong_version.into_bytes(),
            "version \"v9\" is not supported",
        ),
        ("random bytes", random, "not an orgsync bundle"),
    ] {
        let f = tmp.path().join(what.replace(' ', "_"));
        std::fs::write(&f, content).unwrap();
        let err = fails(&b, &["import", f.to_str().unwrap(), "--yes"]);
        assert!(err.contains(expect), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        messages.push(err);
    }
    for i in 0..messages.len() {
        for j in i + 1..messages.len() {
            assert_ne!(messages[i], messages[j]);
        }
    }
    assert!(partners(&b).is_empty());
    // Our own bundle is not a partner.
    let err = fails(
        &a,
        &[
            "import",
            tmp.path().join("truncated").to_str().unwrap(),
            "--yes",
        ],
    );
    assert!(err.contains("cut short"));
    let own = tmp.path().join("own");
    std::fs::write(&own, &line).unwrap();
    let err = fails(&a, &["import", own.to_str().unwrap(), "--yes"]);
    assert!(err.contains("our own organisation"), "{err}");
}

#[test]
fn secrets_readable_by_others_are_refused_naming_the_file_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    for file in ["secrets/org-0.key", "secrets/tls.key"] {
        let p = a.join(file);
        chmod(&p, 0o644);
        for args in [&["show"][..], &["export"][..]] {
            let err = fails(&a, args);
            let fix = format!("chmod 600 {}", p.display());
            assert!(err.contains(&fix), "{file} {args:?}: {err}");
            assert!(err.contains("0644"), "{err}");
        }
        let e = InstanceDir::new(&a).load_identity().unwrap_err();
        assert!(matches!(
            e,
            orgsync_keytool::KeytoolError::InsecurePermissions { .. }
        ));
        chmod(&p, 0o600);
        ok(&a, &["show"]);
    }
    let s = a.join("secrets");
    chmod(&s, 0o755);
    let err = fails(&a, &["show"]);
    assert!(err.contains(&format!("chmod 700 {}", s.display())), "{err}");
    chmod(&s, 0o700);
    chmod(&a.join("partners.toml"), 0o666);
    let err = fails(&a, &["list"]);
    assert!(
        err.contains(&format!("chmod 600 {}", a.join("partners.toml").display())),
        "{err}"
    );
}

#[test]
fn revoke_by_name_or_account_number_and_ambiguous_names() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let b1 = init(tmp.path(), "b1", "Globex", "127.0.0.1:7800");
    let b2 = init(tmp.path(), "b2", "Globex", "127.0.0.1:7801");
    let c = init(tmp.path(), "c", "Initech", "127.0.0.1:7900");
    for d in [&b1, &b2, &c] {
        assert!(import_text(&a, &export_line(d), &["--yes"])
            .status
            .success());
    }
    let err = fails(&a, &["revoke", "globex"]);
    assert!(err.contains("several partners"), "{err}");
    assert!(
        err.contains(&account(&b1)) && err.contains(&account(&b2)),
        "{err}"
    );
    let err = fails(&a, &["revoke", "Umbrella"]);
    assert!(err.contains("no partner matches"), "{err}");

    let o = ok(&a, &["revoke", &account(&b2).to_lowercase()]);
    assert!(stdout(&o).contains("Revoked Globex"), "{}", stdout(&o));
    ok(&a, &["revoke", "initech"]);
    let ps = partners(&a);
    let state = |acct: &str| {
        ps.iter()
            .find(|p| p.org_id.account_number() == acct)
            .map(|p| (p.state, p.revoked_at.is_some()))
            .unwrap()
    };
    use orgsync_keytool::PartnerState::*;
    assert_eq!(state(&account(&b1)), (Paired, false));
    assert_eq!(state(&account(&b2)), (Revoked, true));
    assert_eq!(state(&account(&c)), (Revoked, true));

    // Keys of a revoked partner are refused by the library.
    let id = InstanceDir::new(&a).load_identity().unwrap();
    let revoked = ps.iter().find(|p| p.state == Revoked).unwrap();
    assert!(matches!(
        id.pair_keys(revoked, 0),
        Err(orgsync_keytool::KeytoolError::Revoked { .. })
    ));
    // And a revoked partner is not re-added by import.
    let o = import_text(&a, &export_line(&c), &["--yes"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("was revoked"), "{}", stderr(&o));
}

#[test]
fn rotate_starts_a_new_epoch_and_keeps_the_old_key() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let b = init(tmp.path(), "b", "Globex", "127.0.0.1:7800");
    assert!(import_text(&b, &export_line(&a), &["--yes"])
        .status
        .success());
    assert!(import_text(&a, &export_line(&b), &["--yes"])
        .status
        .success());
    let before = InstanceDir::new(&a).load_identity().unwrap();

    let o = ok(&a, &["rotate"]);
    let out = stdout(&o);
    assert!(out.contains("New key epoch 1"), "{out}");
    assert!(out.contains("Globex"), "partners to tell are listed: {out}");
    assert_eq!(mode(&a.join("secrets/org-1.key")), 0o600);
    let after = InstanceDir::new(&a).load_identity().unwrap();
    assert_eq!(after.epoch, 1);
    assert_eq!(after.org_id, before.org_id, "the account number stays");
    assert_eq!(after.keys.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(after.keys[&0].public(), before.public_key());
    assert_ne!(after.public_key(), before.public_key());

    // B imports the rotated bundle: a rotation, not a conflict.
    let o = import_text(&b, &export_line(&a), &["--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("KEY ROTATION") || stdout(&o).contains("key rotation"));
    let pb = partners(&b);
    assert_eq!(pb.len(), 1);
    assert_eq!(pb[0].epoch, 1);
    assert_pair_keys_agree(&a, &b);
}

#[test]
fn every_subcommand_help_explains_itself_with_an_example() {
    let tmp = tempfile::tempdir().unwrap();
    for sub in [
        "init", "show", "export", "import", "invite", "join", "list", "revoke", "rotate",
    ] {
        let o = ok(tmp.path(), &[sub, "--help"]);
        let text = stdout(&o);
        assert!(
            text.contains("Example"),
            "{sub} --help has no example:\n{text}"
        );
        assert!(text.contains("orgsync-keytool"), "{sub}:\n{text}");
        assert!(text.len() > 300, "{sub} --help is too thin:\n{text}");
    }
}

/// Regression: `export -o FILE` with a bare relative name wrote the file and
/// then failed fsyncing the (empty) parent path.
#[test]
fn export_to_a_bare_file_name_in_the_current_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let o = cmd(&a)
        .args(["export", "-o", "acme.bundle"])
        .current_dir(tmp.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let written = std::fs::read_to_string(tmp.path().join("acme.bundle")).unwrap();
    assert_eq!(written.trim(), export_line(&a));
}
