//! A live script: one wasmtime instance with its store, its event queue and its own state.
//!
//! Running an event reads the world through a [`WorldView`] and yields [`Effect`]s; the script
//! never changes the region. A script's state can be captured, restored into a fresh instance,
//! or brought up to date in an instance made ahead of time (migration targets instantiate while
//! pre-copy rounds run, and the freeze only copies changed memory chunks).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use wasmtime::{Global, Memory, ResourceLimiter, Store, Trap, TypedFunc, Val};
use world::EntityId;

use crate::abi::{self, Handler, MEMORY_EXPORT};
use crate::engine::{ScriptModule, TickBudget};
use crate::event::{Effect, Event};
use crate::host::{BadCall, GrowthRefused, HostFault, HostState, ViewPtr};
use crate::limits::{CHUNKS, CHUNK_BYTES, MAX_EVENTS_PER_TICK, MAX_MESSAGE_BYTES, MAX_QUEUED_EVENTS};
use crate::state::{
    check_chunk, Counters, ErrorKind, GlobalValue, Listen, MemoryChunk, ModuleHash, ScriptDelta, ScriptError,
    ScriptId, ScriptState, ScriptVars, StateError, Timer,
};
use crate::view::WorldView;

/// wasmtime adds the deadline to the current epoch, so "no deadline" must leave room.
const NO_DEADLINE_TICKS: u64 = u64::MAX / 4;

/// Who a new script is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScriptSpec {
    pub id: ScriptId,
    /// The object the script lives in.
    pub object: EntityId,
    /// Seed of the script's random generator (the region derives it from its own seed).
    pub seed: u64,
}

/// A script could not be instantiated.
#[derive(Debug, thiserror::Error)]
pub enum InstantiateError {
    #[error("instantiating module {module} failed (is the engine's max_scripts reached?): {message}")]
    Wasmtime { module: ModuleHash, message: String },
    #[error("module {module} lacks its loader export {name}; it was not loaded through ScriptEngine::load")]
    MissingExport { module: ModuleHash, name: String },
}

/// A state could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Instantiate(#[from] InstantiateError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What happened to an event offered to a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// The module has no handler for it (events are not queued for nobody).
    NoHandler,
    /// `MAX_QUEUED_EVENTS` are waiting: dropped and counted.
    QueueFull,
    /// Its payload is longer than `MAX_MESSAGE_BYTES`.
    TooLarge,
    /// The script is in its error state.
    Stopped,
}

/// What one script did in one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    pub events: u32,
    /// Some events waited for the next tick because the budget ran out first.
    pub deferred: bool,
    /// The script went into its error state this tick.
    pub stopped: bool,
}

#[derive(Default)]
struct Handlers {
    start: Option<TypedFunc<(), ()>>,
    timer: Option<TypedFunc<(), ()>>,
    touch: Option<TypedFunc<i64, ()>>,
    listen: Option<TypedFunc<(i32, i64, i32), ()>>,
    message: Option<TypedFunc<(i64, i32), ()>>,
    collision: Option<TypedFunc<(i64, i32), ()>>,
    changed: Option<TypedFunc<i32, ()>>,
    region_cross: Option<TypedFunc<(i32, i32), ()>>,
}

/// Content hashes of the 4 KiB chunks and the version at which each last changed.
/// Hashing happens only when a delta or state is taken (not per event), so it costs nothing
/// while no migration runs.
#[derive(Clone)]
struct ChunkTracker {
    /// `None` until the first delta or capture, and after a state was applied: then every
    /// chunk counts as changed at the version the hashes are first taken.
    hashes: Option<[u64; CHUNKS]>,
    stamps: [u64; CHUNKS],
    at_version: u64,
}

impl ChunkTracker {
    /// A fresh instance: memory is the module's initial image, which every fresh instance of
    /// the module shares, so version 0 means exactly that image.
    fn fresh(initial: [u64; CHUNKS]) -> ChunkTracker {
        ChunkTracker { hashes: Some(initial), stamps: [0; CHUNKS], at_version: 0 }
    }

    fn unknown() -> ChunkTracker {
        ChunkTracker { hashes: None, stamps: [0; CHUNKS], at_version: 0 }
    }

    /// Memory just written whole at `version`: every chunk counts as changed then (a delta
    /// since an older version carries it), none since.
    fn written(memory: &[u8], version: u64) -> ChunkTracker {
        ChunkTracker { hashes: Some(hash_chunks(memory)), stamps: [version; CHUNKS], at_version: version }
    }

