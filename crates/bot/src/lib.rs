//! Headless clients: a load generator and a measuring instrument for gateways. Each bot holds
//! one session, moves like a person (see `pilot`), and records what it sees: updates, the
//! gaps between them (in milliseconds and in ticks), sequence gaps, disconnects, crossings.
//!
//! [`run_bots`] runs a crowd for a while and sums it up in a [`BotReport`] (serde, for
//! `terrane bot --json`).

pub mod client;
pub mod limits;
pub mod pilot;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::{ClientMsg, Encoding, EntityUpdate, ErrorCode, SeqTracker, ServerMsg, Token};
use serde::{Deserialize, Serialize};
use world::{Controls, EntityId, RegionId};

pub use client::Client;
pub use pilot::{Behaviour, Fix, Pilot};

use crate::limits::*;

#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error("cannot connect to {url}: {error}")]
    Connect { url: String, error: String },
    #[error("timed out {0}")]
    Timeout(String),
    #[error("the gateway refused the session ({code:?}): {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("the session closed: {0}")]
    Closed(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("cannot get a guest token from {url}: {error}")]
    Guest { url: String, error: String },
    #[error("bad configuration: {0}")]
    Config(String),
}

/// Where bots get their session tokens.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// Ask the gateway's `GET /guest?name=` endpoint (next to its `/ws`).
    Guest,
    /// Sign tokens with the gateway's secret (when the caller runs the gateway).
    Secret(Vec<u8>),
    /// Use these, one per bot (there must be enough).
    Tokens(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct BotConfig {
    /// `ws://HOST:PORT/ws`.
    pub gateway_url: String,
    pub count: usize,
    pub behaviour: Behaviour,
    /// How long each bot stays connected.
    pub duration: Duration,
    pub tokens: TokenSource,
    /// Bots speak binary by default, like native clients.
    pub encoding: Encoding,
    /// Seeds the bots' choices (targets, lanes); the same seed gives the same intentions.
    pub seed: u64,
    pub name_prefix: String,
    /// Bots start spread evenly over this time, so that a crowd does not arrive in one tick.
    pub ramp: Duration,
}

impl BotConfig {
    pub fn new(
        gateway_url: impl Into<String>,
        count: usize,
        behaviour: Behaviour,
        duration: Duration,
    ) -> Self {
        BotConfig {
            gateway_url: gateway_url.into(),
            count,
            behaviour,
            duration,
            tokens: TokenSource::Guest,
            encoding: Encoding::Binary,
            seed: 1,
            name_prefix: "bot".into(),
            ramp: Duration::from_millis(500),
        }
    }
}

/// What a crowd of bots saw. Gaps are between consecutive updates of one bot; tick gaps are
/// between consecutive updates of the bot's own region (1 = every tick seen).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BotReport {
    pub bots: u64,
    /// Bots that were welcomed.
    pub connected: u64,
    /// Bots refused or unable to connect.
    pub failed: u64,
    /// Sessions that ended before the run did.
    pub disconnects: u64,
    pub updates: u64,
    pub gap_p50_ms: f64,
    pub gap_p99_ms: f64,
    pub gap_max_ms: f64,
    pub gap_p50_ticks: u64,
    pub gap_p99_ticks: u64,
    pub gap_max_ticks: u64,
    /// Times an update's sequence number jumped ahead (lost updates), and how many were lost.
    pub seq_gaps: u64,
    pub seq_missing: u64,
    /// Duplicate or backward sequence numbers.
    pub replays: u64,
    /// Times a bot's avatar showed up in another region than before.
    pub crossings: u64,
    /// At a crossing, the pause between the avatar's last move in the old region and its
    /// first sighting in the new one (the hand-over), in ms and in 45 Hz ticks (rounded up).
    #[serde(default)]
    pub crossing_pause_p50_ms: f64,
    #[serde(default)]
    pub crossing_pause_p99_ms: f64,
    #[serde(default)]
    pub crossing_pause_max_ms: f64,
    #[serde(default)]
    pub crossing_pause_max_ticks: u64,
    /// Bots that saw no update in the last `STALL_MS` of the run.
    pub stalled: u64,
    pub duration_s: f64,
    /// The first few errors, for people.
    pub errors: Vec<String>,
}

/// Runs `config.count` bots for `config.duration` and reports what they saw.
pub async fn run_bots(config: BotConfig) -> Result<BotReport, BotError> {
    run_bots_logged(config).await.map(|(report, _)| report)
}

