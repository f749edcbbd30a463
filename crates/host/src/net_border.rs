//! The network side of border crossings: carries crossing messages to the hosts that own their
//! destinations (the set of regions comes from the directory's watch, net_watch.rs).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossing::Transmit;
use link::LinkMsg;
use tokio::sync::mpsc;
use world::RegionId;

use crate::net::Net;

/// Crossing messages waiting to go to other hosts; beyond it they are dropped (and resent
/// by the protocol).
pub const CROSSING_QUEUE: usize = 4096;
/// How long a looked-up owner of a region is trusted before it is looked up again (when no
/// watch keeps the owners current).
pub const OWNER_TTL: Duration = Duration::from_millis(500);

pub(crate) fn start(net: &Arc<Net>) {
    let (tx, rx) = mpsc::channel::<(RegionId, Transmit)>(CROSSING_QUEUE);
    let host = net.host().clone();
    let local = host.clone();
    host.set_crossing_sender(Arc::new(move |from, t: Transmit| {
        // A neighbour on this host gets it at once; others through the link task.
        if local.crossing_msg(t.to, from, t.msg.clone()).is_ok() {
            return;
        }
        if tx.try_send((from, t)).is_err() {
            tracing::debug!(%from, "crossing queue full: message dropped (it will be resent)");
        }
    }));
    tokio::spawn(forward(Arc::downgrade(net), rx));
}

async fn forward(net: std::sync::Weak<Net>, mut rx: mpsc::Receiver<(RegionId, Transmit)>) {
    let mut owners: HashMap<RegionId, (String, Instant)> = HashMap::new();
    while let Some((from, t)) = rx.recv().await {
        let Some(net) = net.upgrade() else { break };
        let watched = if net.placements().is_watching() {
            net.placements().current_owner(t.to)
        } else {
            owners.get(&t.to).filter(|(_, at)| at.elapsed() < OWNER_TTL).map(|(o, _)| o.clone())
        };
        let owner = match watched {
            Some(o) => o,
            None => match net.directory().get(t.to).await {
                Ok(Some(p)) => {
                    owners.insert(t.to, (p.host.clone(), Instant::now()));
                    p.host
                }
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(to = %t.to, "crossing message dropped, directory unreachable: {e}");
                    continue;
                }
            },
        };
        if owner == net.name() {
            // Ours after all (it arrived here a moment ago): deliver in process.
            let _ = net.host().crossing_msg(t.to, from, t.msg);
            continue;
        }
        match net.peer(&owner).await {
            Ok(peer) => {
                peer.send(&LinkMsg::Crossing { from, to: t.to, msg: t.msg });
            }
            Err(e) => {
                owners.remove(&t.to);
                tracing::debug!(to = %t.to, %owner, "crossing message dropped: {e}");
            }
        }
    }
}
