//! Merge: how changes combine into objects.
//!
//! # Semantics
//!
//! An object is a set of fields, each versioned on its own by the hybrid
//! logical clock timestamp and the instance of the write that produced it
//! ([`Version`]), plus an optional deletion version.
//!
//! - **Field writes**: per field, last writer wins: the state with the greater
//!   [`Version`] (timestamp, then instance id) is kept. A field *cleared* by a
//!   write is kept as a tombstone (`value: None`) so a late, older write
//!   cannot bring the old value back.
//! - **Equal versions**: two writes should never share a version (an instance
//!   never reuses a timestamp), but a faulty or hostile peer could send one.
//!   The tie is then broken by a fixed total order on the values (a tombstone
//!   sorts first, then by value), so every replica still picks the same one.
//! - **Deletion**: deleting an object records its deletion version; the
//!   object's deletion version is the greatest one seen. Every field write at
//!   or before it is hidden, and is dropped from the stored object (the
//!   *normal form*), so the deleted object carries no personal data.
//! - **Update racing a delete**: a field write whose version is *after* the
//!   deletion survives it: the object comes back ("resurrects") with only the
//!   fields written after the deletion. A write that the deleting instance
//!   had not seen but that carries an older timestamp is hidden. In other
//!   words, deletion is itself last-writer-wins against each field, so every
//!   replica decides the race the same way whatever the arrival order.
//!   [`Object::is_deleted`] is true while no live field is newer than the
//!   deletion.
//!
//! The merge is a join on a semilattice (per-field maximum, deletion
//! maximum, then normalisation), hence commutative, associative and
//! idempotent: replicas that received the same changes, in any order and with
//! any duplicates, hold byte-identical objects. The property tests below
//! check exactly that on the encoded bytes.

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use crate::model::{Change, FieldKey, FieldState, Kind, Object, ObjectId, Value};

/// Why a change could not be merged into an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The change is for another object.
    #[error("change for object {change} applied to object {object}")]
    IdMismatch {
        /// The object's id.
        object: ObjectId,
        /// The change's id.
        change: ObjectId,
    },
    /// The change claims another kind than the stored object. Kinds never
    /// change, so one of the two writers is faulty; nothing is merged.
    #[error("object {id} is a {existing} but the change says {incoming}; change refused")]
    KindMismatch {
        /// The object.
        id: ObjectId,
        /// Kind of the stored object.
        existing: Kind,
        /// Kind claimed by the change.
        incoming: Kind,
    },
}

/// Merges `change` into `existing` (or into a new, empty object when there is
/// none) and returns the result in normal form.
pub fn apply_change(existing: Option<Object>, change: &Change) -> Result<Object, MergeError> {
    let mut obj = existing.unwrap_or_else(|| Object::new(change.id, change.kind));
    apply_in_place(&mut obj, change)?;
    Ok(obj)
}

/// Merges `change` into `obj`, leaving it in normal form. Returns whether the
/// object changed; on error `obj` is untouched.
pub fn apply_in_place(obj: &mut Object, change: &Change) -> Result<bool, MergeError> {
    check_same(obj, change.id, change.kind)?;
    let mut changed = false;
    if let Some(d) = change.deleted {
        if obj.deleted.is_none_or(|cur| d > cur) {
            obj.deleted = Some(d);
            changed = true;
        }
    }
    for (key, incoming) in &change.fields {
        if obj.deleted.is_some_and(|d| incoming.version <= d) {
            continue;
        }
        changed |= merge_field(&mut obj.fields, key, incoming);
    }
    if changed {
        prune_deleted(obj);
    }
    Ok(changed)
}

/// The merge of two replicas of the same object, in normal form.
pub fn merge_objects(a: &Object, b: &Object) -> Result<Object, MergeError> {
    let mut out = a.clone();
    apply_in_place(&mut out, &Change::from_object(b))?;
    Ok(out)
}

/// Puts an object into normal form: fields hidden by the deletion removed.
/// Objects produced by this module are always in normal form; this is for
/// objects built by hand.
pub fn normalize(obj: &mut Object) {
    prune_deleted(obj);
}

