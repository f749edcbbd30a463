//! Every limit of the script engine, named in one place.
//!
//! Limits that protect the host from a module (sizes, counts) are checked when the module is
//! loaded; limits on what a running script may do are checked at the host call that spends them.

/// Bytes in a script's linear memory: exactly one wasm page, Second Life's 64 KiB per script.
pub const MEMORY_BYTES: usize = 65_536;
/// Memory is tracked for migration deltas in chunks of this many bytes.
pub const CHUNK_BYTES: usize = 1_024;
/// Chunks in a script's memory.
pub const CHUNKS: usize = MEMORY_BYTES / CHUNK_BYTES;

/// Fuel (roughly: wasm instructions) one event handler may burn before it is stopped.
/// About a millisecond of straight-line code: a handler that needs more is a runaway.
pub const FUEL_PER_EVENT: u64 = 2_000_000;
/// Native stack a script may use. Small, so deep recursion fails fast and cheaply, and far
/// below the 2 MiB of the threads that run scripts.
pub const MAX_WASM_STACK: usize = 256 * 1024;

/// Largest module accepted, in bytes of WebAssembly binary.
pub const MAX_MODULE_BYTES: usize = 1024 * 1024;
/// Most tables a module may declare (one funcref table is what compilers emit for
/// `call_indirect`).
pub const MAX_TABLES: u32 = 1;
/// Most elements a table may hold (initial and maximum).
pub const MAX_TABLE_ELEMENTS: u64 = 4_096;
/// Most mutable globals a module may define; each one is exported and migrated.
pub const MAX_MUTABLE_GLOBALS: usize = 256;

/// Longest chat line or direct message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1_024;
/// Longest floating text, in bytes (UTF-8); the region's own limit.
pub const MAX_TEXT_BYTES: usize = world::limits::MAX_TEXT_BYTES;
/// Longest object template name, in bytes (UTF-8); the region's name limit.
pub const MAX_TEMPLATE_NAME_BYTES: usize = world::limits::MAX_NAME_BYTES;
/// Most channels one script listens on at once.
pub const MAX_LISTENS_PER_SCRIPT: usize = 64;
/// Most events waiting for one script. As in Second Life, when the queue is full the oldest
/// events are kept and new ones are dropped (and counted).
pub const MAX_QUEUED_EVENTS: usize = 64;
/// Most events one script runs in one tick; the rest wait for the next tick.
pub const MAX_EVENTS_PER_TICK: usize = 64;
/// Most effects (chat, moves, messages, creations…) one event may produce. Further calls are
/// dropped and counted, so a flooding handler costs the region a bounded amount.
pub const MAX_EFFECTS_PER_EVENT: usize = 64;
/// Shortest timer interval; shorter requests are raised to it.
pub const MIN_TIMER_INTERVAL_MS: u64 = 50;
/// Longest timer interval (about 24 days); longer requests are lowered to it.
pub const MAX_TIMER_INTERVAL_MS: u64 = i32::MAX as u64;

/// Range of `say`, in metres.
pub const SAY_RANGE: f32 = 20.0;
/// Range of `shout`, in metres.
pub const SHOUT_RANGE: f32 = 100.0;
/// Farthest a sensor sees, in metres.
pub const MAX_SENSOR_RANGE: f32 = 96.0;
/// Most entities one sensor query returns (the nearest ones).
pub const MAX_SENSOR_RESULTS: usize = 16;

/// Default number of script instances one engine can hold at once (pooling allocator slots).
pub const DEFAULT_MAX_SCRIPTS: u32 = 10_000;

/// Largest compiled module the disk cache stores or reads, in bytes (a 1 MiB module compiles
/// to a few MiB of native code; anything far larger is not a file this engine wrote).
pub const MAX_CACHED_MODULE_BYTES: usize = 64 * 1024 * 1024;
/// Default budget of the compiled-module cache directory, in bytes; beyond it the least
/// recently used modules are removed.
pub const DEFAULT_MODULE_CACHE_BYTES: u64 = 256 * 1024 * 1024;
