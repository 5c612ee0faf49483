//! The multi-organisation governance simulation (issue 12, "What it must
//! show", first bullet).
//!
//! Three to five organisations, the last of them an adversarial partner,
//! run the real authority rules ([`orgsync_protocol::authority`]: offers,
//! changes, withdraw and erase, replies, `check_send` with
//! [`AccessType::may_reshare`], mirrors, local edits),
//! [`Selection::selects`] and [`merge::apply_change`] in memory, sans-IO,
//! driven by a seeded random sequence of operations. Messages between two
//! organisations travel in FIFO queues per direction, data and control in
//! separate queues (like the real streams), delivered in random order;
//! partitions pause a pair and keep its messages (the real system
//! retransmits until acknowledged).
//!
//! The honest organisations follow the daemon (`daemon/src/governance/`):
//! shares select objects, announce them (`Objects`, naming the owner) and
//! send them whole, then their changes; objects leaving a selection are
//! withdrawn; a partner's change passes `check_change`, then the inbox
//! decision (approved, linked into a local object, rejected,
//! auto-approve); unshare keeps approved copies, detached; revoke erases,
//! onward too, acknowledged back; mirrors need both sides. The adversary
//! (which knows every share id and object id) sends arbitrary well-formed
//! frames: forged changes of others' objects, offers naming others'
//! shares or the receiver as owner, withdraws and erases of own objects
//! and third parties' copies, forged received / terms / erase
//! acknowledgements, replays of what it was sent, grants reusing others'
//! share ids, one-sided mirror claims; it also shares its own objects.
//!
//! Invariants, checked after every step (each operation and each delivered
//! message) and at quiescence, against ghost state the rules never see:
//!
//! 1. An honest organisation's own objects change only by its own writes or
//!    by a mirror it enabled (a ghost copy follows exactly those writes).
//! 2. Every copy has a chain of shares permitting it: its provenance names
//!    a share its sender granted it with that access, and an offer its
//!    sender made, by a sender that held the object legitimately; the
//!    recorded owner is the true owner when no adversary is on the chain.
//! 3. On-loan data never leaves its borrower: a ghost taint follows data
//!    received on loan (through approvals, links, mirrors and onward
//!    sends); no honest organisation sends it outside the borrower's
//!    organisation (the borrower and its mirrors).
//! 4. When a revoke is acknowledged, no copy received through the revoked
//!    share remains downstream through honest organisations, unless held
//!    under another live share.
//! 5. A partner's object is in the objects only after an admin approved it
//!    or while the partner was set to auto-approve; mirrors excepted.
//! 6. At quiescence every attached copy equals its source's copy (so, by
//!    the chain, its owner's), and mirrors hold the same objects.
//! 7. Quiescence: after the last operation everything is delivered within
//!    a bounded number of deliveries (no send storm), and every revoke
//!    between honest organisations is acknowledged unless the adversary
//!    holds up an onward erase.
//!
//! # Safer readings
//!
//! Where the daemon and a safer reading differ, the simulation takes the
//! safer one; `ORGSYNC_SIM_DAEMON` (comma-separated) switches to the
//! daemon's behaviour, to show what breaks (the daemon at commit 88fada9
//! unless said "now"):
//!
//! - `members`: revoke and onward erase name only current members, so a
//!   copy that left the selection (kept, detached) survives the revoke
//!   (invariant 4). `onward-members` (now): the revoke takes every copy at
//!   its recipient, but the erase passed on still follows current members
//!   only, so a re-share target's detached copy survives. Here: every
//!   object ever announced under the share and not erased since.
//! - `grant`: incoming shares keyed by share id alone, a grant replacing
//!   the record whoever sends it: a partner that learns a share id takes it
//!   over and the real giver's erase is refused (invariant 7).
//!   `grant-first` (now): a grant for an id another partner gave is
//!   refused, so a partner that learns a share id before the giver's grant
//!   arrives takes it just the same. Here: keyed by (giver, share id).
//! - `links`: a linked update writes every field it carries with a new
//!   version, so two partners linking each other's copies into their own
//!   records echo updates for ever (invariant 7). `links-differ` (now):
//!   only values that differ from ours, which still flips a field back and
//!   forth when two linked sources disagree. Here: only values that differ
//!   and are newer than ours.
//! - `link-prov`: a link record keeps the provenance of the copy as it was
//!   when linked; re-offered under a stricter share, on-loan data flows out
//!   through the local record (invariant 3). Here: link records gain every
//!   provenance the copy gets.
//! - `decisions`: inbox decisions keyed by object id alone. Here: by
//!   (partner, object).
//! - `mirror-ctl`: mirror frames race the data they enable (the daemon now
//!   says it in the session Hello, ahead of the data). Here: ordered with
//!   the data.
//!
//! Also safer than the daemon: erase acknowledgements carry a tag that
//! matches each to its erase (the daemon takes the first acknowledgement of
//! a share for all the erases it passed on under it), and an erase waits
//! for the acknowledgement of an own revoke of the onward share still on
//! its way.
//!
//! # Known gaps of the rules
//!
//! Counted in the summary (cases and first seed), or failures with
//! `ORGSYNC_SIM_STRICT=1`:
//!
//! - `mirror-link`: an organisation links on-loan data into its own record;
//!   its mirror gets the record (`mirror_sends` sees only the provenance)
//!   and re-shares it (`check_send` there knows no link).
//! - `erased-link`: the lender revokes; the erase drops the link, the
//!   values written into the borrower's own record stay and nothing limits
//!   them any more.
//! - `mirror-owner`: a change carries no owner; a mirror's new object is
//!   recorded as the mirror's (`NewFromMirror`), wrong when the mirror
//!   relays another mirror's object or a share's copy.
//! - `mirror-and-share`: an object reaches an organisation both under a
//!   share and through a mirror (a share between mirrors, or a share's copy
//!   of an object a mirror owns): `check_change` cannot tell share data
//!   from mirror data, so a mirror's late change of an erased share copy
//!   recreates it as the mirror's own, and a mirror's object refused while
//!   held as a share copy comes back partial.
//! - `second-share`: a copy re-offered under a second share of the same
//!   giver keeps the first share as its provenance (`check_offer`), so
//!   withdraw and erase under the second share are refused
//!   (`check_withdraw`): the copy, kept attached only through that share,
//!   outlives its revoke, or stays attached but no longer updated.
//! - `entry-race`: an object is sent whole once, with its announcement. If
//!   that data is used up by an earlier copy that is then erased or
//!   withdrawn, or refused because the copy still had another source
//!   (`check_change`: other-source), the new copy gets only later changes.
//!
//! # Runs
//!
//! `cargo test -p orgsync-protocol --test governance_sim` runs 1000 cases;
//! `ORGSYNC_SIM_CASES=N` runs N; `ORGSYNC_SIM_SEED=N` replays one case
//! with a trace of every step; `ORGSYNC_SIM_KEEP_GOING=1` runs every case
//! and tallies the failures; `ORGSYNC_SIM_MUTANT=1..8` breaks one rule on
//! purpose (see `rules`): such a run must fail.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use orgsync_protocol::authority::{
    self, ChangeVerdict, InShareView, PartnerView, Provenance, Refusal, Source,
};
use orgsync_protocol::clock::Timestamp;
use orgsync_protocol::merge;
use orgsync_protocol::model::{
    Change, FieldKey, FieldState, InstanceId, Kind, Object, ObjectId, OrgId, Value, Version,
};
use orgsync_protocol::share::{AccessType, Selection, Selector, ShareId, MANAGER_REVOKE_WINDOW_MS};

/// Cases of a normal run.
const DEFAULT_CASES: u64 = 1000;
/// Seed of the first case (case `i` uses `FIRST_SEED + i`).
const FIRST_SEED: u64 = 1;
/// Operations per case: uniform in this range.
const MIN_STEPS: usize = 50;
const MAX_STEPS: usize = 200;
/// Deliveries allowed to reach quiescence after the last operation.
const DRAIN_LIMIT: usize = 20_000;
/// Deliveries allowed in one "deliver all" operation.
const DELIVER_ALL_LIMIT: usize = 2_000;
/// Own objects an organisation creates at most (keeps the state dense).
const MAX_OWN: usize = 10;
/// Clock origin of the simulated writes.
const BASE_MS: u64 = 1_700_000_000_000;
/// The lineage edge of a copy received from a mirror.
const MIRROR_EDGE: ShareId = ShareId([0xff; 16]);
/// Queue index of data (changes).
const DATA: usize = 0;
/// Queue index of control frames.
const CTL: usize = 1;

type Org = usize;
/// Ghost: on-loan data in an object, as (borrower, the borrowed copy).
type Taint = BTreeSet<(Org, ObjectId)>;
/// Ghost: the shares a copy came through, from its origin: (from, to, share).
type Lineage = Vec<(Org, Org, ShareId)>;

fn oid(i: Org) -> OrgId {
    OrgId([i as u8 + 1; 32])
}

fn idx(o: &OrgId) -> Org {
    usize::from(o.0[0]) - 1
}

/// The authority rules as the simulation calls them: the real functions,
/// unless `ORGSYNC_SIM_MUTANT` breaks one on purpose (to show that the
/// invariants catch it; a mutant run must fail).
mod rules {
    use super::*;

    /// 1: anyone may change any object we hold.
    pub fn change(
        m: u8,
        id: ObjectId,
        ours: Option<&Provenance>,
        sender: &OrgId,
        mirror: bool,
    ) -> Result<ChangeVerdict, Refusal> {
        if m == 1 && ours.is_some() {
            return Ok(ChangeVerdict::Allowed);
        }
        authority::check_change(id, ours, sender, mirror)
    }

    /// 2: anyone may withdraw or erase anything.
    pub fn withdraw(
        m: u8,
        id: ObjectId,
        ours: Option<&Provenance>,
        sender: &OrgId,
        share: &ShareId,
    ) -> Result<(), Refusal> {
        if m == 2 {
            return Ok(());
        }
        authority::check_withdraw(id, ours, sender, share)
    }

    /// 3: an offer may name anyone's share.
    pub fn offer(
        m: u8,
        id: ObjectId,
        us: &OrgId,
        ours: Option<&Provenance>,
        sender: &OrgId,
        share: Option<&InShareView>,
        owner: &OrgId,
    ) -> Result<Option<Provenance>, Refusal> {
        if m == 3 {
            if let Some(s) = share {
                let s = InShareView {
                    from: *sender,
                    ..*s
                };
                return authority::check_offer(id, us, ours, sender, Some(&s), owner);
            }
        }
        authority::check_offer(id, us, ours, sender, share, owner)
    }

    /// 4: access types bound nothing.
    pub fn send(
        m: u8,
        id: ObjectId,
        prov: &Provenance,
        links: &[Provenance],
        to: &PartnerView,
        onward: AccessType,
    ) -> Result<(), Refusal> {
        if m == 4 {
            return authority::check_send(id, &Provenance::own(prov.owner), &[], to, onward)
                .and_then(|()| match prov.from() {
                    Some(f) if f == to.org => Err(Refusal::BackToSource { id }),
                    _ => Ok(()),
                });
        }
        authority::check_send(id, prov, links, to, onward)
    }

    /// 5: anyone may acknowledge anything.
    pub fn share_reply(
        m: u8,
        share: &ShareId,
        recipient: Option<&OrgId>,
        sender: &OrgId,
    ) -> Result<(), Refusal> {
        if m == 5 {
            return Ok(());
        }
        authority::check_share_reply(share, recipient, sender)
    }

    /// 7: replicas may be edited.
    pub fn local_edit(m: u8, prov: &Provenance, kind: &str) -> Result<(), Refusal> {
        if m == 7 {
            return Ok(());
        }
        authority::check_local_edit(prov, kind, "owner")
    }
}

// ---------------------------------------------------------------------------
// Random numbers: splitmix64, seeded per case.
// ---------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x9e37_79b9_7f4a_7c15)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Clone>(&mut self, v: &[T]) -> Option<T> {
        if v.is_empty() {
            None
        } else {
            Some(v[self.below(v.len())].clone())
        }
    }
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// A change on the data stream, with ghost information the rules never see.
#[derive(Clone, Debug)]
struct Data {
    change: Change,
    /// Ghost: on-loan data the sender's copy carries.
    taint: Taint,
    /// Ghost: the sender holds the object legitimately.
    legit: bool,
    /// Ghost: the sender's lineage of the object.
    lineage: Lineage,
    /// Ghost: the sender's copy mixes share and mirror (see `Sim::is_mixed`).
    mixed: bool,
    /// Ghost: the sender would send it to a mirror (`mirror_sends`).
    mirror_ok: bool,
    /// Ghost: when it was sent (a global sequence of messages).
    seq: u64,
}

impl Data {
    /// A change from the adversary: whatever it claims is its own word.
    fn forged(change: Change) -> Data {
        Data {
            change,
            taint: Taint::new(),
            legit: true,
            lineage: Vec::new(),
            mixed: false,
            mirror_ok: true,
            seq: 0,
        }
    }
}

