//! The orchestrator's decisions as a state machine without I/O or clock: load reports, the
//! live hosts and the directory's placements come in (`handle_*`, with the time as an input);
//! the actions to take come out (`poll_actions`); their outcomes come back in. The I/O layer
//! (`crate::Orchestrator`) wires it to HTTP; tests drive it with fake reports.

use std::collections::{BTreeMap, VecDeque};

use directory::report::{HostReport, RegionReport};
use directory::{HostRecord, Placement};
use placement::{ClusterView, HostLoad, Move, Policy, Reason, RegionLoad};
use serde::{Deserialize, Serialize};
use world::RegionId;

use crate::limits::*;

/// What the I/O layer must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a live migration: ask `from_api` to move `mv.region` to the host named `mv.to`.
    Migrate { mv: Move, from_api: String },
    /// Restart `mv.region` on `to_api` from the latest snapshot held (its host is dead).
    Restore { mv: Move, to_api: String },
    /// Unload a stale copy of `region` from `host`: the directory gives the region to another
    /// host at a newer epoch (the host was taken for dead and its regions restarted elsewhere).
    Fence { region: RegionId, host: String, api: String },
}

/// How a move ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrainPhase {
    Running,
    Done,
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    pub host: String,
    pub phase: DrainPhase,
    pub regions_at_start: usize,
    pub regions_left: usize,
    pub moved: u32,
    pub failures: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub at_ms: u64,
    pub text: String,
    /// For a move: which, and how far it got (for tools that follow the orchestrator).
    #[serde(default)]
    pub step: Option<MoveStep>,
}

/// A move started, committed or failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveStep {
    pub mv: Move,
    pub phase: MovePhase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MovePhase {
    Started,
    Committed,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    pub name: String,
    pub api: String,
    pub cores: u32,
    pub alive: bool,
    pub draining: bool,
    pub load_milli: u64,
    pub regions: usize,
    /// Age of its last load report.
    pub report_age_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionStatus {
    pub region: RegionId,
    pub host: String,
    pub epoch: u64,
    pub load: Option<RegionReport>,
    /// Moves this orchestrator made of it (migrations and failovers).
    pub moves: u32,
    pub last_moved_ms: Option<u64>,
    /// Age of the snapshot the orchestrator holds for failover.
    #[serde(default)]
    pub snapshot_age_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlightStatus {
    pub region: RegionId,
    pub from: String,
    pub to: String,
    pub reason: Reason,
    pub started_ms: u64,
}

/// Everything `terrane status` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub now_ms: u64,
    pub hosts: Vec<HostStatus>,
    pub regions: Vec<RegionStatus>,
    pub in_flight: Vec<FlightStatus>,
    pub drains: Vec<DrainStatus>,
    pub decisions: Vec<Decision>,
}

/// Why a drain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DrainError {
    #[error("no live host named {0:?} (see `terrane status` for the names)")]
    UnknownHost(String),
}

struct HostState {
    record: HostRecord,
    alive: bool,
    draining: bool,
    load_milli: u64,
    last_report_ms: Option<u64>,
}

#[derive(Default)]
struct RegionState {
    placement: Option<Placement>,
    /// When the placement last changed, as this orchestrator saw it.
    placed_ms: u64,
    load: Option<RegionReport>,
    moves: u32,
    last_moved_ms: Option<u64>,
}

struct Flight {
    mv: Move,
    started_ms: u64,
}

struct Drain {
    status: DrainStatus,
    /// Since when the other hosts have had no room for the drain's next region (loads just
    /// after a start or a move settle down, so the drain waits a while before it fails).
    no_room_since: Option<u64>,
}

pub struct Brain {
    /// When false, only drains and failovers move regions (the policy's own moves are skipped).
    pub autoplace: bool,
    policy: Policy,
    started_ms: u64,
    start_grace_ms: u64,
    hosts: BTreeMap<String, HostState>,
    regions: BTreeMap<RegionId, RegionState>,
    in_flight: BTreeMap<RegionId, Flight>,
    drains: BTreeMap<String, Drain>,
    decisions: VecDeque<Decision>,
    /// (host, region) pairs a host reports running although the directory gives the region to
    /// another host, with when that was first seen.
    stale: BTreeMap<(String, RegionId), u64>,
}

