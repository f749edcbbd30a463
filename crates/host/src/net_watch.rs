//! The host's copy of the directory's placements, kept current by the directory's watch: the
//! set of regions (the grid that crossings go towards) and each region's owner, learnt the
//! moment a migration commits or a failover takes a region over. When the watch cannot be had
//! or ends, the copy is re-read every [`POLL_EVERY`] instead, and the watch is tried again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use directory::{Change, Placement};
use parking_lot::RwLock;
use tokio::sync::broadcast::error::RecvError;
use world::RegionId;

use crate::net::Net;

/// How often the placements are re-read while there is no watch.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long the host polls before it tries to watch again.
pub const REWATCH_AFTER: Duration = Duration::from_secs(10);
/// Most regions kept in the copy (the directory's own bound is lower).
pub const MAX_WATCHED_REGIONS: usize = 65_536;

/// The placements as this host last learnt them.
#[derive(Default)]
pub struct Placements {
    map: RwLock<HashMap<RegionId, Placement>>,
    /// True while a watch keeps the copy current (false: polled, up to a second old).
    watching: AtomicBool,
}

impl Placements {
    /// The owner of `region` as last learnt, while a watch keeps the copy current.
    pub fn current_owner(&self, region: RegionId) -> Option<String> {
        if !self.watching.load(Ordering::Acquire) {
            return None;
        }
        self.map.read().get(&region).map(|p| p.host.clone())
    }

    /// The placement of `region` as last learnt, watched or polled.
    pub fn last_known(&self, region: RegionId) -> Option<Placement> {
        self.map.read().get(&region).cloned()
    }

    pub fn is_watching(&self) -> bool {
        self.watching.load(Ordering::Acquire)
    }

    fn replace(&self, list: Vec<(RegionId, Placement)>) {
        *self.map.write() = list.into_iter().take(MAX_WATCHED_REGIONS).collect();
    }

    /// One region changed; true when the set of regions changed (not only an owner).
    fn apply(&self, region: RegionId, placement: Option<Placement>) -> bool {
        let mut map = self.map.write();
        match placement {
            Some(p) => {
                if !map.contains_key(&region) && map.len() >= MAX_WATCHED_REGIONS {
                    return false;
                }
                map.insert(region, p).is_none()
            }
            None => map.remove(&region).is_some(),
        }
    }

    fn regions(&self) -> Vec<RegionId> {
        self.map.read().keys().copied().collect()
    }
}

/// Follows the directory for `net` until it is dropped.
pub(crate) fn start(net: &Arc<Net>) {
    tokio::spawn(follow(Arc::downgrade(net)));
}

/// Re-reads every placement; false when the directory could not be read.
async fn reread(net: &Net) -> bool {
    match net.directory().list().await {
        Ok(list) => {
            net.placements().replace(list);
            net.host().set_grid(net.placements().regions());
            true
        }
        Err(e) => {
            tracing::debug!("directory unreachable for the placements: {e}");
            false
        }
    }
}

async fn follow(weak: Weak<Net>) {
    loop {
        let Some(net) = weak.upgrade() else { return };
        let watch = net.directory().watch().await;
        // Read everything after the watch is set up, so no change falls in between.
        reread(&net).await;
        drop(net);
        match watch {
            Ok(mut rx) => {
                if let Some(net) = weak.upgrade() {
                    net.placements().watching.store(true, Ordering::Release);
                }
                loop {
                    // Bounded waits, so a dropped host ends this task.
                    let next = tokio::time::timeout(POLL_EVERY, rx.recv()).await;
                    let Some(net) = weak.upgrade() else { return };
                    match next {
                        Err(_) => {}
                        Ok(Ok(Change::Region { region, placement })) => {
                            if net.placements().apply(region, placement) {
                                net.host().set_grid(net.placements().regions());
                            }
                        }
                        Ok(Ok(Change::Resync)) | Ok(Err(RecvError::Lagged(_))) => {
                            reread(&net).await;
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(RecvError::Closed)) => {
                            tracing::warn!("the directory watch ended: polling the placements instead");
                            net.placements().watching.store(false, Ordering::Release);
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("no directory watch (polling the placements instead): {e}"),
        }
        // Polling, until the watch is tried again.
        let polls = (REWATCH_AFTER.as_millis() / POLL_EVERY.as_millis()).max(1);
        for _ in 0..polls {
            tokio::time::sleep(POLL_EVERY).await;
            let Some(net) = weak.upgrade() else { return };
            reread(&net).await;
        }
    }
}
