//! The region host: ticks many regions at once on a pool of threads sized to its cores.
//!
//! Each region ticks on its own schedule (45 Hz with avatars, 5 Hz without); the workers pick
//! whichever region is due next. Inputs reach a region through a bounded queue and are applied
//! at its next tick. The control API (`api`) and metrics sit on top.

pub mod api;
pub mod boost;
pub mod border;
pub mod durable;
pub mod metrics;
pub mod net;
mod net_border;
pub mod net_watch;
pub mod report;
pub mod scripting;
pub mod stats;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use world::limits::MAX_INPUTS_PER_TICK;
use world::{Input, Region, RegionId, TickOutput};

use stats::{RegionStats, TickStats};

/// Most inputs waiting for one region; beyond it `send` refuses (the caller slows down).
pub const MAX_QUEUED_INPUTS: usize = 16 * MAX_INPUTS_PER_TICK;
/// Most regions one host runs.
pub const MAX_REGIONS_PER_HOST: usize = 4096;
/// How much lower (in nice steps) work that must not delay ticks runs, such as preparing an
/// incoming migration's scripts.
pub const BACKGROUND_NICE: i32 = 10;
/// How much higher (in nice steps) the tick workers ask to run than the process: a tick that
/// waits for a core is late for every client of its region, whatever else the machine runs.
/// Raising a priority needs the right to (root, or `CAP_SYS_NICE`); without it the workers run
/// at the process's priority and the host says so once.
pub const TICK_NICE: i32 = -5;
/// A migration's step at a tick boundary (cutting a round: the delta and the hash of what
/// changed, milliseconds after a burst of scripts) waits for the next boundary when the tick
/// before it already took more than this share of the region's interval, so that it does not
/// lengthen the one long tick into a late one.
pub const MIGRATION_STEP_TICK_SHARE: f64 = 0.25;
/// Most boundaries in a row a migration's step waits out that way: a region whose every tick
/// is long still migrates, a step every this many ticks plus one.
pub const MAX_WAITED_BOUNDARIES: u32 = 2;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    #[error("region {0} is not on this host")]
    UnknownRegion(RegionId),
    #[error("region {0} is already on this host")]
    AlreadyLoaded(RegionId),
    #[error("region {0} has MAX_QUEUED_INPUTS inputs waiting; try again after its next tick")]
    QueueFull(RegionId),
    #[error("this host already runs MAX_REGIONS_PER_HOST regions")]
    Full,
    #[error("region {0} is moving to another host; send the change again in a moment")]
    Moving(RegionId),
    #[error("store: {0}")]
    Store(String),
}

#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Worker threads that tick regions.
    pub cores: usize,
    /// Terrain seed for regions loaded without one.
    pub seed: u32,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig { cores: std::thread::available_parallelism().map_or(2, |n| n.get()), seed: 1 }
    }
}

/// Receives every tick's output of a region (for streaming to gateways, neighbours, tests).
pub type TickObserver = Box<dyn Fn(RegionId, &TickOutput) + Send + Sync>;

/// Runs once, after a region's next tick, with that tick's wall-clock time (Unix µs).
pub type FirstTickHook = Box<dyn FnOnce(u64) + Send>;

pub(crate) struct RegionSlot {
    /// The migration this region is the source of. Locked before `region` (never after), and
    /// held across a tick, so that the decision to freeze and the ticks exclude each other.
    pub(crate) migration: Mutex<Option<migrate::Source>>,
    /// The link to that migration's target: the final round leaves on it straight from the
    /// tick thread that froze the region (locked inside `migration`).
    pub(crate) freeze_link: Mutex<Option<link::LinkTx>>,
    /// Raises this host's async threads from the freeze until the migration ends (taken by the
    /// migration's task when it does; see [`boost`]).
    pub(crate) freeze_boost: Mutex<Option<boost::FreezeBoost>>,
    /// Woken after every tick: a migration sends its next round at tick boundaries.
    pub(crate) boundary: Arc<tokio::sync::Notify>,
    /// When its live entry in the schedule is due (changed under the schedule's lock, or
    /// [`TICKING`] while a thread runs that tick); an entry due at another time was superseded
    /// (see `border::hurry`) and is skipped.
    pub(crate) due: AtomicU64,
    /// Wall-clock time of the last tick (Unix µs), for freeze measurements.
    pub(crate) last_tick_unix: AtomicU64,
    /// Boundaries in a row at which the migration's step waited for a shorter tick (see
    /// [`MIGRATION_STEP_TICK_SHARE`]).
    waited_boundaries: AtomicU32,
    first_tick: Mutex<Option<FirstTickHook>>,
    pub(crate) region: Mutex<Region>,
    inputs: Mutex<VecDeque<Input>>,
    stats: Mutex<TickStats>,
    /// Simulated time = host time + offset, so a region's clock continues where it stopped.
    offset_us: i64,
    /// Distinguishes this load from an earlier one of the same region in the schedule.
    incarnation: u64,
    metrics: RegionMetrics,
    /// The region's live script instances (derived from its records; locked inside `region`).
    scripts: Mutex<scripting::RegionScripts>,
    /// Its border crossings (set up at its first tick here; locked inside `region`).
    border: Mutex<Option<border::Border>>,
    /// Durable inputs waiting for their acknowledgement.
    acks: Mutex<durable::AckQueue>,
    /// The ticket this load claimed the region in the store with (0: no store).
    store_ticket: u64,
}