impl Brain {
    /// `policy` must pass `Policy::check`; `now_ms` starts the failover grace period.
    pub fn new(policy: Policy, now_ms: u64, start_grace_ms: u64) -> Brain {
        Brain {
            autoplace: true,
            policy,
            started_ms: now_ms,
            start_grace_ms,
            hosts: BTreeMap::new(),
            regions: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            drains: BTreeMap::new(),
            decisions: VecDeque::new(),
            stale: BTreeMap::new(),
        }
    }

    fn decide(&mut self, now_ms: u64, text: String) {
        self.record(now_ms, text, None);
    }

    /// Keeps a line about how an action is carried out (e.g. which state a failover restarted
    /// from) among the decisions.
    pub fn note(&mut self, now_ms: u64, text: String) {
        self.decide(now_ms, text);
    }

    fn record(&mut self, now_ms: u64, text: String, step: Option<MoveStep>) {
        tracing::info!(target: "orchestrator", "{text}");
        if self.decisions.len() >= MAX_DECISIONS {
            self.decisions.pop_front();
        }
        self.decisions.push_back(Decision { at_ms: now_ms, text, step });
    }

    /// A host's load report. Reports of unknown hosts register them as alive (the directory's
    /// host list confirms or refutes it at the next refresh).
    pub fn handle_report(&mut self, now_ms: u64, report: HostReport) {
        if !self.hosts.contains_key(&report.host.name) && self.hosts.len() >= MAX_HOSTS {
            return;
        }
        if !self.hosts.contains_key(&report.host.name) {
            self.decide(now_ms, format!("host {} joined with {} cores", report.host.name, report.host.cores));
        }
        let h = self.hosts.entry(report.host.name.clone()).or_insert_with(|| HostState {
            record: report.host.clone(),
            alive: true,
            draining: false,
            load_milli: 0,
            last_report_ms: None,
        });
        h.record = report.host.clone();
        h.load_milli = report.load_milli;
        h.last_report_ms = Some(now_ms);
        let name = report.host.name.clone();
        self.stale.retain(|(h, r), _| h != &name || report.regions.iter().any(|x| x.region == *r));
        for r in report.regions {
            if !self.regions.contains_key(&r.region) && self.regions.len() >= MAX_REGIONS {
                continue;
            }
            let state = self.regions.entry(r.region).or_default();
            // Only the owner's numbers count: a migration's source reports the region until it
            // lets go, and a fenced host's view is stale.
            let owned = state.placement.as_ref().is_none_or(|p| p.host == report.host.name);
            if owned {
                self.stale.remove(&(name.clone(), r.region));
                state.load = Some(r);
            } else if !self.in_flight.contains_key(&r.region) {
                self.stale.entry((name.clone(), r.region)).or_insert(now_ms);
            }
        }
    }

    /// The live hosts as the directory says (its liveness is the truth: a host missing here is
    /// dead, whatever it reported before).
    pub fn handle_hosts(&mut self, now_ms: u64, live: Vec<HostRecord>) {
        let live: BTreeMap<String, HostRecord> = live.into_iter().map(|h| (h.name.clone(), h)).collect();
        let mut changes = Vec::new();
        for (name, h) in self.hosts.iter_mut() {
            let alive = live.contains_key(name);
            if h.alive && !alive {
                changes.push(format!("host {name} is dead (its liveness expired): its regions fail over"));
            } else if !h.alive && alive {
                changes.push(format!("host {name} is alive again"));
                h.draining = false;
            }
            h.alive = alive;
        }
        for (name, record) in live {
            if self.hosts.len() >= MAX_HOSTS && !self.hosts.contains_key(&name) {
                break;
            }
            let h = self.hosts.entry(name.clone()).or_insert_with(|| {
                changes.push(format!("host {name} joined with {} cores", record.cores));
                HostState {
                    record: record.clone(),
                    alive: true,
                    draining: false,
                    load_milli: 0,
                    last_report_ms: None,
                }
            });
            h.record = record;
        }
        for c in changes {
            self.decide(now_ms, c);
        }
    }

