//! Runs the scripts of the host's regions: live wasmtime instances derived from the regions'
//! script records (like a physics engine's bodies), run in parallel on the host's pool inside
//! each region tick, with their effects and new states written back through the region's door.
//!
//! At every tick boundary a region's records equal its live instances, so snapshots, deltas
//! and migrations carry scripts without knowing about wasmtime. A region that arrives on a host
//! (a load, a migration) gets live instances made from its records on its first tick here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The engine's own benchmark, for `terrane bench scripts` (which reaches scripts through the
/// host only).
pub use script::{bench as engine_bench, BenchReport as EngineBenchReport};
use script::{
    run_batch, ChatRange, Effect, EngineConfig, ErrorKind, Event, GlobalValue, Pose, Script, ScriptEngine,
    ScriptModule, ScriptSpec, ScriptState, ScriptVars, Sensed, SensorKinds, TickBudget, WorldView,
};
use serde::{Deserialize, Serialize};
use world::limits::{MAX_SCRIPTS, MAX_SCRIPT_ERRORS_PER_TICK, REGION_SIZE};
use world::{
    EntityId, Input, ModuleHash, ObjectEffects, Region, RegionId, ScriptEffect, ScriptId, ScriptOutcome,
    ScriptPass, ScriptRecord, ScriptStopped, ScriptUpdate, TickOutput, Touch, Vec3,
};

/// How often the epoch ticker moves wasmtime's epoch: the unit of script time budgets.
// The region stores script memory in the chunks the engine tracks: one size on both sides.
const _: () = assert!(script::limits::CHUNK_BYTES == world::limits::SCRIPT_CHUNK_BYTES);
const _: () = assert!(script::limits::MEMORY_BYTES == world::limits::SCRIPT_MEMORY_BYTES);

pub const EPOCH_PERIOD: Duration = Duration::from_millis(1);
/// Share of a region's tick interval its scripts may use before the rest wait for the next
/// tick (and a handler still running is stopped). A quarter: motion, streaming and the
/// region's other work keep the rest.
pub const SCRIPT_BUDGET_SHARE: f64 = 0.25;
/// Least share of the script budget left to running events, however much writing their state
/// back into the region has been taking.
pub const MIN_SCRIPT_RUN_SHARE: f64 = 0.25;
/// Fewest scripts written back in a pass for its timing to update the estimate of how much of
/// the budget write-back takes (a handful say little).
pub const WRITEBACK_SAMPLE_SCRIPTS: usize = 64;
/// Weight of the newest pass in the moving average of the write-back share.
pub const WRITEBACK_AVERAGE_WEIGHT: f64 = 0.3;
/// Ticks over which script events per second and script time are averaged.
pub const SCRIPT_STATS_WINDOW: usize = 256;
/// Fewest scripts with work in a tick for the pass to hand them to the script pool. Handing
/// over wakes the pool's threads and waits for them, which on a busy machine costs more than
/// running a few events; most ticks have none due at all.
pub const MIN_PARALLEL_SCRIPTS: usize = 64;
/// Most stopped scripts a region's statistics list (the count covers them all).
pub const MAX_LISTED_STOPPED_SCRIPTS: usize = 32;
/// The error kind of a record that cannot run on this host (module refused, state unreadable).
pub const CANNOT_RUN: &str = "cannot_run";
/// Side of the cells of the per-tick sensor grid, in metres.
const SENSOR_CELL: f32 = 16.0;
const SENSOR_CELLS: usize = (REGION_SIZE / SENSOR_CELL) as usize;

/// How the host runs scripts.
#[derive(Clone, Debug)]
pub struct ScriptConfig {
    /// Threads of the pool scripts run on (the host's cores).
    pub threads: usize,
    /// Whether ticks have a time budget (`SCRIPT_BUDGET_SHARE` of the interval). Without it
    /// only fuel limits scripts, and a region's scripts are exactly reproducible from its
    /// inputs on any number of threads (a budget that runs out defers events by wall time).
    pub time_budget: bool,
    /// Most script instances alive on the host (wasmtime pooling slots).
    pub max_scripts: u32,
    /// Where compiled modules are kept across restarts (`None`: in memory only). Only this
    /// host may write there: a compiled module is native code, trusted once its checks pass.
    pub module_cache: Option<std::path::PathBuf>,
}

