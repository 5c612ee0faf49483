//! Sharing governance, sans-IO: the rules both daemons must agree on.
//!
//! - [`ShareStatus`]: the life of a share request, as a state machine whose
//!   only way forward is [`ShareStatus::transition`] (an illegal move is an
//!   error, never a silent change).
//! - [`AccessType`]: what a recipient may do with what it received
//!   (re-share, lend) and when the owner may take it back; the revoke window
//!   takes `now` as an argument, so tests inject the clock.
//! - [`Selection`]: which objects a share covers (flag, kind, role,
//!   category, organization with its contacts and transactions, single
//!   objects), decided over an [`ObjectLookup`].
//! - [`ShareFrame`] / [`ShareBody`]: the control messages two daemons
//!   exchange about shares ([`crate::wire::Message::Share`]), with bounds
//!   checked by [`ShareFrame::validate`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::{FieldKey, Kind, Object, ObjectId, OrgId, Value};

// ---------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------

/// A share or share request: 16 random bytes chosen by whoever creates it,
/// shown as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShareId(pub [u8; 16]);

impl ShareId {
    /// A fresh random id from the operating system's RNG.
    pub fn random() -> Self {
        use rand_core::RngCore;
        let mut b = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut b);
        ShareId(b)
    }
}

impl fmt::Display for ShareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for ShareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShareId({self})")
    }
}

/// The text given is not a share id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a share id (expected 32 hex digits)")]
pub struct ShareIdError(pub String);

impl FromStr for ShareId {
    type Err = ShareIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.trim().as_bytes())
            .map_err(|_| ShareIdError(s.into()))?;
        bytes
            .try_into()
            .map(ShareId)
            .map_err(|_| ShareIdError(s.into()))
    }
}

// ---------------------------------------------------------------------------
// Share request status
// ---------------------------------------------------------------------------

/// Where a share request is in its life. Both daemons hold the same status:
/// the owner moves it and tells the requester, who applies the same
/// transition (and refuses an illegal one).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum ShareStatus {
    /// The requester has asked; the owner has not confirmed receipt yet.
    Requested,
    /// The owner has the request and an admin must decide.
    ToEvaluate,
    /// The owner refused (final).
    Rejected,
    /// The owner accepted, with a transfer level and an access type.
    Approved,
    /// The owner's daemon is selecting what to send.
    Preparing,
    /// The data is offered to the requester.
    Available,
    /// The requester has received the data.
    Processed,
    /// The owner took the share back (final).
    Revoked,
}

impl ShareStatus {
    /// Every status, in life order.
    pub const ALL: [ShareStatus; 8] = [
        ShareStatus::Requested,
        ShareStatus::ToEvaluate,
        ShareStatus::Rejected,
        ShareStatus::Approved,
        ShareStatus::Preparing,
        ShareStatus::Available,
        ShareStatus::Processed,
        ShareStatus::Revoked,
    ];

    /// The name shown to admins.
    pub fn as_str(&self) -> &'static str {
        match self {
            ShareStatus::Requested => "requested",
            ShareStatus::ToEvaluate => "to-evaluate",
            ShareStatus::Rejected => "rejected",
            ShareStatus::Approved => "approved",
            ShareStatus::Preparing => "preparing",
            ShareStatus::Available => "available",
            ShareStatus::Processed => "processed",
            ShareStatus::Revoked => "revoked",
        }
    }

    /// Whether no transition leaves this status.
    pub fn is_final(&self) -> bool {
        matches!(self, ShareStatus::Rejected | ShareStatus::Revoked)
    }

    /// Whether `self -> to` is a legal move.
    pub fn can_move_to(&self, to: ShareStatus) -> bool {
        use ShareStatus::*;
        matches!(
            (self, to),
            (Requested, ToEvaluate)
                | (ToEvaluate, Rejected)
                | (ToEvaluate, Approved)
                | (Approved, Preparing)
                | (Preparing, Available)
                | (Available, Processed)
                | (Approved | Preparing | Available | Processed, Revoked)
        )
    }

    /// The status after moving to `to`, or why that move is illegal.
    pub fn transition(self, to: ShareStatus) -> Result<ShareStatus, TransitionError> {
        if self.can_move_to(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl fmt::Display for ShareStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A share request cannot move between these two statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a share request cannot go from {from} to {to}{}", hint(*.from))]
pub struct TransitionError {
    /// The current status.
    pub from: ShareStatus,
    /// The status asked for.
    pub to: ShareStatus,
}

fn hint(from: ShareStatus) -> &'static str {
    match from {
        ShareStatus::Rejected | ShareStatus::Revoked => " (it is final)",
        ShareStatus::Requested => " (the owner must receive it first: to-evaluate)",
        ShareStatus::ToEvaluate => " (the owner approves or rejects it)",
        _ => "",
    }
}

// ---------------------------------------------------------------------------
// Access types
// ---------------------------------------------------------------------------

/// How long after a manager share is processed its owner may still revoke it.
pub const MANAGER_REVOKE_WINDOW_MS: u64 = 72 * 3600 * 1000;

/// What the recipient of a share may do with the data.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum AccessType {
    /// May re-share to anyone; revocable any time.
    Operator,
    /// May re-share; the owner may revoke only within 72 hours after the
    /// share was processed.
    Manager,
    /// May re-share only to partners it marks as subcontractors, or lend to
    /// anyone; revocable any time.
    Subcontractor,
    /// May not re-share; revocable any time.
    OnLoan,
}