struct RegionMetrics {
    tick_seconds: ::metrics::Histogram,
    ticks: ::metrics::Counter,
    overruns: ::metrics::Counter,
    entities: ::metrics::Gauge,
    avatars: ::metrics::Gauge,
}

impl RegionMetrics {
    fn new(id: RegionId) -> RegionMetrics {
        let r = id.to_string();
        RegionMetrics {
            tick_seconds: ::metrics::histogram!("terrane_region_tick_seconds", "region" => r.clone()),
            ticks: ::metrics::counter!("terrane_region_ticks_total", "region" => r.clone()),
            overruns: ::metrics::counter!("terrane_region_tick_overruns_total", "region" => r.clone()),
            entities: ::metrics::gauge!("terrane_region_entities", "region" => r.clone()),
            avatars: ::metrics::gauge!("terrane_region_avatars", "region" => r),
        }
    }
}

/// When a region is due: ordered by time first.
type Due = Reverse<(u64, RegionId, u64)>;

struct Shared {
    config: HostConfig,
    epoch: Instant,
    regions: RwLock<HashMap<RegionId, Arc<RegionSlot>>>,
    schedule: Mutex<BinaryHeap<Due>>,
    wake: Condvar,
    stop: AtomicBool,
    next_incarnation: Mutex<u64>,
    observers: RwLock<Vec<TickObserver>>,
    scripts: scripting::LazyScriptHost,
    /// Every region of the world (wherever it runs), so regions know their neighbours.
    grid: RwLock<Arc<HashSet<RegionId>>>,
    /// Where crossing messages for other hosts' regions go (installed by the network layer).
    crossing_tx: RwLock<Option<border::CrossingSender>>,
    durable: std::sync::OnceLock<Arc<durable::Durability>>,
    /// Itself, for work that runs after a tick on another thread (crossing messages sent once
    /// their tick's record is committed).
    me: std::sync::Weak<Shared>,
}

