//! The dashboard's view of a cluster, read from the hosts' control APIs and the directory, and
//! its actions done through the same control API as `terrane migrate` (with the control token).
//! A drain is the orchestrator's (`POST /hosts/NAME/drain`, the one drain implementation), so
//! the view needs the orchestrator's URL for it. `terrane run` points it at its two in-process
//! hosts and its orchestrator; nothing here needs them in-process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use directory::Directory;
use host::stats::RegionStats;
use serde::Deserialize;
use web::limits::MAX_RECENT_MIGRATIONS;
use web::{Cluster, ClusterView, HostView, MigrationView, RegionView, ViewError};
use world::RegionId;

/// How long one look at a host may take before it counts as not answering.
const LOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// A host as the view reaches it.
#[derive(Clone, Debug)]
pub struct HostEndpoint {
    /// Its name in the directory (link address).
    pub name: String,
    /// Its control API, `http://ADDR`.
    pub api: String,
}

/// A cluster read over HTTP: hosts' control APIs plus the directory.
pub struct HttpCluster {
    inner: Arc<Inner>,
}

struct Inner {
    hosts: Vec<HostEndpoint>,
    directory: Arc<dyn Directory>,
    http: reqwest::Client,
    /// The orchestrator's base URL, which drains go through (none: drains are refused).
    orchestrator: Option<String>,
}

/// `GET /` of a host.
#[derive(Deserialize)]
struct HostInfo {
    cores: usize,
}

/// `GET /migrations` of a host (the fields the dashboard shows).
#[derive(Deserialize)]
struct MigrationStatus {
    id: u64,
    region: String,
    to: String,
    phase: String,
    rounds: u32,
    bytes: u64,
    done: bool,
    committed: bool,
    freeze_ms: Option<f64>,
    total_ms: Option<f64>,
    abort_reason: Option<String>,
    bytes_per_round: Vec<u64>,
}

/// What one host said when looked at (`None`: it did not answer).
struct Look {
    cores: usize,
    regions: Vec<RegionStats>,
    migrations: Vec<MigrationStatus>,
}

impl HttpCluster {
    /// `token`: the control token the hosts require for changes.
    pub fn new(
        hosts: Vec<HostEndpoint>,
        directory: Arc<dyn Directory>,
        token: Option<&str>,
    ) -> anyhow::Result<HttpCluster> {
        let http = reqwest::Client::builder()
            .timeout(LOOK_TIMEOUT)
            .default_headers(crate::migrate_cmd::bearer_headers(token)?)
            .build()?;
        Ok(HttpCluster { inner: Arc::new(Inner { hosts, directory, http, orchestrator: None }) })
    }

    /// Drains go to the orchestrator at `url` (e.g. `http://127.0.0.1:7070`).
    pub fn with_orchestrator(self, url: &str) -> HttpCluster {
        let mut inner = Arc::into_inner(self.inner).expect("set up before the view is shared");
        inner.orchestrator = Some(url.trim_end_matches('/').to_string());
        HttpCluster { inner: Arc::new(inner) }
    }
}

