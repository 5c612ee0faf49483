//! The JSON form of objects and field values, shared by the local API, the
//! CLI and the drop folder.
//!
//! Output: text and choice → string, number → number, integer → integer,
//! date → `"YYYY-MM-DD"`, bool → bool, ref → id string, hash → lower-case
//! hex. An object is `{"id", "kind", "fields": {..}, "custom": {..},
//! "flags": [id, ..]}`.
//!
//! Input: standard fields are typed by [`Kind::standard_field_type`]; custom
//! fields by the schema when it defines them, otherwise by the JSON type
//! (string → text, integer → integer, other number → number, bool → bool).
//! Where a field has a non-text type, its text form is accepted too (`"12.5"`
//! for a number, `"yes"` for a bool), so command lines and CSV cells can be
//! passed through unchanged. `null` clears a field.

use std::collections::BTreeMap;

use orgsync_protocol::model::{
    FieldKey, FieldType, Kind, Object, ObjectId, Schema, Value, ValueError, MAX_FIELD_NAME_LEN,
};
use serde::Deserialize;
use serde_json::{json, Map, Value as Json};

use crate::store::Edit;

/// A validated local write to one object, before the store versions it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalEdit {
    /// The object written; a new id creates the object.
    pub id: ObjectId,
    /// Its kind.
    pub kind: Kind,
    /// Field writes: `Some` sets the value, `None` clears the field.
    pub set: BTreeMap<FieldKey, Option<Value>>,
}

impl LocalEdit {
    /// An edit of `id` that writes nothing yet.
    pub fn new(id: ObjectId, kind: Kind) -> Self {
        LocalEdit {
            id,
            kind,
            set: BTreeMap::new(),
        }
    }

    /// The store's form of this edit.
    pub fn into_edit(self) -> Edit {
        let mut edit = Edit::new(self.id, self.kind);
        edit.fields = self.set.into_iter().collect();
        edit
    }
}

/// A request that cannot be accepted, with the field at fault when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    /// What is wrong, in words a user can act on.
    pub message: String,
    /// The field at fault (`email`, `custom.level`, `flags`, `kind`, ...).
    pub field: Option<String>,
}

impl InputError {
    /// An error about `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        InputError {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// An error about the request as a whole.
    pub fn general(message: impl Into<String>) -> Self {
        InputError {
            message: message.into(),
            field: None,
        }
    }
}

/// The body of `POST /v1/objects` and one record of an NDJSON import.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Object id; a new UUIDv7 is assigned when absent. Given an existing
    /// id, the record updates that object (imports are then idempotent).
    #[serde(default)]
    pub id: Option<String>,
    /// Kind name (`contact`, `organization`, `transaction`, `resume`, `flag`).
    pub kind: String,
    /// Standard fields.
    #[serde(default)]
    pub fields: Map<String, Json>,
    /// Custom fields.
    #[serde(default)]
    pub custom: Map<String, Json>,
    /// Ids of flags to attach (contacts only).
    #[serde(default)]
    pub flags: Vec<String>,
}

/// The body of `PATCH /v1/objects/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// Standard fields to set; `null` clears.
    #[serde(default)]
    pub fields: Map<String, Json>,
    /// Custom fields to set; `null` clears.
    #[serde(default)]
    pub custom: Map<String, Json>,
    /// Flags to attach.
    #[serde(default)]
    pub add_flags: Vec<String>,
    /// Flags to detach.
    #[serde(default)]
    pub remove_flags: Vec<String>,
}

/// Parses a kind name, naming the `kind` field on error.
pub fn parse_kind(s: &str) -> Result<Kind, InputError> {
    s.parse::<Kind>()
        .map_err(|e| InputError::field("kind", e.to_string()))
}

/// Parses an object id, naming `field` on error.
pub fn parse_id(field: &str, s: &str) -> Result<ObjectId, InputError> {
    s.parse::<ObjectId>()
        .map_err(|e| InputError::field(field, e.to_string()))
}