/// Ghost information about one announced object.
#[derive(Clone, Debug)]
struct OfferGhost {
    legit: bool,
    lineage: Lineage,
    mixed: bool,
}

impl OfferGhost {
    fn forged() -> OfferGhost {
        OfferGhost {
            legit: true,
            lineage: Vec::new(),
            mixed: false,
        }
    }
}

/// Control frames (`ShareBody`, reduced to what governance needs). Erase
/// and its acknowledgement carry a tag so that an acknowledgement is
/// matched to the erase it answers (the daemon matches by share alone; see
/// [`Sim::on_erase_ack`]).
#[derive(Clone, Debug)]
enum Ctl {
    Grant {
        share: ShareId,
        access: AccessType,
    },
    Objects {
        share: ShareId,
        owner: OrgId,
        ids: Vec<ObjectId>,
        ghost: Vec<OfferGhost>,
    },
    Withdraw {
        share: ShareId,
        ids: Vec<ObjectId>,
    },
    Erase {
        share: ShareId,
        ids: Vec<ObjectId>,
        tag: u64,
    },
    EraseAck {
        share: ShareId,
        tag: u64,
    },
    Received {
        share: ShareId,
    },
    TermsAccepted {
        share: ShareId,
    },
    Mirror {
        on: bool,
    },
}

#[derive(Clone, Debug)]
enum Msg {
    Data(Data),
    Ctl(Ctl),
}

// ---------------------------------------------------------------------------
// Honest organisations
// ---------------------------------------------------------------------------

struct OutShare {
    to: Org,
    selection: Selection,
    access: AccessType,
    revoked: bool,
    processed: bool,
    /// Objects currently in the share.
    members: BTreeSet<ObjectId>,
    /// Objects ever announced under the share and not erased since.
    delivered: BTreeSet<ObjectId>,
    revoke_tag: Option<u64>,
    /// What the revoke asked to erase.
    revoke_ids: BTreeSet<ObjectId>,
    /// The recipient acknowledged the revoke's erase.
    revoke_acked: bool,
    /// ... and every erase passed on under this share before: the revoke
    /// is fully acknowledged.
    acked: bool,
}

struct InShare {
    from: Org,
    access: AccessType,
    revoked: bool,
}

struct ProvRec {
    prov: Provenance,
    detached: bool,
    /// Ghost: the shares the copy came through.
    lineage: Lineage,
    /// Ghost: the sender held it legitimately when it offered it.
    legit: bool,
    /// Ghost: every share of the source that announced it to us.
    via: BTreeSet<ShareId>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Decision {
    Approved,
    Linked(ObjectId),
    Rejected,
}

#[derive(Clone, Copy, Default, Debug)]
struct Settings {
    auto: bool,
    mirror: bool,
    peer_mirror: bool,
    sub: bool,
}

/// An erase passed onward, waiting for the onward acknowledgements.
struct PendingErase {
    origin: Org,
    share: ShareId,
    tag: u64,
    waiting: Vec<(Org, ShareId, u64)>,
}

struct Honest {
    id: OrgId,
    /// `ORGSYNC_SIM_MUTANT` (6: one side alone makes a mirror).
    mutant: u8,
    objects: BTreeMap<ObjectId, Object>,
    /// Provenance of copies (absent with the object present: our own).
    prov: BTreeMap<ObjectId, ProvRec>,
    out: BTreeMap<ShareId, OutShare>,
    /// Shares partners gave us, by (partner, share id): see `Sim::inc_key`.
    inc: BTreeMap<(Org, ShareId), InShare>,
    /// Changes held per (partner, object): unannounced or undecided.
    inbox: BTreeMap<(Org, ObjectId), Vec<Data>>,
    decisions: BTreeMap<(Org, ObjectId), Decision>,
    settings: Vec<Settings>,
    /// Local object → partners' copies linked into it.
    links: BTreeMap<ObjectId, Vec<(ObjectId, Provenance)>>,
    pending: Vec<PendingErase>,
    /// Ghost: our own objects as our own writes and enabled mirrors made them.
    expected: BTreeMap<ObjectId, Object>,
    /// Ghost: on-loan data in each object.
    taint: BTreeMap<ObjectId, Taint>,
    /// Ghost: (local object, copy) links dropped by an erase.
    erased_links: BTreeSet<(ObjectId, ObjectId)>,
    /// Ghost: newest message sequence of a partner's data applied to each copy.
    consumed: BTreeMap<(Org, ObjectId), u64>,
    /// Ghost: copies whose data sent after a withdraw or erase was used up
    /// before it (see "entry-race").
    raced: BTreeSet<ObjectId>,
    /// Ghost: (object, partner) of changes refused because the copy had
    /// another source then (see "entry-race").
    refused_from: BTreeSet<(ObjectId, Org)>,
    /// Ghost: (object, partner) we ever held it from under a share.
    held_from: BTreeSet<(ObjectId, Org)>,
    /// Ghost: copies mixing share and mirror data (see `Sim::is_mixed`).
    mixed: BTreeSet<ObjectId>,
    /// Ghost: (partner, object) an admin approved, or that arrived while
    /// the partner was set to auto-approve.
    approved: BTreeSet<(Org, ObjectId)>,
}

impl Honest {
    fn new(i: Org, n: usize, mutant: u8) -> Honest {
        Honest {
            id: oid(i),
            mutant,
            objects: BTreeMap::new(),
            prov: BTreeMap::new(),
            out: BTreeMap::new(),
            inc: BTreeMap::new(),
            inbox: BTreeMap::new(),
            decisions: BTreeMap::new(),
            settings: vec![Settings::default(); n],
            links: BTreeMap::new(),
            pending: Vec::new(),
            expected: BTreeMap::new(),
            taint: BTreeMap::new(),
            erased_links: BTreeSet::new(),
            consumed: BTreeMap::new(),
            raced: BTreeSet::new(),
            refused_from: BTreeSet::new(),
            held_from: BTreeSet::new(),
            mixed: BTreeSet::new(),
            approved: BTreeSet::new(),
        }
    }

    /// Owner and source of `x` as held here (the daemon's `provenance`).
    fn prov_of(&self, x: &ObjectId) -> Option<Provenance> {
        match self.prov.get(x) {
            Some(r) => Some(r.prov),
            None => self.objects.get(x).map(|_| Provenance::own(self.id)),
        }
    }

    fn eff(&self, p: Org) -> bool {
        if self.mutant == 6 {
            return self.settings[p].mirror || self.settings[p].peer_mirror;
        }
        self.settings[p].mirror && self.settings[p].peer_mirror
    }
}

// ---------------------------------------------------------------------------
// The adversary
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Adversary {
    /// Everything it received or made, merged.
    known: BTreeMap<ObjectId, Object>,
    own: Vec<ObjectId>,
    /// Its share to each honest organisation.
    shares: BTreeMap<Org, ShareId>,
    /// Who got each of its own objects.
    audience: BTreeMap<ObjectId, BTreeSet<Org>>,
    seen_ctl: Vec<Ctl>,
    seen_data: Vec<Change>,
    erase_todo: Vec<(Org, ShareId, u64)>,
    tags: Vec<u64>,
}

// ---------------------------------------------------------------------------
// Modes and statistics
// ---------------------------------------------------------------------------

/// Which daemon behaviours to reproduce literally instead of the safer
/// reading (see the module documentation).
#[derive(Clone, Copy, Default, Debug)]
struct Mode {
    /// Revoke and onward erase name only current members (detached copies
    /// stay), as `shares::revoke` and `on_erase` did.
    members_only: bool,
    /// Only the onward erase names current members, as `on_erase` does
    /// now (a revoke takes every copy at its recipient).
    onward_members: bool,
    /// A grant for a share id another partner gave us replaces it, as
    /// `on_grant` does.
    grant_overwrites: bool,
    /// A linked update writes every field it carries, as `apply_linked` did.
    link_always: bool,
    /// A linked update writes the values that differ from the local ones,
    /// whatever their versions, as `apply_linked` does now.
    link_differ: bool,
    /// Incoming shares keyed by share id, a grant for an id another
    /// partner gave refused, as `on_grant` does now.
    grant_first: bool,
    /// Inbox decisions are keyed by object id alone, as the daemon's
    /// `gov_decision` tree is.
    decisions_by_id: bool,
    /// Mirror frames on the control queue (racing the data they enable).
    mirror_ctl: bool,
    /// Link records keep the provenance of the linked copy as it was when
    /// the admin linked, as the daemon's `LinkRecord` does.
    stale_links: bool,
    /// Known rule gaps fail the run.
    strict: bool,
    /// A rule broken on purpose (see `rules`).
    mutant: u8,
}

impl Mode {
    /// The non-default switches, for the summary.
    fn describe(&self) -> String {
        let flags = [
            (self.members_only, "daemon:members"),
            (self.onward_members, "daemon:onward-members"),
            (self.grant_overwrites, "daemon:grant"),
            (self.link_always, "daemon:links"),
            (self.link_differ, "daemon:links-differ"),
            (self.grant_first, "daemon:grant-first"),
            (self.stale_links, "daemon:link-prov"),
            (self.decisions_by_id, "daemon:decisions"),
            (self.mirror_ctl, "daemon:mirror-ctl"),
            (self.strict, "strict"),
        ];
        let mut on: Vec<String> = flags
            .iter()
            .filter(|(b, _)| *b)
            .map(|(_, n)| n.to_string())
            .collect();
        if self.mutant != 0 {
            on.push(format!("mutant {}", self.mutant));
        }
        if on.is_empty() {
            "default".into()
        } else {
            on.join(", ")
        }
    }

    fn from_env() -> Mode {
        let daemon = std::env::var("ORGSYNC_SIM_DAEMON").unwrap_or_default();
        let has = |w: &str| {
            daemon
                .split(',')
                .any(|x| x.trim() == w || x.trim() == "all")
        };
        Mode {
            members_only: has("members"),
            onward_members: has("onward-members"),
            grant_overwrites: has("grant"),
            link_always: has("links"),
            link_differ: has("links-differ"),
            grant_first: has("grant-first"),
            decisions_by_id: has("decisions"),
            mirror_ctl: has("mirror-ctl"),
            stale_links: has("link-prov"),
            strict: std::env::var("ORGSYNC_SIM_STRICT").is_ok_and(|v| v == "1"),
            mutant: env_u64("ORGSYNC_SIM_MUTANT").unwrap_or(0) as u8,
        }
    }
}

#[derive(Default, Clone)]
struct Stats {
    cases: u64,
    steps: u64,
    delivered: u64,
    /// Refusals of partners' frames and local edits, by `Refusal::code()`.
    refusals: BTreeMap<&'static str, u64>,
    /// Objects a share selects but `check_send` keeps back, by code.
    send_skips: BTreeMap<&'static str, u64>,
    /// Other events worth counting.
    events: BTreeMap<&'static str, u64>,
    /// Known rule gaps hit: cases and first seed.
    gaps: BTreeMap<&'static str, (u64, u64)>,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.cases += o.cases;
        self.steps += o.steps;
        self.delivered += o.delivered;
        for (k, v) in &o.refusals {
            *self.refusals.entry(k).or_default() += v;
        }
        for (k, v) in &o.send_skips {
            *self.send_skips.entry(k).or_default() += v;
        }
        for (k, v) in &o.events {
            *self.events.entry(k).or_default() += v;
        }
        for (k, (n, seed)) in &o.gaps {
            let e = self.gaps.entry(k).or_insert((0, *seed));
            e.0 += n;
            e.1 = e.1.min(*seed);
        }
    }
}

/// What to send to partners that already have an object.
enum Push {
    /// Membership changes only.
    Nothing,
    /// This local write.
    Delta(Change),
    /// The whole object (a partner's update passed on).
    Whole,
}

// ---------------------------------------------------------------------------
// The simulation
// ---------------------------------------------------------------------------

