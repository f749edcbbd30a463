//! Every limit of the region core, named in one place.
//!
//! A limit that protects against bad input (sizes, counts) is checked where input enters;
//! a rate or budget is read by the code that spends it.

/// Side of a region in metres.
pub const REGION_SIZE: f32 = 256.0;
/// Terrain samples per side (one sample per metre).
pub const TERRAIN_SAMPLES: usize = 256;
/// Terrain is tracked for deltas in square patches of this many samples per side.
pub const TERRAIN_PATCH: usize = 16;
/// Patches per side.
pub const TERRAIN_PATCHES_PER_SIDE: usize = TERRAIN_SAMPLES / TERRAIN_PATCH;
/// Lowest and highest allowed terrain height in metres.
pub const TERRAIN_MIN_HEIGHT: f32 = -64.0;
pub const TERRAIN_MAX_HEIGHT: f32 = 512.0;
/// Largest radius of a single terrain edit brush, in metres.
pub const MAX_TERRAIN_BRUSH: f32 = 32.0;

/// Tick rate while at least one avatar is in the region.
pub const ACTIVE_TICK_HZ: u32 = 45;
/// Tick rate of a region nobody is in: the land lives on, slowly.
pub const IDLE_TICK_HZ: u32 = 5;
/// Longest simulated step of one tick; a late tick never integrates more than this.
pub const MAX_TICK_DT_MS: u64 = 250;

/// Most entities (objects and avatars) one region holds.
pub const MAX_ENTITIES: usize = 100_000;
/// Most inputs one tick accepts; the host queues (bounded) the rest for later ticks.
pub const MAX_INPUTS_PER_TICK: usize = 4_096;
/// Longest entity name, in bytes (UTF-8).
pub const MAX_NAME_BYTES: usize = 63;
/// Longest floating text, in bytes (UTF-8).
pub const MAX_TEXT_BYTES: usize = 254;
/// Largest object scale on any axis, in metres (and smallest).
pub const MAX_SCALE: f32 = 64.0;
pub const MIN_SCALE: f32 = 0.01;
/// Fastest any entity may move, in m/s; faster requests are clamped.
pub const MAX_SPEED: f32 = 100.0;
/// Deepest linkset: children of children are refused.
pub const MAX_LINK_DEPTH: usize = 1;
/// Most children one linkset root may carry.
pub const MAX_LINKSET_CHILDREN: usize = 255;

/// Deleted entities are remembered (as tombstones) so that deltas can carry the deletion.
/// Beyond this many the oldest are pruned, and deltas from before them need a snapshot.
pub const MAX_TOMBSTONES: usize = 65_536;
/// Generations whose changed entities a region remembers for `delta_since` (older bases scan).
pub const MAX_RECENT_STEPS: usize = 4_096;
/// Most entity ids remembered in those generations (a step over it forgets the oldest ones).
pub const MAX_RECENT_CHANGED_IDS: usize = 262_144;

/// Largest encoded snapshot or delta accepted from outside, compressed or not.
pub const MAX_ENCODED_BYTES: usize = 256 * 1024 * 1024;
/// Payloads larger than this are compressed when encoded.
pub const COMPRESS_ABOVE_BYTES: usize = 4 * 1024;

/// A script's memory: one 64 KiB wasm page, tracked in chunks for deltas.
pub const SCRIPT_MEMORY_BYTES: usize = 65_536;
/// The unit of dirty tracking (a changed byte re-sends its chunk): small enough that a script
/// touching a counter costs a migration round or a log record 1 KiB, not 4.
pub const SCRIPT_CHUNK_BYTES: usize = 1_024;
pub const SCRIPT_CHUNKS: usize = SCRIPT_MEMORY_BYTES / SCRIPT_CHUNK_BYTES;
/// Most scripts one region holds.
pub const MAX_SCRIPTS: usize = 20_000;
/// Most scripts in one object.
pub const MAX_SCRIPTS_PER_OBJECT: usize = 16;
/// Largest serialized control state of a script (globals, timer, listens, a full event queue
/// of 64 events of up to 1 KiB, generator, error).
pub const MAX_SCRIPT_CONTROL_BYTES: usize = 128 * 1024;
/// Most distinct script modules a region holds, and the largest one. Modules are never
/// removed from a region (they are small and shared by content hash), so this bounds them.
pub const MAX_SCRIPT_MODULES: usize = 256;
pub const MAX_SCRIPT_MODULE_BYTES: usize = 1024 * 1024;
/// Most object templates a region holds, and most scripts one template puts in its object.
pub const MAX_TEMPLATES: usize = 256;
pub const MAX_SCRIPT_TEMPLATE_SCRIPTS: usize = 8;
/// Most objects the scripts of a region may create in one tick; further requests are refused,
/// so a flooding script costs the region a bounded amount.
pub const MAX_SCRIPT_CREATIONS_PER_TICK: usize = 64;
/// Most stopped scripts one tick reports to their owners; more in one tick are dropped from
/// the report (they still show in the host's statistics).
pub const MAX_SCRIPT_ERRORS_PER_TICK: usize = 64;
/// Longest error kind and error message in such a report, in bytes (cut at a character boundary).
pub const MAX_SCRIPT_ERROR_KIND_BYTES: usize = 32;
pub const MAX_SCRIPT_ERROR_MESSAGE_BYTES: usize = 256;

/// Largest crossing-protocol record a region keeps (see [`crate::border`]).
pub const MAX_BORDER_STATE_BYTES: usize = 32 * 1024 * 1024;
