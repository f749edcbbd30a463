//! The host's HTTP control API: list regions, one region's stats, load and unload, start and
//! watch live migrations, metrics.
//!
//! With a control token ([`router_with_token`]), every request that changes something (POST,
//! DELETE…) must carry `Authorization: Bearer TOKEN`; reading (GET) stays open.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use world::RegionId;

use std::sync::Arc;

use crate::net::{Net, NetError};
use crate::{Host, HostError};

#[derive(Clone)]
struct ApiState {
    host: Host,
    prometheus: PrometheusHandle,
    net: Option<Arc<Net>>,
}

/// An error as the API returns it: a status and a sentence.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

fn fail(status: StatusCode, msg: impl ToString) -> Response {
    (status, Json(ApiError { error: msg.to_string() })).into_response()
}

impl IntoResponse for HostError {
    fn into_response(self) -> Response {
        let status = match self {
            HostError::UnknownRegion(_) => StatusCode::NOT_FOUND,
            HostError::AlreadyLoaded(_) => StatusCode::CONFLICT,
            HostError::QueueFull(_) | HostError::Full | HostError::Moving(_) | HostError::Store(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        fail(status, self)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LoadRequest {
    /// Terrain seed; the host's default when absent.
    pub seed: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HostInfo {
    pub cores: usize,
    pub regions: usize,
}

/// The control API of a host, open to anyone who can reach it. With `net`, loading a region
/// registers it in the directory and migrations can be started.
pub fn router(host: Host, prometheus: PrometheusHandle, net: Option<Arc<Net>>) -> Router {
    router_with_token(host, prometheus, net, None)
}

/// Longest control token accepted in configuration (and compared in requests).
pub const MAX_CONTROL_TOKEN_BYTES: usize = 256;

/// The control API; with `control_token`, requests that change something must carry
/// `Authorization: Bearer TOKEN` and are refused with 401 otherwise.
pub fn router_with_token(
    host: Host,
    prometheus: PrometheusHandle,
    net: Option<Arc<Net>>,
    control_token: Option<String>,
) -> Router {
    let token = ControlToken(control_token.map(Arc::from));
    routes().route_layer(axum::middleware::from_fn_with_state(token, require_token)).with_state(ApiState {
        host,
        prometheus,
        net,
    })
}

/// The secret that mutating requests must present; `None`: no check.
#[derive(Clone)]
struct ControlToken(Option<Arc<str>>);

/// Refuses a request that changes something unless it carries the control token.
async fn require_token(
    State(token): State<ControlToken>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(expected) = &token.0 else { return next.run(req).await };
    let method = req.method();
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        return next.run(req).await;
    }
    match bearer(req.headers()) {
        Some(given) if same_secret(given.as_bytes(), expected.as_bytes()) => next.run(req).await,
        Some(_) => unauthorized("the control token in the Authorization header is wrong; use the one this host was started with (--control-token / TERRANE_CONTROL_TOKEN)"),
        None => unauthorized("this request changes the cluster and needs the control token: send the header `Authorization: Bearer TOKEN` (the token `terrane run` prints, or the host's --control-token)"),
    }
}

/// The token of an `Authorization: Bearer TOKEN` header, if there is one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_CONTROL_TOKEN_BYTES)
        .then_some(token)
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized(msg: &str) -> Response {
    let mut r = fail(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut()
        .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
    r
}

fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(info))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/regions", get(list))
        .route("/regions/{region}", get(one).post(load).delete(unload))
        .route("/regions/{region}/migrate", axum::routing::post(migrate))
        .route("/regions/{region}/snapshot", get(snapshot))
        .route("/regions/{region}/restore", axum::routing::post(restore))
        .route("/regions/{region}/recover", axum::routing::post(recover))
        .route("/regions/{region}/changes", axum::routing::post(change))
        .route("/migrations", get(migrations))
        .route("/migrations/{id}", get(migration))
}

impl IntoResponse for NetError {
    fn into_response(self) -> Response {
        let status = match &self {
            NetError::Host(e) => return HostError::clone(e).into_response(),
            NetError::OwnedElsewhere { .. } | NetError::AlreadyMigrating(_) | NetError::ToSelf(_) => {
                StatusCode::CONFLICT
            }
            NetError::NotInDirectory(_) => StatusCode::NOT_FOUND,
            NetError::Directory(_) | NetError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
        };
        fail(status, self)
    }
}

/// Body of `POST /regions/X,Y/migrate`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MigrateRequest {
    /// Link address of the target host.
    pub to: String,
    /// Freeze when the remainder is estimated to take at most this long (default: one tick).
    pub freeze_budget_ms: Option<f64>,
    pub max_rounds: Option<u32>,
    pub max_bytes_factor: Option<f64>,
    /// "freeze" (default: freeze anyway up to five ticks) or "abort", when rounds do not converge.
    pub on_no_convergence: Option<String>,
    /// "pre-copy" (default) or "stop-and-copy" (freeze first, then copy everything).
    #[serde(default)]
    pub strategy: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MigrateStarted {
    pub id: u64,
}

async fn migrate(
    State(s): State<ApiState>,
    Path(region): Path<String>,
    Json(req): Json<MigrateRequest>,
) -> Response {
    let id = match parse_region(&region) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some(net) = s.net.clone() else {
        return fail(StatusCode::NOT_IMPLEMENTED, "this host runs without links: it cannot migrate regions");
    };
    let mut policy = match req.strategy.as_deref() {
        None | Some("pre-copy") => migrate::Policy::default(),
        Some("stop-and-copy") => migrate::Policy::stop_and_copy(),
        Some(other) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("strategy is \"pre-copy\" or \"stop-and-copy\", not {other:?}"),
            )
        }
    };
    if let Some(ms) = req.freeze_budget_ms {
        if !(ms.is_finite() && ms >= 0.0) {
            return fail(StatusCode::BAD_REQUEST, "freeze_budget_ms must be a non-negative number");
        }
        policy.freeze_budget_us = (ms * 1000.0) as u64;
    }
    if let Some(r) = req.max_rounds {
        policy.max_rounds = r;
    }
    if let Some(f) = req.max_bytes_factor {
        if !(f.is_finite() && f > 0.0) {
            return fail(StatusCode::BAD_REQUEST, "max_bytes_factor must be a positive number");
        }
        policy.max_bytes_factor = f;
    }
    match req.on_no_convergence.as_deref() {
        None | Some("freeze") => {}
        Some("abort") => policy.on_no_convergence = migrate::NoConvergence::Abort,
        Some(other) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("on_no_convergence is \"freeze\" or \"abort\", not {other:?}"),
            )
        }
    }
    match net.migrate(id, req.to, policy).await {
        Ok(m) => (StatusCode::ACCEPTED, Json(MigrateStarted { id: m.0 })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The region's snapshot at the current tick boundary (the canonical, compressed encoding).
/// The region is only cloned between ticks; encoding a busy region takes tens of milliseconds,
/// which happen on a background thread, not in the region's lock (the orchestrator fetches one
/// every few seconds: each would otherwise hold a tick back for as long).
async fn snapshot(State(s): State<ApiState>, Path(region): Path<String>) -> Response {
    let id = match parse_region(&region) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let copy = match s.host.with_region(id, |r| r.clone()) {
        Ok(copy) => copy,
        Err(e) => return e.into_response(),
    };
    match crate::background(move || copy.snapshot()).await {
        Ok(bytes) => {
            ([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Restarts a region here from a snapshot and takes it over in the directory (the previous
/// owner is presumed dead): the "restart" way of moving a region, and the failover path.
async fn restore(State(s): State<ApiState>, Path(region): Path<String>, body: axum::body::Bytes) -> Response {
    let id = match parse_region(&region) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let state = match world::Region::from_snapshot(&body) {
        Ok(r) if r.id() == id => r,
        Ok(r) => {
            return fail(StatusCode::BAD_REQUEST, format!("the snapshot is of region {}, not {id}", r.id()))
        }
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("not a usable snapshot: {e}")),
    };
    let result = match &s.net {
        Some(net) => net.take_over(state).await,
        None => s.host.load(state).map_err(NetError::from),
    };
    match result {
        Ok(()) => (StatusCode::CREATED, Json(s.host.stats(id).ok())).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Body of the answer to `POST /regions/X,Y/recover`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecoverAnswer {
    pub region: RegionId,
    #[serde(flatten)]
    pub rebuilt: crate::durable::Rebuilt,
}

/// Restarts a region here from what this host's store holds (its newest checkpoint and the
/// write-ahead log after it) and takes it over in the directory: the failover path when the
/// dead owner shared the store. 404 when this host has no store or it holds nothing for the
/// region (the caller falls back to a snapshot), so a region is never started empty here.
async fn recover(State(s): State<ApiState>, Path(region): Path<String>) -> Response {
    let id = match parse_region(&region) {
        Ok(id) => id,
        Err(r) => return r,
    };
    if s.host.region_ids().contains(&id) {
        return HostError::AlreadyLoaded(id).into_response();
    }
    let host = s.host.clone();
    let (state, rebuilt) = match tokio::task::spawn_blocking(move || host.recover_stored(id)).await {
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) if s.host.durability().is_none() => {
            return fail(StatusCode::NOT_FOUND, "this host keeps no store: nothing to recover from")
        }
        Ok(Ok(None)) => return fail(StatusCode::NOT_FOUND, format!("the store holds nothing for {id}")),
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let result = match &s.net {
        Some(net) => net.take_over(state).await,
        None => s.host.load(state).map_err(NetError::from),
    };
    match result {
        Ok(()) => (StatusCode::CREATED, Json(RecoverAnswer { region: id, rebuilt })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn migrations(State(s): State<ApiState>) -> Response {
    match &s.net {
        Some(net) => Json(net.migrations()).into_response(),
        None => Json(Vec::<()>::new()).into_response(),
    }
}

async fn migration(State(s): State<ApiState>, Path(id): Path<u64>) -> Response {
    match s.net.as_ref().and_then(|n| n.migration(migrate::MigrationId(id))) {
        Some(m) => Json(m).into_response(),
        None => fail(StatusCode::NOT_FOUND, format!("no migration {id} started on this host")),
    }
}

async fn info(State(s): State<ApiState>) -> Json<HostInfo> {
    Json(HostInfo { cores: s.host.cores(), regions: s.host.region_ids().len() })
}

async fn metrics(State(s): State<ApiState>) -> String {
    s.prometheus.render()
}

async fn list(State(s): State<ApiState>) -> Response {
    let host = s.host.clone();
    match tokio::task::spawn_blocking(move || host.all_stats()).await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn parse_region(s: &str) -> Result<RegionId, Response> {
    s.parse().map_err(|e| fail(StatusCode::BAD_REQUEST, e))
}

async fn one(State(s): State<ApiState>, Path(region): Path<String>) -> Response {
    let id = match parse_region(&region) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match s.host.stats(id) {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn load(
    State(s): State<ApiState>,
    Path(region): Path<String>,
    body: Option<Json<LoadRequest>>,
) -> Response {
    let id = match parse_region(&region) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let seed = body.and_then(|Json(b)| b.seed);
    if let Some(net) = &s.net {
        return match net.claim_new(id, seed).await {
            Ok(()) => (StatusCode::CREATED, Json(s.host.stats(id).ok())).into_response(),
            Err(e) => e.into_response(),
        };
    }
    // Generating terrain takes milliseconds: keep it off the async workers.
    let host = s.host.clone();
    match tokio::task::spawn_blocking(move || host.load_new(id, seed)).await {
        Ok(Ok(())) => (StatusCode::CREATED, Json(s.host.stats(id).ok())).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn unload(State(s): State<ApiState>, Path(region): Path<String>) -> Response {
    let id = match parse_region(&region) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let result = match &s.net {
        Some(net) => net.unload(id).map(|_| ()),
        None => s.host.unload(id).map(|_| ()),
    };
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /regions/X,Y/changes` with a JSON input: answers once the change is durable.
async fn change(
    State(s): State<ApiState>,
    Path(region): Path<String>,
    Json(input): Json<world::Input>,
) -> Response {
    let id = match parse_region(&region) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match crate::durable::http_change(s.host.clone(), id, input).await {
        Ok(acked) => Json(acked).into_response(),
        Err((status, msg)) => {
            let mut r = fail(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), msg);
            if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                r.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, crate::durable::RETRY_AFTER_SECS.into());
            }
            r
        }
    }
}