impl Default for ScriptConfig {
    fn default() -> ScriptConfig {
        ScriptConfig {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            time_budget: true,
            max_scripts: MAX_SCRIPTS as u32,
            module_cache: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScriptHostError {
    #[error("the script engine could not be built: {0}")]
    Engine(#[from] script::EngineError),
    #[error("the script thread pool of {threads} threads could not be built: {message}")]
    Pool { threads: usize, message: String },
}

/// The host's script machinery: one engine (compiled modules shared by all regions), one
/// thread pool, and the thread that moves the engine's epoch for time budgets.
pub struct ScriptHost {
    engine: ScriptEngine,
    pool: rayon::ThreadPool,
    config: ScriptConfig,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for ScriptHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptHost").field("config", &self.config).finish()
    }
}

impl ScriptHost {
    pub fn new(config: ScriptConfig) -> Result<ScriptHost, ScriptHostError> {
        let engine_config = EngineConfig {
            max_scripts: config.max_scripts,
            cache_dir: config.module_cache.clone(),
            ..Default::default()
        };
        let engine = match ScriptEngine::new(engine_config.clone()) {
            // The cache only saves compile time: without it, scripts still run.
            Err(e @ script::EngineError::CacheDir { .. }) => {
                tracing::warn!("{e}; compiled modules will not be kept across restarts");
                ScriptEngine::new(EngineConfig { cache_dir: None, ..engine_config })?
            }
            other => other?,
        };
        let threads = config.threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("script-{i}"))
            .build()
            .map_err(|e| ScriptHostError::Pool { threads, message: e.to_string() })?;
        let stop = Arc::new(AtomicBool::new(false));
        if config.time_budget {
            let ticker = engine.ticker();
            let stop = stop.clone();
            // Not joined: it only sleeps and bumps a counter, and ends within one period of
            // the host's drop.
            std::thread::Builder::new()
                .name("script-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_PERIOD);
                        ticker.tick();
                    }
                })
                .map_err(|e| ScriptHostError::Pool { threads: 1, message: e.to_string() })?;
        }
        Ok(ScriptHost { engine, pool, config, stop })
    }

