//! Border crossings on a host: each region's crossing machines ([`crossing::Outgoing`] and
//! [`crossing::Incoming`], pure) driven around the region's ticks.
//!
//! The rule that makes a crossing safe across crashes and migrations: **a message leaves only
//! after the region state that caused it has been ticked**. The machines' durable record is
//! written into the region (`Input::Border`) in the same tick as the inputs their decisions
//! call for (`Depart`, `Return`, `Arrive`), and the messages those decisions produced are sent
//! right after that tick. So whatever copy of the region survives (a migration's final
//! delta, a snapshot) agrees with every message its neighbours have seen. Messages caused by
//! state that was not ticked yet are simply lost with it, and the protocol's retransmissions
//! cover them.
//!
//! Two steps do not wait for a tick, because each waits costs the crossing avatar up to a
//! whole tick of standing still (see [`deliver`]): the record of the offers a tick made is
//! written into that same tick before anything of it is observed ([`Border::after_tick`]), and a
//! message that arrives between ticks is answered at once: its acceptance, or its release with
//! the departure, is written into the region as an amendment of its own
//! ([`world::Region::amend`]), logged (with a store) before the answer leaves. Arrivals and
//! returns still wait for the next tick, which shows them; while one waits, nothing is amended.
//!
//! Messages between regions go through a [`CrossingSender`] that the network layer installs
//! (it knows where each region runs); without one, only regions of this host are reached.

use std::sync::Arc;

use crossing::{Incoming, IncomingEvent, Msg, Outgoing, OutgoingEvent, Transmit, Unit};
use serde::{Deserialize, Serialize};
use world::{EntityId, Input, Region, RegionId, TickOutput};

/// Most inputs the border adds to one tick; client inputs leave room for them. A crowd
/// crossing together (a couple of hundred avatars walking side by side) fits in one tick;
/// beyond this the rest wait for the next.
pub const MAX_BORDER_INPUTS_PER_TICK: usize = 256;
/// A region with an adoption waiting ticks early (see [`hurry`]), but never sooner than this
/// after its previous tick: so arrivals at most double an active region's tick rate.
pub const MIN_HURRIED_SPACING_US: u64 = 1_000_000 / (2 * world::limits::ACTIVE_TICK_HZ as u64);
/// Bringing a tick forward by less than this is not worth an extra wake-up.
pub const MIN_HURRY_GAIN_US: u64 = 2_000;

/// Delivers a crossing message from region `from` to `transmit.to`, wherever it runs. Called
/// on tick threads: must not block.
pub type CrossingSender = Arc<dyn Fn(RegionId, Transmit) + Send + Sync>;

/// What a region remembers of its crossings (its `Input::Border` record).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Machines {
    out: Outgoing,
    inc: Incoming,
}

/// Counters of one region's crossings, for stats and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossingStats {
    /// Units offered to a neighbour.
    pub offered: u64,
    /// Units the neighbour took (deleted here).
    pub departed: u64,
    /// Offers called off (refused, or no answer in time): the unit came back inside.
    pub returned: u64,
    /// Units adopted from neighbours.
    pub arrived: u64,
    /// Units that could not be offered (too large, too many in flight) and came back inside.
    pub not_offered: u64,
    /// Decided inputs the region refused: each is a bug worth a look (logged as errors).
    pub refused: u64,
    /// Crossings of this region in flight now (offered or accepted, not yet settled).
    pub in_flight: u64,
}

/// One region's crossings on this host.
pub(crate) struct Border {
    region: RegionId,
    machines: Machines,
    /// Messages whose cause is not in the region's state yet: they go after the next tick.
    held: Vec<Transmit>,
    /// Messages whose cause this tick writes: they go right after it.
    releasing: Vec<Transmit>,
    /// Inputs the machines' decisions call for, for the next tick.
    inputs: Vec<Input>,
    /// Held roots to offer after the next tick (found on load, or whose offer must wait).
    to_offer: Vec<(EntityId, RegionId)>,
    /// What the inputs handed to the current tick were (they come first in its input list).
    given: Vec<&'static str>,
    /// Entities that departed in amendments between ticks: reported with the next tick's
    /// removals (an amendment has no output of its own for subscribers).
    departed: Vec<EntityId>,
    changed: bool,
    pub(crate) stats: CrossingStats,
}