/// A running host. Cloning shares it; [`Host::shutdown`] stops its workers.
#[derive(Clone)]
pub struct Host {
    shared: Arc<Shared>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Host {
    pub fn start(config: HostConfig) -> Host {
        Host::start_with_module_cache(config, None)
    }

    /// Like [`Host::start`], keeping compiled script modules in `module_cache` so that a
    /// restarted host loads them instead of compiling them again.
    pub fn start_with_module_cache(config: HostConfig, module_cache: Option<std::path::PathBuf>) -> Host {
        let cores = config.cores.max(1);
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            config,
            epoch: Instant::now(),
            regions: RwLock::new(HashMap::new()),
            schedule: Mutex::new(BinaryHeap::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            next_incarnation: Mutex::new(0),
            observers: RwLock::new(Vec::new()),
            scripts: scripting::LazyScriptHost::new(scripting::ScriptConfig {
                threads: cores,
                module_cache,
                ..Default::default()
            }),
            grid: RwLock::new(Arc::new(HashSet::new())),
            crossing_tx: RwLock::new(None),
            durable: std::sync::OnceLock::new(),
        });
        let workers = (0..cores)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("tick-{i}"))
                    .spawn(move || {
                        let raised = shift_priority(TICK_NICE);
                        if i == 0 && !raised {
                            tracing::info!(
                                "tick workers run at the process's priority (raising it is not permitted)"
                            );
                        }
                        worker(&shared)
                    })
                    .expect("spawning a tick worker")
            })
            .collect();
        tracing::info!(cores, "host started");
        Host { shared, workers: Arc::new(Mutex::new(workers)) }
    }

    pub fn cores(&self) -> usize {
        self.shared.config.cores.max(1)
    }

    /// Microseconds since this host started: its clock for scheduling and protocols.
    pub fn now_us(&self) -> u64 {
        self.shared.epoch.elapsed().as_micros() as u64
    }

    /// Loads a new region with generated terrain (the host's seed unless given).
    pub fn load_new(&self, id: RegionId, seed: Option<u32>) -> Result<(), HostError> {
        self.load(self.new_or_recovered(id, seed.unwrap_or(self.shared.config.seed))?)
    }

    /// Starts ticking a region; its simulated clock continues from its last tick.
    pub fn load(&self, region: Region) -> Result<(), HostError> {
        self.load_then(region, None)
    }

    /// Like [`Host::load`], and runs `hook` after the region's first tick here.
    pub fn load_then(&self, region: Region, hook: Option<FirstTickHook>) -> Result<(), HostError> {
        self.load_prepared(region, hook, None)
    }

    /// Like [`Host::load_then`], with live script instances already prepared for the region
    /// (by an incoming migration), so its first tick here instantiates nothing.
    pub fn load_prepared(
        &self,
        region: Region,
        hook: Option<FirstTickHook>,
        scripts: Option<scripting::RegionScripts>,
    ) -> Result<(), HostError> {
        let id = region.id();
        let mut regions = self.shared.regions.write();
        if regions.contains_key(&id) {
            return Err(HostError::AlreadyLoaded(id));
        }
        if regions.len() >= MAX_REGIONS_PER_HOST {
            return Err(HostError::Full);
        }
        let now = self.now_us();
        let incarnation = {
            let mut n = self.shared.next_incarnation.lock();
            *n += 1;
            *n
        };
        let slot = RegionSlot {
            migration: Mutex::new(None),
            freeze_link: Mutex::new(None),
            boundary: Arc::new(tokio::sync::Notify::new()),
            due: AtomicU64::new(now),
            last_tick_unix: AtomicU64::new(0),
            waited_boundaries: AtomicU32::new(0),
            freeze_boost: Mutex::new(None),
            first_tick: Mutex::new(None),
            offset_us: region.now_us() as i64 - now as i64,
            region: Mutex::new(region),
            inputs: Mutex::new(VecDeque::new()),
            stats: Mutex::new(TickStats::default()),
            incarnation,
            metrics: RegionMetrics::new(id),
            scripts: Mutex::new(scripts.unwrap_or_default()),
            border: Mutex::new(None),
            acks: Mutex::new(durable::AckQueue::default()),
            store_ticket: self.shared.durable.get().map_or(0, |d| d.next_ticket()),
        };
        *slot.first_tick.lock() = hook;
        let slot_ticket = slot.store_ticket;
        regions.insert(id, Arc::new(slot));
        drop(regions);
        if let Some(d) = self.shared.durable.get() {
            // Before its first tick: every record of this load is fenced by it.
            d.claim(id, slot_ticket);
        }
        self.shared.schedule.lock().push(Reverse((now, id, incarnation)));
        self.shared.wake.notify_one();
        tracing::info!(region = %id, "region loaded");
        Ok(())
    }

    /// Stops ticking a region and hands back its state at a tick boundary.
    pub fn unload(&self, id: RegionId) -> Result<Region, HostError> {
        self.unload_with_inputs(id).map(|(r, _)| r)
    }

    /// Unloads, and also hands back the inputs that were waiting for the next tick.
    pub fn unload_with_inputs(&self, id: RegionId) -> Result<(Region, Vec<Input>), HostError> {
        let (slot, inputs) = self.remove_slot(id)?;
        let region = slot.region.lock().clone();
        Ok((region, inputs))
    }

    /// Unloads a region whose state lives on elsewhere (it migrated): hands back the inputs
    /// that were waiting, without copying the state out first (which, for a busy region, is
    /// milliseconds taken from this host's other regions).
    pub fn release(&self, id: RegionId) -> Result<Vec<Input>, HostError> {
        self.remove_slot(id).map(|(_, inputs)| inputs)
    }

    fn remove_slot(&self, id: RegionId) -> Result<(Arc<RegionSlot>, Vec<Input>), HostError> {
        let slot = self.shared.regions.write().remove(&id).ok_or(HostError::UnknownRegion(id))?;
        // A worker may be inside this region's tick: taking the locks waits for it to finish.
        let migration = slot.migration.lock();
        let inputs: Vec<Input> = slot.inputs.lock().drain(..).collect();
        let inputs = slot.acks.lock().fail_all(inputs);
        if let Some(d) = self.shared.durable.get() {
            d.checkpoint_soon(id, slot.store_ticket);
        }
        slot.metrics.entities.set(0.0);
        slot.metrics.avatars.set(0.0);
        tracing::info!(region = %id, "region unloaded");
        drop(migration);
        Ok((slot, inputs))
    }

    /// The host's script engine and pool (built on first use); `None` if it cannot run scripts.
    pub fn script_host(&self) -> Option<Arc<scripting::ScriptHost>> {
        self.shared.scripts.get().ok().cloned()
    }

    /// Queues an input for the region's next tick (or, while a migration has the region
    /// frozen, holds it for whichever host ticks next).
    pub fn send(&self, id: RegionId, input: Input) -> Result<(), HostError> {
        self.offer(id, input).map_err(|(e, _)| e)
    }

    /// As [`Host::send`], but hands back an input it did not take, so the caller can route it
    /// elsewhere (a region released for a migration's commit takes no more).
    pub fn offer(&self, id: RegionId, input: Input) -> Result<(), (HostError, Input)> {
        let slot = match self.slot(id) {
            Ok(slot) => slot,
            Err(e) => return Err((e, input)),
        };
        let input = match slot.migration.lock().as_mut() {
            Some(m) => match m.buffer_input(input) {
                Ok(()) => return Ok(()),
                Err(input) => input,
            },
            None => input,
        };
        let mut q = slot.inputs.lock();
        // Released meanwhile? Its queue was drained (under this lock) for the new owner: an
        // input pushed now would be lost. Checked with the queue held, so a release that
        // comes after this drains what we push.
        if !self.shared.regions.read().get(&id).is_some_and(|s| s.incarnation == slot.incarnation) {
            return Err((HostError::UnknownRegion(id), input));
        }
        if q.len() >= MAX_QUEUED_INPUTS {
            return Err((HostError::QueueFull(id), input));
        }
        q.push_back(input);
        Ok(())
    }

    /// Tells the host every region of the world, wherever it runs: a region's entities cross
    /// towards neighbours in this set and bounce off edges with nothing beyond. Empty (the
    /// default): no crossings.
    pub fn set_grid(&self, regions: impl IntoIterator<Item = RegionId>) {
        let grid: HashSet<RegionId> = regions.into_iter().collect();
        if **self.shared.grid.read() != grid {
            *self.shared.grid.write() = Arc::new(grid);
        }
    }

    /// Installs where crossing messages to regions of other hosts go.
    pub fn set_crossing_sender(&self, sender: border::CrossingSender) {
        *self.shared.crossing_tx.write() = Some(sender);
    }

    /// A crossing message for region `to` from its neighbour `from`. Dropped (the protocol
    /// resends) while the region is frozen for a migration or before its first tick here.
    pub fn crossing_msg(&self, to: RegionId, from: RegionId, msg: crossing::Msg) -> Result<(), HostError> {
        let slot = self.slot(to)?;
        border::deliver(&self.shared, &slot, to, from, msg);
        Ok(())
    }

    /// Runs `f` on the region's state between ticks.
    pub fn with_region<T>(&self, id: RegionId, f: impl FnOnce(&Region) -> T) -> Result<T, HostError> {
        let slot = self.slot(id)?;
        let region = slot.region.lock();
        Ok(f(&region))
    }

    /// Every tick's output of every region is passed to `observer` (on the tick thread: keep it short).
    pub fn observe(&self, observer: TickObserver) {
        self.shared.observers.write().push(observer);
    }

    pub fn region_ids(&self) -> Vec<RegionId> {
        let mut ids: Vec<RegionId> = self.shared.regions.read().keys().copied().collect();
        ids.sort();
        ids
    }

    pub fn stats(&self, id: RegionId) -> Result<RegionStats, HostError> {
        let slot = self.slot(id)?;
        let (tick, generation, rate_hz, entities, avatars, hash) = {
            let r = slot.region.lock();
            (r.tick_number(), r.generation(), r.rate_hz(), r.entity_count(), r.avatar_count(), r.state_hash())
        };
        let queued_inputs = slot.inputs.lock().len();
        let crossings = slot.border.lock().as_ref().map(|b| b.stats()).unwrap_or_default();
        let (scripts, stopped_scripts) = {
            let s = slot.scripts.lock();
            (s.stats(), s.stopped())
        };
        let s = slot.stats.lock();
        let (p50, p99) = s.percentiles();
        Ok(RegionStats {
            region: id.to_string(),
            tick,
            generation,
            rate_hz,
            entities,
            avatars,
            ticks: s.ticks,
            tick_p50_ms: f64::from(p50) / 1000.0,
            tick_p99_ms: f64::from(p99) / 1000.0,
            tick_max_ms: f64::from(s.max_us) / 1000.0,
            budget_ms: 1000.0 / f64::from(rate_hz),
            overruns: s.overruns,
            late: s.late,
            queued_inputs,
            state_hash: format!("{hash:016x}"),
            scripts: scripts.scripts,
            script_events: scripts.events_total,
            script_events_per_s: scripts.events_per_s,
            script_time_ms: scripts.time_ms,
            script_errors: scripts.errors,
            stopped_scripts,
            crossings,
        })
    }

    pub fn all_stats(&self) -> Vec<RegionStats> {
        self.region_ids().into_iter().filter_map(|id| self.stats(id).ok()).collect()
    }

    /// Puts inputs back at the end of the region's queue (held inputs of an aborted migration).
    pub fn requeue(&self, id: RegionId, inputs: Vec<Input>) -> Result<(), HostError> {
        self.slot(id)?.inputs.lock().extend(inputs);
        Ok(())
    }

    /// Runs the region's tick on the calling thread if one is due, rather than waiting for a
    /// tick worker to wake for it. For a region a migration just committed here: its first
    /// tick ends the freeze, and a worker's wake-up (a thread hop: milliseconds on a busy
    /// machine) would be inside it.
    pub fn tick_if_due(&self, id: RegionId) {
        let Ok(slot) = self.slot(id) else { return };
        let due = slot.due.load(Ordering::SeqCst);
        let now = self.shared.epoch.elapsed().as_micros() as u64;
        if self.shared.stop.load(Ordering::SeqCst) || due > now || !take_tick(&slot, due) {
            return;
        }
        let next = run_tick(&self.shared, id, &slot, due);
        reschedule(&self.shared, id, &slot, next);
    }

    /// Whether the region is loaded here. Only a lookup: cheap enough for every input routed
    /// (unlike [`Host::stats`], which takes the region's lock and brings its state hash up to
    /// date, tens of milliseconds after a tick that ran thousands of scripts).
    pub fn holds(&self, id: RegionId) -> bool {
        self.shared.regions.read().contains_key(&id)
    }

    pub(crate) fn slot(&self, id: RegionId) -> Result<Arc<RegionSlot>, HostError> {
        self.shared.regions.read().get(&id).cloned().ok_or(HostError::UnknownRegion(id))
    }

    /// Stops the workers after the ticks in progress; regions stay loaded but no longer tick.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for w in self.workers.lock().drain(..) {
            let _ = w.join();
        }
        tracing::info!("host stopped");
    }
}

