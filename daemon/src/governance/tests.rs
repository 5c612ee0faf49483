//! Governance over a real sled store, without the network: the policy's
//! answers, the frames it queues, the injected clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use orgsync_protocol::identity::Fingerprint;
use orgsync_protocol::model::{FieldKey, Kind, Object, ObjectId, OrgId, Value};
use orgsync_protocol::share::{
    AccessType, Grant, Selection, Selector, ShareBody, ShareFrame, ShareId,
    MANAGER_REVOKE_WINDOW_MS,
};

use super::shares::{self, NewShare};
use super::*;
use crate::store::Edit;
use crate::transport::TrustedPeer;

const P1: OrgId = OrgId([1; 32]);
const P2: OrgId = OrgId([2; 32]);
const T0: u64 = 1_800_000_000_000;

struct Fixture {
    gov: Governance,
    store: Store,
    now: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

fn peer(org: OrgId, name: &str) -> TrustedPeer {
    TrustedPeer {
        org,
        name: name.into(),
        fingerprint: Fingerprint(org.0),
        addresses: Vec::new(),
        revoked: false,
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8 << 20).unwrap();
    let trust = Trust::new(vec![peer(P1, "One"), peer(P2, "Two")]);
    let now = Arc::new(AtomicU64::new(T0));
    let clock: Clock = {
        let now = now.clone();
        Arc::new(move || now.load(Ordering::SeqCst))
    };
    let gov = Governance::start(store.clone(), trust, GovConfig::default(), clock).unwrap();
    Fixture {
        gov,
        store,
        now,
        _dir: dir,
    }
}

async fn contact(store: &Store, name: &str, flag: Option<ObjectId>) -> Object {
    let mut e = Edit::new(ObjectId::new_v7(T0), Kind::Contact)
        .set_std("first_name", Value::Text(name.into()));
    if let Some(f) = flag {
        e = e.set(FieldKey::Flag(f), Value::Bool(true));
    }
    store.write(vec![e]).await.unwrap().objects.remove(0)
}

fn bodies(gov: &Governance, partner: &OrgId) -> Vec<ShareBody> {
    gov.share_outbox(partner)
        .into_iter()
        .map(|f| f.body)
        .collect()
}

/// Waits (bounded) until the outbox for `partner` satisfies `cond`.
async fn wait_outbox(gov: &Governance, partner: &OrgId, cond: impl Fn(&[ShareBody]) -> bool) {
    let mut rx = gov.share_outbox_changed().unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if cond(&bodies(gov, partner)) {
                return;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the outbox never reached the expected state: {:?}",
            bodies(gov, partner)
        )
    });
}

