//! Helpers shared by the host's durability tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::mpsc;
use std::time::Duration;

use host::durable::Acked;
use host::Host;
use world::{EntityId, Input, Region, RegionId};

/// Sends a durable change and waits (bounded) for its acknowledgement.
pub fn durable(host: &Host, region: RegionId, input: Input, wait: Duration) -> Acked {
    let (tx, rx) = mpsc::sync_channel(1);
    host.send_durable(
        region,
        input,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )
    .unwrap();
    rx.recv_timeout(wait).expect("acknowledged in time").expect("acknowledged")
}

/// The objects of a region by id, name and text (what the durability tests compare).
pub fn rows(r: &Region) -> Vec<(EntityId, String, String)> {
    r.entities().filter(|e| !e.is_avatar()).map(|e| (e.id, e.name.clone(), e.text.clone())).collect()
}