/// A tick worker: repeatedly takes the region due soonest, ticks it, and puts it back.
fn worker(shared: &Shared) {
    loop {
        boost::expire_overdue();
        let (due, id, incarnation) = {
            let mut schedule = shared.schedule.lock();
            loop {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let now = shared.epoch.elapsed().as_micros() as u64;
                match schedule.peek() {
                    Some(Reverse((due, _, _))) if *due <= now => {
                        let Reverse(next) = schedule.pop().expect("peeked");
                        break next;
                    }
                    Some(Reverse((due, _, _))) => {
                        let wait = Duration::from_micros(due - now);
                        shared.wake.wait_for(&mut schedule, wait);
                    }
                    None => {
                        shared.wake.wait_for(&mut schedule, Duration::from_millis(100));
                    }
                }
            }
        };
        // Another region may be due right away: let an idle worker take it.
        shared.wake.notify_one();
        let Some(slot) = shared.regions.read().get(&id).cloned() else { continue };
        if slot.incarnation != incarnation || !take_tick(&slot, due) {
            continue; // unloaded and loaded again, brought forward, or ticked by another thread
        }
        let next = run_tick(shared, id, &slot, due);
        reschedule(shared, id, &slot, next);
    }
}

/// `RegionSlot::due` while a tick of the region runs: whoever set it runs that tick, and any
/// schedule entry found meanwhile is stale.
pub(crate) const TICKING: u64 = u64::MAX;

