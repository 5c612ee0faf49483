//! The governance part of the Partners page: which partners are children,
//! subcontractors and mirrors, and each partner's custom-field map.
//!
//! Changes go through the functions `orgsync partner set` reaches over the
//! API (`Governance::update_settings`, `governance::mirror::set`), with the
//! console account as the actor in the audit log; viewers see the lists
//! without any control, and their POSTs are refused 403.

// Guards return the refusal page itself as the error (see pages.rs).
#![allow(clippy::result_large_err)]

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::{Form, Router};
use maud::{html, Markup};
use orgsync_protocol::model::OrgId;

use super::pages::{admin_post, field, gov_status, see_other, urlencode, Authed, FormMap};
use super::partners::partners_view;
use super::WebState;
use crate::governance::db::PartnerSettings;
use crate::governance::{mirror, GovError};

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/partners/settings", post(save_roles))
        .route("/partners/map/add", post(map_add))
        .route("/partners/map/remove", post(map_remove))
}

fn names(all: &[(OrgId, String, PartnerSettings)], f: impl Fn(&PartnerSettings) -> bool) -> String {
    let v: Vec<&str> = all
        .iter()
        .filter(|(_, _, s)| f(s))
        .map(|(_, n, _)| n.as_str())
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn err_at(err: Option<&(String, String)>, id: &str) -> Markup {
    html! {
        @if let Some((at, msg)) = err {
            @if at == id { p.error role="alert" id={"err-" (id)} { (msg) } }
        }
    }
}

fn described(err: Option<&(String, String)>, id: &str) -> Option<String> {
    err.filter(|(at, _)| at == id).map(|_| format!("err-{id}"))
}

/// The settings section of the Partners page (empty without governance).
pub(super) fn section(st: &WebState, a: &Authed, err: Option<&(String, String)>) -> Markup {
    let Some(g) = st.gov.as_ref() else {
        return html! {};
    };
    let revoked: Vec<OrgId> = st
        .partners
        .partners()
        .iter()
        .filter(|p| p.state == "revoked")
        .map(|p| p.org)
        .collect();
    let all: Vec<_> = g
        .all_settings()
        .into_iter()
        .filter(|(o, _, _)| !revoked.contains(o))
        .collect();
    html! {
        h2 id="roles" { "Children, subcontractors, mirrors and field maps" }
        dl {
            dt { "Children" } dd id="children" { (names(&all, |s| s.child)) }
            dt { "Subcontractors" } dd id="subcontractors" { (names(&all, |s| s.subcontractor)) }
            dt { "Mirrors" } dd id="mirrors" { (names(&all, |s| s.mirror || s.peer_mirror)) }
        }
        p.muted { "A child account is one of your own organisation's accounts; data re-shared by a subcontractor may go to it; a mirror is another copy of your organisation (both sides must set it) and each side may edit the other's records. A field map renames a partner's custom field on records you link." }
        @for (org, name, s) in &all {
            @let acct = org.account_number();
            section aria-labelledby={"set-" (acct)} {
                h3 id={"set-" (acct)} { (name) }
                @if a.admin() {
                    form method="post" action="/partners/settings" {
                        input type="hidden" name="csrf" value=(a.session.csrf);
                        input type="hidden" name="partner" value=(acct);
                        @for (key, label, on) in [("child", "Child account", s.child), ("subcontractor", "Subcontractor", s.subcontractor), ("mirror", "Mirror of this organisation", s.mirror)] {
                            p.check {
                                input type="checkbox" id={(key) "-" (acct)} name=(key) value="yes" checked[on];
                                " "
                                label for={(key) "-" (acct)} { (label) }
                            }
                        }
                        p.muted { "Mirror: " (s.mirror_state()) }
                        p { button type="submit" aria-label={"Save roles of " (name)} { "Save roles" } }
                    }
                } @else {
                    p { "Child: " (if s.child { "yes" } else { "no" }) ", subcontractor: " (if s.subcontractor { "yes" } else { "no" }) ", mirror: " (s.mirror_state()) }
                }
                @if s.field_map.is_empty() { p.muted { "No field map." } } @else {
                    table aria-label={"Field map of " (name)} {
                        thead { tr { th { "Their custom field" } th { "Our custom field" } @if a.admin() { th { "Actions" } } } }
                        tbody {
                            @for (from, to) in &s.field_map {
                                tr {
                                    td data-label="Their custom field" { span.mono { "custom." (from) } }
                                    td data-label="Our custom field" { span.mono { "custom." (to) } }
                                    @if a.admin() {
                                        td data-label="Actions" {
                                            form.inline method="post" action="/partners/map/remove" {
                                                input type="hidden" name="csrf" value=(a.session.csrf);
                                                input type="hidden" name="partner" value=(acct);
                                                input type="hidden" name="theirs" value=(from);
                                                button.secondary type="submit" aria-label={"Remove the map of custom." (from) " for " (name)} { "Remove" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if a.admin() {
                    @let (tid, oid) = (format!("theirs-{acct}"), format!("ours-{acct}"));
                    form.filters method="post" action="/partners/map/add" {
                        input type="hidden" name="csrf" value=(a.session.csrf);
                        input type="hidden" name="partner" value=(acct);
                        div {
                            label for=(tid) { "Their custom field" }
                            (err_at(err, &tid))
                            input type="text" id=(tid) name="theirs" required aria-describedby=[described(err, &tid)];
                        }
                        div {
                            label for=(oid) { "Our custom field" }
                            (err_at(err, &oid))
                            input type="text" id=(oid) name="ours" required aria-describedby=[described(err, &oid)];
                        }
                        div { button type="submit" aria-label={"Add a field map for " (name)} { "Add map" } }
                    }
                }
            }
        }
    }
}

fn refused(st: &WebState, a: &Authed, what: &str, e: &GovError) -> Response {
    tracing::warn!(who = %a.name(), error = %e, "web console: partner settings refused");
    partners_view(
        st,
        a,
        Some((false, format!("{what}: {e}"))),
        None,
        gov_status(e),
    )
}

/// Back to the Partners page with `msg` shown as done.
pub(super) fn done(msg: &str) -> Response {
    see_other(&format!("/partners?done={}", urlencode(msg)), None)
}

async fn save_roles(
    State(st): State<WebState>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "changing partner roles",
        ("Partners", "partners"),
    ));
    let p = match g.resolve_partner(field(&form, "partner")) {
        Ok(p) => p,
        Err(e) => return refused(&st, &a, "Not saved", &e),
    };
    let want = |k: &str| field(&form, k) == "yes";
    let old = g.settings_of(&p);
    let (child, sub, mir) = (want("child"), want("subcontractor"), want("mirror"));
    let mut what = Vec::new();
    if child != old.child {
        what.push(format!("child={child}"));
    }
    if sub != old.subcontractor {
        what.push(format!("subcontractor={sub}"));
    }
    if !what.is_empty() {
        if let Err(e) = g
            .update_settings(&p, a.name(), &what.join(", "), |s| {
                s.child = child;
                s.subcontractor = sub;
            })
            .await
        {
            return refused(&st, &a, "Not saved", &e);
        }
    }
    if mir != old.mirror {
        if let Err(e) = mirror::set(g, &p, mir, a.name()).await {
            return refused(&st, &a, "Mirror not changed", &e);
        }
        what.push(format!("mirror={mir}"));
    }
    let name = g.partner_name(&p);
    if what.is_empty() {
        done(&format!("Nothing changed for {name}."))
    } else {
        done(&format!("Saved for {name}: {}.", what.join(", ")))
    }
}

/// Checks a custom field name as records' custom fields are checked.
fn custom_name(v: &str) -> Result<String, String> {
    let v = v.trim().strip_prefix("custom.").unwrap_or(v.trim());
    crate::json::check_custom_name(v).map_err(|e| e.message)?;
    Ok(v.to_string())
}

async fn map_add(State(st): State<WebState>, headers: HeaderMap, Form(form): FormMap) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "adding a field map",
        ("Partners", "partners"),
    ));
    let p = match g.resolve_partner(field(&form, "partner")) {
        Ok(p) => p,
        Err(e) => return refused(&st, &a, "Not added", &e),
    };
    let acct = p.account_number();
    let mut checked = Vec::new();
    for (k, id) in [
        ("theirs", format!("theirs-{acct}")),
        ("ours", format!("ours-{acct}")),
    ] {
        match custom_name(field(&form, k)) {
            Ok(v) => checked.push(v),
            Err(msg) => {
                return partners_view(
                    &st,
                    &a,
                    Some((false, "Field map not added; see the field below.".into())),
                    Some((id, msg)),
                    StatusCode::BAD_REQUEST,
                )
            }
        }
    }
    let (from, to) = (checked[0].clone(), checked[1].clone());
    let what = format!("custom.{from} -> custom.{to}");
    match g
        .update_settings(&p, a.name(), &what, |s| {
            s.field_map.insert(from.clone(), to.clone());
        })
        .await
    {
        Ok(_) => done(&format!(
            "Field map added for {}: {what}.",
            g.partner_name(&p)
        )),
        Err(e) => refused(&st, &a, "Not added", &e),
    }
}

async fn map_remove(
    State(st): State<WebState>,
    headers: HeaderMap,
    Form(form): FormMap,
) -> Response {
    let (a, g) = or_respond!(admin_post(
        &st,
        &headers,
        &form,
        "removing a field map",
        ("Partners", "partners"),
    ));
    let p = match g.resolve_partner(field(&form, "partner")) {
        Ok(p) => p,
        Err(e) => return refused(&st, &a, "Not removed", &e),
    };
    let from = field(&form, "theirs").to_string();
    if !g.settings_of(&p).field_map.contains_key(&from) {
        let e = GovError::NotFound(format!("no field map for custom.{from}"));
        return refused(&st, &a, "Not removed", &e);
    }
    let what = format!("custom.{from} map removed");
    match g
        .update_settings(&p, a.name(), &what, |s| {
            s.field_map.remove(&from);
        })
        .await
    {
        Ok(_) => done(&format!(
            "Field map of custom.{from} removed for {}.",
            g.partner_name(&p)
        )),
        Err(e) => refused(&st, &a, "Not removed", &e),
    }
}