    /// Chunks written at `version` over memory the tracker was in step with at `from`; the
    /// others kept their content. Unknown again if the tracker was not in step.
    fn patched(&mut self, from: u64, version: u64, chunks: &[MemoryChunk]) {
        match &mut self.hashes {
            Some(hashes) if self.at_version == from => {
                for c in chunks {
                    hashes[c.index as usize] = xxhash_rust::xxh3::xxh3_64(&c.bytes);
                    self.stamps[c.index as usize] = version;
                }
                self.at_version = version;
            }
            _ => *self = ChunkTracker::unknown(),
        }
    }

    /// Brings the hashes and stamps to `memory` as it is at `version`. `written` marks every
    /// chunk written since the last refresh (it may mark more): only those are hashed.
    fn refresh(&mut self, memory: &[u8], version: u64, written: u64) {
        match &mut self.hashes {
            Some(_) if self.at_version == version => {}
            Some(hashes) => {
                for i in crate::writes::chunks_in(written) {
                    let h = hash_chunk(memory, i);
                    if hashes[i] != h {
                        hashes[i] = h;
                        self.stamps[i] = version;
                    }
                }
                debug_assert_eq!(
                    *hashes,
                    hash_chunks(memory),
                    "a memory chunk changed without its write being marked"
                );
            }
            None => {
                self.hashes = Some(hash_chunks(memory));
                self.stamps = [version; CHUNKS];
            }
        }
        self.at_version = version;
    }
}

fn hash_chunk(memory: &[u8], i: usize) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&memory[i * CHUNK_BYTES..(i + 1) * CHUNK_BYTES])
}

fn hash_chunks(memory: &[u8]) -> [u64; CHUNKS] {
    std::array::from_fn(|i| hash_chunk(memory, i))
}

/// One running script.
pub struct Script {
    id: ScriptId,
    module: Arc<ScriptModule>,
    store: Store<HostState>,
    memory: Memory,
    globals: Vec<Global>,
    /// The loader's write-mask global (see `crate::writes`).
    writes: Global,
    handlers: Handlers,
    version: u64,
    chunks: ChunkTracker,
    /// Effects of this tick's events, in the order they were made.
    effects: Vec<Effect>,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script")
            .field("id", &self.id)
            .field("module", &self.module.hash)
            .field("version", &self.version)
            .field("error", &self.store.data().vars.error)
            .finish()
    }
}

impl Script {
    /// Creates a new script and queues its `start` event.
    pub fn new(module: &Arc<ScriptModule>, spec: ScriptSpec) -> Result<Script, InstantiateError> {
        let vars = ScriptVars { rng: spec.seed, ..ScriptVars::default() };
        let mut script = Script::instantiate(module, spec.id, spec.object, vars)?;
        script.enqueue(Event::Start);
        Ok(script)
    }

    /// Instantiates a script that will receive its state later ([`Script::apply_state`] or
    /// [`Script::apply_delta`] since version 0): what a migration target does ahead of the
    /// freeze. No `start` event is queued.
    pub fn prepare(
        module: &Arc<ScriptModule>,
        id: ScriptId,
        object: EntityId,
    ) -> Result<Script, InstantiateError> {
        Script::instantiate(module, id, object, ScriptVars::default())
    }

    /// A new instance holding exactly `state`.
    pub fn restore(module: &Arc<ScriptModule>, state: &ScriptState) -> Result<Script, RestoreError> {
        if state.module != module.hash {
            return Err(StateError::WrongModule { expected: module.hash, found: state.module }.into());
        }
        let mut script = Script::prepare(module, state.id, state.object)?;
        script.apply_state(state)?;
        Ok(script)
    }