/// Takes the region's tick due at `due` for the caller: false when it was superseded or
/// another thread took it.
fn take_tick(slot: &RegionSlot, due: u64) -> bool {
    slot.due.compare_exchange(due, TICKING, Ordering::SeqCst, Ordering::SeqCst).is_ok()
}

/// Puts a region that just ticked back in the schedule for its next tick (unless it was
/// unloaded meanwhile).
fn reschedule(shared: &Shared, id: RegionId, slot: &RegionSlot, next: u64) {
    let incarnation = slot.incarnation;
    if shared.regions.read().get(&id).is_some_and(|s| s.incarnation == incarnation) {
        let mut schedule = shared.schedule.lock();
        slot.due.store(next, Ordering::SeqCst);
        schedule.push(Reverse((next, id, incarnation)));
        drop(schedule);
        shared.wake.notify_one();
        // A unit that arrived while this tick ran found the old due time and could not
        // bring the next tick forward: it is brought forward now (no lock held here).
        if slot.border.lock().as_ref().is_some_and(|b| b.adoption_waiting()) {
            let interval = slot.region.lock().interval_us();
            border::hurry(shared, slot, id, interval);
        }
    }
}

/// Encodes a migration's copy of a region off the tick thread: a full copy (the tick thread
/// only clones the state at its boundary) or a large round cut there. Hashing a full copy
/// there too warms the live region's hash cache (it descends from the copy), so the next
/// round's hash on the tick thread is small.
fn copy_off_tick(shared: &Shared, id: RegionId, migration: migrate::MigrationId, job: OffTick) {
    let epoch = shared.epoch;
    let Some(slot) = shared.regions.read().get(&id).cloned() else { return };
    let started = Instant::now();
    // The encoding at a lower priority; handing it over at the normal one. The hand-over takes
    // the locks the tick takes: a low-priority thread holding one would be set aside by the
    // very work it must not delay, and the tick would wait for it.
    let encoded = background(move || match job {
        OffTick::Snapshot(copy) => {
            let bytes = copy.snapshot_with(world::Compression::Lz4);
            let _ = copy.state_hash();
            (bytes, copy.generation(), Some(copy))
        }
        OffTick::Delta(delta) => (delta.encode(), delta.generation, None),
    });
    drop(off_thread(false, move || {
        let Ok((bytes, generation, copy)) = encoded.blocking_recv() else { return };
        if let Some(copy) = &copy {
            slot.region.lock().adopt_hash_cache(copy);
        }
        let now = epoch.elapsed().as_micros() as u64;
        // Only to the migration that asked (another may have started since).
        if let Some(m) = slot.migration.lock().as_mut().filter(|m| m.id() == migration) {
            m.copy_ready(now, bytes, generation);
        }
        slot.boundary.notify_one();
        let what = if copy.is_some() { "full copy" } else { "round" };
        tracing::debug!(target: "freeze", region = %id, us = started.elapsed().as_micros() as u64, "{what} encoded off the tick thread");
    }));
}

