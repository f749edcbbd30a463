//! Durable storage of regions: full checkpoints plus a write-ahead log of the changes people
//! make on purpose, behind one [`Store`] trait with two backends: [`SqliteStore`] (one local
//! file, the embedded default) and [`PgStore`] (PostgreSQL, for clusters).
//!
//! The store knows nothing of what a payload means: it keeps bytes with sequence numbers and
//! checksums, and on recovery hands back only what is intact: the valid checkpoints, newest
//! first, and the continuous run of valid log records after them. A bad record ends the run
//! (with a warning); a good record after a bad one is never used.
//!
//! Fencing: a host that loads a region first [`Store::claim`]s it, which raises the region's
//! owner token; every write carries the writer's token, and a write whose token is older than
//! the region's newest is refused ([`StoreError::Fenced`]) inside the same transaction. So a
//! host that was paused while another took its region over cannot write after the takeover.

pub mod limits;
mod pg;
mod sqlite;

pub use crate::pg::PgStore;
pub use crate::sqlite::{SqliteStore, SQLITE_FILE};

use world::RegionId;
use xxhash_rust::xxh3::Xxh3;

use limits::*;

/// The schema this build writes. Each entry of a backend's migration list takes the schema
/// from version `i` to `i + 1`; a database at a newer version than this is refused.
pub const SCHEMA_VERSION: u32 = 2;

/// One durable change of a region (the changes one tick made on purpose), as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub region: RegionId,
    /// Per region, 1, 2, 3, … with no gaps: recovery checks the continuity.
    pub seq: u64,
    /// The tick that made the change.
    pub tick: u64,
    /// The encoded change; opaque to the store.
    pub payload: Vec<u8>,
    /// The writer's owner token for the region (from [`Store::claim`]; 0 if it never claimed).
    /// Not part of the checksum: it fences the write, it is not the change.
    pub owner: u64,
}

impl LogRecord {
    /// The checksum stored beside the record: covers the region, the numbers and the payload.
    pub fn checksum(&self) -> u64 {
        checksum(self.region, self.seq, self.tick, &self.payload)
    }
}

/// A full snapshot of a region and the log sequence it covers (every record with a sequence
/// number up to `covers_seq` is already in it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub region: RegionId,
    pub covers_seq: u64,
    pub tick: u64,
    pub bytes: Vec<u8>,
    /// The writer's owner token for the region, as for [`LogRecord::owner`].
    pub owner: u64,
}

impl Checkpoint {
    pub fn checksum(&self) -> u64 {
        checksum(self.region, self.covers_seq, self.tick, &self.bytes)
    }
}

/// What recovery found for one region: everything intact, nothing after a damaged record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The intact checkpoints, newest first (at most [`KEPT_CHECKPOINTS`]).
    pub checkpoints: Vec<Checkpoint>,
    /// The continuous run of intact log records after the oldest intact checkpoint (or from
    /// sequence 1 when there is none), in order. Replay from a checkpoint uses the records
    /// with `seq > covers_seq`.
    pub log: Vec<LogRecord>,
    /// What was cut and why, one sentence each (also logged as warnings).
    pub damage: Vec<String>,
}

impl Recovered {
    /// The highest sequence number recovery vouches for: the next append continues after it.
    pub fn last_seq(&self) -> u64 {
        let from_log = self.log.last().map_or(0, |r| r.seq);
        let from_checkpoint = self.checkpoints.first().map_or(0, |c| c.covers_seq);
        from_log.max(from_checkpoint)
    }

    /// Whether nothing at all is stored for the region.
    pub fn is_empty(&self) -> bool {
        self.checkpoints.is_empty() && self.log.is_empty() && self.damage.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store's schema is version {found}, newer than this build's {supported}: run a newer terrane \
         against it, or point --data at another directory"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("log record {region} #{seq} is already stored: another writer owns this region's log")]
    Conflict { region: RegionId, seq: u64 },
    #[error(
        "region {region} was claimed by a newer owner (token {newest}) than this writer's ({owner}): \
         another host took it over, so this one must stop acting for it"
    )]
    Fenced { region: RegionId, owner: u64, newest: u64 },
    #[error("{what} of {bytes} bytes is larger than {limit} ({name})")]
    TooLarge { what: &'static str, bytes: usize, limit: usize, name: &'static str },
    #[error("a batch of {0} log records is more than MAX_APPEND_RECORDS")]
    BatchTooLarge(usize),
    #[error("log records for one region must be appended in sequence order: {region} #{seq} after #{after}")]
    OutOfOrder { region: RegionId, seq: u64, after: u64 },
    #[error("SQLite store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("PostgreSQL store: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("cannot create the data directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Durable storage of checkpoints and log records. Every method that writes returns only once
/// what it wrote is durable. A store is used from one writer thread (never a tick thread).
pub trait Store: Send {
    /// Makes the caller the region's writer: raises the region's owner token by one and returns
    /// it. From then on writes carrying an older token are refused. Claim before reading a
    /// region for a takeover: whatever the previous owner committed before the claim is then
    /// in what recovery reads, and nothing it sends later is accepted.
    fn claim(&mut self, region: RegionId) -> Result<u64, StoreError>;

    /// The region's newest owner token (0 when it was never claimed).
    fn owner(&mut self, region: RegionId) -> Result<u64, StoreError>;