    fn instantiate(
        module: &Arc<ScriptModule>,
        id: ScriptId,
        object: EntityId,
        vars: ScriptVars,
    ) -> Result<Script, InstantiateError> {
        let hash = module.hash;
        let wt = |e: wasmtime::Error| InstantiateError::Wasmtime { module: hash, message: format!("{e:#}") };
        let missing = |name: &str| InstantiateError::MissingExport { module: hash, name: name.to_string() };
        let mut store = Store::new(module.pre.module().engine(), HostState::new(object, vars));
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        store.set_fuel(module.fuel_per_event).map_err(wt)?;
        store.set_epoch_deadline(NO_DEADLINE_TICKS);
        let instance = module.pre.instantiate(&mut store).map_err(wt)?;
        let memory = instance.get_memory(&mut store, MEMORY_EXPORT).ok_or_else(|| missing(MEMORY_EXPORT))?;
        store.data_mut().memory = Some(memory);
        let mut globals = Vec::with_capacity(module.info.mutable_globals.len());
        for (index, _) in &module.info.mutable_globals {
            let name = abi::global_export_name(*index);
            globals.push(instance.get_global(&mut store, &name).ok_or_else(|| missing(&name))?);
        }
        let writes =
            instance.get_global(&mut store, abi::WRITES_EXPORT).ok_or_else(|| missing(abi::WRITES_EXPORT))?;
        let mut h = Handlers::default();
        let info = &module.info;
        macro_rules! bind {
            ($field:ident, $handler:expr) => {
                if info.has($handler) {
                    h.$field = Some(instance.get_typed_func(&mut store, $handler.name()).map_err(wt)?);
                }
            };
        }
        bind!(start, Handler::Start);
        bind!(timer, Handler::Timer);
        bind!(touch, Handler::Touch);
        bind!(listen, Handler::Listen);
        bind!(message, Handler::Message);
        bind!(collision, Handler::Collision);
        bind!(changed, Handler::Changed);
        bind!(region_cross, Handler::RegionCross);
        let chunks =
            ChunkTracker::fresh(*module.initial_chunks.get_or_init(|| hash_chunks(memory.data(&store))));
        Ok(Script {
            id,
            module: module.clone(),
            store,
            memory,
            globals,
            writes,
            handlers: h,
            version: 0,
            chunks,
            effects: Vec::new(),
        })
    }

    pub fn id(&self) -> ScriptId {
        self.id
    }
    pub fn object(&self) -> EntityId {
        self.store.data().object
    }
    pub fn module(&self) -> &Arc<ScriptModule> {
        &self.module
    }
    pub fn version(&self) -> u64 {
        self.version
    }
    /// The error that stopped the script, if it is stopped.
    pub fn error(&self) -> Option<&ScriptError> {
        self.store.data().vars.error.as_ref()
    }
    /// Open listens, ordered by handle. The region routes chat on these channels to the script.
    pub fn listens(&self) -> &[Listen] {
        &self.store.data().vars.listens
    }
    pub fn listens_on(&self, channel: i32) -> bool {
        self.listens().iter().any(|l| l.channel == channel)
    }
    pub fn timer(&self) -> Option<Timer> {
        self.store.data().vars.timer
    }
    pub fn queued(&self) -> usize {
        self.store.data().vars.queue.len()
    }
    pub fn counters(&self) -> Counters {
        self.store.data().vars.counters
    }
    /// The script's 64 KiB memory, read-only.
    pub fn memory(&self) -> &[u8] {
        self.memory.data(&self.store)
    }

    /// Offers an event. As in Second Life a full queue keeps its oldest events and drops the
    /// new one; a timer event already waiting is not queued twice.
    pub fn enqueue(&mut self, event: Event) -> Enqueued {
        let vars = &mut self.store.data_mut().vars;
        if vars.error.is_some() {
            return Enqueued::Stopped;
        }
        if !self.module.info.has(event.handler()) {
            return Enqueued::NoHandler;
        }
        if event.payload_len() > MAX_MESSAGE_BYTES {
            return Enqueued::TooLarge;
        }
        if event == Event::Timer && vars.queue.contains(&Event::Timer) {
            return Enqueued::Queued;
        }
        if vars.queue.len() >= MAX_QUEUED_EVENTS {
            vars.counters.events_dropped += 1;
            return Enqueued::QueueFull;
        }
        vars.queue.push_back(event);
        Enqueued::Queued
    }

    /// Queues the timer event if the timer is due at `now_ms`.
    fn poll_timer(&mut self, now_ms: u64) {
        let Some(timer) = self.store.data().vars.timer else { return };
        if now_ms >= timer.next_due_ms {
            // A late timer fires once, then keeps its interval from now (no burst of catch-ups).
            self.store.data_mut().vars.timer =
                Some(Timer { next_due_ms: now_ms.saturating_add(timer.interval_ms), ..timer });
            self.enqueue(Event::Timer);
        }
    }

