//! The in-process directory: a map behind a lock, optionally written through to a JSON file.
//! Host liveness is a deadline per host, renewed by heartbeats; expiry is noticed whenever the
//! hosts are read and by a sweep when a tokio runtime is there to run one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use world::RegionId;

use crate::{check_host, Change, Directory, DirectoryError, HostRecord, Placement, MAX_HOSTS, WATCH_BUFFER};

/// How often the expiry sweep runs (when started inside a runtime).
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// An in-process directory; with a path, every region change is written through to a JSON
/// file (host liveness is not persisted: hosts register again within a heartbeat).
pub struct MemoryDirectory {
    map: Mutex<BTreeMap<RegionId, Placement>>,
    hosts: Mutex<BTreeMap<String, (HostRecord, Instant)>>,
    changes: broadcast::Sender<Change>,
    path: Option<PathBuf>,
}

impl Default for MemoryDirectory {
    fn default() -> Self {
        MemoryDirectory {
            map: Mutex::default(),
            hosts: Mutex::default(),
            changes: broadcast::channel(WATCH_BUFFER).0,
            path: None,
        }
    }
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
        Ok(MemoryDirectory { map: Mutex::new(map), path: Some(path), ..MemoryDirectory::default() })
    }

    /// Starts a task that notices expired hosts every `SWEEP_EVERY` (so watchers learn of a
    /// dead host without anyone reading the host list). Ends when the directory is dropped.
    pub fn sweep_expired(self: &std::sync::Arc<Self>) {
        let weak = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            loop {
                every.tick().await;
                let Some(dir) = weak.upgrade() else { break };
                dir.expire(Instant::now());
            }
        });
    }

    fn expire(&self, now: Instant) {
        let mut hosts = self.hosts.lock();
        let dead: Vec<String> =
            hosts.iter().filter(|(_, (_, until))| *until <= now).map(|(n, _)| n.clone()).collect();
        for name in dead {
            hosts.remove(&name);
            tracing::info!(host = %name, "host liveness expired");
            let _ = self.changes.send(Change::HostDown { name });
        }
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
        let old = map.insert(region, new.clone());
        if let Err(e) = self.persist(&map) {
            // Not durable: undo, so memory never runs ahead of the file.
            match old {
                Some(o) => map.insert(region, o),
                None => map.remove(&region),
            };
            return Err(e);
        }
        let _ = self.changes.send(Change::Region { region, placement: Some(new) });
        Ok(true)
    }

    async fn heartbeat(&self, host: &HostRecord, ttl: Duration) -> Result<(), DirectoryError> {
        check_host(host, ttl)?;
        let now = Instant::now();
        self.expire(now);
        let mut hosts = self.hosts.lock();
        if !hosts.contains_key(&host.name) && hosts.len() >= MAX_HOSTS {
            return Err(DirectoryError::Refused(format!("the directory already holds {MAX_HOSTS} hosts")));
        }
        let before = hosts.insert(host.name.clone(), (host.clone(), now + ttl));
        if before.as_ref().is_none_or(|(h, _)| h != host) {
            let _ = self.changes.send(Change::HostUp(host.clone()));
        }
        Ok(())
    }

    async fn leave(&self, name: &str) -> Result<(), DirectoryError> {
        if self.hosts.lock().remove(name).is_some() {
            let _ = self.changes.send(Change::HostDown { name: name.to_string() });
        }
        Ok(())
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, DirectoryError> {
        self.expire(Instant::now());
        Ok(self.hosts.lock().values().map(|(h, _)| h.clone()).collect())
    }

    async fn watch(&self) -> Result<broadcast::Receiver<Change>, DirectoryError> {
        Ok(self.changes.subscribe())
    }
}
