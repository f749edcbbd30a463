//! The orchestrator: the cluster's control plane. It collects the hosts' load reports, reads
//! the directory (placements, live hosts, changes as they happen), runs the placement policy on
//! a period and acts on it through the hosts' control APIs: live migrations for busy regions,
//! packing and drains, and restarts when a host dies: from the region's checkpoint and
//! write-ahead log when the dead host kept them in a store the new host shares, else from the
//! latest snapshot the orchestrator holds. Every
//! decision is logged (target `orchestrator`) and kept for `GET /status`.
//!
//! The decisions themselves are made by [`brain::Brain`], a state machine without I/O; this
//! module only feeds it and carries out its actions.

pub mod api;
pub mod brain;
pub mod limits;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use directory::{Change, Directory};
use parking_lot::Mutex;
use placement::Policy;
use serde::Deserialize;
use tokio::sync::Notify;
use world::RegionId;

use brain::{Action, Brain, Outcome};
use limits::*;

#[derive(Clone, Debug)]
pub struct OrchestratorConfig {
    pub policy: Policy,
    /// Sent to hosts as `Authorization: Bearer`, and required on this API's writes when set.
    pub control_token: Option<String>,
    pub plan_every: Duration,
    pub snapshot_every: Duration,
    pub start_grace: Duration,
    /// Terrain seed of a region restarted with no snapshot held (everything in it is lost).
    pub world_seed: u32,
    /// When false the orchestrator only watches and reports (no moves of its own; drains and
    /// failovers still act).
    pub autoplace: bool,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            policy: Policy::default(),
            control_token: None,
            plan_every: PLAN_EVERY,
            snapshot_every: SNAPSHOT_EVERY,
            start_grace: START_GRACE,
            world_seed: 1,
            autoplace: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("placement policy: {0}")]
    Policy(#[from] placement::PolicyError),
}

/// A snapshot held for failover.
struct Held {
    bytes: Arc<Vec<u8>>,
    fetched_ms: u64,
}

pub struct Orchestrator {
    directory: Arc<dyn Directory>,
    brain: Mutex<Brain>,
    snapshots: Mutex<HashMap<RegionId, Held>>,
    /// The shared store each host last reported (hosts without one are absent).
    stores: Mutex<HashMap<String, String>>,
    client: reqwest::Client,
    config: OrchestratorConfig,
    clock: Instant,
    /// Wakes the planning loop early (a host died, a drain was asked for).
    wake: Notify,
}

#[derive(Deserialize)]
struct Started {
    id: u64,
}

/// What a host says it rebuilt from the store (`POST /regions/X,Y/recover`).
#[derive(Deserialize)]
struct RecoverAnswer {
    checkpoint_seq: u64,
    replayed: u64,
    tick: u64,
}

#[derive(Deserialize)]
struct MigrationProgress {
    done: bool,
    committed: bool,
    #[serde(default)]
    abort_reason: Option<String>,
}

impl Orchestrator {
    /// Starts the orchestrator's loops on the current tokio runtime.
    pub fn start(
        directory: Arc<dyn Directory>,
        config: OrchestratorConfig,
    ) -> Result<Arc<Orchestrator>, OrchestratorError> {
        config.policy.check()?;
        let client = reqwest::Client::builder()
            .timeout(HOST_REQUEST_TIMEOUT)
            .build()
            .expect("building an HTTP client");
        let clock = Instant::now();
        let o = Arc::new(Orchestrator {
            directory,
            brain: Mutex::new({
                let mut b = Brain::new(config.policy.clone(), 0, config.start_grace.as_millis() as u64);
                b.autoplace = config.autoplace;
                b
            }),
            snapshots: Mutex::new(HashMap::new()),
            stores: Mutex::new(HashMap::new()),
            client,
            config,
            clock,
            wake: Notify::new(),
        });
        tokio::spawn(o.clone().refresh_loop());
        tokio::spawn(o.clone().plan_loop());
        tokio::spawn(o.clone().snapshot_loop());
        Ok(o)
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.directory
    }

