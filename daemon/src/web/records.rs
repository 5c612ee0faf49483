//! The Records page: browse and search this instance's contacts,
//! organizations, transactions, flags and résumés (with custom fields and
//! flags), each with its owner; download a résumé's file.
//!
//! Read-only for everyone signed in. A page shows at most [`PAGE`] records
//! and a request reads at most [`MAX_SCAN`] stored objects, so a store of
//! 100k records is never rendered, nor scanned, in one go: "Next" carries
//! on after the last record read.

// Guards return the refusal page itself as the error (see pages.rs).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use orgsync_protocol::authority::{Provenance, Source};
use orgsync_protocol::model::{FieldKey, Kind, Object, ObjectId, Value};

use super::pages::{internal, layout, signed_in, urlencode, Authed};
use super::WebState;
use crate::governance::Governance;

/// Records shown on one page.
pub(super) const PAGE: usize = 50;
/// Most stored objects one request reads while searching.
const MAX_SCAN: usize = 20_000;
/// Objects read from the store at a time.
const BATCH: usize = 500;
/// Longest search text.
const MAX_QUERY: usize = 200;

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/records", get(page))
        .route("/records/:id/file", get(resume_file))
}

/// The page's tabs: kind, label.
const TABS: [(Kind, &str); 5] = [
    (Kind::Contact, "Contacts"),
    (Kind::Organization, "Organizations"),
    (Kind::Transaction, "Transactions"),
    (Kind::Flag, "Flags"),
    (Kind::Resume, "Résumés"),
];

