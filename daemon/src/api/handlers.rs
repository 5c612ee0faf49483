//! Handlers of the object, résumé, partner, status and metrics routes.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use orgsync_protocol::model::{FieldKey, Kind, Object, ObjectId, Value};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::{ApiResult, ApiState, Failure, JsonBody, PartnerStatus, DEFAULT_LIMIT, MAX_LIMIT};
use crate::json::{self as j, InputError, LocalEdit};
use crate::metrics;
use crate::store::{BlobEntry, BlobState, Edit, Store, StoreError};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The live object `id`, or a 404.
fn load_live(store: &Store, id: ObjectId) -> ApiResult<Object> {
    match store.get(id)? {
        Some(obj) if !obj.is_deleted() => Ok(obj),
        Some(_) => Err(Failure::not_found(format!("object {id} was deleted"))),
        None => Err(Failure::not_found(format!("no object {id}"))),
    }
}

/// Checks that every flag an edit attaches names a live flag object.
pub(crate) fn check_flags(store: &Store, edit: &LocalEdit, field: &str) -> Result<(), FlagCheck> {
    for (key, value) in &edit.set {
        if let (FieldKey::Flag(flag), Some(_)) = (key, value) {
            match store.get(*flag)? {
                Some(o) if o.kind == Kind::Flag && !o.is_deleted() => {}
                _ => {
                    return Err(FlagCheck::Input(InputError::field(
                        field,
                        format!("no flag {flag}"),
                    )))
                }
            }
        }
    }
    Ok(())
}

/// Why [`check_flags`] refused an edit.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FlagCheck {
    /// A named flag does not exist.
    #[error(transparent)]
    Input(InputError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<FlagCheck> for Failure {
    fn from(e: FlagCheck) -> Self {
        match e {
            FlagCheck::Input(e) => e.into(),
            FlagCheck::Store(e) => e.into(),
        }
    }
}

/// Writes one edit (durably) and returns the object as stored. A
/// partner's copy is a replica: its edits are refused (governance).
async fn commit_one(st: &ApiState, edit: Edit) -> ApiResult<Object> {
    if let Some(g) = &st.governance {
        g.check_local_edit(&edit.id)?;
    }
    let receipt = st.store.write(vec![edit]).await?;
    metrics::add(&st.metrics.changes_written, receipt.changes.len() as u64);
    receipt
        .objects
        .into_iter()
        .next()
        .ok_or_else(|| Failure::internal("the store wrote no object"))
}

pub(crate) async fn create_object(
    State(st): State<ApiState>,
    JsonBody(req): JsonBody<j::CreateRequest>,
) -> ApiResult<Response> {
    let existing = match &req.id {
        Some(s) => st.store.get(j::parse_id("id", s)?)?,
        None => None,
    };
    let edit = j::build_create(&st.schema(), &req, existing.as_ref(), || {
        ObjectId::new_v7(now_ms())
    })?;
    check_flags(&st.store, &edit, "flags")?;
    let obj = commit_one(&st, edit.into_edit()).await?;
    let status = if existing.is_some_and(|o| !o.is_deleted()) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(j::object_to_json(&obj))).into_response())
}

pub(crate) async fn list_objects(
    State(st): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    for key in q.keys() {
        if !matches!(key.as_str(), "kind" | "limit" | "after") {
            return Err(InputError::field(
                key.clone(),
                format!("unknown query parameter {key:?} (known: kind, limit, after)"),
            )
            .into());
        }
    }
    let kind = q.get("kind").map(|k| j::parse_kind(k)).transpose()?;
    let after = q
        .get("after")
        .map(|a| j::parse_id("after", a))
        .transpose()?;
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(InputError::field(
                    "limit",
                    format!("limit must be a whole number from 1 to {MAX_LIMIT}, got {l:?}"),
                )
                .into())
            }
        },
    };
    let store = st.store.clone();
    // A kind filter may scan many objects of other kinds: keep it off the
    // async workers.
    let objects = tokio::task::spawn_blocking(move || store.list(kind, after, limit))
        .await
        .map_err(|e| Failure::internal(format!("list task failed: {e}")))??;
    let next = if objects.len() == limit {
        objects.last().map(|o| o.id.to_string())
    } else {
        None
    };
    let list: Vec<Json> = objects.iter().map(j::object_to_json).collect();
    Ok(axum::Json(json!({"objects": list, "next": next})).into_response())
}

pub(crate) async fn get_object(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let obj = load_live(&st.store, j::parse_id("id", &id)?)?;
    Ok(axum::Json(j::object_to_json(&obj)).into_response())
}