struct Sim {
    seed: u64,
    rng: Rng,
    mode: Mode,
    /// Organisations; the last one is the adversary.
    n: usize,
    orgs: Vec<Honest>,
    adv: Adversary,
    /// `[from * n + to][DATA | CTL]`.
    queues: Vec<[VecDeque<(u64, Msg)>; 2]>,
    /// `[min * n + max]`: paused until this operation.
    paused: Vec<usize>,
    op: usize,
    tick: u64,
    next_id: u64,
    next_tag: u64,
    next_seq: u64,
    // Ghost knowledge.
    owner_of: BTreeMap<ObjectId, Org>,
    kinds: BTreeMap<ObjectId, Kind>,
    offers: BTreeSet<(Org, Org, ShareId, ObjectId)>,
    grants: BTreeSet<(Org, ShareId, Org, AccessType)>,
    /// Pairs that were ever mirrors of each other (unordered).
    mirror_edges: BTreeSet<(Org, Org)>,
    /// (h, p): h once made p its mirror.
    mirror_enabled: BTreeSet<(Org, Org)>,
    /// On-loan data (borrower, copy) that already left its borrower: its
    /// later travels are not reported again.
    escaped: BTreeSet<(Org, ObjectId)>,
    all_shares: Vec<ShareId>,
    stats: Stats,
    violations: Vec<String>,
    gap_seen: BTreeSet<(&'static str, String)>,
    trace: Option<Vec<String>>,
}

impl Sim {
    fn new(seed: u64, mode: Mode, trace: bool) -> Sim {
        let mut rng = Rng::new(seed);
        let n = 3 + rng.below(3);
        Sim {
            seed,
            rng,
            mode,
            n,
            orgs: (0..n - 1).map(|i| Honest::new(i, n, mode.mutant)).collect(),
            adv: Adversary::default(),
            queues: (0..n * n)
                .map(|_| [VecDeque::new(), VecDeque::new()])
                .collect(),
            paused: vec![0; n * n],
            op: 0,
            tick: 0,
            next_id: 0,
            next_tag: 0,
            next_seq: 0,
            owner_of: BTreeMap::new(),
            kinds: BTreeMap::new(),
            offers: BTreeSet::new(),
            grants: BTreeSet::new(),
            mirror_edges: BTreeSet::new(),
            mirror_enabled: BTreeSet::new(),
            escaped: BTreeSet::new(),
            all_shares: Vec::new(),
            stats: Stats::default(),
            violations: Vec::new(),
            gap_seen: BTreeSet::new(),
            trace: trace.then(Vec::new),
        }
    }

    fn adv_idx(&self) -> Org {
        self.n - 1
    }

    fn honest(&self) -> usize {
        self.n - 1
    }

    fn note(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(format!("[{}] {}", self.op, f()));
        }
    }

    fn refused(&mut self, r: &Refusal) {
        *self.stats.refusals.entry(r.code()).or_default() += 1;
    }

    fn event(&mut self, what: &'static str) {
        *self.stats.events.entry(what).or_default() += 1;
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// A known gap of the rules: counted, or a failure in strict mode.
    fn gap(&mut self, kind: &'static str, what: String) {
        if !self.gap_seen.insert((kind, what.clone())) {
            return;
        }
        if self.mode.strict {
            self.violations.push(format!("[gap {kind}] {what}"));
        } else {
            // Counted once per case.
            let seed = self.seed;
            self.stats.gaps.entry(kind).or_insert((1, seed));
            self.note(|| format!("GAP {kind}: {what}"));
        }
    }

    fn version(&mut self, writer: Org) -> Version {
        self.tick += 1;
        Version {
            hlc: Timestamp::new(BASE_MS + self.tick, 0),
            instance: InstanceId(writer as u64 + 1),
        }
    }

    fn new_object_id(&mut self, creator: Org, kind: Kind) -> ObjectId {
        self.next_id += 1;
        let mut b = [0u8; 16];
        b[0] = 0x01;
        b[1] = creator as u8;
        b[8..].copy_from_slice(&self.next_id.to_be_bytes());
        let id = ObjectId(b);
        self.owner_of.insert(id, creator);
        self.kinds.insert(id, kind);
        id
    }

    fn new_share_id(&mut self, creator: Org) -> ShareId {
        self.next_id += 1;
        let mut b = [0u8; 16];
        b[0] = 0x05;
        b[1] = creator as u8;
        b[8..].copy_from_slice(&self.next_id.to_be_bytes());
        let id = ShareId(b);
        self.all_shares.push(id);
        id
    }

    fn new_tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    fn decision_key(&self, p: Org, x: ObjectId) -> (Org, ObjectId) {
        if self.mode.decisions_by_id {
            (usize::MAX, x)
        } else {
            (p, x)
        }
    }

    fn decision(&self, h: Org, p: Org, x: ObjectId) -> Option<Decision> {
        self.orgs[h]
            .decisions
            .get(&self.decision_key(p, x))
            .copied()
    }

    fn set_decision(&mut self, h: Org, p: Org, x: ObjectId, d: Decision) {
        let k = self.decision_key(p, x);
        self.orgs[h].decisions.insert(k, d);
    }

    fn view(&self, h: Org, p: Org) -> PartnerView {
        let s = self.orgs[h].settings[p];
        PartnerView {
            org: oid(p),
            mirror: s.mirror && s.peer_mirror,
            subcontractor: s.sub,
        }
    }

    fn links_of(&self, h: Org, x: ObjectId) -> Vec<Provenance> {
        self.orgs[h]
            .links
            .get(&x)
            .map(|l| l.iter().map(|(_, p)| *p).collect())
            .unwrap_or_default()
    }

    /// Ghost: whether `h`'s copy of `x` reached it both as a share's copy
    /// and through a mirror: it was held under a share while its giver or
    /// its owner is (or was) a mirror of `h`, or a mirror's change made it
    /// though the mirror had it from a third party. `check_change` cannot
    /// tell share data from mirror data, and a mirror sends an object whole
    /// only once (see "mirror-and-share").
    fn is_mixed(&self, h: Org, x: ObjectId) -> bool {
        let org = &self.orgs[h];
        if org.mixed.contains(&x) {
            return true;
        }
        let mut held = org.held_from.range((x, 0)..=(x, usize::MAX)).peekable();
        if held.peek().is_none() {
            return false;
        }
        let group = self.closure(h);
        let owner_in_group = self.owner_of.get(&x).is_some_and(|o| group.contains(o));
        held.any(|&(_, m)| owner_in_group || group.contains(&m))
    }

    fn is_legit(&self, h: Org, x: ObjectId) -> bool {
        let o = &self.orgs[h];
        o.expected.contains_key(&x) || o.prov.get(&x).is_some_and(|r| r.legit)
    }

    fn lineage_of(&self, h: Org, x: ObjectId) -> Lineage {
        self.orgs[h]
            .prov
            .get(&x)
            .map(|r| r.lineage.clone())
            .unwrap_or_default()
    }

    /// The borrower's organisation: itself and whoever was ever its mirror
    /// (transitively).
    fn closure(&self, r: Org) -> BTreeSet<Org> {
        let mut set = BTreeSet::from([r]);
        let mut todo = vec![r];
        while let Some(a) = todo.pop() {
            for &(x, y) in &self.mirror_edges {
                for (p, q) in [(x, y), (y, x)] {
                    if p == a && set.insert(q) {
                        todo.push(q);
                    }
                }
            }
        }
        set
    }

    // -- sending ------------------------------------------------------------

    fn push(&mut self, from: Org, to: Org, kind: usize, msg: Msg) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.queues[from * self.n + to][kind].push_back((seq, msg));
        seq
    }

    fn send_ctl(&mut self, from: Org, to: Org, ctl: Ctl) {
        match &ctl {
            Ctl::Objects { share, ids, .. } => {
                for x in ids {
                    self.offers.insert((from, to, *share, *x));
                }
            }
            Ctl::Grant { share, access } => {
                self.grants.insert((from, *share, to, *access));
            }
            _ => {}
        }
        self.note(|| format!("send {from}->{to} {ctl:?}"));
        self.push(from, to, CTL, Msg::Ctl(ctl));
    }

    fn send_mirror(&mut self, from: Org, to: Org, on: bool) {
        // The real system says it in the session Hello, ahead of any data
        // (`mirror::on_session`); the simulation orders it with the data.
        let kind = if self.mode.mirror_ctl { CTL } else { DATA };
        self.note(|| format!("send {from}->{to} Mirror {{ on: {on} }}"));
        self.push(from, to, kind, Msg::Ctl(Ctl::Mirror { on }));
    }

    fn send_data(&mut self, from: Org, to: Org, mut d: Data) {
        if from != self.adv_idx() {
            self.check_egress(from, to, &d);
        }
        self.note(|| {
            format!(
                "send {from}->{to} data {:?} ({} field(s){})",
                d.change.id,
                d.change.fields.len(),
                if d.change.deleted.is_some() {
                    ", deleted"
                } else {
                    ""
                }
            )
        });
        d.seq = self.next_seq + 1;
        self.push(from, to, DATA, Msg::Data(d));
    }

    /// Invariant 3: on-loan data leaves neither its borrower nor the
    /// borrower's mirrors.
    fn check_egress(&mut self, s: Org, t: Org, d: &Data) {
        let x = d.change.id;
        for &(r, via) in &d.taint {
            let org = self.closure(r);
            if !org.contains(&s) || org.contains(&t) || self.escaped.contains(&(r, via)) {
                continue;
            }
            self.escaped.insert((r, via));
            let what = format!(
                "inv3: org {s} sends {x:?} to org {t}, carrying data org {r} borrowed on loan ({via:?})"
            );
            let from_mirror = matches!(
                self.orgs[s].prov.get(&x).map(|r| r.prov.source),
                Some(Source::Mirror { .. })
            );
            if s != r || from_mirror {
                // A mirror passes on an object into which the borrower
                // linked the on-loan copy (or it came back from a mirror
                // that linked it): the mirror does not know the link
                // (mirror_sends and check_send see only the provenance).
                self.gap("mirror-link", what);
            } else if x != via && self.orgs[s].erased_links.contains(&(x, via)) {
                // The lender revoked: the erase dropped the link, the
                // values written into our own record stay, and nothing
                // limits them any more.
                self.gap("erased-link", what);
            } else {
                self.violation(what);
            }
        }
    }

    fn data_of(&self, h: Org, x: ObjectId, change: Option<Change>) -> Data {
        let org = &self.orgs[h];
        let prov = org.prov_of(&x).expect("held");
        Data {
            change: change.unwrap_or_else(|| Change::from_object(&org.objects[&x])),
            taint: org.taint.get(&x).cloned().unwrap_or_default(),
            legit: self.is_legit(h, x),
            lineage: self.lineage_of(h, x),
            mixed: self.is_mixed(h, x),
            mirror_ok: authority::mirror_sends(&prov),
            seq: 0,
        }
    }

    /// Whether share `sid` of `h` selects `obj` and may send it.
    fn may_send(
        &self,
        h: Org,
        sid: &ShareId,
        obj: &Object,
        prov: &Provenance,
        links: &[Provenance],
    ) -> Result<bool, Refusal> {
        let org = &self.orgs[h];
        let s = &org.out[sid];
        let lookup = |id: ObjectId| org.objects.get(&id).cloned();
        if !s.selection.selects(obj, &lookup) {
            return Ok(false);
        }
        rules::send(
            self.mode.mutant,
            obj.id,
            prov,
            links,
            &self.view(h, s.to),
            s.access,
        )
        .map(|()| true)
    }

    fn skip(&mut self, r: &Refusal) {
        *self.stats.send_skips.entry(r.code()).or_default() += 1;
    }

    fn enter(&mut self, h: Org, sid: ShareId, x: ObjectId, prov: &Provenance) -> Org {
        let s = self.orgs[h].out.get_mut(&sid).expect("share");
        s.members.insert(x);
        s.delivered.insert(x);
        let to = s.to;
        let ghost = OfferGhost {
            legit: self.is_legit(h, x),
            lineage: self.lineage_of(h, x),
            mixed: self.is_mixed(h, x),
        };
        self.send_ctl(
            h,
            to,
            Ctl::Objects {
                share: sid,
                owner: prov.owner,
                ids: vec![x],
                ghost: vec![ghost],
            },
        );
        to
    }

    fn leave(&mut self, h: Org, sid: ShareId, x: ObjectId) {
        let s = self.orgs[h].out.get_mut(&sid).expect("share");
        s.members.remove(&x);
        let to = s.to;
        self.send_ctl(
            h,
            to,
            Ctl::Withdraw {
                share: sid,
                ids: vec![x],
            },
        );
    }

    /// Object `x` of `h` changed (or its membership may have): shares take
    /// it in or let it go, and partners that have it get `push`.
    fn evaluate(&mut self, h: Org, x: ObjectId, push: Push) {
        let Some(obj) = self.orgs[h].objects.get(&x).cloned() else {
            return;
        };
        let prov = self.orgs[h].prov_of(&x).expect("held");
        let links = self.links_of(h, x);
        // A deleted object is judged on what it was: its members keep it
        // and get its tombstone (`Selection::selects`; the daemon's
        // membership loop skips deleted objects too).
        let deleted = obj.is_deleted();
        let sids: Vec<ShareId> = self.orgs[h]
            .out
            .iter()
            .filter(|(_, s)| !s.revoked)
            .map(|(id, _)| *id)
            .collect();
        let mut whole = BTreeSet::new();
        let mut to_send = BTreeSet::new();
        for sid in sids {
            let (to, member) = {
                let s = &self.orgs[h].out[&sid];
                (s.to, s.members.contains(&x))
            };
            if deleted {
                if member {
                    to_send.insert(to);
                }
                continue;
            }
            let selected = match self.may_send(h, &sid, &obj, &prov, &links) {
                Ok(b) => b,
                Err(r) => {
                    self.skip(&r);
                    false
                }
            };
            match (member, selected) {
                (false, true) => {
                    whole.insert(self.enter(h, sid, x, &prov));
                }
                (true, false) => self.leave(h, sid, x),
                (true, true) => {
                    to_send.insert(to);
                }
                (false, false) => {}
            }
        }
        if matches!(push, Push::Nothing) {
            to_send.clear();
        } else {
            for p in 0..self.n {
                if p != h && self.orgs[h].eff(p) && authority::mirror_sends(&prov) {
                    to_send.insert(p);
                }
            }
        }
        for &p in &whole {
            let d = self.data_of(h, x, None);
            self.send_data(h, p, d);
        }
        for &p in to_send.difference(&whole) {
            let c = match &push {
                Push::Delta(c) => Some(c.clone()),
                _ => None,
            };
            let d = self.data_of(h, x, c);
            self.send_data(h, p, d);
        }
    }

