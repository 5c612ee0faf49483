//! A tour of the orgsync protocol core, with no network and no disk: two
//! organisations derive their pair keys, edit the same contact concurrently,
//! merge each other's changes, and seal the change batch in an envelope that
//! refuses tampering and replay.
//!
//! Run: `cargo run --release --example protocol_tour`

use std::collections::BTreeMap;

use anyhow::Result;
use orgsync::protocol::clock::Clock;
use orgsync::protocol::envelope::{self, ReplayGuard, StreamKind};
use orgsync::protocol::identity::OrgKeyPair;
use orgsync::protocol::model::{
    Change, FieldKey, FieldState, InstanceId, Kind, Object, ObjectId, SequencedChange, Value,
    Version,
};
use orgsync::protocol::wire::ChangeBatch;
use orgsync::protocol::{codec, merge};

/// One organisation's view: its keys, its clock and its copy of the contact.
struct Org {
    name: &'static str,
    keys: OrgKeyPair,
    instance: InstanceId,
    clock: Clock,
    contact: Option<Object>,
}

impl Org {
    fn new(name: &'static str) -> Org {
        Org {
            name,
            keys: OrgKeyPair::generate(),
            instance: InstanceId::random(),
            clock: Clock::new(orgsync::protocol::clock::DEFAULT_MAX_DRIFT_MS),
            contact: None,
        }
    }

    /// Writes text fields at wall-clock time `wall_ms` and returns the change.
    fn edit(
        &mut self,
        id: ObjectId,
        wall_ms: u64,
        fields: &[(&str, Option<&str>)],
    ) -> Result<Change> {
        let version = Version {
            hlc: self.clock.now(wall_ms),
            instance: self.instance,
        };
        let fields: BTreeMap<FieldKey, FieldState> = fields
            .iter()
            .map(|(name, value)| {
                let state = FieldState {
                    version,
                    value: value.map(|v| Value::Text(v.to_string())),
                };
                (FieldKey::Std(name.to_string()), state)
            })
            .collect();
        let change = Change {
            id,
            kind: Kind::Contact,
            fields,
            deleted: None,
        };
        self.apply(&change)?;
        Ok(change)
    }

    fn apply(&mut self, change: &Change) -> Result<()> {
        for state in change.fields.values() {
            // Receiving a change moves our clock past it (bounded drift).
            self.clock
                .observe(state.version.hlc, state.version.hlc.physical_ms())?;
        }
        self.contact = Some(merge::apply_change(self.contact.take(), change)?);
        Ok(())
    }