impl AccessType {
    /// Every access type, most to least trusting.
    pub const ALL: [AccessType; 4] = [
        AccessType::Operator,
        AccessType::Manager,
        AccessType::Subcontractor,
        AccessType::OnLoan,
    ];

    /// The name used in CLIs and APIs.
    pub fn as_str(&self) -> &'static str {
        match self {
            AccessType::Operator => "operator",
            AccessType::Manager => "manager",
            AccessType::Subcontractor => "subcontractor",
            AccessType::OnLoan => "on-loan",
        }
    }

    /// Whether a holder with this access may pass the data on as `onward`
    /// to a partner (`target_is_subcontractor`: the holder marked that
    /// partner as its subcontractor). Nobody grants more than it holds.
    pub fn may_reshare(
        &self,
        onward: AccessType,
        target_is_subcontractor: bool,
    ) -> Result<(), ReshareError> {
        match self {
            AccessType::OnLoan => Err(ReshareError::OnLoan),
            AccessType::Subcontractor => {
                if onward == AccessType::OnLoan
                    || (target_is_subcontractor && onward == AccessType::Subcontractor)
                {
                    Ok(())
                } else if !target_is_subcontractor {
                    Err(ReshareError::NotSubcontractor)
                } else {
                    Err(ReshareError::MoreThanHeld {
                        held: *self,
                        onward,
                    })
                }
            }
            AccessType::Manager if onward == AccessType::Operator => {
                Err(ReshareError::MoreThanHeld {
                    held: *self,
                    onward,
                })
            }
            AccessType::Manager | AccessType::Operator => Ok(()),
        }
    }

    /// Whether the owner may revoke at `now_ms` a share of this type that
    /// was processed at `processed_at_ms` (`None`: not processed yet).
    /// Both times are Unix milliseconds from the caller's clock.
    pub fn may_revoke(&self, processed_at_ms: Option<u64>, now_ms: u64) -> Result<(), RevokeError> {
        match (self, processed_at_ms) {
            (AccessType::Manager, Some(at))
                if now_ms >= at.saturating_add(MANAGER_REVOKE_WINDOW_MS) =>
            {
                Err(RevokeError::WindowClosed {
                    processed_at_ms: at,
                    now_ms,
                })
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for AccessType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given is not an access type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown access type {0:?} (expected operator, manager, subcontractor or on-loan)")]
pub struct UnknownAccessType(pub String);

impl FromStr for AccessType {
    type Err = UnknownAccessType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase().replace('_', "-");
        AccessType::ALL
            .into_iter()
            .find(|a| a.as_str() == lower || (lower == "onloan" && *a == AccessType::OnLoan))
            .ok_or_else(|| UnknownAccessType(s.into()))
    }
}

/// Why a received object may not be passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReshareError {
    /// On-loan data stays with its borrower.
    #[error("the data is on loan: it may not be re-shared")]
    OnLoan,
    /// Subcontractor data goes only to subcontractors (or is lent).
    #[error("subcontractor access: it may be re-shared only to a partner marked as subcontractor (or lent on loan)")]
    NotSubcontractor,
    /// A holder cannot grant more than it holds.
    #[error("held as {held}: it cannot be passed on as {onward}")]
    MoreThanHeld {
        /// The access held.
        held: AccessType,
        /// The access asked for the onward share.
        onward: AccessType,
    },
}

/// Why the owner may not revoke a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// A manager share is revocable only within 72 h after processing.
    #[error("a manager share can be revoked only within 72 hours after it was processed (processed at {processed_at_ms} ms, now {now_ms} ms)")]
    WindowClosed {
        /// When the share was processed (Unix ms).
        processed_at_ms: u64,
        /// The time of the attempt (Unix ms).
        now_ms: u64,
    },
}

