//! The directory in etcd (v3 API): a region's placement is a key holding JSON, swapped in a
//! transaction guarded by the key's modification revision; a host is a key attached to a lease
//! of its liveness TTL, kept alive by its heartbeats, so etcd deletes it when they stop; a
//! watch on the prefix turns etcd's events into [`Change`]s.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use parking_lot::Mutex;
use tokio::sync::broadcast;
use world::RegionId;

use crate::{check_host, Change, Directory, DirectoryError, HostRecord, Placement, WATCH_BUFFER};

/// How long one etcd request may take.
const ETCD_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts of one compare-and-swap while other writers keep changing the key under it (each
/// failed attempt means someone else's write landed, so this bounds contention, not errors).
const MAX_CAS_ATTEMPTS: usize = 64;
/// Wait before re-establishing a broken watch.
const WATCH_RETRY: Duration = Duration::from_millis(500);

/// A directory kept in etcd under a key prefix (several clusters can share one etcd).
pub struct EtcdDirectory {
    client: Client,
    prefix: String,
    /// The lease of each host this process heartbeats for.
    leases: Mutex<HashMap<String, (i64, HostRecord)>>,
}

fn unreachable(e: etcd_client::Error) -> DirectoryError {
    DirectoryError::Unreachable(format!("etcd: {e}"))
}

impl EtcdDirectory {
    /// Connects to etcd at `endpoints` (e.g. `http://127.0.0.1:2379`); keys go under `prefix`
    /// (e.g. `/terrane/`).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdDirectory, DirectoryError> {
        let options = ConnectOptions::new().with_timeout(ETCD_TIMEOUT).with_connect_timeout(ETCD_TIMEOUT);
        let client = Client::connect(endpoints, Some(options)).await.map_err(unreachable)?;
        let prefix = if prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
        Ok(EtcdDirectory { client, prefix, leases: Mutex::new(HashMap::new()) })
    }

    fn region_key(&self, region: RegionId) -> String {
        format!("{}regions/{region}", self.prefix)
    }

    fn host_key(&self, name: &str) -> String {
        format!("{}hosts/{name}", self.prefix)
    }

    /// Registers the host under a fresh lease.
    async fn register(&self, host: &HostRecord, ttl: Duration) -> Result<(), DirectoryError> {
        let mut c = self.client.clone();
        let secs = ttl.as_secs().max(1) as i64;
        let lease = c.lease_grant(secs, None).await.map_err(unreachable)?.id();
        let value = serde_json::to_vec(host).expect("serializing to memory cannot fail");
        c.put(self.host_key(&host.name), value, Some(PutOptions::new().with_lease(lease)))
            .await
            .map_err(unreachable)?;
        let old = self.leases.lock().insert(host.name.clone(), (lease, host.clone()));
        if let Some((old, _)) = old {
            // A lease that expired or was replaced: let it go (it may already be gone).
            let _ = c.lease_revoke(old).await;
        }
        tracing::info!(host = %host.name, lease, ttl_s = secs, "host registered in etcd");
        Ok(())
    }

    /// Renews a lease; false when etcd no longer knows it (expired).
    async fn renew(&self, lease: i64) -> Result<bool, DirectoryError> {
        let mut c = self.client.clone();
        let (mut keeper, mut stream) = c.lease_keep_alive(lease).await.map_err(unreachable)?;
        keeper.keep_alive().await.map_err(unreachable)?;
        match stream.message().await.map_err(unreachable)? {
            Some(resp) => Ok(resp.ttl() > 0),
            None => Ok(false),
        }
    }

    fn change_of(&self, key: &[u8], value: Option<&[u8]>) -> Option<Change> {
        let key = std::str::from_utf8(key).ok()?.strip_prefix(self.prefix.as_str())?;
        if let Some(region) = key.strip_prefix("regions/") {
            let region: RegionId = region.parse().ok()?;
            let placement = match value {
                Some(v) => Some(serde_json::from_slice(v).ok()?),
                None => None,
            };
            return Some(Change::Region { region, placement });
        }
        let name = key.strip_prefix("hosts/")?;
        Some(match value {
            Some(v) => Change::HostUp(serde_json::from_slice(v).ok()?),
            None => Change::HostDown { name: name.to_string() },
        })
    }
}

#[async_trait]
impl Directory for EtcdDirectory {
    async fn get(&self, region: RegionId) -> Result<Option<Placement>, DirectoryError> {
        let resp = self.client.clone().get(self.region_key(region), None).await.map_err(unreachable)?;
        match resp.kvs().first() {
            Some(kv) => serde_json::from_slice(kv.value())
                .map(Some)
                .map_err(|e| DirectoryError::Refused(format!("etcd holds a bad placement of {region}: {e}"))),
            None => Ok(None),
        }
    }