    /// Runs this tick's share of the script: queues a due timer, then runs up to
    /// `MAX_EVENTS_PER_TICK` queued events while the budget lasts. Effects collect in the
    /// script until [`take_effects`](Script::take_effects). A script with work whose turn
    /// comes after the budget ran out is left exactly as it was (its due timer is queued when
    /// it does run), so it has no new state to be written back until then.
    pub fn run_tick(&mut self, view: &dyn WorldView, budget: TickBudget) -> TickReport {
        let mut report = TickReport::default();
        if self.error().is_some() || view.paused(self.object()) {
            return report;
        }
        let now_ms = view.now_ms();
        let timer_due = self.store.data().vars.timer.is_some_and(|t| now_ms >= t.next_due_ms);
        if self.queued() == 0 && !timer_due {
            return report;
        }
        if self.module.epoch.load(Ordering::Acquire) >= budget.until_epoch {
            report.deferred = true;
            return report;
        }
        self.poll_timer(now_ms);
        if self.queued() == 0 {
            return report;
        }
        self.store.data_mut().view = Some(ViewPtr::new(view));
        for _ in 0..MAX_EVENTS_PER_TICK {
            if self.queued() == 0 {
                break;
            }
            let epoch = self.module.epoch.load(Ordering::Acquire);
            if epoch >= budget.until_epoch {
                report.deferred = true;
                break;
            }
            self.store.set_epoch_deadline((budget.until_epoch - epoch).min(NO_DEADLINE_TICKS));
            let Some(event) = self.store.data_mut().vars.queue.pop_front() else { break };
            report.events += 1;
            if self.run_event(event).is_err() {
                report.stopped = true;
                break;
            }
        }
        // The view's borrow ends with this call: no host function may reach it afterwards.
        self.store.data_mut().view = None;
        report
    }

    /// Runs one event. On error the script stops, and the event's effects are dropped (the
    /// event did not complete).
    fn run_event(&mut self, event: Event) -> Result<(), ScriptError> {
        let fuel = self.module.fuel_per_event;
        let st = self.store.data_mut();
        st.effects.clear();
        st.own = None;
        st.own_text = None;
        st.payload.clear();
        // Fuel is set per event: each event gets the same allowance, whatever came before.
        if let Err(e) = self.store.set_fuel(fuel) {
            return Err(self.fail(classify(e)));
        }
        let store = &mut self.store;
        let h = &self.handlers;
        let result = match event {
            Event::Start => h.start.as_ref().map(|f| f.call(&mut *store, ())),
            Event::Timer => h.timer.as_ref().map(|f| f.call(&mut *store, ())),
            Event::Touch { toucher } => h.touch.as_ref().map(|f| f.call(&mut *store, toucher.0 as i64)),
            Event::Listen { channel, sender, text } => h.listen.as_ref().map(|f| {
                let len = text.len() as i32;
                store.data_mut().payload = text.into_bytes();
                f.call(&mut *store, (channel, sender.0 as i64, len))
            }),
            Event::Message { sender, bytes } => h.message.as_ref().map(|f| {
                let len = bytes.len() as i32;
                store.data_mut().payload = bytes;
                f.call(&mut *store, (sender.0 as i64, len))
            }),
            Event::Collision { other, phase } => {
                h.collision.as_ref().map(|f| f.call(&mut *store, (other.0 as i64, phase)))
            }
            Event::Changed { what } => h.changed.as_ref().map(|f| f.call(&mut *store, what)),
            Event::RegionCross { from, to } => h
                .region_cross
                .as_ref()
                .map(|f| f.call(&mut *store, (abi::pack_region(from), abi::pack_region(to)))),
        };
        let left = self.store.get_fuel().unwrap_or(0);
        self.version += 1;
        let st = self.store.data_mut();
        st.vars.counters.events_run += 1;
        st.vars.counters.fuel_used += fuel.saturating_sub(left);
        match result {
            None | Some(Ok(())) => {
                self.effects.append(&mut st.effects);
                Ok(())
            }
            Some(Err(e)) => {
                st.effects.clear();
                Err(self.fail(classify(e)))
            }
        }
    }

    fn fail(&mut self, error: ScriptError) -> ScriptError {
        self.store.data_mut().vars.error = Some(error.clone());
        error
    }