impl Border {
    /// The crossings of a region just loaded here: its record, and every held unit that is not
    /// being offered any more (a crash or a migration can leave one) is offered again.
    pub(crate) fn load(region: &Region) -> Border {
        let id = region.id();
        let machines = match region.border_state() {
            [] => Machines { out: Outgoing::new(id), inc: Incoming::new(id) },
            bytes => match postcard::from_bytes::<Machines>(bytes) {
                Ok(m) if m.out.region() == id && m.inc.region() == id => m,
                Ok(_) => {
                    tracing::error!(region = %id, "crossing record names another region; starting afresh");
                    Machines { out: Outgoing::new(id), inc: Incoming::new(id) }
                }
                Err(e) => {
                    tracing::error!(region = %id, "crossing record unreadable ({e}); starting afresh");
                    Machines { out: Outgoing::new(id), inc: Incoming::new(id) }
                }
            },
        };
        let offering: Vec<EntityId> = machines.out.offering_roots().collect();
        let to_offer = region.held().into_iter().filter(|(root, _)| !offering.contains(root)).collect();
        Border {
            region: id,
            machines,
            held: Vec::new(),
            releasing: Vec::new(),
            inputs: Vec::new(),
            to_offer,
            given: Vec::new(),
            departed: Vec::new(),
            changed: false,
            stats: CrossingStats::default(),
        }
    }

    /// A message from the neighbour `from`. Its effects reach the region at the next tick.
    pub(crate) fn on_msg(&mut self, now_us: u64, from: RegionId, msg: Msg) {
        match msg {
            Msg::Offer { .. } | Msg::Release { .. } | Msg::Cancel { .. } => {
                self.machines.inc.handle_msg(now_us, from, msg)
            }
            Msg::Accept { .. } | Msg::Refuse { .. } | Msg::Done { .. } => {
                self.machines.out.handle_msg(now_us, from, msg)
            }
        }
        self.changed = true;
        self.collect();
    }

    /// Before a tick: the inputs for it (they go first in the tick's list), including the
    /// machines' record when it changed. What was waiting is released to go after this tick.
    pub(crate) fn before_tick(&mut self, now_us: u64) -> Vec<Input> {
        if self.machines.out.poll_timeout().is_some_and(|t| t <= now_us) {
            self.machines.out.handle_timeout(now_us);
            self.changed = true;
        }
        if self.machines.inc.poll_timeout().is_some_and(|t| t <= now_us) {
            self.machines.inc.handle_timeout(now_us);
            self.changed = true;
        }
        self.collect();
        // The record goes last, so cap the decisions before it; the rest wait a tick. The
        // record covers every decision made, so it is written only with the last of them: a
        // record ahead of the state would release messages whose inputs are not applied yet.
        let take = self.inputs.len().min(MAX_BORDER_INPUTS_PER_TICK - 1);
        let mut inputs: Vec<Input> = self.inputs.drain(..take).collect();
        if self.inputs.is_empty() {
            if std::mem::take(&mut self.changed) {
                inputs.push(Input::Border { state: self.record() });
            }
            self.releasing.append(&mut self.held);
        }
        self.given = inputs.iter().map(input_name).collect();
        inputs
    }