    pub fn engine(&self) -> &ScriptEngine {
        &self.engine
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The time events may run this tick: the script budget's share of the interval, less the
    /// part that writing the scripts' state back is expected to take (`run_share` of it runs).
    fn budget(&self, interval_us: u64, run_share: f64) -> TickBudget {
        if !self.config.time_budget {
            return TickBudget::UNLIMITED;
        }
        let share = (interval_us as f64 * SCRIPT_BUDGET_SHARE * run_share) as u64;
        self.engine.budget((share / EPOCH_PERIOD.as_micros() as u64).max(1))
    }
}

impl Drop for ScriptHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What compiling modules costs against loading them from the disk cache (for
/// `terrane bench scripts`).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ModuleCacheBench {
    pub modules: usize,
    /// Loading every module into a fresh engine without a cache: check, rewrite, compile.
    pub compile_ms: f64,
    /// The same into a fresh engine whose cache directory holds them: check, rewrite, load.
    pub load_ms: f64,
    /// Bytes of compiled modules on disk.
    pub cache_bytes: u64,
}

/// Measures [`ModuleCacheBench`] with a cache in `dir` (emptied first and removed after).
pub fn module_cache_bench(sources: &[&[u8]], dir: &std::path::Path) -> Result<ModuleCacheBench, String> {
    let _ = std::fs::remove_dir_all(dir);
    let engine = |cache: bool| {
        let cache_dir = cache.then(|| dir.to_path_buf());
        ScriptEngine::new(EngineConfig { max_scripts: 8, cache_dir, ..Default::default() })
            .map_err(|e| e.to_string())
    };
    let load_all = |e: &ScriptEngine| -> Result<f64, String> {
        let t = Instant::now();
        for src in sources {
            e.load(src).map_err(|e| e.to_string())?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let compile_ms = load_all(&engine(false)?)?;
    let filler = engine(true)?;
    load_all(&filler)?;
    let cache_bytes = sources
        .iter()
        .filter_map(|src| filler.load(src).ok())
        .filter_map(|m| filler.cache_file(&m))
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    drop(filler);
    let restarted = engine(true)?;
    let load_ms = load_all(&restarted)?;
    let stats = restarted.cache_stats();
    let _ = std::fs::remove_dir_all(dir);
    if stats.loaded != sources.len() as u64 || stats.compiled != 0 {
        return Err(format!("the restarted engine did not load every module from disk: {stats:?}"));
    }
    Ok(ModuleCacheBench { modules: sources.len(), compile_ms, load_ms, cache_bytes })
}

/// A `ScriptHost` made on first use, so hosts whose regions have no scripts never build an
/// engine (its pooling allocator reserves address space for every slot).
#[derive(Default)]
pub struct LazyScriptHost {
    config: ScriptConfig,
    cell: OnceLock<Result<Arc<ScriptHost>, String>>,
}

impl LazyScriptHost {
    pub fn new(config: ScriptConfig) -> LazyScriptHost {
        LazyScriptHost { config, cell: OnceLock::new() }
    }

    pub fn get(&self) -> Result<&Arc<ScriptHost>, &str> {
        self.cell
            .get_or_init(|| {
                ScriptHost::new(self.config.clone()).map(Arc::new).map_err(|e| {
                    tracing::error!("scripts will not run on this host: {e}");
                    e.to_string()
                })
            })
            .as_ref()
            .map_err(|e| e.as_str())
    }
}

/// A script's state besides its memory: what a region record's control blob holds.
#[derive(Serialize, Deserialize)]
struct Control {
    version: u64,
    globals: Vec<GlobalValue>,
    vars: ScriptVars,
}

/// Bookkeeping next to one live script.
struct Meta {
    /// The version last written to the region's record; `None` until the first write, which
    /// writes the whole memory (a fresh instance holds the module's data, the record zeros).
    synced: Option<u64>,
    /// Set when something (an event, a timer) may have changed the script since.
    dirty: bool,
}

/// What the scripts of one region did, for its statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScriptTickReport {
    pub events: u64,
    pub deferred: usize,
    pub delivered: usize,
    pub cost: Duration,
}

/// The live side of one region's scripts: instances by id, and their statistics.
#[derive(Default)]
pub struct RegionScripts {
    live: Vec<Script>,
    meta: Vec<Meta>,
    /// Records that cannot run here (module refused, state unreadable), with the reason.
    broken: BTreeMap<ScriptId, (EntityId, String)>,
    /// Records found unable to run since the last pass, to be reported by the next one.
    newly_broken: Vec<ScriptStopped>,
    modules: HashMap<ModuleHash, Arc<ScriptModule>>,
    recent: VecDeque<(Instant, u64, Duration)>,
    events_total: u64,
    /// Share of a pass that writing scripts' state back took (a moving average over passes
    /// that wrote back at least `WRITEBACK_SAMPLE_SCRIPTS`): the budget covers run and
    /// write-back together, so a burst of thousands of timers stays within it.
    writeback_share: f64,
}

impl std::fmt::Debug for RegionScripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionScripts").field("live", &self.live.len()).field("broken", &self.broken).finish()
    }
}

/// A script that no longer runs, as the control API lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedScript {
    /// The script id, as 16 hex digits.
    pub script: String,
    pub object: u64,
    /// `out_of_fuel`, `time_budget`, `stack_overflow`, `memory_growth`, `trap`, `bad_call`,
    /// `internal`, or `cannot_run` (this host refused its module or state).
    pub kind: String,
    pub message: String,
}

/// The snake_case name of an error kind, as owners and operators see it.
pub fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::OutOfFuel => "out_of_fuel",
        ErrorKind::TimeBudget => "time_budget",
        ErrorKind::StackOverflow => "stack_overflow",
        ErrorKind::MemoryGrowth => "memory_growth",
        ErrorKind::Trap => "trap",
        ErrorKind::BadCall => "bad_call",
        ErrorKind::Internal => "internal",
    }
}

