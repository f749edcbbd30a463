//! Every limit of the store, named in one place.

/// Checkpoints kept per region: the newest, and one to fall back to when it is damaged.
pub const KEPT_CHECKPOINTS: usize = 2;
/// Largest log record payload (one tick's durable changes of one region).
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;
/// Most log records in one append (one group commit).
pub const MAX_APPEND_RECORDS: usize = 65_536;
/// Largest checkpoint: the largest encoded region the world accepts.
pub const MAX_CHECKPOINT_BYTES: usize = world::limits::MAX_ENCODED_BYTES;
/// Most log records replayed after a checkpoint. Checkpoints come every few seconds and cut the
/// log, so reaching this means checkpoints have been failing for a long time.
pub const MAX_REPLAY_RECORDS: usize = 1_000_000;
/// How long a PostgreSQL connection attempt may take.
pub const PG_CONNECT_TIMEOUT_S: u64 = 10;
/// How long SQLite waits for a lock held by another connection before failing.
pub const SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;