    /// The directory's placements (the truth about who owns what).
    pub fn handle_placements(&mut self, now_ms: u64, placements: Vec<(RegionId, Placement)>) {
        for (region, p) in placements {
            if !self.regions.contains_key(&region) && self.regions.len() >= MAX_REGIONS {
                continue;
            }
            // The last load stays with the region when it changes hands: its crowd moved with it.
            let state = self.regions.entry(region).or_default();
            if state.placement.as_ref() != Some(&p) {
                state.placed_ms = now_ms;
                state.placement = Some(p);
            }
        }
    }

    /// A move handed out by `poll_actions` ended.
    pub fn handle_outcome(&mut self, now_ms: u64, region: RegionId, outcome: Outcome) {
        let Some(f) = self.in_flight.remove(&region) else { return };
        let mv = f.mv;
        let took = now_ms.saturating_sub(f.started_ms);
        match &outcome {
            Outcome::Committed => {
                let state = self.regions.entry(region).or_default();
                state.moves += 1;
                state.last_moved_ms = Some(now_ms);
                if let Some(p) = state.placement.as_mut() {
                    if p.host != mv.to {
                        p.host = mv.to.clone();
                        p.epoch += 1;
                        state.placed_ms = now_ms;
                    }
                }
                let text =
                    format!("{} {region} {} → {} committed in {took} ms", verb(mv.reason), mv.from, mv.to);
                self.record(now_ms, text, Some(MoveStep { mv: mv.clone(), phase: MovePhase::Committed }));
            }
            Outcome::Failed(why) => {
                let text = format!(
                    "{} {region} {} → {} failed after {took} ms: {why}",
                    verb(mv.reason),
                    mv.from,
                    mv.to
                );
                self.record(now_ms, text, Some(MoveStep { mv: mv.clone(), phase: MovePhase::Failed }));
            }
        }
        if let Some(d) = self.drains.get_mut(&mv.from) {
            if d.status.phase == DrainPhase::Running {
                match outcome {
                    Outcome::Committed => {
                        d.status.moved += 1;
                        d.status.regions_left = d.status.regions_left.saturating_sub(1);
                    }
                    Outcome::Failed(_) => d.status.failures += 1,
                }
            }
        }
    }

    /// Starts draining a live host: nothing moves to it any more and its regions leave by live
    /// migration, one at a time.
    pub fn request_drain(&mut self, now_ms: u64, host: &str) -> Result<DrainStatus, DrainError> {
        let Some(h) = self.hosts.get_mut(host).filter(|h| h.alive) else {
            return Err(DrainError::UnknownHost(host.to_string()));
        };
        h.draining = true;
        let on_it = self.regions_on(host);
        let status = DrainStatus {
            host: host.to_string(),
            phase: DrainPhase::Running,
            regions_at_start: on_it,
            regions_left: on_it,
            moved: 0,
            failures: 0,
        };
        self.drains.insert(host.to_string(), Drain { status: status.clone(), no_room_since: None });
        self.decide(now_ms, format!("drain of {host} requested: {on_it} regions to move off"));
        Ok(status)
    }

    /// Lets a drained (or draining) host take regions again: a running drain stops starting
    /// migrations (one already in flight finishes), and the policy may place regions on it.
    /// Returns the drain it ended, if any.
    pub fn request_undrain(&mut self, now_ms: u64, host: &str) -> Result<Option<DrainStatus>, DrainError> {
        let Some(h) = self.hosts.get_mut(host).filter(|h| h.alive) else {
            return Err(DrainError::UnknownHost(host.to_string()));
        };
        let was_draining = std::mem::replace(&mut h.draining, false);
        let ended = self.drains.remove(host).map(|d| d.status);
        let text = match &ended {
            Some(d) if d.phase == DrainPhase::Running => format!(
                "undrain of {host}: its drain stops after {} of {} regions moved; it takes regions again",
                d.moved, d.regions_at_start
            ),
            _ if was_draining => format!("undrain of {host}: it takes regions again"),
            _ => format!("undrain of {host}: it was not drained (nothing changes)"),
        };
        self.decide(now_ms, text);
        Ok(ended)
    }