/// Script statistics of one region.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScriptStats {
    pub scripts: usize,
    pub events_total: u64,
    pub events_per_s: f64,
    /// Mean script time per tick over the recent window.
    pub time_ms: f64,
    /// Scripts stopped by an error, plus records that could not be instantiated.
    pub errors: usize,
}

impl RegionScripts {
    /// Ticks `region` and runs its scripts within the tick (see [`Region::tick_with`]).
    /// A region without scripts ticks as usual and builds no engine.
    pub fn tick(
        &mut self,
        host: &LazyScriptHost,
        region: &mut Region,
        now_us: u64,
        inputs: Vec<Input>,
    ) -> TickOutput {
        if region.script_count() == 0 && self.live.is_empty() && !has_script_inputs(&inputs) {
            return region.tick(now_us, inputs);
        }
        match host.get() {
            Ok(h) => {
                let h = h.clone();
                self.tick_on(&h, region, now_us, inputs).0
            }
            Err(_) => region.tick(now_us, inputs),
        }
    }

    /// Ticks with scripts on a given script host; also reports what the scripts did.
    pub fn tick_on(
        &mut self,
        host: &ScriptHost,
        region: &mut Region,
        now_us: u64,
        inputs: Vec<Input>,
    ) -> (TickOutput, ScriptTickReport) {
        let started = Instant::now();
        let mut pass = Pass { host, scripts: self, report: ScriptTickReport::default() };
        let out = region.tick_with(now_us, inputs, &mut pass);
        let mut report = pass.report;
        report.cost = started.elapsed();
        self.events_total += report.events;
        if self.recent.len() == SCRIPT_STATS_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back((started, report.events, report.cost));
        (out, report)
    }

    pub fn stats(&self) -> ScriptStats {
        let events: u64 = self.recent.iter().map(|r| r.1).sum();
        let span = match (self.recent.front(), self.recent.back()) {
            (Some(a), Some(b)) => b.0.duration_since(a.0).as_secs_f64(),
            _ => 0.0,
        };
        let time: f64 = self.recent.iter().map(|r| r.2.as_secs_f64()).sum();
        ScriptStats {
            scripts: self.live.len() + self.broken.len(),
            events_total: self.events_total,
            // The first tick of the window has no span before it: count the rest over the span.
            events_per_s: if span > 0.0 {
                (events - self.recent.front().map_or(0, |r| r.1)) as f64 / span
            } else {
                0.0
            },
            time_ms: if self.recent.is_empty() { 0.0 } else { time * 1e3 / self.recent.len() as f64 },
            errors: self.live.iter().filter(|s| s.error().is_some()).count() + self.broken.len(),
        }
    }

    /// The scripts that no longer run (stopped by an error, or unable to run here), at most
    /// `MAX_LISTED_STOPPED_SCRIPTS`, by id.
    pub fn stopped(&self) -> Vec<StoppedScript> {
        let errored = self.live.iter().filter_map(|s| {
            s.error().map(|e| (s.id().0, s.object(), kind_name(e.kind).to_string(), e.message.clone()))
        });
        let broken = self
            .broken
            .iter()
            .map(|(id, (object, reason))| (id.0, *object, CANNOT_RUN.into(), reason.clone()));
        let mut all: Vec<(u64, EntityId, String, String)> = errored.chain(broken).collect();
        all.sort_unstable_by_key(|s| s.0);
        all.truncate(MAX_LISTED_STOPPED_SCRIPTS);
        all.into_iter()
            .map(|(id, object, kind, message)| StoppedScript {
                script: format!("{id:016x}"),
                object: object.0,
                kind,
                message,
            })
            .collect()
    }

