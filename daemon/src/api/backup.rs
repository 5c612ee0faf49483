//! `POST /v1/backup?secrets=true|false`: a consistent snapshot of the
//! running instance as an archive payload (see [`crate::backup`]),
//! `application/octet-stream`. The socket is 0600 in the instance
//! directory, so only its owner, who can read `secrets/` anyway, gets the
//! secrets; the CLI encrypts the archive before it leaves the process.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::{ApiResult, ApiState, Failure};
use crate::backup::collect::collect;

#[derive(Deserialize)]
pub(crate) struct BackupQuery {
    #[serde(default)]
    secrets: bool,
}

pub(crate) async fn backup(
    State(st): State<ApiState>,
    Query(q): Query<BackupQuery>,
) -> ApiResult<axum::response::Response> {
    let payload = collect(
        &st.store,
        st.governance.as_ref(),
        &st.identity.org.to_string(),
        q.secrets,
    )
    .await
    .map_err(|e| Failure::internal(format!("backup failed: {e}")))?;
    let m = &payload.manifest;
    tracing::info!(
        objects = m.objects,
        log_head = m.log_head,
        write_pause_us = m.write_pause_us,
        with_secrets = m.with_secrets,
        "backup snapshot taken"
    );
    let body = payload.encode();
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}