    /// Brings share `sid`'s members in line with its selection.
    fn sync_share(&mut self, h: Org, sid: ShareId) {
        if self.orgs[h].out[&sid].revoked {
            return;
        }
        let ids: Vec<ObjectId> = self.orgs[h].objects.keys().copied().collect();
        for x in ids {
            let obj = self.orgs[h].objects[&x].clone();
            if obj.is_deleted() {
                continue;
            }
            let prov = self.orgs[h].prov_of(&x).expect("held");
            let links = self.links_of(h, x);
            let member = self.orgs[h].out[&sid].members.contains(&x);
            let selected = match self.may_send(h, &sid, &obj, &prov, &links) {
                Ok(b) => b,
                Err(r) => {
                    self.skip(&r);
                    false
                }
            };
            match (member, selected) {
                (false, true) => {
                    let to = self.enter(h, sid, x, &prov);
                    let d = self.data_of(h, x, None);
                    self.send_data(h, to, d);
                }
                (true, false) => self.leave(h, sid, x),
                _ => {}
            }
        }
    }

    /// A mirror became active: everything it should hold goes to it.
    fn send_all(&mut self, h: Org, p: Org) {
        let ids: Vec<ObjectId> = self.orgs[h].objects.keys().copied().collect();
        for x in ids {
            let prov = self.orgs[h].prov_of(&x).expect("held");
            if authority::mirror_sends(&prov) {
                let d = self.data_of(h, x, None);
                self.send_data(h, p, d);
            }
        }
    }

    // -- writing ------------------------------------------------------------

    fn field_change(
        &mut self,
        h: Org,
        x: ObjectId,
        kind: Kind,
        fields: Vec<(FieldKey, Option<Value>)>,
    ) -> Change {
        let version = self.version(h);
        Change {
            id: x,
            kind,
            fields: fields
                .into_iter()
                .map(|(k, value)| (k, FieldState { version, value }))
                .collect(),
            deleted: None,
        }
    }

    /// A local write of `h` (an admin's edit, or a linked update).
    fn local_write(&mut self, h: Org, change: Change) {
        let x = change.id;
        let org = &mut self.orgs[h];
        let cur = org.objects.get(&x);
        let new = merge::apply_change(cur.cloned(), &change).expect("local writes have the kind");
        let changed = cur != Some(&new);
        org.objects.insert(x, new);
        if let Some(e) = org.expected.get_mut(&x) {
            merge::apply_in_place(e, &change).expect("same kind");
        }
        if changed {
            self.evaluate(h, x, Push::Delta(change));
        }
    }

    /// Ghost: `from`'s change `d` was used up here (applied, linked or
    /// dropped by a decision).
    fn consume(&mut self, h: Org, from: Org, d: &Data) {
        let seen = self.orgs[h]
            .consumed
            .entry((from, d.change.id))
            .or_default();
        *seen = (*seen).max(d.seq);
    }

    /// Applies a partner's change to our object `x` (a copy, or one of ours
    /// from a mirror). Nothing is sent when nothing changed.
    fn apply_incoming(&mut self, h: Org, from: Org, d: &Data) {
        let x = d.change.id;
        let org = &self.orgs[h];
        let cur = org.objects.get(&x);
        let new = match merge::apply_change(cur.cloned(), &d.change) {
            Ok(o) => o,
            Err(_) => {
                self.event("merge-refused");
                return;
            }
        };
        let unchanged = cur == Some(&new);
        self.consume(h, from, d);
        if unchanged {
            return;
        }
        let org = &self.orgs[h];
        let on_loan = matches!(
            org.prov.get(&x).map(|r| r.prov.source),
            Some(Source::Share {
                access: AccessType::OnLoan,
                ..
            })
        );
        let mirror = org.eff(from);
        let org = &mut self.orgs[h];
        // Ghost of invariant 1: only an enabled mirror's writes count.
        if let Some(e) = org.expected.get_mut(&x) {
            if mirror && org.settings[from].mirror {
                merge::apply_in_place(e, &d.change).expect("same kind");
            }
        }
        let t = org.taint.entry(x).or_default();
        t.extend(d.taint.iter().copied());
        if on_loan {
            t.insert((h, x));
        }
        if d.mixed {
            org.mixed.insert(x);
        }
        org.objects.insert(x, new);
        self.evaluate(h, x, Push::Whole);
    }

    /// A partner's change of a copy linked into our object `l`: its fields
    /// written to `l` as our own write.
    ///
    /// Safer than the daemon's `apply_linked` (which writes every field the
    /// change carries, with a new version): a field is written only when
    /// its value differs and the partner's write is newer than ours.
    /// Otherwise two partners linking each other's copies into their own
    /// records echo every update back and forth for ever (see `links` in
    /// `ORGSYNC_SIM_DAEMON`).
    fn linked_apply(&mut self, h: Org, from: Org, l: ObjectId, x: ObjectId, d: &Data) {
        self.consume(h, from, d);
        let org = &self.orgs[h];
        let Some(local) = org.objects.get(&l) else {
            return;
        };
        if local.is_deleted() || local.kind == Kind::Flag {
            return;
        }
        let mut fields = Vec::new();
        for (k, st) in &d.change.fields {
            if self.mode.link_differ {
                if local.get(k) == st.value.as_ref() {
                    continue;
                }
            } else if !self.mode.link_always {
                match local.fields.get(k) {
                    Some(cur) if cur.value == st.value || cur.version >= st.version => continue,
                    None if st.value.is_none() => continue,
                    _ => {}
                }
            }
            fields.push((k.clone(), st.value.clone()));
        }
        if fields.is_empty() {
            return;
        }
        let on_loan = matches!(
            org.prov.get(&x).map(|r| r.prov.source),
            Some(Source::Share {
                access: AccessType::OnLoan,
                ..
            })
        );
        let kind = local.kind;
        let t = self.orgs[h].taint.entry(l).or_default();
        t.extend(d.taint.iter().copied());
        if on_loan {
            t.insert((h, x));
        }
        let c = self.field_change(h, l, kind, fields);
        self.event("linked-update");
        self.local_write(h, c);
    }

    // -- receiving ----------------------------------------------------------

    fn deliver(&mut self, from: Org, to: Org, kind: usize) {
        let Some((seq, msg)) = self.queues[from * self.n + to][kind].pop_front() else {
            return;
        };
        self.stats.delivered += 1;
        if to == self.adv_idx() {
            self.adv_receive(from, msg);
            return;
        }
        match msg {
            Msg::Data(d) => {
                self.note(|| format!("recv {from}->{to} data {:?}", d.change.id));
                self.on_data(to, from, d)
            }
            Msg::Ctl(c) => {
                self.note(|| format!("recv {from}->{to} {c:?}"));
                self.on_ctl(to, from, c, seq)
            }
        }
    }

    fn on_data(&mut self, h: Org, from: Org, d: Data) {
        let x = d.change.id;
        let prov = self.orgs[h].prov_of(&x);
        let mirror = self.orgs[h].eff(from);
        match rules::change(self.mode.mutant, x, prov.as_ref(), &oid(from), mirror) {
            Err(r) => {
                if matches!(r, Refusal::OtherSource { .. }) {
                    self.orgs[h].refused_from.insert((x, from));
                }
                self.refused(&r);
            }
            Ok(ChangeVerdict::Unannounced) => self.hold(h, from, d),
            Ok(ChangeVerdict::NewFromMirror) => {
                let mut lineage = d.lineage.clone();
                lineage.push((from, h, MIRROR_EDGE));
                self.orgs[h].prov.insert(
                    x,
                    ProvRec {
                        prov: Provenance {
                            owner: oid(from),
                            source: Source::Mirror { from: oid(from) },
                        },
                        detached: false,
                        lineage,
                        legit: d.legit,
                        via: BTreeSet::new(),
                    },
                );
                if d.mixed || !d.mirror_ok {
                    // The mirror sent it as a share's copy (or a late change
                    // of one): it becomes the mirror's own object here.
                    self.orgs[h].mixed.insert(x);
                }
                self.apply_incoming(h, from, &d);
            }
            Ok(ChangeVerdict::Allowed) => {
                let p = prov.expect("allowed changes are for held objects");
                if mirror && !matches!(p.source, Source::Share { .. }) {
                    self.apply_incoming(h, from, &d);
                    return;
                }
                match self.decision(h, from, x) {
                    Some(Decision::Rejected) => {
                        self.consume(h, from, &d);
                        self.event("dropped-rejected");
                    }
                    Some(Decision::Approved) => self.apply_incoming(h, from, &d),
                    Some(Decision::Linked(l)) => self.linked_apply(h, from, l, x, &d),
                    None if self.orgs[h].settings[from].auto || self.mode.mutant == 8 => {
                        if self.orgs[h].settings[from].auto {
                            self.orgs[h].approved.insert((from, x));
                        }
                        self.set_decision(h, from, x, Decision::Approved);
                        self.apply_incoming(h, from, &d);
                    }
                    None => self.hold(h, from, d),
                }
            }
        }
    }

    fn hold(&mut self, h: Org, from: Org, d: Data) {
        self.orgs[h]
            .inbox
            .entry((from, d.change.id))
            .or_default()
            .push(d);
    }

    fn on_ctl(&mut self, h: Org, from: Org, c: Ctl, seq: u64) {
        match c {
            Ctl::Grant { share, access } => self.on_grant(h, from, share, access),
            Ctl::Objects {
                share,
                owner,
                ids,
                ghost,
            } => self.on_objects(h, from, share, owner, ids, ghost),
            Ctl::Withdraw { share, ids } => self.on_withdraw(h, from, share, ids, seq),
            Ctl::Erase { share, ids, tag } => self.on_erase(h, from, share, ids, tag, seq),
            Ctl::EraseAck { share, tag } => self.on_erase_ack(h, from, share, tag),
            Ctl::Received { share } => {
                if self.check_reply(h, from, &share) {
                    if let Some(s) = self.orgs[h].out.get_mut(&share) {
                        s.processed = true;
                    }
                }
            }
            Ctl::TermsAccepted { share } => {
                self.check_reply(h, from, &share);
            }
            Ctl::Mirror { on } => self.on_mirror(h, from, on),
        }
    }

    /// A reply about our share counts only from its recipient.
    fn check_reply(&mut self, h: Org, from: Org, share: &ShareId) -> bool {
        let recipient = self.orgs[h].out.get(share).map(|s| oid(s.to));
        match rules::share_reply(self.mode.mutant, share, recipient.as_ref(), &oid(from)) {
            Ok(()) => true,
            Err(r) => {
                self.refused(&r);
                false
            }
        }
    }

    /// Where incoming share `share` of partner `from` is recorded. The
    /// daemon keys incoming shares by share id alone and `on_grant`
    /// replaces the record whoever sends the grant: a partner that learns
    /// a share id another partner gave us takes it over, and the real
    /// giver's offers and erase are then refused (`ORGSYNC_SIM_DAEMON=grant`
    /// shows it). Safer, and what the simulation does by default: share
    /// ids are the giver's, so the record is keyed by (giver, id).
    fn inc_key(&self, from: Org, share: ShareId) -> (Org, ShareId) {
        if self.mode.grant_overwrites || self.mode.grant_first {
            (usize::MAX, share)
        } else {
            (from, share)
        }
    }

    /// A partner grants us a share.
    fn on_grant(&mut self, h: Org, from: Org, share: ShareId, access: AccessType) {
        let key = self.inc_key(from, share);
        if self.orgs[h].inc.get(&key).is_some_and(|s| s.from != from) {
            if self.mode.grant_first {
                self.refused(&Refusal::NotSendersShare { share });
                return;
            }
            self.event("grant-replaces-another-partners-share");
        }
        self.orgs[h].inc.insert(
            key,
            InShare {
                from,
                access,
                revoked: false,
            },
        );
    }