/// Every update gap a crowd saw, with when it ended: for figures over chosen moments (a
/// benchmark asks for the gaps that overlap its migrations, not the crowd's arrival).
#[derive(Debug, Default, Clone)]
pub struct GapLog {
    gaps: Vec<(Instant, u64)>,
}

/// Update gaps over some windows of time.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GapFigures {
    /// Gaps that overlap a window.
    pub gaps: u64,
    pub gap_p50_ms: f64,
    pub gap_p99_ms: f64,
    pub gap_max_ms: f64,
}

impl GapLog {
    /// The longest gap that overlaps the window: when it began and how long it was.
    pub fn longest_within(&self, window: (Instant, Instant)) -> Option<(Instant, Duration)> {
        self.overlapping(&[window])
            .max_by_key(|&(_, us)| us)
            .map(|(start, us)| (start, Duration::from_micros(us)))
    }

    /// Every gap as when it began and its length in µs.
    fn spans(&self) -> impl Iterator<Item = (Instant, u64)> + '_ {
        self.gaps.iter().map(|&(end, us)| (end.checked_sub(Duration::from_micros(us)).unwrap_or(end), us))
    }

    /// The gaps that overlap any window, each as when it began and its length in µs.
    fn overlapping<'a>(
        &'a self,
        windows: &'a [(Instant, Instant)],
    ) -> impl Iterator<Item = (Instant, u64)> + 'a {
        self.spans().filter(move |&(start, us)| overlaps(start, us, windows))
    }

    /// The gaps (time between two consecutive updates of one bot) that overlap any window.
    pub fn within(&self, windows: &[(Instant, Instant)]) -> GapFigures {
        figures(self.overlapping(windows).map(|(_, us)| us).collect())
    }

    /// The gaps that began at `from` or later and overlap none of the windows: the same crowd
    /// with nothing else going on, to tell what the windows add from what the machine does anyway.
    pub fn outside(&self, from: Instant, windows: &[(Instant, Instant)]) -> GapFigures {
        figures(
            self.spans()
                .filter(|&(start, us)| start >= from && !overlaps(start, us, windows))
                .map(|(_, us)| us)
                .collect(),
        )
    }
}

/// Whether a gap that began at `start` and lasted `us` overlaps any window.
fn overlaps(start: Instant, us: u64, windows: &[(Instant, Instant)]) -> bool {
    let end = start + Duration::from_micros(us);
    windows.iter().any(|&(a, b)| start <= b && end >= a)
}

/// Figures over some gaps, in µs.
fn figures(mut gaps: Vec<u64>) -> GapFigures {
    gaps.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    GapFigures {
        gaps: gaps.len() as u64,
        gap_p50_ms: ms(percentile(&gaps, 0.50)),
        gap_p99_ms: ms(percentile(&gaps, 0.99)),
        gap_max_ms: ms(gaps.last().copied().unwrap_or(0)),
    }
}

/// [`run_bots`], also handing back every gap with its time.
pub async fn run_bots_logged(config: BotConfig) -> Result<(BotReport, GapLog), BotError> {
    if config.count > MAX_BOTS {
        return Err(BotError::Config(format!("{} bots; at most {MAX_BOTS}", config.count)));
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(config.count);
    for i in 0..config.count {
        let config = config.clone();
        let delay = config.ramp.mul_f64(i as f64 / config.count.max(1) as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let name = format!("{}-{i}", config.name_prefix);
            match token_for(&config, i, &name).await {
                Ok(token) => one_bot(&config, i, &token).await,
                Err(e) => BotOutcome::failed(e),
            }
        }));
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(o) => outcomes.push(o),
            Err(e) => outcomes.push(BotOutcome::failed(BotError::Protocol(format!("bot task failed: {e}")))),
        }
    }
    let report = summarise(&outcomes, started.elapsed());
    let log = GapLog { gaps: outcomes.into_iter().flat_map(|o| o.gaps).collect() };
    Ok((report, log))
}

async fn token_for(config: &BotConfig, i: usize, name: &str) -> Result<String, BotError> {
    match &config.tokens {
        TokenSource::Tokens(list) => list
            .get(i)
            .cloned()
            .ok_or_else(|| BotError::Config(format!("{} tokens for {} bots", list.len(), config.count))),
        TokenSource::Secret(secret) => {
            // Ids with the top bit set, like the gateway's guests; the seed keeps runs apart.
            let agent = EntityId((1 << 63) | (config.seed.wrapping_mul(1_000_003) << 20) | i as u64);
            let expires_unix =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
                    + config.duration.as_secs()
                    + 3600;
            Token { agent, name: name.to_string(), expires_unix }
                .sign(secret)
                .map_err(|e| BotError::Config(format!("cannot sign a token: {e}")))
        }
        TokenSource::Guest => guest_token(&config.gateway_url, name).await,
    }
}

