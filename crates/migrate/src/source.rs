//! The source side of a live migration: pre-copy rounds, the convergence decision, the
//! freeze, the release, and the fence when the outcome is unknown.
//!
//! The commit point is the compare-and-swap of the region's epoch in the directory, which the
//! target performs once its replica matches the final round and the source has released the
//! region (its log flushed). The source stays the owner until then. Frozen, it resumes on its
//! own only when the target says it will never ask for that swap (a refusal or a failed hash
//! check); in every other case (silence, a timeout, an operator's abort) it first fences the
//! target out with a compare-and-swap of its own (epoch e → e + 1, still the owner), and the
//! directory's answer decides: resumed, or committed after all.

use std::collections::VecDeque;

use serde::Serialize;
use world::{Input, Region, RegionId};

use crate::limits::*;
use crate::msg::{chunks, reason, Freeze, MigrationId, Msg, Payload};

/// When a round's remainder is small enough to freeze, and what to do when it never is.
#[derive(Clone, Debug, Serialize)]
pub struct Policy {
    /// Freeze when the next round is estimated to take at most this long (microseconds).
    pub freeze_budget_us: u64,
    /// Most pre-copy rounds before giving up on converging.
    pub max_rounds: u32,
    /// Most bytes sent in all rounds, as a multiple of the first (full) round.
    pub max_bytes_factor: f64,
    pub on_no_convergence: NoConvergence,
    /// Link speed assumed until measured (bytes per second).
    pub assumed_bandwidth: f64,
    /// Copy while running (pre-copy). Off: freeze first, then copy everything in one round
    /// (stop-and-copy, the baseline pre-copy is measured against).
    pub pre_copy: bool,
    /// The caller encodes the large copies of a pre-copy itself, off the tick thread: the full
    /// copies (the first round, and a catch-up when tombstones were pruned) and the rounds
    /// larger than `off_tick_raw_bytes` that will not be the final one. [`Source::take_copy`] hands out the work and
    /// [`Source::copy_ready`] takes the result. Off: `on_tick_boundary` encodes everything,
    /// which for a big region is a tick's worth of time taken from the region.
    pub copies_by_caller: bool,
    /// With `copies_by_caller`: rounds larger than this (raw bytes) are left to the caller.
    pub off_tick_raw_bytes: u64,
    /// How fast the two ends handle region state, in raw (uncompressed) bytes per second:
    /// cutting, encoding, applying and hashing a round. On a fast link this, not the bytes on
    /// the wire, is what a final round costs: a round of many script memory chunks compresses
    /// to little but still has every chunk copied, checked and hashed inside the freeze.
    pub state_rate: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum NoConvergence {
    /// Freeze anyway if the remainder fits within `cap_us`; abort otherwise.
    FreezeAnyway {
        cap_us: u64,
    },
    Abort,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            freeze_budget_us: DEFAULT_FREEZE_BUDGET_US,
            max_rounds: DEFAULT_MAX_ROUNDS,
            max_bytes_factor: DEFAULT_MAX_BYTES_FACTOR,
            on_no_convergence: NoConvergence::FreezeAnyway { cap_us: DEFAULT_FORCED_FREEZE_CAP_US },
            assumed_bandwidth: DEFAULT_ASSUMED_BANDWIDTH,
            pre_copy: true,
            copies_by_caller: false,
            off_tick_raw_bytes: DEFAULT_OFF_TICK_RAW_BYTES,
            state_rate: DEFAULT_STATE_RATE,
        }
    }
}

