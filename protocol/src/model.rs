//! The data model: identifiers, kinds, typed field values, custom-field
//! schemas, and the versioned objects and changes that instances exchange.
//!
//! Every field of an object carries its own [`Version`] (hybrid logical clock
//! timestamp and writing instance); see [`crate::merge`] for how concurrent
//! versions are reconciled.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

// ---------------------------------------------------------------------------
// OrgId and the account number
// ---------------------------------------------------------------------------

/// The identity of an organisation: a 32-byte hash of its public identity
/// (see [`crate::identity::OrgKeyPair::org_id`]).
///
/// People see it as an *account number* ([`OrgId::account_number`]): 56
/// base32 characters in 8 groups of 7, where each quarter of the number ends
/// in a check character, so a mistyped or transposed character is caught by
/// [`OrgId::from_str`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrgId(pub [u8; 32]);

/// Why an account number could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountNumberError {
    /// The number does not have 56 characters once dashes and spaces are removed.
    #[error("an account number has 56 characters (8 groups of 7), this one has {found}")]
    Length {
        /// Characters found, without separators.
        found: usize,
    },
    /// A character outside the base32 alphabet (A–Z, 2–7).
    #[error(
        "character {ch:?} at position {position} is not used in account numbers (only A-Z and 2-7)"
    )]
    Character {
        /// 1-based position among the 56 characters.
        position: usize,
        /// The offending character.
        ch: char,
    },
    /// A check character did not match: a character in that quarter is mistyped.
    #[error(
        "the account number has a typo in characters {first}-{last} (check character mismatch)"
    )]
    Check {
        /// First 1-based character position of the quarter that failed.
        first: usize,
        /// Last 1-based character position of that quarter.
        last: usize,
    },
}

const B32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn b32_value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'2'..=b'7' => Some(u32::from(c - b'2') + 26),
        _ => None,
    }
}

/// Luhn mod N over base32, the check algorithm Syncthing uses for device IDs.
fn luhn32(chunk: &[u8]) -> u8 {
    let mut factor = 1u32;
    let mut sum = 0u32;
    for &c in chunk {
        // Chunks come from our own encoder, so every character is in the alphabet.
        let code = b32_value(c).unwrap_or(0);
        let mut addend = factor * code;
        factor = if factor == 2 { 1 } else { 2 };
        addend = (addend / 32) + (addend % 32);
        sum += addend;
    }
    let check = (32 - (sum % 32)) % 32;
    B32_ALPHABET[check as usize]
}

impl OrgId {
    /// The account number: base32 of the 32 bytes (52 characters), cut into
    /// four quarters of 13 each followed by a Luhn-32 check character, shown
    /// as 8 dash-separated groups of 7.
    pub fn account_number(&self) -> String {
        let b32 = data_encoding::BASE32_NOPAD.encode(&self.0);
        let raw = b32.as_bytes();
        let mut chars = Vec::with_capacity(56);
        for quarter in raw.chunks(13) {
            chars.extend_from_slice(quarter);
            chars.push(luhn32(quarter));
        }
        let groups: Vec<&str> = chars
            .chunks(7)
            // Only ASCII from the base32 alphabet was pushed above.
            .map(|g| std::str::from_utf8(g).expect("base32 is ASCII"))
            .collect();
        groups.join("-")
    }

    /// The first group of the account number: a short label for logs.
    pub fn short(&self) -> String {
        self.account_number()[..7].to_string()
    }
}

impl FromStr for OrgId {
    type Err = AccountNumberError;