    fn show(&self) -> String {
        let Some(obj) = &self.contact else {
            return "(nothing)".into();
        };
        obj.fields
            .iter()
            .map(|(k, s)| match &s.value {
                Some(v) => format!("{k}={v}"),
                None => format!("{k}=<cleared>"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn main() -> Result<()> {
    let t0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, in ms
    let mut acme = Org::new("Acme Recruiting");
    let mut globex = Org::new("Globex Staffing");
    let acme_id = acme.keys.public().org_id();
    let globex_id = globex.keys.public().org_id();

    println!("== 1. Identities and pair keys");
    println!("{:16} account number {}", acme.name, acme_id);
    println!("{:16} account number {}", globex.name, globex_id);
    let acme_keys = acme
        .keys
        .pair_keys(acme_id, globex_id, &globex.keys.public(), 0)?;
    let globex_keys = globex
        .keys
        .pair_keys(globex_id, acme_id, &acme.keys.public(), 0)?;
    println!("both sides derived the epoch-0 pair key from X25519 + HKDF-SHA256 (one subkey per direction)\n");

    println!("== 2. A contact, then concurrent edits on both sides");
    let id = ObjectId::new_v7(t0);
    let created = acme.edit(
        id,
        t0,
        &[
            ("name", Some("Ada Lovelace")),
            ("email", Some("ada@acme.example")),
        ],
    )?;
    globex.apply(&created)?;
    println!("Acme creates contact {id}: {}", acme.show());
    // Offline from each other, both edit the email; Globex also adds a phone.
    let by_acme = acme.edit(id, t0 + 5_000, &[("email", Some("ada@analytical.example"))])?;
    let by_globex = globex.edit(
        id,
        t0 + 5_007,
        &[
            ("email", Some("ada.l@globex.example")),
            ("phone", Some("+44 20 7946 0000")),
        ],
    )?;
    println!("Acme   edits:  email=ada@analytical.example            (at t+5.000 s)");
    println!("Globex edits:  email=ada.l@globex.example, phone=...   (at t+5.007 s)");
    // Each side receives the other's change: opposite orders.
    acme.apply(&by_globex)?;
    globex.apply(&by_acme)?;
    println!("Acme   now has: {}", acme.show());
    println!("Globex now has: {}", globex.show());
    let same = codec::encode(&acme.contact)? == codec::encode(&globex.contact)?;
    println!(
        "byte-identical on both sides: {same} (per-field last-writer-wins by (HLC, instance))\n"
    );
    anyhow::ensure!(same, "replicas diverged");

    println!("== 3. Delete racing an update");
    let deleted = Change {
        id,
        kind: Kind::Contact,
        fields: BTreeMap::new(),
        deleted: Some(Version {
            hlc: acme.clock.now(t0 + 9_000),
            instance: acme.instance,
        }),
    };
    acme.apply(&deleted)?;
    let late_edit = globex.edit(id, t0 + 9_500, &[("phone", Some("+44 20 7946 0001"))])?;
    globex.apply(&deleted)?;
    acme.apply(&late_edit)?;
    println!("Acme deletes at t+9.0 s, Globex edits the phone at t+9.5 s without having seen it");
    println!(
        "both now hold: {} (the newer edit survives; older fields stay deleted)\n",
        acme.show()
    );
    anyhow::ensure!(
        codec::encode(&acme.contact)? == codec::encode(&globex.contact)?,
        "replicas diverged"
    );

    println!("== 4. Sealing a change batch");
    let batch = ChangeBatch {
        changes: vec![
            SequencedChange {
                seq: 1,
                change: created,
            },
            SequencedChange {
                seq: 2,
                change: by_acme,
            },
        ],
        log_head: 2,
    };
    let plaintext = codec::encode(&batch)?;
    let sealed = envelope::seal(&acme_keys, StreamKind::Changes, 2, &plaintext);
    println!(
        "sealed {} bytes of changes into {} bytes (XChaCha20-Poly1305; header = AAD: sender, receiver, epoch {}, stream {:?}, sequence {})",
        plaintext.len(),
        sealed.ciphertext.len(),
        sealed.header.epoch,
        sealed.header.stream,
        sealed.header.sequence
    );
    let mut guard = ReplayGuard::new(0);
    guard.check(&sealed.header)?;
    let opened = envelope::open(&globex_keys, &sealed)?;
    guard.accept(sealed.header.sequence);
    let received: ChangeBatch = codec::decode(&opened)?;
    println!(
        "Globex opens it: {} changes, log head {}",
        received.changes.len(),
        received.log_head
    );

    let mut tampered = sealed.clone();
    tampered.ciphertext[10] ^= 1;
    println!(
        "one flipped bit      -> {}",
        envelope::open(&globex_keys, &tampered).unwrap_err()
    );
    let mut relabelled = sealed.clone();
    relabelled.header.sequence = 3;
    println!(
        "changed header       -> {}",
        envelope::open(&globex_keys, &relabelled).unwrap_err()
    );
    println!(
        "wrong receiver       -> {}",
        envelope::open(&acme_keys, &sealed).unwrap_err()
    );
    println!(
        "replayed             -> {}",
        guard.check(&sealed.header).unwrap_err()
    );
    Ok(())
}