fn new_share(partner: OrgId, rules: Vec<Selector>, access: AccessType) -> NewShare {
    NewShare {
        partners: vec![partner],
        selection: Selection { rules },
        access,
        terms: None,
        label: String::new(),
        request: None,
        code_valid_ms: None,
        by: "tester".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_share_nothing_goes_and_unknown_objects_are_held() {
    let f = fixture();
    let own = contact(&f.store, "Ada", None).await;
    assert!(!f.gov.shares(&P1, &own));
    let foreign = orgsync_protocol::model::Change::from_object(&Object::new(
        ObjectId::new_v7(T0),
        Kind::Contact,
    ));
    assert_eq!(f.gov.incoming(&P1, &foreign), Incoming::Hold);
    // Our own object coming back updated is applied.
    let back = orgsync_protocol::model::Change::from_object(&own);
    assert_eq!(f.gov.incoming(&P1, &back), Incoming::Apply);
    // With auto-approve, unknown objects apply too.
    inbox::set_auto(&f.gov, &P1, true, "tester").await.unwrap();
    assert_eq!(f.gov.incoming(&P1, &foreign), Incoming::Apply);
    assert_eq!(f.gov.incoming(&P2, &foreign), Incoming::Hold);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_relogs_whole_objects_and_withdraws_those_leaving() {
    let f = fixture();
    let flag = ObjectId::new_v7(T0);
    f.store
        .write(vec![
            Edit::new(flag, Kind::Flag).set_std("name", Value::Text("VIP".into()))
        ])
        .await
        .unwrap();
    let ada = contact(&f.store, "Ada", Some(flag)).await;
    let bob = contact(&f.store, "Bob", None).await;
    let head = f.store.log_head();
    let created = shares::create(
        &f.gov,
        new_share(P1, vec![Selector::Flag(flag)], AccessType::OnLoan),
    )
    .await
    .unwrap();
    assert_eq!(created.objects, 2, "the flag and Ada");
    assert_eq!(f.store.log_head(), head + 2, "both re-logged whole");
    assert!(f.gov.shares(&P1, &ada));
    assert!(!f.gov.shares(&P1, &bob));
    assert!(!f.gov.shares(&P2, &ada), "only the named partner gets it");
    let out = bodies(&f.gov, &P1);
    assert!(matches!(&out[0], ShareBody::Grant(g) if g.access == AccessType::OnLoan));
    assert!(
        matches!(&out[1], ShareBody::Objects { added, .. } if added.len() == 2 && added.contains(&ada.id))
    );

    // Ada loses the flag: she leaves the share and is withdrawn.
    f.store
        .write(vec![
            Edit::new(ada.id, Kind::Contact).set(FieldKey::Flag(flag), Value::Bool(false))
        ])
        .await
        .unwrap();
    wait_outbox(&f.gov, &P1, |b| {
        b.iter()
            .any(|x| matches!(x, ShareBody::Withdraw { objects, .. } if objects == &vec![ada.id]))
    })
    .await;
    // Bob gains it: he enters and is announced.
    f.store
        .write(vec![
            Edit::new(bob.id, Kind::Contact).set(FieldKey::Flag(flag), Value::Bool(true))
        ])
        .await
        .unwrap();
    wait_outbox(&f.gov, &P1, |b| {
        b.iter()
            .any(|x| matches!(x, ShareBody::Objects { added, .. } if added == &vec![bob.id]))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_revoke_window_follows_the_injected_clock() {
    let f = fixture();
    let ada = contact(&f.store, "Ada", None).await;
    let created = shares::create(
        &f.gov,
        new_share(P1, vec![Selector::Object(ada.id)], AccessType::Manager),
    )
    .await
    .unwrap();
    let id: ShareId = created.shares[0].parse().unwrap();
    f.gov.share_received(
        &P1,
        ShareFrame {
            id: 1,
            body: ShareBody::Received {
                share: id,
                objects: 1,
            },
        },
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        while shares::out_share(&f.gov, &id)
            .unwrap()
            .processed_ms
            .is_none()
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the share is processed");
    f.now.store(T0 + MANAGER_REVOKE_WINDOW_MS, Ordering::SeqCst);
    let err = shares::revoke(&f.gov, &id, "tester").await.unwrap_err();
    assert!(err.to_string().contains("72 hours"), "{err}");
    assert!(shares::out_share(&f.gov, &id).unwrap().revoked_ms.is_none());
    f.now
        .store(T0 + MANAGER_REVOKE_WINDOW_MS - 1, Ordering::SeqCst);
    shares::revoke(&f.gov, &id, "tester").await.unwrap();
    assert!(bodies(&f.gov, &P1)
        .iter()
        .any(|b| matches!(b, ShareBody::Erase { objects, .. } if objects == &vec![ada.id])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loan_copies_are_not_reshared_and_frames_are_handled_once() {
    let f = fixture();
    let ada = contact(&f.store, "Ada", None).await;
    let share = ShareId([7; 16]);
    let frames = [
        ShareBody::Grant(Grant {
            share,
            access: AccessType::OnLoan,
            terms: None,
            label: "loan".into(),
            request: None,
        }),
        ShareBody::Objects {
            share,
            added: vec![ada.id],
        },
    ];
    for (i, body) in frames.into_iter().enumerate() {
        let frame = ShareFrame {
            id: i as u64 + 1,
            body,
        };
        // Sent twice (a lost ack): handled once, acknowledged twice.
        f.gov.share_received(&P1, frame.clone());
        f.gov.share_received(&P1, frame);
    }
    let mut acks = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            // Replies are handed out once: count them as they come.
            acks += f
                .gov
                .share_outbox(&P1)
                .iter()
                .filter(|fr| matches!(fr.body, ShareBody::Delivered(_)))
                .count();
            if acks == 4 && f.gov.db().handled(&P1).unwrap() == 2 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("frames handled");
    let granted = f
        .gov
        .audit_log(&audit::AuditFilter::default())
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "share.granted")
        .count();
    assert_eq!(granted, 1, "a resent frame is not handled twice");
    // Not back to where it came from, and not onward either.
    assert!(!f.gov.shares(&P1, &ada));
    let err = shares::create(
        &f.gov,
        new_share(P2, vec![Selector::Object(ada.id)], AccessType::OnLoan),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("on loan"), "{err}");
    let refused = f
        .gov
        .audit_log(&audit::AuditFilter {
            partner: Some(P2),
            since_ms: None,
        })
        .unwrap();
    assert_eq!(refused.last().unwrap().action, "share.refused");
}
