//! The placement policy: a pure function from the cluster view (hosts, regions and their load,
//! migrations in flight) to the moves to make. No I/O, no clock (time is `now_ms` in the view),
//! no randomness, so it is tested without any process; the orchestrator wires it to the world.

pub mod limits;
mod plan;

pub use plan::{drain, plan};

use serde::{Deserialize, Serialize};
use world::RegionId;

use crate::limits::*;

/// Everything placement knows about the cluster at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The orchestrator's clock when the view was taken; only compared with `last_moved_ms`.
    pub now_ms: u64,
    pub hosts: Vec<HostLoad>,
    pub regions: Vec<RegionLoad>,
    /// Migrations started and not yet committed or aborted. Their regions are left alone and
    /// their cost is reserved on the target as well as counted on the source.
    #[serde(default)]
    pub in_flight: Vec<Move>,
}

/// One host as its liveness lease and its reports describe it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLoad {
    pub name: String,
    pub cores: u32,
    /// False once the host's lease expired: its regions are failed over, nothing moves to it.
    pub alive: bool,
    /// Being drained: nothing moves to it (`drain` moves its regions off).
    #[serde(default)]
    pub draining: bool,
}

/// One region's last load report (once a second) and where it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionLoad {
    pub region: RegionId,
    /// The host that owns it in the directory.
    pub host: String,
    pub avatars: u32,
    pub objects: u32,
    pub scripts: u32,
    /// 99th percentile of the tick's duration over the report window.
    pub tick_p99_ms: f64,
    /// The tick interval at the region's current rate (22.2 ms at 45 Hz, 200 ms at 5 Hz).
    pub tick_budget_ms: f64,
    pub script_ms: f64,
    /// When it last changed host, if ever (orchestrator clock).
    #[serde(default)]
    pub last_moved_ms: Option<u64>,
}

/// Why a region moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// It overruns its tick budget or holds a crowd: to the host with the most headroom.
    Busy,
    /// It is idle: onto a host that already holds more idle regions, so fewer hosts hold them.
    Pack,
    /// Its host is being drained.
    Drain,
    /// Its host is dead: restart it elsewhere from its latest snapshot (not a live migration,
    /// so not counted against `max_concurrent_migrations`).
    Failover,
}

/// Move `region` from host `from` to host `to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Move {
    pub region: RegionId,
    pub from: String,
    pub to: String,
    pub reason: Reason,
}

/// How a region is classed from its load; the gap between busy and idle is the hysteresis:
/// a region in it (`Warm`) stays where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Busy,
    Warm,
    Idle,
}

/// The knobs of placement, with the defaults of limits.rs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    pub busy_avatars: u32,
    pub idle_avatars: u32,
    pub overrun_ratio: f64,
    pub idle_ratio: f64,
    pub idle_regions_per_core: u32,
    pub max_concurrent_migrations: usize,
    pub cooldown_ms: u64,
    pub host_headroom_percent: u64,
    pub region_cost_floor_milli: u64,
    pub min_gain_milli: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            busy_avatars: DEFAULT_BUSY_AVATARS,
            idle_avatars: DEFAULT_IDLE_AVATARS,
            overrun_ratio: DEFAULT_OVERRUN_RATIO,
            idle_ratio: DEFAULT_IDLE_RATIO,
            idle_regions_per_core: DEFAULT_IDLE_REGIONS_PER_CORE,
            max_concurrent_migrations: DEFAULT_MAX_CONCURRENT_MIGRATIONS,
            cooldown_ms: DEFAULT_COOLDOWN_MS,
            host_headroom_percent: DEFAULT_HOST_HEADROOM_PERCENT,
            region_cost_floor_milli: DEFAULT_REGION_COST_FLOOR_MILLI,
            min_gain_milli: DEFAULT_MIN_GAIN_MILLI,
        }
    }
}

/// A policy whose thresholds contradict each other.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("idle_avatars ({idle}) must be below busy_avatars ({busy}) for hysteresis")]
    AvatarHysteresis { idle: u32, busy: u32 },
    #[error("idle_ratio ({idle}) must be below overrun_ratio ({busy}), both positive and finite")]
    RatioHysteresis { idle: f64, busy: f64 },
    #[error("host_headroom_percent ({0}) must be within 1..=100")]
    Headroom(u64),
    #[error("region_cost_floor_milli ({0}) must be within 1..={MAX_REGION_COST_MILLI}")]
    CostFloor(u64),
    #[error("min_gain_milli must be above 0, or busy regions could swap hosts back and forth")]
    NoGain,
}

