//! The script engine: one wasmtime engine with the pooling allocator, the `terrane` imports,
//! and the cache of compiled modules (in memory by content hash, and on disk for restarts).
//!
//! CPU limits come in two layers: fuel per event (deterministic, the same on every host) and
//! epoch interruption as the hard stop for a tick's time budget. The epoch only moves when the
//! host calls [`EpochTicker::tick`]; the engine itself reads no clock.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig,
};

use crate::abi::{self, AbiType, Handler, Signature, IMPORT_MODULE};
use crate::cache::{CacheStats, Counters, DiskCache};
use crate::host::{self, HostState};
use crate::limits::{
    DEFAULT_MAX_SCRIPTS, DEFAULT_MODULE_CACHE_BYTES, FUEL_PER_EVENT, MAX_TABLES, MAX_TABLE_ELEMENTS,
    MAX_WASM_STACK, MEMORY_BYTES,
};
use crate::module::{self, LoadError, ModuleInfo};
use crate::state::ModuleHash;

/// How to build a [`ScriptEngine`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most script instances alive at once (slots of the pooling allocator).
    pub max_scripts: u32,
    /// Where compiled modules are kept across restarts; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the cache directory may hold; least recently used modules go beyond it.
    pub cache_max_bytes: u64,
    /// Fuel per event; `FUEL_PER_EVENT` unless a test needs the epoch to be the only stop.
    pub fuel_per_event: u64,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            max_scripts: DEFAULT_MAX_SCRIPTS,
            cache_dir: None,
            cache_max_bytes: DEFAULT_MODULE_CACHE_BYTES,
            fuel_per_event: FUEL_PER_EVENT,
        }
    }
}

/// The engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("building the wasmtime engine failed: {0}")]
    Wasmtime(String),
    #[error("the module cache directory {path} cannot be used: {error}")]
    CacheDir { path: PathBuf, error: std::io::Error },
}

/// A loaded, checked and compiled script module, ready to instantiate.
pub struct ScriptModule {
    pub(crate) hash: ModuleHash,
    pub(crate) info: ModuleInfo,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) fuel_per_event: u64,
    /// The engine's epoch counter, read by scripts to honour a batch's time budget.
    pub(crate) epoch: Arc<AtomicU64>,
    /// Chunk hashes of the module's initial memory image, which every fresh instance shares
    /// (no start function may change it): taken once, at the first instantiation.
    pub(crate) initial_chunks: std::sync::OnceLock<[u64; crate::limits::CHUNKS]>,
    /// Content hash of the module as compiled (after the loader's rewrite): its disk cache key.
    pub(crate) compiled_hash: u128,
}

impl ScriptModule {
    pub fn hash(&self) -> ModuleHash {
        self.hash
    }
    /// Whether the module exports the handler for this event.
    pub fn has_handler(&self, h: Handler) -> bool {
        self.info.has(h)
    }
    /// Number of mutable globals (each migrates with the script).
    pub fn mutable_globals(&self) -> usize {
        self.info.mutable_globals.len()
    }
}

impl std::fmt::Debug for ScriptModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptModule").field("hash", &self.hash).field("info", &self.info).finish()
    }
}

/// Moves the engine's epoch forward. The host calls [`tick`](EpochTicker::tick) from a timer
/// thread (say every millisecond); a batch's time budget is a number of ticks.
#[derive(Clone)]
pub struct EpochTicker {
    engine: Engine,
    epoch: Arc<AtomicU64>,
}

impl std::fmt::Debug for EpochTicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochTicker").field("epoch", &self.now()).finish()
    }
}

impl EpochTicker {
    pub fn tick(&self) {
        // Our counter first: a batch that reads it may then see the deadline a little late,
        // never early.
        self.epoch.fetch_add(1, Ordering::Release);
        self.engine.increment_epoch();
    }

    /// Ticks so far.
    pub fn now(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

/// The time a batch may use: it ends when the epoch reaches `until_epoch`. Scripts not started
/// by then keep their events for the next tick; an event still running is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickBudget {
    pub until_epoch: u64,
}

impl TickBudget {
    /// No time limit (fuel still limits every event).
    pub const UNLIMITED: TickBudget = TickBudget { until_epoch: u64::MAX };
}

/// Compiles, caches and instantiates script modules. One per host process; shared by every
/// region on it (`&ScriptEngine` is `Sync`).
pub struct ScriptEngine {
    engine: Engine,
    linker: Linker<HostState>,
    modules: Mutex<HashMap<ModuleHash, Arc<ScriptModule>>>,
    disk: Option<DiskCache>,
    counters: Counters,
    epoch: Arc<AtomicU64>,
    fuel_per_event: u64,
}

impl std::fmt::Debug for ScriptEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptEngine")
            .field("modules", &self.lock_modules().len())
            .field("disk", &self.disk)
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .finish()
    }
}