    /// Brings the live instances of a replica being built by an incoming migration in line
    /// with its records: instantiates new scripts, and writes into existing instances the state
    /// of every record changed after generation `since`. Done after each pre-copy round, it
    /// leaves the freeze only the last round's scripts to copy, and the first tick here none.
    pub fn prepare_from(&mut self, host: &ScriptHost, region: &Region, since: Option<u64>) {
        self.reconcile(host, region);
        // The first time, instantiating restored every record already.
        let Some(since) = since else { return };
        // Instances whose recorded state could not be written in are dropped and made anew
        // from their records by the reconcile below (which reports them if that fails too).
        let mut stale = Vec::new();
        let runnable: Vec<&ScriptRecord> =
            region.scripts().filter(|r| !self.broken.contains_key(&r.id)).collect();
        for (i, record) in runnable.into_iter().enumerate() {
            let Some(script) = self.live.get_mut(i) else { break };
            debug_assert_eq!(script.id().0, record.id.0);
            if record.gen <= since || !record.started() {
                continue;
            }
            let control: Control = match postcard::from_bytes(&record.control) {
                Ok(c) => c,
                Err(_) => {
                    stale.push(i);
                    continue;
                }
            };
            // Only the chunks the record changed after `since` (the instance holds the rest
            // already): a few KiB per script instead of its whole memory.
            let delta = script::ScriptDelta {
                id: script.id(),
                module: script.module().hash(),
                base_version: script.version(),
                version: control.version,
                chunks: record
                    .chunks
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.gen > since)
                    .map(|(index, c)| {
                        let mut bytes = vec![0; world::limits::SCRIPT_CHUNK_BYTES];
                        c.copy_to(&mut bytes);
                        script::MemoryChunk { index: index as u8, bytes }
                    })
                    .collect(),
                globals: control.globals,
                vars: control.vars,
            };
            match script.apply_delta(&delta) {
                Ok(()) => self.meta[i] = Meta { synced: Some(control.version), dirty: false },
                Err(_) => stale.push(i),
            }
        }
        for i in stale.into_iter().rev() {
            self.live.remove(i);
            self.meta.remove(i);
        }
        self.reconcile(host, region);
    }

    /// The live instances, by id (for tests and diagnostics).
    pub fn live(&self) -> &[Script] {
        &self.live
    }

    /// Records that cannot run here, with their objects and the reason.
    pub fn broken(&self) -> &BTreeMap<ScriptId, (EntityId, String)> {
        &self.broken
    }

    /// Brings the live set in line with the region's records: instantiates new and arriving
    /// scripts, drops those whose records are gone. Records and live instances are both in id
    /// order, so this is one merge.
    fn reconcile(&mut self, host: &ScriptHost, region: &Region) {
        // Every tick asks this: one walk of both id-ordered lists, no searching.
        let same = self.live.len() + self.broken.len() == region.script_count() && {
            let mut live = self.live.iter().map(|s| s.id().0).peekable();
            region.scripts().all(|r| {
                if live.peek() == Some(&r.id.0) {
                    live.next();
                    true
                } else {
                    self.broken.contains_key(&r.id)
                }
            })
        };
        if same {
            return;
        }
        let mut old: BTreeMap<u64, (Script, Meta)> =
            self.live.drain(..).zip(self.meta.drain(..)).map(|(s, m)| (s.id().0, (s, m))).collect();
        let mut broken = BTreeMap::new();
        for record in region.scripts() {
            if let Some(kept) = old.remove(&record.id.0) {
                self.live.push(kept.0);
                self.meta.push(kept.1);
                continue;
            }
            if let Some(reason) = self.broken.remove(&record.id) {
                broken.insert(record.id, reason);
                continue;
            }
            match self.instantiate(host, region, record) {
                Ok((script, meta)) => {
                    self.live.push(script);
                    self.meta.push(meta);
                }
                Err(reason) => {
                    tracing::warn!(region = %region.id(), script = %record.id, "script cannot run: {reason}");
                    if self.newly_broken.len() < MAX_SCRIPT_ERRORS_PER_TICK {
                        self.newly_broken.push(ScriptStopped {
                            script: record.id,
                            object: record.object,
                            owner: 0,
                            kind: CANNOT_RUN.into(),
                            message: reason.clone(),
                        });
                    }
                    broken.insert(record.id, (record.object, reason));
                }
            }
        }
        self.broken = broken;
    }

    fn module(
        &mut self,
        host: &ScriptHost,
        region: &Region,
        hash: ModuleHash,
    ) -> Result<Arc<ScriptModule>, String> {
        if let Some(m) = self.modules.get(&hash) {
            return Ok(m.clone());
        }
        let bytes = region.module(hash).ok_or_else(|| format!("the region lacks module {hash}"))?;
        let m = host.engine.load(bytes).map_err(|e| e.to_string())?;
        self.modules.insert(hash, m.clone());
        Ok(m)
    }

    /// A live instance for a record: a fresh script (queued `start`, and the creator's
    /// parameter as a message) if it never ran, else exactly the recorded state.
    fn instantiate(
        &mut self,
        host: &ScriptHost,
        region: &Region,
        record: &ScriptRecord,
    ) -> Result<(Script, Meta), String> {
        let module = self.module(host, region, record.module)?;
        let id = script::ScriptId(record.id.0);
        if !record.started() {
            let spec = ScriptSpec { id, object: record.object, seed: record.start.seed };
            let mut s = Script::new(&module, spec).map_err(|e| e.to_string())?;
            if let Some((creator, param)) = record.start.creator {
                s.enqueue(Event::Message { sender: creator, bytes: param.to_le_bytes().to_vec() });
            }
            return Ok((s, Meta { synced: None, dirty: true }));
        }
        let control: Control = postcard::from_bytes(&record.control)
            .map_err(|e| format!("the recorded control state is unreadable: {e}"))?;
        let state = ScriptState {
            id,
            object: record.object,
            module: module.hash(),
            version: control.version,
            memory: record.memory(),
            globals: control.globals,
            vars: control.vars,
        };
        let s = Script::restore(&module, &state).map_err(|e| e.to_string())?;
        Ok((s, Meta { synced: Some(control.version), dirty: false }))
    }

    fn find_object(&self, object: EntityId) -> impl Iterator<Item = usize> + '_ {
        self.live.iter().enumerate().filter(move |(_, s)| s.object() == object).map(|(i, _)| i)
    }

    fn enqueue(&mut self, i: usize, event: Event) {
        self.live[i].enqueue(event);
        self.meta[i].dirty = true;
    }
}

