//! Load reports: what each host tells the orchestrator once a second about itself and each of
//! its regions. Shared here because both sides speak it and the directory is the cluster's
//! common vocabulary.

use serde::{Deserialize, Serialize};
use world::RegionId;

use crate::HostRecord;

/// Most regions in one report (a host runs at most this many).
pub const MAX_REPORTED_REGIONS: usize = 4096;

/// One region's load over the last report window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionReport {
    pub region: RegionId,
    pub avatars: u32,
    /// Entities that are not avatars.
    pub objects: u32,
    pub scripts: u32,
    /// 99th percentile of the tick's cost over the window.
    pub tick_p99_ms: f64,
    /// The tick interval at the region's current rate.
    pub tick_budget_ms: f64,
    /// Mean time per tick spent in scripts, recently.
    pub script_ms: f64,
    pub rate_hz: u32,
}

/// A host's report: who it is, how loaded it is, and each region it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    pub host: HostRecord,
    /// Tick time used per second of wall time over the window, in millicores (1000 = a core).
    pub load_milli: u64,
    pub regions: Vec<RegionReport>,
    /// The durable store the host keeps its regions in, when other hosts can reach it too
    /// (e.g. `postgres://127.0.0.1:5432/terrane`, no credentials): a host sharing it can
    /// restart this host's regions from their checkpoint and write-ahead log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_store: Option<String>,
}