impl ScriptEngine {
    pub fn new(cfg: EngineConfig) -> Result<ScriptEngine, EngineError> {
        let wt = |e: wasmtime::Error| EngineError::Wasmtime(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(cfg.max_scripts)
            .total_memories(cfg.max_scripts)
            .total_tables(cfg.max_scripts)
            .max_memories_per_module(1)
            .max_tables_per_module(MAX_TABLES)
            .table_elements(MAX_TABLE_ELEMENTS as usize)
            .max_memory_size(MEMORY_BYTES)
            // Freed slots keep their pages, so instantiating reuses warm memory.
            .linear_memory_keep_resident(MEMORY_BYTES)
            .table_keep_resident(MAX_TABLE_ELEMENTS as usize * 8);
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            // One page, never grown: reserve exactly it. Bounds are then checked explicitly,
            // which keeps thousands of instances from reserving gigabytes of address space.
            .memory_reservation(MEMORY_BYTES as u64)
            .memory_guard_size(0)
            .memory_reservation_for_growth(0)
            // Floats must come out bit-identical on every host a script migrates to.
            .cranelift_nan_canonicalization(true)
            .wasm_relaxed_simd(false)
            .wasm_multi_memory(false)
            .wasm_memory64(false);
        let engine = Engine::new(&config).map_err(wt)?;
        let mut linker = Linker::new(&engine);
        host::link(&mut linker).map_err(wt)?;
        // wasmtime's own hash covers its version and every setting that shapes compiled code.
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = h.finish();
        let disk = match cfg.cache_dir {
            Some(dir) => Some(
                DiskCache::new(dir.clone(), cfg.cache_max_bytes, fingerprint)
                    .map_err(|error| EngineError::CacheDir { path: dir, error })?,
            ),
            None => None,
        };
        Ok(ScriptEngine {
            engine,
            linker,
            modules: Mutex::new(HashMap::new()),
            disk,
            counters: Counters::default(),
            epoch: Arc::new(AtomicU64::new(0)),
            fuel_per_event: cfg.fuel_per_event,
        })
    }

    /// A handle that moves this engine's epoch (for time budgets).
    pub fn ticker(&self) -> EpochTicker {
        EpochTicker { engine: self.engine.clone(), epoch: self.epoch.clone() }
    }

    /// A budget ending `ticks` epoch ticks from now.
    pub fn budget(&self, ticks: u64) -> TickBudget {
        TickBudget { until_epoch: self.epoch.load(Ordering::Acquire).saturating_add(ticks) }
    }

    /// A module already loaded, by content hash.
    pub fn module(&self, hash: ModuleHash) -> Option<Arc<ScriptModule>> {
        self.lock_modules().get(&hash).cloned()
    }

    /// Loads a module from WebAssembly binary or text: checks it against the ABI, compiles it
    /// (or takes it from the memory or disk cache) and keeps it under its content hash.
    pub fn load(&self, source: &[u8]) -> Result<Arc<ScriptModule>, LoadError> {
        if source.len() > crate::limits::MAX_MODULE_BYTES {
            return Err(LoadError::TooLarge(source.len()));
        }
        let wasm = wat::parse_bytes(source).map_err(|e| LoadError::Text(e.to_string()))?;
        let hash = ModuleHash::of(&wasm);
        if let Some(m) = self.module(hash) {
            return Ok(m);
        }
        let (rewritten, info) = module::prepare(&wasm)?;
        let compiled_hash = xxhash_rust::xxh3::xxh3_128(&rewritten);
        let compiled = self.compile_cached(compiled_hash, &rewritten)?;
        check_signatures(&compiled, &info)?;
        let pre = self.linker.instantiate_pre(&compiled).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let m = Arc::new(ScriptModule {
            hash,
            info,
            pre,
            fuel_per_event: self.fuel_per_event,
            epoch: self.epoch.clone(),
            initial_chunks: std::sync::OnceLock::new(),
            compiled_hash,
        });
        // Two threads loading the same module both compile it; the first one stored wins, so
        // every script of one hash shares one compiled module.
        Ok(self.lock_modules().entry(hash).or_insert(m).clone())
    }

    fn lock_modules(&self) -> std::sync::MutexGuard<'_, HashMap<ModuleHash, Arc<ScriptModule>>> {
        // A panic while holding this lock cannot leave the map half-updated (single insert).
        self.modules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The compiled module for `wasm` (whose content hash is `key`): from the disk cache if a
    /// good file is there, else compiled (and written to the cache).
    fn compile_cached(&self, key: u128, wasm: &[u8]) -> Result<Module, LoadError> {
        if let Some(disk) = &self.disk {
            match disk.read(key) {
                // SAFETY: `read` returns only a payload this engine wrote: the file's header
                // names this engine's fingerprint (wasmtime's compatibility hash) and this
                // module's key, and the payload's length and xxh3-128 checksum match what was
                // written. wasmtime also checks its own header against the engine. Anything
                // else was refused above and is compiled anew below.
                Ok(Some(payload)) => match unsafe { Module::deserialize(&self.engine, &payload) } {
                    Ok(m) => {
                        Counters::add(&self.counters.loaded, 1);
                        return Ok(m);
                    }
                    Err(_) => Counters::add(&self.counters.rejected, 1),
                },
                Ok(None) => {}
                Err(_) => Counters::add(&self.counters.rejected, 1),
            }
        }
        let module =
            Module::from_binary(&self.engine, wasm).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        Counters::add(&self.counters.compiled, 1);
        if let Some(disk) = &self.disk {
            // The cache is an optimisation: failing to write it only costs a compile later.
            if let Ok(bytes) = module.serialize() {
                if disk.write(key, &bytes) {
                    Counters::add(&self.counters.written, 1);
                    Counters::add(&self.counters.evicted, disk.trim(&disk.path(key)));
                }
            }
        }
        Ok(module)
    }

    /// Whether this module's compiled code is in the disk cache (for tests and diagnostics).
    pub fn is_cached_on_disk(&self, module: &ScriptModule) -> bool {
        self.disk.as_ref().is_some_and(|d| d.path(module.compiled_hash).exists())
    }

    /// The cache file of a module, if the engine has a cache directory.
    pub fn cache_file(&self, module: &ScriptModule) -> Option<PathBuf> {
        self.disk.as_ref().map(|d| d.path(module.compiled_hash))
    }

    /// What the compiled-module cache did so far: compilations, loads from disk, bad files.
    pub fn cache_stats(&self) -> CacheStats {
        self.counters.stats()
    }
}

fn abi_matches(expected: &[AbiType], found: impl ExactSizeIterator<Item = wasmtime::ValType>) -> bool {
    expected.len() == found.len()
        && expected.iter().zip(found).all(|(e, f)| match e {
            AbiType::I32 => matches!(f, wasmtime::ValType::I32),
            AbiType::I64 => matches!(f, wasmtime::ValType::I64),
            AbiType::F32 => matches!(f, wasmtime::ValType::F32),
        })
}

fn describe(name: &str, ty: &wasmtime::FuncType) -> String {
    let list = |ts: &mut dyn Iterator<Item = wasmtime::ValType>| {
        ts.map(|t| t.to_string()).collect::<Vec<_>>().join(" ")
    };
    format!("{name} (param {}) (result {})", list(&mut ty.params()), list(&mut ty.results()))
}

fn check(sig: &Signature, ty: &wasmtime::FuncType) -> Result<(), (String, String)> {
    if abi_matches(sig.params, ty.params()) && abi_matches(sig.results, ty.results()) {
        Ok(())
    } else {
        Err((sig.to_string(), describe(sig.name, ty)))
    }
}

/// Import and handler signatures, checked here for a clear error rather than the linker's.
fn check_signatures(module: &Module, info: &ModuleInfo) -> Result<(), LoadError> {
    for import in module.imports() {
        let (ExternType::Func(ty), Some(sig)) = (import.ty(), abi::import(import.name())) else {
            // The loader already refused anything else.
            return Err(LoadError::UnknownImport {
                module: IMPORT_MODULE.into(),
                name: import.name().into(),
            });
        };
        check(sig, &ty).map_err(|(expected, found)| LoadError::ImportSignature {
            name: import.name().into(),
            expected,
            found,
        })?;
    }
    for h in Handler::ALL {
        if !info.has(h) {
            continue;
        }
        if let Some(ExternType::Func(ty)) = module.get_export(h.name()) {
            check(&h.signature(), &ty).map_err(|(expected, found)| LoadError::HandlerSignature {
                name: h.name().into(),
                expected,
                found,
            })?;
        }
    }
    Ok(())
}