    pub fn drain_status(&self, host: &str) -> Option<DrainStatus> {
        self.drains.get(host).map(|d| d.status.clone())
    }

    fn regions_on(&self, host: &str) -> usize {
        self.regions.values().filter(|r| r.placement.as_ref().is_some_and(|p| p.host == host)).count()
    }

    /// The cluster as placement sees it now.
    pub fn view(&self, now_ms: u64) -> ClusterView {
        let hosts = self
            .hosts
            .values()
            .map(|h| HostLoad {
                name: h.record.name.clone(),
                cores: h.record.cores,
                alive: h.alive,
                draining: h.draining,
            })
            .collect();
        let regions = self
            .regions
            .iter()
            .filter_map(|(&region, s)| {
                let p = s.placement.as_ref()?;
                // A region nobody reported yet counts as an empty one at the idle rate.
                let (avatars, objects, scripts, p99, budget, script_ms) = match &s.load {
                    Some(l) => {
                        (l.avatars, l.objects, l.scripts, l.tick_p99_ms, l.tick_budget_ms, l.script_ms)
                    }
                    None => (0, 0, 0, 0.0, 200.0, 0.0),
                };
                Some(RegionLoad {
                    region,
                    host: p.host.clone(),
                    avatars,
                    objects,
                    scripts,
                    tick_p99_ms: p99,
                    tick_budget_ms: budget,
                    script_ms,
                    last_moved_ms: s.last_moved_ms,
                })
            })
            .collect();
        let in_flight = self.in_flight.values().map(|f| f.mv.clone()).collect();
        ClusterView { now_ms, hosts, regions, in_flight }
    }

