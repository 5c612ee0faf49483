//! The About page: this instance's identity, as partners see it.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::html;

use super::pages::{current, layout};
use super::WebState;

pub(super) fn routes() -> Router<WebState> {
    Router::new().route("/about", get(about))
}

async fn about(State(st): State<WebState>, headers: HeaderMap) -> Response {
    let a = match current(&st, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let i = &st.about;
    let body = html! {
        dl {
            dt { "Organisation" } dd { (i.org_name) }
            dt { "Account number" } dd { (i.account) }
            dt { "Certificate fingerprint" } dd { (i.fingerprint) }
            dt { "Key epoch" } dd { (i.epoch) }
            dt { "Instance" } dd { (i.instance) }
        }
        p.muted { "Partners compare the fingerprint with the one you read to them before pairing." }
    };
    layout("About", "about", Some(&a), body).into_response()
}