    /// Parses an account number; dashes, spaces and lower case are accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cleaned: Vec<char> = s
            .chars()
            .filter(|c| *c != '-' && !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if cleaned.len() != 56 {
            return Err(AccountNumberError::Length {
                found: cleaned.len(),
            });
        }
        let mut bytes = Vec::with_capacity(56);
        for (i, &ch) in cleaned.iter().enumerate() {
            if !ch.is_ascii() || b32_value(ch as u8).is_none() {
                return Err(AccountNumberError::Character {
                    position: i + 1,
                    ch,
                });
            }
            bytes.push(ch as u8);
        }
        let mut data = Vec::with_capacity(52);
        for (q, quarter) in bytes.chunks(14).enumerate() {
            let (body, check) = quarter.split_at(13);
            if luhn32(body) != check[0] {
                return Err(AccountNumberError::Check {
                    first: q * 14 + 1,
                    last: q * 14 + 14,
                });
            }
            data.extend_from_slice(body);
        }
        let decoded = data_encoding::BASE32_NOPAD.decode(&data).map_err(|e| {
            // 52 valid characters always decode to 32 bytes except when the
            // trailing bits are not zero; report it against the last quarter.
            let _ = e;
            AccountNumberError::Check {
                first: 43,
                last: 56,
            }
        })?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&decoded);
        Ok(OrgId(out))
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.account_number())
    }
}

impl fmt::Debug for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgId({})", self.short())
    }
}

// ---------------------------------------------------------------------------
// InstanceId and ObjectId
// ---------------------------------------------------------------------------

/// One running instance of an organisation. Random 64-bit value chosen when
/// the instance is created; every field write is tagged with it, and it is
/// the tie-breaker between writes with equal clock timestamps.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceId(pub u64);

impl InstanceId {
    /// A fresh random instance id from the operating system's RNG.
    pub fn random() -> Self {
        use rand_core::RngCore;
        InstanceId(rand_core::OsRng.next_u64())
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({:016x})", self.0)
    }
}

/// Why an id could not be parsed from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// Not a UUID in any of the usual text forms.
    #[error("{input:?} is not an object id (expected a UUID like 0190a1b2-...)")]
    ObjectId {
        /// What was given.
        input: String,
    },
    /// Not 16 hexadecimal digits.
    #[error("{input:?} is not an instance id (expected 16 hex digits)")]
    InstanceId {
        /// What was given.
        input: String,
    },
}

impl FromStr for InstanceId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(IdParseError::InstanceId { input: s.into() });
        }
        u64::from_str_radix(s, 16)
            .map(InstanceId)
            .map_err(|_| IdParseError::InstanceId { input: s.into() })
    }
}

/// A 128-bit, time-ordered object identifier (UUIDv7) assigned where the
/// object is created. Sorting ids sorts objects by creation time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectId(pub [u8; 16]);

impl ObjectId {
    /// A new UUIDv7 for the given wall-clock time in milliseconds since the
    /// Unix epoch; the remaining 74 bits are random. Taking the time as an
    /// argument keeps this crate free of clock reads.
    pub fn new_v7(unix_ms: u64) -> Self {
        use rand_core::RngCore;
        let mut random = [0u8; 10];
        rand_core::OsRng.fill_bytes(&mut random);
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            unix_ms / 1000,
            ((unix_ms % 1000) * 1_000_000) as u32,
        );
        let mut bytes = *uuid::Uuid::new_v7(ts).as_bytes();
        // Replace uuid's randomness with ours so that only OsRng is used.
        bytes[6] = (bytes[6] & 0xf0) | (random[0] & 0x0f);
        bytes[7] = random[1];
        bytes[8] = (bytes[8] & 0xc0) | (random[2] & 0x3f);
        bytes[9..16].copy_from_slice(&random[3..10]);
        ObjectId(bytes)
    }

    /// Milliseconds since the Unix epoch encoded in a UUIDv7 id.
    pub fn unix_ms(&self) -> u64 {
        let mut ms = [0u8; 8];
        ms[2..8].copy_from_slice(&self.0[0..6]);
        u64::from_be_bytes(ms)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_bytes(self.0).hyphenated(), f)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

impl FromStr for ObjectId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(|u| ObjectId(*u.as_bytes()))
            .map_err(|_| IdParseError::ObjectId { input: s.into() })
    }
}

// ---------------------------------------------------------------------------
// Kinds, values and schemas
// ---------------------------------------------------------------------------