// ---------------------------------------------------------------------------
// Selection
// ---------------------------------------------------------------------------

/// One rule of a selection.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Selector {
    /// Every object.
    All,
    /// Contacts carrying this flag (and the flag itself).
    Flag(ObjectId),
    /// Every object of a kind.
    Kind(Kind),
    /// Contacts with this role.
    Role(String),
    /// Organizations of this category, with their contacts and transactions.
    Category(String),
    /// One organization with its contacts and transactions.
    Organization(ObjectId),
    /// One object.
    Object(ObjectId),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("all"),
            Selector::Flag(id) => write!(f, "flag:{id}"),
            Selector::Kind(k) => write!(f, "kind:{k}"),
            Selector::Role(r) => write!(f, "role:{r}"),
            Selector::Category(c) => write!(f, "category:{c}"),
            Selector::Organization(id) => write!(f, "organization:{id}"),
            Selector::Object(id) => write!(f, "object:{id}"),
        }
    }
}

/// The text given is not a selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a selector: {reason} (expected all, flag:ID, kind:KIND, role:NAME, category:NAME, organization:ID or object:ID)")]
pub struct SelectorError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| SelectorError {
            input: s.into(),
            reason,
        };
        if s.trim() == "all" {
            return Ok(Selector::All);
        }
        let (tag, rest) = s
            .split_once(':')
            .ok_or_else(|| err("no TYPE: prefix".into()))?;
        let id = |r: &str| r.parse::<ObjectId>().map_err(|e| err(e.to_string()));
        let name = |r: &str| {
            if r.is_empty() || r.len() > MAX_NAME_LEN {
                Err(err(format!("names have 1 to {MAX_NAME_LEN} bytes")))
            } else {
                Ok(r.to_string())
            }
        };
        match tag {
            "flag" => Ok(Selector::Flag(id(rest)?)),
            "kind" => Ok(Selector::Kind(
                rest.parse()
                    .map_err(|e: crate::model::UnknownKind| err(e.to_string()))?,
            )),
            "role" => Ok(Selector::Role(name(rest)?)),
            "category" => Ok(Selector::Category(name(rest)?)),
            "organization" | "org" => Ok(Selector::Organization(id(rest)?)),
            "object" => Ok(Selector::Object(id(rest)?)),
            other => Err(err(format!("unknown type {other:?}"))),
        }
    }
}

/// Gives the current state of local objects, for rules that look past the
/// object itself (a résumé's contact, a contact's organization).
pub trait ObjectLookup {
    /// The object `id`, if it exists here.
    fn object(&self, id: ObjectId) -> Option<Object>;
}

impl<F: Fn(ObjectId) -> Option<Object>> ObjectLookup for F {
    fn object(&self, id: ObjectId) -> Option<Object> {
        self(id)
    }
}

fn text<'a>(obj: &'a Object, name: &str) -> Option<&'a str> {
    match obj.get_std(name) {
        Some(Value::Text(s) | Value::Choice(s)) => Some(s),
        _ => None,
    }
}

fn reference(obj: &Object, name: &str) -> Option<ObjectId> {
    match obj.get_std(name) {
        Some(Value::Ref(id)) => Some(*id),
        _ => None,
    }
}

