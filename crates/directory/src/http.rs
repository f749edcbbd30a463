//! The directory over HTTP: [`router`] serves any backend, [`HttpDirectory`] is its client.
//! Watches are a long-lived response of one JSON [`Change`] per line, with an empty line as a
//! keep-alive so a client notices a dead server.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use world::RegionId;

use crate::{Change, Directory, DirectoryError, HostRecord, Placement, WATCH_BUFFER};

/// How long one directory request may take before it counts as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A watch stream sends a keep-alive line this often when nothing changes.
const WATCH_KEEPALIVE: Duration = Duration::from_secs(1);
/// A watch stream silent this long is taken as lost (and reconnected, with a `Resync`).
const WATCH_SILENCE: Duration = Duration::from_secs(5);
/// Wait before reconnecting a lost watch.
const WATCH_RETRY: Duration = Duration::from_millis(500);
/// Longest line accepted on a watch stream.
const MAX_WATCH_LINE: usize = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct CasRequest {
    pub expected: Option<u64>,
    pub new: Placement,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CasAnswer {
    pub swapped: bool,
}

/// Body of `POST /directory/hosts/heartbeat`.
#[derive(Debug, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub host: HostRecord,
    pub ttl_ms: u64,
}

/// Serves a directory over HTTP: `GET /directory`, `GET /directory/X,Y`,
/// `POST /directory/X,Y/cas` with a [`CasRequest`], `GET /directory/hosts`,
/// `POST /directory/hosts/heartbeat` with a [`HeartbeatRequest`], `DELETE /directory/hosts/NAME`,
/// and `GET /directory/watch` (one JSON [`Change`] per line).
pub fn router(dir: Arc<dyn Directory>) -> Router {
    Router::new()
        .route("/directory", get(http_list))
        .route("/directory/hosts", get(http_hosts))
        .route("/directory/hosts/heartbeat", post(http_heartbeat))
        .route("/directory/hosts/{name}", delete(http_leave))
        .route("/directory/watch", get(http_watch))
        .route("/directory/{region}", get(http_get))
        .route("/directory/{region}/cas", post(http_cas))
        .with_state(dir)
}

fn fail(status: StatusCode, msg: impl ToString) -> Response {
    (status, Json(serde_json::json!({ "error": msg.to_string() }))).into_response()
}

fn failed(e: DirectoryError) -> Response {
    let status = match e {
        DirectoryError::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    fail(status, e)
}

async fn http_list(State(dir): State<Arc<dyn Directory>>) -> Response {
    match dir.list().await {
        Ok(l) => Json(l).into_response(),
        Err(e) => failed(e),
    }
}

async fn http_get(State(dir): State<Arc<dyn Directory>>, Path(region): Path<String>) -> Response {
    let Ok(region) = region.parse::<RegionId>() else {
        return fail(StatusCode::BAD_REQUEST, format!("{region:?} is not a region (write X,Y)"));
    };
    match dir.get(region).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => failed(e),
    }
}

async fn http_cas(
    State(dir): State<Arc<dyn Directory>>,
    Path(region): Path<String>,
    Json(req): Json<CasRequest>,
) -> Response {
    let Ok(region) = region.parse::<RegionId>() else {
        return fail(StatusCode::BAD_REQUEST, format!("{region:?} is not a region (write X,Y)"));
    };
    tracing::debug!(target: "freeze", at = unix_us(), %region, "directory: compare-and-swap asked");
    match dir.compare_and_swap(region, req.expected, req.new).await {
        Ok(swapped) => Json(CasAnswer { swapped }).into_response(),
        Err(e) => failed(e),
    }
}

async fn http_hosts(State(dir): State<Arc<dyn Directory>>) -> Response {
    match dir.hosts().await {
        Ok(h) => Json(h).into_response(),
        Err(e) => failed(e),
    }
}

async fn http_heartbeat(
    State(dir): State<Arc<dyn Directory>>,
    Json(req): Json<HeartbeatRequest>,
) -> Response {
    match dir.heartbeat(&req.host, Duration::from_millis(req.ttl_ms)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => failed(e),
    }
}

async fn http_leave(State(dir): State<Arc<dyn Directory>>, Path(name): Path<String>) -> Response {
    match dir.leave(&name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => failed(e),
    }
}