    fn on_objects(
        &mut self,
        h: Org,
        from: Org,
        share: ShareId,
        owner: OrgId,
        ids: Vec<ObjectId>,
        ghost: Vec<OfferGhost>,
    ) {
        let key = self.inc_key(from, share);
        let found = if self.mode.mutant == 3 {
            // Mutant: a share is looked up by id, whoever gave it.
            self.orgs[h]
                .inc
                .iter()
                .find(|(k, _)| k.1 == share)
                .map(|(_, s)| s)
        } else {
            self.orgs[h].inc.get(&key)
        };
        let view = found.map(|s| InShareView {
            id: share,
            from: oid(s.from),
            access: s.access,
            revoked: s.revoked,
        });
        let us = self.orgs[h].id;
        let mut accepted = Vec::new();
        for (i, x) in ids.iter().enumerate() {
            let ours = self.orgs[h].prov_of(x);
            let m = self.mode.mutant;
            match rules::offer(m, *x, &us, ours.as_ref(), &oid(from), view.as_ref(), &owner) {
                Ok(Some(p)) => {
                    let g = ghost.get(i).cloned().unwrap_or(OfferGhost {
                        legit: false,
                        lineage: Vec::new(),
                        mixed: false,
                    });
                    self.orgs[h].held_from.insert((*x, from));
                    if g.mixed {
                        self.orgs[h].mixed.insert(*x);
                    }
                    let mut lineage = g.lineage;
                    lineage.push((from, h, share));
                    self.orgs[h].prov.insert(
                        *x,
                        ProvRec {
                            prov: p,
                            detached: false,
                            lineage,
                            legit: g.legit,
                            via: BTreeSet::from([share]),
                        },
                    );
                    self.refresh_links(h, *x, p);
                    accepted.push(*x);
                }
                Ok(None) => {
                    // Offered again (it re-entered a share): updates resume.
                    if let Some(r) = self.orgs[h].prov.get_mut(x) {
                        r.detached = false;
                        r.via.insert(share);
                    }
                    accepted.push(*x);
                }
                Err(r) => self.refused(&r),
            }
        }
        for x in &accepted {
            // What waited for this announcement is processed now.
            if let Some(held) = self.orgs[h].inbox.remove(&(from, *x)) {
                for d in held {
                    self.on_data(h, from, d);
                }
            }
        }
        if !accepted.is_empty() {
            self.send_ctl(h, from, Ctl::Received { share });
        }
    }

    /// A copy linked into local objects has a new provenance (it was
    /// withdrawn, then offered again, maybe with another access type): the
    /// link records get it too (keeping the old one, under which data
    /// already went into the local object), so `check_send` bounds the
    /// local objects by everything that flowed into them. The daemon keeps
    /// only the provenance recorded when the admin linked
    /// (`ORGSYNC_SIM_DAEMON=link-prov`).
    fn refresh_links(&mut self, h: Org, x: ObjectId, p: Provenance) {
        if self.mode.stale_links {
            return;
        }
        let mut touched = Vec::new();
        for (l, links) in &mut self.orgs[h].links {
            if links.iter().any(|(r, _)| *r == x) && !links.contains(&(x, p)) {
                links.push((x, p));
                touched.push(*l);
            }
        }
        for l in touched {
            self.evaluate(h, l, Push::Nothing);
        }
    }

    fn senders_share(&mut self, h: Org, from: Org, share: &ShareId) -> bool {
        let key = self.inc_key(from, *share);
        if self.orgs[h].inc.get(&key).is_some_and(|s| s.from == from) {
            true
        } else {
            self.refused(&Refusal::NotSendersShare { share: *share });
            false
        }
    }

    /// Unshare: what waits goes, approved copies stay, detached.
    fn on_withdraw(&mut self, h: Org, from: Org, share: ShareId, ids: Vec<ObjectId>, seq: u64) {
        if !self.senders_share(h, from, &share) {
            return;
        }
        for x in ids {
            let prov = self.orgs[h].prov_of(&x);
            let m = self.mode.mutant;
            if let Err(r) = rules::withdraw(m, x, prov.as_ref(), &oid(from), &share) {
                self.refused(&r);
                continue;
            }
            let org = &mut self.orgs[h];
            let dropped = org.inbox.remove(&(from, x)).unwrap_or_default();
            if dropped.iter().any(|d| d.seq > seq) {
                // Data sent after this withdraw (for the object's next
                // entry into a share) goes with it.
                org.raced.insert(x);
            }
            if org.objects.contains_key(&x) {
                if let Some(r) = org.prov.get_mut(&x) {
                    r.detached = true;
                }
            } else {
                org.prov.remove(&x);
            }
        }
    }

    /// Revoke: the copies go entirely, onward too, acknowledged back.
    fn on_erase(
        &mut self,
        h: Org,
        from: Org,
        share: ShareId,
        ids: Vec<ObjectId>,
        tag: u64,
        seq: u64,
    ) {
        if !self.senders_share(h, from, &share) {
            return;
        }
        let key = self.inc_key(from, share);
        if let Some(s) = self.orgs[h].inc.get_mut(&key) {
            s.revoked = true;
        }
        let mut erased = Vec::new();
        for x in ids {
            let prov = self.orgs[h].prov_of(&x);
            match rules::withdraw(self.mode.mutant, x, prov.as_ref(), &oid(from), &share) {
                Ok(()) => erased.push(x),
                Err(r) => self.refused(&r),
            }
        }
        for &x in &erased {
            let k = self.decision_key(from, x);
            let org = &mut self.orgs[h];
            org.objects.remove(&x);
            let dropped = org.inbox.remove(&(from, x)).unwrap_or_default();
            let used = org.consumed.remove(&(from, x)).unwrap_or(0);
            if used > seq || dropped.iter().any(|d| d.seq > seq) {
                // Data the partner sent after this erase (for the object's
                // next entry into a share) was used up by the erased copy.
                org.raced.insert(x);
            }
            org.prov.remove(&x);
            org.taint.remove(&x);
            org.approved.remove(&(from, x));
            if let Some(Decision::Linked(l)) = org.decisions.remove(&k) {
                if let Some(links) = org.links.get_mut(&l) {
                    links.retain(|(r, _)| *r != x);
                }
                org.erased_links.insert((l, x));
            }
        }
        // Onward: every share that has (or, safer than the daemon, ever
        // had and did not erase) one of these copies.
        let mut waiting = Vec::new();
        let sids: Vec<ShareId> = self.orgs[h].out.keys().copied().collect();
        for sid in sids {
            let members_only = self.mode.members_only || self.mode.onward_members;
            let s = self.orgs[h].out.get_mut(&sid).expect("share");
            if s.revoked && !s.revoke_acked && erased.iter().any(|x| s.revoke_ids.contains(x)) {
                // Our own revoke of that share is still on its way: its
                // acknowledgement covers these copies too (safer than the
                // daemon, which acknowledges at once).
                waiting.push((s.to, sid, s.revoke_tag.expect("revoked")));
                continue;
            }
            let mut onward = Vec::new();
            for x in &erased {
                let member = s.members.remove(x);
                let delivered = s.delivered.remove(x);
                if member || (delivered && !members_only) {
                    onward.push(*x);
                }
            }
            if onward.is_empty() {
                continue;
            }
            let to = s.to;
            let t = self.new_tag();
            self.send_ctl(
                h,
                to,
                Ctl::Erase {
                    share: sid,
                    ids: onward,
                    tag: t,
                },
            );
            waiting.push((to, sid, t));
        }
        if waiting.is_empty() {
            self.send_ctl(h, from, Ctl::EraseAck { share, tag });
        } else {
            self.orgs[h].pending.push(PendingErase {
                origin: from,
                share,
                tag,
                waiting,
            });
        }
    }

    /// An acknowledgement of an erase: ours (a revoke) or one we passed on.
    /// The daemon matches acknowledgements by share alone and takes the
    /// first one for all the erases it passed on under that share; the tag
    /// matches each to its erase (safer).
    fn on_erase_ack(&mut self, h: Org, from: Org, share: ShareId, tag: u64) {
        if !self.check_reply(h, from, &share) {
            return;
        }
        let key = (from, share, tag);
        let mut matched = false;
        let mut done = Vec::new();
        for p in &mut self.orgs[h].pending {
            if p.waiting.contains(&key) {
                matched = true;
                p.waiting.retain(|w| *w != key);
                if p.waiting.is_empty() {
                    done.push((p.origin, p.share, p.tag));
                }
            }
        }
        self.orgs[h].pending.retain(|p| !p.waiting.is_empty());
        if let Some(s) = self.orgs[h].out.get_mut(&share) {
            if s.revoked && s.revoke_tag == Some(tag) && !s.revoke_acked {
                matched = true;
                s.revoke_acked = true;
            }
        }
        self.revoke_complete(h, share);
        for (origin, share, tag) in done {
            self.send_ctl(h, origin, Ctl::EraseAck { share, tag });
        }
        if !matched {
            self.refused(&Refusal::NotRecipient { share });
        }
    }

    /// Erases still waited for under our share `share`, as tags: the
    /// revoke's own, and those we passed on under it before.
    fn erases_waited(&self, h: Org, share: ShareId) -> Vec<u64> {
        let Some(s) = self.orgs[h].out.get(&share) else {
            return Vec::new();
        };
        let mut tags: Vec<u64> = self.orgs[h]
            .pending
            .iter()
            .flat_map(|p| p.waiting.iter())
            .filter(|w| w.0 == s.to && w.1 == share)
            .map(|w| w.2)
            .collect();
        if s.revoked && !s.revoke_acked {
            tags.extend(s.revoke_tag);
        }
        tags
    }

    /// A revoke is fully acknowledged when its erase is, and so is every
    /// erase passed on under the share before it (the daemon counts the
    /// first acknowledgement from the recipient).
    fn revoke_complete(&mut self, h: Org, share: ShareId) {
        let ready = self.orgs[h]
            .out
            .get(&share)
            .is_some_and(|s| s.revoked && s.revoke_acked && !s.acked);
        if !ready || !self.erases_waited(h, share).is_empty() {
            return;
        }
        let s = self.orgs[h].out.get_mut(&share).expect("checked");
        s.acked = true;
        let to = s.to;
        self.event("revoke-acknowledged");
        self.check_revoke_done(h, share, to);
    }

    fn on_mirror(&mut self, h: Org, from: Org, on: bool) {
        let before = self.orgs[h].eff(from);
        self.orgs[h].settings[from].peer_mirror = on;
        if !before && self.orgs[h].eff(from) {
            self.mirror_on(h, from);
        }
    }

    fn mirror_on(&mut self, h: Org, p: Org) {
        self.mirror_edges.insert((h.min(p), h.max(p)));
        self.event("mirror-active");
        self.send_all(h, p);
    }

    // -- the adversary's side -----------------------------------------------

    fn adv_receive(&mut self, from: Org, msg: Msg) {
        match msg {
            Msg::Data(d) => {
                let c = d.change;
                let merged = merge::apply_change(self.adv.known.get(&c.id).cloned(), &c);
                if let Ok(o) = merged {
                    self.adv.known.insert(c.id, o);
                }
                if self.adv.seen_data.len() < 64 {
                    self.adv.seen_data.push(c);
                } else {
                    let i = self.rng.below(64);
                    self.adv.seen_data[i] = c;
                }
            }
            Msg::Ctl(c) => {
                if let Ctl::Erase { share, tag, .. } = &c {
                    self.adv.erase_todo.push((from, *share, *tag));
                    self.adv.tags.push(*tag);
                }
                if self.adv.seen_ctl.len() < 64 {
                    self.adv.seen_ctl.push(c);
                } else {
                    let i = self.rng.below(64);
                    self.adv.seen_ctl[i] = c;
                }
            }
        }
    }

    fn adv_data(change: Change) -> Data {
        Data::forged(change)
    }

    fn adv_offer(&mut self, t: Org, share: ShareId, owner: OrgId, ids: Vec<ObjectId>) {
        let ghost = ids.iter().map(|_| OfferGhost::forged()).collect();
        let adv = self.adv_idx();
        self.send_ctl(
            adv,
            t,
            Ctl::Objects {
                share,
                owner,
                ids,
                ghost,
            },
        );
    }

    /// The adversary's own share to `t` (granted when first needed).
    fn adv_share(&mut self, t: Org) -> ShareId {
        if let Some(s) = self.adv.shares.get(&t) {
            return *s;
        }
        let adv = self.adv_idx();
        let s = self.new_share_id(adv);
        let access = self.rng.pick(&AccessType::ALL).expect("four");
        self.adv.shares.insert(t, s);
        self.send_ctl(adv, t, Ctl::Grant { share: s, access });
        s
    }

    fn forged_version(&mut self) -> Version {
        let hlc = match self.rng.below(3) {
            0 => BASE_MS + self.tick + 1_000_000 + self.rng.below(1000) as u64,
            1 => BASE_MS + self.tick,
            _ => BASE_MS + self.tick / 2,
        };
        Version {
            hlc: Timestamp::new(hlc, self.rng.below(3) as u16),
            instance: InstanceId(self.rng.below(self.n) as u64 + 1),
        }
    }

