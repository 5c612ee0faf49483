use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::testing::*;
use super::*;
use crate::clock::Timestamp;
use crate::codec::{decode_frame, encode_frame};
use crate::model::{FieldState, InstanceId, Version};
use crate::wire::Message;

use ShareStatus::*;

const LEGAL: [(ShareStatus, ShareStatus); 10] = [
    (Requested, ToEvaluate),
    (ToEvaluate, Rejected),
    (ToEvaluate, Approved),
    (Approved, Preparing),
    (Preparing, Available),
    (Available, Processed),
    (Approved, Revoked),
    (Preparing, Revoked),
    (Available, Revoked),
    (Processed, Revoked),
];

#[test]
fn exactly_the_legal_transitions_succeed() {
    for from in ShareStatus::ALL {
        for to in ShareStatus::ALL {
            let legal = LEGAL.contains(&(from, to));
            match from.transition(to) {
                Ok(s) => {
                    assert!(legal, "{from} -> {to} was allowed");
                    assert_eq!(s, to);
                }
                Err(e) => {
                    assert!(!legal, "{from} -> {to} was refused");
                    assert_eq!(e, TransitionError { from, to });
                    assert!(e.to_string().contains(from.as_str()));
                }
            }
        }
    }
}

#[test]
fn final_statuses_have_no_way_out() {
    for from in [Rejected, Revoked] {
        assert!(from.is_final());
        for to in ShareStatus::ALL {
            let e = from.transition(to).unwrap_err();
            assert!(e.to_string().contains("final"), "{e}");
        }
    }
}

#[test]
fn the_happy_path_goes_through_every_non_final_status() {
    let path = [
        ToEvaluate, Approved, Preparing, Available, Processed, Revoked,
    ];
    let mut s = Requested;
    for to in path {
        s = s.transition(to).expect("legal step");
    }
    assert_eq!(s, Revoked);
}

proptest! {
    /// Whatever moves are tried, the status only changes along a legal edge.
    #[test]
    fn random_moves_only_follow_legal_edges(moves in proptest::collection::vec(status(), 0..32)) {
        let mut s = Requested;
        for to in moves {
            let before = s;
            match s.transition(to) {
                Ok(next) => {
                    prop_assert!(LEGAL.contains(&(before, next)));
                    s = next;
                }
                Err(_) => prop_assert_eq!(s, before),
            }
        }
    }

    #[test]
    fn only_manager_shares_have_a_revoke_window(access in access(), at in 0u64..1 << 50, after in 0u64..1 << 40) {
        let now = at + after;
        let r = access.may_revoke(Some(at), now);
        if access == AccessType::Manager && after >= MANAGER_REVOKE_WINDOW_MS {
            prop_assert!(r.is_err());
        } else {
            prop_assert!(r.is_ok());
        }
        prop_assert!(access.may_revoke(None, now).is_ok());
    }

    #[test]
    fn selectors_round_trip_through_text(sel in selector()) {
        let text = sel.to_string();
        prop_assert_eq!(text.parse::<Selector>().unwrap(), sel);
    }

    #[test]
    fn frames_round_trip(frame in frame()) {
        prop_assert_eq!(frame.validate(), Ok(()));
        let msg = Message::Share(frame);
        let bytes = encode_frame(&msg).unwrap();
        let (decoded, used) = decode_frame(&bytes).unwrap().expect("a whole frame");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(decoded, msg);
    }
}

#[test]
fn manager_revoke_window_is_72_hours_after_processing() {
    let at = 1_700_000_000_000;
    let m = AccessType::Manager;
    assert!(m
        .may_revoke(Some(at), at + MANAGER_REVOKE_WINDOW_MS - 1)
        .is_ok());
    let e = m
        .may_revoke(Some(at), at + MANAGER_REVOKE_WINDOW_MS)
        .unwrap_err();
    assert!(e.to_string().contains("72 hours"), "{e}");
    assert!(AccessType::OnLoan
        .may_revoke(Some(at), at + 10 * MANAGER_REVOKE_WINDOW_MS)
        .is_ok());
}

#[test]
fn reshare_rules() {
    use AccessType::*;
    // (held, onward, target is subcontractor) -> allowed
    let cases = [
        (Operator, Operator, false, true),
        (Operator, OnLoan, false, true),
        (Manager, Manager, false, true),
        (Manager, Operator, false, false),
        (Subcontractor, Subcontractor, true, true),
        (Subcontractor, Subcontractor, false, false),
        (Subcontractor, OnLoan, false, true),
        (Subcontractor, Manager, true, false),
        (OnLoan, OnLoan, true, false),
        (OnLoan, OnLoan, false, false),
    ];
    for (held, onward, sub, ok) in cases {
        assert_eq!(
            held.may_reshare(onward, sub).is_ok(),
            ok,
            "{held} -> {onward} (subcontractor target: {sub})"
        );
    }
    assert_eq!(
        OnLoan.may_reshare(OnLoan, true).unwrap_err(),
        ReshareError::OnLoan
    );
    assert!(Subcontractor
        .may_reshare(Subcontractor, false)
        .unwrap_err()
        .to_string()
        .contains("subcontractor"));
}

#[test]
fn access_types_parse() {
    for a in AccessType::ALL {
        assert_eq!(a.as_str().parse::<AccessType>().unwrap(), a);
    }
    assert_eq!("on_loan".parse::<AccessType>().unwrap(), AccessType::OnLoan);
    assert!("owner".parse::<AccessType>().is_err());
}