/// A value as text.
fn text(v: &Value) -> String {
    match crate::json::value_to_json(v) {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// A short human name for an object: a contact's name, an
/// organization's or flag's name, a résumé's file name, a transaction's
/// type and date; the id when none is set.
pub(super) fn title(o: &Object) -> String {
    let std = |k: &str| o.get_std(k).map(text).unwrap_or_default();
    let t = match o.kind {
        Kind::Contact => format!("{} {}", std("first_name"), std("last_name")),
        Kind::Organization | Kind::Flag => std("name"),
        Kind::Resume => std("file_name"),
        Kind::Transaction => format!("{} {}", std("type"), std("date")),
    };
    let t = t.trim();
    if t.is_empty() {
        o.id.to_string()
    } else {
        t.to_string()
    }
}

/// Who owns `o` and where this copy came from, in words.
pub(super) fn owner_text(g: &Governance, p: &Provenance) -> String {
    if p.owner == g.us() && matches!(p.source, Source::Own) {
        return "ours".into();
    }
    let owner = g.partner_name(&p.owner);
    match p.source {
        Source::Own => owner,
        Source::Share {
            from,
            share,
            access,
        } => {
            let via = if from == p.owner {
                String::new()
            } else {
                format!(" via {}", g.partner_name(&from))
            };
            format!("{owner}{via} (share {share}, {access})")
        }
        Source::Mirror { from } => format!("{owner} (mirror {})", g.partner_name(&from)),
    }
}

/// The fields of `o` as a definition list: standard fields (references
/// named), custom fields as `custom.NAME`, flags by name.
pub(super) fn fields_markup(g: &Governance, o: &Object) -> Markup {
    let name_of = |id: ObjectId| match g.store().get(id) {
        Ok(Some(r)) => format!("{} ({})", title(&r), r.kind),
        _ => id.to_string(),
    };
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut flags = Vec::new();
    for (k, st) in &o.fields {
        let Some(v) = &st.value else { continue };
        match (k, v) {
            (FieldKey::Std(n), Value::Ref(id)) => rows.push((n.clone(), name_of(*id))),
            (FieldKey::Std(n), v) => rows.push((n.clone(), text(v))),
            (FieldKey::Custom(n), v) => rows.push((format!("custom.{n}"), text(v))),
            (FieldKey::Flag(id), Value::Bool(true)) => flags.push(name_of(*id)),
            (FieldKey::Flag(_), _) => {}
        }
    }
    html! {
        dl.fields {
            @for (k, v) in &rows { dt { (k) } dd { (v) } }
            @if !flags.is_empty() { dt { "flags" } dd { (flags.join(", ")) } }
        }
    }
}

/// Whether any field value, custom field or the id contains `needle`
/// (lower case).
fn matches(o: &Object, needle: &str) -> bool {
    needle.is_empty()
        || o.id.to_string().contains(needle)
        || o.fields.iter().any(|(_, st)| {
            st.value
                .as_ref()
                .is_some_and(|v| text(v).to_lowercase().contains(needle))
        })
}

/// One page of records of `kind` matching `needle` after `after`: the
/// records, where the next page starts (if there is more), and whether the
/// scan stopped at [`MAX_SCAN`] before filling the page.
fn page_of(
    g: &Governance,
    kind: Kind,
    needle: &str,
    after: Option<ObjectId>,
) -> Result<(Vec<Object>, Option<ObjectId>, bool), crate::store::StoreError> {
    let mut out = Vec::new();
    let mut cursor = after;
    let mut scanned = 0;
    loop {
        let batch = g.store().list(Some(kind), cursor, BATCH)?;
        let full = batch.len() == BATCH;
        for o in batch {
            scanned += 1;
            cursor = Some(o.id);
            if matches(&o, needle) {
                if out.len() == PAGE {
                    // One more match: there is a next page, starting after the last shown.
                    let next = out.last().map(|l: &Object| l.id);
                    return Ok((out, next, false));
                }
                out.push(o);
            }
        }
        if !full {
            return Ok((out, None, false));
        }
        if scanned >= MAX_SCAN {
            return Ok((out, cursor, true));
        }
    }
}

async fn page(
    State(st): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (a, g) = or_respond!(signed_in(&st, &headers, ("Records", "records")));
    view(g, &a, &q)
}

fn view(g: &Governance, a: &Authed, q: &HashMap<String, String>) -> Response {
    let mut errors: Vec<(&str, String)> = Vec::new();
    let kind = match q.get("kind").map(|k| k.parse::<Kind>()) {
        None => Kind::Contact,
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            errors.push(("kind", format!("{e}; showing contacts.")));
            Kind::Contact
        }
    };
    let raw_q = q.get("q").map(|s| s.trim()).unwrap_or("");
    let needle = if raw_q.chars().count() > MAX_QUERY {
        errors.push((
            "q",
            format!("Search text is limited to {MAX_QUERY} characters; it was cut."),
        ));
        raw_q.chars().take(MAX_QUERY).collect::<String>()
    } else {
        raw_q.to_string()
    };
    let after = match q.get("after").filter(|s| !s.is_empty()).map(|s| s.parse()) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => {
            errors.push((
                "after",
                format!("The page position is not a record id ({e}); showing the first page."),
            ));
            None
        }
    };
    let (list, next, stopped) = match page_of(g, kind, &needle.to_lowercase(), after) {
        Ok(p) => p,
        Err(e) => return internal("cannot read the records", e),
    };
    let label = TABS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, l)| *l)
        .unwrap_or("Records");
    let link = |after: Option<ObjectId>| {
        let mut s = format!("/records?kind={}", kind.as_str());
        if !needle.is_empty() {
            s.push_str(&format!("&q={}", urlencode(&needle)));
        }
        if let Some(id) = after {
            s.push_str(&format!("&after={id}"));
        }
        s
    };
    let err_at = |f: &str| {
        html! {
            @for (at, msg) in &errors {
                @if *at == f { p.error role="alert" id={"err-" (f)} { (msg) } }
            }
        }
    };
    let body = html! {
        nav.tabs aria-label="Kinds of record" {
            ul {
                @for (k, l) in TABS {
                    li { a href={"/records?kind=" (k.as_str())} aria-current=[(k == kind).then_some("page")] { (l) } }
                }
            }
        }
        (err_at("kind"))
        form.filters method="get" action="/records" role="search" {
            input type="hidden" name="kind" value=(kind.as_str());
            div {
                label for="q" { "Search " (label.to_lowercase()) " (any field, custom fields, id)" }
                input type="text" id="q" name="q" value=(needle) maxlength=(MAX_QUERY);
                (err_at("q"))
            }
            div { button type="submit" { "Search" } }
            @if !needle.is_empty() { div { a href={"/records?kind=" (kind.as_str())} { "Clear search" } } }
        }
        (err_at("after"))
        @if list.is_empty() {
            p.muted { @if needle.is_empty() { "No " (label.to_lowercase()) " here." } @else { "No " (label.to_lowercase()) " match " q { (needle) } "." } }
        } @else {
            table aria-label=(label) {
                thead { tr { th { "Record" } th { "Fields" } th { "Owner" } @if kind == Kind::Resume { th { "File" } } } }
                tbody {
                    @for o in &list {
                        @let prov = g.provenance(&o.id).ok().flatten().unwrap_or_else(|| Provenance::own(g.us()));
                        tr {
                            td data-label="Record" { (title(o)) br; span.muted.mono { (o.id) } }
                            td data-label="Fields" { (fields_markup(g, o)) }
                            td data-label="Owner" { (owner_text(g, &prov)) }
                            @if kind == Kind::Resume {
                                td data-label="File" {
                                    a.button href={"/records/" (o.id) "/file"} aria-label={"Download résumé " (title(o))} { "Download" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if stopped {
            p.muted { "The search read " (MAX_SCAN) " records without filling the page; Next searches further." }
        }
        p.pager {
            @if after.is_some() { a href=(link(None)) { "First page" } " " }
            @if let Some(n) = next { a href=(link(Some(n))) rel="next" { "Next " (PAGE) } }
        }
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, layout("Records", "records", Some(a), body)).into_response()
}

/// A file name safe in a `Content-Disposition` header: ASCII letters,
/// digits, `.`, `-` and `_` kept, anything else `_`; never empty.
fn safe_file_name(name: &str) -> String {
    let s: String = name
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "resume".into()
    } else {
        s
    }
}

/// The content of a résumé, as an attachment (never shown inline: the
/// file and its media type are a partner's).
async fn resume_file(
    State(st): State<WebState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let (a, g) = or_respond!(signed_in(&st, &headers, ("Records", "records")));
    let not_found = |msg: String| {
        (
            StatusCode::NOT_FOUND,
            layout(
                "Records",
                "records",
                Some(&a),
                html! { p.error role="alert" { (msg) } p { a href="/records?kind=resume" { "Back to the résumés" } } },
            ),
        )
            .into_response()
    };
    let id: ObjectId = match id.parse() {
        Ok(i) => i,
        Err(e) => return not_found(format!("{id:?} is not a record id: {e}.")),
    };
    let o = match g.store().get(id) {
        Ok(Some(o)) if !o.is_deleted() && o.kind == Kind::Resume => o,
        Ok(_) => return not_found(format!("There is no résumé {id} here.")),
        Err(e) => return internal("cannot read the résumé", e),
    };
    let Some(Value::Hash(hash)) = o.get_std("hash") else {
        return not_found(format!("Résumé {id} has no file."));
    };
    let path = g.store().blob_files().path_of(hash);
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return not_found(format!(
            "The file of résumé {id} is not here yet: it is still transferring from the partner."
        ))
        }
        Err(e) => return internal("cannot open the résumé's file", e),
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return internal("cannot open the résumé's file", e),
    };
    let name = safe_file_name(&o.get_std("file_name").map(text).unwrap_or_default());
    let media = o
        .get_std("media_type")
        .map(text)
        .and_then(|m| HeaderValue::from_str(&m).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut resp = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(file)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, media);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_header_safe() {
        assert_eq!(safe_file_name("cv ada.pdf"), "cv_ada.pdf");
        assert_eq!(safe_file_name("\"a\r\nb"), "_a__b");
        assert_eq!(safe_file_name("..."), "resume");
        assert_eq!(safe_file_name("résumé.pdf"), "r_sum_.pdf");
    }
}