/// The total order used to pick between two states of one field: by version,
/// then (only for equal versions, which a correct writer never produces) by
/// value.
pub fn compare_states(a: &FieldState, b: &FieldState) -> Ordering {
    a.version
        .cmp(&b.version)
        .then_with(|| cmp_opt_value(a.value.as_ref(), b.value.as_ref()))
}

fn check_same(obj: &Object, id: ObjectId, kind: Kind) -> Result<(), MergeError> {
    if obj.id != id {
        return Err(MergeError::IdMismatch {
            object: obj.id,
            change: id,
        });
    }
    if obj.kind != kind {
        return Err(MergeError::KindMismatch {
            id,
            existing: obj.kind,
            incoming: kind,
        });
    }
    Ok(())
}

fn merge_field(
    fields: &mut BTreeMap<FieldKey, FieldState>,
    key: &FieldKey,
    incoming: &FieldState,
) -> bool {
    match fields.entry(key.clone()) {
        Entry::Vacant(v) => {
            v.insert(incoming.clone());
            true
        }
        Entry::Occupied(mut o) => {
            if compare_states(incoming, o.get()) == Ordering::Greater {
                o.insert(incoming.clone());
                true
            } else {
                false
            }
        }
    }
}

fn prune_deleted(obj: &mut Object) {
    if let Some(d) = obj.deleted {
        obj.fields.retain(|_, s| s.version > d);
    }
}

fn cmp_opt_value(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => cmp_value(a, b),
    }
}

