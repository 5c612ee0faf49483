//! The Export page: download the data partners gave this organisation as
//! CSV, one file per kind or a zip of them all, written by the same code
//! as `orgsync export --format csv` ([`crate::export`]: same columns, every
//! cell quoted, formula-like text neutralised).
//!
//! A download is a POST carrying the session's CSRF token (a link on
//! another site cannot trigger it); viewers may download (they see
//! everything). Each download is recorded in the audit log under the
//! signed-in account, one `export.download` entry per partner whose data it
//! holds, with the file name and the number of records.

// Guards return the refusal page itself as the error (see pages.rs).
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::html;
use orgsync_protocol::model::{Kind, OrgId};
use serde_json::Value as Json;

use super::outgoing::Draft;
use super::pages::{authorize_post, field, internal, layout, no_gov, signed_in, Authed, FormMap};
use super::WebState;
use crate::export::{by_kind, received, write_csv};
use crate::governance::Governance;

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/export", get(page))
        .route("/export/download", post(download))
}

/// The partner filter of a form or query: `None` for every partner.
fn partner_of(g: &Governance, v: &str) -> Result<Option<OrgId>, String> {
    if v.is_empty() || v == "all" {
        return Ok(None);
    }
    g.resolve_partner(v).map(Some).map_err(|e| format!("{e}."))
}

/// Received data, per kind, as JSON objects, with the partner each came from.
struct Data {
    objects: Vec<Json>,
    from: Vec<OrgId>,
}

fn load(g: &Governance, partner: Option<OrgId>) -> Result<Data, crate::governance::GovError> {
    let list = received(g, partner, None)?;
    Ok(Data {
        objects: list
            .iter()
            .map(|r| crate::json::object_to_json(&r.object))
            .collect(),
        from: list.iter().map(|r| r.from).collect(),
    })
}

async fn page(
    State(st): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (a, g) = or_respond!(signed_in(&st, &headers, ("Export", "export")));
    let mut draft = Draft {
        values: q.clone(),
        error: None,
    };
    let partner = match partner_of(g, field(&q, "partner")) {
        Ok(p) => p,
        Err(e) => {
            draft.error = Some(("partner", format!("{e} Showing every partner.")));
            None
        }
    };
    view(&st, g, &a, partner, draft)
}

fn view(
    st: &WebState,
    g: &Governance,
    a: &Authed,
    partner: Option<OrgId>,
    draft: Draft,
) -> Response {
    let data = match load(g, partner) {
        Ok(d) => d,
        Err(e) => return internal("cannot read the received data", e),
    };
    // Counts per kind and partner, for the table.
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (o, from) in data.objects.iter().zip(&data.from) {
        let kind = o["kind"].as_str().unwrap_or("unknown").to_string();
        *counts
            .entry(kind)
            .or_default()
            .entry(g.partner_name(from))
            .or_default() += 1;
    }
    let partners: Vec<(String, String)> = st
        .partners
        .partners()
        .into_iter()
        .map(|p| (p.name, p.org.account_number()))
        .collect();
    let chosen = partner.map(|p| p.account_number()).unwrap_or_default();
    let status = if draft.error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let hidden = html! {
        input type="hidden" name="csrf" value=(a.session.csrf);
        input type="hidden" name="partner" value=(if chosen.is_empty() { "all" } else { chosen.as_str() });
    };
    let body = html! {
        p.muted { "Data partners shared with this organisation, as CSV: one file per kind (id, every field, custom fields as custom.NAME, flags), every cell quoted, and text starting with = + - @ prefixed with ' so a spreadsheet shows it instead of running it. Each download is recorded in the audit log under your name." }
        form.filters method="get" action="/export" {
            div {
                label for="partner" { "Received from" }
                select id="partner" name="partner" {
                    option value="all" selected[chosen.is_empty()] { "Every partner" }
                    @for (name, acct) in &partners { option value=(acct) selected[chosen == *acct] { (name) } }
                }
                (draft.error_at("partner"))
            }
            div { button.secondary type="submit" { "Show" } }
        }
        h2 id="files" { "Files" }
        @if counts.is_empty() {
            p.muted { "Nothing received to export." }
        } @else {
            table aria-labelledby="files" {
                thead { tr { th { "File" } th { "Records" } th { "From" } th { "Download" } } }
                tbody {
                    @for (kind, per) in &counts {
                        tr {
                            td data-label="File" { span.mono { (kind) ".csv" } }
                            td data-label="Records" { (per.values().sum::<usize>()) }
                            td data-label="From" { @for (i, (name, n)) in per.iter().enumerate() { @if i > 0 { ", " } (name) " (" (n) ")" } }
                            td data-label="Download" {
                                form method="post" action="/export/download" {
                                    (hidden)
                                    input type="hidden" name="kind" value=(kind);
                                    button type="submit" aria-label={"Download " (kind) ".csv"} { "Download CSV" }
                                }
                            }
                        }
                    }
                }
            }
            form method="post" action="/export/download" {
                (hidden)
                input type="hidden" name="kind" value="all";
                p { button type="submit" { "Download all as zip" } }
            }
        }
        (draft.error_at("kind"))
    };
    (status, layout("Export", "export", Some(a), body)).into_response()
}

