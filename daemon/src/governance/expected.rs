//! The cap on `gov_expected`: the ids a partner's share announced whose
//! data has not arrived yet (one key each, kept for the share's received
//! report). Without a cap, a partner announcing millions of ids it never
//! sends fills the tree.
//!
//! Past `limits.max_expected_objects` ids waiting in one share, further
//! ids are not tracked: the announcement itself is still accepted (the
//! objects may come and apply as before), only the received report no
//! longer waits for them. The refusal is counted
//! (`orgsync_expected_refused_total`), logged and audited at most once a
//! minute per partner, and told to the partner.

use std::collections::hash_map::Entry;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use orgsync_protocol::model::{ObjectId, OrgId};
use orgsync_protocol::share::ShareId;

use super::{GovError, Governance};

/// How many ids one share has waiting, as counted here; recounted from
/// the tree at the cap (an id announced twice is counted twice), at most
/// once per [`RECOUNT_EVERY`].
#[derive(Debug)]
pub(crate) struct ExpectedCount {
    n: usize,
    counted: Instant,
}

const RECOUNT_EVERY: Duration = Duration::from_secs(1);

/// Notes `ids`, announced by `partner` under `share`, as expected, up to
/// the cap; the rest are refused (see the module documentation). Returns
/// how many were noted.
pub(super) fn expect_within_cap(
    gov: &Governance,
    partner: &OrgId,
    share: &ShareId,
    ids: &[ObjectId],
) -> Result<usize, GovError> {
    let max = gov.inner.config.limits.max_expected_objects;
    let now = Instant::now();
    let room = {
        let mut counts = gov
            .inner
            .expected_count
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let c = match counts.entry(*share) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => v.insert(ExpectedCount {
                n: gov.db().expected_iter(share).count(),
                counted: now,
            }),
        };
        if c.n.saturating_add(ids.len()) > max && now.duration_since(c.counted) >= RECOUNT_EVERY {
            c.n = gov.db().expected_iter(share).count();
            c.counted = now;
        }
        let room = max.saturating_sub(c.n).min(ids.len());
        c.n += room;
        room
    };
    gov.db().expect(share, &ids[..room])?;
    let refused = ids.len() - room;
    if refused > 0 {
        crate::metrics::add(&gov.inner.metrics.expected_refused, refused as u64);
        gov.over_limit(
            partner,
            "max_expected_objects",
            format!(
                "{refused} of {} object(s) announced under share {share} not tracked for the \
                 received report: {max} announced objects of this share already wait for their \
                 data (limits.max_expected_objects = {max}); the announcement itself is accepted",
                ids.len()
            ),
        );
    }
    Ok(room)
}

/// `n` ids of `share` arrived and were forgotten as expected.
pub(super) fn forget(gov: &Governance, share: &ShareId, n: usize) {
    if let Some(c) = gov
        .inner
        .expected_count
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_mut(share)
    {
        c.n = c.n.saturating_sub(n);
    }
}