impl Selector {
    /// Whether this rule covers `obj` on its own (no related objects).
    fn covers_directly(&self, obj: &Object, lookup: &dyn ObjectLookup) -> bool {
        match self {
            Selector::All => true,
            Selector::Kind(k) => obj.kind == *k,
            Selector::Object(id) => obj.id == *id,
            Selector::Flag(flag) => {
                obj.id == *flag
                    || (obj.kind == Kind::Contact
                        && obj.get(&FieldKey::Flag(*flag)) == Some(&Value::Bool(true)))
            }
            Selector::Role(r) => obj.kind == Kind::Contact && text(obj, "role") == Some(r),
            Selector::Organization(org) => match obj.kind {
                Kind::Organization => obj.id == *org,
                Kind::Contact | Kind::Transaction => {
                    reference(obj, "organization") == Some(*org)
                        || (obj.kind == Kind::Transaction
                            && reference(obj, "contact")
                                .and_then(|c| lookup.object(c))
                                .is_some_and(|c| reference(&c, "organization") == Some(*org)))
                }
                _ => false,
            },
            Selector::Category(cat) => {
                let in_category =
                    |o: &Object| o.kind == Kind::Organization && text(o, "category") == Some(cat);
                match obj.kind {
                    Kind::Organization => in_category(obj),
                    Kind::Contact | Kind::Transaction => reference(obj, "organization")
                        .and_then(|o| lookup.object(o))
                        .is_some_and(|o| in_category(&o)),
                    _ => false,
                }
            }
        }
    }

    /// Whether this rule covers `obj`: directly, or as the résumé of a
    /// covered contact (an object is sent whole, with its résumé file).
    pub fn covers(&self, obj: &Object, lookup: &dyn ObjectLookup) -> bool {
        if self.covers_directly(obj, lookup) {
            return true;
        }
        obj.kind == Kind::Resume
            && reference(obj, "contact")
                .and_then(|c| lookup.object(c))
                .is_some_and(|c| self.covers_directly(&c, lookup))
    }
}

/// The rules of one share: an object is selected when any rule covers it.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Selection {
    /// The rules (none: nothing is selected).
    pub rules: Vec<Selector>,
}

impl Selection {
    /// Whether any rule covers `obj`. Deleted objects are judged on what
    /// they were, so their tombstones reach whoever had them.
    pub fn selects(&self, obj: &Object, lookup: &dyn ObjectLookup) -> bool {
        self.rules.iter().any(|r| r.covers(obj, lookup))
    }
}

/// The level at which a share request is served.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum TransferLevel {
    /// These objects.
    Objects(Vec<ObjectId>),
    /// One organization with its contacts and transactions.
    Organization(ObjectId),
    /// Every organization of a category, with their contacts and transactions.
    Category(String),
}

impl TransferLevel {
    /// The selection that serves this level.
    pub fn selection(&self) -> Selection {
        let rules = match self {
            TransferLevel::Objects(ids) => ids.iter().copied().map(Selector::Object).collect(),
            TransferLevel::Organization(id) => vec![Selector::Organization(*id)],
            TransferLevel::Category(c) => vec![Selector::Category(c.clone())],
        };
        Selection { rules }
    }
}

impl fmt::Display for TransferLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferLevel::Objects(ids) => {
                let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
                write!(f, "objects:{}", ids.join(","))
            }
            TransferLevel::Organization(id) => write!(f, "organization:{id}"),
            TransferLevel::Category(c) => write!(f, "category:{c}"),
        }
    }
}