/// Asks the gateway next to `ws_url` for a guest token.
pub async fn guest_token(ws_url: &str, name: &str) -> Result<String, BotError> {
    let base = ws_url
        .strip_prefix("ws://")
        .map(|r| format!("http://{r}"))
        .or_else(|| ws_url.strip_prefix("wss://").map(|r| format!("https://{r}")))
        .ok_or_else(|| BotError::Config(format!("{ws_url} is not a ws:// or wss:// URL")))?;
    let base = base.strip_suffix("/ws").unwrap_or(&base).trim_end_matches('/').to_string();
    let url = format!("{base}/guest?name={name}");
    let err = |e: String| BotError::Guest { url: url.clone(), error: e };
    let resp = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| err(e.to_string()))?;
    if !status.is_success() {
        return Err(err(format!("{status}: {}", String::from_utf8_lossy(&body))));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| err(e.to_string()))?;
    v.get("token")
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .ok_or_else(|| err("no token in the answer".into()))
}

/// What one bot saw.
#[derive(Debug, Default)]
struct BotOutcome {
    connected: bool,
    disconnected: bool,
    error: Option<String>,
    seq: SeqTracker,
    /// (when it ended, µs) of every gap between two updates.
    gaps: Vec<(Instant, u64)>,
    tick_gaps: Vec<u64>,
    crossings: u64,
    crossing_pauses_us: Vec<u64>,
    stalled: bool,
}

impl BotOutcome {
    fn failed(e: BotError) -> BotOutcome {
        BotOutcome { error: Some(e.to_string()), ..Default::default() }
    }
}