impl Policy {
    /// Freeze at once and copy the whole region while frozen.
    pub fn stop_and_copy() -> Policy {
        Policy { pre_copy: false, ..Policy::default() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Phase {
    Preparing,
    Copying,
    /// The final round is sent: waiting for the target to take the region.
    Frozen,
    /// Asked the directory to fence the target out ([`SourceEvent::Fence`]).
    Fencing,
    Committed,
    Aborted,
    /// The directory's epoch moved on under us: the region belongs to someone else.
    Fenced,
}

/// What a finished (or running) migration measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub id: MigrationId,
    pub region: RegionId,
    pub phase: Phase,
    pub abort_reason: Option<String>,
    pub rounds: u32,
    pub bytes_per_round: Vec<u64>,
    pub total_bytes: u64,
    /// The policy froze although the remainder did not fit the freeze budget.
    pub forced_freeze: bool,
    /// Estimated duration of the final round when the source froze.
    pub estimated_final_us: u64,
    pub started_us: u64,
    pub freeze_started_us: Option<u64>,
    pub finished_us: Option<u64>,
}

impl Report {
    /// Source-side freeze: from the last source tick to the commit (or the abort).
    pub fn freeze_us(&self) -> Option<u64> {
        Some(self.finished_us?.saturating_sub(self.freeze_started_us?))
    }
    pub fn total_us(&self) -> Option<u64> {
        Some(self.finished_us?.saturating_sub(self.started_us))
    }
}

#[derive(Debug)]
pub enum SourceEvent {
    /// Frozen: write the region's queued log records to the store, then call
    /// [`Source::log_flushed`] (only with [`Source::release_after_log_flush`]).
    FlushLog,
    /// Bump the region's epoch from `from` to `to` by compare-and-swap, keeping this host as
    /// the owner, so that the target's own swap can no longer succeed; report what the
    /// directory said with [`Source::handle_fence_result`].
    Fence { region: RegionId, from: u64, to: u64 },
    /// The target owns the region now. Forward these inputs to it; drop the local copy.
    Committed { report: Report, buffered: Vec<Input> },
    /// The migration failed before the commit: the source still owns the region and ticks on.
    /// Apply these inputs at its next tick.
    Aborted { report: Report, buffered: Vec<Input> },
    /// The epoch had moved on: someone else owns the region. Stop acting for it.
    Fenced { report: Report },
}

/// What the directory said to a [`SourceEvent::Fence`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceResult {
    /// The swap succeeded: the region is still ours (one epoch on) and the target can no
    /// longer take it.
    Kept,
    /// The target's swap came first: it owns the region at the next epoch.
    TargetOwns,
    /// Someone else owns the region (a failover moved it).
    Lost,
}

/// Encoding work the machine leaves to its caller (see [`Policy::copies_by_caller`]).
#[derive(Debug)]
pub enum CopyJob {
    /// Encode the whole region with [`Region::snapshot_with`] (lz4), at a tick boundary.
    Snapshot,
    /// Encode this round with [`world::Delta::encode`].
    Delta(Box<world::Delta>),
}

/// The caller's copy, by stage.
#[derive(Debug)]
enum Copy {
    Idle,
    Wanted(CopyJob),
    /// Handed out; the payload kind it will be sent as.
    Making(Payload),
}

struct InFlight {
    round: u32,
    msgs: Vec<Msg>,
    sent_at: u64,
    last_sent: u64,
    bytes: u64,
    generation: u64,
    is_final: bool,
}

pub struct Source {
    id: MigrationId,
    region: RegionId,
    epoch: u64,
    policy: Policy,
    phase: Phase,
    started_at: u64,
    last_progress: u64,
    last_prepare: u64,
    next_round: u32,
    in_flight: Option<InFlight>,
    copy: Copy,
    /// A round was cut without warming the hash cache (see [`Source::warm_hash`]): done at
    /// the next tick boundary, which has nothing else to do while that round is on its way.
    hash_behind: bool,
    acked_generation: Option<u64>,
    first_round_bytes: u64,
    latency_us: Option<u64>,
    bandwidth: f64,
    bytes_per_round: Vec<u64>,
    total_bytes: u64,
    forced: bool,
    estimated_final_us: u64,
    freeze_started: Option<u64>,
    final_hash: u64,
    finished_at: Option<u64>,
    abort_reason: Option<String>,
    /// The host flushes a log before the target may take over (see `release_after_log_flush`).
    flush_first: bool,
    released: bool,
    last_release_sent: u64,
    buffered: Vec<Input>,
    outbox: VecDeque<Msg>,
    events: VecDeque<SourceEvent>,
}

/// Rounds at least this large measure the link's bandwidth; smaller ones only its latency.
const BANDWIDTH_SAMPLE_BYTES: u64 = 64 * 1024;

impl Source {
    /// Starts migrating `region` (owned at `epoch`): asks the target to prepare.
    pub fn start(id: MigrationId, region: RegionId, epoch: u64, policy: Policy, now: u64) -> Source {
        let mut s = Source {
            id,
            region,
            epoch,
            bandwidth: policy.assumed_bandwidth.max(1.0),
            policy,
            phase: Phase::Preparing,
            started_at: now,
            last_progress: now,
            last_prepare: now,
            next_round: 0,
            in_flight: None,
            copy: Copy::Idle,
            hash_behind: false,
            acked_generation: None,
            first_round_bytes: 0,
            latency_us: None,
            bytes_per_round: Vec::new(),
            total_bytes: 0,
            forced: false,
            estimated_final_us: 0,
            freeze_started: None,
            final_hash: 0,
            finished_at: None,
            abort_reason: None,
            flush_first: false,
            released: false,
            last_release_sent: 0,
            buffered: Vec::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        };
        s.outbox.push_back(Msg::Prepare { id, region, epoch });
        s
    }

