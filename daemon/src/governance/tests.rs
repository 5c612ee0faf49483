//! Governance over a real sled store, without the network: the policy's
//! answers, the frames it queues, the injected clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use orgsync_protocol::identity::Fingerprint;
use orgsync_protocol::model::{FieldKey, Kind, Object, ObjectId, OrgId, Value};
use orgsync_protocol::share::{
    AccessType, Grant, Selection, Selector, ShareBody, ShareFrame, ShareId,
    MANAGER_REVOKE_WINDOW_MS, MAX_IDS_PER_MESSAGE,
};

use super::shares::{self, NewShare};
use super::*;
use crate::store::Edit;
use crate::transport::TrustedPeer;

const US: OrgId = OrgId([9; 32]);
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
    let gov = Governance::start(
        US,
        store.clone(),
        trust,
        GovConfig::default(),
        clock,
        Arc::new(crate::metrics::Metrics::new()),
    )
    .unwrap();
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
    // Our own object "coming back" from a partner is refused: only a
    // mirror may change our objects.
    let back = orgsync_protocol::model::Change::from_object(&own);
    assert_eq!(f.gov.incoming(&P1, &back), Incoming::Reject);
    // Auto-approve does not apply what no share announced: it waits.
    inbox::set_auto(&f.gov, &P1, true, "tester").await.unwrap();
    assert_eq!(f.gov.incoming(&P1, &foreign), Incoming::Hold);
    // Once P1's share announces it, P1's changes apply; P2's never do.
    offer(
        &f,
        P1,
        ShareId([5; 16]),
        AccessType::Operator,
        P1,
        foreign.id,
        1,
    )
    .await;
    assert_eq!(f.gov.incoming(&P1, &foreign), Incoming::Apply);
    assert_eq!(f.gov.incoming(&P2, &foreign), Incoming::Reject);
    assert_eq!(
        f.gov.inner.metrics.changes_refused.load(Ordering::Relaxed),
        2
    );
}

/// P sends a Grant and an Objects frame (frame ids `first`, `first + 1`)
/// and we wait until both are handled.
async fn offer(
    f: &Fixture,
    from: OrgId,
    share: ShareId,
    access: AccessType,
    owner: OrgId,
    id: ObjectId,
    first: u64,
) {
    let frames = [
        ShareBody::Grant(Grant {
            share,
            access,
            terms: None,
            label: "test".into(),
            request: None,
        }),
        ShareBody::Objects {
            share,
            owner,
            added: vec![id],
        },
    ];
    send_frames(f, from, first, frames.to_vec()).await;
}