impl Policy {
    /// Refuses contradictory settings; the orchestrator calls it once at startup.
    pub fn check(&self) -> Result<(), PolicyError> {
        if self.idle_avatars >= self.busy_avatars {
            return Err(PolicyError::AvatarHysteresis { idle: self.idle_avatars, busy: self.busy_avatars });
        }
        let ratios_ok = self.idle_ratio.is_finite()
            && self.overrun_ratio.is_finite()
            && self.idle_ratio >= 0.0
            && self.idle_ratio < self.overrun_ratio;
        if !ratios_ok {
            return Err(PolicyError::RatioHysteresis { idle: self.idle_ratio, busy: self.overrun_ratio });
        }
        if !(1..=100).contains(&self.host_headroom_percent) {
            return Err(PolicyError::Headroom(self.host_headroom_percent));
        }
        if !(1..=MAX_REGION_COST_MILLI).contains(&self.region_cost_floor_milli) {
            return Err(PolicyError::CostFloor(self.region_cost_floor_milli));
        }
        if self.min_gain_milli == 0 {
            return Err(PolicyError::NoGain);
        }
        Ok(())
    }

    /// Tick p99 over budget, or `None` when the report cannot say (no budget, not a number).
    fn tick_ratio(r: &RegionLoad) -> Option<f64> {
        let ok = r.tick_budget_ms.is_finite()
            && r.tick_budget_ms > 0.0
            && r.tick_p99_ms.is_finite()
            && r.tick_p99_ms >= 0.0;
        ok.then(|| r.tick_p99_ms / r.tick_budget_ms)
    }

    /// Busy, idle, or in between. A report that cannot be read is `Warm`: nothing is done on
    /// the strength of a broken number.
    pub fn class(&self, r: &RegionLoad) -> Class {
        let Some(ratio) = Self::tick_ratio(r) else { return Class::Warm };
        if r.avatars >= self.busy_avatars || ratio >= self.overrun_ratio {
            Class::Busy
        } else if r.avatars <= self.idle_avatars && ratio <= self.idle_ratio {
            Class::Idle
        } else {
            Class::Warm
        }
    }

    /// The capacity model: a region costs the share of one core its ticks take (tick p99 over
    /// the tick interval, p99 so a spiky region is not underestimated), at least the floor and
    /// at most one core. An unreadable report costs a whole core, erring towards room.
    pub fn cost_milli(&self, r: &RegionLoad) -> u64 {
        let raw = match Self::tick_ratio(r) {
            Some(ratio) => (ratio * MILLI_PER_CORE as f64).ceil().min(MAX_REGION_COST_MILLI as f64) as u64,
            None => MAX_REGION_COST_MILLI,
        };
        raw.clamp(self.region_cost_floor_milli.min(MAX_REGION_COST_MILLI), MAX_REGION_COST_MILLI)
    }

    /// Most a host may carry after planned moves: its cores times the headroom factor.
    pub fn capacity_milli(&self, h: &HostLoad) -> u64 {
        h.cores as u64 * MILLI_PER_CORE * self.host_headroom_percent / 100
    }

    /// Most idle regions packed onto a host.
    pub fn idle_limit(&self, h: &HostLoad) -> u32 {
        self.idle_regions_per_core.saturating_mul(h.cores)
    }

    /// True while a region that moved must stay put.
    pub fn in_cooldown(&self, r: &RegionLoad, now_ms: u64) -> bool {
        r.last_moved_ms.is_some_and(|t| now_ms < t.saturating_add(self.cooldown_ms))
    }
}

impl ClusterView {
    /// The view as it will be once `moves` have committed at `now_ms`: each region on its new
    /// host with `last_moved_ms = now_ms`, loads unchanged. The bench and the tests step
    /// simulated clusters with it.
    pub fn after(&self, moves: &[Move]) -> ClusterView {
        let mut next = self.clone();
        for m in moves {
            if let Some(r) = next.regions.iter_mut().find(|r| r.region == m.region) {
                r.host = m.to.clone();
                r.last_moved_ms = Some(self.now_ms);
            }
        }
        next.in_flight.retain(|f| !moves.iter().any(|m| m.region == f.region));
        next
    }
}