async fn one_bot(config: &BotConfig, i: usize, token: &str) -> BotOutcome {
    let mut out = BotOutcome::default();
    let mut client = match Client::connect(&config.gateway_url, token, config.encoding).await {
        Ok(c) => c,
        Err(e) => return BotOutcome::failed(e),
    };
    out.connected = true;
    let agent = client.welcome.agent;
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + config.duration;
    let mut pilot = Pilot::new(config.behaviour, client.welcome.region, config.seed ^ (i as u64) << 1, start);
    let mut fix: Option<Fix> = None;
    let mut my_region: Option<RegionId> = None;
    let mut held = Controls::default();
    let mut last_update: Option<Instant> = None;
    let mut last_own_move: Option<Instant> = None;
    let mut last_tick: HashMap<RegionId, u64> = HashMap::new();
    let mut think = tokio::time::interval(Duration::from_millis(THINK_MS));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = think.tick() => {
                let controls = pilot.think(Instant::now(), fix);
                if controls != held {
                    held = controls;
                    if let Err(e) = client.send(&ClientMsg::Controls(controls)).await {
                        out.disconnected = true;
                        out.error = Some(e.to_string());
                        break;
                    }
                }
            }
            msg = client.recv() => match msg {
                Ok(Some(ServerMsg::Update(u))) => {
                    let now = Instant::now();
                    out.seq.observe(u.seq);
                    if let Some(prev) = last_update {
                        out.gaps.push((now, now.duration_since(prev).as_micros() as u64));
                    }
                    last_update = Some(now);
                    for change in &u.changes {
                        if change.id() != agent {
                            continue;
                        }
                        let (pos, rot) = match change {
                            EntityUpdate::Full(v) => (v.pos, v.rot),
                            EntityUpdate::Motion { pos, rot, .. } => (*pos, *rot),
                        };
                        fix = Some(Fix::from_local(u.region, pos, rot));
                        // Held at the border (outside the square) it is still leaving: only a
                        // row inside a region's square says where the avatar is.
                        if world::border::outside(pos) {
                            continue;
                        }
                        if my_region.is_some_and(|r| r != u.region) {
                            out.crossings += 1;
                            // Tick gaps count within one stay in a region.
                            last_tick.remove(&u.region);
                            if let Some(t) = last_own_move {
                                out.crossing_pauses_us.push(now.duration_since(t).as_micros() as u64);
                            }
                        }
                        my_region = Some(u.region);
                        last_own_move = Some(now);
                    }
                    // Tick gaps only mean something in the bot's own region, which sends
                    // every tick; neighbours only send when something there changed.
                    if Some(u.region) == my_region {
                        if let Some(prev) = last_tick.get(&u.region) {
                            if u.tick > *prev {
                                out.tick_gaps.push(u.tick - prev);
                            }
                        }
                        last_tick.insert(u.region, u.tick);
                    }
                }
                Ok(Some(ServerMsg::Error { code, message })) if code.closes_session() => {
                    out.disconnected = true;
                    out.error = Some(format!("{code:?}: {message}"));
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    out.disconnected = true;
                    out.error.get_or_insert_with(|| format!("closed by the gateway (code {:?})", client.close_code));
                    break;
                }
                Err(e) => {
                    out.disconnected = true;
                    out.error = Some(e.to_string());
                    break;
                }
            },
        }
    }
    out.stalled =
        !out.disconnected && last_update.is_none_or(|t| t.elapsed() > Duration::from_millis(STALL_MS));
    if !out.disconnected {
        client.close().await;
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summarise(outcomes: &[BotOutcome], took: Duration) -> BotReport {
    let mut gaps: Vec<u64> = outcomes.iter().flat_map(|o| o.gaps.iter().map(|g| g.1)).collect();
    let mut ticks: Vec<u64> = outcomes.iter().flat_map(|o| o.tick_gaps.iter().copied()).collect();
    let mut pauses: Vec<u64> = outcomes.iter().flat_map(|o| o.crossing_pauses_us.iter().copied()).collect();
    gaps.sort_unstable();
    ticks.sort_unstable();
    pauses.sort_unstable();
    let tick_us = 1_000_000 / u64::from(world::limits::ACTIVE_TICK_HZ);
    let ms = |us: u64| us as f64 / 1000.0;
    let sum = |f: &dyn Fn(&BotOutcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    BotReport {
        bots: outcomes.len() as u64,
        connected: sum(&|o| u64::from(o.connected)),
        failed: sum(&|o| u64::from(!o.connected)),
        disconnects: sum(&|o| u64::from(o.connected && o.disconnected)),
        updates: sum(&|o| o.seq.received()),
        gap_p50_ms: ms(percentile(&gaps, 0.50)),
        gap_p99_ms: ms(percentile(&gaps, 0.99)),
        gap_max_ms: ms(gaps.last().copied().unwrap_or(0)),
        gap_p50_ticks: percentile(&ticks, 0.50),
        gap_p99_ticks: percentile(&ticks, 0.99),
        gap_max_ticks: ticks.last().copied().unwrap_or(0),
        seq_gaps: sum(&|o| o.seq.gaps()),
        seq_missing: sum(&|o| o.seq.missing()),
        replays: sum(&|o| o.seq.replays()),
        crossings: sum(&|o| o.crossings),
        crossing_pause_p50_ms: ms(percentile(&pauses, 0.50)),
        crossing_pause_p99_ms: ms(percentile(&pauses, 0.99)),
        crossing_pause_max_ms: ms(pauses.last().copied().unwrap_or(0)),
        crossing_pause_max_ticks: pauses.last().map_or(0, |p| p.div_ceil(tick_us)),
        stalled: sum(&|o| u64::from(o.stalled)),
        duration_s: took.as_secs_f64(),
        errors: outcomes.iter().filter_map(|o| o.error.clone()).take(MAX_REPORTED_ERRORS).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_rank_at_or_above() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn a_report_serializes_with_the_documented_field_names() {
        let json = serde_json::to_value(BotReport::default()).unwrap();
        for key in [
            "connected",
            "disconnects",
            "updates",
            "gap_p50_ms",
            "gap_p99_ms",
            "gap_max_ms",
            "seq_gaps",
            "crossings",
        ] {
            assert!(json.get(key).is_some(), "{key} is missing from {json}");
        }
    }

    #[test]
    fn gaps_split_into_those_during_windows_and_those_after_a_moment_outside_them() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        // (end, length): 100–120, 130–170 (touches the window), 200–222, 20–40 (before `from`).
        let log =
            GapLog { gaps: vec![(ms(120), 20_000), (ms(170), 40_000), (ms(222), 22_000), (ms(40), 20_000)] };
        let window = [(ms(160), ms(180))];
        let during = log.within(&window);
        assert_eq!((during.gaps, during.gap_max_ms), (1, 40.0));
        let between = log.outside(ms(50), &window);
        assert_eq!((between.gaps, between.gap_max_ms), (2, 22.0));
    }
}