    /// The host keeps a log of the region's ticks that must be in its store before the
    /// target continues it: at the freeze the machine asks for a flush
    /// ([`SourceEvent::FlushLog`]) and releases the region only after [`Source::log_flushed`].
    /// Without it the release leaves with the final round.
    pub fn release_after_log_flush(&mut self) {
        self.flush_first = true;
    }

    pub fn id(&self) -> MigrationId {
        self.id
    }
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// Whether the host may tick the region: not while frozen, and never after the commit.
    pub fn should_tick(&self) -> bool {
        matches!(self.phase, Phase::Preparing | Phase::Copying | Phase::Aborted)
    }
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Committed | Phase::Aborted | Phase::Fenced)
    }

    /// Rounds sent so far (the final one included).
    pub fn rounds_sent(&self) -> u32 {
        self.bytes_per_round.len() as u32
    }

    pub fn report(&self) -> Report {
        Report {
            id: self.id,
            region: self.region,
            phase: self.phase,
            abort_reason: self.abort_reason.clone(),
            rounds: self.bytes_per_round.len() as u32,
            bytes_per_round: self.bytes_per_round.clone(),
            total_bytes: self.total_bytes,
            forced_freeze: self.forced,
            estimated_final_us: self.estimated_final_us,
            started_us: self.started_at,
            freeze_started_us: self.freeze_started,
            finished_us: self.finished_at,
        }
    }

    /// Holds a client input that arrived while frozen. Gives it back when not frozen (apply it
    /// as usual) or when the buffer is full (refuse it: the client retries).
    pub fn buffer_input(&mut self, input: Input) -> Result<(), Input> {
        if matches!(self.phase, Phase::Frozen | Phase::Fencing) && self.buffered.len() < MAX_BUFFERED_INPUTS {
            self.buffered.push(input);
            Ok(())
        } else {
            Err(input)
        }
    }

    pub fn handle_msg(&mut self, now: u64, msg: Msg) {
        if msg.id() != self.id {
            return;
        }
        match msg {
            Msg::Prepared { .. } if self.phase == Phase::Preparing => {
                self.phase = Phase::Copying;
                self.last_progress = now;
            }
            Msg::RoundAck { round, generation, .. } if self.phase == Phase::Copying => {
                let Some(f) = &self.in_flight else { return };
                if f.round != round || f.is_final {
                    return;
                }
                if f.generation != generation {
                    return self.abort(
                        now,
                        format!("target acknowledged generation {generation}, sent {}", f.generation),
                    );
                }
                self.measure(now);
                self.acked_generation = Some(generation);
                self.in_flight = None;
                self.last_progress = now;
            }
            Msg::FreezeAck { round, state_hash, ok, .. } if self.phase == Phase::Frozen => {
                let Some(f) = &self.in_flight else { return };
                if f.round != round || !f.is_final {
                    return;
                }
                let why = format!(
                    "state hash mismatch at handover: target {state_hash:016x}, source {:016x}",
                    self.final_hash
                );
                if !ok {
                    // The target has dropped its replica and will never ask for the swap.
                    return self.resume(now, why);
                }
                if state_hash != self.final_hash {
                    // It says it matched, so it may ask for the swap: only the directory can
                    // settle this now.
                    return self.fence(why);
                }
                self.measure(now);
                self.in_flight = None;
            }
            Msg::Committed { epoch, .. } if matches!(self.phase, Phase::Frozen | Phase::Fencing) => {
                debug_assert_eq!(epoch, self.epoch + 1);
                self.commit(now);
            }
            // A refusing target has not asked for the swap and never will.
            Msg::Refuse { reason, .. } if matches!(self.phase, Phase::Frozen) => {
                self.resume(now, format!("target refused: {reason}"));
            }
            Msg::Refuse { reason, .. } => self.abort(now, format!("target refused: {reason}")),
            _ => {}
        }
    }

    /// Called whenever the region is between ticks (after each tick, and after handling
    /// messages): sends the next round, or freezes when the remainder fits the budget.
    pub fn on_tick_boundary(&mut self, now: u64, region: &Region) {
        if self.phase != Phase::Copying || self.in_flight.is_some() || !matches!(self.copy, Copy::Idle) {
            if self.phase == Phase::Copying && std::mem::take(&mut self.hash_behind) {
                self.warm_hash(region);
            }
            return;
        }
        debug_assert_eq!(region.id(), self.region);
        if self.acked_generation.is_none() && self.policy.pre_copy && self.policy.copies_by_caller {
            self.copy = Copy::Wanted(CopyJob::Snapshot);
            return;
        }
        let Some(acked) = self.acked_generation else {
            let bytes = region.snapshot_with(world::Compression::Lz4);
            self.first_round_bytes = bytes.len() as u64;
            if !self.policy.pre_copy {
                let estimate = self.estimate_us(bytes.len() as u64, world::codec::raw_len(&bytes));
                return self.freeze(now, region, Payload::Snapshot, bytes, estimate, false);
            }
            self.send_round(now, Payload::Snapshot, bytes, region.generation(), None);
            let _ = region.state_hash();
            return;
        };
        if region.generation() == acked && self.freeze_estimate_us(0, 0) > self.policy.freeze_budget_us {
            return; // nothing new since the last round: wait for the next tick
        }
        // Tombstones pruned since the last round: only a snapshot can catch the target up.
        let delta = match region.delta_since(acked) {
            Ok(d) => d,
            Err(_) if self.policy.copies_by_caller => {
                self.copy = Copy::Wanted(CopyJob::Snapshot);
                return;
            }
            Err(_) => {
                let bytes = region.snapshot_with(world::Compression::Lz4);
                return self.decide(now, region, Payload::Snapshot, bytes);
            }
        };
        let raw = delta.raw_len() as u64;
        // A large round that will not be the final one is encoded by the caller, off the
        // tick thread; its bytes on the wire are not known yet, so the estimate takes the raw
        // size for them (an overestimate, which only means one more round). The byte limit is
        // checked at the next decision, which counts this round.
        if self.policy.copies_by_caller
            && raw > self.policy.off_tick_raw_bytes
            && self.freeze_estimate_us(raw, raw) > self.policy.freeze_budget_us
            && (self.bytes_per_round.len() as u32) < self.policy.max_rounds
        {
            // Cutting a large round (the delta of thousands of records) is this boundary's
            // work; hashing them again is the next one's, so no single tick carries both.
            self.copy = Copy::Wanted(CopyJob::Delta(Box::new(delta)));
            self.hash_behind = true;
            return;
        }
        self.decide(now, region, Payload::Delta, delta.encode());
    }

    /// Whether the policy's round or byte limits are reached (with `next` more bytes).
    fn out_of_rounds(&self, next: u64) -> bool {
        let budget_bytes = (self.first_round_bytes as f64 * self.policy.max_bytes_factor) as u64;
        self.bytes_per_round.len() as u32 >= self.policy.max_rounds || self.total_bytes + next > budget_bytes
    }

    /// Freezes with `bytes` as the final round when it fits the budget, else sends it as one
    /// more round, or (out of rounds or bytes) freezes anyway or aborts, by policy.
    fn decide(&mut self, now: u64, region: &Region, payload: Payload, bytes: Vec<u8>) {
        let estimate = self.freeze_estimate_us(bytes.len() as u64, world::codec::raw_len(&bytes));
        let sent_rounds = self.bytes_per_round.len() as u32;
        if estimate <= self.policy.freeze_budget_us {
            self.freeze(now, region, payload, bytes, estimate, false);
        } else if self.out_of_rounds(bytes.len() as u64) {
            match self.policy.on_no_convergence {
                NoConvergence::FreezeAnyway { cap_us } if estimate <= cap_us => {
                    self.freeze(now, region, payload, bytes, estimate, true)
                }
                _ => self.abort(
                    now,
                    format!(
                        "did not converge: {sent_rounds} rounds and {} bytes sent; the remaining {} bytes \
                         need about {} µs, over the freeze budget of {} µs",
                        self.total_bytes,
                        bytes.len(),
                        estimate,
                        self.policy.freeze_budget_us
                    ),
                ),
            }
        } else {
            self.send_round(now, payload, bytes, region.generation(), None);
            self.warm_hash(region);
        }
    }

    /// Warms the region's row-hash cache after a round, so the hash taken inside the freeze
    /// only covers what changed since.
    fn warm_hash(&self, region: &Region) {
        let _ = region.state_hash();
    }

    /// Whether the machine waits for the caller to encode a copy
    /// ([`Policy::copies_by_caller`]): take it with [`Source::take_copy`].
    pub fn wants_copy(&self) -> bool {
        self.phase == Phase::Copying && matches!(self.copy, Copy::Wanted(_))
    }

    /// The copy to encode, once: for [`CopyJob::Snapshot`], the caller takes the region as it
    /// is at this tick boundary. Hand the result to [`Source::copy_ready`].
    pub fn take_copy(&mut self) -> Option<CopyJob> {
        if !self.wants_copy() {
            return None;
        }
        let Copy::Wanted(job) = std::mem::replace(&mut self.copy, Copy::Idle) else { return None };
        let payload = match job {
            CopyJob::Snapshot => Payload::Snapshot,
            CopyJob::Delta(_) => Payload::Delta,
        };
        self.copy = Copy::Making(payload);
        Some(job)
    }

    /// The caller's encoded copy, of the region at `generation`: sent as the next round.
    /// Ignored if the migration ended meanwhile.
    pub fn copy_ready(&mut self, now: u64, bytes: Vec<u8>, generation: u64) {
        let Copy::Making(payload) = std::mem::replace(&mut self.copy, Copy::Idle) else { return };
        if self.phase != Phase::Copying || self.in_flight.is_some() {
            return;
        }
        if self.acked_generation.is_none() {
            self.first_round_bytes = bytes.len() as u64;
        }
        self.send_round(now, payload, bytes, generation, None);
    }

    fn freeze(
        &mut self,
        now: u64,
        region: &Region,
        payload: Payload,
        bytes: Vec<u8>,
        estimate: u64,
        forced: bool,
    ) {
        self.phase = Phase::Frozen;
        self.forced = forced;
        self.estimated_final_us = estimate;
        self.freeze_started = Some(now);
        self.final_hash = region.state_hash();
        let freeze = Freeze { tick: region.tick_number(), state_hash: self.final_hash };
        self.send_round(now, payload, bytes, region.generation(), Some(freeze));
        if self.flush_first {
            self.events.push_back(SourceEvent::FlushLog);
        } else {
            self.release(now);
        }
    }

    /// The log records of every tick up to the freeze are in the store (after
    /// [`SourceEvent::FlushLog`]): the target may now take the region.
    pub fn log_flushed(&mut self, now: u64) {
        if self.phase == Phase::Frozen && !self.released {
            self.release(now);
        }
    }

    fn release(&mut self, now: u64) {
        self.released = true;
        self.last_release_sent = now;
        self.outbox.push_back(Msg::Release { id: self.id });
    }

    fn send_round(
        &mut self,
        now: u64,
        payload: Payload,
        bytes: Vec<u8>,
        generation: u64,
        freeze: Option<Freeze>,
    ) {
        let round = self.next_round;
        self.next_round += 1;
        let msgs = chunks(self.id, round, payload, freeze, &bytes);
        self.outbox.extend(msgs.iter().cloned());
        self.bytes_per_round.push(bytes.len() as u64);
        self.total_bytes += bytes.len() as u64;
        self.in_flight = Some(InFlight {
            round,
            msgs,
            sent_at: now,
            last_sent: now,
            bytes: bytes.len() as u64,
            generation,
            is_final: freeze.is_some(),
        });
    }

    /// Learns the link from the round just acknowledged.
    fn measure(&mut self, now: u64) {
        let Some(f) = &self.in_flight else { return };
        // Timed from the first send even when the round was sent again: an overestimate when
        // a copy was lost, which errs on the side of one more round rather than a long freeze.
        let elapsed = now.saturating_sub(f.sent_at).max(1);
        self.latency_us = Some(self.latency_us.map_or(elapsed, |l| l.min(elapsed)));
        if f.bytes >= BANDWIDTH_SAMPLE_BYTES {
            let sample = f.bytes as f64 / (elapsed as f64 / 1e6);
            self.bandwidth = 0.5 * self.bandwidth + 0.5 * sample;
        }
    }

    /// How long a freeze with a final round of `bytes` on the wire (`raw` uncompressed) is
    /// expected to take: that round (cut, sent, applied and acknowledged), then one more round
    /// trip for the compare-and-swap and the Commit before the target ticks.
    fn freeze_estimate_us(&self, bytes: u64, raw: u64) -> u64 {
        self.estimate_us(bytes, raw) + self.latency_us.unwrap_or(0)
    }

    fn estimate_us(&self, bytes: u64, raw: u64) -> u64 {
        let wire = bytes as f64 / self.bandwidth;
        let work = raw as f64 / self.policy.state_rate.max(1.0);
        self.latency_us.unwrap_or(0) + ((wire + work) * 1e6) as u64
    }

    /// What the directory said to the [`SourceEvent::Fence`] this machine asked for.
    pub fn handle_fence_result(&mut self, now: u64, result: FenceResult) {
        if self.phase != Phase::Fencing {
            return;
        }
        match result {
            FenceResult::Kept => {
                self.epoch += 1;
                let why = self.abort_reason.take().unwrap_or_else(|| "fenced the target out".into());
                self.resume(now, why);
            }
            FenceResult::TargetOwns => self.commit(now),
            FenceResult::Lost => {
                // Someone else moved the epoch (a failover decided we were dead): we own nothing.
                self.phase = Phase::Fenced;
                self.finished_at = Some(now);
                self.buffered.clear();
                self.abort_reason = Some("fenced: the region's epoch moved on during the freeze".into());
                self.outbox.push_back(Msg::Abort { id: self.id, reason: reason("fenced") });
                self.events.push_back(SourceEvent::Fenced { report: self.report() });
            }
        }
    }

    /// The target owns the region (its swap succeeded): hand over what was held meanwhile.
    fn commit(&mut self, now: u64) {
        self.phase = Phase::Committed;
        self.epoch += 1;
        self.finished_at = Some(now);
        self.in_flight = None;
        let buffered = std::mem::take(&mut self.buffered);
        self.events.push_back(SourceEvent::Committed { report: self.report(), buffered });
    }

    /// Gives up. Before the freeze the source simply ticks on; frozen, it first fences the
    /// target out ([`SourceEvent::Fence`]), since the target may already be taking the
    /// region. No effect once the outcome is settled or being settled.
    pub fn abort(&mut self, now: u64, why: impl Into<String>) {
        match self.phase {
            Phase::Preparing | Phase::Copying => self.resume(now, why.into()),
            Phase::Frozen => self.fence(why.into()),
            _ => {}
        }
    }

    /// Asks the directory to settle a freeze the target may be committing.
    fn fence(&mut self, why: String) {
        self.phase = Phase::Fencing;
        self.in_flight = None;
        self.abort_reason = Some(why);
        self.events.push_back(SourceEvent::Fence {
            region: self.region,
            from: self.epoch,
            to: self.epoch + 1,
        });
    }

    /// Ends the migration with the source still the owner: it ticks on, held inputs first.
    /// Only when the target cannot be taking the region.
    fn resume(&mut self, now: u64, why: String) {
        self.phase = Phase::Aborted;
        self.finished_at = Some(now);
        self.in_flight = None;
        self.outbox.push_back(Msg::Abort { id: self.id, reason: reason(why.clone()) });
        self.abort_reason = Some(why);
        let buffered = std::mem::take(&mut self.buffered);
        self.events.push_back(SourceEvent::Aborted { report: self.report(), buffered });
    }

    pub fn handle_timeout(&mut self, now: u64) {
        match self.phase {
            Phase::Preparing => {
                if now.saturating_sub(self.started_at) >= STALL_TIMEOUT_US {
                    return self.abort(now, "the target did not answer Prepare");
                }
                if now.saturating_sub(self.last_prepare) >= RETRANSMIT_US {
                    self.last_prepare = now;
                    self.outbox.push_back(Msg::Prepare {
                        id: self.id,
                        region: self.region,
                        epoch: self.epoch,
                    });
                }
            }
            Phase::Copying | Phase::Frozen => {
                if self.phase == Phase::Frozen
                    && now.saturating_sub(self.freeze_started.unwrap_or(now)) >= FREEZE_TIMEOUT_US
                {
                    return self.abort(now, "the target did not take the region within FREEZE_TIMEOUT");
                }
                if now.saturating_sub(self.last_progress) >= STALL_TIMEOUT_US {
                    return self.abort(now, "the target stopped acknowledging rounds");
                }
                if let Some(f) = &mut self.in_flight {
                    if now.saturating_sub(f.last_sent) >= RETRANSMIT_US {
                        f.last_sent = now;
                        self.outbox.extend(f.msgs.iter().cloned());
                    }
                }
                // Frozen and released: the release is repeated until the target answers (a
                // committed target answers it with `Committed` again).
                if self.phase == Phase::Frozen
                    && self.released
                    && now.saturating_sub(self.last_release_sent) >= RETRANSMIT_US
                {
                    self.last_release_sent = now;
                    self.outbox.push_back(Msg::Release { id: self.id });
                }
            }
            Phase::Fencing | Phase::Committed | Phase::Aborted | Phase::Fenced => {}
        }
    }

    /// When [`Source::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::Preparing => {
                Some((self.last_prepare + RETRANSMIT_US).min(self.started_at + STALL_TIMEOUT_US))
            }
            Phase::Copying | Phase::Frozen => {
                let mut t = self.last_progress + STALL_TIMEOUT_US;
                if let Some(f) = &self.in_flight {
                    t = t.min(f.last_sent + RETRANSMIT_US);
                }
                if let Some(fs) = self.freeze_started {
                    t = t.min(fs + FREEZE_TIMEOUT_US);
                }
                if self.phase == Phase::Frozen && self.released {
                    t = t.min(self.last_release_sent + RETRANSMIT_US);
                }
                Some(t)
            }
            _ => None,
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Msg> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SourceEvent> {
        self.events.pop_front()
    }
}
