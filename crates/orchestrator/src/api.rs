//! The orchestrator's HTTP API: `GET /status` (hosts, regions, load, migrations in flight,
//! drains, recent decisions), `POST /reports` (hosts' load reports), `POST /hosts/NAME/drain`
//! and `GET /hosts/NAME/drain`, `POST /hosts/NAME/undrain`. With a control token, the writes need `Authorization: Bearer`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use directory::report::HostReport;

use crate::limits::MAX_REPORT_BYTES;
use crate::Orchestrator;

fn fail(status: StatusCode, msg: impl ToString) -> Response {
    (status, Json(serde_json::json!({ "error": msg.to_string() }))).into_response()
}

pub fn router(o: Arc<Orchestrator>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/reports", post(report))
        .route("/hosts/{name}/drain", post(drain).get(drain_status))
        .route("/hosts/{name}/undrain", post(undrain))
        .layer(DefaultBodyLimit::max(MAX_REPORT_BYTES))
        .with_state(o)
}

/// None when the request may go on; the refusal otherwise.
fn refuse_unauthorized(o: &Orchestrator, headers: &HeaderMap) -> Option<Response> {
    let want = o.config.control_token.as_deref()?;
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), want.as_bytes())) {
        None
    } else {
        Some(fail(
            StatusCode::UNAUTHORIZED,
            "this orchestrator needs its control token: send Authorization: Bearer TOKEN \
             (terrane takes it from --control-token or TERRANE_CONTROL_TOKEN)",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn status(State(o): State<Arc<Orchestrator>>) -> Response {
    Json(o.status()).into_response()
}

async fn report(
    State(o): State<Arc<Orchestrator>>,
    headers: HeaderMap,
    Json(r): Json<HostReport>,
) -> Response {
    if let Some(refused) = refuse_unauthorized(&o, &headers) {
        return refused;
    }
    if let Err(e) = directory::check_host(&r.host, directory::MIN_HOST_TTL) {
        return fail(StatusCode::BAD_REQUEST, e);
    }
    if r.regions.len() > directory::report::MAX_REPORTED_REGIONS {
        return fail(StatusCode::BAD_REQUEST, "too many regions in one report");
    }
    if r.shared_store.as_ref().is_some_and(|s| s.len() > crate::limits::MAX_STORE_NAME_BYTES) {
        return fail(StatusCode::BAD_REQUEST, "the shared store's name is too long");
    }
    o.report(r);
    StatusCode::NO_CONTENT.into_response()
}

async fn drain(State(o): State<Arc<Orchestrator>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(refused) = refuse_unauthorized(&o, &headers) {
        return refused;
    }
    match o.drain(&name) {
        Ok(s) => (StatusCode::ACCEPTED, Json(s)).into_response(),
        Err(e) => fail(StatusCode::NOT_FOUND, e),
    }
}

/// Body of the answer to `POST /hosts/NAME/undrain`.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Undrained {
    pub host: String,
    /// The drain this ended (still running, done or failed), if one had been asked for.
    pub ended_drain: Option<crate::brain::DrainStatus>,
}

async fn undrain(
    State(o): State<Arc<Orchestrator>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(refused) = refuse_unauthorized(&o, &headers) {
        return refused;
    }
    match o.undrain(&name) {
        Ok(ended_drain) => Json(Undrained { host: name, ended_drain }).into_response(),
        Err(e) => fail(StatusCode::NOT_FOUND, e),
    }
}

async fn drain_status(State(o): State<Arc<Orchestrator>>, Path(name): Path<String>) -> Response {
    match o.drain_status(&name) {
        Some(s) => Json(s).into_response(),
        None => fail(StatusCode::NOT_FOUND, format!("no drain of {name:?} was asked for")),
    }
}