impl FromStr for TransferLevel {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(list) = s.strip_prefix("objects:") {
            let ids = list
                .split(',')
                .map(|i| {
                    i.trim().parse::<ObjectId>().map_err(|e| SelectorError {
                        input: s.into(),
                        reason: e.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(TransferLevel::Objects(ids));
        }
        match s.parse::<Selector>()? {
            Selector::Organization(id) => Ok(TransferLevel::Organization(id)),
            Selector::Category(c) => Ok(TransferLevel::Category(c)),
            Selector::Object(id) => Ok(TransferLevel::Objects(vec![id])),
            _ => Err(SelectorError {
                input: s.into(),
                reason: "a transfer level is objects:ID,.., organization:ID or category:NAME"
                    .into(),
            }),
        }
    }
}

// ---------------------------------------------------------------------------
// Control messages
// ---------------------------------------------------------------------------

/// Most object ids in one control message.
pub const MAX_IDS_PER_MESSAGE: usize = 4096;
/// Most rules in one selection.
pub const MAX_RULES: usize = 256;
/// Longest name (role, category, label, who accepted).
pub const MAX_NAME_LEN: usize = 256;
/// Longest free text (a request's note, a rejection reason).
pub const MAX_NOTE_LEN: usize = 4096;
/// Longest data-protection agreement text.
pub const MAX_TERMS_LEN: usize = 64 * 1024;
/// Longest share code.
pub const MAX_CODE_LEN: usize = 128;

/// A share as its owner announces it to the recipient.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Grant {
    /// The share.
    pub share: ShareId,
    /// What the recipient may do with the data.
    pub access: AccessType,
    /// A data-protection agreement the recipient's admin must accept
    /// before any data of the share is released.
    pub terms: Option<String>,
    /// A label for admins.
    pub label: String,
    /// The share request this share serves, if any.
    pub request: Option<ShareId>,
}

/// A requester's ask.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Request {
    /// The request (chosen by the requester).
    pub request: ShareId,
    /// What it wants, in the owner's terms.
    pub wants: Selection,
    /// The level it suggests.
    pub suggested: Option<TransferLevel>,
    /// A note for the owner's admin.
    pub note: String,
}

/// A new status of a share request, from the owner.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// The request.
    pub request: ShareId,
    /// Its new status.
    pub status: ShareStatus,
    /// On approval: the level served.
    pub level: Option<TransferLevel>,
    /// On approval: the access granted.
    pub access: Option<AccessType>,
    /// The share serving the request, once there is one.
    pub share: Option<ShareId>,
    /// Why, on a rejection.
    pub reason: Option<String>,
}

/// What one governance control message says.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ShareBody {
    /// Frame `id` was received and handled (frames are resent until this).
    Delivered(u64),
    /// Owner to recipient: a share exists, with its access and terms.
    Grant(Grant),
    /// Giver to recipient: these objects are now in the share. The
    /// recipient records each copy's provenance (see
    /// [`crate::authority::check_offer`]) before it applies their data.
    Objects {
        /// The share.
        share: ShareId,
        /// The organisation that created these objects (the giver, or
        /// whoever it received them from under a share it may pass on).
        owner: OrgId,
        /// Objects entering it.
        added: Vec<ObjectId>,
    },
    /// Either side: we make (or stop making) the other side our mirror,
    /// another copy of the same organisation. Both sides must say so.
    Mirror {
        /// Whether we mirror the partner now.
        on: bool,
    },
    /// Owner to recipient: these objects left the share; remove the copies.
    Withdraw {
        /// The share.
        share: ShareId,
        /// Objects leaving it.
        objects: Vec<ObjectId>,
    },
    /// Requester to owner: a share request.
    Request(Request),
    /// Owner to requester (or back, for `Processed`): a status change.
    Status(StatusUpdate),
    /// Recipient to owner: an admin accepted the share's terms.
    TermsAccepted {
        /// The share.
        share: ShareId,
        /// Who accepted.
        by: String,
        /// When (Unix ms).
        at_ms: u64,
    },
    /// Recipient to owner: the data of the share arrived.
    Received {
        /// The share.
        share: ShareId,
        /// Objects received so far.
        objects: u64,
    },
    /// Giver to recipient: erase these copies made under the share (and
    /// pass the erase on to re-share targets).
    Erase {
        /// The share.
        share: ShareId,
        /// Objects to erase.
        objects: Vec<ObjectId>,
        /// The share is revoked: every copy received under it goes, named
        /// or not (copies withdrawn earlier and kept). `false` for an erase
        /// passed on under a share that stays (a revoke upstream).
        revoked: bool,
    },
    /// Recipient to owner: the copies are erased (including onward ones
    /// that acknowledged).
    EraseAck {
        /// The share.
        share: ShareId,
        /// Copies erased here.
        erased: u64,
        /// Erase acknowledgements received from onward recipients.
        onward: u64,
    },
    /// Recipient to owner: redeem a one-time share code.
    Redeem {
        /// The code as typed.
        code: String,
    },
    /// Owner to recipient: a redeem was refused.
    Refused {
        /// Why.
        reason: String,
    },
}