/// What [`copy_off_tick`] encodes.
enum OffTick {
    Snapshot(Region),
    Delta(Box<world::Delta>),
}

/// A crossing message between two regions of this host.
fn deliver_local(shared: &Shared, from: RegionId, t: crossing::Transmit) {
    let Some(slot) = shared.regions.read().get(&t.to).cloned() else { return };
    border::deliver(shared, &slot, t.to, from, t.msg);
}

/// Sends a region's crossing messages: over the network layer, or to regions of this host.
fn send_transmits(shared: &Shared, id: RegionId, transmits: Vec<crossing::Transmit>) {
    if transmits.is_empty() {
        return;
    }
    let sender = shared.crossing_tx.read().clone();
    for t in transmits {
        match &sender {
            Some(send) => send(id, t),
            None => match shared.regions.read().get(&t.to).cloned() {
                Some(_) => deliver_local(shared, id, t),
                None => {
                    tracing::debug!(from = %id, to = %t.to, "crossing message for a region not on this host dropped (no network)")
                }
            },
        }
    }
}

/// Runs work that must not delay ticks (preparing a migration's scripts) on its own thread at
/// a lower CPU priority, so that on a busy machine the region's tick threads, and the other
/// regions here, go first. The receiver completes when the work is done (or the thread could not
/// start, after running it here instead).
pub(crate) fn background<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    off_thread(true, f)
}

/// Runs `f` on a thread of its own, at a lower CPU priority when `lower` (see [`background`]);
/// at the normal priority for work something urgent waits on. The receiver gets what it returns.
pub(crate) fn off_thread<T: Send + 'static>(
    lower: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let work = std::sync::Arc::new(parking_lot::Mutex::new(Some((f, tx))));
    let theirs = work.clone();
    let started = std::thread::Builder::new().name("background".into()).spawn(move || {
        if lower {
            let _ = lower_priority();
        }
        if let Some((f, tx)) = theirs.lock().take() {
            let _ = tx.send(f());
        }
    });
    if started.is_err() {
        if let Some((f, tx)) = work.lock().take() {
            let _ = tx.send(f());
        }
    }
    rx
}