    /// Effects of the events run since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub(crate) fn has_effects(&self) -> bool {
        !self.effects.is_empty()
    }

    /// Starts the script over: a fresh instance of the same module, an empty queue but for
    /// `start`, no listens or timer, no error. The random generator and counters carry on.
    pub fn reset(&mut self) -> Result<(), InstantiateError> {
        let old = &self.store.data().vars;
        let vars = ScriptVars { rng: old.rng, counters: old.counters, ..ScriptVars::default() };
        let version = self.version;
        let mut fresh = Script::instantiate(&self.module, self.id, self.object(), vars)?;
        // Versions only move forward, so deltas taken before the reset stay meaningful.
        fresh.version = version + 1;
        fresh.chunks = ChunkTracker::unknown();
        fresh.enqueue(Event::Start);
        *self = fresh;
        Ok(())
    }

    fn read_globals(&mut self) -> Vec<GlobalValue> {
        let store = &mut self.store;
        self.globals
            .iter()
            .map(|g| match g.get(&mut *store) {
                Val::I32(v) => GlobalValue::I32(v),
                Val::I64(v) => GlobalValue::I64(v),
                Val::F32(v) => GlobalValue::F32(v),
                Val::F64(v) => GlobalValue::F64(v),
                Val::V128(v) => GlobalValue::V128(v.as_u128()),
                // The loader refuses mutable reference-typed globals.
                other => unreachable!("mutable global of type {other:?} passed the loader"),
            })
            .collect()
    }

    fn write_globals(&mut self, values: &[GlobalValue]) -> Result<(), StateError> {
        let types = &self.module.info.mutable_globals;
        if values.len() != types.len() {
            return Err(StateError::GlobalCount { expected: types.len(), found: values.len() });
        }
        for (index, (v, (_, ty))) in values.iter().zip(types).enumerate() {
            let ok = matches!(
                (v, ty),
                (GlobalValue::I32(_), wasmparser::ValType::I32)
                    | (GlobalValue::I64(_), wasmparser::ValType::I64)
                    | (GlobalValue::F32(_), wasmparser::ValType::F32)
                    | (GlobalValue::F64(_), wasmparser::ValType::F64)
                    | (GlobalValue::V128(_), wasmparser::ValType::V128)
            );
            if !ok {
                return Err(StateError::GlobalType {
                    index,
                    expected: val_type_name(*ty),
                    found: v.type_name(),
                });
            }
        }
        for (g, v) in self.globals.iter().zip(values) {
            let val = match *v {
                GlobalValue::I32(x) => Val::I32(x),
                GlobalValue::I64(x) => Val::I64(x),
                GlobalValue::F32(x) => Val::F32(x),
                GlobalValue::F64(x) => Val::F64(x),
                GlobalValue::V128(x) => Val::V128(x.into()),
            };
            // Types were checked above against the module's own declarations.
            g.set(&mut self.store, val).map_err(|_| StateError::Invalid("global refused its value"))?;
        }
        Ok(())
    }

    /// The chunks written since the last call, by the module's stores and by host calls.
    fn take_writes(&mut self) -> u64 {
        let own = match self.writes.get(&mut self.store) {
            Val::I64(mask) => mask as u64,
            // The loader declares it i64; anything else would be a loader bug: hash it all.
            _ => crate::writes::ALL,
        };
        if own != 0 {
            // The loader made it a mutable i64, so setting it cannot fail; if it did, the
            // bits would only be hashed again next time.
            let _ = self.writes.set(&mut self.store, Val::I64(0));
        }
        own | std::mem::take(&mut self.store.data_mut().writes)
    }

    fn refresh_chunks(&mut self) {
        let written = self.take_writes();
        self.chunks.refresh(self.memory.data(&self.store), self.version, written);
    }

    /// The whole state, for a migration's first round, a checkpoint or the state hash.
    pub fn capture(&mut self) -> ScriptState {
        self.refresh_chunks();
        ScriptState {
            id: self.id,
            object: self.object(),
            module: self.module.hash,
            version: self.version,
            memory: self.memory.data(&self.store).to_vec(),
            globals: self.read_globals(),
            vars: self.store.data().vars.clone(),
        }
    }

    /// What changed since `version` (a version the receiver holds): memory chunks whose
    /// content changed since then, and globals and vars in full.
    pub fn delta_since(&mut self, version: u64) -> ScriptDelta {
        self.refresh_chunks();
        let memory = self.memory.data(&self.store);
        let chunks = (0..CHUNKS)
            .filter(|&i| self.chunks.stamps[i] > version)
            .map(|i| MemoryChunk {
                index: i as u8,
                bytes: memory[i * CHUNK_BYTES..(i + 1) * CHUNK_BYTES].to_vec(),
            })
            .collect();
        ScriptDelta {
            id: self.id,
            module: self.module.hash,
            base_version: version,
            version: self.version,
            chunks,
            globals: self.read_globals(),
            vars: self.store.data().vars.clone(),
        }
    }

    /// Hash of the canonical encoding of the whole state (see [`ScriptState::state_hash`]).
    pub fn state_hash(&mut self) -> u64 {
        self.capture().state_hash()
    }

    /// Overwrites this instance's state with `state`, without re-instantiating.
    pub fn apply_state(&mut self, state: &ScriptState) -> Result<(), StateError> {
        if state.id != self.id {
            return Err(StateError::WrongScript { expected: self.id, found: state.id });
        }
        if state.module != self.module.hash {
            return Err(StateError::WrongModule { expected: self.module.hash, found: state.module });
        }
        state.validate()?;
        self.write_globals(&state.globals)?;
        self.memory.data_mut(&mut self.store).copy_from_slice(&state.memory);
        let st = self.store.data_mut();
        st.object = state.object;
        st.vars.clone_from(&state.vars);
        self.version = state.version;
        // Known content: the first delta taken after this carries only what changes later
        // (not all 16 chunks), which keeps a migrated region's first tick cheap.
        self.chunks = ChunkTracker::written(&state.memory, state.version);
        self.effects.clear();
        Ok(())
    }

    /// Brings this instance forward by a delta taken since its current version: copies only
    /// the chunks the delta carries.
    pub fn apply_delta(&mut self, delta: &ScriptDelta) -> Result<(), StateError> {
        if delta.id != self.id {
            return Err(StateError::WrongScript { expected: self.id, found: delta.id });
        }
        if delta.module != self.module.hash {
            return Err(StateError::WrongModule { expected: self.module.hash, found: delta.module });
        }
        if delta.base_version != self.version {
            return Err(StateError::WrongBase { expected: self.version, found: delta.base_version });
        }
        delta.vars.validate()?;
        for c in &delta.chunks {
            check_chunk(c)?;
        }
        self.write_globals(&delta.globals)?;
        let memory = self.memory.data_mut(&mut self.store);
        for c in &delta.chunks {
            let at = c.index as usize * CHUNK_BYTES;
            memory[at..at + CHUNK_BYTES].copy_from_slice(&c.bytes);
        }
        self.store.data_mut().vars.clone_from(&delta.vars);
        let from = self.version;
        self.version = delta.version;
        self.chunks.patched(from, delta.version, &delta.chunks);
        self.effects.clear();
        Ok(())
    }
}

