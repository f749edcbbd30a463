//! The target side of a live migration: builds a replica from the rounds as they arrive,
//! checks the state hash at the freeze, and takes the region over by compare-and-swap of the
//! region's epoch in the directory (the one commit point) once the source has released it.
//!
//! Until it asks for that swap the target may give up on its own, and tells the source so
//! (`Refuse`, or a `FreezeAck` that failed), which then resumes at once. After asking, it never
//! gives up: the directory's answer decides, and a source that heard nothing fences it out
//! with a swap of its own.

use std::collections::VecDeque;

use world::{Region, RegionId};

use crate::limits::*;
use crate::msg::{reason, MigrationId, Msg, Payload};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetPhase {
    /// Waiting for the host to prepare (terrain, script modules).
    Preparing,
    Receiving,
    /// The final round is applied and its hash matched: waiting for the source's release.
    Verified,
    /// Asked the directory for the swap ([`TargetEvent::CasEpoch`]): waiting for its answer.
    Committing,
    Committed,
    Aborted,
}

#[derive(Debug)]
pub enum TargetEvent {
    /// Prepare to host `region` (load what can be loaded ahead), then call [`Target::prepared`].
    Prepare { region: RegionId },
    /// Bump the region's epoch from `from` to `to` by compare-and-swap, naming this host as
    /// the owner (the commit point), retrying until the directory gives a definite answer;
    /// report it with [`Target::handle_cas_result`].
    CasEpoch { region: RegionId, from: u64, to: u64 },
    /// The region is ours at `epoch`: start ticking it right away.
    Committed { region: Box<Region>, epoch: u64 },
    /// The migration is off; the replica is gone.
    Aborted { reason: String },
}

struct Assembly {
    round: u32,
    payload: Payload,
    freeze: Option<crate::msg::Freeze>,
    parts: Vec<Option<Vec<u8>>>,
    received: u32,
}

pub struct Target {
    id: MigrationId,
    region: RegionId,
    epoch: u64,
    phase: TargetPhase,
    replica: Option<Region>,
    assembly: Option<Assembly>,
    applied_round: Option<u32>,
    last_ack: Option<Msg>,
    /// The source released the region (its log is flushed): the swap may be asked for.
    released: bool,
    last_heard: u64,
    outbox: VecDeque<Msg>,
    events: VecDeque<TargetEvent>,
}

impl Target {
    /// A target for the migration a `Prepare` message announces.
    pub fn new(now: u64, id: MigrationId, region: RegionId, epoch: u64) -> Target {
        let mut t = Target {
            id,
            region,
            epoch,
            phase: TargetPhase::Preparing,
            replica: None,
            assembly: None,
            applied_round: None,
            last_ack: None,
            released: false,
            last_heard: now,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        };
        t.events.push_back(TargetEvent::Prepare { region });
        t
    }