/// An attachment response.
fn attachment(name: &str, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// One kind's CSV.
fn csv_bytes(list: &[&Json]) -> Result<Vec<u8>, csv::Error> {
    let mut out = Vec::new();
    write_csv(&mut out, list)?;
    Ok(out)
}

/// Every kind's CSV in one zip (deflated).
fn zip_bytes(kinds: &BTreeMap<String, Vec<&Json>>) -> Result<Vec<u8>, String> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o600);
    for (kind, list) in kinds {
        let csv = csv_bytes(list).map_err(|e| e.to_string())?;
        z.start_file(format!("{kind}.csv"), opts)
            .map_err(|e| e.to_string())?;
        z.write_all(&csv).map_err(|e| e.to_string())?;
    }
    z.finish()
        .map(|c| c.into_inner())
        .map_err(|e| e.to_string())
}

async fn download(State(st): State<WebState>, headers: HeaderMap, Form(form): FormMap) -> Response {
    // Reading only: viewers may download too.
    let a = or_respond!(authorize_post(
        &st,
        &headers,
        &form,
        false,
        "downloading an export"
    ));
    let Some(g) = st.gov.as_ref() else {
        return no_gov(&a, "Export", "export");
    };
    let redo = |at: &'static str, msg: String, partner: Option<OrgId>| {
        tracing::warn!(who = %a.name(), field = at, reason = %msg, "web console: export refused");
        let mut r = view(&st, g, &a, partner, Draft::refused(&form, at, msg));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        r
    };
    let partner = match partner_of(g, field(&form, "partner")) {
        Ok(p) => p,
        Err(e) => return redo("partner", e, None),
    };
    let kind = field(&form, "kind");
    if kind != "all" && kind.parse::<Kind>().is_err() {
        return redo(
            "kind",
            format!("{kind:?} is not a kind of record (contact, organization, transaction, resume, flag) or all."),
            partner,
        );
    }
    let data = match load(g, partner) {
        Ok(d) => d,
        Err(e) => return internal("cannot read the received data", e),
    };
    let mut kinds = by_kind(&data.objects);
    if kind != "all" {
        kinds.retain(|k, _| k == kind);
    }
    if kinds.is_empty() {
        return redo(
            "kind",
            format!("Nothing received of kind {kind} to export."),
            partner,
        );
    }
    let scope = partner
        .map(|p| g.partner_name(&p))
        .unwrap_or_else(|| "all".into());
    let (name, content_type, bytes) = if kind == "all" {
        let safe: String = scope
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        match zip_bytes(&kinds) {
            Ok(b) => (format!("received-{safe}.zip"), "application/zip", b),
            Err(e) => return internal("cannot write the zip", e),
        }
    } else {
        let list = kinds.values().next().map(Vec::as_slice).unwrap_or(&[]);
        match csv_bytes(list) {
            Ok(b) => (format!("{kind}.csv"), "text/csv; charset=utf-8", b),
            Err(e) => return internal("cannot write the CSV", e),
        }
    };
    // One audit entry per partner whose records the file holds.
    let ids: std::collections::HashSet<&str> = kinds
        .values()
        .flatten()
        .filter_map(|o| o["id"].as_str())
        .collect();
    let mut per: BTreeMap<OrgId, usize> = BTreeMap::new();
    for (o, from) in data.objects.iter().zip(&data.from) {
        if o["id"].as_str().is_some_and(|i| ids.contains(i)) {
            *per.entry(*from).or_default() += 1;
        }
    }
    for (from, n) in &per {
        if let Err(e) = g.audit(
            a.name(),
            "export.download",
            Some(from),
            None,
            format!(
                "{name}: {n} record(s) received from this partner downloaded from the web console"
            ),
        ) {
            return internal("cannot record the download in the audit log", e);
        }
    }
    tracing::info!(who = %a.name(), file = %name, records = ids.len(), "web console: export downloaded");
    attachment(&name, content_type, bytes)
}