fn val_type_name(t: wasmparser::ValType) -> &'static str {
    match t {
        wasmparser::ValType::I32 => "i32",
        wasmparser::ValType::I64 => "i64",
        wasmparser::ValType::F32 => "f32",
        wasmparser::ValType::F64 => "f64",
        wasmparser::ValType::V128 => "v128",
        wasmparser::ValType::Ref(_) => "reference",
    }
}

/// Turns a failed call into the script's visible error.
fn classify(e: wasmtime::Error) -> ScriptError {
    let (kind, message) = if let Some(trap) = e.downcast_ref::<Trap>() {
        let kind = match trap {
            Trap::OutOfFuel => ErrorKind::OutOfFuel,
            Trap::Interrupt => ErrorKind::TimeBudget,
            Trap::StackOverflow => ErrorKind::StackOverflow,
            _ => ErrorKind::Trap,
        };
        let message = match kind {
            ErrorKind::OutOfFuel => {
                "the event used all its fuel (FUEL_PER_EVENT): a runaway loop?".to_string()
            }
            ErrorKind::TimeBudget => {
                "the event was still running when the tick's time budget ran out".to_string()
            }
            ErrorKind::StackOverflow => {
                "the script recursed past its stack limit (MAX_WASM_STACK)".to_string()
            }
            _ => format!("wasm trap: {trap}"),
        };
        (kind, message)
    } else if let Some(g) = e.downcast_ref::<GrowthRefused>() {
        (ErrorKind::MemoryGrowth, g.to_string())
    } else if let Some(b) = e.downcast_ref::<BadCall>() {
        (ErrorKind::BadCall, b.to_string())
    } else if let Some(h) = e.downcast_ref::<HostFault>() {
        (ErrorKind::Internal, h.to_string())
    } else {
        (ErrorKind::Internal, format!("{e:#}"))
    };
    ScriptError { kind, message }
}
