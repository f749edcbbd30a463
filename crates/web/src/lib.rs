//! The web face of terrane: the cluster dashboard (`/`) and the browser viewer (`/viewer`),
//! with their static assets embedded in the binary at build time, and the small JSON API behind
//! them. The cluster's data and actions come through [`ClusterView`]; the viewer speaks the
//! client protocol (docs/protocol.md) to the gateway it is served by.
//!
//! Routes: `GET /`, `GET /viewer`, `GET /assets/*`, `GET /api/cluster`, `GET /api/live`
//! (WebSocket), `POST /api/migrate` and `POST /api/drain` (control token required when one is
//! configured), `POST /api/terrain` (unpacks a region info's zstd heightmap for browsers, which
//! cannot decompress zstd themselves).

pub mod limits;
mod live;
pub mod view;

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use world::RegionId;

use crate::limits::*;
use crate::live::Live;
pub use crate::view::{Cluster, ClusterView, HostView, MigrationView, RegionView, ViewError};

/// How the pages are served.
#[derive(Clone, Debug, Default)]
pub struct WebConfig {
    /// The token that `/api/migrate` and `/api/drain` require as `Authorization: Bearer TOKEN`.
    /// `None`: actions are open to anyone who reaches the pages.
    pub control_token: Option<String>,
}

#[derive(Clone)]
struct WebState {
    view: Arc<dyn ClusterView>,
    live: Arc<Live>,
    token: Option<Arc<str>>,
}

/// The pages, assets and API, to be merged into a server's router (the gateway's in
/// `terrane run`). Must be called inside a tokio runtime: it starts the live feed's poller.
pub fn router(view: Arc<dyn ClusterView>, config: WebConfig) -> Router {
    let live = Live::start(view.clone());
    let state = WebState { view, live, token: config.control_token.map(Arc::from) };
    let actions = Router::new()
        .route("/api/migrate", post(migrate))
        .route("/api/drain", post(drain))
        .layer(DefaultBodyLimit::max(MAX_ACTION_BODY_BYTES));
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", DASHBOARD_HTML) }))
        .route("/assets/dashboard.js", get(|| async { asset(JS, DASHBOARD_JS) }))
        .route("/api/cluster", get(cluster))
        .route("/api/live", get(live_upgrade))
        .merge(actions)
        .with_state(state)
        .merge(viewer_router())
}

/// The viewer alone (`/viewer`, its assets and `/api/terrain`), for a gateway that has no view
/// of the cluster (`terrane gateway`).
pub fn viewer_router() -> Router {
    Router::new()
        .route("/viewer", get(|| async { asset("text/html; charset=utf-8", VIEWER_HTML) }))
        .route("/assets/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/assets/viewer.js", get(|| async { asset(JS, VIEWER_JS) }))
        .route("/api/terrain", post(terrain))
        .layer(DefaultBodyLimit::max(proto::limits::MAX_TERRAIN_BLOB_BYTES))
}

const JS: &str = "text/javascript; charset=utf-8";
const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
const VIEWER_HTML: &str = include_str!("../assets/viewer.html");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
const VIEWER_JS: &str = include_str!("../assets/viewer.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// An error as the API returns it: `{"error": "what failed and what to do"}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// What an accepted action answers: a sentence saying what started.
#[derive(Debug, Serialize, Deserialize)]
pub struct ActionStarted {
    pub message: String,
}

fn fail(status: StatusCode, msg: impl ToString) -> Response {
    (status, Json(ApiError { error: msg.to_string() })).into_response()
}

impl IntoResponse for ViewError {
    fn into_response(self) -> Response {
        let status = match self {
            ViewError::Unknown(_) => StatusCode::NOT_FOUND,
            ViewError::Refused(_) => StatusCode::CONFLICT,
            ViewError::Unreachable(_) => StatusCode::BAD_GATEWAY,
        };
        fail(status, self)
    }
}

async fn cluster(State(s): State<WebState>) -> Response {
    match s.view.cluster().await {
        Ok(c) => Json(c).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn live_upgrade(State(s): State<WebState>, ws: WebSocketUpgrade) -> Response {
    if s.live.clients() >= MAX_LIVE_CLIENTS {
        return fail(StatusCode::SERVICE_UNAVAILABLE, "too many live dashboards are open; close one");
    }
    let live = s.live.clone();
    ws.max_message_size(MAX_LIVE_CLIENT_FRAME_BYTES).on_upgrade(move |socket| live.serve(socket))
}

/// Refuses an action without the control token (when one is configured).
fn check_token(s: &WebState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(expected) = &s.token else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty() && t.len() <= MAX_CONTROL_TOKEN_BYTES);
    let why = match given {
        Some(t) if same_secret(t.as_bytes(), expected.as_bytes()) => return Ok(()),
        Some(_) => "the control token is wrong: use the one `terrane run` printed (or the hosts' --control-token)",
        None => "this action changes the cluster and needs the control token: enter the token `terrane run` printed (or open the dashboard through the URL it printed)",
    };
    let mut r = fail(StatusCode::UNAUTHORIZED, why);
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Err(r)
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Body of `POST /api/migrate`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MigrateAction {
    /// "X,Y".
    pub region: String,
    /// The target host's name (link address).
    pub to: String,
}

/// Body of `POST /api/drain`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DrainAction {
    pub host: String,
}

fn host_name(name: &str) -> Result<&str, Response> {
    let ok =
        !name.is_empty() && name.len() <= MAX_HOST_NAME_BYTES && name.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(name)
    } else {
        Err(fail(
            StatusCode::BAD_REQUEST,
            format!("a host name is 1 to {MAX_HOST_NAME_BYTES} printable characters"),
        ))
    }
}

async fn migrate(State(s): State<WebState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = check_token(&s, &headers) {
        return r;
    }
    let action: MigrateAction = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"region\": \"X,Y\", \"to\": HOST}}: {e}"),
            )
        }
    };
    let region: RegionId = match action.region.parse() {
        Ok(r) => r,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    let to = match host_name(&action.to) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match s.view.migrate(region, to).await {
        Ok(message) => (StatusCode::ACCEPTED, Json(ActionStarted { message })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn drain(State(s): State<WebState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = check_token(&s, &headers) {
        return r;
    }
    let action: DrainAction = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("expected {{\"host\": HOST}}: {e}")),
    };
    let host = match host_name(&action.host) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match s.view.drain(host).await {
        Ok(message) => (StatusCode::ACCEPTED, Json(ActionStarted { message })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The raw heightmap (262,144 bytes: 256 × 256 little-endian f32) of a region info's terrain
/// blob, posted as its bytes (the base64 of the protocol already decoded). Browsers have no zstd
/// decompressor; this is one, bounded like the protocol's own decoder.
async fn terrain(body: axum::body::Bytes) -> Response {
    let info = proto::RegionInfo { region: RegionId::new(0, 0), water_level: 0.0, terrain: body.to_vec() };
    match info.heights() {
        Ok(heights) => {
            let raw: Vec<u8> = heights.iter().flat_map(|h| h.to_le_bytes()).collect();
            ([(header::CONTENT_TYPE, "application/octet-stream")], raw).into_response()
        }
        Err(e) => fail(StatusCode::BAD_REQUEST, format!("not a terrain blob of the protocol: {e}")),
    }
}