fn has_script_inputs(inputs: &[Input]) -> bool {
    inputs.iter().any(|i| match i {
        Input::AddScript { .. } | Input::Rez { .. } => true,
        Input::Arrive { scripts, .. } => !scripts.is_empty(),
        _ => false,
    })
}

/// One tick's script pass over a region.
struct Pass<'a> {
    host: &'a ScriptHost,
    scripts: &'a mut RegionScripts,
    report: ScriptTickReport,
}

impl ScriptPass for Pass<'_> {
    fn run(&mut self, region: &Region, touches: &[Touch]) -> ScriptOutcome {
        let rs = &mut *self.scripts;
        rs.reconcile(self.host, region);
        let mut stopped = std::mem::take(&mut rs.newly_broken);
        if rs.live.is_empty() {
            return ScriptOutcome { stopped, ..ScriptOutcome::default() };
        }
        for t in touches {
            let targets: Vec<usize> = rs.find_object(t.object).collect();
            for i in targets {
                rs.enqueue(i, Event::Touch { toucher: t.avatar });
            }
        }
        for &(object, from) in region.arrivals() {
            let targets: Vec<usize> = rs.find_object(object).collect();
            for i in targets {
                rs.enqueue(i, Event::RegionCross { from, to: region.id() });
            }
        }
        let view = RegionView::new(region);
        let now_ms = view.now_ms();
        // The scripts with work this tick, with their queue and timer as they were: a script
        // the budget defers keeps both, so it needs no write-back (a burst of timers spread
        // over several ticks would otherwise copy out every waiting script each tick).
        let mut due: Vec<(usize, usize, Option<u64>)> = Vec::new();
        for (i, s) in rs.live.iter().enumerate() {
            let timer = s.timer().map(|t| t.next_due_ms);
            if s.queued() > 0 || timer.is_some_and(|t| now_ms >= t) {
                due.push((i, s.queued(), timer));
            }
        }
        let run_share = (1.0 - rs.writeback_share).max(MIN_SCRIPT_RUN_SHARE);
        let budget = self.host.budget(region.interval_us(), run_share);
        let batch_started = Instant::now();
        // Only a batch stops scripts: those stopped by this one are reported, once.
        let had_error: Vec<bool> = rs.live.iter().map(|s| s.error().is_some()).collect();
        // The same results either way (scripts share nothing); the pool only when it can
        // run enough in parallel to pay for waking it.
        let pool = &self.host.pool;
        let pool = (due.len() >= MIN_PARALLEL_SCRIPTS && pool.current_num_threads() > 1).then_some(pool);
        let batch = run_batch(pool, &mut rs.live, &view, budget);
        let batch_time = batch_started.elapsed();
        for (i, queued, timer) in due {
            let s = &rs.live[i];
            if s.queued() != queued || s.timer().map(|t| t.next_due_ms) != timer {
                rs.meta[i].dirty = true;
            }
        }
        self.report.events = batch.events;
        self.report.deferred = batch.deferred;
        for (s, had) in rs.live.iter().zip(had_error) {
            if let (false, Some(e)) = (had, s.error()) {
                if stopped.len() < MAX_SCRIPT_ERRORS_PER_TICK {
                    stopped.push(ScriptStopped {
                        script: ScriptId(s.id().0),
                        object: s.object(),
                        owner: 0,
                        kind: kind_name(e.kind).into(),
                        message: e.message.clone(),
                    });
                }
            }
        }

        // Chat and messages stay between scripts: delivered into queues now, run next tick.
        let mut effects = Vec::with_capacity(batch.effects.len());
        let mut saved = Vec::new();
        let mut by_channel: HashMap<i32, Vec<usize>> = HashMap::new();
        for (i, s) in rs.live.iter().enumerate() {
            for l in s.listens() {
                by_channel.entry(l.channel).or_default().push(i);
            }
        }
        for fx in batch.effects {
            let mut world_fx = Vec::new();
            for e in fx.effects {
                match e {
                    Effect::Say { channel, range, text } => {
                        let Some(from) = view.pose(fx.object).map(|p| p.pos) else { continue };
                        for &i in by_channel.get(&channel).map_or(&[][..], |v| v.as_slice()) {
                            let listener = rs.live[i].object();
                            if listener == fx.object || !in_range(&view, from, listener, range) {
                                continue;
                            }
                            rs.enqueue(i, Event::Listen { channel, sender: fx.object, text: text.clone() });
                            self.report.delivered += 1;
                        }
                    }
                    Effect::Message { to, bytes } => {
                        let targets: Vec<usize> = rs.find_object(to).collect();
                        for i in targets {
                            rs.enqueue(i, Event::Message { sender: fx.object, bytes: bytes.clone() });
                            self.report.delivered += 1;
                        }
                    }
                    Effect::SetPos(p) => world_fx.push(ScriptEffect::SetPos(p)),
                    Effect::SetRot(r) => world_fx.push(ScriptEffect::SetRot(r)),
                    Effect::SetVel(v) => world_fx.push(ScriptEffect::SetVel(v)),
                    Effect::SetScale(s) => world_fx.push(ScriptEffect::SetScale(s)),
                    Effect::SetText(t) => world_fx.push(ScriptEffect::SetText(t)),
                    Effect::CreateObject { template, pos, param } => {
                        world_fx.push(ScriptEffect::CreateObject { template, pos, param })
                    }
                    Effect::DeleteSelf => world_fx.push(ScriptEffect::DeleteSelf),
                    Effect::Save => saved.push(ScriptId(fx.script.0)),
                }
            }
            if !world_fx.is_empty() {
                effects.push(ObjectEffects {
                    script: ScriptId(fx.script.0),
                    object: fx.object,
                    effects: world_fx,
                });
            }
        }

        // Write back every script that may have changed (ran an event, so its version moved;
        // had an event queued or its timer fire): only chunks whose content changed since the
        // last write (the region compares again and stamps only real changes).
        let mut updates = Vec::new();
        let writeback_started = Instant::now();
        for (s, m) in rs.live.iter_mut().zip(rs.meta.iter_mut()) {
            if !std::mem::take(&mut m.dirty) && Some(s.version()) == m.synced {
                continue;
            }
            let (version, chunks, globals, vars) = match m.synced {
                Some(v) => {
                    let d = s.delta_since(v);
                    (d.version, d.chunks.into_iter().map(|c| (c.index, c.bytes)).collect(), d.globals, d.vars)
                }
                None => {
                    let st = s.capture();
                    let chunks = st
                        .memory
                        .chunks_exact(world::limits::SCRIPT_CHUNK_BYTES)
                        .enumerate()
                        .map(|(i, c)| (i as u8, c.to_vec()))
                        .collect();
                    (st.version, chunks, st.globals, st.vars)
                }
            };
            m.synced = Some(version);
            let control = Control { version, globals, vars };
            updates.push(ScriptUpdate {
                id: ScriptId(s.id().0),
                chunks,
                control: postcard::to_stdvec(&control).expect("serializing to memory cannot fail"),
            });
        }
        if updates.len() >= WRITEBACK_SAMPLE_SCRIPTS {
            let writeback = writeback_started.elapsed().as_secs_f64();
            let share = writeback / (writeback + batch_time.as_secs_f64()).max(1e-9);
            rs.writeback_share += WRITEBACK_AVERAGE_WEIGHT * (share - rs.writeback_share);
        }
        ScriptOutcome { effects, updates, stopped, saved }
    }
}