    /// After a tick: offers the units that reached an edge, notes inputs the region refused,
    /// reports the departures amended since the last tick, and hands back the messages to send
    /// now. When nothing decided waits for a tick, the machines' new record is written into
    /// this tick (`out` is its output, not yet observed), so the offers leave right away.
    pub(crate) fn after_tick(
        &mut self,
        now_us: u64,
        region: &mut Region,
        out: &mut TickOutput,
    ) -> Vec<Transmit> {
        let given = std::mem::take(&mut self.given);
        for r in &out.rejected {
            let Some(&what) = given.get(r.index) else { continue };
            self.stats.refused += 1;
            tracing::error!(region = %self.region, error = %r.error, input = what, "region refused a crossing step");
            if what == BORDER_RECORD {
                // The record is not in the state: what it would have covered must not go out.
                // It is written again (whole) at the next tick.
                self.changed = true;
                let mut waiting = std::mem::take(&mut self.releasing);
                waiting.append(&mut self.held);
                self.held = waiting;
            }
        }
        if !self.departed.is_empty() {
            // A unit that came back since (arrived in this tick) is reported by its rows.
            let mut departed = std::mem::take(&mut self.departed);
            departed.retain(|&id| region.entity(id).is_none());
            departed.append(&mut out.removed);
            out.removed = departed;
        }
        let mut offers = std::mem::take(&mut self.to_offer);
        offers.extend(out.leaving.iter().copied());
        for (root, to) in offers {
            self.offer(now_us, region, root, to);
        }
        if self.changed && self.inputs.is_empty() {
            match region.amend_tick_border(self.record(), out) {
                Ok(()) => {
                    self.changed = false;
                    self.releasing.append(&mut self.held);
                }
                Err(e) => {
                    self.stats.refused += 1;
                    tracing::error!(region = %self.region, error = %e, "region refused the crossing record after a tick");
                }
            }
        }
        std::mem::take(&mut self.releasing)
    }

    /// Between ticks, after a message: when every decision the machines made since their last
    /// record can be written now (the record itself, and departures), writes them into the
    /// region as one amendment and returns it (its durable record) with the messages it frees.
    /// `None` when nothing changed or a decision needs a tick (an arrival, a return): then all
    /// of it waits for the next tick, so a record never runs ahead of the inputs it implies.
    pub(crate) fn amend(&mut self, region: &mut Region) -> Option<(TickOutput, Vec<Transmit>)> {
        if !self.changed || self.inputs.len() >= MAX_BORDER_INPUTS_PER_TICK {
            return None;
        }
        if !self.inputs.iter().all(|i| matches!(i, Input::Depart { .. })) {
            return None;
        }
        let record = self.record();
        if self.inputs.is_empty() && record == region.border_state() {
            // A duplicate, or a retransmission answered: its cause is in the state already.
            self.changed = false;
            let out = TickOutput {
                tick: region.tick_number(),
                generation: region.generation(),
                ..Default::default()
            };
            return Some((out, std::mem::take(&mut self.held)));
        }
        let mut inputs = std::mem::take(&mut self.inputs);
        inputs.push(Input::Border { state: record });
        let names: Vec<&'static str> = inputs.iter().map(input_name).collect();
        let out = region.amend(inputs);
        self.changed = false;
        let mut record_refused = false;
        for r in &out.rejected {
            let what = names.get(r.index).copied().unwrap_or("other");
            self.stats.refused += 1;
            tracing::error!(region = %self.region, error = %r.error, input = what, "region refused a crossing step between ticks");
            record_refused |= what == BORDER_RECORD;
        }
        self.departed.extend(out.removed.iter().copied());
        if record_refused {
            // Not in the state: what it covers waits, and it is written again at the next tick.
            self.changed = true;
            return Some((out, Vec::new()));
        }
        Some((out, std::mem::take(&mut self.held)))
    }

    fn record(&self) -> Vec<u8> {
        postcard::to_stdvec(&self.machines).expect("serializing to memory cannot fail")
    }