pub(crate) async fn update_object(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    JsonBody(req): JsonBody<j::UpdateRequest>,
) -> ApiResult<Response> {
    let existing = load_live(&st.store, j::parse_id("id", &id)?)?;
    let edit = j::build_update(&st.schema(), &existing, &req)?;
    check_flags(&st.store, &edit, "add_flags")?;
    let obj = commit_one(&st, edit.into_edit()).await?;
    Ok(axum::Json(j::object_to_json(&obj)).into_response())
}

pub(crate) async fn delete_object(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let existing = load_live(&st.store, j::parse_id("id", &id)?)?;
    let mut edit = Edit::new(existing.id, existing.kind);
    edit.delete = true;
    commit_one(&st, edit).await?;
    Ok(axum::Json(json!({"id": existing.id.to_string(), "deleted": true})).into_response())
}

// ---------------------------------------------------------------------------
// Résumés
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResumeRequest {
    contact: String,
    path: String,
    #[serde(default)]
    media_type: Option<String>,
}

/// The media type of a résumé file, from its extension.
pub fn media_type_for(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("pdf") => "application/pdf",
        Some("doc") => "application/msword",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Some("odt") => "application/vnd.oasis.opendocument.text",
        Some("rtf") => "application/rtf",
        Some("txt") => "text/plain",
        Some("md") => "text/markdown",
        Some("html") | Some("htm") => "text/html",
        _ => "application/octet-stream",
    }
}

/// Why a résumé could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// Bad contact or file.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The store or the blob directory failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ResumeError> for Failure {
    fn from(e: ResumeError) -> Self {
        match e {
            ResumeError::Input(e) => e.into(),
            ResumeError::Store(e) => e.into(),
        }
    }
}

/// Stores the file at `path` in the blob directory and builds the Resume
/// object that attaches it to `contact`, which must be a live contact.
/// The blob is stored (and indexed) before the object is written, so a
/// Resume object never names content that is not there; a failure after
/// the blob is stored leaves only an unreferenced blob.
///
/// The file must be a regular file owned by the daemon's user, and `path`
/// must not be a symbolic link (see [`crate::localfile::open_regular_owned`]):
/// the daemon reads files for whoever can reach its API, so it neither
/// follows a link (to its own secrets, say) nor reads another user's file.
pub async fn attach_resume_file(
    store: &Store,
    contact: ObjectId,
    path: &Path,
    media_type: Option<&str>,
) -> Result<Edit, ResumeError> {
    check_contact(store, contact)?;
    let file = crate::localfile::open_regular_owned(path).map_err(|e| {
        tracing::warn!(path = %path.display(), error = %e, "résumé file refused");
        InputError::field("path", e.to_string())
    })?;
    attach_resume_handle(store, contact, file, path, media_type).await
}

fn check_contact(store: &Store, contact: ObjectId) -> Result<(), ResumeError> {
    match store.get(contact)? {
        Some(o) if o.kind == Kind::Contact && !o.is_deleted() => Ok(()),
        Some(o) if !o.is_deleted() => Err(InputError::field(
            "contact",
            format!("object {contact} is a {}, not a contact", o.kind),
        )
        .into()),
        _ => Err(InputError::field("contact", format!("no contact {contact}")).into()),
    }
}

/// [`attach_resume_file`] for a file already opened (and checked) by the
/// caller; `path` names it (file name and media type).
pub async fn attach_resume_handle(
    store: &Store,
    contact: ObjectId,
    mut file: std::fs::File,
    path: &Path,
    media_type: Option<&str>,
) -> Result<Edit, ResumeError> {
    check_contact(store, contact)?;
    let max = store.blob_files().max_bytes();
    let len = file
        .metadata()
        .map_err(|e| InputError::field("path", format!("cannot read {}: {e}", path.display())))?
        .len();
    if len > max {
        // Refused before anything is copied ([limits] max_blob_bytes).
        return Err(InputError::field(
            "path",
            format!(
                "{} is {} bytes, over the limit of {max} bytes (limits.max_blob_bytes in orgsync.toml)",
                path.display(),
                len
            ),
        )
        .into());
    }
    let blobs = store.blob_files().clone();
    let src = path.to_path_buf();
    let (hash, size) = tokio::task::spawn_blocking(move || blobs.put_open_file(&mut file, &src))
        .await
        .map_err(|e| StoreError::Thread(io::Error::other(e.to_string())))?
        .map_err(StoreError::Blob)?;
    let id = ObjectId::new_v7(now_ms());
    store
        .set_blob(
            &hash,
            BlobEntry {
                size,
                state: BlobState::Complete,
                object: Some(id),
            },
        )
        .await?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let media_type = media_type.unwrap_or_else(|| media_type_for(path));
    Ok(Edit::new(id, Kind::Resume)
        .set_std("contact", Value::Ref(contact))
        .set_std("file_name", Value::Text(file_name))
        .set_std("media_type", Value::Text(media_type.to_string()))
        .set_std(
            "size",
            Value::Integer(i64::try_from(size).unwrap_or(i64::MAX)),
        )
        .set_std("hash", Value::Hash(hash)))
}

