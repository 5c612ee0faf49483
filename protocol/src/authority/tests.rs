use proptest::prelude::*;

use super::*;
use crate::share::testing::{access, share_id};
use crate::wire::testing::object_id;

/// A few organisations, so that random choices collide often.
fn org() -> impl Strategy<Value = OrgId> {
    (0u8..4).prop_map(|b| OrgId([b; 32]))
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::Own),
        (org(), share_id(), access()).prop_map(|(from, share, access)| Source::Share {
            from,
            share,
            access
        }),
        org().prop_map(|from| Source::Mirror { from }),
    ]
}

fn provenance() -> impl Strategy<Value = Provenance> {
    (org(), source()).prop_map(|(owner, source)| Provenance { owner, source })
}

fn in_share() -> impl Strategy<Value = InShareView> {
    (share_id(), org(), access(), any::<bool>()).prop_map(|(id, from, access, revoked)| {
        InShareView {
            id,
            from,
            access,
            revoked,
        }
    })
}

fn view() -> impl Strategy<Value = PartnerView> {
    (org(), any::<bool>(), any::<bool>()).prop_map(|(org, mirror, subcontractor)| PartnerView {
        org,
        mirror,
        subcontractor,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Our own objects change only through a mirror, and are never
    /// withdrawn or erased by anyone.
    #[test]
    fn own_objects_are_changed_only_by_a_mirror(
        id in object_id(), us in org(), sender in org(), mirror in any::<bool>(), share in share_id()
    ) {
        let own = Provenance::own(us);
        let verdict = check_change(id, Some(&own), &sender, mirror);
        prop_assert_eq!(verdict.is_ok(), mirror);
        prop_assert!(check_withdraw(id, Some(&own), &sender, &share).is_err());
    }

    /// A change is allowed only from the partner our copy came from (or a
    /// mirror); an unknown object is never applied without an announcement
    /// unless it comes from a mirror.
    #[test]
    fn changes_come_only_from_the_source(
        id in object_id(), prov in proptest::option::of(provenance()), sender in org(), mirror in any::<bool>()
    ) {
        match check_change(id, prov.as_ref(), &sender, mirror) {
            Ok(ChangeVerdict::Allowed) => {
                let p = prov.unwrap();
                match p.source {
                    Source::Own => prop_assert!(mirror),
                    Source::Share { from, .. } => prop_assert_eq!(from, sender),
                    Source::Mirror { .. } => prop_assert!(mirror),
                }
            }
            Ok(ChangeVerdict::Unannounced) => prop_assert!(prov.is_none() && !mirror),
            Ok(ChangeVerdict::NewFromMirror) => prop_assert!(prov.is_none() && mirror),
            Err(e) => {
                let p = prov.unwrap();
                let third_party = matches!(p.source, Source::Share { .. });
                prop_assert!(!mirror || third_party);
                if let Source::Share { from, .. } = p.source {
                    prop_assert!(from != sender);
                }
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    /// An offer never records us as owner, never replaces a recorded
    /// source, and only comes under the sender's own live share.
    #[test]
    fn offers_keep_one_source(
        id in object_id(), us in org(), prov in proptest::option::of(provenance()),
        sender in org(), share in proptest::option::of(in_share()), owner in org()
    ) {
        match check_offer(id, &us, prov.as_ref(), &sender, share.as_ref(), &owner) {
            Ok(Some(new)) => {
                prop_assert!(prov.is_none(), "a recorded source was replaced");
                prop_assert!(new.owner != us);
                let s = share.unwrap();
                prop_assert!(s.from == sender && !s.revoked);
                prop_assert_eq!(new.source, Source::Share { from: sender, share: s.id, access: s.access });
            }
            Ok(None) => {
                let p = prov.unwrap();
                prop_assert_eq!(p.from(), Some(sender));
                prop_assert_eq!(p.owner, owner);
            }
            Err(_) => {}
        }
    }

    /// Withdraw and erase reach only copies from that partner's share.
    #[test]
    fn withdraw_reaches_only_the_senders_copies(
        id in object_id(), prov in proptest::option::of(provenance()), sender in org(), share in share_id()
    ) {
        let ok = check_withdraw(id, prov.as_ref(), &sender, &share).is_ok();
        prop_assert_eq!(ok, prov.is_some_and(|p| p.is_from_share(&sender, &share)));
    }

    /// Replies about a share count only from its recipient.
    #[test]
    fn share_replies_only_from_the_recipient(
        share in share_id(), recipient in proptest::option::of(org()), sender in org()
    ) {
        let ok = check_share_reply(&share, recipient.as_ref(), &sender).is_ok();
        prop_assert_eq!(ok, recipient == Some(sender));
    }

    /// Nothing goes back to its owner or source; on-loan copies (and local
    /// objects an on-loan copy was linked into) never leave.
    #[test]
    fn sending_respects_owner_source_and_access(
        id in object_id(), prov in provenance(), links in proptest::collection::vec(provenance(), 0..3),
        to in view(), onward in access()
    ) {
        if check_send(id, &prov, &links, &to, onward).is_ok() {
            prop_assert!(prov.source == Source::Own || prov.owner != to.org);
            prop_assert!(prov.from() != Some(to.org));
            for p in std::iter::once(&prov).chain(&links) {
                if let Source::Share { access, .. } = p.source {
                    prop_assert!(access != AccessType::OnLoan);
                    prop_assert!(access.may_reshare(onward, to.subcontractor).is_ok());
                }
            }
        }
    }

    /// Local edits reach only our own objects and a mirror's.
    #[test]
    fn replicas_are_read_only(prov in provenance()) {
        let ok = check_local_edit(&prov, "contact", "Acme").is_ok();
        prop_assert_eq!(ok, !matches!(prov.source, Source::Share { .. }));
    }
}

#[test]
fn the_first_source_stays() {
    let (us, a, b) = (OrgId([0; 32]), OrgId([1; 32]), OrgId([2; 32]));
    let id = ObjectId([9; 16]);
    let sa = InShareView {
        id: ShareId([1; 16]),
        from: a,
        access: AccessType::OnLoan,
        revoked: false,
    };
    let sb = InShareView {
        id: ShareId([2; 16]),
        from: b,
        access: AccessType::Operator,
        revoked: false,
    };
    let first = check_offer(id, &us, None, &a, Some(&sa), &a)
        .unwrap()
        .unwrap();
    // B offering the same object under an operator share cannot launder it.
    let e = check_offer(id, &us, Some(&first), &b, Some(&sb), &a).unwrap_err();
    assert_eq!(e.code(), "already-held");
    // A share of A named by B is refused.
    let e = check_offer(id, &us, None, &b, Some(&sa), &a).unwrap_err();
    assert_eq!(e.code(), "not-senders-share");
    // Our own object offered back is refused.
    let e = check_offer(ObjectId([8; 16]), &us, None, &a, Some(&sa), &us).unwrap_err();
    assert!(e.to_string().contains("offered as ours"), "{e}");
}

#[test]
fn replica_edit_says_what_to_do() {
    let p = Provenance {
        owner: OrgId([1; 32]),
        source: Source::Share {
            from: OrgId([1; 32]),
            share: ShareId([1; 16]),
            access: AccessType::Operator,
        },
    };
    let e = check_local_edit(&p, "contact", "Acme").unwrap_err();
    assert_eq!(
        e.to_string(),
        "this contact belongs to Acme; link it to one of your records to keep your own changes"
    );
}

#[test]
fn mirrors_carry_only_the_two_copies_objects() {
    let (us, m, x) = (OrgId([0; 32]), OrgId([1; 32]), OrgId([2; 32]));
    assert!(mirror_sends(&Provenance::own(us)));
    assert!(mirror_sends(&Provenance {
        owner: m,
        source: Source::Mirror { from: m }
    }));
    let third = Provenance {
        owner: x,
        source: Source::Share {
            from: x,
            share: ShareId([3; 16]),
            access: AccessType::Operator,
        },
    };
    assert!(!mirror_sends(&third));
}
