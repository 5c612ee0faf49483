//! The Incoming page: what partners shared with this organisation, waiting
//! for an admin's decision, and the decisions already taken.
//!
//! Each waiting record gets a status (Pending, Approved, Rejected), a local
//! flag to land in and a local record to link to (found with a plain GET
//! search, no script); Save applies the whole form, checked first, through
//! the same governance functions as `orgsync inbox approve/reject` and
//! `orgsync inbox policy` ([`crate::governance::inbox`]), with the signed-in
//! account as the actor. Viewers see the tables without any control; their
//! POSTs are refused by [`super::pages::admin_post`].

// Guards return the refusal page itself as the error (see pages.rs).
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use maud::{html, Markup};
use orgsync_protocol::model::{Object, ObjectId, OrgId};

use super::outgoing::{flags, Flag};
use super::pages::{
    admin_post, current, field, gov_status, internal, layout, no_gov, notice, see_other, urlencode,
    Authed, FormMap,
};
use super::WebState;
use crate::governance::db::Decision;
use crate::governance::inbox::{self, Action, InboxItem};
use crate::governance::Governance;

/// Most link candidates a search shows.
const MAX_CANDIDATES: usize = 50;

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/incoming", get(page).post(save))
        .route("/incoming/policy", axum::routing::post(policy))
}

/// Which records the page lists.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Show {
    Pending,
    Approved,
    Rejected,
}

/// The page's GET parameters.
struct Params {
    show: Show,
    /// Only records from partners marked as child accounts.
    children: bool,
    /// The link-to-record search text.
    q: String,
    /// Tick every row's bulk checkbox.
    select_all: bool,
}

impl Params {
    fn from_query(q: &HashMap<String, String>) -> Params {
        let get = |k: &str| q.get(k).map(|s| s.trim()).unwrap_or("");
        Params {
            show: match get("show") {
                "approved" => Show::Approved,
                "rejected" => Show::Rejected,
                _ => Show::Pending,
            },
            children: get("from") == "children",
            q: get("q").to_string(),
            select_all: get("select") == "all",
        }
    }

    /// This view's URL with `show`/`children` changed.
    fn href(&self, show: Show, children: bool) -> String {
        let s = match show {
            Show::Pending => "pending",
            Show::Approved => "approved",
            Show::Rejected => "rejected",
        };
        let mut u = format!("/incoming?show={s}");
        if children {
            u.push_str("&from=children");
        }
        if !self.q.is_empty() {
            u.push_str(&format!("&q={}", urlencode(&self.q)));
        }
        u
    }
}

/// A submitted form that failed its checks: its values (shown again) and
/// the errors by field name.
#[derive(Default)]
pub(super) struct Draft {
    pub(super) values: HashMap<String, String>,
    pub(super) errors: BTreeMap<String, String>,
}

impl Draft {
    pub(super) fn get(&self, k: &str) -> &str {
        self.values.get(k).map(|s| s.trim()).unwrap_or("")
    }
    pub(super) fn error_at(&self, name: &str) -> Markup {
        html! {
            @if let Some(msg) = self.errors.get(name) {
                span.error role="alert" id={"err-" (name)} { (msg) }
            }
        }
    }
    pub(super) fn described(&self, name: &str) -> Option<String> {
        self.errors
            .contains_key(name)
            .then(|| format!("err-{name}"))
    }
}

/// A one-line summary of an object's fields.
pub(super) fn summary(o: &Object) -> String {
    let j = crate::json::object_to_json(o);
    let mut parts = Vec::new();
    for section in ["fields", "custom"] {
        if let Some(m) = j.get(section).and_then(|v| v.as_object()) {
            for (k, v) in m {
                let v = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                parts.push(format!("{k}: {v}"));
            }
        }
    }
    let mut text = parts.join(", ");
    if text.chars().count() > 160 {
        text = text.chars().take(160).collect::<String>() + "…";
    }
    text
}