/// The kinds of record orgsync exchanges.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Kind {
    /// A person.
    Contact,
    /// An organisation (company, school, agency) that contacts belong to.
    Organization,
    /// A personal transaction: typed, dated, linked to a contact and an organization.
    Transaction,
    /// A résumé file attached to a contact (metadata; content travels as a blob).
    Resume,
    /// A label attached to contacts, used to select what is shared.
    Flag,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 5] = [
        Kind::Contact,
        Kind::Organization,
        Kind::Transaction,
        Kind::Resume,
        Kind::Flag,
    ];

    /// The lower-case name used in CLIs, APIs and files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Contact => "contact",
            Kind::Organization => "organization",
            Kind::Transaction => "transaction",
            Kind::Resume => "resume",
            Kind::Flag => "flag",
        }
    }

    /// The standard fields of this kind and their types. Fields not listed
    /// here are refused unless they are custom fields.
    pub fn standard_fields(&self) -> &'static [(&'static str, FieldType)] {
        use FieldType::*;
        match self {
            Kind::Contact => &[
                ("first_name", Text),
                ("last_name", Text),
                ("email", Text),
                ("phone", Text),
                ("role", Text),
                ("organization", Ref),
                ("notes", Text),
            ],
            Kind::Organization => &[
                ("name", Text),
                ("category", Text),
                ("address", Text),
                ("city", Text),
                ("country", Text),
                ("website", Text),
                ("parent", Ref),
            ],
            Kind::Transaction => &[
                ("type", Text),
                ("date", Date),
                ("amount", Number),
                ("currency", Text),
                ("contact", Ref),
                ("organization", Ref),
                ("description", Text),
            ],
            Kind::Resume => &[
                ("contact", Ref),
                ("file_name", Text),
                ("media_type", Text),
                ("size", Integer),
                ("hash", Hash),
            ],
            Kind::Flag => &[("name", Text), ("color", Text), ("description", Text)],
        }
    }

    /// The type of a standard field, if `name` is one for this kind.
    pub fn standard_field_type(&self, name: &str) -> Option<FieldType> {
        self.standard_fields()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given was not a kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind {0:?} (expected contact, organization, transaction, resume or flag)")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == lower || (lower == "organisation" && *k == Kind::Organization))
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// A calendar date (proleptic Gregorian), validated on construction.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Date {
    /// Year, 1..=9999.
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of month, valid for the month and year.
    pub day: u8,
}

impl Date {
    /// A date if it exists in the calendar.
    pub fn new(year: u16, month: u8, day: u8) -> Option<Date> {
        let leap =
            (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        ((1..=9999).contains(&year) && (1..=days).contains(&day)).then_some(Date {
            year,
            month,
            day,
        })
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl FromStr for Date {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ValueError::Date { input: s.into() };
        let mut parts = s.splitn(3, '-');
        let (y, m, d) = (parts.next(), parts.next(), parts.next());
        match (y, m, d) {
            (Some(y), Some(m), Some(d)) if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
                let y = y.parse().map_err(|_| bad())?;
                let m = m.parse().map_err(|_| bad())?;
                let d = d.parse().map_err(|_| bad())?;
                Date::new(y, m, d).ok_or_else(bad)
            }
            _ => Err(bad()),
        }
    }
}

/// The type of a field, standard or custom.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum FieldType {
    /// Free text.
    Text,
    /// A finite decimal number.
    Number,
    /// A whole number (sizes, counts).
    Integer,
    /// A calendar date.
    Date,
    /// Yes or no.
    Bool,
    /// One of the schema's listed choices.
    Choice,
    /// A link to another object.
    Ref,
    /// A BLAKE3 content hash.
    Hash,
}

impl FieldType {
    /// The lower-case name used in schemas and messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Number => "number",
            FieldType::Integer => "integer",
            FieldType::Date => "date",
            FieldType::Bool => "bool",
            FieldType::Choice => "choice",
            FieldType::Ref => "ref",
            FieldType::Hash => "hash",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed field value.
///
/// Numbers are `f64` but never NaN or infinite ([`Value::validate`] refuses
/// them), so every value has one canonical encoding.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum Value {
    /// Free text.
    Text(String),
    /// A finite number.
    Number(f64),
    /// A whole number.
    Integer(i64),
    /// A calendar date.
    Date(Date),
    /// Yes or no.
    Bool(bool),
    /// One of a schema's choices.
    Choice(String),
    /// A link to another object.
    Ref(ObjectId),
    /// A BLAKE3 content hash.
    Hash([u8; 32]),
}

