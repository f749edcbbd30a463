//! The host's HTTP control API: list regions, one region's stats, load and unload, start and
//! watch live migrations, metrics.

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

/// The control API of a host. With `net`, loading a region registers it in the directory and
/// migrations can be started.
pub fn router(host: Host, prometheus: PrometheusHandle, net: Option<Arc<Net>>) -> Router {
    Router::new()
        .route("/", get(info))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/regions", get(list))
        .route("/regions/{region}", get(one).post(load).delete(unload))
        .route("/regions/{region}/migrate", axum::routing::post(migrate))
        .route("/regions/{region}/snapshot", get(snapshot))
        .route("/regions/{region}/restore", axum::routing::post(restore))
        .route("/regions/{region}/changes", axum::routing::post(change))
        .route("/migrations", get(migrations))
        .route("/migrations/{id}", get(migration))
        .with_state(ApiState { host, prometheus, net })
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
async fn snapshot(State(s): State<ApiState>, Path(region): Path<String>) -> Response {
    let id = match parse_region(&region) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match s.host.with_region(id, |r| r.snapshot()) {
        Ok(bytes) => {
            ([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Err(e) => e.into_response(),
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
            fail(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), msg)
        }
    }
}
