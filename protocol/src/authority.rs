//! Who may change what: the authority rules of sharing governance
//! (DESIGN.md §5 "Who may change what"), as pure functions.
//!
//! A paired partner is authenticated, not trusted. Every frame it can send
//! is checked here against what this instance knows about the object or
//! share it names, before anything stored is touched:
//!
//! - **Owner.** Every object has one owner, the organisation that created
//!   it, fixed for its life. A partner that offers an object names its
//!   owner; an object we hold keeps the owner we first recorded.
//! - **Provenance.** For every object it holds an instance records where
//!   its copy came from ([`Source`]): its own, received from partner P under
//!   P's share S with access type T, or received from a mirror. One source
//!   per copy: a second partner offering the same object never replaces the
//!   record ([`check_offer`]).
//! - **Changes** from a partner apply only to a copy that came from that
//!   partner, or when both sides made each other a mirror and the object is
//!   not a third party's ([`check_change`]). A change for an object no
//!   share has announced yet waits ([`ChangeVerdict::Unannounced`]).
//! - **Withdraw and erase** touch only copies received from the sender
//!   under the share named ([`check_withdraw`]); never our own objects.
//! - **Replies about a share** (received, terms accepted, erase
//!   acknowledged) count only from the partner the share was given to
//!   ([`check_share_reply`]).
//! - **Re-sharing** never sends an object back to its owner or to the
//!   partner it came from, and is bounded by the access type of the copy and
//!   of whatever was linked into a local object ([`check_send`]).
//! - **Replicas.** A received copy is read-only here unless it came from a
//!   mirror ([`check_local_edit`]); a recipient keeps its own version by
//!   linking the copy to a record of its own.
//!
//! Everything refused is a [`Refusal`] naming the rule, for the audit log
//! and the admin. The daemon (`daemon/src/governance/`) calls these
//! functions; the multi-organisation simulation (`sim`) drives the same
//! functions with an adversary.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{ObjectId, OrgId};
use crate::share::{AccessType, ReshareError, ShareId};

/// Where this instance's copy of an object came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Source {
    /// Created here (or received before provenance was recorded).
    Own,
    /// Received from `from` under its share `share`, with `access`.
    Share {
        /// The partner that sent it.
        from: OrgId,
        /// The partner's share it came under.
        share: ShareId,
        /// What we may do with it.
        access: AccessType,
    },
    /// Received from a mirror: another copy of our own organisation.
    Mirror {
        /// The mirror partner.
        from: OrgId,
    },
}

/// The owner of an object and where this instance's copy came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Provenance {
    /// The organisation that created the object.
    pub owner: OrgId,
    /// Where our copy came from.
    pub source: Source,
}

impl Provenance {
    /// Our own object.
    pub fn own(us: OrgId) -> Provenance {
        Provenance {
            owner: us,
            source: Source::Own,
        }
    }

    /// The partner our copy came from, if it is not our own.
    pub fn from(&self) -> Option<OrgId> {
        match self.source {
            Source::Own => None,
            Source::Share { from, .. } | Source::Mirror { from } => Some(from),
        }
    }

    /// Whether the copy came from `partner` under its share `share`.
    pub fn is_from_share(&self, partner: &OrgId, share: &ShareId) -> bool {
        matches!(self.source, Source::Share { from, share: s, .. } if from == *partner && s == *share)
    }
}

/// What this instance knows of a partner when deciding what it may get.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PartnerView {
    /// The partner.
    pub org: OrgId,
    /// Both sides made each other a mirror (one side alone enables nothing).
    pub mirror: bool,
    /// We mark the partner as our subcontractor.
    pub subcontractor: bool,
}

