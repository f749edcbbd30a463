//! The region directory: region → (host, epoch). The epoch's compare-and-swap is the single
//! commit point of a migration: whoever holds the current epoch owns the region, and a host
//! whose epoch is stale must not act for it.
//!
//! Backends: [`MemoryDirectory`] (in-process, optionally persisted to a file; the default of
//! `terrane run` and the orchestrator), and [`HttpDirectory`], a client of a directory served
//! over HTTP by [`router`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use world::RegionId;

/// Where a region lives: the owning host's link address and the ownership epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub host: String,
    pub epoch: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("directory unreachable: {0}")]
    Unreachable(String),
    #[error("directory answered with an error: {0}")]
    Refused(String),
    #[error("directory file {path}: {error}")]
    File { path: PathBuf, error: String },
}

#[async_trait]
pub trait Directory: Send + Sync {
    async fn get(&self, region: RegionId) -> Result<Option<Placement>, DirectoryError>;
    async fn list(&self) -> Result<Vec<(RegionId, Placement)>, DirectoryError>;
    /// Sets the region's placement to `new` only if its current epoch is `expected`
    /// (`None`: the region has no placement yet). Returns whether it swapped.
    async fn compare_and_swap(
        &self,
        region: RegionId,
        expected: Option<u64>,
        new: Placement,
    ) -> Result<bool, DirectoryError>;
}

/// An in-process directory; with a path, every change is written through to a JSON file.
#[derive(Default)]
pub struct MemoryDirectory {
    map: Mutex<BTreeMap<RegionId, Placement>>,
    path: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct FileForm {
    regions: Vec<(RegionId, Placement)>,
}

impl MemoryDirectory {
    pub fn new() -> MemoryDirectory {
        MemoryDirectory::default()
    }

    /// Loads the file if it exists; changes are written back to it.
    pub fn persistent(path: PathBuf) -> Result<MemoryDirectory, DirectoryError> {
        let file_err =
            |e: &dyn std::fmt::Display| DirectoryError::File { path: path.clone(), error: e.to_string() };
        let map = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: FileForm = serde_json::from_slice(&bytes).map_err(|e| file_err(&e))?;
                f.regions.into_iter().collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(file_err(&e)),
        };
        Ok(MemoryDirectory { map: Mutex::new(map), path: Some(path) })
    }

    fn persist(&self, map: &BTreeMap<RegionId, Placement>) -> Result<(), DirectoryError> {
        let Some(path) = &self.path else { return Ok(()) };
        let file = FileForm { regions: map.iter().map(|(r, p)| (*r, p.clone())).collect() };
        let bytes = serde_json::to_vec_pretty(&file).expect("serializing to memory cannot fail");
        // Write then rename, so a crash never leaves half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| DirectoryError::File { path: path.clone(), error: e.to_string() })
    }
}

#[async_trait]
impl Directory for MemoryDirectory {
    async fn get(&self, region: RegionId) -> Result<Option<Placement>, DirectoryError> {
        Ok(self.map.lock().get(&region).cloned())
    }

    async fn list(&self) -> Result<Vec<(RegionId, Placement)>, DirectoryError> {
        Ok(self.map.lock().iter().map(|(r, p)| (*r, p.clone())).collect())
    }

    async fn compare_and_swap(
        &self,
        region: RegionId,
        expected: Option<u64>,
        new: Placement,
    ) -> Result<bool, DirectoryError> {
        let mut map = self.map.lock();
        if map.get(&region).map(|p| p.epoch) != expected {
            return Ok(false);
        }
        let old = map.insert(region, new);
        if let Err(e) = self.persist(&map) {
            // Not durable: undo, so memory never runs ahead of the file.
            match old {
                Some(o) => map.insert(region, o),
                None => map.remove(&region),
            };
            return Err(e);
        }
        Ok(true)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CasRequest {
    pub expected: Option<u64>,
    pub new: Placement,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CasAnswer {
    pub swapped: bool,
}

/// Serves a directory over HTTP: `GET /directory`, `GET /directory/X,Y`,
/// `POST /directory/X,Y/cas` with a [`CasRequest`].
pub fn router(dir: Arc<dyn Directory>) -> Router {
    Router::new()
        .route("/directory", get(http_list))
        .route("/directory/{region}", get(http_get))
        .route("/directory/{region}/cas", post(http_cas))
        .with_state(dir)
}

fn fail(status: StatusCode, msg: impl ToString) -> Response {
    (status, Json(serde_json::json!({ "error": msg.to_string() }))).into_response()
}

async fn http_list(State(dir): State<Arc<dyn Directory>>) -> Response {
    match dir.list().await {
        Ok(l) => Json(l).into_response(),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn http_get(State(dir): State<Arc<dyn Directory>>, Path(region): Path<String>) -> Response {
    let Ok(region) = region.parse::<RegionId>() else {
        return fail(StatusCode::BAD_REQUEST, format!("{region:?} is not a region (write X,Y)"));
    };
    match dir.get(region).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, e),
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
    match dir.compare_and_swap(region, req.expected, req.new).await {
        Ok(swapped) => Json(CasAnswer { swapped }).into_response(),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// A client of a directory served by [`router`] (the orchestrator's).
pub struct HttpDirectory {
    base: String,
    client: reqwest::Client,
}

/// How long one directory request may take before it counts as unreachable.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl HttpDirectory {
    pub fn new(base: &str) -> HttpDirectory {
        let client =
            reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().expect("building an HTTP client");
        HttpDirectory { base: base.trim_end_matches('/').to_string(), client }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, DirectoryError> {
        let resp =
            req.send().await.map_err(|e| DirectoryError::Unreachable(format!("{}: {e}", self.base)))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(DirectoryError::Refused(format!("{status}: {body}")));
        }
        resp.json().await.map_err(|e| DirectoryError::Refused(format!("bad answer: {e}")))
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
}