    fn random_fields(&mut self, kind: Kind) -> Vec<(FieldKey, Option<Value>)> {
        let names: &[&str] = match kind {
            Kind::Flag => &["name", "color"],
            _ => &["first_name", "email", "notes"],
        };
        let mut out = Vec::new();
        for _ in 0..1 + self.rng.below(2) {
            let name = self.rng.pick(names).expect("names");
            let value = if self.rng.chance(10) {
                None
            } else {
                Some(Value::Text(format!("v{}", self.rng.below(1000))))
            };
            out.push((FieldKey::Std(name.to_string()), value));
        }
        out
    }

    /// An id worth naming in a frame to `t`.
    fn adv_pick_id(&mut self, t: Org) -> ObjectId {
        let held: Vec<ObjectId> = self.orgs[t].objects.keys().copied().collect();
        let copies: Vec<ObjectId> = self.orgs[t].prov.keys().copied().collect();
        let all: Vec<ObjectId> = self.owner_of.keys().copied().collect();
        let r = self.rng.below(10);
        let pick = if r < 4 {
            self.rng.pick(&held)
        } else if r < 6 {
            self.rng.pick(&copies)
        } else {
            self.rng.pick(&all)
        };
        pick.unwrap_or_else(|| {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&self.rng.next().to_be_bytes());
            ObjectId(b)
        })
    }

    fn adv_pick_ids(&mut self, t: Org) -> Vec<ObjectId> {
        (0..1 + self.rng.below(3))
            .map(|_| self.adv_pick_id(t))
            .collect()
    }

    /// A share id worth naming in a frame to `t`.
    fn adv_pick_share(&mut self, t: Org) -> ShareId {
        let mut options: Vec<ShareId> = self.orgs[t].inc.keys().map(|k| k.1).collect();
        options.extend(self.orgs[t].out.keys().copied());
        if let Some(s) = self.adv.shares.get(&t) {
            options.push(*s);
        }
        match self.rng.below(5) {
            0 => self.rng.pick(&self.all_shares.clone()),
            1 => None,
            _ => self.rng.pick(&options),
        }
        .unwrap_or_else(|| {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&self.rng.next().to_be_bytes());
            ShareId(b)
        })
    }

    fn adversary_act(&mut self) {
        let adv = self.adv_idx();
        let t = self.rng.below(self.honest());
        match self.rng.below(16) {
            0 | 1 => self.adv_create(t),
            2 => self.adv_edit(),
            3 | 4 => {
                // Changes for others' ids: the receiver's own objects,
                // copies from third parties, anything.
                let x = self.adv_pick_id(t);
                let mut kind = self.kinds.get(&x).copied().unwrap_or(Kind::Contact);
                if self.rng.chance(10) {
                    kind = self.rng.pick(&[Kind::Contact, Kind::Flag]).expect("two");
                }
                let version = self.forged_version();
                let fields = self.random_fields(kind);
                let change = Change {
                    id: x,
                    kind,
                    fields: fields
                        .into_iter()
                        .map(|(k, value)| (k, FieldState { version, value }))
                        .collect(),
                    deleted: self.rng.chance(15).then_some(version),
                };
                self.note(|| format!("adversary forges a change of {x:?} for {t}"));
                self.send_data(adv, t, Self::adv_data(change));
            }
            5 | 6 => {
                // Offers naming others' shares, the receiver as owner, ...
                let share = self.adv_pick_share(t);
                let ids = self.adv_pick_ids(t);
                let owner = match self.rng.below(4) {
                    0 => oid(t),
                    1 => oid(adv),
                    2 => oid(self.rng.below(self.n)),
                    _ => oid(ids
                        .first()
                        .and_then(|x| self.owner_of.get(x))
                        .copied()
                        .unwrap_or(adv)),
                };
                self.adv_offer(t, share, owner, ids);
            }
            7 | 8 => {
                let share = self.adv_pick_share(t);
                let ids = self.adv_pick_ids(t);
                let ctl = if self.rng.chance(50) {
                    Ctl::Withdraw { share, ids }
                } else {
                    let tag = self.rng.below(self.next_tag as usize + 2) as u64;
                    Ctl::Erase { share, ids, tag }
                };
                self.send_ctl(adv, t, ctl);
            }
            9 => {
                // Forged replies; a worst-case adversary knows which
                // revokes wait for their acknowledgement, and their tags.
                let waiting: Vec<(ShareId, u64)> = self.orgs[t]
                    .out
                    .iter()
                    .filter(|(_, s)| s.revoked && !s.revoke_acked && s.to != adv)
                    .map(|(id, s)| (*id, s.revoke_tag.unwrap_or(0)))
                    .chain(
                        self.orgs[t]
                            .pending
                            .iter()
                            .flat_map(|p| p.waiting.iter().map(|w| (w.1, w.2))),
                    )
                    .collect();
                if let Some((share, tag)) = self.rng.pick(&waiting) {
                    if self.rng.chance(50) {
                        self.send_ctl(adv, t, Ctl::EraseAck { share, tag });
                        return;
                    }
                }
                let share = self.adv_pick_share(t);
                let ctl = match self.rng.below(3) {
                    0 => Ctl::Received { share },
                    1 => Ctl::TermsAccepted { share },
                    _ => {
                        let tag = match self.rng.pick(&self.adv.tags.clone()) {
                            Some(tag) if self.rng.chance(50) => tag,
                            _ => self.rng.below(self.next_tag as usize + 2) as u64,
                        };
                        Ctl::EraseAck { share, tag }
                    }
                };
                self.send_ctl(adv, t, ctl);
            }
            10 => {
                // Replays of frames it was sent.
                if self.rng.chance(50) {
                    if let Some(mut c) = self.rng.pick(&self.adv.seen_ctl.clone()) {
                        if let Ctl::Objects { ids, ghost, .. } = &mut c {
                            *ghost = ids.iter().map(|_| OfferGhost::forged()).collect();
                        }
                        self.send_ctl(adv, t, c);
                    }
                } else if let Some(c) = self.rng.pick(&self.adv.seen_data.clone()) {
                    self.send_data(adv, t, Self::adv_data(c));
                }
            }
            11 => {
                // One side alone enables nothing.
                let on = self.rng.chance(70);
                self.send_mirror(adv, t, on);
            }
            12 => {
                if self.rng.chance(50) {
                    // A grant naming a share someone else gave `t`.
                    let share = self.adv_pick_share(t);
                    let access = self.rng.pick(&AccessType::ALL).expect("four");
                    self.send_ctl(adv, t, Ctl::Grant { share, access });
                } else {
                    self.adv_share(t);
                }
            }
            13 => {
                // Passes on something it received (allowed or not).
                let known: Vec<ObjectId> = self.adv.known.keys().copied().collect();
                if let Some(x) = self.rng.pick(&known) {
                    let share = self.adv_share(t);
                    let owner = match self.owner_of.get(&x) {
                        Some(o) if self.rng.chance(70) => oid(*o),
                        _ => oid(self.rng.below(self.n)),
                    };
                    self.adv_offer(t, share, owner, vec![x]);
                    let c = Change::from_object(&self.adv.known[&x]);
                    self.send_data(adv, t, Self::adv_data(c));
                }
            }
            _ => {
                // Acknowledges an erase it was asked for (or not yet).
                if !self.adv.erase_todo.is_empty() {
                    let i = self.rng.below(self.adv.erase_todo.len());
                    let (to, share, tag) = self.adv.erase_todo.swap_remove(i);
                    self.send_ctl(adv, to, Ctl::EraseAck { share, tag });
                }
            }
        }
    }

    fn adv_create(&mut self, t: Org) {
        let adv = self.adv_idx();
        let kind = if self.rng.chance(75) {
            Kind::Contact
        } else {
            Kind::Flag
        };
        let x = self.new_object_id(adv, kind);
        let fields = self.random_fields(kind);
        let c = self.field_change(adv, x, kind, fields);
        let obj = merge::apply_change(None, &c).expect("new");
        self.adv.known.insert(x, obj.clone());
        self.adv.own.push(x);
        let share = self.adv_share(t);
        self.adv_offer(t, share, oid(adv), vec![x]);
        self.adv.audience.entry(x).or_default().insert(t);
        self.send_data(adv, t, Self::adv_data(Change::from_object(&obj)));
    }

    fn adv_edit(&mut self) {
        let adv = self.adv_idx();
        let Some(x) = self.rng.pick(&self.adv.own.clone()) else {
            return;
        };
        let kind = self.kinds[&x];
        let fields = self.random_fields(kind);
        let c = self.field_change(adv, x, kind, fields);
        if let Some(o) = self.adv.known.get_mut(&x) {
            let _ = merge::apply_in_place(o, &c);
        }
        let audience: Vec<Org> = self
            .adv
            .audience
            .get(&x)
            .map(|a| a.iter().copied().collect())
            .unwrap_or_default();
        for t in audience {
            self.send_data(adv, t, Self::adv_data(c.clone()));
        }
    }

    // -- operations of honest organisations ---------------------------------

    fn random_op(&mut self) {
        let h = self.rng.below(self.honest());
        match self.rng.below(100) {
            0..=6 => self.op_create(h),
            7..=15 => self.op_edit(h),
            16..=17 => self.op_delete(h),
            18..=24 => self.op_flag(h),
            25..=30 => self.op_create_share(h),
            31..=32 => self.op_remove_rule(h),
            33..=35 => self.op_revoke(h),
            36..=41 => self.op_decide(h, 0),
            42..=44 => self.op_decide(h, 1),
            45..=46 => self.op_decide(h, 2),
            47..=48 => self.op_auto(h),
            49..=50 => self.op_mirror(h),
            51..=52 => self.op_subcontractor(h),
            53..=54 => self.op_replica_edit(h),
            55..=56 => self.op_partition(),
            57..=58 => self.op_heal(),
            59..=78 => self.deliver_random(),
            79..=82 => {
                self.deliver_all(DELIVER_ALL_LIMIT);
            }
            _ => self.adversary_act(),
        }
    }

    fn partner_of(&mut self, h: Org) -> Org {
        let p = self.rng.below(self.n - 1);
        if p >= h {
            p + 1
        } else {
            p
        }
    }

    fn op_create(&mut self, h: Org) {
        if self.orgs[h].expected.len() >= MAX_OWN {
            return self.op_edit(h);
        }
        let kind = if self.rng.chance(70) {
            Kind::Contact
        } else {
            Kind::Flag
        };
        let x = self.new_object_id(h, kind);
        self.note(|| format!("org {h} creates {kind} {x:?}"));
        self.orgs[h].expected.insert(x, Object::new(x, kind));
        let fields = self.random_fields(kind);
        let c = self.field_change(h, x, kind, fields);
        self.local_write(h, c);
    }

    /// Objects `h` may edit (its own and its mirrors'), per `check_local_edit`.
    fn editable(&self, h: Org, kind: Option<Kind>) -> Vec<ObjectId> {
        let org = &self.orgs[h];
        org.objects
            .iter()
            .filter(|(x, o)| {
                !o.is_deleted()
                    && kind.is_none_or(|k| o.kind == k)
                    && org.prov_of(x).is_some_and(|p| {
                        rules::local_edit(self.mode.mutant, &p, o.kind.as_str()).is_ok()
                    })
            })
            .map(|(x, _)| *x)
            .collect()
    }

    fn op_edit(&mut self, h: Org) {
        let Some(x) = self.rng.pick(&self.editable(h, None)) else {
            return;
        };
        let kind = self.orgs[h].objects[&x].kind;
        let fields = self.random_fields(kind);
        self.note(|| format!("org {h} edits {x:?}"));
        let c = self.field_change(h, x, kind, fields);
        self.local_write(h, c);
    }

    fn op_delete(&mut self, h: Org) {
        let own: Vec<ObjectId> = self.orgs[h]
            .expected
            .iter()
            .filter(|(_, o)| !o.is_deleted())
            .map(|(x, _)| *x)
            .collect();
        let Some(x) = self.rng.pick(&own) else {
            return;
        };
        let kind = self.orgs[h].objects[&x].kind;
        let v = self.version(h);
        self.note(|| format!("org {h} deletes {x:?}"));
        self.local_write(
            h,
            Change {
                id: x,
                kind,
                fields: BTreeMap::new(),
                deleted: Some(v),
            },
        );
    }

    fn op_flag(&mut self, h: Org) {
        let contacts = self.editable(h, Some(Kind::Contact));
        let flags: Vec<ObjectId> = self.orgs[h]
            .objects
            .iter()
            .filter(|(_, o)| o.kind == Kind::Flag && !o.is_deleted())
            .map(|(x, _)| *x)
            .collect();
        let (Some(x), Some(f)) = (self.rng.pick(&contacts), self.rng.pick(&flags)) else {
            return;
        };
        let value = match self.rng.below(20) {
            0..=11 => Some(Value::Bool(true)),
            12..=16 => Some(Value::Bool(false)),
            _ => None,
        };
        self.note(|| format!("org {h} flags {x:?} with {f:?}: {value:?}"));
        let c = self.field_change(h, x, Kind::Contact, vec![(FieldKey::Flag(f), value)]);
        self.local_write(h, c);
    }

    fn random_selector(&mut self, h: Org) -> Selector {
        let flags: Vec<ObjectId> = self.orgs[h]
            .objects
            .iter()
            .filter(|(_, o)| o.kind == Kind::Flag)
            .map(|(x, _)| *x)
            .collect();
        let objects: Vec<ObjectId> = self.orgs[h].objects.keys().copied().collect();
        match self.rng.below(20) {
            0..=2 => Selector::All,
            3..=6 => Selector::Kind(Kind::Contact),
            7..=8 => Selector::Kind(Kind::Flag),
            9..=14 => match self.rng.pick(&flags) {
                Some(f) => Selector::Flag(f),
                None => Selector::All,
            },
            _ => match self.rng.pick(&objects) {
                Some(x) => Selector::Object(x),
                None => Selector::Kind(Kind::Contact),
            },
        }
    }

    fn op_create_share(&mut self, h: Org) {
        let to = self.partner_of(h);
        let access = self.rng.pick(&AccessType::ALL).expect("four");
        let mut rules = vec![self.random_selector(h)];
        if self.rng.chance(20) {
            rules.push(self.random_selector(h));
        }
        let selection = Selection { rules };
        // Like the daemon's preview: a share of which nothing selected may
        // go is not created.
        let ids: Vec<ObjectId> = self.orgs[h].objects.keys().copied().collect();
        let (mut selected, mut allowed) = (0, 0);
        for x in ids {
            let org = &self.orgs[h];
            let obj = &org.objects[&x];
            let lookup = |id: ObjectId| org.objects.get(&id).cloned();
            if obj.is_deleted() || !selection.selects(obj, &lookup) {
                continue;
            }
            selected += 1;
            let prov = org.prov_of(&x).expect("held");
            let links = self.links_of(h, x);
            let m = self.mode.mutant;
            if rules::send(m, x, &prov, &links, &self.view(h, to), access).is_ok() {
                allowed += 1;
            }
        }
        if selected > 0 && allowed == 0 {
            self.event("share-not-created");
            return;
        }
        let sid = self.new_share_id(h);
        self.note(|| format!("org {h} shares {selection:?} with {to} as {access} ({sid:?})"));
        self.orgs[h].out.insert(
            sid,
            OutShare {
                to,
                selection,
                access,
                revoked: false,
                processed: false,
                members: BTreeSet::new(),
                delivered: BTreeSet::new(),
                revoke_tag: None,
                revoke_ids: BTreeSet::new(),
                revoke_acked: false,
                acked: false,
            },
        );
        self.send_ctl(h, to, Ctl::Grant { share: sid, access });
        self.sync_share(h, sid);
    }

    fn live_shares(&self, h: Org) -> Vec<ShareId> {
        self.orgs[h]
            .out
            .iter()
            .filter(|(_, s)| !s.revoked)
            .map(|(id, _)| *id)
            .collect()
    }

    fn op_remove_rule(&mut self, h: Org) {
        let Some(sid) = self.rng.pick(&self.live_shares(h)) else {
            return;
        };
        let n = self.orgs[h].out[&sid].selection.rules.len();
        if n == 0 {
            return;
        }
        let i = self.rng.below(n);
        self.note(|| format!("org {h} removes rule {i} of {sid:?}"));
        self.orgs[h]
            .out
            .get_mut(&sid)
            .expect("share")
            .selection
            .rules
            .remove(i);
        self.sync_share(h, sid);
    }

    fn op_revoke(&mut self, h: Org) {
        let Some(sid) = self.rng.pick(&self.live_shares(h)) else {
            return;
        };
        let s = &self.orgs[h].out[&sid];
        // No clock: a processed manager share is past its 72 hours.
        let processed = s.processed.then_some(0);
        if s.access
            .may_revoke(processed, MANAGER_REVOKE_WINDOW_MS)
            .is_err()
        {
            self.event("revoke-refused-window");
            return;
        }
        let members_only = self.mode.members_only;
        let tag = self.new_tag();
        let s = self.orgs[h].out.get_mut(&sid).expect("share");
        let mut ids: BTreeSet<ObjectId> = std::mem::take(&mut s.members);
        let delivered = std::mem::take(&mut s.delivered);
        if !members_only {
            // Safer than the daemon (current members only): copies that
            // left the selection and stayed, detached, are erased too.
            ids.extend(delivered);
        }
        s.revoked = true;
        s.revoke_tag = Some(tag);
        s.revoke_ids = ids.clone();
        let to = s.to;
        self.note(|| format!("org {h} revokes {sid:?}"));
        self.send_ctl(
            h,
            to,
            Ctl::Erase {
                share: sid,
                ids: ids.into_iter().collect(),
                tag,
            },
        );
    }

    /// Inbox items of `h` an admin can decide on: announced by the share of
    /// the partner they came from, not decided yet.
    fn decidable(&self, h: Org) -> Vec<(Org, ObjectId)> {
        let org = &self.orgs[h];
        org.inbox
            .keys()
            .filter(|(p, x)| {
                org.prov
                    .get(x)
                    .is_some_and(|r| r.prov.from() == Some(oid(*p)))
                    && matches!(org.prov[x].prov.source, Source::Share { .. })
                    && self.decision(h, *p, *x).is_none()
            })
            .copied()
            .collect()
    }

    /// 0: approve as new; 1: link to a local object of the same kind; 2: reject.
    fn op_decide(&mut self, h: Org, action: u8) {
        let Some((p, x)) = self.rng.pick(&self.decidable(h)) else {
            return;
        };
        match action {
            0 => self.approve(h, p, x),
            1 => {
                let kind = self.orgs[h].inbox[&(p, x)][0].change.kind;
                // Only contacts: linking a flag maps ids, which the
                // simulation does not model. Only objects we may edit (the
                // daemon would also write into a partner's copy).
                if kind != Kind::Contact {
                    return;
                }
                let locals: Vec<ObjectId> = self
                    .editable(h, Some(Kind::Contact))
                    .into_iter()
                    .filter(|l| *l != x)
                    .collect();
                let Some(l) = self.rng.pick(&locals) else {
                    return;
                };
                self.note(|| format!("org {h} links {x:?} from {p} to {l:?}"));
                let prov = self.orgs[h].prov[&x].prov;
                let held = self.orgs[h].inbox.remove(&(p, x)).unwrap_or_default();
                self.orgs[h].links.entry(l).or_default().push((x, prov));
                self.set_decision(h, p, x, Decision::Linked(l));
                for d in &held {
                    self.linked_apply(h, p, l, x, d);
                }
                // The link may bar `l` from shares.
                self.evaluate(h, l, Push::Nothing);
            }
            _ => {
                self.note(|| format!("org {h} rejects {x:?} from {p}"));
                for d in self.orgs[h].inbox.remove(&(p, x)).unwrap_or_default() {
                    self.consume(h, p, &d);
                }
                self.set_decision(h, p, x, Decision::Rejected);
            }
        }
    }

    fn approve(&mut self, h: Org, p: Org, x: ObjectId) {
        self.note(|| format!("org {h} approves {x:?} from {p}"));
        let held = self.orgs[h].inbox.remove(&(p, x)).unwrap_or_default();
        self.set_decision(h, p, x, Decision::Approved);
        self.orgs[h].approved.insert((p, x));
        for d in &held {
            self.apply_incoming(h, p, d);
        }
    }

    fn op_auto(&mut self, h: Org) {
        let p = self.partner_of(h);
        let on = !self.orgs[h].settings[p].auto;
        self.note(|| format!("org {h} sets auto-approve for {p}: {on}"));
        self.orgs[h].settings[p].auto = on;
        if on {
            // What already waits from that partner is approved too.
            for (q, x) in self.decidable(h) {
                if q == p {
                    self.approve(h, p, x);
                }
            }
        }
    }

    fn op_mirror(&mut self, h: Org) {
        let p = self.partner_of(h);
        let before = self.orgs[h].eff(p);
        let on = !self.orgs[h].settings[p].mirror;
        self.note(|| format!("org {h} sets mirror for {p}: {on}"));
        self.orgs[h].settings[p].mirror = on;
        if on {
            self.mirror_enabled.insert((h, p));
        }
        self.send_mirror(h, p, on);
        if !before && self.orgs[h].eff(p) {
            self.mirror_on(h, p);
        }
    }

    fn op_subcontractor(&mut self, h: Org) {
        let p = self.partner_of(h);
        let on = !self.orgs[h].settings[p].sub;
        self.note(|| format!("org {h} marks {p} as subcontractor: {on}"));
        self.orgs[h].settings[p].sub = on;
        let sids: Vec<ShareId> = self
            .live_shares(h)
            .into_iter()
            .filter(|s| self.orgs[h].out[s].to == p)
            .collect();
        for sid in sids {
            self.sync_share(h, sid);
        }
    }

    /// A local edit of a partner's copy must be refused.
    fn op_replica_edit(&mut self, h: Org) {
        let copies: Vec<ObjectId> = self.orgs[h]
            .objects
            .keys()
            .filter(|x| {
                matches!(
                    self.orgs[h].prov.get(x).map(|r| r.prov.source),
                    Some(Source::Share { .. })
                )
            })
            .copied()
            .collect();
        let Some(x) = self.rng.pick(&copies) else {
            return;
        };
        let prov = self.orgs[h].prov[&x].prov;
        let kind = self.orgs[h].objects[&x].kind;
        match rules::local_edit(self.mode.mutant, &prov, kind.as_str()) {
            Err(r) => self.refused(&r),
            Ok(()) => self.violation(format!(
                "org {h} may edit {x:?}, a copy received from a partner ({:?})",
                prov.source
            )),
        }
    }

    fn pair(&self, a: Org, b: Org) -> usize {
        a.min(b) * self.n + a.max(b)
    }

    fn op_partition(&mut self) {
        let a = self.rng.below(self.n);
        let b = (a + 1 + self.rng.below(self.n - 1)) % self.n;
        let until = self.op + 5 + self.rng.below(35);
        self.note(|| format!("partition {a} | {b} until {until}"));
        let i = self.pair(a, b);
        self.paused[i] = until;
    }

    fn op_heal(&mut self) {
        let paused: Vec<usize> = (0..self.paused.len())
            .filter(|i| self.paused[*i] > self.op)
            .collect();
        if let Some(i) = self.rng.pick(&paused) {
            self.paused[i] = 0;
        }
    }

    fn deliverable(&self) -> Vec<(Org, Org, usize)> {
        let mut out = Vec::new();
        for from in 0..self.n {
            for to in 0..self.n {
                if from == to || self.paused[self.pair(from, to)] > self.op {
                    continue;
                }
                for kind in [DATA, CTL] {
                    if !self.queues[from * self.n + to][kind].is_empty() {
                        out.push((from, to, kind));
                    }
                }
            }
        }
        out
    }

    fn deliver_random(&mut self) {
        if let Some((from, to, kind)) = self.rng.pick(&self.deliverable()) {
            self.deliver(from, to, kind);
        }
    }

    /// Delivers until nothing deliverable is left (or `limit`); invariants
    /// after each delivery. Returns whether everything was delivered.
    fn deliver_all(&mut self, limit: usize) -> bool {
        for _ in 0..limit {
            let Some((from, to, kind)) = self.rng.pick(&self.deliverable()) else {
                return true;
            };
            self.deliver(from, to, kind);
            self.check_state();
            if !self.violations.is_empty() {
                return true;
            }
        }
        self.deliverable().is_empty()
    }

    // -- invariants ---------------------------------------------------------

    /// Invariants 1, 2 and 5 over every honest organisation's state.
    fn check_state(&mut self) {
        let adv = self.adv_idx();
        let mut v = Vec::new();
        let mut gaps = Vec::new();
        for h in 0..self.honest() {
            let org = &self.orgs[h];
            for (x, exp) in &org.expected {
                match org.objects.get(x) {
                    None => v.push(format!("inv1: org {h} lost its own object {x:?}")),
                    Some(o) if o != exp => v.push(format!(
                        "inv1: org {h}'s own object {x:?} changed other than by its own \
                         writes or an enabled mirror:\n  held:     {o:?}\n  expected: {exp:?}"
                    )),
                    _ => {}
                }
            }
            for x in org.objects.keys() {
                if !org.prov.contains_key(x) && !org.expected.contains_key(x) {
                    v.push(format!(
                        "inv2: org {h} holds {x:?} as its own but never created it"
                    ));
                }
            }
            for (x, rec) in &org.prov {
                if org.expected.contains_key(x) {
                    v.push(format!("inv2: org {h}'s own object {x:?} got a provenance"));
                }
                let honest_chain = rec.lineage.iter().all(|e| e.0 != adv && e.1 != adv);
                if honest_chain {
                    if let Some(o) = self.owner_of.get(x) {
                        if rec.prov.owner != oid(*o) {
                            let what = format!(
                                "inv2: org {h} records {x:?} as owned by {} (owner {o})",
                                idx(&rec.prov.owner)
                            );
                            if self.is_mixed(h, *x) {
                                gaps.push(("mirror-and-share", what));
                            } else if rec.lineage.iter().any(|e| e.2 == MIRROR_EDGE) {
                                // A change carries no owner: a mirror's new
                                // object is recorded as the mirror's
                                // (NewFromMirror), wrong when it relays
                                // another mirror's object.
                                gaps.push(("mirror-owner", what));
                            } else {
                                v.push(what);
                            }
                        }
                    }
                }
                match rec.prov.source {
                    Source::Own => v.push(format!("inv2: org {h} records {x:?} as own")),
                    Source::Share {
                        from,
                        share,
                        access,
                    } => {
                        let f = idx(&from);
                        if !self.offers.contains(&(f, h, share, *x)) {
                            v.push(format!(
                                "inv2: org {h} holds {x:?} from {f} under {share:?}, never offered"
                            ));
                        }
                        if !self.grants.contains(&(f, share, h, access)) {
                            v.push(format!(
                                "inv2: org {h} holds {x:?} from {f} under {share:?} as {access}, \
                                 never granted so"
                            ));
                        }
                        if !rec.legit {
                            v.push(format!(
                                "inv2: org {h} holds {x:?} from {f}, who did not hold it legitimately"
                            ));
                        }
                        if org.objects.contains_key(x)
                            && (self.decision(h, f, *x) != Some(Decision::Approved)
                                || !org.approved.contains(&(f, *x)))
                        {
                            v.push(format!(
                                "inv5: {x:?} from {f} is in org {h}'s objects without approval \
                                 ({:?})",
                                self.decision(h, f, *x)
                            ));
                        }
                    }
                    Source::Mirror { from } => {
                        let m = idx(&from);
                        if !self.mirror_enabled.contains(&(h, m)) {
                            v.push(format!(
                                "inv2: org {h} holds {x:?} from mirror {m} it never enabled"
                            ));
                        }
                    }
                }
            }
        }
        self.violations.extend(v);
        for (kind, g) in gaps {
            self.gap(kind, g);
        }
    }

    /// Invariant 4: org `o`'s revoke of `sid` (given to `p`) is acknowledged.
    fn check_revoke_done(&mut self, o: Org, sid: ShareId, p: Org) {
        let adv = self.adv_idx();
        let edge = (o, p, sid);
        for q in 0..self.honest() {
            let mut found = Vec::new();
            for (x, rec) in &self.orgs[q].prov {
                if let Some(i) = rec.lineage.iter().position(|e| *e == edge) {
                    if rec.lineage[i..].iter().all(|e| e.0 != adv && e.1 != adv) {
                        found.push((
                            *x,
                            if self.is_mixed(q, *x) {
                                "mixed"
                            } else {
                                "through"
                            },
                        ));
                    }
                } else if q == p && rec.via.contains(&sid) && rec.prov.from() == Some(oid(o)) {
                    // Still in another live share of the same giver: held
                    // legitimately from that one.
                    let still_shared = self.orgs[o]
                        .out
                        .values()
                        .any(|s| s.to == p && !s.revoked && s.members.contains(x));
                    if !still_shared {
                        found.push((*x, "second"));
                    }
                }
            }
            for (x, how) in found {
                let what = format!(
                    "inv4: org {o}'s revoke of {sid:?} (to {p}) is acknowledged, yet org {q} \
                     still holds {x:?} received through it"
                );
                if how == "second" {
                    // Announced first under another share of the same
                    // partner, which stays the copy's provenance: the erase
                    // under this share is refused (check_withdraw) though
                    // the copy was kept and updated only through it.
                    self.gap("second-share", what);
                } else if how == "mixed" {
                    self.gap("mirror-and-share", what);
                } else {
                    self.violation(what);
                }
            }
        }
    }

    /// Whether the acknowledgement of org `p`'s erase (from `origin`) waits
    /// on the adversary.
    fn blocked(&self, p: Org, origin: Org, share: ShareId, tag: u64, depth: usize) -> bool {
        if p == self.adv_idx() {
            return true;
        }
        if depth > 2 * self.n + 4 {
            return false;
        }
        self.orgs[p]
            .pending
            .iter()
            .find(|e| e.origin == origin && e.share == share && e.tag == tag)
            .is_some_and(|e| {
                e.waiting
                    .iter()
                    .any(|&(q, s2, t2)| self.blocked(q, p, s2, t2, depth + 1))
            })
    }

    /// Invariants 6 and 7 once everything is delivered.
    fn check_quiescent(&mut self) {
        let adv = self.adv_idx();
        let mut v = Vec::new();
        let mut gaps = Vec::new();
        for h in 0..self.honest() {
            let org = &self.orgs[h];
            for (x, obj) in &org.objects {
                let Some(rec) = org.prov.get(x) else {
                    continue;
                };
                match rec.prov.source {
                    Source::Share { from, share, .. } => {
                        let f = idx(&from);
                        if f == adv || rec.detached {
                            continue;
                        }
                        let src = self.orgs[f].objects.get(x);
                        if src != Some(obj) {
                            let what = format!(
                                "inv6: org {h}'s copy of {x:?} differs from its source {f}'s:\n  \
                                 copy:   {obj:?}\n  source: {src:?}"
                            );
                            let member = self.orgs[f]
                                .out
                                .get(&share)
                                .is_some_and(|s| s.members.contains(x));
                            if !member && rec.via.len() > 1 {
                                // The withdraw under the share it last came
                                // through was refused (see "second-share").
                                gaps.push(("second-share", what));
                            } else if self.is_mixed(h, *x) {
                                gaps.push(("mirror-and-share", what));
                            } else if org.raced.contains(x) || org.refused_from.contains(&(*x, f)) {
                                // The whole object sent with its
                                // announcement was used up by an earlier
                                // copy that was then erased or withdrawn, or
                                // refused because the copy still had another
                                // source: only later changes arrive.
                                gaps.push(("entry-race", what));
                            } else {
                                v.push(what);
                            }
                        }
                    }
                    Source::Mirror { from } => {
                        let m = idx(&from);
                        if m == adv || !org.eff(m) || !self.orgs[m].eff(h) {
                            continue;
                        }
                        let src = self.orgs[m].objects.get(x);
                        if src != Some(obj) {
                            let what = format!(
                                "inv6: org {h}'s mirror copy of {x:?} differs from mirror {m}'s:\n  \
                                 copy:   {obj:?}\n  mirror: {src:?}"
                            );
                            if self.is_mixed(h, *x) || self.is_mixed(m, *x) {
                                gaps.push(("mirror-and-share", what));
                            } else {
                                v.push(what);
                            }
                        }
                    }
                    Source::Own => {}
                }
            }
            for (sid, s) in &org.out {
                if s.revoked && !s.acked && s.to != adv {
                    // Every erase still waited for must wait on the adversary.
                    let waits = self.erases_waited(h, *sid);
                    if waits.is_empty() || !waits.iter().all(|t| self.blocked(s.to, h, *sid, *t, 0))
                    {
                        v.push(format!(
                            "inv7: org {h}'s revoke of {sid:?} (to {}) is never acknowledged",
                            s.to
                        ));
                    }
                }
            }
        }
        self.violations.extend(v);
        for (kind, g) in gaps {
            self.gap(kind, g);
        }
    }

    // -- a case -------------------------------------------------------------

    fn setup(&mut self) {
        for h in 0..self.honest() {
            for _ in 0..2 {
                self.op_create(h);
            }
            let x = self.new_object_id(h, Kind::Flag);
            self.orgs[h].expected.insert(x, Object::new(x, Kind::Flag));
            let c = self.field_change(
                h,
                x,
                Kind::Flag,
                vec![(
                    FieldKey::Std("name".into()),
                    Some(Value::Text("flag".into())),
                )],
            );
            self.local_write(h, c);
            for p in 0..self.n {
                if p != h && self.rng.chance(30) {
                    self.orgs[h].settings[p].auto = true;
                }
            }
        }
        let t = self.rng.below(self.honest());
        self.adv_create(t);
    }

    fn fail(&self, at: &str) -> Failure {
        Failure {
            seed: self.seed,
            at: at.to_string(),
            what: self.violations.join("\n"),
            trace: self.trace.clone().unwrap_or_default(),
        }
    }

    fn run(mut self) -> Result<Stats, Failure> {
        self.setup();
        let steps = MIN_STEPS + self.rng.below(MAX_STEPS - MIN_STEPS + 1);
        for op in 0..steps {
            self.op = op + 1;
            self.random_op();
            self.check_state();
            if !self.violations.is_empty() {
                return Err(self.fail(&format!("operation {}", self.op)));
            }
        }
        // Quiescence: no partitions, no more operations.
        self.op = steps + 1;
        self.paused.iter_mut().for_each(|p| *p = 0);
        let quiet = self.deliver_all(DRAIN_LIMIT);
        if !self.violations.is_empty() {
            return Err(self.fail("delivery after the last operation"));
        }
        if !quiet {
            self.violation(format!(
                "inv7: still sending after {DRAIN_LIMIT} deliveries past the last operation"
            ));
            return Err(self.fail("quiescence"));
        }
        self.check_quiescent();
        if !self.violations.is_empty() {
            return Err(self.fail("quiescence"));
        }
        self.stats.cases = 1;
        self.stats.steps = steps as u64;
        Ok(self.stats)
    }
}