async fn http_watch(State(dir): State<Arc<dyn Directory>>) -> Response {
    let rx = match dir.watch().await {
        Ok(rx) => rx,
        Err(e) => return failed(e),
    };
    let lines = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        let line = match tokio::time::timeout(WATCH_KEEPALIVE, rx.recv()).await {
            Err(_) => "\n".to_string(),
            Ok(Ok(change)) => line_of(&change),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => line_of(&Change::Resync),
            // The directory is gone: end the stream; the client reconnects.
            Ok(Err(broadcast::error::RecvError::Closed)) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(line), Some(rx)))
    });
    ([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response()
}

fn line_of(change: &Change) -> String {
    let mut s = serde_json::to_string(change).expect("serializing to memory cannot fail");
    s.push('\n');
    s
}

/// A client of a directory served by [`router`] (the orchestrator's).
pub struct HttpDirectory {
    base: String,
    client: reqwest::Client,
    /// Without a whole-request timeout: a watch response lasts as long as the watch.
    streaming: reqwest::Client,
}

impl HttpDirectory {
    pub fn new(base: &str) -> HttpDirectory {
        let client =
            reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().expect("building an HTTP client");
        let streaming = reqwest::Client::builder()
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .expect("building an HTTP client");
        HttpDirectory { base: base.trim_end_matches('/').to_string(), client, streaming }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, DirectoryError> {
        let resp = self.send(req).await?;
        resp.json().await.map_err(|e| DirectoryError::Refused(format!("bad answer: {e}")))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, DirectoryError> {
        let resp =
            req.send().await.map_err(|e| DirectoryError::Unreachable(format!("{}: {e}", self.base)))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(DirectoryError::Refused(format!("{status}: {body}")));
        }
        Ok(resp)
    }
}

/// Follows `GET /directory/watch`, reconnecting when it is lost, until nobody listens.
async fn follow(
    url: String,
    client: reqwest::Client,
    tx: broadcast::Sender<Change>,
    mut first: Option<reqwest::Response>,
) {
    let mut connected_before = false;
    while tx.receiver_count() > 0 {
        let attempt = match first.take() {
            Some(r) => Ok(r),
            None => client.get(&url).send().await,
        };
        let resp = match attempt {
            Ok(r) if r.status().is_success() => Some(r),
            Ok(r) => {
                tracing::warn!(%url, status = %r.status(), "directory watch refused");
                None
            }
            Err(e) => {
                tracing::warn!(%url, "directory watch lost: {e}");
                None
            }
        };
        if let Some(mut resp) = resp {
            if connected_before && tx.send(Change::Resync).is_err() {
                return;
            }
            connected_before = true;
            let mut pending: Vec<u8> = Vec::new();
            loop {
                let chunk = match tokio::time::timeout(WATCH_SILENCE, resp.chunk()).await {
                    Ok(Ok(Some(c))) => c,
                    _ => break,
                };
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let line = &line[..line.len() - 1];
                    if line.is_empty() {
                        continue;
                    }
                    match serde_json::from_slice::<Change>(line) {
                        Ok(c) => {
                            if tx.send(c).is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(%url, "unreadable directory change skipped: {e}"),
                    }
                }
                if pending.len() > MAX_WATCH_LINE {
                    tracing::warn!(%url, "directory watch line over {MAX_WATCH_LINE} bytes; reconnecting");
                    break;
                }
            }
            if tx.send(Change::Resync).is_err() {
                return;
            }
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}

#[async_trait]
impl Directory for HttpDirectory {
    async fn get(&self, region: RegionId) -> Result<Option<Placement>, DirectoryError> {
        self.call(self.client.get(format!("{}/directory/{region}", self.base))).await
    }

    async fn list(&self) -> Result<Vec<(RegionId, Placement)>, DirectoryError> {
        self.call(self.client.get(format!("{}/directory", self.base))).await
    }

    async fn compare_and_swap(
        &self,
        region: RegionId,
        expected: Option<u64>,
        new: Placement,
    ) -> Result<bool, DirectoryError> {
        let req = CasRequest { expected, new };
        let a: CasAnswer =
            self.call(self.client.post(format!("{}/directory/{region}/cas", self.base)).json(&req)).await?;
        Ok(a.swapped)
    }

    async fn heartbeat(&self, host: &HostRecord, ttl: Duration) -> Result<(), DirectoryError> {
        let req = HeartbeatRequest { host: host.clone(), ttl_ms: ttl.as_millis() as u64 };
        self.send(self.client.post(format!("{}/directory/hosts/heartbeat", self.base)).json(&req)).await?;
        Ok(())
    }

    async fn leave(&self, name: &str) -> Result<(), DirectoryError> {
        self.send(self.client.delete(format!("{}/directory/hosts/{name}", self.base))).await?;
        Ok(())
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, DirectoryError> {
        self.call(self.client.get(format!("{}/directory/hosts", self.base))).await
    }

    async fn watch(&self) -> Result<broadcast::Receiver<Change>, DirectoryError> {
        let (tx, rx) = broadcast::channel(WATCH_BUFFER);
        let url = format!("{}/directory/watch", self.base);
        // The first connection is made here, so changes made after `watch` returns are seen.
        let resp = self.send(self.streaming.get(&url)).await?;
        tokio::spawn(follow(url, self.streaming.clone(), tx, Some(resp)));
        Ok(rx)
    }
}

fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