    fn offer(&mut self, now_us: u64, region: &Region, root: EntityId, to: RegionId) {
        let Some(parts) = region.unit(root) else { return };
        let mut modules: Vec<world::ModuleHash> = parts.scripts.iter().map(|s| s.module).collect();
        modules.sort_unstable();
        modules.dedup();
        let unit = Unit {
            root,
            entities: parts.entities,
            scripts: parts.scripts,
            modules: modules
                .into_iter()
                .filter_map(|h| region.module(h).map(|b| world::scripts::ByteVec(b.to_vec())))
                .collect(),
        };
        match self.machines.out.start(now_us, unit, to) {
            Ok(id) => {
                self.stats.offered += 1;
                self.changed = true;
                tracing::debug!(region = %self.region, %id, %root, %to, "offering a unit");
            }
            Err(e) => {
                self.stats.not_offered += 1;
                tracing::info!(region = %self.region, %root, %to, "cannot cross ({e}); it comes back inside");
                self.inputs.push(Input::Return { root });
            }
        }
        self.collect();
    }

    /// Turns the machines' events into inputs and their messages into held transmits.
    fn collect(&mut self) {
        while let Some(ev) = self.machines.out.poll_event() {
            match ev {
                OutgoingEvent::Released { id, root, to } => {
                    self.stats.departed += 1;
                    tracing::debug!(region = %self.region, %id, %root, %to, "unit released to the neighbour");
                    self.inputs.push(Input::Depart { root });
                }
                OutgoingEvent::Returned { id, unit, why } => {
                    self.stats.returned += 1;
                    tracing::info!(region = %self.region, %id, root = %unit.root, ?why, "crossing called off; the unit comes back");
                    self.inputs.push(Input::Return { root: unit.root });
                }
                OutgoingEvent::Completed { .. } => {}
            }
        }
        while let Some(ev) = self.machines.inc.poll_event() {
            match ev {
                IncomingEvent::Adopt { id, unit } => {
                    self.stats.arrived += 1;
                    tracing::debug!(region = %self.region, %id, root = %unit.root, "unit adopted");
                    self.inputs.push(Input::Arrive {
                        from: id.from,
                        entities: unit.entities,
                        scripts: unit.scripts,
                        modules: unit.modules.into_iter().map(|m| m.0).collect(),
                    });
                }
                IncomingEvent::Accepted { .. } | IncomingEvent::Dropped { .. } => {}
            }
        }
        while let Some(t) = self.machines.out.poll_transmit() {
            self.held.push(t);
        }
        while let Some(t) = self.machines.inc.poll_transmit() {
            self.held.push(t);
        }
    }

    /// Whether a unit was released to this region and waits for the next tick to arrive.
    pub(crate) fn adoption_waiting(&self) -> bool {
        self.inputs.iter().any(|i| matches!(i, Input::Arrive { .. }))
    }

    /// The counters, with the crossings in flight now (offered, released and unconfirmed,
    /// or accepted and unreleased).
    pub(crate) fn stats(&self) -> CrossingStats {
        CrossingStats {
            in_flight: (self.machines.out.in_flight() + self.machines.inc.provisional()) as u64,
            ..self.stats
        }
    }
}

const BORDER_RECORD: &str = "border record";

fn input_name(input: &Input) -> &'static str {
    match input {
        Input::Depart { .. } => "depart",
        Input::Return { .. } => "return",
        Input::Arrive { .. } => "arrive",
        Input::Border { .. } => BORDER_RECORD,
        _ => "other",
    }
}

