//! Limits and defaults of the migration protocol, named in one place.

/// Largest piece of a round's payload in one message.
pub const MAX_CHUNK_BYTES: usize = 256 * 1024;
/// Most chunks in one round (a round is at most `world::limits::MAX_ENCODED_BYTES`).
pub const MAX_CHUNKS_PER_ROUND: u32 = (world::limits::MAX_ENCODED_BYTES / MAX_CHUNK_BYTES) as u32;
/// Largest encoded protocol message (a chunk plus its header).
pub const MAX_MESSAGE_BYTES: usize = MAX_CHUNK_BYTES + 4096;
/// Longest abort reason carried in a message.
pub const MAX_REASON_BYTES: usize = 512;

/// A message not acknowledged within this is sent again (microseconds).
pub const RETRANSMIT_US: u64 = 200_000;
/// Before the freeze: no progress for this long and the side that notices gives up.
pub const STALL_TIMEOUT_US: u64 = 3_000_000;
/// Frozen and the target has not taken the region within this: the source fences it out
/// (a compare-and-swap of its own) and, unless the target's came first, resumes. Bounds how
/// long a failed migration can keep a region dark (plus the directory's answer).
pub const FREEZE_TIMEOUT_US: u64 = 1_000_000;
/// Client inputs held while frozen; beyond this the host refuses inputs until the outcome.
pub const MAX_BUFFERED_INPUTS: usize = 16_384;

/// Defaults of the convergence policy (Xen / QEMU-like).
pub const DEFAULT_FREEZE_BUDGET_US: u64 = 1_000_000 / world::limits::ACTIVE_TICK_HZ as u64;
pub const DEFAULT_MAX_ROUNDS: u32 = 30;
pub const DEFAULT_MAX_BYTES_FACTOR: f64 = 3.0;
/// Assumed link speed until the first large round has been measured (bytes per second).
pub const DEFAULT_ASSUMED_BANDWIDTH: f64 = 100e6;
/// Assumed speed of the two ends at handling region state (raw bytes per second): cutting and
/// encoding a round at the source, decoding, applying and hashing it at the target.
pub const DEFAULT_STATE_RATE: f64 = 100e6;
/// Rounds larger than this (raw) are encoded off the tick thread when the caller offers to
/// (`Policy::copies_by_caller`).
pub const DEFAULT_OFF_TICK_RAW_BYTES: u64 = 256 * 1024;
/// Hard cap of a forced freeze: five ticks.
pub const DEFAULT_FORCED_FREEZE_CAP_US: u64 = 5 * DEFAULT_FREEZE_BUDGET_US;
