//! The sending side of a region's border: offers units to neighbours and decides, once per
//! crossing, whether the unit was released to the receiver or returned to this region.
//!
//! # Why it is safe
//!
//! The sender is the only one who decides a crossing, and decides it once:
//!
//! * **Released** on the first `Accept` that arrives while offering. The caller deletes the
//!   unit (event [`OutgoingEvent::Released`]) before `Release` goes out, so the receiver can
//!   only start ticking it after this region stopped: never two holders.
//! * **Returned** on a `Refuse`, or when no `Accept` came within `GIVE_UP_US`. Giving up is
//!   safe even if the receiver did accept and the `Accept` was lost or is still on its way,
//!   because an acceptance is *provisional*: the receiver holds the unit aside, unticked, and
//!   keeps asking (by resending `Accept`) until this side answers `Release` or `Cancel`. A
//!   returned (or forgotten) crossing answers every `Accept` with `Cancel`, so the provisional
//!   copy is dropped and the unit lives on here.
//!
//! `Release` and `Cancel` name the receiver's acceptance (`nonce`), and for one crossing this
//! side sends `Release` for exactly one nonce (the one it decided on) and `Cancel` only for
//! others, so no stale or duplicated message can activate a second copy. A released crossing
//! is resent `Release` until the receiver's `Done`; only then is it forgotten. Until then the
//! unit is in flight: in no region, but held by both machines' durable state, never lost.
//! The caller persists this machine together with its region (the decision and the deletion
//! are one durable step), so a restarted region resumes exactly where it crashed.
//!
//! # What the host must make durable
//!
//! Checkpoints lose the last seconds of motion, which this protocol cannot afford at three
//! points: the sender's `Released` decision with the deletion (else a region restored from an
//! older checkpoint holds a unit its neighbour owns), the receiver's provisional acceptance
//! (else a release can reach a receiver that no longer has the unit: lost), and the
//! receiver's adoption. Each goes to the write-ahead log before the message that follows it
//! (`Release`, `Accept`, `Done`) is sent; and the crossing counter never goes back, so ids
//! are never reused.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use world::{EntityId, RegionId};

