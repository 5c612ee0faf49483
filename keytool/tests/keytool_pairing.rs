//! End-to-end: `invite` / `join` with the real binary on loopback.

mod common;

use common::*;

#[test]
fn invite_and_join_pair_both_sides_and_keys_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let b = init(tmp.path(), "b", "Globex", "127.0.0.1:7800");
    let mut inv = start_invite(&a, &["--expires", "5m"]);
    let out = join(&b, &inv.addr, &account(&a), &inv.code);
    assert!(
        out.status.success(),
        "join: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("Paired with Acme"),
        "{}",
        stdout(&out)
    );
    let st = inv.proc.wait_exit();
    assert!(
        st.success(),
        "invite exit {st:?}: {}",
        inv.proc.all_stderr()
    );
    assert!(inv.proc.all_stdout().contains("Paired with Globex"));

    let pa = partners(&a);
    let pb = partners(&b);
    assert_eq!(pa.len(), 1);
    assert_eq!(pb.len(), 1);
    assert_eq!(pa[0].name, "Globex");
    assert_eq!(pa[0].addresses, vec!["127.0.0.1:7800".to_string()]);
    assert_eq!(pb[0].name, "Acme");
    assert_eq!(pb[0].org_id.account_number(), account(&a));
    // The pinned certificates are the ones each side actually has.
    let ia = orgsync_keytool::InstanceDir::new(&a)
        .load_identity()
        .unwrap();
    assert_eq!(pb[0].cert_fingerprint, ia.fingerprint);
    assert_pair_keys_agree(&a, &b);
}

#[test]
fn wrong_code_burns_the_invitation_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let b = init(tmp.path(), "b", "Globex", "127.0.0.1:7800");
    let mut inv = start_invite(&a, &[]);
    // A valid-looking code that differs from the real one.
    let wrong = if inv.code.starts_with("1-") {
        "2-acid-acid"
    } else {
        "1-acid-acid"
    };
    let out = join(&b, &inv.addr, &account(&a), wrong);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("pairing code rejected"),
        "{}",
        stderr(&out)
    );
    let st = inv.proc.wait_exit();
    assert!(!st.success(), "a burned invite must exit non-zero");
    let err = inv.proc.all_stderr();
    assert!(
        err.contains("wrong pairing code from 127.0.0.1:")
            && err.contains("the invitation is burned — run invite again"),
        "{err}"
    );
    assert!(partners(&a).is_empty());
    assert!(partners(&b).is_empty());
}

#[test]
fn wrong_account_number_is_refused_and_the_code_stays_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let b = init(tmp.path(), "b", "Globex", "127.0.0.1:7800");
    let c = init(tmp.path(), "c", "Initech", "127.0.0.1:7900");
    let mut inv = start_invite(&a, &[]);
    // B was told C's account number: A is not C.
    let out = join(&b, &inv.addr, &account(&c), &inv.code);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("account number mismatch"), "{err}");
    assert!(err.contains(&account(&c)), "{err}");
    assert!(partners(&a).is_empty());
    assert!(partners(&b).is_empty());
    // No guess was made: the right account number still pairs.
    let out = join(&b, &inv.addr, &account(&a), &inv.code);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(inv.proc.wait_exit().success());
    assert_eq!(partners(&a).len(), 1);
}

#[test]
fn expired_invitation_is_refused_with_its_own_message() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let b = init(tmp.path(), "b", "Globex", "127.0.0.1:7800");
    let mut inv = start_invite(&a, &["--expires", "1s", "--linger", "5m"]);
    // Wait for the inviter itself to say the invitation expired.
    inv.proc.wait_stderr("the expiry notice", |l| {
        l.contains("the invitation expired")
    });
    let out = join(&b, &inv.addr, &account(&a), &inv.code);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("has expired"), "{err}");
    assert!(!err.contains("pairing code rejected"), "{err}");
    assert!(partners(&a).is_empty());
    assert!(partners(&b).is_empty());
}

#[test]
fn expired_invitation_without_linger_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let mut inv = start_invite(&a, &["--expires", "1s"]);
    let st = inv.proc.wait_exit();
    assert_eq!(st.code(), Some(1));
    assert!(
        inv.proc
            .all_stderr()
            .contains("expired without a successful join"),
        "{}",
        inv.proc.all_stderr()
    );
}

#[test]
fn a_used_code_is_refused_for_a_second_join() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let b = init(tmp.path(), "b", "Globex", "127.0.0.1:7800");
    let c = init(tmp.path(), "c", "Initech", "127.0.0.1:7900");
    let mut inv = start_invite(&a, &["--linger", "5m"]);
    let out = join(&b, &inv.addr, &account(&a), &inv.code);
    assert!(out.status.success(), "{}", stderr(&out));
    inv.proc
        .wait_stderr("the pairing notice", |l| l.contains("paired with Globex"));
    let out = join(&c, &inv.addr, &account(&a), &inv.code);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("already used"), "{err}");
    assert!(partners(&c).is_empty());
    let pa = partners(&a);
    assert_eq!(pa.len(), 1);
    assert_eq!(pa[0].name, "Globex");
}

#[test]
fn a_burned_code_is_refused_even_when_right() {
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a", "Acme", "127.0.0.1:7700");
    let b = init(tmp.path(), "b", "Globex", "127.0.0.1:7800");
    let mut inv = start_invite(&a, &["--linger", "5m"]);
    let wrong = if inv.code.starts_with("1-") {
        "2-acid-acid"
    } else {
        "1-acid-acid"
    };
    let out = join(&b, &inv.addr, &account(&a), wrong);
    assert!(stderr(&out).contains("pairing code rejected"));
    inv.proc
        .wait_stderr("the burn notice", |l| l.contains("invitation is burned"));
    let out = join(&b, &inv.addr, &account(&a), &inv.code);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("burned by an earlier wrong code"),
        "{}",
        stderr(&out)
    );
    assert!(partners(&a).is_empty());
    assert!(partners(&b).is_empty());
}

#[test]
fn join_refuses_malformed_codes_and_own_account_before_connecting() {
    let tmp = tempfile::tempdir().unwrap();
    let b = init(tmp.path(), "b", "Globex", "127.0.0.1:7800");
    // Port 9 on loopback: nothing listens, but these fail before connecting.
    let err = fails(
        &b,
        &[
            "join",
            "--connect",
            "127.0.0.1:9",
            "--account",
            &account(&b),
            "7-acid-acid",
        ],
    );
    assert!(err.contains("own account number"), "{err}");
    let err = fails(
        &b,
        &[
            "join",
            "--connect",
            "127.0.0.1:9",
            "--account",
            &account(&b),
            "7-notaword-acid",
        ],
    );
    assert!(err.contains("not one of the pairing-code words"), "{err}");
    let err = fails(
        &b,
        &[
            "join",
            "--connect",
            "127.0.0.1:9",
            "--account",
            "ABC",
            "7-acid-acid",
        ],
    );
    assert!(err.contains("--account"), "{err}");
}