    /// Appends log records (any regions) in one transaction: all durable, or none. A record
    /// whose `owner` is older than its region's newest token refuses the whole batch with
    /// [`StoreError::Fenced`] naming that region (the caller drops its records and retries).
    fn append(&mut self, records: &[LogRecord]) -> Result<(), StoreError>;

    /// Stores a checkpoint (refused with [`StoreError::Fenced`] like an append), keeps the newest [`KEPT_CHECKPOINTS`] of its region and deletes
    /// the log records that every kept checkpoint covers, in one transaction.
    fn put_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    /// Regions that have anything stored, in order.
    fn regions(&mut self) -> Result<Vec<RegionId>, StoreError>;

    /// Removes the log records of a region after `seq` (a damaged tail recovery cut).
    fn cut_log(&mut self, region: RegionId, seq: u64) -> Result<(), StoreError>;

    /// Removes everything stored for a region.
    fn forget(&mut self, region: RegionId) -> Result<(), StoreError>;

    /// Stored checkpoints of a region as read, newest first, unchecked.
    fn raw_checkpoints(&mut self, region: RegionId) -> Result<Vec<(Checkpoint, u64)>, StoreError>;

    /// Stored log records of a region with `seq > after`, in order, at most `limit`, unchecked.
    fn raw_log(
        &mut self,
        region: RegionId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(LogRecord, u64)>, StoreError>;

    /// The intact state of a region: valid checkpoints and the valid continuous log after them.
    fn recover(&mut self, region: RegionId) -> Result<Recovered, StoreError> {
        let mut out = Recovered::default();
        for (c, sum) in self.raw_checkpoints(region)? {
            if c.checksum() == sum {
                out.checkpoints.push(c);
            } else {
                out.damage.push(format!(
                    "checkpoint of {region} covering log #{} (tick {}) fails its checksum: skipped",
                    c.covers_seq, c.tick
                ));
            }
        }
        let base = out.checkpoints.last().map_or(0, |c| c.covers_seq);
        let mut expected = base + 1;
        let raw = self.raw_log(region, base, MAX_REPLAY_RECORDS + 1)?;
        let capped = raw.len() > MAX_REPLAY_RECORDS;
        for (r, sum) in raw.into_iter().take(MAX_REPLAY_RECORDS) {
            if r.seq != expected {
                out.damage.push(format!(
                    "log of {region} jumps from #{} to #{}: the records from #{} on are not replayed",
                    expected - 1,
                    r.seq,
                    r.seq
                ));
                break;
            }
            if r.checksum() != sum {
                out.damage.push(format!(
                    "log record {region} #{} (tick {}) fails its checksum: the log is cut before it",
                    r.seq, r.tick
                ));
                break;
            }
            expected += 1;
            out.log.push(r);
        }
        if capped && out.log.len() == MAX_REPLAY_RECORDS {
            out.damage.push(format!(
                "log of {region} has more than MAX_REPLAY_RECORDS records after its checkpoint: cut there"
            ));
        }
        for d in &out.damage {
            tracing::warn!(region = %region, "recovery: {d}");
        }
        Ok(out)
    }
}

fn checksum(region: RegionId, seq: u64, tick: u64, bytes: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(&region.x.to_le_bytes());
    h.update(&region.y.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(&tick.to_le_bytes());
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
    h.digest()
}

/// Checks a batch before it is written: sizes, and per region strictly increasing sequence.
fn check_batch(records: &[LogRecord]) -> Result<(), StoreError> {
    if records.len() > MAX_APPEND_RECORDS {
        return Err(StoreError::BatchTooLarge(records.len()));
    }
    let mut last: std::collections::HashMap<RegionId, u64> = Default::default();
    for r in records {
        if r.payload.len() > MAX_RECORD_BYTES {
            return Err(StoreError::TooLarge {
                what: "log record",
                bytes: r.payload.len(),
                limit: MAX_RECORD_BYTES,
                name: "MAX_RECORD_BYTES",
            });
        }
        if let Some(&after) = last.get(&r.region) {
            if r.seq <= after {
                return Err(StoreError::OutOfOrder { region: r.region, seq: r.seq, after });
            }
        }
        last.insert(r.region, r.seq);
    }
    Ok(())
}

fn check_checkpoint(c: &Checkpoint) -> Result<(), StoreError> {
    if c.bytes.len() > MAX_CHECKPOINT_BYTES {
        return Err(StoreError::TooLarge {
            what: "checkpoint",
            bytes: c.bytes.len(),
            limit: MAX_CHECKPOINT_BYTES,
            name: "MAX_CHECKPOINT_BYTES",
        });
    }
    Ok(())
}

/// The distinct (region, owner) pairs of a batch, in region order: what its transaction checks.
fn owners_of(records: &[LogRecord]) -> Vec<(RegionId, u64)> {
    let mut pairs: Vec<(RegionId, u64)> = records.iter().map(|r| (r.region, r.owner)).collect();
    pairs.sort();
    pairs.dedup();
    pairs
}

/// The fence: a writer's token against the region's newest.
fn check_owner(region: RegionId, owner: u64, newest: u64) -> Result<(), StoreError> {
    if newest > owner {
        return Err(StoreError::Fenced { region, owner, newest });
    }
    Ok(())
}

/// Sequence numbers and checksums are stored as the signed 64-bit integers both databases
/// have; these are bit-for-bit conversions.
fn to_db(v: u64) -> i64 {
    v as i64
}
fn from_db(v: i64) -> u64 {
    v as u64
}