fn in_range(view: &RegionView, from: Vec3, listener: EntityId, range: ChatRange) -> bool {
    match (range.metres(), view.pose(listener)) {
        (None, _) => true,
        (Some(r), Some(p)) => p.pos.distance(from) <= r,
        (Some(_), None) => false,
    }
}

/// The region as scripts read it during one pass: poses in region metres (children of a
/// linkset at their world position) and a grid of entities for sensors. The grid is built
/// the first time a script needs it: most passes need none, and building it visits every
/// entity (for a region of 10,000 objects, the larger part of a tick).
pub struct RegionView<'a> {
    region: &'a Region,
    cells: std::sync::OnceLock<Vec<Vec<Sensed>>>,
}

impl<'a> RegionView<'a> {
    pub fn new(region: &'a Region) -> RegionView<'a> {
        RegionView { region, cells: std::sync::OnceLock::new() }
    }

    fn cells(&self) -> &[Vec<Sensed>] {
        self.cells.get_or_init(|| {
            let mut cells = vec![Vec::new(); SENSOR_CELLS * SENSOR_CELLS];
            for e in self.region.entities() {
                let pos = self.region.world_pos(e.id).unwrap_or(e.pos);
                cells[cell_of(pos)].push(Sensed { id: e.id, avatar: e.is_avatar(), pos });
            }
            cells
        })
    }
}

fn cell_index(v: f32) -> usize {
    ((v / SENSOR_CELL).max(0.0) as usize).min(SENSOR_CELLS - 1)
}

fn cell_of(p: Vec3) -> usize {
    cell_index(p.y) * SENSOR_CELLS + cell_index(p.x)
}

impl WorldView for RegionView<'_> {
    fn now_ms(&self) -> u64 {
        self.region.now_us() / 1000
    }
    fn paused(&self, object: EntityId) -> bool {
        // A lookup or two per script with work. (Asking first whether any unit is held at all
        // visited every entity, once per pass: a millisecond in a region of 10,000 objects.)
        self.region.is_held(object)
    }
    fn region(&self) -> RegionId {
        self.region.id()
    }
    fn pose(&self, id: EntityId) -> Option<Pose> {
        let e = self.region.entity(id)?;
        let pos = self.region.world_pos(id)?;
        Some(Pose { pos, rot: e.rot, vel: e.vel, scale: e.scale })
    }
    fn text(&self, id: EntityId) -> Option<&str> {
        self.region.entity(id).map(|e| e.text.as_str())
    }
    fn sensor(&self, origin: Vec3, range: f32, kinds: SensorKinds, out: &mut Vec<Sensed>) {
        let (x0, x1) = (cell_index(origin.x - range), cell_index(origin.x + range));
        let (y0, y1) = (cell_index(origin.y - range), cell_index(origin.y + range));
        let cells = self.cells();
        for cy in y0..=y1 {
            for cx in x0..=x1 {
                for s in &cells[cy * SENSOR_CELLS + cx] {
                    // The engine filters by exact range, sorts and keeps the nearest.
                    if (s.avatar && kinds.avatars) || (!s.avatar && kinds.objects) {
                        out.push(*s);
                    }
                }
            }
        }
    }
}