    async fn list(&self) -> Result<Vec<(RegionId, Placement)>, DirectoryError> {
        let prefix = format!("{}regions/", self.prefix);
        let resp = self
            .client
            .clone()
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unreachable)?;
        let mut out = Vec::new();
        for kv in resp.kvs() {
            match self.change_of(kv.key(), Some(kv.value())) {
                Some(Change::Region { region, placement: Some(p) }) => out.push((region, p)),
                _ => {
                    tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "unreadable placement in etcd skipped")
                }
            }
        }
        out.sort_by_key(|(r, _)| *r);
        Ok(out)
    }

    async fn compare_and_swap(
        &self,
        region: RegionId,
        expected: Option<u64>,
        new: Placement,
    ) -> Result<bool, DirectoryError> {
        let key = self.region_key(region);
        let value = serde_json::to_vec(&new).expect("serializing to memory cannot fail");
        let mut c = self.client.clone();
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = c.get(key.clone(), None).await.map_err(unreachable)?;
            let guard = match (current.kvs().first(), expected) {
                (None, None) => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                (None, Some(_)) => return Ok(false),
                (Some(_), None) => return Ok(false),
                (Some(kv), Some(epoch)) => {
                    let p: Placement = serde_json::from_slice(kv.value()).map_err(|e| {
                        DirectoryError::Refused(format!("etcd holds a bad placement of {region}: {e}"))
                    })?;
                    if p.epoch != epoch {
                        return Ok(false);
                    }
                    Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision())
                }
            };
            let txn = Txn::new().when([guard]).and_then([TxnOp::put(key.clone(), value.clone(), None)]);
            if c.txn(txn).await.map_err(unreachable)?.succeeded() {
                return Ok(true);
            }
            // Someone else wrote the key between our read and our transaction: read again.
        }
        Err(DirectoryError::Refused(format!(
            "compare-and-swap of {region} lost {MAX_CAS_ATTEMPTS} races in a row; try again"
        )))
    }

    async fn heartbeat(&self, host: &HostRecord, ttl: Duration) -> Result<(), DirectoryError> {
        check_host(host, ttl)?;
        let known = self.leases.lock().get(&host.name).cloned();
        match known {
            Some((lease, record)) if &record == host => {
                if !self.renew(lease).await? {
                    tracing::warn!(host = %host.name, lease, "host lease had expired; registering again");
                    self.register(host, ttl).await?;
                }
                Ok(())
            }
            _ => self.register(host, ttl).await,
        }
    }

    async fn leave(&self, name: &str) -> Result<(), DirectoryError> {
        let mut c = self.client.clone();
        let lease = self.leases.lock().remove(name);
        c.delete(self.host_key(name), None).await.map_err(unreachable)?;
        if let Some((lease, _)) = lease {
            let _ = c.lease_revoke(lease).await;
        }
        Ok(())
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, DirectoryError> {
        let prefix = format!("{}hosts/", self.prefix);
        let resp = self
            .client
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unreachable)?;
        let mut out: Vec<HostRecord> =
            resp.kvs().iter().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect();
        out.sort();
        Ok(out)
    }

    async fn watch(&self) -> Result<broadcast::Receiver<Change>, DirectoryError> {
        let (tx, rx) = broadcast::channel(WATCH_BUFFER);
        let mut c = self.client.clone();
        let opts = || WatchOptions::new().with_prefix();
        // Established here, so every change after `watch` returns is seen.
        let first = c.watch(self.prefix.clone(), Some(opts())).await.map_err(unreachable)?;
        let this = EtcdDirectory { client: c.clone(), prefix: self.prefix.clone(), leases: Mutex::default() };
        tokio::spawn(async move {
            let mut stream = Some(first);
            loop {
                if let Some(mut s) = stream.take() {
                    loop {
                        let msg = match s.message().await {
                            Ok(Some(m)) => m,
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!("etcd watch lost: {e}");
                                break;
                            }
                        };
                        if msg.canceled() {
                            tracing::warn!(reason = msg.cancel_reason(), "etcd cancelled the watch");
                            break;
                        }
                        for ev in msg.events() {
                            let Some(kv) = ev.kv() else { continue };
                            let value = (ev.event_type() == EventType::Put).then(|| kv.value());
                            if let Some(change) = this.change_of(kv.key(), value) {
                                if tx.send(change).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    if tx.send(Change::Resync).is_err() {
                        return;
                    }
                }
                if tx.receiver_count() == 0 {
                    return;
                }
                tokio::time::sleep(WATCH_RETRY).await;
                match c.watch(this.prefix.clone(), Some(opts())).await {
                    Ok(s) => stream = Some(s),
                    Err(e) => tracing::warn!("etcd watch could not be re-established: {e}"),
                }
            }
        });
        Ok(rx)
    }
}