/// A total order on values: by variant, then by content. Numbers compare by
/// IEEE total order so `-0.0` and `0.0` (which encode differently) are told
/// apart.
fn cmp_value(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Text(_) => 0,
            Value::Number(_) => 1,
            Value::Integer(_) => 2,
            Value::Date(_) => 3,
            Value::Bool(_) => 4,
            Value::Choice(_) => 5,
            Value::Ref(_) => 6,
            Value::Hash(_) => 7,
        }
    }
    match (a, b) {
        (Value::Text(x), Value::Text(y)) | (Value::Choice(x), Value::Choice(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => x.total_cmp(y),
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y)) => x.to_string().cmp(&y.to_string()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Ref(x), Value::Ref(y)) => x.cmp(y),
        (Value::Hash(x), Value::Hash(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::clock::Timestamp;
    use crate::model::{Date, InstanceId, Version};

    fn v(ms: u64, inst: u64) -> Version {
        Version {
            hlc: Timestamp::new(ms, 0),
            instance: InstanceId(inst),
        }
    }

    /// A fixed id: `ObjectId::new_v7` draws random bits.
    fn id() -> ObjectId {
        ObjectId([7; 16])
    }

    fn write(field: &str, value: Option<&str>, version: Version) -> Change {
        let mut fields = BTreeMap::new();
        fields.insert(
            FieldKey::Std(field.into()),
            FieldState {
                version,
                value: value.map(|s| Value::Text(s.into())),
            },
        );
        Change {
            id: id(),
            kind: Kind::Contact,
            fields,
            deleted: None,
        }
    }

    fn delete(version: Version) -> Change {
        Change {
            id: id(),
            kind: Kind::Contact,
            fields: BTreeMap::new(),
            deleted: Some(version),
        }
    }

    fn text<'a>(o: &'a Object, f: &str) -> Option<&'a str> {
        match o.get_std(f) {
            Some(Value::Text(s)) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn later_write_wins_whatever_the_order() {
        let a = write("email", Some("old@x"), v(10, 1));
        let b = write("email", Some("new@x"), v(20, 1));
        let ab = apply_change(Some(apply_change(None, &a).unwrap()), &b).unwrap();
        let ba = apply_change(Some(apply_change(None, &b).unwrap()), &a).unwrap();
        assert_eq!(text(&ab, "email"), Some("new@x"));
        assert_eq!(ab, ba);
    }

    #[test]
    fn instance_id_breaks_timestamp_ties() {
        let a = write("email", Some("from-1"), v(10, 1));
        let b = write("email", Some("from-2"), v(10, 2));
        let o = apply_change(Some(apply_change(None, &b).unwrap()), &a).unwrap();
        assert_eq!(text(&o, "email"), Some("from-2"));
    }

    #[test]
    fn equal_versions_pick_the_same_value_everywhere() {
        let a = write("email", Some("a"), v(10, 1));
        let b = write("email", Some("b"), v(10, 1));
        let ab = apply_change(Some(apply_change(None, &a).unwrap()), &b).unwrap();
        let ba = apply_change(Some(apply_change(None, &b).unwrap()), &a).unwrap();
        assert_eq!(ab, ba);
        assert_eq!(text(&ab, "email"), Some("b"));
    }

    #[test]
    fn cleared_field_stays_cleared_against_older_writes() {
        let set = write("phone", Some("123"), v(10, 1));
        let clear = write("phone", None, v(20, 1));
        let o = apply_change(Some(apply_change(None, &clear).unwrap()), &set).unwrap();
        assert_eq!(o.get_std("phone"), None);
        assert!(
            o.fields.contains_key(&FieldKey::Std("phone".into())),
            "tombstone kept"
        );
    }

    #[test]
    fn delete_hides_and_drops_older_fields() {
        let o = apply_change(None, &write("name", Some("Ada"), v(10, 1))).unwrap();
        let o = apply_change(Some(o), &delete(v(20, 2))).unwrap();
        assert!(o.is_deleted());
        assert!(o.fields.is_empty(), "personal data dropped on delete");
        // A write the deleter had not seen, with an older timestamp, stays hidden.
        let o = apply_change(Some(o), &write("email", Some("late@x"), v(15, 3))).unwrap();
        assert!(o.is_deleted());
        assert!(o.fields.is_empty());
    }

    #[test]
    fn update_after_delete_resurrects_with_only_newer_fields() {
        let mut o = apply_change(None, &write("name", Some("Ada"), v(10, 1))).unwrap();
        apply_in_place(&mut o, &write("email", Some("ada@x"), v(11, 1))).unwrap();
        apply_in_place(&mut o, &delete(v(20, 2))).unwrap();
        apply_in_place(&mut o, &write("email", Some("ada@new"), v(30, 1))).unwrap();
        assert!(!o.is_deleted());
        assert_eq!(text(&o, "email"), Some("ada@new"));
        assert_eq!(
            o.get_std("name"),
            None,
            "fields from before the delete stay gone"
        );
    }

    #[test]
    fn kind_and_id_mismatch_are_refused_without_touching_the_object() {
        let mut o = apply_change(None, &write("name", Some("Ada"), v(10, 1))).unwrap();
        let before = o.clone();
        let mut other_kind = write("name", Some("Org"), v(20, 1));
        other_kind.kind = Kind::Organization;
        assert!(matches!(
            apply_in_place(&mut o, &other_kind),
            Err(MergeError::KindMismatch { .. })
        ));
        let mut other_id = write("name", Some("X"), v(20, 1));
        other_id.id = ObjectId([1; 16]);
        assert!(matches!(
            apply_in_place(&mut o, &other_id),
            Err(MergeError::IdMismatch { .. })
        ));
        assert_eq!(o, before);
    }

    #[test]
    fn apply_reports_whether_anything_changed() {
        let c = write("name", Some("Ada"), v(10, 1));
        let mut o = apply_change(None, &c).unwrap();
        assert!(!apply_in_place(&mut o, &c).unwrap());
        assert!(apply_in_place(&mut o, &write("name", Some("Bea"), v(11, 1))).unwrap());
    }

    #[test]
    fn values_of_different_types_are_ordered() {
        let vals = [
            Value::Text("a".into()),
            Value::Number(-0.0),
            Value::Number(0.0),
            Value::Integer(1),
            Value::Date(Date::new(2024, 1, 2).unwrap()),
            Value::Bool(false),
            Value::Choice("c".into()),
            Value::Ref(id()),
            Value::Hash([1; 32]),
        ];
        for (i, a) in vals.iter().enumerate() {
            for (j, b) in vals.iter().enumerate() {
                assert_eq!(cmp_value(a, b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
    }

    // ---- property tests -------------------------------------------------

    fn arb_value() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            "[a-c]{0,2}".prop_map(|s| Some(Value::Text(s))),
            prop_oneof![Just(0.0), Just(-0.0), Just(1.5)].prop_map(|n| Some(Value::Number(n))),
            (0i64..3).prop_map(|n| Some(Value::Integer(n))),
            any::<bool>().prop_map(|b| Some(Value::Bool(b))),
        ]
    }

    /// Small domains so that collisions (same field, same version, deletes
    /// racing writes) happen often.
    fn arb_version() -> impl Strategy<Value = Version> {
        (0u64..6, 0u64..3).prop_map(|(ms, i)| v(ms, i))
    }

    fn arb_key() -> impl Strategy<Value = FieldKey> {
        prop_oneof![
            prop_oneof![Just("name"), Just("email"), Just("phone")]
                .prop_map(|s| FieldKey::Std(s.into())),
            Just(FieldKey::Custom("level".into())),
            Just(FieldKey::Flag(ObjectId([5; 16]))),
        ]
    }

    fn arb_change() -> impl Strategy<Value = Change> {
        (
            proptest::collection::btree_map(arb_key(), (arb_version(), arb_value()), 0..4),
            proptest::option::weighted(0.25, arb_version()),
        )
            .prop_map(|(fields, deleted)| Change {
                id: id(),
                kind: Kind::Contact,
                fields: fields
                    .into_iter()
                    .map(|(k, (version, value))| (k, FieldState { version, value }))
                    .collect(),
                deleted,
            })
    }

    fn fold(changes: &[Change]) -> Option<Object> {
        let mut obj: Option<Object> = None;
        for c in changes {
            obj = Some(apply_change(obj, c).unwrap());
        }
        obj
    }

    fn bytes(o: &Option<Object>) -> Vec<u8> {
        crate::codec::encode(o).expect("objects always encode")
    }

    /// A permutation of `changes` with some of them repeated.
    fn arb_shuffled_with_dups(
        changes: Vec<Change>,
    ) -> impl Strategy<Value = (Vec<Change>, Vec<Change>)> {
        let n = changes.len();
        (
            Just(changes),
            proptest::collection::vec(0..n.max(1), 0..n + 1),
        )
            .prop_flat_map(|(changes, dups)| {
                let mut seq = changes.clone();
                for d in dups {
                    if let Some(c) = changes.get(d) {
                        seq.push(c.clone());
                    }
                }
                (Just(changes), Just(seq).prop_shuffle())
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_permutation_with_duplicates_is_byte_identical(
            (changes, shuffled) in proptest::collection::vec(arb_change(), 1..8).prop_flat_map(arb_shuffled_with_dups)
        ) {
            prop_assert_eq!(bytes(&fold(&changes)), bytes(&fold(&shuffled)));
        }

        #[test]
        fn merge_is_commutative_associative_idempotent(
            a in proptest::collection::vec(arb_change(), 1..4),
            b in proptest::collection::vec(arb_change(), 1..4),
            c in proptest::collection::vec(arb_change(), 1..4),
        ) {
            // fold() of a non-empty list is always Some.
            let (oa, ob, oc) = (fold(&a).unwrap(), fold(&b).unwrap(), fold(&c).unwrap());
            let m = |x: &Object, y: &Object| merge_objects(x, y).unwrap();
            let enc = |o: &Object| crate::codec::encode(o).unwrap();
            prop_assert_eq!(enc(&m(&oa, &ob)), enc(&m(&ob, &oa)));
            prop_assert_eq!(enc(&m(&m(&oa, &ob), &oc)), enc(&m(&oa, &m(&ob, &oc))));
            prop_assert_eq!(enc(&m(&oa, &oa)), enc(&oa));
            // Merging replicas equals replaying every change.
            let all: Vec<Change> = a.iter().chain(&b).chain(&c).cloned().collect();
            prop_assert_eq!(enc(&m(&m(&oa, &ob), &oc)), enc(&fold(&all).unwrap()));
        }

        #[test]
        fn stored_objects_are_in_normal_form(changes in proptest::collection::vec(arb_change(), 1..8)) {
            let o = fold(&changes).unwrap();
            if let Some(d) = o.deleted {
                prop_assert!(o.fields.values().all(|s| s.version > d));
            }
            // The winner of each field is the maximum state among the live writes.
            for (k, s) in &o.fields {
                let best = changes.iter().filter_map(|c| c.fields.get(k))
                    .filter(|st| o.deleted.is_none_or(|d| st.version > d))
                    .max_by(|x, y| compare_states(x, y)).unwrap();
                prop_assert_eq!(s, best);
            }
        }
    }
}
