//! What the dashboard shows and the actions it offers, behind one trait, so the same pages work
//! over the in-process hosts of `terrane run` and over a real cluster's orchestrator.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use world::RegionId;

/// The whole cluster at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub hosts: Vec<HostView>,
    pub regions: Vec<RegionView>,
    /// Recent migrations, oldest first (at most `MAX_RECENT_MIGRATIONS`).
    pub migrations: Vec<MigrationView>,
}

/// One host: its name (link address, as in the directory), where its control API is, its cores
/// and how busy they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub name: String,
    pub api: String,
    pub cores: usize,
    pub regions: usize,
    /// Cores' worth of ticking, estimated from the regions' tick costs and rates.
    pub busy_cores: f64,
    /// `busy_cores / cores`: 1.0 is a host whose every core ticks all the time.
    pub load: f64,
    /// False when the host did not answer the last look.
    pub up: bool,
}

/// One region: where it runs, at which epoch, and how heavy it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionView {
    /// "X,Y".
    pub region: String,
    pub x: u16,
    pub y: u16,
    /// The owning host's name, from the directory.
    pub host: String,
    pub epoch: u64,
    pub avatars: usize,
    pub entities: usize,
    pub tick_p99_ms: f64,
    pub budget_ms: f64,
}

/// A migration as the log shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationView {
    /// Unique in the cluster: "SOURCE-HOST/ID".
    pub id: String,
    pub region: String,
    pub from: String,
    pub to: String,
    pub phase: String,
    pub done: bool,
    pub committed: bool,
    pub rounds: u32,
    pub bytes: u64,
    pub bytes_per_round: Vec<u64>,
    /// From the last source tick to the first target tick; `None` until known.
    pub freeze_ms: Option<f64>,
    pub total_ms: Option<f64>,
    pub abort_reason: Option<String>,
}

impl MigrationView {
    /// "running", "committed" or "aborted".
    pub fn outcome(&self) -> &'static str {
        match (self.done, self.committed) {
            (false, _) => "running",
            (true, true) => "committed",
            (true, false) => "aborted",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// No such region or host.
    #[error("{0}")]
    Unknown(String),
    /// The cluster refused the action (already migrating, same host…).
    #[error("{0}")]
    Refused(String),
    /// A host or the directory could not be reached.
    #[error("{0}")]
    Unreachable(String),
}

/// The cluster as the dashboard sees and steers it.
#[async_trait]
pub trait ClusterView: Send + Sync + 'static {
    /// Hosts, regions and recent migrations, now.
    async fn cluster(&self) -> Result<Cluster, ViewError>;
    /// Recent migrations only (cheaper: polled several times a second for the live log).
    async fn migrations(&self) -> Result<Vec<MigrationView>, ViewError>;
    /// Starts a live migration of `region` to host `to`; returns a sentence saying what started.
    async fn migrate(&self, region: RegionId, to: &str) -> Result<String, ViewError>;
    /// Starts moving every region off host `host`; returns a sentence saying what will happen.
    async fn drain(&self, host: &str) -> Result<String, ViewError>;
}