/// Why a value does not fit its field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// The value has another type than the field.
    #[error("field {field:?} takes a {expected} value, got a {found}")]
    Type {
        /// Field name.
        field: String,
        /// Type the field is declared with.
        expected: FieldType,
        /// Type of the value given.
        found: FieldType,
    },
    /// A number that is NaN or infinite.
    #[error("field {field:?}: numbers must be finite")]
    NotFinite {
        /// Field name.
        field: String,
    },
    /// A choice that the schema does not list.
    #[error("field {field:?}: {value:?} is not one of the choices {choices:?}")]
    Choice {
        /// Field name.
        field: String,
        /// The value given.
        value: String,
        /// The allowed choices.
        choices: Vec<String>,
    },
    /// Text longer than [`MAX_TEXT_LEN`].
    #[error("field {field:?}: text of {len} bytes is longer than the limit of {max}")]
    TooLong {
        /// Field name.
        field: String,
        /// Length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Text that is not a date.
    #[error("{input:?} is not a date (expected YYYY-MM-DD)")]
    Date {
        /// What was given.
        input: String,
    },
    /// Text that is not a value of the field's type.
    #[error("field {field:?}: {input:?} is not a valid {expected}")]
    Parse {
        /// Field name.
        field: String,
        /// What was given.
        input: String,
        /// The type expected.
        expected: FieldType,
    },
    /// A field name that is neither standard for the kind nor a defined custom field.
    #[error("{kind} has no field {field:?}")]
    UnknownField {
        /// The object's kind.
        kind: Kind,
        /// Field name.
        field: String,
    },
}

/// Longest text value accepted in a field, in bytes.
pub const MAX_TEXT_LEN: usize = 16 * 1024;
/// Longest field name accepted, in bytes.
pub const MAX_FIELD_NAME_LEN: usize = 128;

impl Value {
    /// The type of this value.
    pub fn field_type(&self) -> FieldType {
        match self {
            Value::Text(_) => FieldType::Text,
            Value::Number(_) => FieldType::Number,
            Value::Integer(_) => FieldType::Integer,
            Value::Date(_) => FieldType::Date,
            Value::Bool(_) => FieldType::Bool,
            Value::Choice(_) => FieldType::Choice,
            Value::Ref(_) => FieldType::Ref,
            Value::Hash(_) => FieldType::Hash,
        }
    }

    /// Checks that the value is a well-formed value of type `ty` for `field`
    /// (finite numbers, bounded text). Choices are checked by [`CustomField`].
    pub fn validate(&self, field: &str, ty: FieldType) -> Result<(), ValueError> {
        if self.field_type() != ty {
            return Err(ValueError::Type {
                field: field.into(),
                expected: ty,
                found: self.field_type(),
            });
        }
        match self {
            Value::Number(n) if !n.is_finite() => Err(ValueError::NotFinite {
                field: field.into(),
            }),
            Value::Text(s) | Value::Choice(s) if s.len() > MAX_TEXT_LEN => {
                Err(ValueError::TooLong {
                    field: field.into(),
                    len: s.len(),
                    max: MAX_TEXT_LEN,
                })
            }
            _ => Ok(()),
        }
    }

