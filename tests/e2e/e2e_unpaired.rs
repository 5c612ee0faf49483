//! End-to-end: an instance that A never paired with is refused. C imported
//! A's bundle (so C knows A's address and certificate and dials it), but A
//! did not import C's: A refuses C at the handshake, logs C's fingerprint,
//! counts the refusal, and nothing of A's reaches C, while A's real partner
//! B receives everything.

use crate::support;

use std::time::Duration;

use support::Instance;

/// `name VALUE` from Prometheus text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn unpaired_instance_is_refused_and_receives_nothing() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    let mut c = Instance::new("Intruder");
    Instance::pair(&a, &b);
    c.trust(&a); // one-sided: A does not know C
    let c_fp = c.fingerprint();

    a.start();
    b.start();
    let refused_before = metric(&a.cli_ok(&["metrics"]), "orgsync_refused_handshakes_total");
    let ids: Vec<String> = (0..5)
        .map(|i| {
            a.put(
                "contact",
                &[
                    "--set",
                    &format!("first_name=Secret {i}"),
                    "--custom",
                    "shared=with-globex",
                ],
            )
        })
        .collect();
    c.start();

    // A refuses C's handshake and says whom it refused.
    support::wait_for(
        "A to log the refusal of C's certificate",
        Duration::from_secs(60),
        || {
            let log = a.log_text();
            log.lines()
                .any(|l| l.contains("refused handshake") && l.contains(&c_fp))
                .then_some(())
        },
    );
    let refused = metric(&a.cli_ok(&["metrics"]), "orgsync_refused_handshakes_total");
    assert!(
        refused.unwrap_or(0) > refused_before.unwrap_or(0),
        "refusals counted: before {refused_before:?}, after {refused:?}"
    );
    // A does not list C as a partner; C sees A as not connected.
    let partners = a.cli_json(&["partners"]);
    let names: Vec<&str> = partners["partners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["Globex"]);
    // ... but lists it as refused at the handshake, by fingerprint, for an
    // admin to check.
    let pending: Vec<&str> = partners["pending"]
        .as_array()
        .expect("partners --json has a pending list")
        .iter()
        .filter_map(|p| p["fingerprint"].as_str())
        .collect();
    assert!(
        pending.contains(&c_fp.as_str()),
        "C pending on A: {pending:?} vs {c_fp}"
    );
    let cs = c.status();
    let p = &cs["partners"][0];
    assert_eq!(p["name"], "Acme");
    assert_eq!(p["connected"], false, "C must not be connected to A: {p}");

    // B, the real partner, gets everything; C gets nothing, even after
    // another write made after C started dialing.
    let late = a.put("contact", &["--set", "first_name=Late"]);
    a.wait_synced(Duration::from_secs(60));
    assert_eq!(b.digest(), a.digest());
    assert_eq!(b.digest().0, ids.len() + 1);
    assert_eq!(c.objects().len(), 0, "C received A's records");
    assert_eq!(
        c.cli(&["get", &late]).status.code(),
        Some(3),
        "C has A's latest record"
    );
    // C's writes do not reach A either.
    let from_c = c.put("contact", &["--set", "first_name=From C"]);
    assert_eq!(
        a.cli(&["get", &from_c]).status.code(),
        Some(3),
        "C's record reached A"
    );
    assert!(
        c.status()["partners"][0]["not_acked"].as_u64().unwrap() > 0,
        "A acknowledged C's changes"
    );

    c.stop();
    a.stop();
    b.stop();
}