/// Lowers this thread's CPU priority by [`BACKGROUND_NICE`] and, on Linux, moves it to the idle
/// scheduling class (`SCHED_IDLE`, per thread; threads it starts inherit it): it runs only on
/// CPU time nothing else on the machine wants, and any normal thread that wakes (a tick, the
/// gateway sending a frame) takes its core at once, where a niced thread keeps a share and the
/// rest of its time slice. Measured in `bench migrate`, where the hosts share 2 cores with the
/// gateway and the bots: the bots' longest update gap during pre-copy migrations was over 50 ms
/// in about half the runs with the nice value alone, and within it with the idle class. The
/// price: on a host whose CPU is saturated, this work (a migration's encoding and decoding,
/// preparing its scripts, building checkpoints) waits; a migration that stalls for it is
/// aborted by its timeouts and the region stays where it was. Whether the idle class took
/// effect (the nice value applies either way).
pub(crate) fn lower_priority() -> bool {
    shift_priority(BACKGROUND_NICE);
    #[cfg(target_os = "linux")]
    // SAFETY: a plain system call on the calling thread (pid 0) with a parameter on our stack.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// Moves this thread's nice value by `steps` (Linux: per thread; threads it starts inherit the
/// new value). Whether it took effect: raising a priority may not be permitted.
pub fn shift_priority(steps: i32) -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on this thread's own id; no memory is passed.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, now + steps) == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = steps;
        false
    }
}

/// Microseconds since the Unix epoch: comparable between processes on one machine.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Whether a migration takes its step at this tick boundary: after a tick of `tick_us` in an
/// interval of `interval_us`, with the step having waited `waited` boundaries in a row.
fn migration_step_now(tick_us: u64, interval_us: u64, waited: u32) -> bool {
    tick_us as f64 <= MIGRATION_STEP_TICK_SHARE * interval_us as f64 || waited >= MAX_WAITED_BOUNDARIES
}