/// One governance control message with its sender-chosen id (for
/// [`ShareBody::Delivered`]; 0 for `Delivered` itself, which is not acked).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ShareFrame {
    /// Sender-chosen id, strictly increasing per partner.
    pub id: u64,
    /// The message.
    pub body: ShareBody,
}

/// A governance message breaks a bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareWireError {
    /// Too many object ids.
    #[error("share message {message}: {count} object ids exceed the limit of {max}")]
    TooManyIds {
        /// Which message.
        message: &'static str,
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Too many selection rules.
    #[error("share request: {count} rules exceed the limit of {max}")]
    TooManyRules {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A text is too long.
    #[error("share message {message}: {what} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Which message.
        message: &'static str,
        /// Which text.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl ShareBody {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            ShareBody::Delivered(_) => "delivered",
            ShareBody::Grant(_) => "grant",
            ShareBody::Objects { .. } => "objects",
            ShareBody::Mirror { .. } => "mirror",
            ShareBody::Withdraw { .. } => "withdraw",
            ShareBody::Request(_) => "request",
            ShareBody::Status(_) => "status",
            ShareBody::TermsAccepted { .. } => "terms-accepted",
            ShareBody::Received { .. } => "received",
            ShareBody::Erase { .. } => "erase",
            ShareBody::EraseAck { .. } => "erase-ack",
            ShareBody::Redeem { .. } => "redeem",
            ShareBody::Refused { .. } => "refused",
        }
    }
}

fn check_len(
    message: &'static str,
    what: &'static str,
    text: &str,
    max: usize,
) -> Result<(), ShareWireError> {
    if text.len() > max {
        return Err(ShareWireError::TooLong {
            message,
            what,
            len: text.len(),
            max,
        });
    }
    Ok(())
}

fn check_ids(message: &'static str, count: usize) -> Result<(), ShareWireError> {
    if count > MAX_IDS_PER_MESSAGE {
        return Err(ShareWireError::TooManyIds {
            message,
            count,
            max: MAX_IDS_PER_MESSAGE,
        });
    }
    Ok(())
}

fn check_selection(sel: &Selection) -> Result<(), ShareWireError> {
    if sel.rules.len() > MAX_RULES {
        return Err(ShareWireError::TooManyRules {
            count: sel.rules.len(),
            max: MAX_RULES,
        });
    }
    for r in &sel.rules {
        if let Selector::Role(s) | Selector::Category(s) = r {
            check_len("request", "rule name", s, MAX_NAME_LEN)?;
        }
    }
    Ok(())
}

fn check_level(message: &'static str, level: &Option<TransferLevel>) -> Result<(), ShareWireError> {
    match level {
        Some(TransferLevel::Objects(ids)) => check_ids(message, ids.len()),
        Some(TransferLevel::Category(c)) => check_len(message, "category", c, MAX_NAME_LEN),
        _ => Ok(()),
    }
}