struct Failure {
    seed: u64,
    at: String,
    what: String,
    trace: Vec<String>,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn governance_simulation() {
    let mode = Mode::from_env();
    let single = env_u64("ORGSYNC_SIM_SEED");
    let seeds: Vec<u64> = match single {
        Some(s) => vec![s],
        None => {
            let cases = env_u64("ORGSYNC_SIM_CASES").unwrap_or(DEFAULT_CASES);
            (0..cases).map(|i| FIRST_SEED + i).collect()
        }
    };
    let trace = single.is_some() || std::env::var("ORGSYNC_SIM_TRACE").is_ok_and(|v| v == "1");
    let started = Instant::now();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(seeds.len().max(1));
    let keep_going = std::env::var("ORGSYNC_SIM_KEEP_GOING").is_ok_and(|v| v == "1");
    let stop = AtomicBool::new(false);
    let total = Mutex::new(Stats::default());
    let failures: Mutex<Vec<Failure>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (seeds, stop, total, failures) = (&seeds, &stop, &total, &failures);
            scope.spawn(move || {
                let mut mine = Stats::default();
                for seed in seeds.iter().skip(t).step_by(threads) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let run = std::panic::catch_unwind(|| Sim::new(*seed, mode, trace).run());
                    let result = run.unwrap_or_else(|e| {
                        let what = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Err(Failure {
                            seed: *seed,
                            at: "a panic of the simulation".into(),
                            what,
                            trace: Vec::new(),
                        })
                    });
                    match result {
                        Ok(s) => mine.add(&s),
                        Err(f) => {
                            failures.lock().expect("lock").push(f);
                            if !keep_going {
                                stop.store(true, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
                total.lock().expect("lock").add(&mine);
            });
        }
    });
    let total = total.into_inner().expect("lock");
    let mut failures = failures.into_inner().expect("lock");
    failures.sort_by_key(|f| f.seed);
    let list = |m: &BTreeMap<&'static str, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "governance_sim: {} case(s), {} operation(s), {} message(s) delivered in {:.1} s; \
         mode: {}\n  refusals: {}\n  send skips: {}\n  events: {}\n  known rule gaps \
         (cases): {}",
        total.cases,
        total.steps,
        total.delivered,
        started.elapsed().as_secs_f64(),
        mode.describe(),
        list(&total.refusals),
        list(&total.send_skips),
        list(&total.events),
        if total.gaps.is_empty() {
            "none".to_string()
        } else {
            total
                .gaps
                .iter()
                .map(|(k, (n, seed))| format!("{k}={n} (first seed {seed})"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
    if keep_going && !failures.is_empty() {
        let mut kinds: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        for f in &failures {
            // The first line, without ids and numbers: the kind of failure.
            let first = f.what.lines().next().unwrap_or("");
            let key = first
                .split_whitespace()
                .filter(|w| {
                    w.trim_end_matches(':').chars().all(char::is_alphabetic) || w.starts_with("inv")
                })
                .take(12)
                .collect::<Vec<_>>()
                .join(" ");
            let e = kinds.entry(key).or_insert((0, f.seed));
            e.0 += 1;
        }
        println!("failures: {} case(s)", failures.len());
        for (k, (n, seed)) in kinds {
            println!("  {n:6} first seed {seed:6}: {k}");
        }
    }
    if let Some(f) = failures.first() {
        for line in &f.trace {
            println!("  {line}");
        }
        panic!(
            "governance simulation failed: seed {} at {}:\n{}\nreplay with: \
             ORGSYNC_SIM_SEED={} cargo test -p orgsync-protocol --test governance_sim -- --nocapture",
            f.seed, f.at, f.what, f.seed
        );
    }
}