/// The JSON form of a value.
pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Text(s) | Value::Choice(s) => Json::String(s.clone()),
        // Numbers are finite by construction, so from_f64 succeeds; null is
        // a safe fallback rather than a panic.
        Value::Number(n) => serde_json::Number::from_f64(*n)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::Integer(i) => Json::from(*i),
        Value::Bool(b) => Json::Bool(*b),
        Value::Date(_) | Value::Ref(_) | Value::Hash(_) => Json::String(v.to_string()),
    }
}

/// The JSON form of an object: live fields only, flags as a list of ids.
pub fn object_to_json(obj: &Object) -> Json {
    let mut fields = Map::new();
    let mut custom = Map::new();
    let mut flags = Vec::new();
    for (key, state) in &obj.fields {
        let Some(value) = &state.value else { continue };
        match key {
            FieldKey::Std(name) => {
                fields.insert(name.clone(), value_to_json(value));
            }
            FieldKey::Custom(name) => {
                custom.insert(name.clone(), value_to_json(value));
            }
            FieldKey::Flag(id) => {
                if *value == Value::Bool(true) {
                    flags.push(Json::String(id.to_string()));
                }
            }
        }
    }
    json!({
        "id": obj.id.to_string(),
        "kind": obj.kind.as_str(),
        "fields": fields,
        "custom": custom,
        "flags": flags,
    })
}

fn value_error(field: &str, e: ValueError) -> InputError {
    InputError::field(field, e.to_string())
}

fn json_type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// Converts a non-null JSON value to a value of type `ty` for `field`
/// (`field` is the name shown in errors, e.g. `custom.level`).
pub fn value_from_json(field: &str, ty: FieldType, v: &Json) -> Result<Value, InputError> {
    let wrong = || {
        InputError::field(
            field,
            format!(
                "field {field:?} takes a {ty} value, got a JSON {}",
                json_type_name(v)
            ),
        )
    };
    let value = match (ty, v) {
        (_, Json::String(s)) => {
            return Value::parse(field, ty, s).map_err(|e| value_error(field, e))
        }
        (FieldType::Number, Json::Number(n)) => Value::Number(n.as_f64().ok_or_else(wrong)?),
        (FieldType::Integer, Json::Number(n)) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => {
                return Err(InputError::field(
                    field,
                    format!("field {field:?} takes a whole number (64-bit), got {n}"),
                ))
            }
        },
        (FieldType::Bool, Json::Bool(b)) => Value::Bool(*b),
        _ => return Err(wrong()),
    };
    value
        .validate(field, ty)
        .map_err(|e| value_error(field, e))?;
    Ok(value)
}

/// Infers a custom field's value from its JSON type when the schema does not
/// define the field.
fn infer_value(field: &str, v: &Json) -> Result<Value, InputError> {
    let value = match v {
        Json::String(s) => Value::Text(s.clone()),
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().ok_or_else(|| {
                InputError::field(field, format!("field {field:?}: {n} is out of range"))
            })?),
        },
        other => {
            return Err(InputError::field(
                field,
                format!(
                "field {field:?}: a JSON {} is not a field value (use a string, number or bool)",
                json_type_name(other)
            ),
            ))
        }
    };
    value
        .validate(field, value.field_type())
        .map_err(|e| value_error(field, e))?;
    Ok(value)
}