    pub fn status(&self) -> brain::Status {
        let mut s = self.brain.lock().status(self.now_ms());
        let ages = self.snapshot_ages();
        for r in &mut s.regions {
            r.snapshot_age_ms = ages.get(&r.region).copied();
        }
        s
    }

    pub fn report(&self, report: directory::report::HostReport) {
        {
            let mut stores = self.stores.lock();
            match &report.shared_store {
                Some(s) if stores.len() < MAX_HOSTS || stores.contains_key(&report.host.name) => {
                    stores.insert(report.host.name.clone(), s.clone());
                }
                Some(_) => {}
                None => {
                    stores.remove(&report.host.name);
                }
            }
        }
        self.brain.lock().handle_report(self.now_ms(), report);
    }

    pub fn drain(&self, host: &str) -> Result<brain::DrainStatus, brain::DrainError> {
        let s = self.brain.lock().request_drain(self.now_ms(), host);
        self.wake.notify_one();
        s
    }

    /// Lets a drained host take regions again (see [`Brain::request_undrain`]).
    pub fn undrain(&self, host: &str) -> Result<Option<brain::DrainStatus>, brain::DrainError> {
        let s = self.brain.lock().request_undrain(self.now_ms(), host);
        self.wake.notify_one();
        s
    }

    pub fn drain_status(&self, host: &str) -> Option<brain::DrainStatus> {
        self.brain.lock().drain_status(host)
    }

    /// Reads the live hosts and the placements into the brain.
    async fn refresh(&self) {
        match self.directory.hosts().await {
            Ok(hosts) => self.brain.lock().handle_hosts(self.now_ms(), hosts),
            Err(e) => tracing::warn!(target: "orchestrator", "cannot read the hosts from the directory: {e}"),
        }
        match self.directory.list().await {
            Ok(list) => self.brain.lock().handle_placements(self.now_ms(), list),
            Err(e) => tracing::warn!(target: "orchestrator", "cannot read the directory: {e}"),
        }
    }

