//! The region directory: region → (host, epoch), and the hosts of the cluster with their
//! capacity, addresses and liveness. The epoch's compare-and-swap is the single commit point of
//! a migration: whoever holds the current epoch owns the region, and a host whose epoch is stale
//! must not act for it.
//!
//! Backends: [`MemoryDirectory`] (in-process, optionally persisted to a file; the default of
//! `terrane run` and the orchestrator), [`HttpDirectory`], a client of a directory served over
//! HTTP by [`router`], and (feature `etcd`) `EtcdDirectory`, the cluster's directory in etcd:
//! a lease per host for liveness, transactions for the epochs, watches for changes.

#[cfg(feature = "etcd")]
mod etcd;
mod http;
mod memory;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use world::RegionId;

#[cfg(feature = "etcd")]
pub use etcd::EtcdDirectory;
pub use http::{router, CasAnswer, CasRequest, HeartbeatRequest, HttpDirectory, REQUEST_TIMEOUT};
pub use memory::MemoryDirectory;

/// Changes a watcher may fall behind by before it is told to re-read everything ([`Change::Resync`]).
pub const WATCH_BUFFER: usize = 1024;
/// Shortest liveness TTL a host may ask for (etcd itself refuses leases much shorter).
pub const MIN_HOST_TTL: Duration = Duration::from_secs(1);
/// Longest liveness TTL a host may ask for.
pub const MAX_HOST_TTL: Duration = Duration::from_secs(300);
/// Longest host name or address accepted in a registration.
pub const MAX_HOST_FIELD: usize = 256;
/// Most hosts one directory keeps.
pub const MAX_HOSTS: usize = 4096;

/// Where a region lives: the owning host's link address and the ownership epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub host: String,
    pub epoch: u64,
}

/// A host as it registers itself: its name (the link address other hosts and gateways connect
/// to, and the `host` of a [`Placement`]), its control API and its capacity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    /// Base URL of the host's control API, e.g. `http://127.0.0.1:7071`.
    pub api: String,
    /// Threads that tick regions there.
    pub cores: u32,
}

/// One change seen by a watcher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A region's placement was set (`None`: removed).
    Region { region: RegionId, placement: Option<Placement> },
    /// A host registered (or registered again after its liveness had expired).
    HostUp(HostRecord),
    /// A host's liveness expired or it left.
    HostDown { name: String },
    /// The watcher fell behind or its connection was lost: changes may have been missed, so
    /// re-read everything with `list` and `hosts`.
    Resync,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("directory unreachable: {0}")]
    Unreachable(String),
    #[error("directory answered with an error: {0}")]
    Refused(String),
    #[error("directory file {path}: {error}")]
    File { path: PathBuf, error: String },
    #[error("invalid request to the directory: {0}")]
    Invalid(String),
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

    /// Registers `host`, or renews its liveness, for `ttl` from now. A host calls it a few times
    /// per TTL; if it stops (killed, partitioned), it drops out of [`Directory::hosts`] within
    /// about `ttl` and watchers see [`Change::HostDown`].
    async fn heartbeat(&self, host: &HostRecord, ttl: Duration) -> Result<(), DirectoryError>;
    /// Takes a host out at once (a clean stop).
    async fn leave(&self, name: &str) -> Result<(), DirectoryError>;
    /// The live hosts, by name.
    async fn hosts(&self) -> Result<Vec<HostRecord>, DirectoryError>;
    /// Every change from now on. A receiver that lags gets `Lagged` (or [`Change::Resync`]):
    /// treat both as "re-read everything".
    async fn watch(&self) -> Result<broadcast::Receiver<Change>, DirectoryError>;
}

/// Checks a registration before it is stored (names and URLs are external input).
pub fn check_host(host: &HostRecord, ttl: Duration) -> Result<(), DirectoryError> {
    if host.name.is_empty() || host.name.len() > MAX_HOST_FIELD || host.name.contains('/') {
        return Err(DirectoryError::Invalid(format!("host name {:?} (want HOST:PORT)", host.name)));
    }
    if host.api.len() > MAX_HOST_FIELD {
        return Err(DirectoryError::Invalid(format!(
            "host {} has an API URL over {MAX_HOST_FIELD} bytes",
            host.name
        )));
    }
    if !(MIN_HOST_TTL..=MAX_HOST_TTL).contains(&ttl) {
        return Err(DirectoryError::Invalid(format!(
            "liveness TTL {ttl:?} outside {MIN_HOST_TTL:?}..={MAX_HOST_TTL:?}"
        )));
    }
    Ok(())
}

/// Key prefix of a cluster's directory in etcd unless the URL names one.
pub const DEFAULT_ETCD_PREFIX: &str = "/terrane/";

/// Opens the directory a URL names: `http://HOST:PORT` (an orchestrator's embedded directory)
/// or `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]` (needs a build with the `etcd` feature).
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Directory>, DirectoryError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(std::sync::Arc::new(HttpDirectory::new(url)));
    }
    let Some(rest) = url.strip_prefix("etcd://") else {
        return Err(DirectoryError::Invalid(format!(
            "{url:?}: a directory URL starts with http:// (an orchestrator) or etcd:// (an etcd cluster)"
        )));
    };
    let (hosts, prefix) = match rest.split_once('/') {
        Some((h, p)) if !p.is_empty() => (h, format!("/{p}")),
        Some((h, _)) => (h, DEFAULT_ETCD_PREFIX.to_string()),
        None => (rest, DEFAULT_ETCD_PREFIX.to_string()),
    };
    let endpoints: Vec<String> =
        hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("http://{h}")).collect();
    if endpoints.is_empty() {
        return Err(DirectoryError::Invalid(format!("{url:?} names no etcd endpoint")));
    }
    open_etcd(&endpoints, &prefix).await
}

#[cfg(feature = "etcd")]
async fn open_etcd(
    endpoints: &[String],
    prefix: &str,
) -> Result<std::sync::Arc<dyn Directory>, DirectoryError> {
    Ok(std::sync::Arc::new(EtcdDirectory::connect(endpoints, prefix).await?))
}

#[cfg(not(feature = "etcd"))]
async fn open_etcd(_: &[String], _: &str) -> Result<std::sync::Arc<dyn Directory>, DirectoryError> {
    Err(DirectoryError::Invalid(
        "this terrane was built without etcd support: build it with `--features directory/etcd` \
         (needs Debian's protobuf-compiler and libprotobuf-dev)"
            .into(),
    ))
}