    /// Parses the text form of a value of type `ty` (as typed on a command
    /// line or found in a CSV cell).
    pub fn parse(field: &str, ty: FieldType, input: &str) -> Result<Value, ValueError> {
        let bad = || ValueError::Parse {
            field: field.into(),
            input: input.into(),
            expected: ty,
        };
        let value = match ty {
            FieldType::Text => Value::Text(input.into()),
            FieldType::Choice => Value::Choice(input.into()),
            FieldType::Number => Value::Number(input.trim().parse().map_err(|_| bad())?),
            FieldType::Integer => Value::Integer(input.trim().parse().map_err(|_| bad())?),
            FieldType::Date => Value::Date(input.trim().parse().map_err(|_| bad())?),
            FieldType::Bool => match input.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Value::Bool(true),
                "false" | "no" | "0" => Value::Bool(false),
                _ => return Err(bad()),
            },
            FieldType::Ref => Value::Ref(input.trim().parse().map_err(|_| bad())?),
            FieldType::Hash => {
                let bytes = data_encoding::HEXLOWER_PERMISSIVE
                    .decode(input.trim().as_bytes())
                    .map_err(|_| bad())?;
                Value::Hash(bytes.try_into().map_err(|_| bad())?)
            }
        };
        value.validate(field, ty)?;
        Ok(value)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) | Value::Choice(s) => f.write_str(s),
            Value::Number(n) => write!(f, "{n}"),
            Value::Integer(n) => write!(f, "{n}"),
            Value::Date(d) => write!(f, "{d}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Ref(id) => write!(f, "{id}"),
            Value::Hash(h) => f.write_str(&data_encoding::HEXLOWER.encode(h)),
        }
    }
}

/// Where a custom field applies: contacts with a given role, organizations
/// of a given category, or every object of a kind. Partners agree on the
/// scope used to pass custom fields between them.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum FieldScope {
    /// Contacts whose `role` field equals this text.
    Role(String),
    /// Organizations whose `category` field equals this text.
    Category(String),
    /// Every object of this kind.
    Kind(Kind),
}

/// The definition of one custom field.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct CustomField {
    /// Field name, unique within its scope.
    pub name: String,
    /// Value type.
    pub ty: FieldType,
    /// Allowed values when `ty` is [`FieldType::Choice`]; empty otherwise.
    pub choices: Vec<String>,
    /// Where the field applies.
    pub scope: FieldScope,
}

impl CustomField {
    /// Checks a value against this definition (type, bounds, choices).
    pub fn validate(&self, value: &Value) -> Result<(), ValueError> {
        value.validate(&self.name, self.ty)?;
        if let Value::Choice(c) = value {
            if !self.choices.iter().any(|x| x == c) {
                return Err(ValueError::Choice {
                    field: self.name.clone(),
                    value: c.clone(),
                    choices: self.choices.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A set of custom-field definitions: what an instance accepts in
/// [`FieldKey::Custom`] fields.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Schema {
    /// The definitions.
    pub fields: Vec<CustomField>,
}

impl Schema {
    /// The definition of custom field `name` that applies to an object of
    /// `kind` with the given role/category, if any.
    pub fn custom_field(
        &self,
        kind: Kind,
        role_or_category: Option<&str>,
        name: &str,
    ) -> Option<&CustomField> {
        self.fields.iter().find(|f| {
            f.name == name
                && match &f.scope {
                    FieldScope::Kind(k) => *k == kind,
                    FieldScope::Role(r) => {
                        kind == Kind::Contact && role_or_category == Some(r.as_str())
                    }
                    FieldScope::Category(c) => {
                        kind == Kind::Organization && role_or_category == Some(c.as_str())
                    }
                }
        })
    }

    /// Validates one field value written to an object of `kind`.
    /// `role_or_category` is the object's current role (contacts) or
    /// category (organizations), which selects the custom fields that apply.
    pub fn validate_field(
        &self,
        kind: Kind,
        role_or_category: Option<&str>,
        key: &FieldKey,
        value: &Value,
    ) -> Result<(), ValueError> {
        match key {
            FieldKey::Std(name) => {
                let ty =
                    kind.standard_field_type(name)
                        .ok_or_else(|| ValueError::UnknownField {
                            kind,
                            field: name.clone(),
                        })?;
                value.validate(name, ty)
            }
            FieldKey::Custom(name) => self
                .custom_field(kind, role_or_category, name)
                .ok_or_else(|| ValueError::UnknownField {
                    kind,
                    field: format!("custom.{name}"),
                })?
                .validate(value),
            FieldKey::Flag(_) => value.validate("flag", FieldType::Bool),
        }
    }
}

// ---------------------------------------------------------------------------
// Versioned objects and changes
// ---------------------------------------------------------------------------

/// The name of a field of an object.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum FieldKey {
    /// A standard field of the object's kind (see [`Kind::standard_fields`]).
    Std(String),
    /// A custom field defined in a [`Schema`].
    Custom(String),
    /// Membership of a contact in a flag: `Bool(true)` while flagged. Each
    /// membership is its own field so concurrent flagging merges cleanly.
    Flag(ObjectId),
}

impl fmt::Display for FieldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldKey::Std(n) => f.write_str(n),
            FieldKey::Custom(n) => write!(f, "custom.{n}"),
            FieldKey::Flag(id) => write!(f, "flag.{id}"),
        }
    }
}

/// The version of one field write: when (hybrid logical clock) and by which
/// instance. Versions are totally ordered by timestamp, then instance.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Version {
    /// When the write happened.
    pub hlc: Timestamp,
    /// Which instance wrote it.
    pub instance: InstanceId,
}

