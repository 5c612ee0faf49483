//! End-to-end: real `orgsyncd` processes on loopback converge. Two paired
//! instances writing on both sides, then three instances in a full mesh,
//! including concurrent edits of one record; convergence is checked with a
//! digest of every object on each side after `orgsync wait-synced`.

use crate::support;

use std::time::Duration;

use support::{custom_values, Instance};

const SYNC: Duration = Duration::from_secs(60);

/// Waits until `inst` holds object `id` (it came from a partner).
fn wait_for_object(inst: &Instance, id: &str) {
    support::wait_for(&format!("{id} on {}", inst.name), SYNC, || {
        inst.cli(&["get", id]).status.success().then_some(())
    });
}

#[test]
fn two_instances_converge() {
    let mut a = Instance::new("Acme");
    let mut b = Instance::new("Globex");
    Instance::pair(&a, &b);
    a.start();
    b.start();

    // Writes on A: an organization, a contact working there, a transaction
    // linking both, each with custom fields.
    let org_a = a.put(
        "organization",
        &[
            "--set",
            "name=Acme Corp",
            "--set",
            "city=Lyon",
            "--custom",
            "sector=steel",
        ],
    );
    let contact_a = a.put(
        "contact",
        &[
            "--set",
            "first_name=Ada",
            "--set",
            "last_name=Lovelace",
            "--set",
            &format!("organization={org_a}"),
            "--custom",
            "level=senior",
            "--custom",
            "age:=36",
        ],
    );
    let tx_a = a.put(
        "transaction",
        &[
            "--set",
            "type=hire",
            "--set",
            "date=2024-05-01",
            "--set",
            "amount=1200.50",
            "--set",
            &format!("contact={contact_a}"),
            "--set",
            &format!("organization={org_a}"),
            "--custom",
            "approved:=true",
        ],
    );
    // Writes on B, meanwhile.
    let org_b = b.put(
        "organization",
        &["--set", "name=Globex", "--custom", "sector=chemicals"],
    );
    let contact_b = b.put(
        "contact",
        &[
            "--set",
            "first_name=Grace",
            "--set",
            "last_name=Hopper",
            "--custom",
            "level=lead",
        ],
    );
    let tx_b = b.put(
        "transaction",
        &[
            "--set",
            "type=placement",
            "--set",
            "date=2024-06-02",
            "--set",
            "amount:=99",
            "--set",
            &format!("contact={contact_b}"),
        ],
    );

    // Both sides edit Ada once she has reached B: a field each, and the same
    // custom field with different values (one must win on both sides).
    wait_for_object(&b, &contact_a);
    a.cli_ok(&[
        "set",
        &contact_a,
        "--set",
        "email=ada@acme.example",
        "--custom",
        "status=a-side",
    ]);
    b.cli_ok(&[
        "set",
        &contact_a,
        "--set",
        "phone=+33 1 23",
        "--custom",
        "status=b-side",
    ]);

    a.wait_synced(SYNC);
    b.wait_synced(SYNC);
    let (na, da) = a.digest();
    let (nb, db) = b.digest();
    assert_eq!(na, 6, "A holds the 6 objects written on both sides");
    assert_eq!((na, &da), (nb, &db), "A and B hold the same objects");

    // What arrived is what was written, field for field.
    let ada = b.cli_json(&["get", &contact_a]);
    assert_eq!(ada["fields"]["first_name"], "Ada");
    assert_eq!(ada["fields"]["organization"], org_a.as_str());
    assert_eq!(ada["fields"]["email"], "ada@acme.example");
    assert_eq!(ada["fields"]["phone"], "+33 1 23");
    assert_eq!(ada["custom"]["level"], "senior");
    assert_eq!(ada["custom"]["age"], 36);
    let status = ada["custom"]["status"]
        .as_str()
        .expect("status custom field");
    assert!(status == "a-side" || status == "b-side", "{status}");
    let tx = b.cli_json(&["get", &tx_a]);
    assert_eq!(tx["fields"]["type"], "hire");
    assert_eq!(tx["fields"]["amount"], 1200.5);
    assert_eq!(tx["custom"]["approved"], true);
    let tx = a.cli_json(&["get", &tx_b]);
    assert_eq!(tx["fields"]["contact"], contact_b.as_str());
    assert_eq!(
        a.cli_json(&["get", &org_b])["custom"]["sector"],
        "chemicals"
    );

    // Each side sees the other connected and nothing left to acknowledge.
    for (inst, partner) in [(&a, "Globex"), (&b, "Acme")] {
        let s = inst.status();
        let p = s["partners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == partner)
            .cloned();
        let p = p.unwrap_or_else(|| panic!("{partner} missing from {s}"));
        assert_eq!(p["connected"], true, "{}: {p}", inst.name);
        assert_eq!(p["not_acked"], 0, "{}: {p}", inst.name);
    }
    a.stop();
    b.stop();
}

#[test]
fn three_instances_in_a_mesh_converge() {
    let mut insts = [
        Instance::new("Acme"),
        Instance::new("Globex"),
        Instance::new("Initech"),
    ];
    for (i, j) in [(0, 1), (1, 2), (0, 2)] {
        Instance::pair(&insts[i], &insts[j]);
    }
    for inst in insts.iter_mut() {
        inst.start();
    }
    // Each writes a few records of its own.
    let mut ids = Vec::new();
    for inst in &insts {
        for n in 0..3 {
            ids.push(inst.put(
                "contact",
                &[
                    "--set",
                    &format!("first_name={}-{n}", inst.name),
                    "--custom",
                    &format!("origin={}", inst.name),
                ],
            ));
        }
        ids.push(inst.put(
            "organization",
            &["--set", &format!("name={} Ltd", inst.name)],
        ));
    }
    // All three edit the same record concurrently once everyone has it.
    let shared = ids[0].clone();
    for inst in &insts {
        wait_for_object(inst, &shared);
    }
    for inst in &insts {
        inst.cli_ok(&[
            "set",
            &shared,
            "--custom",
            &format!("editor={}", inst.name),
            "--set",
            &format!("notes=by {}", inst.name),
        ]);
    }
    for inst in &insts {
        inst.wait_synced(SYNC);
    }
    let digests: Vec<(usize, String)> = insts.iter().map(Instance::digest).collect();
    assert_eq!(
        digests[0].0,
        ids.len(),
        "every record written anywhere is on Acme"
    );
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "digests differ: {digests:?}"
    );
    let objects = insts[2].objects();
    let mut origins = custom_values(&objects, "origin");
    origins.sort();
    origins.dedup();
    assert_eq!(origins, ["Acme", "Globex", "Initech"]);
    for inst in insts.iter_mut() {
        inst.stop();
    }
}