pub(crate) async fn attach_resume(
    State(st): State<ApiState>,
    JsonBody(req): JsonBody<ResumeRequest>,
) -> ApiResult<Response> {
    let contact = j::parse_id("contact", &req.contact)?;
    let path = PathBuf::from(&req.path);
    if !path.is_absolute() {
        return Err(InputError::field(
            "path",
            format!(
                "path must be absolute (the daemon reads it), got {:?}",
                req.path
            ),
        )
        .into());
    }
    if let Some(mt) = &req.media_type {
        if mt.is_empty() || mt.len() > 255 || !mt.contains('/') || mt.chars().any(char::is_control)
        {
            return Err(
                InputError::field("media_type", format!("{mt:?} is not a media type")).into(),
            );
        }
    }
    let edit = attach_resume_file(&st.store, contact, &path, req.media_type.as_deref()).await?;
    let obj = commit_one(&st, edit).await?;
    Ok((StatusCode::CREATED, axum::Json(j::object_to_json(&obj))).into_response())
}

pub(crate) async fn resume_content(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let obj = load_live(&st.store, j::parse_id("id", &id)?)?;
    if obj.kind != Kind::Resume {
        return Err(InputError::field(
            "id",
            format!("object {} is a {}, not a resume", obj.id, obj.kind),
        )
        .into());
    }
    let Some(Value::Hash(hash)) = obj.get_std("hash") else {
        return Err(Failure::not_found(format!(
            "résumé {} has no content hash",
            obj.id
        )));
    };
    let hex = data_encoding::HEXLOWER.encode(hash);
    let path = st.store.blob_files().path_of(hash);
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Failure::not_found(format!(
                "the content of résumé {} (BLAKE3 {hex}) is not here yet: it is still transferring from the partner",
                obj.id
            )))
        }
        Err(e) => return Err(Failure::internal(format!("blob {hex}: {e}"))),
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| Failure::internal(format!("blob {hex}: {e}")))?
        .len();
    let media_type = match obj.get_std("media_type") {
        Some(Value::Text(t)) => t.clone(),
        _ => "application/octet-stream".into(),
    };
    let mut resp = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(file)));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&media_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(resp)
}

// ---------------------------------------------------------------------------
// Partners, status, metrics
// ---------------------------------------------------------------------------

fn partner_json(p: &PartnerStatus) -> Json {
    json!({
        "name": p.name,
        "account": p.org.account_number(),
        "state": p.state,
        "addresses": p.addresses,
        "connected": p.connected,
        "last_sync": p.last_sync_ms.map(j::rfc3339_ms),
        "last_sync_ms": p.last_sync_ms,
        "not_acked": p.not_acked,
        "lag_ms": p.lag_ms,
        "incoming_lag": p.incoming_lag,
        "last_error": p.last_error,
        "protocol_version": p.protocol_version,
        "clock_skew_ms": p.clock_skew_ms,
    })
}

pub(crate) async fn partners(State(st): State<ApiState>) -> Response {
    let list: Vec<Json> = st.partners.partners().iter().map(partner_json).collect();
    let pending: Vec<Json> = st.partners.pending().iter().map(pending_json).collect();
    axum::Json(json!({ "partners": list, "pending": pending })).into_response()
}

/// JSON form of a peer refused at the handshake.
pub(crate) fn pending_json(p: &crate::transport::PendingPeer) -> Json {
    let ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    json!({
        "fingerprint": p.fingerprint.to_string(),
        "address": p.address.map(|a| a.to_string()),
        "first_seen_ms": ms(p.first_seen),
        "last_seen_ms": ms(p.last_seen),
        "attempts": p.attempts,
        "revoked": p.revoked,
    })
}

pub(crate) async fn status(State(st): State<ApiState>) -> Response {
    let id = &st.identity;
    let list: Vec<Json> = st.partners.partners().iter().map(partner_json).collect();
    axum::Json(json!({
        "org": id.org_name,
        "account": id.org.account_number(),
        "instance": id.instance.to_string(),
        "log_head": st.store.log_head(),
        "partners": list,
    }))
    .into_response()
}

pub(crate) async fn metrics_text(State(st): State<ApiState>) -> Response {
    let text = st.metrics.render(&st.partners.partners());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