/// Hands `bodies` to governance as frames of `from` numbered from `first`
/// and waits until they are handled.
async fn send_frames(f: &Fixture, from: OrgId, first: u64, bodies: Vec<ShareBody>) {
    let last = first + bodies.len() as u64 - 1;
    for (i, body) in bodies.into_iter().enumerate() {
        f.gov.share_received(
            &from,
            ShareFrame {
                id: first + i as u64,
                body,
            },
        );
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while f.gov.db().handled(&from).unwrap() < last {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("frames handled");
}

/// Our contact Ada, shared with P1 as a manager share.
async fn manager_share_of_ada(f: &Fixture) -> (Object, ShareId) {
    let ada = contact(&f.store, "Ada", None).await;
    let created = shares::create(
        &f.gov,
        new_share(P1, vec![Selector::Object(ada.id)], AccessType::Manager),
    )
    .await
    .unwrap();
    (ada, created.shares[0].parse().unwrap())
}

/// `obj` as a partner's change setting its first name (version at T0).
fn named_change(obj: &Object, name: &str) -> orgsync_protocol::model::Change {
    let mut change = orgsync_protocol::model::Change::from_object(obj);
    change.fields.insert(
        FieldKey::Std("first_name".into()),
        orgsync_protocol::model::FieldState {
            version: orgsync_protocol::model::Version {
                hlc: orgsync_protocol::clock::Timestamp::new(T0, 0),
                instance: orgsync_protocol::model::InstanceId(1),
            },
            value: Some(Value::Text(name.into())),
        },
    );
    change
}

/// A contact of P1's, announced under P1's `share` (frames 1 and 2) and
/// held here as an approved copy.
async fn copy_from_p1(f: &Fixture, share: ShareId, access: AccessType) -> Object {
    let x = Object::new(ObjectId::new_v7(T0), Kind::Contact);
    offer(f, P1, share, access, P1, x.id, 1).await;
    f.store
        .write_changes(vec![named_change(&x, "Xena")])
        .await
        .unwrap();
    x
}

fn refusals(f: &Fixture) -> Vec<String> {
    f.gov
        .audit_log(&audit::AuditFilter::default())
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "authority.refused")
        .map(|e| e.detail)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_cannot_withdraw_erase_or_offer_our_own_objects() {
    let f = fixture();
    let ada = contact(&f.store, "Ada", None).await;
    // P1 gives us a real share, then names our Ada in it.
    let share = ShareId([6; 16]);
    offer(
        &f,
        P1,
        share,
        AccessType::Operator,
        P1,
        ObjectId::new_v7(T0),
        1,
    )
    .await;
    send_frames(
        &f,
        P1,
        3,
        vec![
            ShareBody::Objects {
                share,
                owner: US,
                added: vec![ada.id],
            },
            ShareBody::Withdraw {
                share,
                objects: vec![ada.id],
            },
            ShareBody::Erase {
                share,
                objects: vec![ada.id],
                revoked: true,
            },
        ],
    )
    .await;
    let now = f.store.get(ada.id).unwrap().unwrap();
    assert_eq!(now, ada, "our own object is untouched");
    assert!(f.gov.prov_record(&ada.id).unwrap().is_none(), "still ours");
    let why = refusals(&f);
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(why[0].contains("offered as ours"), "{why:?}");
    assert!(why[1].contains("belongs to this organisation"), "{why:?}");
    // A share P2 never gave cannot be named at all.
    send_frames(
        &f,
        P2,
        1,
        vec![ShareBody::Erase {
            share,
            objects: vec![ada.id],
            revoked: true,
        }],
    )
    .await;
    assert!(refusals(&f)[3].contains("was not given to us by this partner"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_keeps_its_first_source() {
    let f = fixture();
    let x = ObjectId::new_v7(T0);
    offer(&f, P1, ShareId([1; 16]), AccessType::OnLoan, P1, x, 1).await;
    // P2 offers the same object under an operator share: refused, so the
    // on-loan copy cannot be laundered into a freely re-shareable one.
    offer(&f, P2, ShareId([2; 16]), AccessType::Operator, P1, x, 1).await;
    let rec = f.gov.prov_record(&x).unwrap().unwrap();
    assert!(rec.prov.is_from_share(&P1, &ShareId([1; 16])));
    assert!(refusals(&f)[0].contains("already held from another source"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_about_a_share_count_only_from_its_recipient() {
    let f = fixture();
    let (_ada, id) = manager_share_of_ada(&f).await;
    send_frames(
        &f,
        P2,
        1,
        vec![
            ShareBody::Received {
                share: id,
                objects: 1,
            },
            ShareBody::EraseAck {
                share: id,
                erased: 1,
                onward: 0,
            },
        ],
    )
    .await;
    let s = shares::out_share(&f.gov, &id).unwrap();
    assert!(
        s.processed_ms.is_none(),
        "P2 cannot shorten the revoke window"
    );
    assert!(s.erase_acked_ms.is_none());
    assert_eq!(refusals(&f).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_copy_is_read_only_here() {
    let f = fixture();
    let x = ObjectId::new_v7(T0);
    offer(&f, P1, ShareId([1; 16]), AccessType::Operator, P1, x, 1).await;
    let err = f.gov.check_local_edit(&x).unwrap_err();
    assert!(
        err.to_string()
            .contains("link it to one of your records to keep your own changes"),
        "{err}"
    );
    let ours = contact(&f.store, "Ada", None).await;
    f.gov.check_local_edit(&ours.id).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_relogs_whole_objects_and_withdraws_those_leaving() {
    let f = fixture();
    let flag = vip_flag(&f.store).await;
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
        matches!(&out[1], ShareBody::Objects { added, owner, .. } if added.len() == 2 && added.contains(&ada.id) && *owner == US)
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
    let (ada, id) = manager_share_of_ada(&f).await;
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
    let ada = Object::new(ObjectId::new_v7(T0), Kind::Contact);
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
            owner: P1,
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
    // The copy arrives from P1.
    let ada = f
        .store
        .write_changes(vec![named_change(&ada, "Ada")])
        .await
        .unwrap()
        .objects
        .remove(0);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unshare_keeps_approved_copies_and_a_revoked_copy_can_come_back() {
    let f = fixture();
    let share = ShareId([3; 16]);
    // The copy is here (approved as new).
    let x = copy_from_p1(&f, share, AccessType::Operator).await;
    // Unshare: the approved copy stays, detached.
    send_frames(
        &f,
        P1,
        3,
        vec![ShareBody::Withdraw {
            share,
            objects: vec![x.id],
        }],
    )
    .await;
    assert!(f.store.get(x.id).unwrap().is_some(), "an unshare erased");
    assert!(f.gov.prov_record(&x.id).unwrap().unwrap().detached);
    // It enters the share again: attached again.
    send_frames(
        &f,
        P1,
        4,
        vec![ShareBody::Objects {
            share,
            owner: P1,
            added: vec![x.id],
        }],
    )
    .await;
    assert!(!f.gov.prov_record(&x.id).unwrap().unwrap().detached);
    // Revoke: erased outright (no tombstone), acknowledged.
    send_frames(
        &f,
        P1,
        5,
        vec![ShareBody::Erase {
            share,
            objects: vec![x.id],
            revoked: true,
        }],
    )
    .await;
    assert!(
        f.store.get(x.id).unwrap().is_none(),
        "the copy was not erased"
    );
    assert!(f.gov.prov_record(&x.id).unwrap().is_none());
    assert!(bodies(&f.gov, &P1)
        .iter()
        .any(|b| matches!(b, ShareBody::EraseAck { erased: 1, .. })));
    // Shared again under a new share: announced anew, nothing in the way.
    offer(&f, P1, ShareId([4; 16]), AccessType::Operator, P1, x.id, 6).await;
    let rec = f.gov.prov_record(&x.id).unwrap().unwrap();
    assert!(rec.prov.is_from_share(&P1, &ShareId([4; 16])));
    assert_eq!(
        f.gov
            .incoming(&P1, &orgsync_protocol::model::Change::from_object(&x)),
        Incoming::Hold,
        "announced, waiting for the admin (no auto-approve)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_erases_detached_copies_and_a_share_id_cannot_be_taken_over() {
    let f = fixture();
    let share = ShareId([8; 16]);
    let x = copy_from_p1(&f, share, AccessType::OnLoan).await;
    // P2 re-grants P1's share id: refused, the share stays P1's.
    send_frames(
        &f,
        P2,
        1,
        vec![ShareBody::Grant(Grant {
            share,
            access: AccessType::Operator,
            terms: None,
            label: "mine now".into(),
            request: None,
        })],
    )
    .await;
    assert_eq!(shares::in_share(&f.gov, &share).unwrap().partner, P1);
    assert!(refusals(&f)[0].contains("was not given to us by this partner"));
    // Unshared (kept, detached), then revoked with an erase naming nothing:
    // the copy received under the share goes all the same.
    send_frames(
        &f,
        P1,
        3,
        vec![
            ShareBody::Withdraw {
                share,
                objects: vec![x.id],
            },
            ShareBody::Erase {
                share,
                objects: Vec::new(),
                revoked: true,
            },
        ],
    )
    .await;
    assert!(
        f.store.get(x.id).unwrap().is_none(),
        "a detached copy survived the revoke"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_received_share_drops_what_it_announces_and_only_that() {
    let f = fixture();
    let (rejected, kept) = (ShareId([5; 16]), ShareId([6; 16]));
    let x = Object::new(ObjectId::new_v7(T0), Kind::Contact);
    let y = Object::new(ObjectId::new_v7(T0 + 1), Kind::Contact);
    offer(&f, P1, rejected, AccessType::Operator, P1, x.id, 1).await;
    offer(&f, P1, kept, AccessType::Operator, P1, y.id, 3).await;
    let change = |o: &Object| orgsync_protocol::model::Change::from_object(o);
    assert_eq!(f.gov.incoming(&P1, &change(&x)), Incoming::Hold);

    let s = declined::reject(&f.gov, &rejected, "alice").await.unwrap();
    assert_eq!(s.partner, P1);
    let d = declined::get(&f.gov, &rejected).unwrap().unwrap();
    assert_eq!((d.by.as_str(), d.at_ms), ("alice", T0));
    assert_eq!(
        f.gov.incoming(&P1, &change(&x)),
        Incoming::Reject,
        "a rejected share's object still reaches the inbox"
    );
    assert_eq!(
        f.gov.incoming(&P1, &change(&y)),
        Incoming::Hold,
        "another share of the same partner was dropped too"
    );
    // Twice, or an unknown share: refused, in words.
    let again = declined::reject(&f.gov, &rejected, "bob")
        .await
        .unwrap_err();
    assert!(
        again.to_string().contains("already rejected, by alice"),
        "{again}"
    );
    let unknown = declined::reject(&f.gov, &ShareId([7; 16]), "bob")
        .await
        .unwrap_err();
    assert!(matches!(unknown, GovError::NotFound(_)), "{unknown}");
    let actions: Vec<String> = f
        .gov
        .audit_log(&audit::AuditFilter::default())
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "share.reject")
        .map(|e| e.who)
        .collect();
    assert_eq!(actions, ["alice"]);
}

/// A new flag named VIP.
async fn vip_flag(store: &Store) -> ObjectId {
    let flag = ObjectId::new_v7(T0);
    store
        .write(vec![
            Edit::new(flag, Kind::Flag).set_std("name", Value::Text("VIP".into()))
        ])
        .await
        .unwrap();
    flag
}

/// A flag shared with P1, before any contact carries it.
async fn shared_flag(f: &Fixture) -> ObjectId {
    let flag = vip_flag(&f.store).await;
    shares::create(
        &f.gov,
        new_share(P1, vec![Selector::Flag(flag)], AccessType::OnLoan),
    )
    .await
    .unwrap();
    flag
}

fn announced(b: &[ShareBody], id: ObjectId) -> bool {
    b.iter()
        .any(|x| matches!(x, ShareBody::Objects { added, .. } if added.contains(&id)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_flagged_after_the_share_goes_with_its_own_entry_not_relogged() {
    let f = fixture();
    let flag = shared_flag(&f).await;
    let head = f.store.log_head();
    // Its own entry is not yet decided on for P1 (no engine has loaded it).
    let ada = contact(&f.store, "Ada", Some(flag)).await;
    assert_eq!(f.store.log_head(), head + 1);
    wait_outbox(&f.gov, &P1, |b| announced(b, ada.id)).await;
    // Announced before made a member: wait until the loop is done with her.
    drop(f.gov.inner.op.lock().await);
    assert!(f.gov.shares(&P1, &ada), "its own entry now sends it");
    // The membership loop has finished with it: a later write of ours
    // shows whether it re-logged Ada in between.
    let bob = contact(&f.store, "Bob", Some(flag)).await;
    wait_outbox(&f.gov, &P1, |b| announced(b, bob.id)).await;
    let _op = f.gov.inner.op.lock().await;
    assert_eq!(
        f.store.log_head(),
        head + 2,
        "one log entry each: neither re-logged"
    );
    eprintln!("share entering: 2 objects flagged after the share, 2 log entries, 0 re-logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_whose_entry_was_already_passed_over_is_relogged_once() {
    let f = fixture();
    let flag = shared_flag(&f).await;
    let head = f.store.log_head();
    // The engine has already decided on everything up to far ahead: Ada's
    // own entry was passed over (not a member then), so it must go again.
    f.gov.deciding(&P1, head + 1_000);
    let ada = contact(&f.store, "Ada", Some(flag)).await;
    wait_outbox(&f.gov, &P1, |b| announced(b, ada.id)).await;
    let _op = f.gov.inner.op.lock().await;
    assert_eq!(
        f.store.log_head(),
        head + 2,
        "her own entry and one re-log after the announcement"
    );
    let page = f.store.load_page_encoded(head + 1, 10).unwrap();
    assert!(
        page.entries
            .iter()
            .any(|e| e.decode().unwrap().id == ada.id),
        "the re-log is in the log after her first entry"
    );
    assert!(f.gov.shares(&P1, &ada));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_send_check_sends_nothing_is_counted_and_decided_again() {
    let f = fixture();
    let flag = shared_flag(&f).await;
    let ada = contact(&f.store, "Ada", Some(flag)).await;
    wait_outbox(&f.gov, &P1, |b| announced(b, ada.id)).await;
    let head = {
        // Announced before made a member: wait until the loop is done.
        let _op = f.gov.inner.op.lock().await;
        assert!(f.gov.shares(&P1, &ada));
        f.store.log_head()
    };
    f.gov
        .inner
        .fail_share_checks
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(!f.gov.shares(&P1, &ada), "an error sends nothing");
    assert_eq!(
        f.gov
            .inner
            .metrics
            .share_check_errors
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "and is counted"
    );
    f.gov
        .inner
        .fail_share_checks
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // Not lost: the object is re-logged so the engine decides again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f.store.log_head() == head {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held-back object was never re-logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let page = f.store.load_page_encoded(head, 10).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].decode().unwrap().id, ada.id);
    assert!(f.gov.shares(&P1, &ada), "and then goes");
    assert!(
        f.gov
            .inner
            .metrics
            .render(&[])
            .contains("orgsync_share_check_errors_total 1"),
        "exported on /metrics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_objects_are_keys_forgotten_as_they_arrive() {
    let f = fixture();
    let share = ShareId::random();
    let mut xs: Vec<Object> = (0..3)
        .map(|_| Object::new(ObjectId::new_v7(T0), Kind::Contact))
        .collect();
    // Same millisecond: order them as the keys are.
    xs.sort_by_key(|x| x.id);
    let ids: Vec<ObjectId> = xs.iter().map(|x| x.id).collect();
    offer(&f, P1, share, AccessType::OnLoan, P1, ids[0], 1).await;
    send_frames(
        &f,
        P1,
        3,
        vec![ShareBody::Objects {
            share,
            owner: P1,
            added: ids[1..].to_vec(),
        }],
    )
    .await;
    let record = shares::in_share(&f.gov, &share).unwrap();
    assert!(record.expected.is_empty(), "not inside the share record");
    assert_eq!(f.gov.db().expected_of(&share).unwrap(), ids);

    let report = || async {
        let _op = f.gov.inner.op.lock().await;
        shares::report_received(&f.gov).await.unwrap();
    };
    let received_frames = |f: &Fixture| {
        bodies(&f.gov, &P1)
            .into_iter()
            .filter_map(|b| match b {
                ShareBody::Received { objects, .. } => Some(objects),
                _ => None,
            })
            .collect::<Vec<u64>>()
    };
    f.store
        .write_changes(vec![named_change(&xs[0], "One")])
        .await
        .unwrap();
    report().await;
    assert_eq!(f.gov.db().expected_of(&share).unwrap(), ids[1..].to_vec());
    assert_eq!(shares::in_share(&f.gov, &share).unwrap().received, 1);
    assert!(received_frames(&f).is_empty(), "not all here yet");

    f.store
        .write_changes(vec![
            named_change(&xs[1], "Two"),
            named_change(&xs[2], "Three"),
        ])
        .await
        .unwrap();
    report().await;
    assert!(f.gov.db().expected_of(&share).unwrap().is_empty());
    assert_eq!(received_frames(&f), vec![3], "reported once, all three");

    // A record stored with its list inside (an earlier version) moves to keys.
    let y = ObjectId::new_v7(T0);
    let mut old = shares::in_share(&f.gov, &share).unwrap();
    old.expected = vec![y];
    f.gov
        .db()
        .put(&f.gov.db().inc, "incoming share", &share.0, &old)
        .unwrap();
    report().await;
    assert_eq!(f.gov.db().expected_of(&share).unwrap(), vec![y]);
    assert!(shares::in_share(&f.gov, &share)
        .unwrap()
        .expected
        .is_empty());
}

/// The engine decides to hold a change whose share has not announced it,
/// and writes it to the inbox with its batch; the announcement is handled
/// in between, so its inbox scan finds nothing. Once the batch is durable
/// the held change is offered again: an auto-approved partner's object is
/// applied, not left waiting for an admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_held_while_its_announcement_was_handled_is_still_applied() {
    let f = fixture();
    inbox::set_auto(&f.gov, &P1, true, "tester").await.unwrap();
    let x = Object::new(ObjectId::new_v7(T0), Kind::Contact);
    let change = orgsync_protocol::model::Change::from_object(&x);
    // 1. The engine's decision: not announced yet, held.
    assert_eq!(f.gov.incoming(&P1, &change), Incoming::Hold);
    // 2. The announcement is handled before the hold is written.
    offer(&f, P1, ShareId([9; 16]), AccessType::Operator, P1, x.id, 1).await;
    assert!(f.store.inbox(&P1).unwrap().is_empty(), "nothing held yet");
    // 3. The engine writes its batch as decided, then reports it durable.
    let held = [orgsync_protocol::model::SequencedChange { seq: 1, change }];
    let outcome = f
        .store
        .apply_from_partner_with(P1, &held, 1, &|_| Incoming::Hold)
        .await
        .unwrap();
    assert_eq!(outcome.held, 1);
    f.gov.batch_applied(&P1, outcome.held, outcome.applied);
    tokio::time::timeout(Duration::from_secs(10), async {
        while f.store.get(x.id).unwrap().is_none() || !f.store.inbox(&P1).unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the held change applied and its inbox entry gone");
}

fn sequenced(id: ObjectId) -> orgsync_protocol::model::SequencedChange {
    orgsync_protocol::model::SequencedChange {
        seq: 1,
        change: orgsync_protocol::model::Change::from_object(&Object::new(id, Kind::Contact)),
    }
}

/// Issue 16 item 5: the data of an announced object may reach the applier
/// while its announcement waits in the frame queue. The policy names the
/// frame to wait for; once it is handled the object is applied (auto-
/// approve), not held. An object never announced, or announced by a
/// partner that may not (our own object), gets no such answer, or the
/// same decision as before once the frame is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_announcement_is_waited_for_and_a_false_one_gains_nothing() {
    let f = fixture();
    inbox::set_auto(&f.gov, &P1, true, "tester").await.unwrap();
    let share = ShareId([4; 16]);
    let x = ObjectId::new_v7(T0);
    let never = ObjectId::new_v7(T0);
    let ours = contact(&f.store, "Ada", None).await;
    offer(
        &f,
        P1,
        share,
        AccessType::Operator,
        P1,
        ObjectId::new_v7(T0),
        1,
    )
    .await;
    // The frame task cannot run while we hold the lock it takes.
    let op = f.gov.inner.op.lock().await;
    f.gov.share_received(
        &P1,
        ShareFrame {
            id: 3,
            body: ShareBody::Objects {
                share,
                owner: P1,
                added: vec![x, ours.id],
            },
        },
    );
    let batch = [sequenced(x), sequenced(never), sequenced(ours.id)];
    let mut wait = f
        .gov
        .pending_announcements(&P1, &batch)
        .expect("x and ours are announced by a queued frame");
    assert_eq!(wait.changes, 2, "x and ours, not the never-announced one");
    assert!(f.gov.pending_announcements(&P1, &batch[1..2]).is_none());
    assert!(
        f.gov.pending_announcements(&P2, &batch).is_none(),
        "per partner"
    );
    drop(op);
    let until = wait.until;
    tokio::time::timeout(
        Duration::from_secs(10),
        wait.handled.wait_for(|n| *n >= until),
    )
    .await
    .expect("the frame is handled")
    .unwrap();
    assert!(
        f.gov.pending_announcements(&P1, &batch).is_none(),
        "handled"
    );
    assert_eq!(f.gov.incoming(&P1, &batch[0].change), Incoming::Apply);
    assert_eq!(f.gov.incoming(&P1, &batch[1].change), Incoming::Hold);
    // Our own object stays ours: the partner's change of it is refused.
    assert_eq!(f.gov.incoming(&P1, &batch[2].change), Incoming::Reject);
    let held = f
        .gov
        .inner
        .metrics
        .changes_held_unannounced
        .load(Ordering::Relaxed);
    assert_eq!(held, 1, "only the never-announced object was held");
}

/// A partner announcing far more ids than it sends cannot grow
/// `gov_expected` past `limits.max_expected_objects` per share: the rest
/// is refused, counted, audited once, and the partner told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_announced_ids_is_capped_per_share() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8 << 20).unwrap();
    let trust = Trust::new(vec![peer(P1, "One")]);
    let limits = crate::config::LimitsConfig {
        max_expected_objects: 5_000,
        ..Default::default()
    };
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let gov = Governance::start(
        US,
        store.clone(),
        trust,
        GovConfig::default().with_limits(limits),
        Arc::new(|| T0),
        metrics.clone(),
    )
    .unwrap();
    let f = Fixture {
        gov,
        store,
        now: Arc::new(AtomicU64::new(T0)),
        _dir: dir,
    };
    let share = ShareId([5; 16]);
    let started = std::time::Instant::now();
    offer(
        &f,
        P1,
        share,
        AccessType::Operator,
        P1,
        ObjectId::new_v7(T0),
        1,
    )
    .await;
    // 5 frames of 4,096 ids: 20,481 announced, never sent.
    let frames: Vec<ShareBody> = (0..5)
        .map(|_| ShareBody::Objects {
            share,
            owner: P1,
            added: (0..MAX_IDS_PER_MESSAGE)
                .map(|_| ObjectId::new_v7(T0))
                .collect(),
        })
        .collect();
    send_frames(&f, P1, 3, frames).await;
    let kept = f.gov.db().expected_of(&share).unwrap().len();
    let refused = metrics.expected_refused.load(Ordering::Relaxed);
    assert_eq!(kept, 5_000, "capped");
    assert_eq!(refused, 5 * MAX_IDS_PER_MESSAGE as u64 + 1 - 5_000);
    let audited: Vec<String> = f
        .gov
        .audit_log(&audit::AuditFilter::default())
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "limit.refused")
        .map(|e| e.detail)
        .collect();
    assert_eq!(audited.len(), 1, "audited once a minute: {audited:?}");
    assert!(audited[0].contains("max_expected_objects"), "{audited:?}");
    assert!(bodies(&f.gov, &P1).iter().any(|b| matches!(
        b,
        ShareBody::Refused { reason } if reason.contains("max_expected_objects")
    )));
    // Arrivals make room again.
    let first = f.gov.db().expected_of(&share).unwrap()[0];
    f.store
        .write_changes(vec![orgsync_protocol::model::Change::from_object(
            &Object::new(first, Kind::Contact),
        )])
        .await
        .unwrap();
    {
        let _op = f.gov.inner.op.lock().await;
        shares::report_received(&f.gov).await.unwrap();
    }
    let more = ObjectId::new_v7(T0);
    send_frames(
        &f,
        P1,
        8,
        vec![ShareBody::Objects {
            share,
            owner: P1,
            added: vec![more],
        }],
    )
    .await;
    assert!(f.gov.db().expected_of(&share).unwrap().contains(&more));
    eprintln!(
        "expected cap: 20,481 ids announced, {kept} kept, {refused} refused, in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}