    /// The moves to make now: drains first (one migration at a time each), then the policy's
    /// plan (failovers, busy regions, packing). Each returned action is in flight until its
    /// outcome is handled.
    pub fn poll_actions(&mut self, now_ms: u64) -> Vec<Action> {
        let mut moves: Vec<Move> = Vec::new();
        let draining: Vec<String> = self
            .drains
            .iter()
            .filter(|(_, d)| d.status.phase == DrainPhase::Running)
            .map(|(h, _)| h.clone())
            .collect();
        for host in draining {
            let view = self.view(now_ms);
            let drain_policy =
                Policy { max_concurrent_migrations: self.drain_slots(&host), ..self.policy.clone() };
            let mv = placement::drain(&view, &drain_policy, &host);
            let left = self.regions_on(&host);
            let flying = self.in_flight.values().any(|f| f.mv.from == host);
            let alive = self.hosts.get(&host).is_some_and(|h| h.alive);
            let could_start = self.drain_slots(&host) > 0 && self.cluster_slots() > 0;
            let others = self.hosts.iter().any(|(n, h)| *n != host && h.alive && !h.draining);
            let d = self.drains.get_mut(&host).expect("listed above");
            let no_room = mv.is_empty() && !flying && could_start;
            if !no_room {
                d.no_room_since = None;
            }
            let waited_ms =
                if no_room { now_ms.saturating_sub(*d.no_room_since.get_or_insert(now_ms)) } else { 0 };
            d.status.regions_left = left;
            let end = if left == 0 && !flying {
                Some((
                    DrainPhase::Done,
                    format!("drain of {host} done: {} regions moved, the host is empty", d.status.moved),
                ))
            } else if d.status.failures >= MAX_DRAIN_FAILURES {
                let why = format!("{} migrations off it failed; {left} regions remain", d.status.failures);
                Some((DrainPhase::Failed(why.clone()), format!("drain of {host} failed: {why}")))
            } else if mv.is_empty() && !flying && !alive {
                let why = "the host died while draining (its regions fail over)".to_string();
                Some((DrainPhase::Failed(why.clone()), format!("drain of {host} failed: {why}")))
            } else if no_room && (!others || waited_ms >= DRAIN_NO_ROOM_PATIENCE.as_millis() as u64) {
                let why = format!("no other host has room for its {left} remaining regions");
                Some((DrainPhase::Failed(why.clone()), format!("drain of {host} failed: {why}")))
            } else {
                None
            };
            if let Some((phase, text)) = end {
                d.status.phase = phase;
                self.decide(now_ms, text);
                continue;
            }
            for m in mv {
                self.launch(now_ms, &m);
                moves.push(m);
            }
        }
        let view = self.view(now_ms);
        let in_grace = now_ms < self.started_ms.saturating_add(self.start_grace_ms);
        for m in placement::plan(&view, &self.policy) {
            // Fresh from a start, the picture is partial (hosts not yet heard from, one report
            // per region at most): watch for the grace period before moving anything.
            if in_grace {
                continue;
            }
            if m.reason == Reason::Drain || (!self.autoplace && m.reason != Reason::Failover) {
                continue;
            }
            // No report yet: nothing is known of its load, so the policy does not move it.
            let unknown = self.regions.get(&m.region).is_none_or(|r| r.load.is_none());
            if unknown && m.reason != Reason::Failover {
                continue;
            }
            // A running drain owns its host's moves (one at a time); the policy waits.
            let drained = self.drains.get(&m.from).is_some_and(|d| d.status.phase == DrainPhase::Running);
            if drained && m.reason != Reason::Failover {
                continue;
            }
            self.launch(now_ms, &m);
            moves.push(m);
        }
        let mut actions = self.fences(now_ms);
        actions.extend(moves.into_iter().filter_map(|m| {
            if m.reason == Reason::Failover {
                let to_api = self.hosts.get(&m.to)?.record.api.clone();
                Some(Action::Restore { mv: m, to_api })
            } else {
                let from_api = self.hosts.get(&m.from)?.record.api.clone();
                Some(Action::Migrate { mv: m, from_api })
            }
        }));
        actions
    }