impl Inner {
    async fn get<T: serde::de::DeserializeOwned>(&self, url: String) -> Result<T, String> {
        let resp = self.http.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: {}", resp.status()));
        }
        resp.json().await.map_err(|e| format!("{url}: {e}"))
    }

    async fn look(&self, h: &HostEndpoint) -> Option<Look> {
        let (info, regions, migrations) = tokio::join!(
            self.get::<HostInfo>(format!("{}/", h.api)),
            self.get::<Vec<RegionStats>>(format!("{}/regions", h.api)),
            self.get::<Vec<MigrationStatus>>(format!("{}/migrations", h.api)),
        );
        Some(Look { cores: info.ok()?.cores, regions: regions.ok()?, migrations: migrations.ok()? })
    }

    fn migration_views(&self, looks: &[(HostEndpoint, Option<Look>)]) -> Vec<MigrationView> {
        let mut all: Vec<MigrationView> = Vec::new();
        for (h, look) in looks {
            let Some(look) = look else { continue };
            let recent = look.migrations.len().saturating_sub(MAX_RECENT_MIGRATIONS);
            for m in &look.migrations[recent..] {
                all.push(MigrationView {
                    id: format!("{}/{}", h.name, m.id),
                    region: m.region.clone(),
                    from: h.name.clone(),
                    to: m.to.clone(),
                    phase: m.phase.clone(),
                    done: m.done,
                    committed: m.committed,
                    rounds: m.rounds,
                    bytes: m.bytes,
                    bytes_per_round: m.bytes_per_round.clone(),
                    freeze_ms: m.freeze_ms,
                    total_ms: m.total_ms,
                    abort_reason: m.abort_reason.clone(),
                });
            }
        }
        let recent = all.len().saturating_sub(MAX_RECENT_MIGRATIONS);
        all.split_off(recent)
    }

    async fn looks(&self) -> Vec<(HostEndpoint, Option<Look>)> {
        let mut out = Vec::new();
        for h in &self.hosts {
            out.push((h.clone(), self.look(h).await));
        }
        out
    }

    async fn cluster(&self) -> Result<Cluster, ViewError> {
        let looks = self.looks().await;
        let placements =
            self.directory.list().await.map_err(|e| ViewError::Unreachable(format!("the directory: {e}")))?;
        let mut stats: HashMap<(String, String), &RegionStats> = HashMap::new();
        for (h, look) in &looks {
            for s in look.iter().flat_map(|l| &l.regions) {
                stats.insert((h.name.clone(), s.region.clone()), s);
            }
        }
        let regions = placements
            .iter()
            .map(|(r, p)| {
                let s = stats.get(&(p.host.clone(), r.to_string()));
                RegionView {
                    region: r.to_string(),
                    x: r.x,
                    y: r.y,
                    host: p.host.clone(),
                    epoch: p.epoch,
                    avatars: s.map_or(0, |s| s.avatars),
                    entities: s.map_or(0, |s| s.entities),
                    tick_p99_ms: s.map_or(0.0, |s| s.tick_p99_ms),
                    budget_ms: s.map_or(0.0, |s| s.budget_ms),
                }
            })
            .collect();
        let hosts = looks
            .iter()
            .map(|(h, look)| {
                let (cores, busy, count) = match look {
                    Some(l) => (
                        l.cores,
                        l.regions
                            .iter()
                            .map(|s| s.tick_p50_ms * f64::from(s.rate_hz) / 1000.0)
                            .sum::<f64>()
                            .max(0.0),
                        l.regions.len(),
                    ),
                    None => (0, 0.0, 0),
                };
                HostView {
                    name: h.name.clone(),
                    api: h.api.clone(),
                    cores,
                    regions: count,
                    busy_cores: busy,
                    load: if cores > 0 { busy / cores as f64 } else { 0.0 },
                    up: look.is_some(),
                }
            })
            .collect();
        Ok(Cluster { hosts, regions, migrations: self.migration_views(&looks) })
    }

    fn endpoint(&self, name: &str) -> Result<&HostEndpoint, ViewError> {
        self.hosts.iter().find(|h| h.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            ViewError::Unknown(format!("no host {name} in this cluster (hosts: {})", known.join(", ")))
        })
    }

    /// Starts a migration through the owner's control API; returns the owner and the id.
    async fn start_migration(&self, region: RegionId, to: &str) -> Result<(HostEndpoint, u64), ViewError> {
        self.endpoint(to)?;
        let owner = self
            .directory
            .get(region)
            .await
            .map_err(|e| ViewError::Unreachable(format!("the directory: {e}")))?
            .ok_or_else(|| ViewError::Unknown(format!("region {region} is not in the directory")))?;
        if owner.host == to {
            return Err(ViewError::Refused(format!("region {region} already runs on {to}")));
        }
        let from = self.endpoint(&owner.host)?.clone();
        let url = format!("{}/regions/{region}/migrate", from.api);
        let resp = self
            .http
            .post(&url)
            .json(&serde_json::json!({ "to": to }))
            .send()
            .await
            .map_err(|e| ViewError::Unreachable(format!("cannot reach {}: {e}", from.api)))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let why = body["error"].as_str().unwrap_or("no reason given").to_string();
        match status.as_u16() {
            200..=299 => Ok((from, body["id"].as_u64().unwrap_or(0))),
            404 => Err(ViewError::Unknown(why)),
            401 | 403 | 409 => Err(ViewError::Refused(format!("{} refused: {why}", from.name))),
            _ => Err(ViewError::Unreachable(format!("{} answered {status}: {why}", from.name))),
        }
    }
}

#[async_trait]
impl ClusterView for HttpCluster {
    async fn cluster(&self) -> Result<Cluster, ViewError> {
        self.inner.cluster().await
    }

    async fn migrations(&self) -> Result<Vec<MigrationView>, ViewError> {
        let mut looks = Vec::new();
        for h in &self.inner.hosts {
            let migrations = self.inner.get(format!("{}/migrations", h.api)).await.ok();
            looks
                .push((h.clone(), migrations.map(|m| Look { cores: 0, regions: Vec::new(), migrations: m })));
        }
        Ok(self.inner.migration_views(&looks))
    }

    async fn migrate(&self, region: RegionId, to: &str) -> Result<String, ViewError> {
        let (from, id) = self.inner.start_migration(region, to).await?;
        Ok(format!("migration {id} of region {region} from {} to {to} started", from.name))
    }

    async fn drain(&self, host: &str) -> Result<String, ViewError> {
        self.inner.endpoint(host)?;
        let Some(base) = &self.inner.orchestrator else {
            return Err(ViewError::Refused("this cluster has no orchestrator to drain a host".into()));
        };
        let url = format!("{base}/hosts/{host}/drain");
        let resp = self
            .inner
            .http
            .post(&url)
            .send()
            .await
            .map_err(|e| ViewError::Unreachable(format!("the orchestrator ({url}): {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let why = body["error"].as_str().map_or_else(|| status.to_string(), str::to_string);
            return Err(if status.is_client_error() {
                ViewError::Refused(format!("the orchestrator refused: {why}"))
            } else {
                ViewError::Unreachable(format!("the orchestrator ({url}): {why}"))
            });
        }
        let d: orchestrator::brain::DrainStatus = resp
            .json()
            .await
            .map_err(|e| ViewError::Unreachable(format!("the orchestrator ({url}) answered badly: {e}")))?;
        Ok(format!(
            "draining {host}: its {} regions move one at a time by live migration (the orchestrator's drain)",
            d.regions_at_start
        ))
    }
}