pub(crate) fn check_custom_name(name: &str) -> Result<(), InputError> {
    let shown = format!("custom.{name}");
    if name.is_empty() || name.len() > MAX_FIELD_NAME_LEN {
        return Err(InputError::field(
            shown,
            format!("custom field names have 1 to {MAX_FIELD_NAME_LEN} bytes"),
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return Err(InputError::field(
            shown,
            format!("custom field name {name:?} may only hold letters, digits, '_', '-' and '.'"),
        ));
    }
    Ok(())
}

/// The role (contacts) or category (organizations) that selects which
/// custom fields apply, as it will be after the edit.
fn scope_value(
    kind: Kind,
    existing: Option<&Object>,
    set: &BTreeMap<FieldKey, Option<Value>>,
) -> Option<String> {
    let name = match kind {
        Kind::Contact => "role",
        Kind::Organization => "category",
        _ => return None,
    };
    let key = FieldKey::Std(name.to_string());
    let current = match set.get(&key) {
        Some(v) => v.clone(),
        None => existing.and_then(|o| o.get(&key).cloned()),
    };
    match current {
        Some(Value::Text(s)) | Some(Value::Choice(s)) => Some(s),
        _ => None,
    }
}

/// Applies standard-field writes from JSON to `edit`.
fn add_std_fields(edit: &mut LocalEdit, fields: &Map<String, Json>) -> Result<(), InputError> {
    for (name, v) in fields {
        let ty = edit.kind.standard_field_type(name).ok_or_else(|| {
            let known: Vec<&str> = edit.kind.standard_fields().iter().map(|(n, _)| *n).collect();
            InputError::field(
                name.clone(),
                format!(
                    "{} has no standard field {name:?} (known: {}; custom fields go under \"custom\")",
                    edit.kind,
                    known.join(", ")
                ),
            )
        })?;
        let value = match v {
            Json::Null => None,
            v => Some(value_from_json(name, ty, v)?),
        };
        edit.set.insert(FieldKey::Std(name.clone()), value);
    }
    Ok(())
}

/// Applies custom-field writes from JSON to `edit`, typed by `schema` where it
/// defines the field for the object's kind and role/category.
fn add_custom_fields(
    edit: &mut LocalEdit,
    schema: &Schema,
    existing: Option<&Object>,
    custom: &Map<String, Json>,
) -> Result<(), InputError> {
    let scope = scope_value(edit.kind, existing, &edit.set);
    for (name, v) in custom {
        check_custom_name(name)?;
        let shown = format!("custom.{name}");
        let value = match (v, schema.custom_field(edit.kind, scope.as_deref(), name)) {
            (Json::Null, _) => None,
            (v, Some(def)) => {
                // A choice field accepts the choice's text.
                let value = value_from_json(&shown, def.ty, v)?;
                def.validate(&value).map_err(|e| value_error(&shown, e))?;
                Some(value)
            }
            (v, None) => Some(infer_value(&shown, v)?),
        };
        edit.set.insert(FieldKey::Custom(name.clone()), value);
    }
    Ok(())
}

fn add_flags(
    edit: &mut LocalEdit,
    flags: &[String],
    on: bool,
    field: &str,
) -> Result<(), InputError> {
    if !flags.is_empty() && edit.kind != Kind::Contact {
        return Err(InputError::field(
            field,
            format!("flags attach to contacts, not to a {}", edit.kind),
        ));
    }
    for f in flags {
        let id = parse_id(field, f)?;
        edit.set
            .insert(FieldKey::Flag(id), on.then_some(Value::Bool(true)));
    }
    Ok(())
}

/// Turns a create request into an edit. `existing` is the stored object
/// when the request names the id of one (then the request updates it and
/// must have the same kind); `new_id` supplies an id when none is given.
pub fn build_create(
    schema: &Schema,
    req: &CreateRequest,
    existing: Option<&Object>,
    new_id: impl FnOnce() -> ObjectId,
) -> Result<LocalEdit, InputError> {
    let kind = parse_kind(&req.kind)?;
    let id = match &req.id {
        Some(s) => parse_id("id", s)?,
        None => new_id(),
    };
    if let Some(obj) = existing {
        if obj.kind != kind {
            return Err(InputError::field(
                "kind",
                format!("object {id} is a {}, not a {kind}", obj.kind),
            ));
        }
    }
    let existing = existing.filter(|o| !o.is_deleted());
    let mut edit = LocalEdit::new(id, kind);
    add_std_fields(&mut edit, &req.fields)?;
    add_custom_fields(&mut edit, schema, existing, &req.custom)?;
    add_flags(&mut edit, &req.flags, true, "flags")?;
    if edit.set.values().all(Option::is_none) {
        return Err(InputError::general(format!(
            "a new {kind} needs at least one field"
        )));
    }
    Ok(edit)
}

/// Turns an update request for the live object `existing` into an edit.
pub fn build_update(
    schema: &Schema,
    existing: &Object,
    req: &UpdateRequest,
) -> Result<LocalEdit, InputError> {
    let mut edit = LocalEdit::new(existing.id, existing.kind);
    add_std_fields(&mut edit, &req.fields)?;
    add_custom_fields(&mut edit, schema, Some(existing), &req.custom)?;
    add_flags(&mut edit, &req.add_flags, true, "add_flags")?;
    add_flags(&mut edit, &req.remove_flags, false, "remove_flags")?;
    if edit.set.is_empty() {
        return Err(InputError::general(
            "nothing to update: give \"fields\", \"custom\", \"add_flags\" or \"remove_flags\"",
        ));
    }
    Ok(edit)
}

/// Formats Unix milliseconds as an RFC 3339 UTC timestamp
/// (`2024-05-01T12:00:00.000Z`).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use orgsync_protocol::model::{CustomField, FieldScope};

    fn id() -> ObjectId {
        ObjectId::new_v7(1_700_000_000_000)
    }

    fn create(v: Json) -> Result<LocalEdit, InputError> {
        let req: CreateRequest =
            serde_json::from_value(v).map_err(|e| InputError::general(e.to_string()))?;
        build_create(&Schema::default(), &req, None, id)
    }

    #[test]
    fn standard_fields_are_typed_by_kind() {
        let e = create(json!({"kind": "transaction", "fields": {"amount": 12.5, "date": "2024-02-29", "type": "hire"}})).unwrap();
        assert_eq!(
            e.set[&FieldKey::Std("amount".into())],
            Some(Value::Number(12.5))
        );
        assert!(matches!(
            e.set[&FieldKey::Std("date".into())],
            Some(Value::Date(_))
        ));
        let e = create(json!({"kind": "transaction", "fields": {"amount": "12.5"}})).unwrap();
        assert_eq!(
            e.set[&FieldKey::Std("amount".into())],
            Some(Value::Number(12.5))
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = create(json!({"kind": "contact", "fields": {"shoe_size": "44"}})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("shoe_size"));
        let err =
            create(json!({"kind": "transaction", "fields": {"date": "yesterday"}})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("date"));
        let err = create(json!({"kind": "transaction", "fields": {"amount": true}})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("amount"));
        assert!(err.message.contains("number"), "{}", err.message);
        let err = create(json!({"kind": "widget", "fields": {}})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("kind"));
        let err =
            create(json!({"kind": "contact", "fields": {"organization": "nope"}})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("organization"));
        let err = create(
            json!({"kind": "organization", "fields": {"name": "x"}, "flags": [id().to_string()]}),
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("flags"));
        let err = create(json!({"kind": "contact", "custom": {"a b": 1}})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("custom.a b"));
        let err = create(json!({"kind": "contact", "custom": {"x": [1]}})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("custom.x"));
    }

    #[test]
    fn custom_fields_follow_schema_or_json_type() {
        let schema = Schema {
            fields: vec![CustomField {
                name: "level".into(),
                ty: FieldType::Choice,
                choices: vec!["junior".into(), "senior".into()],
                scope: FieldScope::Role("candidate".into()),
            }],
        };
        let req: CreateRequest = serde_json::from_value(json!({
            "kind": "contact",
            "fields": {"role": "candidate"},
            "custom": {"level": "senior", "age": 42, "score": 1.5, "ok": true, "note": "x"}
        }))
        .unwrap();
        let e = build_create(&schema, &req, None, id).unwrap();
        assert_eq!(
            e.set[&FieldKey::Custom("level".into())],
            Some(Value::Choice("senior".into()))
        );
        assert_eq!(
            e.set[&FieldKey::Custom("age".into())],
            Some(Value::Integer(42))
        );
        assert_eq!(
            e.set[&FieldKey::Custom("score".into())],
            Some(Value::Number(1.5))
        );
        assert_eq!(
            e.set[&FieldKey::Custom("ok".into())],
            Some(Value::Bool(true))
        );
        let req: CreateRequest = serde_json::from_value(json!({
            "kind": "contact", "fields": {"role": "candidate"}, "custom": {"level": "boss"}
        }))
        .unwrap();
        let err = build_create(&schema, &req, None, id).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("custom.level"));
    }

    #[test]
    fn values_round_trip_through_json() {
        let e = create(json!({"kind": "resume", "fields": {
            "hash": "00".repeat(32), "size": 10, "contact": id().to_string()
        }}))
        .unwrap();
        for v in e.set.values().flatten() {
            let back = value_from_json("f", v.field_type(), &value_to_json(v)).unwrap();
            assert_eq!(&back, v);
        }
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
    }
}