    /// Stale copies old enough to be sure of: the owner has held the region for a while (so
    /// this is not a migration's source between commit and unload) and the host still reports it.
    fn fences(&mut self, now_ms: u64) -> Vec<Action> {
        let settle = FENCE_AFTER.as_millis() as u64;
        let due: Vec<(String, RegionId)> = self
            .stale
            .iter()
            .filter(|((_, r), first)| {
                now_ms.saturating_sub(**first) >= settle
                    && !self.in_flight.contains_key(r)
                    && self.regions.get(r).is_some_and(|s| now_ms.saturating_sub(s.placed_ms) >= settle)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for (host, region) in due {
            self.stale.remove(&(host.clone(), region));
            let Some(api) = self.hosts.get(&host).filter(|h| h.alive).map(|h| h.record.api.clone()) else {
                continue;
            };
            let owner = self.regions.get(&region).and_then(|s| s.placement.clone());
            let Some(owner) = owner.filter(|p| p.host != host) else { continue };
            self.decide(
                now_ms,
                format!(
                    "fence {region} on {host}: it still runs a copy, but {} owns the region at epoch {}; \
                     unloading the stale copy",
                    owner.host, owner.epoch
                ),
            );
            out.push(Action::Fence { region, host, api });
        }
        out
    }

    /// Migrations a drain of `host` may start now.
    fn drain_slots(&self, host: &str) -> usize {
        let mine =
            self.in_flight.values().filter(|f| f.mv.from == host && f.mv.reason != Reason::Failover).count();
        DRAIN_CONCURRENCY.saturating_sub(mine).min(self.cluster_slots())
    }

    fn cluster_slots(&self) -> usize {
        let live = self.in_flight.values().filter(|f| f.mv.reason != Reason::Failover).count();
        self.policy.max_concurrent_migrations.saturating_sub(live)
    }

    fn launch(&mut self, now_ms: u64, m: &Move) {
        let why = match m.reason {
            Reason::Busy => {
                let l = self.regions.get(&m.region).and_then(|r| r.load.as_ref());
                match l {
                    Some(l) => format!(
                        "it is busy ({} avatars, tick p99 {:.1} ms of {:.1} ms)",
                        l.avatars, l.tick_p99_ms, l.tick_budget_ms
                    ),
                    None => "it is busy".into(),
                }
            }
            Reason::Pack => "it is idle: packing idle regions onto fewer hosts".into(),
            Reason::Drain => format!("{} is being drained", m.from),
            Reason::Failover => format!("{} is dead", m.from),
        };
        let text = format!("{} {} {} → {}: {why}", verb(m.reason), m.region, m.from, m.to);
        self.record(now_ms, text, Some(MoveStep { mv: m.clone(), phase: MovePhase::Started }));
        self.in_flight.insert(m.region, Flight { mv: m.clone(), started_ms: now_ms });
    }

    /// Moves in flight longer than the deadline are given up on.
    pub fn expire_flights(&mut self, now_ms: u64) {
        let late: Vec<RegionId> = self
            .in_flight
            .iter()
            .filter(|(_, f)| now_ms.saturating_sub(f.started_ms) > MIGRATION_DEADLINE.as_millis() as u64)
            .map(|(r, _)| *r)
            .collect();
        for r in late {
            self.handle_outcome(
                now_ms,
                r,
                Outcome::Failed("no outcome before the orchestrator's deadline".into()),
            );
        }
    }

    /// The owner of a region as last known, and its host's API.
    pub fn owner(&self, region: RegionId) -> Option<(Placement, Option<String>)> {
        let p = self.regions.get(&region)?.placement.clone()?;
        let api = self.hosts.get(&p.host).filter(|h| h.alive).map(|h| h.record.api.clone());
        Some((p, api))
    }

    /// Regions whose owner is alive, with the owner's API (for periodic snapshots).
    pub fn live_regions(&self) -> Vec<(RegionId, String)> {
        self.regions
            .iter()
            .filter(|(r, _)| !self.in_flight.contains_key(r))
            .filter_map(|(&r, s)| {
                let p = s.placement.as_ref()?;
                let h = self.hosts.get(&p.host).filter(|h| h.alive)?;
                Some((r, h.record.api.clone()))
            })
            .collect()
    }

    pub fn status(&self, now_ms: u64) -> Status {
        let hosts = self
            .hosts
            .values()
            .map(|h| HostStatus {
                name: h.record.name.clone(),
                api: h.record.api.clone(),
                cores: h.record.cores,
                alive: h.alive,
                draining: h.draining,
                load_milli: h.load_milli,
                regions: self.regions_on(&h.record.name),
                report_age_ms: h.last_report_ms.map(|t| now_ms.saturating_sub(t)),
            })
            .collect();
        let regions = self
            .regions
            .iter()
            .filter_map(|(&region, s)| {
                let p = s.placement.as_ref()?;
                Some(RegionStatus {
                    region,
                    host: p.host.clone(),
                    epoch: p.epoch,
                    load: s.load.clone(),
                    moves: s.moves,
                    last_moved_ms: s.last_moved_ms,
                    snapshot_age_ms: None,
                })
            })
            .collect();
        let in_flight = self
            .in_flight
            .values()
            .map(|f| FlightStatus {
                region: f.mv.region,
                from: f.mv.from.clone(),
                to: f.mv.to.clone(),
                reason: f.mv.reason,
                started_ms: f.started_ms,
            })
            .collect();
        Status {
            now_ms,
            hosts,
            regions,
            in_flight,
            drains: self.drains.values().map(|d| d.status.clone()).collect(),
            decisions: self.decisions.iter().cloned().collect(),
        }
    }
}

fn verb(reason: Reason) -> &'static str {
    match reason {
        Reason::Busy => "move busy",
        Reason::Pack => "pack",
        Reason::Drain => "drain",
        Reason::Failover => "fail over",
    }
}