/// One field's current state: its version and its value, or `None` for a
/// tombstone (the field was cleared at that version).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct FieldState {
    /// Version of the write that produced this state.
    pub version: Version,
    /// The value, or `None` if the field was cleared.
    pub value: Option<Value>,
}

/// An object as stored: per-field states plus the object's deletion
/// tombstone. Kept in the normal form produced by [`crate::merge`], so equal
/// objects encode to equal bytes.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Object {
    /// The object's id.
    pub id: ObjectId,
    /// The object's kind; never changes.
    pub kind: Kind,
    /// Field states, ordered by key.
    pub fields: BTreeMap<FieldKey, FieldState>,
    /// When the object was last deleted; field writes at or before this
    /// version are hidden (see [`crate::merge`]).
    pub deleted: Option<Version>,
}

impl Object {
    /// An empty object of `kind`.
    pub fn new(id: ObjectId, kind: Kind) -> Self {
        Object {
            id,
            kind,
            fields: BTreeMap::new(),
            deleted: None,
        }
    }

    /// The live value of a field, if it is set.
    pub fn get(&self, key: &FieldKey) -> Option<&Value> {
        self.fields.get(key).and_then(|s| s.value.as_ref())
    }

    /// The live value of a standard field.
    pub fn get_std(&self, name: &str) -> Option<&Value> {
        self.get(&FieldKey::Std(name.to_string()))
    }

    /// True when the object is deleted and no field was written after the deletion.
    pub fn is_deleted(&self) -> bool {
        self.deleted.is_some() && self.fields.values().all(|s| s.value.is_none())
    }

    /// The newest version of anything in this object.
    pub fn max_version(&self) -> Option<Version> {
        self.fields
            .values()
            .map(|s| s.version)
            .chain(self.deleted)
            .max()
    }
}

/// A change to one object: the fields written (with their versions) and
/// possibly a deletion. Changes are what the change log holds and what
/// partners send each other; applying one to an object is [`crate::merge`].
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Change {
    /// The object changed.
    pub id: ObjectId,
    /// Its kind.
    pub kind: Kind,
    /// The field writes of this change, ordered by key.
    pub fields: BTreeMap<FieldKey, FieldState>,
    /// Set when this change deletes the object.
    pub deleted: Option<Version>,
}

impl Change {
    /// The whole object as one change (used to send an object in full).
    pub fn from_object(obj: &Object) -> Change {
        Change {
            id: obj.id,
            kind: obj.kind,
            fields: obj.fields.clone(),
            deleted: obj.deleted,
        }
    }
}