fn v() -> Version {
    Version {
        hlc: Timestamp(1),
        instance: InstanceId(1),
    }
}

fn obj(id: u8, kind: Kind, fields: &[(FieldKey, Value)]) -> Object {
    let mut map = BTreeMap::new();
    for (k, val) in fields {
        map.insert(
            k.clone(),
            FieldState {
                version: v(),
                value: Some(val.clone()),
            },
        );
    }
    Object {
        id: ObjectId([id; 16]),
        kind,
        fields: map,
        deleted: None,
    }
}

fn std(name: &str) -> FieldKey {
    FieldKey::Std(name.into())
}

#[test]
fn organization_selection_takes_contacts_transactions_and_resumes() {
    let org = obj(
        1,
        Kind::Organization,
        &[(std("category"), Value::Text("school".into()))],
    );
    let other_org = obj(2, Kind::Organization, &[]);
    let contact = obj(
        3,
        Kind::Contact,
        &[(std("organization"), Value::Ref(org.id))],
    );
    let outsider = obj(
        4,
        Kind::Contact,
        &[(std("organization"), Value::Ref(other_org.id))],
    );
    let tx_by_contact = obj(
        5,
        Kind::Transaction,
        &[(std("contact"), Value::Ref(contact.id))],
    );
    let resume = obj(6, Kind::Resume, &[(std("contact"), Value::Ref(contact.id))]);
    let outsider_resume = obj(
        7,
        Kind::Resume,
        &[(std("contact"), Value::Ref(outsider.id))],
    );
    let all: HashMap<ObjectId, Object> = [
        &org,
        &other_org,
        &contact,
        &outsider,
        &tx_by_contact,
        &resume,
        &outsider_resume,
    ]
    .into_iter()
    .map(|o| (o.id, o.clone()))
    .collect();
    let lookup = |id: ObjectId| all.get(&id).cloned();
    for sel in [
        Selection {
            rules: vec![Selector::Organization(org.id)],
        },
        Selection {
            rules: vec![Selector::Category("school".into())],
        },
    ] {
        for (o, expected) in [
            (&org, true),
            (&other_org, false),
            (&contact, true),
            (&outsider, false),
            (&resume, true),
            (&outsider_resume, false),
        ] {
            assert_eq!(sel.selects(o, &lookup), expected, "{sel:?} on {:?}", o.id);
        }
    }
    let by_org = Selection {
        rules: vec![Selector::Organization(org.id)],
    };
    assert!(by_org.selects(&tx_by_contact, &lookup));
}

#[test]
fn flag_and_role_selection() {
    let flag = ObjectId([9; 16]);
    let flagged = obj(
        1,
        Kind::Contact,
        &[(FieldKey::Flag(flag), Value::Bool(true))],
    );
    let unflagged = obj(
        2,
        Kind::Contact,
        &[(FieldKey::Flag(flag), Value::Bool(false))],
    );
    let staff = obj(
        3,
        Kind::Contact,
        &[(std("role"), Value::Text("staff".into()))],
    );
    let lookup = |_: ObjectId| None;
    let by_flag = Selection {
        rules: vec![Selector::Flag(flag)],
    };
    assert!(by_flag.selects(&flagged, &lookup));
    assert!(!by_flag.selects(&unflagged, &lookup));
    assert!(!by_flag.selects(&staff, &lookup));
    let flag_obj = Object::new(flag, Kind::Flag);
    assert!(by_flag.selects(&flag_obj, &lookup));
    let by_role = Selection {
        rules: vec![Selector::Role("staff".into())],
    };
    assert!(by_role.selects(&staff, &lookup));
    assert!(!by_role.selects(&flagged, &lookup));
    assert!(!Selection::default().selects(&staff, &lookup));
}

#[test]
fn oversized_frames_are_refused() {
    let share = ShareId([1; 16]);
    let too_many = ShareFrame {
        id: 1,
        body: ShareBody::Withdraw {
            share,
            objects: vec![ObjectId([0; 16]); MAX_IDS_PER_MESSAGE + 1],
        },
    };
    assert!(matches!(
        too_many.validate(),
        Err(ShareWireError::TooManyIds { .. })
    ));
    let long_terms = ShareFrame {
        id: 2,
        body: ShareBody::Grant(Grant {
            share,
            access: AccessType::OnLoan,
            terms: Some("x".repeat(MAX_TERMS_LEN + 1)),
            label: String::new(),
            request: None,
        }),
    };
    assert!(matches!(
        long_terms.validate(),
        Err(ShareWireError::TooLong { what: "terms", .. })
    ));
    // The frame encoder refuses it too (the decoder runs the same check).
    assert!(encode_frame(&Message::Share(long_terms)).is_err());
}

#[test]
fn ids_and_levels_parse() {
    let id = ShareId([0xab; 16]);
    assert_eq!(id.to_string().parse::<ShareId>().unwrap(), id);
    assert!("xyz".parse::<ShareId>().is_err());
    let o = ObjectId([3; 16]);
    let level: TransferLevel = format!("objects:{o},{o}").parse().unwrap();
    assert_eq!(level, TransferLevel::Objects(vec![o, o]));
    assert_eq!(level.to_string().parse::<TransferLevel>().unwrap(), level);
    assert!("kind:contact".parse::<TransferLevel>().is_err());
}
