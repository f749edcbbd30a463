//! The host's HTTP control API: list regions, one region's stats, load and unload, metrics.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use world::RegionId;

use crate::{Host, HostError};

#[derive(Clone)]
struct ApiState {
    host: Host,
    prometheus: PrometheusHandle,
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
            HostError::QueueFull(_) | HostError::Full => StatusCode::SERVICE_UNAVAILABLE,
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

pub fn router(host: Host, prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route("/", get(info))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/regions", get(list))
        .route("/regions/{region}", get(one).post(load).delete(unload))
        .with_state(ApiState { host, prometheus })
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
    match s.host.unload(id) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}