    pub fn id(&self) -> MigrationId {
        self.id
    }
    pub fn region(&self) -> RegionId {
        self.region
    }
    pub fn phase(&self) -> TargetPhase {
        self.phase
    }
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, TargetPhase::Committed | TargetPhase::Aborted)
    }
    /// The replica as built so far.
    pub fn replica(&self) -> Option<&Region> {
        self.replica.as_ref()
    }

    /// The host has prepared: tell the source to start copying.
    pub fn prepared(&mut self, now: u64) {
        if self.phase == TargetPhase::Preparing {
            self.phase = TargetPhase::Receiving;
            self.last_heard = now;
            self.outbox.push_back(Msg::Prepared { id: self.id });
        }
    }

    pub fn handle_msg(&mut self, now: u64, msg: Msg) {
        if msg.id() != self.id {
            return;
        }
        self.last_heard = now;
        match msg {
            Msg::Prepare { .. } if self.phase == TargetPhase::Receiving => {
                self.outbox.push_back(Msg::Prepared { id: self.id });
            }
            Msg::Chunk { round, payload, index, count, freeze, data, .. } => {
                self.handle_chunk(round, payload, index, count, freeze, data)
            }
            Msg::Release { .. } => {
                self.released = true;
                match self.phase {
                    TargetPhase::Verified => self.ask_for_swap(),
                    // The source missed our answer: it is still frozen, waiting for it.
                    TargetPhase::Committed => self.outbox.extend(self.last_ack.clone()),
                    _ => {}
                }
            }
            Msg::Abort { reason, .. } => self.abort(format!("source aborted: {reason}"), false),
            _ => {}
        }
    }

    fn handle_chunk(
        &mut self,
        round: u32,
        payload: Payload,
        index: u32,
        count: u32,
        freeze: Option<crate::msg::Freeze>,
        data: Vec<u8>,
    ) {
        if matches!(self.phase, TargetPhase::Preparing | TargetPhase::Aborted) {
            return;
        }
        let expected = self.applied_round.map_or(0, |r| r + 1);
        if round < expected {
            // A retransmission of a round we applied: our acknowledgement was lost.
            if let Some(ack) = &self.last_ack {
                self.outbox.push_back(ack.clone());
            }
            return;
        }
        if round > expected || self.phase != TargetPhase::Receiving {
            return;
        }
        let a = match &mut self.assembly {
            Some(a) if a.round == round => a,
            _ => self.assembly.insert(Assembly {
                round,
                payload,
                freeze,
                parts: vec![None; count as usize],
                received: 0,
            }),
        };
        if a.parts.len() != count as usize || a.payload != payload || a.freeze != freeze {
            return self.abort("chunks of one round disagree about the round".into(), true);
        }
        let slot = &mut a.parts[index as usize];
        if slot.is_none() {
            *slot = Some(data);
            a.received += 1;
        }
        if a.received < count {
            return;
        }
        let a = self.assembly.take().expect("assembled above");
        let bytes: Vec<u8> = a.parts.into_iter().flatten().flatten().collect();
        if let Err(e) = self.apply_round(a.payload, &bytes) {
            return self.abort(e, true);
        }
        self.applied_round = Some(round);
        let replica = self.replica.as_ref().expect("a round was applied");
        let ack = match a.freeze {
            None => {
                // Keep the replica's row-hash cache warm round by round, so the hash check at the
                // freeze only hashes the last round's rows.
                let _ = replica.state_hash();
                Msg::RoundAck { id: self.id, round, generation: replica.generation() }
            }
            Some(f) => {
                let state_hash = replica.state_hash();
                let ok = state_hash == f.state_hash && replica.tick_number() == f.tick;
                if ok {
                    self.phase = TargetPhase::Verified;
                } else {
                    self.phase = TargetPhase::Aborted;
                    self.replica = None;
                    self.events.push_back(TargetEvent::Aborted {
                        reason: format!(
                            "state hash mismatch: replica {state_hash:016x}, source {:016x}",
                            f.state_hash
                        ),
                    });
                }
                Msg::FreezeAck { id: self.id, round, state_hash, ok }
            }
        };
        self.last_ack = Some(ack.clone());
        self.outbox.push_back(ack);
        if self.phase == TargetPhase::Verified && self.released {
            self.ask_for_swap();
        }
    }

    /// The replica matches the frozen source and the source released the region: ask the
    /// directory to make us the owner. From here on only its answer decides.
    fn ask_for_swap(&mut self) {
        self.phase = TargetPhase::Committing;
        self.events.push_back(TargetEvent::CasEpoch {
            region: self.region,
            from: self.epoch,
            to: self.epoch + 1,
        });
    }

    /// The directory's answer to [`TargetEvent::CasEpoch`].
    pub fn handle_cas_result(&mut self, swapped: bool) {
        if self.phase != TargetPhase::Committing {
            return;
        }
        if swapped {
            self.commit(self.epoch + 1);
        } else {
            // The source fenced us out (or a failover moved the region): it keeps the region.
            self.phase = TargetPhase::Aborted;
            self.replica = None;
            self.events.push_back(TargetEvent::Aborted {
                reason: "the directory's epoch moved on before our compare-and-swap".into(),
            });
        }
    }

    fn apply_round(&mut self, payload: Payload, bytes: &[u8]) -> Result<(), String> {
        match payload {
            Payload::Snapshot => {
                let r = Region::from_snapshot(bytes).map_err(|e| format!("bad snapshot: {e}"))?;
                if r.id() != self.region {
                    return Err(format!("snapshot is of region {}, expected {}", r.id(), self.region));
                }
                self.replica = Some(r);
            }
            Payload::Delta => {
                let replica = self.replica.as_mut().ok_or("a delta arrived before any snapshot")?;
                replica.apply_encoded_delta(bytes).map_err(|e| format!("bad delta: {e}"))?;
            }
        }
        Ok(())
    }

    fn commit(&mut self, epoch: u64) {
        let Some(region) = self.replica.take() else { return };
        self.phase = TargetPhase::Committed;
        self.epoch = epoch;
        let committed = Msg::Committed { id: self.id, epoch };
        // Answers any round or release the source sends again from here on.
        self.last_ack = Some(committed.clone());
        self.outbox.push_back(committed);
        self.events.push_back(TargetEvent::Committed { region: Box::new(region), epoch });
    }

    /// Gives up, only before asking for the swap (after it, the directory decides).
    fn abort(&mut self, why: String, tell_source: bool) {
        if !matches!(self.phase, TargetPhase::Preparing | TargetPhase::Receiving | TargetPhase::Verified) {
            return;
        }
        self.phase = TargetPhase::Aborted;
        self.replica = None;
        self.assembly = None;
        if tell_source {
            self.outbox.push_back(Msg::Refuse { id: self.id, reason: reason(why.clone()) });
        }
        self.events.push_back(TargetEvent::Aborted { reason: why });
    }

    /// The host is dropping the target (shutting down, or the operator cancelled it).
    pub fn cancel(&mut self, why: &str) {
        self.abort(format!("cancelled: {why}"), true);
    }

    pub fn handle_timeout(&mut self, now: u64) {
        if matches!(self.phase, TargetPhase::Preparing | TargetPhase::Receiving | TargetPhase::Verified)
            && now.saturating_sub(self.last_heard) >= STALL_TIMEOUT_US
        {
            self.abort("the source went silent".into(), true);
        }
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            TargetPhase::Preparing | TargetPhase::Receiving | TargetPhase::Verified => {
                Some(self.last_heard + STALL_TIMEOUT_US)
            }
            _ => None,
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Msg> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TargetEvent> {
        self.events.pop_front()
    }
}