/// Why something a partner sent, or something asked locally, is refused.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Refusal {
    /// A partner tried to change one of our own objects.
    #[error(
        "object {id} belongs to this organisation: a partner may not change it (only a mirror may)"
    )]
    OurObject {
        /// The object.
        id: ObjectId,
    },
    /// A partner tried to change a copy that came from someone else.
    #[error(
        "object {id} came from another partner ({source_org}): only that partner may update it"
    )]
    OtherSource {
        /// The object.
        id: ObjectId,
        /// Where our copy came from.
        source_org: String,
    },
    /// The share named is not one the sender gave us.
    #[error("share {share} was not given to us by this partner")]
    NotSendersShare {
        /// The share.
        share: ShareId,
    },
    /// The share named was revoked.
    #[error("share {share} is revoked")]
    ShareRevoked {
        /// The share.
        share: ShareId,
    },
    /// A partner offered us an object it says we own.
    #[error("object {id} is offered as ours: our own objects never come back from a partner")]
    OfferedOurOwn {
        /// The object.
        id: ObjectId,
    },
    /// A partner offered an object we already hold from another source.
    #[error(
        "object {id} is already held from another source ({source_org}): a copy has one source"
    )]
    AlreadyHeld {
        /// The object.
        id: ObjectId,
        /// Where our copy came from.
        source_org: String,
    },
    /// A partner offered an object with another owner than the one we know.
    #[error("object {id} is offered with another owner than the one recorded")]
    OwnerChanged {
        /// The object.
        id: ObjectId,
    },
    /// A withdraw or erase named an object we did not receive under that share.
    #[error("object {id} was not received from this partner under share {share}")]
    NotFromShare {
        /// The object.
        id: ObjectId,
        /// The share named.
        share: ShareId,
    },
    /// A reply about a share came from another partner than its recipient.
    #[error("share {share} was not given to this partner")]
    NotRecipient {
        /// The share.
        share: ShareId,
    },
    /// An object would go back to its owner.
    #[error("object {id} would go back to its owner")]
    BackToOwner {
        /// The object.
        id: ObjectId,
    },
    /// An object would go back to the partner it came from.
    #[error("object {id} would go back to the partner it came from")]
    BackToSource {
        /// The object.
        id: ObjectId,
    },
    /// The access type of the copy forbids passing it on.
    #[error("object {id} ({what}): {reason}")]
    Reshare {
        /// The object.
        id: ObjectId,
        /// Which copy limits it (the object itself or what was linked into it).
        what: String,
        /// The access rule.
        reason: ReshareError,
    },
    /// A local edit of a partner's object.
    #[error(
        "this {kind} belongs to {owner}; link it to one of your records to keep your own changes"
    )]
    Replica {
        /// The object's kind, as shown.
        kind: String,
        /// The owner, as shown.
        owner: String,
    },
}

impl Refusal {
    /// A short stable name for metrics and audit actions.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::OurObject { .. } => "our-object",
            Refusal::OtherSource { .. } => "other-source",
            Refusal::NotSendersShare { .. } => "not-senders-share",
            Refusal::ShareRevoked { .. } => "share-revoked",
            Refusal::OfferedOurOwn { .. } => "offered-our-own",
            Refusal::AlreadyHeld { .. } => "already-held",
            Refusal::OwnerChanged { .. } => "owner-changed",
            Refusal::NotFromShare { .. } => "not-from-share",
            Refusal::NotRecipient { .. } => "not-recipient",
            Refusal::BackToOwner { .. } => "back-to-owner",
            Refusal::BackToSource { .. } => "back-to-source",
            Refusal::Reshare { .. } => "reshare",
            Refusal::Replica { .. } => "replica",
        }
    }
}

fn org_name(org: &OrgId) -> String {
    org.short()
}

/// What to do with a partner's change that passed the authority check.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ChangeVerdict {
    /// The sender may change our copy: go on (inbox decisions still apply).
    Allowed,
    /// No share of the sender has announced this object yet: keep the
    /// change aside until an announcement ([`check_offer`]) arrives. Data
    /// and announcements travel on different streams, so either may come
    /// first.
    Unannounced,
    /// A new object from a mirror: record it as received from the mirror,
    /// owned by the mirror.
    NewFromMirror,
}

/// May `sender` change object `id`, of which our copy has provenance
/// `ours` (`None`: we do not hold it)? `mirror`: we and `sender` made each
/// other mirrors.
pub fn check_change(
    id: ObjectId,
    ours: Option<&Provenance>,
    sender: &OrgId,
    mirror: bool,
) -> Result<ChangeVerdict, Refusal> {
    match ours {
        None if mirror => Ok(ChangeVerdict::NewFromMirror),
        None => Ok(ChangeVerdict::Unannounced),
        Some(p) => match p.source {
            // A mirror may edit our own objects; nobody else may.
            Source::Own if mirror => Ok(ChangeVerdict::Allowed),
            Source::Own => Err(Refusal::OurObject { id }),
            // Every mirror is a copy of our own organisation: any of them
            // may edit what came from another (three copies in a mesh).
            Source::Mirror { .. } if mirror => Ok(ChangeVerdict::Allowed),
            Source::Share { from, .. } if from == *sender => Ok(ChangeVerdict::Allowed),
            Source::Mirror { from } | Source::Share { from, .. } => Err(Refusal::OtherSource {
                id,
                source_org: org_name(&from),
            }),
        },
    }
}

/// What we know of an incoming share named in a frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InShareView {
    /// The share.
    pub id: ShareId,
    /// The partner that gave it to us.
    pub from: OrgId,
    /// Its access type.
    pub access: AccessType,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// May `sender` announce object `id`, owned by `owner`, under share