    async fn refresh_loop(self: Arc<Self>) {
        let mut watch = match self.directory.watch().await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(target: "orchestrator", "no directory watch (polling only): {e}");
                None
            }
        };
        let mut every = tokio::time::interval(REFRESH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // What woke us: the period (re-read everything), or a change.
            let change = match watch.as_mut() {
                Some(w) => tokio::select! {
                    _ = every.tick() => None,
                    c = w.recv() => Some(c),
                },
                None => {
                    every.tick().await;
                    None
                }
            };
            let change = match change {
                None => None,
                Some(Ok(c)) => Some(c),
                // Fell behind: re-read everything.
                Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => Some(Change::Resync),
                Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    tracing::warn!(target: "orchestrator", "the directory watch ended (polling only)");
                    watch = None;
                    None
                }
            };
            match change {
                // A placement changed: take it as it is, no need to re-read the rest.
                Some(Change::Region { region, placement: Some(p) }) => {
                    self.brain.lock().handle_placements(self.now_ms(), vec![(region, p)]);
                }
                Some(Change::HostDown { name }) => {
                    tracing::debug!(target: "orchestrator", host = %name, "watched: host down");
                    self.refresh().await;
                    self.wake.notify_one();
                }
                _ => self.refresh().await,
            }
        }
    }

    async fn plan_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.config.plan_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = self.wake.notified() => {}
            }
            let actions = {
                let mut b = self.brain.lock();
                let now = self.now_ms();
                b.expire_flights(now);
                b.poll_actions(now)
            };
            for a in actions {
                let me = self.clone();
                tokio::spawn(async move { me.act(a).await });
            }
        }
    }

    async fn act(self: Arc<Self>, action: Action) {
        let (region, outcome) = match action {
            Action::Migrate { mv, from_api } => (mv.region, self.migrate(&mv, &from_api).await),
            Action::Restore { mv, to_api } => (mv.region, self.restore(&mv, &to_api).await),
            Action::Fence { region, host, api } => {
                self.fence(region, &host, &api).await;
                return;
            }
        };
        self.brain.lock().handle_outcome(self.now_ms(), region, outcome);
        // Read the new owner at once rather than at the next refresh.
        self.refresh().await;
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.control_token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn migrate(&self, mv: &placement::Move, from_api: &str) -> Outcome {
        let url = format!("{from_api}/regions/{}/migrate", mv.region);
        let req = self.authorized(self.client.post(&url).json(&serde_json::json!({ "to": mv.to })));
        let id = match req.send().await {
            Ok(r) if r.status().is_success() => match r.json::<Started>().await {
                Ok(s) => s.id,
                Err(e) => return Outcome::Failed(format!("{url} answered badly: {e}")),
            },
            Ok(r) => {
                let status = r.status();
                return Outcome::Failed(format!("{url}: {status}: {}", r.text().await.unwrap_or_default()));
            }
            Err(e) => return Outcome::Failed(format!("{url}: {e}")),
        };
        let url = format!("{from_api}/migrations/{id}");
        let deadline = tokio::time::Instant::now() + MIGRATION_DEADLINE;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(MIGRATION_POLL).await;
            let p = match self.authorized(self.client.get(&url)).send().await {
                Ok(r) if r.status().is_success() => r.json::<MigrationProgress>().await.ok(),
                _ => None,
            };
            match p {
                Some(p) if p.done && p.committed => return Outcome::Committed,
                Some(p) if p.done => {
                    return Outcome::Failed(format!(
                        "aborted: {}",
                        p.abort_reason.unwrap_or_else(|| "no reason given".into())
                    ))
                }
                Some(_) => {}
                None => {
                    // The source may have died mid-way: the directory says how it ended.
                    if let Ok(Some(p)) = self.directory.get(mv.region).await {
                        if p.host == mv.to {
                            return Outcome::Committed;
                        }
                    }
                }
            }
        }
        Outcome::Failed(format!("migration {id} had no outcome after {MIGRATION_DEADLINE:?}"))
    }

    /// Restarts a region of a dead host on `to_api`: from the store both shared when they did
    /// (every acknowledged change kept), else from the latest snapshot held.
    async fn restore(&self, mv: &placement::Move, to_api: &str) -> Outcome {
        let (from_store, to_store) = {
            let stores = self.stores.lock();
            (stores.get(&mv.from).cloned(), stores.get(&mv.to).cloned())
        };
        let snapshot_held = self.snapshots.lock().contains_key(&mv.region);
        let fallback_why = match (from_store, to_store) {
            (Some(a), Some(b)) if a == b => match self.recover_from_store(mv, to_api, &b).await {
                Ok(()) => return Outcome::Committed,
                Err(why) => why,
            },
            // Which store the dead host used is not known (e.g. this orchestrator started after
            // its last report) and no snapshot is held: what the new host's store holds beats
            // starting the region empty (the host answers 404 when it holds nothing).
            (None, Some(b)) if !snapshot_held => match self.recover_from_store(mv, to_api, &b).await {
                Ok(()) => return Outcome::Committed,
                Err(why) => why,
            },
            _ => format!("{} and {} share no durable store", mv.from, mv.to),
        };
        self.restore_snapshot(mv, to_api, &fallback_why).await
    }

    /// Asks `to_api` to rebuild the region from the shared store and take it over.
    async fn recover_from_store(
        &self,
        mv: &placement::Move,
        to_api: &str,
        store: &str,
    ) -> Result<(), String> {
        let url = format!("{to_api}/regions/{}/recover", mv.region);
        let r = self.authorized(self.client.post(&url)).send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = r.status();
        if !status.is_success() {
            return Err(format!("{url}: {status}: {}", r.text().await.unwrap_or_default()));
        }
        let info: RecoverAnswer = r.json().await.map_err(|e| format!("{url} answered badly: {e}"))?;
        let text = format!(
            "fail over {}: restarted on {} from the store {store} (checkpoint at log record {} + {}              records replayed, tick {}): every acknowledged change is kept; lost: motion and              unacknowledged inputs since the last stored tick",
            mv.region, mv.to, info.checkpoint_seq, info.replayed, info.tick
        );
        tracing::warn!(target: "orchestrator", region = %mv.region, "{text}");
        self.brain.lock().note(self.now_ms(), text);
        Ok(())
    }

    /// Restarts a region of a dead host on `to_api` from the latest snapshot held.
    async fn restore_snapshot(&self, mv: &placement::Move, to_api: &str, why: &str) -> Outcome {
        let held = self.snapshots.lock().get(&mv.region).map(|h| (h.bytes.clone(), h.fetched_ms));
        let now = self.now_ms();
        let (bytes, text) = match held {
            Some((bytes, at)) => {
                let text = format!(
                    "fail over {}: restarted on {} from the orchestrator's snapshot of {:.1} s ago ({why}): \
                     motion and every change since then are lost",
                    mv.region,
                    mv.to,
                    now.saturating_sub(at) as f64 / 1000.0
                );
                tracing::warn!(target: "orchestrator", region = %mv.region, "{text}");
                (bytes, text)
            }
            None => {
                let text = format!(
                    "fail over {}: no snapshot was held and {why}: it restarts on {} as a new region from \
                     seed {}; everything in it is lost",
                    mv.region, mv.to, self.config.world_seed
                );
                tracing::error!(target: "orchestrator", region = %mv.region, "{text}");
                (Arc::new(world::Region::new(mv.region, self.config.world_seed).snapshot()), text)
            }
        };
        self.brain.lock().note(self.now_ms(), text);
        let url = format!("{to_api}/regions/{}/restore", mv.region);
        let req = self.authorized(self.client.post(&url).body(bytes.as_ref().clone()));
        match req.send().await {
            Ok(r) if r.status().is_success() => Outcome::Committed,
            Ok(r) => {
                let status = r.status();
                Outcome::Failed(format!("{url}: {status}: {}", r.text().await.unwrap_or_default()))
            }
            Err(e) => Outcome::Failed(format!("{url}: {e}")),
        }
    }

    /// Unloads a stale copy of a region from a host that no longer owns it.
    async fn fence(&self, region: RegionId, host: &str, api: &str) {
        let url = format!("{api}/regions/{region}");
        match self.authorized(self.client.delete(&url)).send().await {
            Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND => {
                tracing::info!(target: "orchestrator", %region, host, "stale copy unloaded");
            }
            Ok(r) => {
                tracing::warn!(target: "orchestrator", %region, host, status = %r.status(), "could not unload a stale copy")
            }
            Err(e) => {
                tracing::warn!(target: "orchestrator", %region, host, "could not unload a stale copy: {e}")
            }
        }
    }

    async fn snapshot_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.config.snapshot_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let regions = self.brain.lock().live_regions();
            for (region, api) in regions {
                self.fetch_snapshot(region, &api).await;
            }
        }
    }

    async fn fetch_snapshot(&self, region: RegionId, api: &str) {
        let url = format!("{api}/regions/{region}/snapshot");
        let resp = match self.authorized(self.client.get(&url)).send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                tracing::debug!(target: "orchestrator", %url, status = %r.status(), "no snapshot");
                return;
            }
            Err(e) => {
                tracing::debug!(target: "orchestrator", %url, "no snapshot: {e}");
                return;
            }
        };
        if resp.content_length().is_some_and(|l| l as usize > MAX_SNAPSHOT_BYTES) {
            tracing::warn!(target: "orchestrator", %region, "snapshot over {MAX_SNAPSHOT_BYTES} bytes not kept");
            return;
        }
        match resp.bytes().await {
            Ok(b) if b.len() <= MAX_SNAPSHOT_BYTES => {
                let held = Held { bytes: Arc::new(b.to_vec()), fetched_ms: self.now_ms() };
                self.snapshots.lock().insert(region, held);
            }
            Ok(_) => {
                tracing::warn!(target: "orchestrator", %region, "snapshot over {MAX_SNAPSHOT_BYTES} bytes not kept")
            }
            Err(e) => tracing::debug!(target: "orchestrator", %url, "snapshot lost: {e}"),
        }
    }

    /// Age of the snapshot held for each region (for the status API).
    pub fn snapshot_ages(&self) -> HashMap<RegionId, u64> {
        let now = self.now_ms();
        self.snapshots.lock().iter().map(|(r, h)| (*r, now.saturating_sub(h.fetched_ms))).collect()
    }
}