/// Live local objects whose summary contains `q` (any case), at most
/// [`MAX_CANDIDATES`], plus the objects named in `also` (a failed form's
/// choices, so that they stay selected).
fn candidates(g: &Governance, q: &str, also: &[ObjectId]) -> Result<Vec<Object>, Response> {
    let mut out = Vec::new();
    if !q.is_empty() {
        let needle = q.to_lowercase();
        let all = crate::governance::shares::all_objects(g)
            .map_err(|e| internal("cannot search the records", e))?;
        out.extend(
            all.into_iter()
                .filter(|o| summary(o).to_lowercase().contains(&needle))
                .take(MAX_CANDIDATES),
        );
    }
    for id in also {
        if out.iter().any(|o| o.id == *id) {
            continue;
        }
        if let Ok(Some(o)) = g.store().get(*id) {
            if !o.is_deleted() {
                out.push(o);
            }
        }
    }
    Ok(out)
}

async fn page(
    State(st): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let a = or_respond!(current(&st, &headers));
    let n = q.get("done").map(|d| (true, d.clone()));
    view(
        &st,
        &a,
        &Params::from_query(&q),
        n,
        &Draft::default(),
        StatusCode::OK,
    )
}

/// Partners marked as child accounts.
fn child_orgs(g: &Governance) -> Vec<OrgId> {
    g.all_settings()
        .into_iter()
        .filter(|(_, _, s)| s.child)
        .map(|(o, _, _)| o)
        .collect()
}