use crate::limits::{GIVE_UP_US, MAX_OUTGOING_IN_FLIGHT, RETRANSMIT_US};
use crate::msg::{CrossingId, Msg, RefuseReason, Unit, UnitError};
use crate::Transmit;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutgoingEvent {
    /// The neighbour owns the unit now: delete it from this region (it must not be ticked here
    /// again). Emitted once per crossing.
    Released { id: CrossingId, root: EntityId, to: RegionId },
    /// The crossing is off and the unit stays here: resume ticking it (it is handed back in
    /// case the caller took it out while it was offered).
    Returned { id: CrossingId, unit: Unit, why: ReturnReason },
    /// The receiver confirmed the release: nothing of this crossing remains.
    Completed { id: CrossingId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReturnReason {
    Refused(RefuseReason),
    /// No acceptance within `GIVE_UP_US` (neighbour down, partitioned, or overloaded).
    NoAnswer,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StartError {
    #[error("region {0} cannot offer a unit to itself")]
    SameRegion(RegionId),
    #[error(
        "{0} crossings already in flight (MAX_OUTGOING_IN_FLIGHT): keep the unit at the border and retry"
    )]
    Busy(usize),
    #[error(transparent)]
    Unit(#[from] UnitError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum State {
    /// The unit is still this region's (frozen at the border by the caller).
    Offering { unit: Unit, started: u64, last_sent: u64 },
    /// Decided for acceptance `nonce`; the unit is deleted here.
    Released { nonce: u64, last_sent: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Crossing {
    to: RegionId,
    state: State,
}

/// All crossings leaving one region. Cloneable so a test (or a checkpoint) can keep its
/// durable state; serializable so a host can keep it with its region.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outgoing {
    region: RegionId,
    next_seq: u64,
    crossings: BTreeMap<u64, Crossing>,
    outbox: VecDeque<Transmit>,
    events: VecDeque<OutgoingEvent>,
}

impl Outgoing {
    pub fn new(region: RegionId) -> Outgoing {
        Outgoing {
            region,
            next_seq: 0,
            crossings: BTreeMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn region(&self) -> RegionId {
        self.region
    }

    /// Crossings offered or released and not yet confirmed.
    pub fn in_flight(&self) -> usize {
        self.crossings.len()
    }

    /// Roots of the units offered and not yet decided (still in this region, held).
    pub fn offering_roots(&self) -> impl Iterator<Item = EntityId> + '_ {
        self.crossings.values().filter_map(|c| match &c.state {
            State::Offering { unit, .. } => Some(unit.root),
            State::Released { .. } => None,
        })
    }

    /// Whether `id` is still undecided (the unit is in this region, frozen at the border).
    pub fn is_offering(&self, id: CrossingId) -> bool {
        id.from == self.region
            && self.crossings.get(&id.seq).is_some_and(|c| matches!(c.state, State::Offering { .. }))
    }

    /// Offers `unit` to the neighbour `to`. The caller keeps the unit in its region but stops
    /// ticking it until the crossing is decided, so the offered copy is exactly the state.
    pub fn start(&mut self, now: u64, unit: Unit, to: RegionId) -> Result<CrossingId, StartError> {
        if to == self.region {
            return Err(StartError::SameRegion(to));
        }
        if self.crossings.len() >= MAX_OUTGOING_IN_FLIGHT {
            return Err(StartError::Busy(self.crossings.len()));
        }
        unit.validate()?;
        let id = CrossingId { from: self.region, seq: self.next_seq };
        self.next_seq += 1;
        self.outbox.push_back(Transmit { to, msg: Msg::Offer { id, to, unit: unit.clone() } });
        self.crossings
            .insert(id.seq, Crossing { to, state: State::Offering { unit, started: now, last_sent: now } });
        Ok(id)
    }

    /// A message from region `from`. Messages about crossings of other regions are ignored.
    pub fn handle_msg(&mut self, now: u64, from: RegionId, msg: Msg) {
        let id = msg.id();
        if id.from != self.region {
            return;
        }
        let known = self.crossings.get_mut(&id.seq).filter(|c| c.to == from);
        match (msg, known) {
            (Msg::Accept { nonce, .. }, Some(c)) => match c.state {
                State::Offering { ref unit, .. } => {
                    let root = unit.root;
                    c.state = State::Released { nonce, last_sent: now };
                    // The deletion event goes first: a caller draining events before
                    // transmits never lets the receiver tick the unit while it is here.
                    self.events.push_back(OutgoingEvent::Released { id, root, to: from });
                    self.outbox.push_back(Transmit { to: from, msg: Msg::Release { id, nonce } });
                }
                State::Released { nonce: decided, ref mut last_sent } => {
                    let msg = if decided == nonce {
                        *last_sent = now;
                        Msg::Release { id, nonce }
                    } else {
                        Msg::Cancel { id, nonce }
                    };
                    self.outbox.push_back(Transmit { to: from, msg });
                }
            },
            // Returned or long finished: whatever the receiver holds for it is a stale copy.
            (Msg::Accept { nonce, .. }, None) => {
                self.outbox.push_back(Transmit { to: from, msg: Msg::Cancel { id, nonce } })
            }
            (Msg::Refuse { reason, .. }, Some(c)) => {
                if matches!(c.state, State::Offering { .. }) {
                    self.give_back(id.seq, ReturnReason::Refused(reason));
                }
            }
            (Msg::Done { nonce, .. }, Some(c)) => {
                if matches!(c.state, State::Released { nonce: decided, .. } if decided == nonce) {
                    self.crossings.remove(&id.seq);
                    self.events.push_back(OutgoingEvent::Completed { id });
                }
            }
            _ => {}
        }
    }

    fn give_back(&mut self, seq: u64, why: ReturnReason) {
        let Some(c) = self.crossings.remove(&seq) else { return };
        match c.state {
            State::Offering { unit, .. } => {
                let id = CrossingId { from: self.region, seq };
                self.events.push_back(OutgoingEvent::Returned { id, unit, why });
            }
            State::Released { .. } => {
                unreachable!("a released crossing is never returned: the neighbour may own the unit")
            }
        }
    }

    pub fn handle_timeout(&mut self, now: u64) {
        let mut expired = Vec::new();
        for (&seq, c) in &mut self.crossings {
            let id = CrossingId { from: self.region, seq };
            match &mut c.state {
                State::Offering { started, .. } if now.saturating_sub(*started) >= GIVE_UP_US => {
                    expired.push(seq);
                }
                State::Offering { unit, last_sent, .. } => {
                    if now.saturating_sub(*last_sent) >= RETRANSMIT_US {
                        *last_sent = now;
                        let msg = Msg::Offer { id, to: c.to, unit: unit.clone() };
                        self.outbox.push_back(Transmit { to: c.to, msg });
                    }
                }
                // Never given up: the receiver holds the only copy and waits for this word.
                State::Released { nonce, last_sent } => {
                    if now.saturating_sub(*last_sent) >= RETRANSMIT_US {
                        *last_sent = now;
                        self.outbox.push_back(Transmit { to: c.to, msg: Msg::Release { id, nonce: *nonce } });
                    }
                }
            }
        }
        for seq in expired {
            self.give_back(seq, ReturnReason::NoAnswer);
        }
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        self.crossings
            .values()
            .map(|c| match c.state {
                State::Offering { started, last_sent, .. } => {
                    (last_sent + RETRANSMIT_US).min(started + GIVE_UP_US)
                }
                State::Released { last_sent, .. } => last_sent + RETRANSMIT_US,
            })
            .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<OutgoingEvent> {
        self.events.pop_front()
    }
}