impl ShareFrame {
    /// Checks every bound a decoded frame must respect.
    pub fn validate(&self) -> Result<(), ShareWireError> {
        let name = self.body.name();
        match &self.body {
            ShareBody::Delivered(_)
            | ShareBody::Received { .. }
            | ShareBody::EraseAck { .. }
            | ShareBody::Mirror { .. } => Ok(()),
            ShareBody::Grant(g) => {
                check_len(name, "label", &g.label, MAX_NAME_LEN)?;
                match &g.terms {
                    Some(t) => check_len(name, "terms", t, MAX_TERMS_LEN),
                    None => Ok(()),
                }
            }
            ShareBody::Objects { added: ids, .. }
            | ShareBody::Withdraw { objects: ids, .. }
            | ShareBody::Erase { objects: ids, .. } => check_ids(name, ids.len()),
            ShareBody::Request(r) => {
                check_selection(&r.wants)?;
                check_level(name, &r.suggested)?;
                check_len(name, "note", &r.note, MAX_NOTE_LEN)
            }
            ShareBody::Status(s) => {
                check_level(name, &s.level)?;
                match &s.reason {
                    Some(r) => check_len(name, "reason", r, MAX_NOTE_LEN),
                    None => Ok(()),
                }
            }
            ShareBody::TermsAccepted { by, .. } => check_len(name, "accepted by", by, MAX_NAME_LEN),
            ShareBody::Redeem { code } => check_len(name, "code", code, MAX_CODE_LEN),
            ShareBody::Refused { reason } => check_len(name, "reason", reason, MAX_NOTE_LEN),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::wire::testing::{kind, object_id, org_id};

    pub fn share_id() -> impl Strategy<Value = ShareId> {
        any::<[u8; 16]>().prop_map(ShareId)
    }

    pub fn status() -> impl Strategy<Value = ShareStatus> {
        proptest::sample::select(ShareStatus::ALL.to_vec())
    }

    pub fn access() -> impl Strategy<Value = AccessType> {
        proptest::sample::select(AccessType::ALL.to_vec())
    }

    pub fn selector() -> impl Strategy<Value = Selector> {
        prop_oneof![
            Just(Selector::All),
            object_id().prop_map(Selector::Flag),
            kind().prop_map(Selector::Kind),
            "[a-z]{1,12}".prop_map(Selector::Role),
            "[a-z]{1,12}".prop_map(Selector::Category),
            object_id().prop_map(Selector::Organization),
            object_id().prop_map(Selector::Object),
        ]
    }

    pub fn level() -> impl Strategy<Value = TransferLevel> {
        prop_oneof![
            vec(object_id(), 0..4).prop_map(TransferLevel::Objects),
            object_id().prop_map(TransferLevel::Organization),
            "[a-z]{1,12}".prop_map(TransferLevel::Category),
        ]
    }

    pub fn body() -> impl Strategy<Value = ShareBody> {
        prop_oneof![
            any::<u64>().prop_map(ShareBody::Delivered),
            (
                share_id(),
                access(),
                proptest::option::of(".{0,32}"),
                ".{0,16}",
                proptest::option::of(share_id())
            )
                .prop_map(|(share, access, terms, label, request)| {
                    ShareBody::Grant(Grant {
                        share,
                        access,
                        terms,
                        label,
                        request,
                    })
                }),
            (share_id(), org_id(), vec(object_id(), 0..6)).prop_map(|(share, owner, added)| {
                ShareBody::Objects {
                    share,
                    owner,
                    added,
                }
            }),
            any::<bool>().prop_map(|on| ShareBody::Mirror { on }),
            (share_id(), vec(object_id(), 0..6))
                .prop_map(|(share, objects)| ShareBody::Withdraw { share, objects }),
            (
                share_id(),
                vec(selector(), 0..4),
                proptest::option::of(level()),
                ".{0,24}"
            )
                .prop_map(|(request, rules, suggested, note)| {
                    ShareBody::Request(Request {
                        request,
                        wants: Selection { rules },
                        suggested,
                        note,
                    })
                }),
            (
                share_id(),
                status(),
                proptest::option::of(level()),
                proptest::option::of(access()),
                proptest::option::of(share_id()),
                proptest::option::of(".{0,24}")
            )
                .prop_map(|(request, status, level, access, share, reason)| {
                    ShareBody::Status(StatusUpdate {
                        request,
                        status,
                        level,
                        access,
                        share,
                        reason,
                    })
                }),
            (share_id(), ".{0,16}", any::<u64>())
                .prop_map(|(share, by, at_ms)| ShareBody::TermsAccepted { share, by, at_ms }),
            (share_id(), any::<u64>())
                .prop_map(|(share, objects)| ShareBody::Received { share, objects }),
            (share_id(), vec(object_id(), 0..6), any::<bool>()).prop_map(
                |(share, objects, revoked)| ShareBody::Erase {
                    share,
                    objects,
                    revoked
                }
            ),
            (share_id(), any::<u64>(), any::<u64>()).prop_map(|(share, erased, onward)| {
                ShareBody::EraseAck {
                    share,
                    erased,
                    onward,
                }
            }),
            "[A-Z0-9-]{0,24}".prop_map(|code| ShareBody::Redeem { code }),
            ".{0,24}".prop_map(|reason| ShareBody::Refused { reason }),
        ]
    }

    pub fn frame() -> impl Strategy<Value = ShareFrame> {
        (any::<u64>(), body()).prop_map(|(id, body)| ShareFrame { id, body })
    }
}

#[cfg(test)]
mod tests;