/// A crossing message for region `to` of this host, from its neighbour `from`, on any thread
/// but `to`'s tick thread (which holds the region meanwhile). Handled at once, and what it
/// decided is written into the region between ticks when it can be ([`Border::amend`]), so the
/// answer leaves now instead of after the next tick. Dropped (the protocol resends) while the
/// region is frozen for a migration or before its first tick here.
///
/// The migration lock is held throughout, as by a tick: a freeze is cut only at a tick
/// boundary, so an amendment is either in the migration's final state or did not happen.
pub(crate) fn deliver(
    shared: &crate::Shared,
    slot: &crate::RegionSlot,
    to: RegionId,
    from: RegionId,
    msg: Msg,
) {
    let migration = slot.migration.lock();
    if migration.as_ref().is_some_and(|m| !m.should_tick()) {
        return;
    }
    let mut region = slot.region.lock();
    let mut border = slot.border.lock();
    let Some(b) = border.as_mut() else { return };
    b.on_msg(shared.epoch.elapsed().as_micros() as u64, from, msg);
    let amended = b.amend(&mut region);
    if b.adoption_waiting() {
        hurry(shared, slot, to, region.interval_us());
    }
    let Some((out, transmits)) = amended else { return };
    drop(border);
    match shared.durable.get() {
        Some(d) => d.log_amendment(&region, &out, crate::durable::after_commit_send(shared, to, transmits)),
        None => {
            // Never hold one region while delivering to another (two regions answering each
            // other at once would wait on each other).
            drop(region);
            drop(migration);
            crate::send_transmits(shared, to, transmits);
        }
    }
}

/// Brings the region's next tick forward to now (but no sooner than `MIN_HURRIED_SPACING_US`
/// after its previous one): an adopted unit is shown at the tick that inserts it, and whoever
/// crossed has stood still since it left the other region, so waiting out the rest of this
/// region's interval would only lengthen that pause. `interval_us` is region `id`'s current one.
pub(crate) fn hurry(shared: &crate::Shared, slot: &crate::RegionSlot, id: RegionId, interval_us: u64) {
    use std::sync::atomic::Ordering;
    let mut schedule = shared.schedule.lock();
    let due = slot.due.load(Ordering::SeqCst);
    if due == crate::TICKING {
        return; // its tick runs now: rescheduling it brings the next one forward if need be
    }
    let now = shared.epoch.elapsed().as_micros() as u64;
    if let Some(earliest) = hurried(due, interval_us, now) {
        if slot.due.compare_exchange(due, earliest, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return; // a thread took that tick meanwhile
        }
        schedule.push(std::cmp::Reverse((earliest, id, slot.incarnation)));
        drop(schedule);
        shared.wake.notify_one();
    }
}

/// When a tick due at `due` (after one at `due - interval_us`) should run instead, at `now`, if
/// bringing it forward is allowed and worth it.
fn hurried(due: u64, interval_us: u64, now: u64) -> Option<u64> {
    let earliest = (due.saturating_sub(interval_us) + MIN_HURRIED_SPACING_US).max(now);
    (earliest + MIN_HURRY_GAIN_US < due).then_some(earliest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIVE: u64 = 1_000_000 / world::limits::ACTIVE_TICK_HZ as u64;
    const IDLE: u64 = 200_000;

    #[test]
    fn an_adopting_region_ticks_now_but_never_closer_than_half_an_active_interval() {
        // An active region that ticked 15 ms ago ticks now rather than in 7 ms.
        assert_eq!(hurried(1_000_000 + ACTIVE, ACTIVE, 1_015_000), Some(1_015_000));
        // One that ticked 1 ms ago waits until half an active interval has passed.
        assert_eq!(hurried(1_000_000 + ACTIVE, ACTIVE, 1_001_000), Some(1_000_000 + MIN_HURRIED_SPACING_US));
        // An idle region (5 Hz) does not make an arrival wait out its long interval.
        assert_eq!(hurried(1_000_000 + IDLE, IDLE, 1_050_000), Some(1_050_000));
    }

    #[test]
    fn a_tick_about_due_or_already_due_is_left_alone() {
        assert_eq!(hurried(1_000_000 + ACTIVE, ACTIVE, 1_000_000 + ACTIVE - 1_000), None);
        assert_eq!(hurried(1_000_000, ACTIVE, 1_000_500), None);
        assert_eq!(hurried(0, ACTIVE, 0), None);
    }
}