fn view(
    st: &WebState,
    a: &Authed,
    p: &Params,
    n: Option<(bool, String)>,
    draft: &Draft,
    status: StatusCode,
) -> Response {
    let Some(g) = st.gov.as_ref() else {
        return no_gov(a, "Incoming", "incoming");
    };
    let children = child_orgs(g);
    let wanted = |org: Option<&OrgId>| !p.children || org.is_some_and(|o| children.contains(o));
    let tabs = [
        (Show::Pending, "Pending"),
        (Show::Approved, "Approved"),
        (Show::Rejected, "Rejected"),
    ];
    let table = match p.show {
        Show::Pending => {
            let items = match inbox::list(g, None) {
                Ok(i) => i,
                Err(e) => return internal("cannot list the inbox", e),
            };
            let items: Vec<InboxItem> = items
                .into_iter()
                .filter(|i| wanted(Some(&i.partner)))
                .collect();
            let local_flags = or_respond!(flags(g));
            let chosen: Vec<ObjectId> = draft
                .values
                .iter()
                .filter(|(k, _)| k.starts_with("link-"))
                .filter_map(|(_, v)| v.trim().parse().ok())
                .collect();
            let found = or_respond!(candidates(g, &p.q, &chosen));
            pending_table(a, p, &items, &local_flags, &found, draft)
        }
        Show::Approved | Show::Rejected => {
            let all = match inbox::decided(g) {
                Ok(d) => d,
                Err(e) => return internal("cannot list the decisions", e),
            };
            let rows: Vec<_> = all
                .into_iter()
                .filter(|d| (d.decision == Decision::Rejected) == (p.show == Show::Rejected))
                .filter(|d| wanted(d.partner.as_ref()))
                .collect();
            html! {
                @if rows.is_empty() { p.muted { "No records here." } } @else {
                    table aria-label="Decided records" {
                        thead { tr { th { "From" } th { "Kind" } th { "Record" } th { "Decision" } } }
                        tbody {
                            @for d in &rows {
                                tr {
                                    td data-label="From" { (d.partner.map(|o| g.partner_name(&o)).unwrap_or_else(|| "unknown (erased)".into())) }
                                    td data-label="Kind" { (d.object.as_ref().map(|o| o.kind.as_str()).unwrap_or("")) }
                                    td data-label="Record" {
                                        @if let Some(o) = &d.object { (summary(o)) br; }
                                        span.muted.mono { (d.id) }
                                    }
                                    td data-label="Decision" {
                                        @match d.decision {
                                            Decision::Approved => "approved as a new record",
                                            Decision::Linked(l) => { "linked to local record " span.mono { (l) } },
                                            Decision::Rejected => "rejected (later updates are dropped too)",
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let body = html! {
        (notice(&n))
        p.muted { "Records partners shared with this organisation wait here until an admin approves them (kept as new records, optionally in a local flag), links them to an existing record (later updates land on it) or rejects them (dropped, now and later)." }
        nav.filters aria-label="Which records" {
            @for (s, label) in tabs {
                a href=(p.href(s, p.children)) aria-current=[(s == p.show).then_some("page")] { (label) }
            }
            @if p.children {
                a href=(p.href(p.show, false)) { "Show data from all partners" }
            } @else {
                a href=(p.href(p.show, true)) { "Show all child data" }
            }
        }
        @if p.children {
            p.muted { "Only records from partners marked as child accounts (" (children.len()) ")." }
        }
        (table)
        (policy_section(g, a))
    };
    (status, layout("Incoming", "incoming", Some(a), body)).into_response()
}

fn flag_select(name: &str, html_id: &str, chosen: &str, local: &[Flag], draft: &Draft) -> Markup {
    html! {
        select id=(html_id) name=(name) aria-describedby=[draft.described(name)] {
            option value="" selected[chosen.is_empty()] { "— no flag —" }
            @for f in local {
                @let v = f.id.to_string();
                option value=(v) selected[chosen == v] { (f.name) }
            }
        }
        (draft.error_at(name))
    }
}

fn pending_table(
    a: &Authed,
    p: &Params,
    items: &[InboxItem],
    local_flags: &[Flag],
    found: &[Object],
    draft: &Draft,
) -> Markup {
    let search = html! {
        form.filters method="get" action="/incoming" role="search" aria-label="Find local records to link to" {
            input type="hidden" name="show" value="pending";
            @if p.children { input type="hidden" name="from" value="children"; }
            div {
                label for="q" { "Find a local record to link to" }
                input type="text" id="q" name="q" value=(p.q) placeholder="name, email, any field";
            }
            div { button.secondary type="submit" { "Search" } }
        }
        @if !p.q.is_empty() {
            p.muted role="status" { (found.len()) " local record(s) match " strong { (p.q) } "; pick one in a row's “Link to record”." }
        }
    };
    if items.is_empty() {
        return html! { p.muted { "Nothing waiting." } };
    }
    if !a.admin() {
        return html! {
            table aria-label="Incoming records" {
                thead { tr { th { "From" } th { "Kind" } th { "Record" } th { "Status" } } }
                tbody {
                    @for item in items {
                        tr {
                            td data-label="From" { (item.partner_name) }
                            td data-label="Kind" { (item.kind.as_str()) }
                            td data-label="Record" { (summary(&item.object)) br; span.muted.mono { (item.id) } }
                            td data-label="Status" { "Pending" }
                        }
                    }
                }
            }
        };
    }
    let select_href = if p.select_all {
        p.href(Show::Pending, p.children)
    } else {
        format!("{}&select=all", p.href(Show::Pending, p.children))
    };
    html! {
        (search)
        form method="post" action="/incoming" {
            input type="hidden" name="csrf" value=(a.session.csrf);
            (draft.error_at("form"))
            table aria-label="Incoming records" {
                thead { tr { th { "Select" } th { "From" } th { "Kind" } th { "Record" } th { "Status" } th { "Local flag" } th { "Link to record" } } }
                tbody {
                    @for (i, item) in items.iter().enumerate() {
                        @let id = item.id.to_string();
                        @let (sname, fname, lname, pname) = (format!("status-{id}"), format!("flag-{id}"), format!("link-{id}"), format!("pick-{id}"));
                        @let status = match draft.get(&sname) { "" => "pending", s => s };
                        @let link = draft.get(&lname);
                        tr {
                            td data-label="Select" {
                                input type="checkbox" id={"pick-" (i)} name=(pname) value="yes"
                                    checked[p.select_all || draft.get(&pname) == "yes"];
                                label.sr-only for={"pick-" (i)} { "Select " (item.kind.as_str()) " " (i + 1) " for a bulk decision" }
                            }
                            td data-label="From" { (item.partner_name) }
                            td data-label="Kind" { (item.kind.as_str()) }
                            td data-label="Record" { (summary(&item.object)) br; span.muted.mono { (id) } }
                            td data-label="Status" {
                                label for={"status-" (i)} { "Status of " (item.kind.as_str()) " " (i + 1) }
                                select id={"status-" (i)} name=(sname) aria-describedby=[draft.described(&sname)] {
                                    @for (v, label) in [("pending", "Pending"), ("approved", "Approved"), ("rejected", "Rejected")] {
                                        option value=(v) selected[status == v] { (label) }
                                    }
                                }
                                (draft.error_at(&sname))
                            }
                            td data-label="Local flag" {
                                label for={"flag-" (i)} { "Land in flag" }
                                (flag_select(&fname, &format!("flag-{i}"), draft.get(&fname), local_flags, draft))
                            }
                            td data-label="Link to record" {
                                label for={"link-" (i)} { "Link to record" }
                                select id={"link-" (i)} name=(lname) aria-describedby=[draft.described(&lname)] {
                                    option value="" selected[link.is_empty()] { "— keep as a new record —" }
                                    @for o in found.iter().filter(|o| o.kind == item.kind) {
                                        @let v = o.id.to_string();
                                        option value=(v) selected[link == v] { (summary(o).chars().take(60).collect::<String>()) }
                                    }
                                }
                                (draft.error_at(&lname))
                            }
                        }
                    }
                }
            }
            p { button type="submit" name="op" value="save" { "Save" } }
            fieldset {
                legend { "Bulk decision on the selected records" }
                p { a href=(select_href) { @if p.select_all { "Clear the selection" } @else { "Select all" } } }
                label for="bulk-flag" { "Approve into flag" }
                (flag_select("bulk_flag", "bulk-flag", draft.get("bulk_flag"), local_flags, draft))
                p {
                    button type="submit" name="op" value="approve" { "Approve selected" }
                    " "
                    button.secondary type="submit" name="op" value="reject" { "Reject selected" }
                }
            }
        }
    }
}

fn policy_section(g: &Governance, a: &Authed) -> Markup {
    let partners = g.all_settings();
    html! {
        h2 id="policy" { "Inbox policy per partner" }
        p.muted { "Auto-approve keeps everything a partner sends as new records without asking (what already waits from it is approved at once); manual holds it here." }
        @if partners.is_empty() { p.muted { "No partners yet." } } @else {
            table aria-labelledby="policy" {
                thead { tr { th { "Partner" } th { "Child account" } th { "Policy" } } }
                tbody {
                    @for (i, (org, name, s)) in partners.iter().enumerate() {
                        tr {
                            td data-label="Partner" { (name) }
                            td data-label="Child account" { @if s.child { "yes" } @else { "no" } }
                            td data-label="Policy" {
                                @if a.admin() {
                                    form.filters method="post" action="/incoming/policy" {
                                        input type="hidden" name="csrf" value=(a.session.csrf);
                                        input type="hidden" name="partner" value=(org.account_number());
                                        div {
                                            label for={"policy-" (i)} { "Inbox policy for " (name) }
                                            select id={"policy-" (i)} name="mode" {
                                                option value="manual" selected[!s.auto_approve] { "Manual: hold for an admin" }
                                                option value="auto" selected[s.auto_approve] { "Auto-approve" }
                                            }
                                        }
                                        div { button.secondary type="submit" aria-label={"Set the inbox policy for " (name)} { "Set" } }
                                    }
                                } @else if s.auto_approve { "auto-approve" } @else { "manual" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What a checked form asks for.
#[derive(Default)]
struct Plan {
    reject: Vec<ObjectId>,
    /// Approvals as new records, grouped by the flag they land in.
    approve: BTreeMap<Option<ObjectId>, Vec<ObjectId>>,
    link: Vec<(ObjectId, ObjectId)>,
}

/// A local flag chosen in `name`, checked to exist; `Err` is the error
/// for that field.
fn chosen_flag(
    form: &HashMap<String, String>,
    name: &str,
    local: &[Flag],
) -> Result<Option<ObjectId>, String> {
    let v = field(form, name);
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<ObjectId>() {
        Ok(id) if local.iter().any(|f| f.id == id) => Ok(Some(id)),
        _ => Err(format!("{v:?} is not one of this organisation's flags.")),
    }
}

/// Checks the whole form against the inbox before anything is decided.
fn plan(
    g: &Governance,
    form: &HashMap<String, String>,
    items: &[InboxItem],
    local: &[Flag],
) -> Result<Plan, BTreeMap<String, String>> {
    let mut errors = BTreeMap::new();
    let mut plan = Plan::default();
    let waiting: HashMap<ObjectId, &InboxItem> = items.iter().map(|i| (i.id, i)).collect();
    let op = field(form, "op");
    let op = if op.is_empty() { "save" } else { op };
    let lookup =
        |k: &str| -> Option<ObjectId> { k.parse().ok().filter(|id| waiting.contains_key(id)) };
    match op {
        "save" => {
            for (k, v) in form {
                let Some(raw) = k.strip_prefix("status-") else {
                    continue;
                };
                let Some(id) = lookup(raw) else {
                    errors.insert("form".into(), format!("Record {raw} is no longer waiting (decided elsewhere?); nothing was saved. Reload the page."));
                    continue;
                };
                let (fname, lname) = (format!("flag-{id}"), format!("link-{id}"));
                let flag = chosen_flag(form, &fname, local)
                    .map_err(|e| errors.insert(fname.clone(), e))
                    .ok()
                    .flatten();
                let link_raw = field(form, &lname);
                let link = if link_raw.is_empty() {
                    None
                } else {
                    match link_raw
                        .parse::<ObjectId>()
                        .ok()
                        .and_then(|l| g.store().get(l).ok().flatten())
                        .filter(|o| !o.is_deleted())
                    {
                        Some(o) if o.kind == waiting[&id].kind => Some(o.id),
                        Some(o) => {
                            errors.insert(lname.clone(), format!("A {} cannot be linked to a {}: pick a record of the same kind.", waiting[&id].kind.as_str(), o.kind.as_str()));
                            None
                        }
                        None => {
                            errors.insert(
                                lname.clone(),
                                format!("No local record {link_raw:?} to link to."),
                            );
                            None
                        }
                    }
                };
                match v.trim() {
                    "pending" | "rejected" if !field(form, &fname).is_empty() => {
                        errors.insert(
                            fname,
                            "Set the status to Approved to land the record in a flag.".into(),
                        );
                    }
                    "pending" | "rejected" if !link_raw.is_empty() => {
                        errors.insert(
                            lname,
                            "Set the status to Approved to link the record.".into(),
                        );
                    }
                    "pending" => {}
                    "rejected" => plan.reject.push(id),
                    "approved" => match (link, flag) {
                        (Some(_), Some(_)) => {
                            errors.insert(fname, "A linked record keeps its own flags: choose a flag or a record to link, not both.".into());
                        }
                        (Some(l), None) => plan.link.push((id, l)),
                        (None, f) => plan.approve.entry(f).or_default().push(id),
                    },
                    other => {
                        errors.insert(
                            k.clone(),
                            format!(
                                "{other:?} is not a status: choose Pending, Approved or Rejected."
                            ),
                        );
                    }
                }
            }
        }
        "approve" | "reject" => {
            let mut picked = Vec::new();
            for (k, v) in form {
                let Some(raw) = k.strip_prefix("pick-") else {
                    continue;
                };
                if v != "yes" {
                    continue;
                }
                match lookup(raw) {
                    Some(id) => picked.push(id),
                    None => {
                        errors.insert("form".into(), format!("Record {raw} is no longer waiting (decided elsewhere?); nothing was saved. Reload the page."));
                    }
                }
            }
            if picked.is_empty() && errors.is_empty() {
                errors.insert(
                    "form".into(),
                    "Tick at least one record (or use Select all) for a bulk decision.".into(),
                );
            }
            if op == "reject" {
                plan.reject = picked;
            } else {
                match chosen_flag(form, "bulk_flag", local) {
                    Ok(f) => {
                        plan.approve.insert(f, picked);
                    }
                    Err(e) => {
                        errors.insert("bulk_flag".into(), e);
                    }
                }
            }
        }
        other => {
            errors.insert(
                "form".into(),
                format!("{other:?} is not something this form does."),
            );
        }
    }
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}

async fn save(State(st): State<WebState>, headers: HeaderMap, Form(form): FormMap) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "deciding incoming records",
        ("Incoming", "incoming"),
    ));
    let items = match inbox::list(g, None) {
        Ok(i) => i,
        Err(e) => return internal("cannot list the inbox", e),
    };
    let local = or_respond!(flags(g));
    let again = |errors: BTreeMap<String, String>, msg: String, status: StatusCode| {
        let draft = Draft {
            values: form.clone(),
            errors,
        };
        view(
            &st,
            &a,
            &Params::from_query(&HashMap::new()),
            Some((false, msg)),
            &draft,
            status,
        )
    };
    let plan = match plan(g, &form, &items, &local) {
        Ok(p) => p,
        Err(errors) => {
            let n = errors.len();
            return again(
                errors,
                format!("Nothing was saved: {n} problem(s), shown next to the fields."),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let mut done: Vec<String> = Vec::new();
    let mut steps: Vec<(Vec<ObjectId>, Action, Option<ObjectId>, &str)> = Vec::new();
    for (flag, ids) in plan.approve {
        steps.push((ids, Action::AsNew, flag, "approved"));
    }
    for (id, l) in plan.link {
        steps.push((vec![id], Action::Link(l), None, "linked"));
    }
    steps.push((plan.reject, Action::Reject, None, "rejected"));
    for (ids, action, flag, word) in steps {
        if ids.is_empty() {
            continue;
        }
        match inbox::decide(g, &ids, action, flag, a.name()).await {
            Ok(n) => done.push(format!("{n} {word}")),
            Err(e) => {
                tracing::warn!(who = %a.name(), error = %e, "web console: inbox decision refused");
                let so_far = if done.is_empty() {
                    "nothing".into()
                } else {
                    done.join(", ")
                };
                return again(
                    BTreeMap::new(),
                    format!("Saved so far: {so_far}. Not {word}: {e}"),
                    gov_status(&e),
                );
            }
        }
    }
    let msg = if done.is_empty() {
        "Nothing to save: every record is still Pending.".to_string()
    } else {
        format!("Saved: {}.", done.join(", "))
    };
    see_other(&format!("/incoming?done={}", urlencode(&msg)), None)
}

async fn policy(State(st): State<WebState>, headers: HeaderMap, Form(form): FormMap) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "setting a partner's inbox policy",
        ("Incoming", "incoming"),
    ));
    let back = |msg: String, status: StatusCode| {
        view(
            &st,
            &a,
            &Params::from_query(&HashMap::new()),
            Some((false, msg)),
            &Draft::default(),
            status,
        )
    };
    let partner = match g.resolve_partner(field(&form, "partner")) {
        Ok(p) => p,
        Err(e) => return back(format!("Policy not set: {e}"), gov_status(&e)),
    };
    let auto = match field(&form, "mode") {
        "auto" => true,
        "manual" => false,
        other => {
            return back(
                format!("Policy not set: {other:?} is not a policy (Manual or Auto-approve)."),
                StatusCode::BAD_REQUEST,
            )
        }
    };
    match inbox::set_auto(g, &partner, auto, a.name()).await {
        Ok(()) => {
            let msg = format!(
                "Inbox policy for {}: {}.",
                g.partner_name(&partner),
                if auto { "auto-approve" } else { "manual" }
            );
            see_other(&format!("/incoming?done={}", urlencode(&msg)), None)
        }
        Err(e) => back(format!("Policy not set: {e}"), gov_status(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_default_to_pending_and_keep_the_search() {
        let mut q = HashMap::new();
        q.insert("show".to_string(), "bogus".to_string());
        q.insert("q".to_string(), " Robert smith ".to_string());
        let p = Params::from_query(&q);
        assert!(p.show == Show::Pending && !p.children && !p.select_all);
        assert_eq!(
            p.href(Show::Rejected, true),
            "/incoming?show=rejected&from=children&q=Robert%20smith"
        );
    }
}