/// `share` (`None`: no such incoming share here)? `us`: our organisation;
/// `ours`: our copy's provenance if we hold it. Returns the provenance to
/// record, or `None` when the existing record stays (the same source
/// announcing again).
pub fn check_offer(
    id: ObjectId,
    us: &OrgId,
    ours: Option<&Provenance>,
    sender: &OrgId,
    share: Option<&InShareView>,
    owner: &OrgId,
) -> Result<Option<Provenance>, Refusal> {
    let share = match share {
        Some(s) if s.from == *sender => s,
        Some(s) => return Err(Refusal::NotSendersShare { share: s.id }),
        None => {
            return Err(Refusal::NotSendersShare {
                share: ShareId([0; 16]),
            })
        }
    };
    if share.revoked {
        return Err(Refusal::ShareRevoked { share: share.id });
    }
    if owner == us {
        return Err(Refusal::OfferedOurOwn { id });
    }
    match ours {
        None => Ok(Some(Provenance {
            owner: *owner,
            source: Source::Share {
                from: *sender,
                share: share.id,
                access: share.access,
            },
        })),
        Some(p) => match p.source {
            Source::Share { from, .. } if from == *sender => {
                if p.owner != *owner {
                    Err(Refusal::OwnerChanged { id })
                } else {
                    // The first share it came under stays its source.
                    Ok(None)
                }
            }
            Source::Own => Err(Refusal::OurObject { id }),
            Source::Mirror { from } | Source::Share { from, .. } => Err(Refusal::AlreadyHeld {
                id,
                source_org: org_name(&from),
            }),
        },
    }
}

/// May `sender` withdraw or erase our copy of `id` under its share
/// `share`? Only a copy received from the sender under that share.
pub fn check_withdraw(
    id: ObjectId,
    ours: Option<&Provenance>,
    sender: &OrgId,
    share: &ShareId,
) -> Result<(), Refusal> {
    match ours {
        Some(p) if p.is_from_share(sender, share) => Ok(()),
        Some(p) if p.source == Source::Own => Err(Refusal::OurObject { id }),
        _ => Err(Refusal::NotFromShare { id, share: *share }),
    }
}

/// May `sender` report on share `share` (received, terms accepted, erase
/// acknowledged)? `recipient`: who we gave it to (`None`: no such share,
/// or not bound to anyone yet).
pub fn check_share_reply(
    share: &ShareId,
    recipient: Option<&OrgId>,
    sender: &OrgId,
) -> Result<(), Refusal> {
    match recipient {
        Some(r) if r == sender => Ok(()),
        _ => Err(Refusal::NotRecipient { share: *share }),
    }
}

/// May object `id` (our copy's provenance `prov`; `links`: provenance of
/// partners' copies linked into it) go to partner `to` under a share of
/// access `onward`?
pub fn check_send(
    id: ObjectId,
    prov: &Provenance,
    links: &[Provenance],
    to: &PartnerView,
    onward: AccessType,
) -> Result<(), Refusal> {
    if prov.source != Source::Own && prov.owner == to.org {
        return Err(Refusal::BackToOwner { id });
    }
    if prov.from() == Some(to.org) {
        return Err(Refusal::BackToSource { id });
    }
    let held = |p: &Provenance| match p.source {
        Source::Share { access, .. } => Some(access),
        // A mirror is our own organisation: its objects are as ours.
        Source::Own | Source::Mirror { .. } => None,
    };
    if let Some(access) = held(prov) {
        access
            .may_reshare(onward, to.subcontractor)
            .map_err(|reason| Refusal::Reshare {
                id,
                what: format!("held as {access}"),
                reason,
            })?;
    }
    for l in links {
        if let Some(access) = held(l) {
            access
                .may_reshare(onward, to.subcontractor)
                .map_err(|reason| Refusal::Reshare {
                    id,
                    what: format!("linked to a copy held as {access}"),
                    reason,
                })?;
        }
    }
    Ok(())
}

/// Whether a mirror partner gets object `prov`: everything the copies of
/// our organisation own (our objects and those from mirrors, whichever copy
/// created them); never data received from third parties under a share,
/// whose access types bind this instance alone.
pub fn mirror_sends(prov: &Provenance) -> bool {
    !matches!(prov.source, Source::Share { .. })
}

/// May an admin (or a host application) edit object `prov` here? Only our
/// own objects, and a mirror's. `kind` and `owner_name` are for the message.
pub fn check_local_edit(prov: &Provenance, kind: &str, owner_name: &str) -> Result<(), Refusal> {
    match prov.source {
        Source::Own | Source::Mirror { .. } => Ok(()),
        Source::Share { .. } => Err(Refusal::Replica {
            kind: kind.to_string(),
            owner: owner_name.to_string(),
        }),
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Own => f.write_str("own"),
            Source::Share {
                from,
                share,
                access,
            } => {
                write!(f, "from {} under share {share} ({access})", from.short())
            }
            Source::Mirror { from } => write!(f, "from mirror {}", from.short()),
        }
    }
}

#[cfg(test)]
mod tests;