/// A change with its position in the writer's change log.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct SequencedChange {
    /// Position in the sender's log; strictly increasing, starting at 1.
    pub seq: u64,
    /// The change.
    pub change: Change,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_number_round_trips_and_has_groups() {
        let id = OrgId([7u8; 32]);
        let text = id.account_number();
        assert_eq!(text.len(), 56 + 7);
        assert_eq!(text.split('-').count(), 8);
        assert!(text.split('-').all(|g| g.len() == 7));
        assert_eq!(text.parse::<OrgId>().unwrap(), id);
        assert_eq!(
            text.to_lowercase()
                .replace('-', " ")
                .parse::<OrgId>()
                .unwrap(),
            id
        );
    }

    #[test]
    fn account_number_catches_every_single_typo() {
        let id = OrgId(*blake3::hash(b"org").as_bytes());
        let text: Vec<char> = id.account_number().chars().collect();
        for i in 0..text.len() {
            if text[i] == '-' {
                continue;
            }
            for &c in B32_ALPHABET.iter() {
                let c = c as char;
                if c == text[i] {
                    continue;
                }
                let mut typo = text.clone();
                typo[i] = c;
                let typo: String = typo.into_iter().collect();
                assert!(
                    typo.parse::<OrgId>().is_err(),
                    "typo at {i} accepted: {typo}"
                );
            }
        }
    }

    #[test]
    fn account_number_errors_are_specific() {
        assert_eq!(
            "ABC".parse::<OrgId>(),
            Err(AccountNumberError::Length { found: 3 })
        );
        let mut s = OrgId([1u8; 32]).account_number();
        s.replace_range(0..1, "1");
        assert!(matches!(
            s.parse::<OrgId>(),
            Err(AccountNumberError::Character {
                position: 1,
                ch: '1'
            })
        ));
    }

    #[test]
    fn object_ids_are_v7_and_time_ordered() {
        let a = ObjectId::new_v7(1_700_000_000_000);
        let b = ObjectId::new_v7(1_700_000_000_001);
        assert!(a < b);
        assert_eq!(a.unix_ms(), 1_700_000_000_000);
        assert_eq!(uuid::Uuid::from_bytes(a.0).get_version_num(), 7);
        assert_eq!(a.to_string().parse::<ObjectId>().unwrap(), a);
        assert!("nope".parse::<ObjectId>().is_err());
    }

    #[test]
    fn values_parse_and_validate() {
        assert_eq!(
            Value::parse("d", FieldType::Date, "2024-02-29").unwrap(),
            Value::Date(Date::new(2024, 2, 29).unwrap())
        );
        assert!(Value::parse("d", FieldType::Date, "2023-02-29").is_err());
        assert!(Value::parse("n", FieldType::Number, "NaN").is_err());
        assert!(Value::parse("n", FieldType::Number, "inf").is_err());
        assert_eq!(
            Value::parse("b", FieldType::Bool, "yes").unwrap(),
            Value::Bool(true)
        );
        assert!(Value::parse("b", FieldType::Bool, "maybe").is_err());
        let f = CustomField {
            name: "level".into(),
            ty: FieldType::Choice,
            choices: vec!["junior".into(), "senior".into()],
            scope: FieldScope::Role("candidate".into()),
        };
        assert!(f.validate(&Value::Choice("senior".into())).is_ok());
        assert!(matches!(
            f.validate(&Value::Choice("boss".into())),
            Err(ValueError::Choice { .. })
        ));
        let schema = Schema { fields: vec![f] };
        let key = FieldKey::Custom("level".into());
        let v = Value::Choice("junior".into());
        assert!(schema
            .validate_field(Kind::Contact, Some("candidate"), &key, &v)
            .is_ok());
        assert!(schema
            .validate_field(Kind::Contact, Some("other"), &key, &v)
            .is_err());
        assert!(schema
            .validate_field(
                Kind::Contact,
                None,
                &FieldKey::Std("email".into()),
                &Value::Integer(3)
            )
            .is_err());
        assert!(schema
            .validate_field(
                Kind::Flag,
                None,
                &FieldKey::Std("email".into()),
                &Value::Text("x".into())
            )
            .is_err());
    }

    #[test]
    fn kinds_parse() {
        assert_eq!("Organisation".parse::<Kind>().unwrap(), Kind::Organization);
        assert!("widget".parse::<Kind>().is_err());
    }
}
