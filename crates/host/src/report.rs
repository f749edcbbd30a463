//! The host's side of the control plane: it registers in the directory and keeps its liveness
//! up with heartbeats, and once a second it reports its load and each region's to the
//! orchestrator (`POST /reports`), which decides placement from them.

use std::sync::Arc;
use std::time::Duration;

use directory::report::{HostReport, RegionReport, MAX_REPORTED_REGIONS};
use directory::HostRecord;

use crate::net::Net;
use crate::Host;

/// How often a host reports its load.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Default liveness TTL: a host that misses heartbeats this long is taken as dead.
pub const DEFAULT_HOST_TTL: Duration = Duration::from_secs(3);
/// How long one report request may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how a host reports.
#[derive(Clone, Debug)]
pub struct ReportConfig {
    /// The host's control API as others reach it, e.g. `http://127.0.0.1:7071`.
    pub api: String,
    /// The orchestrator's base URL; without it the host only keeps its liveness up.
    pub orchestrator: Option<String>,
    /// Liveness TTL; heartbeats go out three times per TTL.
    pub ttl: Duration,
    /// Sent as `Authorization: Bearer` to the orchestrator.
    pub token: Option<String>,
}

/// Starts the heartbeat and report loops for `net`'s host; they run until the runtime stops.
pub fn start(net: Arc<Net>, config: ReportConfig) {
    let record = HostRecord {
        name: net.name().to_string(),
        api: config.api.trim_end_matches('/').to_string(),
        cores: net.host().cores() as u32,
    };
    let (dir, rec, ttl) = (net.directory().clone(), record.clone(), config.ttl);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(ttl / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            every.tick().await;
            match dir.heartbeat(&rec, ttl).await {
                Ok(()) if failing => {
                    tracing::info!(host = %rec.name, "heartbeats reach the directory again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(host = %rec.name, "heartbeat failed (the cluster may take this host as dead): {e}");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    });
    let Some(orchestrator) = config.orchestrator else { return };
    let url = format!("{}/reports", orchestrator.trim_end_matches('/'));
    let client = match reqwest::Client::builder().timeout(REPORT_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot build an HTTP client for load reports: {e}");
            return;
        }
    };
    let host = net.host().clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(REPORT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            every.tick().await;
            let h = host.clone();
            let rec = record.clone();
            let Ok(report) = tokio::task::spawn_blocking(move || report(&h, rec, REPORT_EVERY)).await else {
                continue;
            };
            let mut req = client.post(&url).json(&report);
            if let Some(t) = &config.token {
                req = req.bearer_auth(t);
            }
            let outcome = match req.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(()) if failing => {
                    tracing::info!(%url, "load reports reach the orchestrator again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(%url, "load report refused or lost: {e}");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    });
}

/// The host's load over the last `window`: per region, the tick p99 of the ticks within it (so
/// a crowd that left stops counting after one window, not after the whole stats window).
pub fn report(host: &Host, record: HostRecord, window: Duration) -> HostReport {
    let mut regions = Vec::new();
    let mut busy_us_per_s = 0.0;
    for id in host.region_ids().into_iter().take(MAX_REPORTED_REGIONS) {
        let Ok(slot) = host.slot(id) else { continue };
        let (avatars, entities, scripts, rate_hz) = {
            let r = slot.region.lock();
            (r.avatar_count(), r.entity_count(), r.script_count(), r.rate_hz())
        };
        let script_ms = slot.scripts.lock().stats().time_ms;
        let per_window = ((f64::from(rate_hz) * window.as_secs_f64()).ceil() as usize).max(1);
        let (p99_us, mean_us) = {
            let s = slot.stats.lock();
            let recent: Vec<u32> = s.recent(per_window);
            let mean = if recent.is_empty() {
                0.0
            } else {
                recent.iter().map(|&c| f64::from(c)).sum::<f64>() / recent.len() as f64
            };
            (crate::stats::percentiles(recent.into_iter()).1, mean)
        };
        busy_us_per_s += mean_us * f64::from(rate_hz);
        regions.push(RegionReport {
            region: id,
            avatars: avatars as u32,
            objects: entities.saturating_sub(avatars) as u32,
            scripts: scripts as u32,
            tick_p99_ms: f64::from(p99_us) / 1000.0,
            tick_budget_ms: 1000.0 / f64::from(rate_hz.max(1)),
            script_ms,
            rate_hz,
        });
    }
    HostReport {
        host: record,
        load_milli: (busy_us_per_s / 1000.0).round() as u64,
        regions,
        shared_store: host.durability().and_then(|d| d.shared_as()).map(str::to_string),
    }
}
