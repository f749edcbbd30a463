//! Per-region tick-cost statistics: a bounded window of recent tick costs plus totals.

use std::collections::VecDeque;

use serde::Serialize;

/// How many recent ticks the percentiles are computed over.
pub const STATS_WINDOW: usize = 2048;

#[derive(Debug, Default)]
pub struct TickStats {
    recent_us: VecDeque<u32>,
    pub ticks: u64,
    pub overruns: u64,
    /// Ticks started more than one interval late (the host skipped ahead).
    pub late: u64,
    pub max_us: u32,
    pub last_changes: usize,
}

impl TickStats {
    pub fn record(&mut self, cost_us: u32, budget_us: u64, changes: usize) {
        if self.recent_us.len() == STATS_WINDOW {
            self.recent_us.pop_front();
        }
        self.recent_us.push_back(cost_us);
        self.ticks += 1;
        self.max_us = self.max_us.max(cost_us);
        if u64::from(cost_us) > budget_us {
            self.overruns += 1;
        }
        self.last_changes = changes;
    }

    /// The costs of the last `n` ticks (fewer if fewer ran), oldest first.
    pub fn recent(&self, n: usize) -> Vec<u32> {
        let skip = self.recent_us.len().saturating_sub(n);
        self.recent_us.iter().skip(skip).copied().collect()
    }

    /// (p50, p99) of the recent window, in microseconds.
    pub fn percentiles(&self) -> (u32, u32) {
        percentiles(self.recent_us.iter().copied())
    }
}

/// (p50, p99) of a set of samples; zeros when empty.
pub fn percentiles(samples: impl Iterator<Item = u32>) -> (u32, u32) {
    let mut v: Vec<u32> = samples.collect();
    if v.is_empty() {
        return (0, 0);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

/// One region as the control API shows it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct RegionStats {
    pub region: String,
    pub tick: u64,
    pub generation: u64,
    pub rate_hz: u32,
    pub entities: usize,
    pub avatars: usize,
    pub ticks: u64,
    pub tick_p50_ms: f64,
    pub tick_p99_ms: f64,
    pub tick_max_ms: f64,
    pub budget_ms: f64,
    pub overruns: u64,
    pub late: u64,
    pub queued_inputs: usize,
    pub state_hash: String,
    /// Scripts in the region (running, stopped by an error, or unable to run here).
    #[serde(default)]
    pub scripts: usize,
    /// Script events run since the region came to this host, and per second lately.
    #[serde(default)]
    pub script_events: u64,
    #[serde(default)]
    pub script_events_per_s: f64,
    /// Mean time per tick spent running scripts, recently.
    #[serde(default)]
    pub script_time_ms: f64,
    /// Scripts stopped by an error, or whose module or state this host refused.
    #[serde(default)]
    pub script_errors: usize,
    /// The scripts counted in `script_errors`, with their errors (at most
    /// `scripting::MAX_LISTED_STOPPED_SCRIPTS`, by id).
    #[serde(default)]
    pub stopped_scripts: Vec<crate::scripting::StoppedScript>,
    /// Border crossings of the region since it came to this host.
    #[serde(default)]
    pub crossings: crate::border::CrossingStats,
}
