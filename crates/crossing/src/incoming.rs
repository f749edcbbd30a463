//! The receiving side of a region's border: accepts offered units provisionally and makes
//! them this region's only when the sender releases them.
//!
//! A provisional unit is held inside this machine, not in the region: it is not ticked, not
//! seen, not scripted. It becomes the region's ([`IncomingEvent::Adopt`]) on the sender's
//! `Release` for the same acceptance, and is dropped on the matching `Cancel`. The receiver
//! never decides a crossing alone: while it holds a provisional unit it keeps asking the
//! sender (resending `Accept`), because only the sender knows whether it deleted its copy.
//! A sender that is down leaves the provisional unit waiting; the unit is then not lost but
//! still alive in the sender's durable state, and the sender's answer settles it on restart.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use world::{EntityId, RegionId};

use crate::limits::{MAX_INCOMING_IN_FLIGHT, MAX_REMEMBERED_FINISHED, RETRANSMIT_US};
use crate::msg::{CrossingId, Msg, RefuseReason, Unit};
use crate::Transmit;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IncomingEvent {
    /// A unit was accepted provisionally: the caller may prepare (fetch script modules, tell
    /// the gateway) but must not insert it yet.
    Accepted { id: CrossingId, root: EntityId },
    /// The unit is this region's now: insert it and start ticking it.
    Adopt { id: CrossingId, unit: Unit },
    /// A provisional acceptance was cancelled: the unit lives on in the sender's region.
    Dropped { id: CrossingId, root: EntityId },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Provisional {
    nonce: u64,
    unit: Unit,
    last_sent: u64,
}

/// All crossings arriving in one region. Cloneable so a test (or a checkpoint) can keep its
/// durable state; serializable so a host can keep it with its region.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Incoming {
    region: RegionId,
    /// Names acceptances; never reused, so a message for an old acceptance cannot match a new one.
    next_nonce: u64,
    provisional: BTreeMap<CrossingId, Provisional>,
    finished: BTreeSet<CrossingId>,
    finished_order: VecDeque<CrossingId>,
    remember: usize,
    outbox: VecDeque<Transmit>,
    events: VecDeque<IncomingEvent>,
}

impl Incoming {
    pub fn new(region: RegionId) -> Incoming {
        Incoming::remembering(region, MAX_REMEMBERED_FINISHED)
    }

    /// A receiver that remembers only `finished` settled crossings. Tests use a tiny memory
    /// to show that a forgotten crossing's late duplicates are still harmless.
    pub fn remembering(region: RegionId, finished: usize) -> Incoming {
        Incoming {
            region,
            next_nonce: 0,
            provisional: BTreeMap::new(),
            finished: BTreeSet::new(),
            finished_order: VecDeque::new(),
            remember: finished,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn region(&self) -> RegionId {
        self.region
    }

    /// Units accepted and waiting for their release.
    pub fn provisional(&self) -> usize {
        self.provisional.len()
    }

    /// Roots of the units held provisionally (for checks; they are not in the region).
    pub fn provisional_roots(&self) -> impl Iterator<Item = EntityId> + '_ {
        self.provisional.values().map(|p| p.unit.root)
    }

    /// A message from region `from`.
    pub fn handle_msg(&mut self, now: u64, from: RegionId, msg: Msg) {
        let id = msg.id();
        // Only the region that names the crossing may speak for it.
        if id.from != from {
            return;
        }
        match msg {
            Msg::Offer { to, unit, .. } => self.handle_offer(now, id, to, unit),
            Msg::Release { nonce, .. } => {
                match self.provisional.get(&id) {
                    Some(p) if p.nonce == nonce => {
                        let p = self.provisional.remove(&id).expect("looked up above");
                        self.finish(id);
                        self.events.push_back(IncomingEvent::Adopt { id, unit: p.unit });
                    }
                    // The sender released an earlier acceptance of ours, which we adopted and
                    // forgot; this one is a copy accepted from a late duplicate offer.
                    Some(_) => self.drop_provisional(id),
                    None => {}
                }
                // Also when unknown: a release for a nonce we no longer hold was adopted already.
                self.outbox.push_back(Transmit { to: from, msg: Msg::Done { id, nonce } });
            }
            Msg::Cancel { nonce, .. } => {
                if self.provisional.get(&id).is_some_and(|p| p.nonce == nonce) {
                    self.drop_provisional(id);
                }
            }
            Msg::Accept { .. } | Msg::Refuse { .. } | Msg::Done { .. } => {}
        }
    }

    fn handle_offer(&mut self, now: u64, id: CrossingId, to: RegionId, unit: Unit) {
        let refuse = |s: &mut Incoming, reason| {
            s.outbox.push_back(Transmit { to: id.from, msg: Msg::Refuse { id, reason } });
        };
        if let Some(p) = self.provisional.get_mut(&id) {
            // A duplicate, or our `Accept` was lost: answer the same acceptance again.
            p.last_sent = now;
            let msg = Msg::Accept { id, nonce: p.nonce };
            self.outbox.push_back(Transmit { to: id.from, msg });
            return;
        }
        if self.finished.contains(&id) {
            return;
        }
        if to != self.region {
            return refuse(self, RefuseReason::WrongRegion);
        }
        if unit.validate().is_err() {
            return refuse(self, RefuseReason::BadUnit);
        }
        if self.provisional.len() >= MAX_INCOMING_IN_FLIGHT {
            return refuse(self, RefuseReason::Full);
        }
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.events.push_back(IncomingEvent::Accepted { id, root: unit.root });
        self.provisional.insert(id, Provisional { nonce, unit, last_sent: now });
        self.outbox.push_back(Transmit { to: id.from, msg: Msg::Accept { id, nonce } });
    }

    fn drop_provisional(&mut self, id: CrossingId) {
        if let Some(p) = self.provisional.remove(&id) {
            self.finish(id);
            self.events.push_back(IncomingEvent::Dropped { id, root: p.unit.root });
        }
    }

    /// Remembers a settled crossing so late duplicates of its offer are ignored. Forgetting
    /// the oldest is safe: a duplicate accepted again is only ever cancelled by the sender.
    fn finish(&mut self, id: CrossingId) {
        if self.finished.insert(id) {
            self.finished_order.push_back(id);
        }
        while self.finished_order.len() > self.remember {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    pub fn handle_timeout(&mut self, now: u64) {
        for (id, p) in &mut self.provisional {
            if now.saturating_sub(p.last_sent) >= RETRANSMIT_US {
                p.last_sent = now;
                self.outbox.push_back(Transmit { to: id.from, msg: Msg::Accept { id: *id, nonce: p.nonce } });
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        self.provisional.values().map(|p| p.last_sent + RETRANSMIT_US).min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<IncomingEvent> {
        self.events.pop_front()
    }
}