/// Ticks one region and returns when it is next due.
fn run_tick(shared: &Shared, id: RegionId, slot: &RegionSlot, due: u64) -> u64 {
    // The migration's lock before the queue's, the order a release takes them in: inputs taken
    // out of the queue are never in this thread's hands while a commit's release drains it.
    let mut migration = slot.migration.lock();
    if migration.as_ref().is_some_and(|m| !m.should_tick()) {
        // Frozen for a migration: no tick, and the inputs wait for whoever ticks next.
        return due + 1_000_000 / u64::from(world::limits::ACTIVE_TICK_HZ);
    }
    // Room for the border's own inputs, which come first.
    let inputs: Vec<Input> = {
        let mut q = slot.inputs.lock();
        let n = q.len().min(MAX_INPUTS_PER_TICK - border::MAX_BORDER_INPUTS_PER_TICK);
        q.drain(..n).collect()
    };
    let (n_inputs, first_pos) = (inputs.len(), slot.acks.lock().take(inputs.len()));
    let started = Instant::now();
    let late_us = (shared.epoch.elapsed().as_micros() as u64).saturating_sub(due);
    if late_us > 20_000 {
        tracing::debug!(target: "freeze", region = %id, late_us, "tick started late");
    }
    let now = shared.epoch.elapsed().as_micros() as u64;
    let sim_now = (now as i64 + slot.offset_us).max(0) as u64;
    let mut region = slot.region.lock();
    let host_now = shared.epoch.elapsed().as_micros() as u64;
    let grid = shared.grid.read().clone();
    let neighbours = world::Neighbours::of(id, |r| grid.contains(&r));
    if region.neighbours() != neighbours {
        region.set_neighbours(neighbours);
    }
    let mut border_guard = slot.border.lock();
    let border = border_guard.get_or_insert_with(|| border::Border::load(&region));
    let mut all = border.before_tick(host_now);
    let inputs = if all.is_empty() {
        inputs
    } else {
        all.extend(inputs);
        all
    };
    let mut out = slot.scripts.lock().tick(&shared.scripts, &mut region, sim_now, inputs);
    let transmits = border.after_tick(host_now, &mut region, &mut out);
    // Never hold one region's border while delivering to another's (two tick threads
    // crossing both ways would wait on each other).
    drop(border_guard);
    // The tick is done: this is the "last tick" a freeze is measured from.
    let unix = unix_us();
    slot.last_tick_unix.store(unix, Ordering::SeqCst);
    // With a store, crossing messages leave only once their tick's record is committed: a
    // crash in between must not lose a departure whose release was already sent.
    let mut transmits = transmits;
    match shared.durable.get() {
        Some(d) => {
            let then = durable::after_commit_send(shared, id, std::mem::take(&mut transmits));
            d.after_tick(slot, &region, &out, first_pos, n_inputs, then)
        }
        None => durable::after_tick_without_store(slot, &out, first_pos, n_inputs),
    }
    let step = migration_step_now(
        started.elapsed().as_micros() as u64,
        out.interval_us,
        slot.waited_boundaries.load(Ordering::Relaxed),
    );
    if let Some(m) = migration.as_mut().filter(|_| !step) {
        slot.waited_boundaries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "freeze", region = %id, round = m.rounds_sent(), "migration step waits for a shorter tick");
    }
    if let Some(m) = migration.as_mut().filter(|_| step) {
        slot.waited_boundaries.store(0, Ordering::Relaxed);
        // Right after a tick is the one moment a freeze costs nothing extra: the next round
        // (or the final one) is cut here, on the tick thread.
        let was_ticking = m.should_tick();
        let rounds = m.rounds_sent();
        let cut = Instant::now();
        m.on_tick_boundary(shared.epoch.elapsed().as_micros() as u64, &region);
        if was_ticking && !m.should_tick() {
            tracing::debug!(target: "freeze", region = %id, tick_end = unix, cut_us = unix_us() - unix, "source froze");
            *slot.freeze_boost.lock() = Some(boost::FreezeBoost::new());
            // The final round leaves from here rather than after waking the migration's task:
            // one thread hop less inside the freeze. (Its task sends whatever else comes.)
            if let Some(to) = slot.freeze_link.lock().as_ref() {
                for msg in std::iter::from_fn(|| m.poll_transmit()) {
                    to.send(&link::LinkMsg::Migration { region: id, msg });
                }
                tracing::debug!(target: "freeze", at = unix_us(), "source: final round handed to the link");
            }
        } else if m.rounds_sent() != rounds {
            let cut_us = cut.elapsed().as_micros() as u64;
            tracing::debug!(target: "freeze", region = %id, round = rounds, cut_us, "round cut");
        }
        match m.take_copy() {
            Some(migrate::CopyJob::Snapshot) => {
                let cloned = Instant::now();
                let copy = region.clone();
                tracing::debug!(target: "freeze", region = %id, us = cloned.elapsed().as_micros() as u64, "region cloned for a full copy");
                copy_off_tick(shared, id, m.id(), OffTick::Snapshot(copy))
            }
            Some(migrate::CopyJob::Delta(d)) => copy_off_tick(shared, id, m.id(), OffTick::Delta(d)),
            None => {}
        }
    }
    let (entities, avatars) = (region.entity_count(), region.avatar_count());
    drop(region);
    drop(migration);
    send_transmits(shared, id, transmits);
    if let Some(hook) = slot.first_tick.lock().take() {
        tracing::debug!(target: "freeze", region = %id, at = unix, tick_us = started.elapsed().as_micros() as u64, "first tick here");
        hook(unix);
    }
    slot.boundary.notify_one();
    for observer in shared.observers.read().iter() {
        observer(id, &out);
    }
    let cost = started.elapsed();
    let cost_us = cost.as_micros().min(u128::from(u32::MAX)) as u32;
    let interval = out.interval_us;
    let mut s = slot.stats.lock();
    s.record(cost_us, interval, out.changes.len());
    let mut next = due + interval;
    let after = shared.epoch.elapsed().as_micros() as u64;
    if next + interval < after {
        // More than a whole tick behind: skip ahead rather than run a burst of catch-up ticks.
        s.late += 1;
        next = after;
    }
    drop(s);
    let m = &slot.metrics;
    m.tick_seconds.record(cost.as_secs_f64());
    m.ticks.increment(1);
    if u64::from(cost_us) > interval {
        m.overruns.increment(1);
    }
    m.entities.set(entities as f64);
    m.avatars.set(avatars as f64);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn background_work_runs_in_the_idle_scheduling_class() {
        // SAFETY: a plain system call about the calling thread.
        let mine = unsafe { libc::sched_getscheduler(0) };
        let (idle, policy) = std::thread::spawn(|| {
            let idle = lower_priority();
            // SAFETY: a plain system call about the calling thread.
            (idle, unsafe { libc::sched_getscheduler(0) })
        })
        .join()
        .expect("thread");
        assert!(idle, "lower_priority reported the idle class was not set");
        assert_eq!(policy, libc::SCHED_IDLE);
        // Only that thread: the caller's class is untouched.
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, mine);
    }

    #[test]
    fn a_migration_step_waits_out_a_long_tick_but_never_more_than_the_limit_in_a_row() {
        let interval = 22_222;
        // A short tick leaves room: the step runs.
        assert!(migration_step_now(1_000, interval, 0));
        assert!(migration_step_now((interval as f64 * MIGRATION_STEP_TICK_SHARE) as u64, interval, 0));
        // A long one (a burst of scripts) leaves the step to the next boundary…
        assert!(!migration_step_now(12_000, interval, 0));
        assert!(!migration_step_now(12_000, interval, MAX_WAITED_BOUNDARIES - 1));
        // …but a region whose every tick is long still migrates.
        assert!(migration_step_now(12_000, interval, MAX_WAITED_BOUNDARIES));
        assert!(migration_step_now(40_000, interval, MAX_WAITED_BOUNDARIES + 3));
    }
}
