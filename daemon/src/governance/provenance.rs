//! Owner and provenance of every object held here, and the refusals of the
//! authority rules ([`orgsync_protocol::authority`]), recorded once.
//!
//! Our own objects have no record: an object in the store without one is
//! ours. A copy received from a partner (under a share, or from a mirror)
//! has a [`ProvRecord`] written when its share announced it (or when a
//! mirror first sent it), and never replaced by another source.

use orgsync_protocol::authority::{self, PartnerView, Provenance, Refusal};
use orgsync_protocol::model::{ObjectId, OrgId};

use super::db::{LinkRecord, ProvRecord};
use super::{GovError, Governance, DAEMON};

impl Governance {
    /// This instance's organisation.
    pub fn us(&self) -> OrgId {
        self.inner.us
    }

    /// The provenance record of a copy we did not create, if any.
    pub(crate) fn prov_record(&self, id: &ObjectId) -> Result<Option<ProvRecord>, GovError> {
        self.db().get(&self.db().prov, "provenance", &id.0)
    }

    /// The owner and source of object `id` as held here: recorded for
    /// received copies, ours for anything else in the store, `None` when
    /// we do not hold it (not even as an announced copy).
    pub fn provenance(&self, id: &ObjectId) -> Result<Option<Provenance>, GovError> {
        let rec = self.prov_record(id)?;
        self.provenance_given(id, rec.as_ref())
    }

    /// [`Governance::provenance`] when `rec`, the object's provenance
    /// record, was already read (saves reading it again).
    pub(crate) fn provenance_given(
        &self,
        id: &ObjectId,
        rec: Option<&ProvRecord>,
    ) -> Result<Option<Provenance>, GovError> {
        if let Some(r) = rec {
            return Ok(Some(r.prov));
        }
        // Only whether it is stored matters: a lookup, not a decode.
        Ok(self
            .store()
            .contains(*id)?
            .then(|| Provenance::own(self.inner.us)))
    }

    /// [`Governance::provenance`] of an object known to be in the store
    /// (saves reading it again): recorded, or ours.
    pub(crate) fn provenance_of(&self, id: &ObjectId) -> Result<Provenance, GovError> {
        Ok(match self.prov_record(id)? {
            Some(r) => r.prov,
            None => Provenance::own(self.inner.us),
        })
    }

    /// Records where a copy came from (checked by the caller).
    pub(crate) fn set_provenance(&self, id: &ObjectId, rec: &ProvRecord) -> Result<(), GovError> {
        self.note_share_copies(std::slice::from_ref(rec));
        self.db().put(&self.db().prov, "provenance", &id.0, rec)
    }

    /// Remembers that we now hold copies received under a share, if any of
    /// `recs` is one (mirrors then stop taking the send-everything path).
    fn note_share_copies<'a>(&self, recs: impl IntoIterator<Item = &'a ProvRecord>) {
        if recs
            .into_iter()
            .any(|r| matches!(r.prov.source, authority::Source::Share { .. }))
        {
            self.inner
                .holds_share_copies
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Records where several copies came from (checked by the caller), in
    /// one batch: an announcement names up to 4,096.
    pub(crate) fn set_provenances(&self, recs: &[(ObjectId, ProvRecord)]) -> Result<(), GovError> {
        self.note_share_copies(recs.iter().map(|(_, r)| r));
        let items: Vec<([u8; 16], &ProvRecord)> = recs.iter().map(|(id, r)| (id.0, r)).collect();
        self.db().put_many(&self.db().prov, "provenance", &items)
    }

    /// Forgets a copy's provenance (its copy was erased).
    pub(crate) fn forget_provenance(&self, id: &ObjectId) -> Result<(), GovError> {
        self.db().remove(&self.db().prov, &id.0)
    }

    /// Partners' copies linked into our object `local`.
    pub(crate) fn links(&self, local: &ObjectId) -> Result<Vec<LinkRecord>, GovError> {
        Ok(self
            .db()
            .get(&self.db().link, "links", &local.0)?
            .unwrap_or_default())
    }

    pub(crate) fn set_links(&self, local: &ObjectId, links: &[LinkRecord]) -> Result<(), GovError> {
        if links.is_empty() {
            self.db().remove(&self.db().link, &local.0)
        } else {
            self.db()
                .put(&self.db().link, "links", &local.0, &links.to_vec())
        }
    }

    /// What we know of `partner` for the send rules.
    pub(crate) fn view(&self, partner: &OrgId) -> PartnerView {
        let s = self.settings_of(partner);
        PartnerView {
            org: *partner,
            mirror: s.is_mirror(),
            subcontractor: s.subcontractor,
        }
    }

    /// Whether both sides made `partner` and us each other's mirror.
    pub(crate) fn is_mirror(&self, partner: &OrgId) -> bool {
        self.settings_of(partner).is_mirror()
    }

    /// Whether object `id` (provenance `prov`) may go to `partner` under a
    /// share of access `onward`.
    pub(crate) fn check_send(
        &self,
        id: ObjectId,
        prov: &Provenance,
        partner: &OrgId,
        onward: orgsync_protocol::share::AccessType,
    ) -> Result<(), Refusal> {
        let links: Vec<Provenance> = if prov.source == authority::Source::Own {
            // A read error counts as "no links": the copy's own rules still hold.
            self.links(&id)
                .unwrap_or_default()
                .iter()
                .map(|l| l.prov)
                .collect()
        } else {
            Vec::new()
        };
        authority::check_send(id, prov, &links, &self.view(partner), onward)
    }

    /// Refuses a local edit of a partner's copy (API, drop folder): a
    /// received copy is a replica; the message says how to keep one's own
    /// version. Our own objects, new ones and a mirror's pass.
    pub fn check_local_edit(&self, id: &ObjectId) -> Result<(), GovError> {
        let Some(rec) = self.prov_record(id)? else {
            return Ok(());
        };
        let kind = self
            .store()
            .get(*id)?
            .map(|o| o.kind.to_string())
            .unwrap_or_else(|| "object".into());
        authority::check_local_edit(&rec.prov, &kind, &self.partner_name(&rec.prov.owner))
            .map_err(|e| GovError::Refused(e.to_string()))
    }

    /// Records a refusal of something `partner` sent: audit entry with the
    /// reason, a warning in the log and the metric. Nothing stored changes.
    pub(crate) fn refused(&self, partner: &OrgId, what: &str, refusal: &Refusal) {
        tracing::warn!(partner = %self.partner_name(partner), what, rule = refusal.code(),
            reason = %refusal, "refused by the authority rules");
        let counter = if what == "change" {
            &self.inner.metrics.changes_refused
        } else {
            &self.inner.metrics.governance_refused
        };
        crate::metrics::add(counter, 1);
        if let Err(e) = self.audit(
            DAEMON,
            "authority.refused",
            Some(partner),
            None,
            format!("{what}: {refusal}"),
        ) {
            tracing::error!(error = %e, "cannot record a refusal in the audit log");
        }
    }
}
