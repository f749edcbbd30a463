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
//! Messages between regions go through a [`CrossingSender`] that the network layer installs
//! (it knows where each region runs); without one, only regions of this host are reached.

use std::sync::Arc;

use crossing::{Incoming, IncomingEvent, Msg, Outgoing, OutgoingEvent, Transmit, Unit};
use serde::{Deserialize, Serialize};
use world::{EntityId, Input, Region, RegionId, TickOutput};

/// Most inputs the border adds to one tick; client inputs leave room for them.
pub const MAX_BORDER_INPUTS_PER_TICK: usize = 64;

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
        // The record goes last, so cap the decisions before it; the rest wait a tick.
        let take = self.inputs.len().min(MAX_BORDER_INPUTS_PER_TICK - 1);
        let mut inputs: Vec<Input> = self.inputs.drain(..take).collect();
        if std::mem::take(&mut self.changed) {
            let state = postcard::to_stdvec(&self.machines).expect("serializing to memory cannot fail");
            inputs.push(Input::Border { state });
        }
        self.releasing.append(&mut self.held);
        self.given = inputs.iter().map(input_name).collect();
        inputs
    }

    /// After a tick: offers the units that reached an edge, notes inputs the region refused,
    /// and hands back the messages to send now.
    pub(crate) fn after_tick(&mut self, now_us: u64, region: &Region, out: &TickOutput) -> Vec<Transmit> {
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
        let mut offers = std::mem::take(&mut self.to_offer);
        offers.extend(out.leaving.iter().copied());
        for (root, to) in offers {
            self.offer(now_us, region, root, to);
        }
        std::mem::take(&mut self.releasing)
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
