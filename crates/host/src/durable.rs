//! Durability on a host: the write-ahead log of changes people make on purpose, periodic
//! checkpoints, and recovery of a region from its store when it is loaded.
//!
//! The tick thread only hands things over: after a tick it queues that tick's durable record
//! (and, when one is due, what changed since the last checkpoint) to one writer thread, which owns
//! the store. The writer commits whatever has queued up in one transaction (group commit), then
//! acknowledges the inputs it covered. A person's change is acknowledged only after it is durable.
//! Checkpoints are built (delta applied to a kept copy, snapshot encoded and compressed) on a
//! third thread at a lower CPU priority, so neither the ticks nor the group commits wait for them;
//! the writer stamps each with the log position it covers before handing it over, and stores it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use store::{Checkpoint, LogRecord, Recovered, Store, StoreError};
use world::{Delta, EntityId, Input, InputError, Region, RegionId, TickOutput};

use crate::{Host, HostError, RegionSlot};

/// How often each region writes a full checkpoint, by default.
pub const DEFAULT_CHECKPOINT_PERIOD: Duration = Duration::from_secs(30);
/// Most jobs (tick records, checkpoints) waiting for the writer; past it the tick thread does
/// not wait: the inputs of that tick are answered with an error instead of an acknowledgement.
pub const MAX_WRITER_QUEUE: usize = 4096;
/// Most jobs one group commit takes from the queue.
pub const MAX_GROUP_COMMIT_JOBS: usize = 1024;
/// Most checkpoints handed to the builder thread and not yet stored; past it a checkpoint is
/// skipped (the region's next one copies the whole region).
pub const MAX_CHECKPOINT_BUILDS: usize = 16;
/// Most durable inputs waiting for their acknowledgement in one region.
pub const MAX_PENDING_ACKS: usize = crate::MAX_QUEUED_INPUTS;

#[derive(Clone, Debug)]
pub struct DurableConfig {
    pub checkpoint_period: Duration,
    /// The name other hosts know this store by when they can reach it too (a PostgreSQL
    /// server, without credentials); `None` for a store only this host reads (the embedded
    /// one). Reported to the orchestrator, which restarts a dead host's regions from the store
    /// on a host that shares it.
    pub shared_as: Option<String>,
}

impl Default for DurableConfig {
    fn default() -> Self {
        DurableConfig { checkpoint_period: DEFAULT_CHECKPOINT_PERIOD, shared_as: None }
    }
}

/// What a recovery from the store rebuilt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebuilt {
    /// The log position the checkpoint it started from covers (0: no checkpoint decoded).
    pub checkpoint_seq: u64,
    /// Log records replayed on top of it.
    pub replayed: u64,
    /// The region's tick after the rebuild.
    pub tick: u64,
}

/// What a durable input's sender learns once the change is durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acked {
    pub tick: u64,
    /// The log record that holds the change (none when the input changed nothing).
    pub seq: Option<u64>,
    /// The id of the object a create or rez made.
    pub created: Option<EntityId>,
    /// Committed to the store (false on a host without one: applied only).
    pub durable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("refused by the region: {0}")]
    Refused(InputError),
    #[error("not stored (the change may be lost if this host dies): {0}")]
    Store(String),
    #[error("the region left this host before the change was applied: send it again")]
    Moved,
}

pub type AckFn = Box<dyn FnOnce(Result<Acked, AckError>) + Send>;

/// Opens the store on the writer thread (a PostgreSQL client must not be made inside tokio).
pub type StoreOpener = Box<dyn FnOnce() -> Result<Box<dyn Store>, StoreError> + Send>;

/// One logged tick: the record the region made, and the hash of the rows it names.
#[derive(Serialize, Deserialize)]
struct LogEntry {
    rows_hash: u64,
    change: Delta,
}

struct Waiting {
    ack: AckFn,
    tag: Option<u64>,
}

/// A region's durable inputs waiting for their tick and their commit. Positions count every
/// input ever queued for the region, so a tick knows which of its inputs have an ack waiting.
#[derive(Default)]
pub(crate) struct AckQueue {
    /// Inputs taken by ticks so far.
    consumed: u64,
    waiting: VecDeque<(u64, Waiting)>,
}

impl AckQueue {
    /// A tick took `n` inputs: returns the position of the first.
    pub(crate) fn take(&mut self, n: usize) -> u64 {
        let first = self.consumed;
        self.consumed += n as u64;
        first
    }
    /// The region is leaving with `queued` (its input queue, in order) not yet applied: every
    /// durable input among them is dropped and answered [`AckError::Moved`] ("send it again"),
    /// so that it is applied nowhere; the rest is returned, to go with the region.
    pub(crate) fn fail_all(&mut self, queued: Vec<Input>) -> Vec<Input> {
        let mut durable = std::collections::HashSet::new();
        for (pos, w) in self.waiting.drain(..) {
            // Below `consumed`: taken by a tick that has not settled yet (and, the region being
            // frozen or gone, never will), not in `queued`.
            if let Some(i) = pos.checked_sub(self.consumed) {
                durable.insert(i);
            }
            (w.ack)(Err(AckError::Moved));
        }
        queued
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !durable.contains(&(*i as u64)))
            .map(|(_, input)| input)
            .collect()
    }
}

/// Runs on the writer thread once a tick's record is committed (its crossing messages).
pub(crate) type AfterCommit = Box<dyn FnOnce() + Send>;

enum Job {
    Append {
        region: RegionId,
        tick: u64,
        entry: Option<Vec<u8>>,
        acks: Vec<(Waiting, Option<EntityId>)>,
        then: Option<AfterCommit>,
    },
    /// A whole copy of a region to checkpoint (the writer keeps it for the next deltas).
    Checkpoint {
        region: Box<Region>,
    },
    /// What changed in a region since the writer's copy of it: applied, then checkpointed.
    CheckpointDelta {
        delta: Box<Delta>,
    },
    Recover {
        region: RegionId,
        reply: SyncSender<Result<Recovered, String>>,
    },
    Flush {
        reply: SyncSender<()>,
    },
    /// Answered as soon as the writer gets to it: every append queued before is durable.
    FlushLog {
        reply: SyncSender<()>,
    },
    /// Drop the cached log position of a region that left: the load that `ticket` claimed.
    Forget {
        region: RegionId,
        ticket: u64,
    },
    /// The builder finished the `n`th checkpoint handed to it: store it (if it built one).
    Built {
        n: u64,
        checkpoint: Option<Checkpoint>,
    },
    /// A region was loaded here: become its writer in the store (if a recovery did not already).
    /// `ticket` names this load (see [`Durability::next_ticket`]).
    Claim {
        region: RegionId,
        ticket: u64,
    },
}

/// Work for the checkpoint builder, in the order the writer stamped it.
enum Build {
    /// A whole copy of a region: kept for the next deltas, and encoded.
    Whole { region: Box<Region>, stamp: Stamp },
    /// What changed since the builder's copy: applied to it, then the copy is encoded.
    Delta { delta: Box<Delta>, stamp: Stamp },
    /// The region left or was fenced: drop its copy.
    Forget { region: RegionId },
}

/// What the writer decided for a checkpoint when its turn came in the queue: the log position
/// it covers (every record of the ticks up to the one it was copied at, none after), the owner
/// token it is written with, and its number in the builder's order. A region this host does not
/// own in the store is not written (`write` false), but the builder's copy still follows it.
struct Stamp {
    n: u64,
    covers_seq: u64,
    owner: u64,
    write: bool,
}

/// What the host does with a region whose writes the store refused (another host claimed it).
pub(crate) type FencedFn = Box<dyn Fn(RegionId) + Send + Sync>;

/// Counters for benchmarks and the API.
#[derive(Default)]
pub struct DurableStats {
    pub records: AtomicU64,
    pub commits: AtomicU64,
    pub checkpoints: AtomicU64,
    pub checkpoint_us_total: AtomicU64,
    /// Time the tick threads spent copying regions for checkpoints, and the longest copy.
    pub checkpoint_copy_us_total: AtomicU64,
    pub checkpoint_copy_us_max: AtomicU64,
    /// Checkpoints built from a delta on the writer's copy (the rest copied the whole region).
    pub checkpoint_deltas: AtomicU64,
    /// Time the builder spent encoding checkpoints (off the tick and writer threads).
    pub checkpoint_encode_us_total: AtomicU64,
    /// Checkpoints skipped because the builder was behind (MAX_CHECKPOINT_BUILDS).
    pub checkpoint_builds_skipped: AtomicU64,
    pub queue_full: AtomicU64,
}

/// The durability of one host: the writer thread and what the tick threads need to reach it.
pub struct Durability {
    /// The only strong handle on the writer's queue (the builder holds a weak one), so that
    /// dropping the Durability ends the writer, which ends the builder.
    tx: Arc<SyncSender<Job>>,
    config: DurableConfig,
    last_checkpoint: parking_lot::Mutex<HashMap<RegionId, Instant>>,
    /// The generation of each region's copy on the writer (what the next checkpoint's delta
    /// starts from), and the regions whose copy the writer lost (the next one is whole).
    replica_gen: parking_lot::Mutex<HashMap<RegionId, u64>>,
    needs_whole: Arc<parking_lot::Mutex<std::collections::HashSet<RegionId>>>,
    /// Regions loaded here from what the store held.
    recovered: parking_lot::Mutex<Vec<RegionId>>,
    /// Installed by the host: unloads a region the store fenced.
    on_fenced: Arc<std::sync::OnceLock<FencedFn>>,
    /// The last ticket handed out (see [`Durability::next_ticket`]).
    tickets: AtomicU64,
    pub stats: Arc<DurableStats>,
}

impl Durability {
    /// Starts the writer thread and opens the store on it.
    pub fn start(open: StoreOpener, config: DurableConfig) -> Result<Arc<Durability>, StoreError> {
        let (tx, rx) = sync_channel(MAX_WRITER_QUEUE);
        let tx = Arc::new(tx);
        let (builds_tx, builds_rx) = sync_channel(MAX_CHECKPOINT_BUILDS);
        let (ready_tx, ready_rx) = sync_channel(1);
        let stats = Arc::new(DurableStats::default());
        let writer_stats = stats.clone();
        let needs_whole: Arc<parking_lot::Mutex<std::collections::HashSet<RegionId>>> = Arc::default();
        let writer_needs_whole = needs_whole.clone();
        let on_fenced: Arc<std::sync::OnceLock<FencedFn>> = Arc::default();
        let writer_on_fenced = on_fenced.clone();
        let builder = Builder {
            replicas: HashMap::new(),
            done: Arc::downgrade(&tx),
            needs_whole: needs_whole.clone(),
            stats: stats.clone(),
        };
        std::thread::Builder::new()
            .name("checkpoints".into())
            .spawn(move || {
                let _ = crate::lower_priority();
                builder.run(builds_rx)
            })
            .map_err(|source| StoreError::Io { path: "checkpoint builder thread".into(), source })?;
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || match open() {
                Ok(store) => {
                    let _ = ready_tx.send(Ok(()));
                    Writer {
                        store,
                        last_seq: HashMap::new(),
                        stats: writer_stats,
                        builds: builds_tx,
                        builds_sent: 0,
                        builds_done: 0,
                        flushes: Vec::new(),
                        needs_whole: writer_needs_whole,
                        owners: HashMap::new(),
                        loads: HashMap::new(),
                        fenced: Default::default(),
                        on_fenced: writer_on_fenced,
                    }
                    .run(rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|source| StoreError::Io { path: "store writer thread".into(), source })?;
        ready_rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Io {
                path: "store writer thread".into(),
                source: std::io::Error::other("the writer thread ended while opening the store"),
            })
        })?;
        Ok(Arc::new(Durability {
            tx,
            config,
            last_checkpoint: Default::default(),
            replica_gen: Default::default(),
            needs_whole,
            recovered: Default::default(),
            on_fenced,
            tickets: AtomicU64::new(0),
            stats,
        }))
    }

    /// Waits until every log record queued before is durable, not for checkpoints still being
    /// built (a migration's freeze waits on this: the target's log continues from these
    /// records, and a checkpoint is never needed for that).
    pub fn flush_log(&self) {
        let (reply, done) = sync_channel(1);
        if self.tx.send(Job::FlushLog { reply }).is_ok() {
            let _ = done.recv();
        }
    }

    /// Waits until everything queued before is durable, checkpoints handed to the builder
    /// included.
    pub fn flush(&self) {
        let (reply, done) = sync_channel(1);
        if self.tx.send(Job::Flush { reply }).is_ok() {
            let _ = done.recv();
        }
    }

    /// A number for one load of a region, handed back with its claim and its release: hosts
    /// of one process may share a Durability (`terrane run` does), and then a migration's
    /// target claims the region before the source has released it. The release of the older
    /// load must not undo the newer claim.
    pub(crate) fn next_ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The region is loaded here (the load `ticket`): this host becomes its writer in the
    /// store, fencing whoever wrote for it before. Queued ahead of the region's first tick, so
    /// every record of this load carries the new token.
    pub(crate) fn claim(&self, region: RegionId, ticket: u64) {
        let _ = self.tx.send(Job::Claim { region, ticket });
    }

    /// What the store holds for a region, intact (the damaged tail is cut in the store too).
    /// Claims the region first (see [`store::Store::claim`]): what a previous owner commits
    /// after this read is refused, so the rebuild misses nothing it acknowledged.
    pub fn recovered(&self, region: RegionId) -> Result<Recovered, String> {
        let (reply, answer) = sync_channel(1);
        self.tx
            .send(Job::Recover { region, reply })
            .map_err(|_| "the store writer has stopped".to_string())?;
        answer.recv().map_err(|_| "the store writer has stopped".to_string())?
    }

    /// Rebuilds a region from its store: the newest checkpoint that decodes, then the log
    /// after it, each record checked; `None` when nothing is stored for it.
    pub fn recover(&self, id: RegionId, fresh: impl FnOnce() -> Region) -> Result<Option<Region>, String> {
        Ok(self.recover_with_info(id, fresh)?.map(|(r, _)| r))
    }

    /// Like [`Durability::recover`], and says what the rebuild started from.
    pub fn recover_with_info(
        &self,
        id: RegionId,
        fresh: impl FnOnce() -> Region,
    ) -> Result<Option<(Region, Rebuilt)>, String> {
        let rec = self.recovered(id)?;
        if rec.checkpoints.is_empty() && rec.log.is_empty() {
            return Ok(None);
        }
        Ok(Some(rebuild(id, &rec, fresh)))
    }

    /// The name other hosts reach this store by, when they can (see [`DurableConfig`]).
    pub fn shared_as(&self) -> Option<&str> {
        self.config.shared_as.as_deref()
    }

    /// Called on the tick thread right after a tick: queues the tick's record and the acks of
    /// its inputs, and a checkpoint when one is due. Never blocks. `then` (the tick's crossing
    /// messages) runs once the record is committed, or never: messages whose cause is not
    /// durable must not leave, the crossing protocol resends them from a later tick.
    pub(crate) fn after_tick(
        &self,
        slot: &RegionSlot,
        region: &Region,
        out: &TickOutput,
        first_pos: u64,
        n_inputs: usize,
        then: Option<AfterCommit>,
    ) {
        let id = region.id();
        let acks = settle(slot, out, first_pos, n_inputs);
        if out.durable.is_some() || !acks.is_empty() || then.is_some() {
            let entry = out.durable.as_ref().map(|change| {
                let e = LogEntry { rows_hash: region.durable_rows_hash(change), change: change.clone() };
                postcard::to_stdvec(&e).expect("serializing to memory cannot fail")
            });
            let job = Job::Append { region: id, tick: out.tick, entry, acks, then };
            if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) = self.tx.try_send(job) {
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                if let Job::Append { acks, then, .. } = job {
                    if then.is_some() {
                        tracing::warn!(region = %id, tick = out.tick, "crossing messages held back: the store writer is behind");
                    }
                    for (w, _) in acks {
                        (w.ack)(Err(AckError::Store("the store writer is behind (MAX_WRITER_QUEUE)".into())));
                    }
                }
            }
        }
        let now = Instant::now();
        let due = {
            let mut last = self.last_checkpoint.lock();
            let t = last.entry(id).or_insert(now - self.config.checkpoint_period);
            now.duration_since(*t) >= self.config.checkpoint_period
        };
        if due {
            // What changed since the builder's copy (or a whole copy the first time), taken now
            // at the tick boundary; applying and encoding happen on the builder, writing on the
            // writer.
            let copying = Instant::now();
            let base = self.replica_gen.lock().get(&id).copied();
            let whole = self.needs_whole.lock().remove(&id);
            let job = match base.filter(|_| !whole).and_then(|g| region.delta_since(g).ok()) {
                Some(delta) => Job::CheckpointDelta { delta: Box::new(delta) },
                None => Job::Checkpoint { region: Box::new(region.checkpoint_copy()) },
            };
            let us = copying.elapsed().as_micros() as u64;
            self.stats.checkpoint_copy_us_total.fetch_add(us, Ordering::Relaxed);
            self.stats.checkpoint_copy_us_max.fetch_max(us, Ordering::Relaxed);
            if self.tx.try_send(job).is_ok() {
                self.last_checkpoint.lock().insert(id, now);
                self.replica_gen.lock().insert(id, region.generation());
            } else if whole {
                self.needs_whole.lock().insert(id);
            }
        }
    }

    /// Queues the record of an amendment made between ticks (see `Region::amend`), under the
    /// region's lock, so the log keeps the region's order of generations. `then` (the crossing
    /// messages it freed) runs once it is committed, or never.
    pub(crate) fn log_amendment(&self, region: &Region, out: &TickOutput, then: Option<AfterCommit>) {
        let id = region.id();
        let entry = out.durable.as_ref().map(|change| {
            let e = LogEntry { rows_hash: region.durable_rows_hash(change), change: change.clone() };
            postcard::to_stdvec(&e).expect("serializing to memory cannot fail")
        });
        if entry.is_none() && then.is_none() {
            return;
        }
        let job = Job::Append { region: id, tick: out.tick, entry, acks: Vec::new(), then };
        if self.tx.try_send(job).is_err() {
            self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(region = %id, tick = out.tick, "crossing messages held back: the store writer is behind");
        }
    }

    /// Regions this host loaded from what the store held (rather than new).
    pub fn recovered_regions(&self) -> Vec<RegionId> {
        self.recovered.lock().clone()
    }

    /// The region left this host: if it comes back, its first tick here writes a checkpoint,
    /// and its log continues from what the store holds then (another host may have appended
    /// meanwhile), not from what this host last wrote.
    /// `ticket` is the one its load claimed with: a newer load's claim stands.
    pub(crate) fn checkpoint_soon(&self, id: RegionId, ticket: u64) {
        self.last_checkpoint.lock().remove(&id);
        self.replica_gen.lock().remove(&id);
        let _ = self.tx.send(Job::Forget { region: id, ticket });
    }
}

/// The checkpoint-plus-log rebuild: newest checkpoint that decodes, then every record after it
/// that decodes, replays and matches its hash; the first that does not ends the replay.
fn rebuild(id: RegionId, rec: &Recovered, fresh: impl FnOnce() -> Region) -> (Region, Rebuilt) {
    let mut base: Option<(Region, u64)> = None;
    for c in &rec.checkpoints {
        match Region::from_snapshot(&c.bytes) {
            Ok(r) if r.id() == id => {
                base = Some((r, c.covers_seq));
                break;
            }
            Ok(r) => {
                tracing::warn!(region = %id, other = %r.id(), "recovery: checkpoint holds another region; skipped")
            }
            Err(e) => {
                tracing::warn!(region = %id, covers = c.covers_seq, "recovery: checkpoint does not decode ({e}); trying the previous one")
            }
        }
    }
    let (mut region, covers) = match base {
        Some(b) => b,
        None => (fresh(), 0),
    };
    let mut replayed = 0u64;
    let mut expected = covers + 1;
    for r in rec.log.iter().filter(|r| r.seq > covers) {
        if r.seq != expected {
            tracing::warn!(region = %id, seq = r.seq, expected, "recovery: the log does not continue the checkpoint; replay stops");
            break;
        }
        let entry: LogEntry = match postcard::from_bytes(&r.payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(region = %id, seq = r.seq, "recovery: log record does not decode ({e}); replay stops");
                break;
            }
        };
        if let Err(e) = region.replay_durable(&entry.change) {
            tracing::warn!(region = %id, seq = r.seq, "recovery: log record does not apply ({e}); replay stops");
            break;
        }
        let hash = region.durable_rows_hash(&entry.change);
        if hash != entry.rows_hash {
            // Applied but not as it was: a bug or damage the checksum missed. Said loudly; the
            // region keeps what it has (the rows as replayed).
            tracing::error!(region = %id, seq = r.seq, "recovery: replayed rows differ from the logged hash");
            break;
        }
        replayed += 1;
        expected += 1;
    }
    tracing::info!(region = %id, checkpoint_covers = covers, replayed, tick = region.tick_number(), "region recovered");
    let info = Rebuilt { checkpoint_seq: covers, replayed, tick: region.tick_number() };
    (region, info)
}

/// A record to append, the acks it answers, its tick, and what runs once it is committed.
type Appended = (LogRecord, Vec<(Waiting, Option<EntityId>)>, u64, Option<AfterCommit>);
/// Acks of a tick that logged nothing (they wait for what was queued before them).
type AcksOnly = (RegionId, Vec<(Waiting, Option<EntityId>)>, u64, Option<AfterCommit>);

struct Writer {
    store: Box<dyn Store>,
    /// The last sequence number written per region (read from the store on first use).
    last_seq: HashMap<RegionId, u64>,
    stats: Arc<DurableStats>,
    /// Checkpoints stamped and handed to the builder; `builds_sent` counts them, `builds_done`
    /// counts those it answered (in the same order).
    builds: SyncSender<Build>,
    builds_sent: u64,
    builds_done: u64,
    /// Flushes waiting for the builder to answer up to a number.
    flushes: Vec<(u64, SyncSender<()>)>,
    needs_whole: Arc<parking_lot::Mutex<std::collections::HashSet<RegionId>>>,
    /// This writer's owner token per region it claimed (fencing; see `store::Store::claim`).
    owners: HashMap<RegionId, u64>,
    /// The ticket of each region's latest load (claim): a release naming another is stale.
    loads: HashMap<RegionId, u64>,
    /// Regions whose writes the store refused: nothing more is written or acknowledged for
    /// them until they are claimed again.
    fenced: std::collections::HashSet<RegionId>,
    on_fenced: Arc<std::sync::OnceLock<FencedFn>>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP_COMMIT_JOBS {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let mut appends: Vec<Appended> = Vec::new();
            let mut acks_only: Vec<AcksOnly> = Vec::new();
            for job in jobs {
                match job {
                    Job::Append { region, tick, acks, .. } if !self.owners.contains_key(&region) => {
                        // Fenced, or never claimed here: not this host's to write or to ack.
                        tracing::debug!(%region, tick, "tick record of a region this host does not own in the store: refused");
                        fail_moved(acks);
                    }
                    Job::Append { region, tick, entry, acks, then } => match entry {
                        Some(payload) => match self.seq_after(region) {
                            Ok(seq) => {
                                let owner = self.owners.get(&region).copied().unwrap_or(0);
                                let record = LogRecord { region, seq, tick, payload, owner };
                                appends.push((record, acks, tick, then))
                            }
                            Err(e) => {
                                tracing::warn!(%region, tick, "tick record not logged ({e}); its crossing messages are held back");
                                fail(acks, &e)
                            }
                        },
                        None => acks_only.push((region, acks, tick, then)),
                    },
                    other => {
                        self.commit(std::mem::take(&mut appends), std::mem::take(&mut acks_only));
                        self.handle(other);
                    }
                }
            }
            self.commit(appends, acks_only);
        }
    }

    /// The next sequence number of a region's log, reserved.
    fn seq_after(&mut self, region: RegionId) -> Result<u64, String> {
        let last = match self.last_seq.get(&region) {
            Some(&s) => s,
            None => self.load_last(region)?,
        };
        self.last_seq.insert(region, last + 1);
        Ok(last + 1)
    }

    fn load_last(&mut self, region: RegionId) -> Result<u64, String> {
        let rec = self.store.recover(region).map_err(|e| e.to_string())?;
        Ok(rec.last_seq().max(self.cut_damage(region, &rec)))
    }

    /// Removes what recovery found unusable after the intact run, so new records continue it.
    fn cut_damage(&mut self, region: RegionId, rec: &Recovered) -> u64 {
        let last = rec.last_seq();
        if !rec.damage.is_empty() {
            if let Err(e) = self.store.cut_log(region, last) {
                tracing::warn!(%region, "could not cut the damaged log tail: {e}");
            }
        }
        last
    }

    /// The store refused a write for `region`: another host claimed it. Nothing more is written
    /// or acknowledged for it here, and the host stops running it.
    fn fence(&mut self, region: RegionId, e: &StoreError) {
        tracing::error!(%region, "FENCED: {e}; this host stops running the region and refuses its unacknowledged changes");
        self.owners.remove(&region);
        self.fenced.insert(region);
        self.last_seq.remove(&region);
        let _ = self.builds.try_send(Build::Forget { region });
        if let Some(f) = self.on_fenced.get() {
            f(region);
        }
    }

    fn commit(&mut self, mut appends: Vec<Appended>, acks_only: Vec<AcksOnly>) {
        // A fenced region's records leave the batch (their acks fail), the rest is tried again.
        let mut result = Ok(());
        while !appends.is_empty() {
            let records: Vec<LogRecord> = appends.iter().map(|(r, ..)| r.clone()).collect();
            result = self.store.append(&records);
            let Err(e @ StoreError::Fenced { region, .. }) = &result else { break };
            let region = *region;
            self.fence(region, e);
            let (refused, rest): (Vec<Appended>, Vec<Appended>) =
                appends.into_iter().partition(|(r, ..)| r.region == region);
            for (_, acks, _, _) in refused {
                fail_moved(acks);
            }
            appends = rest;
            result = Ok(());
        }
        if !appends.is_empty() {
            let records: Vec<LogRecord> = appends.iter().map(|(r, ..)| r.clone()).collect();
            match result {
                Ok(()) => {
                    self.stats.records.fetch_add(records.len() as u64, Ordering::Relaxed);
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    for (r, acks, tick, then) in appends {
                        for (w, created) in acks {
                            (w.ack)(Ok(Acked { tick, seq: Some(r.seq), created, durable: true }));
                        }
                        if let Some(then) = then {
                            then();
                        }
                    }
                }
                Err(e) => {
                    tracing::error!("log append failed: {e}");
                    // Sequence numbers handed out for this batch are not in the store: read
                    // the truth again before the next append of these regions. Crossing
                    // messages of these ticks are dropped: their cause is not durable.
                    for (r, acks, _, _) in appends {
                        self.last_seq.remove(&r.region);
                        fail(acks, &e.to_string());
                    }
                }
            }
        }
        // Inputs that changed nothing are acknowledged after everything before them is durable.
        for (region, acks, tick, then) in acks_only {
            if self.fenced.contains(&region) {
                fail_moved(acks);
                continue;
            }
            for (w, created) in acks {
                (w.ack)(Ok(Acked { tick, seq: None, created, durable: true }));
            }
            if let Some(then) = then {
                then();
            }
        }
    }

    fn handle(&mut self, job: Job) {
        match job {
            Job::Append { .. } => unreachable!("appends are batched by run"),
            Job::FlushLog { reply } => {
                let _ = reply.send(());
            }
            Job::Flush { reply } => {
                if self.builds_done >= self.builds_sent {
                    let _ = reply.send(());
                } else {
                    self.flushes.push((self.builds_sent, reply));
                }
            }
            Job::Built { n, checkpoint } => {
                self.builds_done = self.builds_done.max(n);
                if let Some(c) = checkpoint {
                    self.store_checkpoint(&c);
                }
                let done = self.builds_done;
                for (_, reply) in self.flushes.extract_if(.., |(upto, _)| *upto <= done) {
                    let _ = reply.send(());
                }
            }
            Job::Forget { region, ticket } => {
                if self.loads.get(&region).is_some_and(|&t| t != ticket) {
                    // Loaded again since (by a host sharing this writer): that load owns it.
                    tracing::debug!(%region, ticket, "release of an earlier load: the newer claim stands");
                    return;
                }
                self.loads.remove(&region);
                self.last_seq.remove(&region);
                let _ = self.builds.try_send(Build::Forget { region });
                self.owners.remove(&region);
                self.fenced.remove(&region);
            }
            Job::Claim { region, ticket } => {
                self.loads.insert(region, ticket);
                if !self.owners.contains_key(&region) {
                    if let Err(e) = self.claim(region) {
                        tracing::error!(%region, "could not claim the region in the store ({e}): its changes will be refused");
                    }
                }
            }
            Job::CheckpointDelta { delta } => {
                let id = delta.region;
                let stamp = self.stamp(id);
                self.hand_over(id, Build::Delta { delta, stamp });
            }
            Job::Recover { region, reply } => {
                let result = match self.claim(region) {
                    Ok(_) => self.store.recover(region).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("claiming {region} in the store: {e}")),
                };
                if let Ok(rec) = &result {
                    let last = self.cut_damage(region, rec);
                    self.last_seq.insert(region, last);
                }
                let _ = reply.send(result);
            }
            Job::Checkpoint { region } => {
                let id = region.id();
                let stamp = self.stamp(id);
                self.hand_over(id, Build::Whole { region, stamp });
            }
        }
    }

    /// Becomes the region's writer in the store: a new owner token, and a fresh log position.
    fn claim(&mut self, region: RegionId) -> Result<u64, StoreError> {
        let token = self.store.claim(region)?;
        tracing::debug!(%region, token, "claimed in the store");
        self.owners.insert(region, token);
        self.fenced.remove(&region);
        self.last_seq.remove(&region);
        Ok(token)
    }

    /// Decides what a checkpoint of `id` copied at the tick just queued covers: every record
    /// queued before it is already numbered (jobs are taken in order), none after. Not to be
    /// written when this host does not own the region in the store or its log position cannot
    /// be read.
    fn stamp(&mut self, id: RegionId) -> Stamp {
        let skip = Stamp { n: self.builds_sent + 1, covers_seq: 0, owner: 0, write: false };
        let Some(&owner) = self.owners.get(&id) else {
            tracing::debug!(region = %id, "checkpoint of a region this host does not own in the store: skipped");
            return skip;
        };
        let covers_seq = match self.last_seq.get(&id) {
            Some(&s) => s,
            None => match self.load_last(id) {
                Ok(s) => {
                    self.last_seq.insert(id, s);
                    s
                }
                Err(e) => {
                    tracing::warn!(region = %id, "checkpoint skipped: {e}");
                    return skip;
                }
            },
        };
        Stamp { n: self.builds_sent + 1, covers_seq, owner, write: true }
    }

    /// Gives a stamped checkpoint to the builder, or skips it when the builder is behind (the
    /// builder's copy then misses what this one carried, so the region's next one is whole).
    fn hand_over(&mut self, id: RegionId, build: Build) {
        match self.builds.try_send(build) {
            Ok(()) => self.builds_sent += 1,
            Err(_) => {
                self.stats.checkpoint_builds_skipped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(region = %id, "checkpoint skipped: the builder is behind (MAX_CHECKPOINT_BUILDS)");
                self.needs_whole.lock().insert(id);
            }
        }
    }

    /// Writes a checkpoint the builder encoded, unless the region changed hands here since it
    /// was stamped (left, fenced, or claimed again with a new token): then it is stale.
    fn store_checkpoint(&mut self, c: &Checkpoint) {
        let id = c.region;
        if self.owners.get(&id) != Some(&c.owner) {
            tracing::debug!(region = %id, covers_seq = c.covers_seq, "stale checkpoint (the region changed owner here since it was stamped): not written");
            return;
        }
        let started = Instant::now();
        match self.store.put_checkpoint(c) {
            Err(e @ StoreError::Fenced { .. }) => self.fence(id, &e),
            Ok(()) => {
                let us = started.elapsed().as_micros() as u64;
                self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                self.stats.checkpoint_us_total.fetch_add(us, Ordering::Relaxed);
                tracing::debug!(region = %id, covers_seq = c.covers_seq, bytes = c.bytes.len(), us, "checkpoint written");
            }
            Err(e) => tracing::warn!(region = %id, "checkpoint failed: {e}"),
        }
    }
}

/// Builds checkpoints on their own thread at a lower CPU priority: keeps a copy of each region
/// as of its last checkpoint (brought up to date by the deltas the tick threads cut), encodes
/// and compresses it, and hands the bytes back to the writer.
struct Builder {
    replicas: HashMap<RegionId, Region>,
    /// The writer's queue; weak so that it ends when the Durability is dropped.
    done: std::sync::Weak<SyncSender<Job>>,
    needs_whole: Arc<parking_lot::Mutex<std::collections::HashSet<RegionId>>>,
    stats: Arc<DurableStats>,
}

impl Builder {
    fn run(mut self, rx: Receiver<Build>) {
        while let Ok(build) = rx.recv() {
            let (n, checkpoint) = match build {
                Build::Forget { region } => {
                    self.replicas.remove(&region);
                    continue;
                }
                Build::Whole { region, stamp } => {
                    let c = stamp.write.then(|| self.encode(&region, &stamp));
                    self.replicas.insert(region.id(), *region);
                    (stamp.n, c)
                }
                Build::Delta { delta, stamp } => {
                    let id = delta.region;
                    let applied = match self.replicas.get_mut(&id) {
                        Some(r) => r.apply_delta(&delta).map_err(|e| e.to_string()),
                        None => Err("no copy of the region here".into()),
                    };
                    match applied {
                        Ok(()) => {
                            self.stats.checkpoint_deltas.fetch_add(1, Ordering::Relaxed);
                            let c = self
                                .replicas
                                .get(&id)
                                .filter(|_| stamp.write)
                                .map(|r| self.encode(r, &stamp));
                            (stamp.n, c)
                        }
                        Err(e) => {
                            tracing::warn!(region = %id, "checkpoint delta not applied ({e}); the next checkpoint copies the whole region");
                            self.replicas.remove(&id);
                            self.needs_whole.lock().insert(id);
                            (stamp.n, None)
                        }
                    }
                }
            };
            // The writer answers flushes from these numbers: every build is answered.
            let Some(tx) = self.done.upgrade() else { return };
            if tx.send(Job::Built { n, checkpoint }).is_err() {
                return;
            }
        }
    }

    fn encode(&self, region: &Region, stamp: &Stamp) -> Checkpoint {
        let started = Instant::now();
        let bytes = region.snapshot();
        let us = started.elapsed().as_micros() as u64;
        self.stats.checkpoint_encode_us_total.fetch_add(us, Ordering::Relaxed);
        self.stats.checkpoint_us_total.fetch_add(us, Ordering::Relaxed);
        Checkpoint {
            region: region.id(),
            covers_seq: stamp.covers_seq,
            tick: region.tick_number(),
            bytes,
            owner: stamp.owner,
        }
    }
}

/// Changes of a region another host took over: not durable here, so never acknowledged; the
/// sender sends them again, to the new owner.
fn fail_moved(acks: Vec<(Waiting, Option<EntityId>)>) {
    for (w, _) in acks {
        (w.ack)(Err(AckError::Moved));
    }
}

fn fail(acks: Vec<(Waiting, Option<EntityId>)>, error: &str) {
    for (w, _) in acks {
        (w.ack)(Err(AckError::Store(error.to_string())));
    }
}

impl Host {
    /// Makes this host durable: records logged, checkpoints written, regions recovered on load.
    /// Call before loading regions.
    pub fn set_durability(&self, d: Arc<Durability>) {
        let me = self.shared.me.clone();
        let workers = Arc::downgrade(&self.workers);
        let _ = d.on_fenced.set(Box::new(move |region| {
            let (Some(shared), Some(workers)) = (me.upgrade(), workers.upgrade()) else { return };
            // Not on the writer thread: unloading waits for the region's tick, which may be
            // waiting for room in the writer's queue.
            let host = Host { shared, workers };
            let _ = std::thread::Builder::new().name("fenced".into()).spawn(move || {
                if host.unload(region).is_ok() {
                    tracing::error!(%region, "region unloaded: the store says another host owns it now");
                }
            });
        }));
        let _ = self.shared.durable.set(d);
    }

    pub fn durability(&self) -> Option<&Arc<Durability>> {
        self.shared.durable.get()
    }

    /// Queues a change made on purpose; `ack` runs once it is durable (or refused, or lost to a
    /// move). Without durability the ack runs after the tick that applies it.
    pub fn send_durable(&self, id: RegionId, input: Input, ack: AckFn) -> Result<(), HostError> {
        let slot = self.slot(id)?;
        if slot.migration.lock().is_some() {
            return Err(HostError::Moving(id));
        }
        let tag = match &input {
            Input::CreateObject { tag, .. } | Input::Rez { tag, .. } => Some(*tag),
            _ => None,
        };
        let mut q = slot.inputs.lock();
        if q.len() >= crate::MAX_QUEUED_INPUTS {
            return Err(HostError::QueueFull(id));
        }
        let mut acks = slot.acks.lock();
        if acks.waiting.len() >= MAX_PENDING_ACKS {
            return Err(HostError::QueueFull(id));
        }
        let pos = acks.consumed + q.len() as u64;
        acks.waiting.push_back((pos, Waiting { ack, tag }));
        q.push_back(input);
        Ok(())
    }

    /// Loads a region: from its store when it has one and something is stored, else new. A
    /// store that cannot be read refuses the load: starting new would later checkpoint over the
    /// stored world.
    pub(crate) fn new_or_recovered(&self, id: RegionId, seed: u32) -> Result<Region, HostError> {
        let Some(d) = self.durability() else { return Ok(Region::new(id, seed)) };
        match d.recover(id, || Region::new(id, seed)) {
            Ok(Some(r)) => {
                d.recovered.lock().push(id);
                Ok(r)
            }
            Ok(None) => Ok(Region::new(id, seed)),
            Err(e) => Err(HostError::Store(format!("recovering {id}: {e}"))),
        }
    }

    /// Rebuilds a region from what the store holds, for a takeover (a failover from a dead
    /// host that shared the store): `Ok(None)` when this host has no store or nothing is
    /// stored for the region. Blocks on the store writer: call off the async runtime.
    pub fn recover_stored(&self, id: RegionId) -> Result<Option<(Region, Rebuilt)>, HostError> {
        let Some(d) = self.durability() else { return Ok(None) };
        let seed = self.shared.config.seed;
        match d.recover_with_info(id, || Region::new(id, seed)) {
            Ok(Some(found)) => {
                d.recovered.lock().push(id);
                Ok(Some(found))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(HostError::Store(format!("recovering {id}: {e}"))),
        }
    }
}

/// The acks of a tick's inputs: refusals answered now, the rest returned with the created ids.
fn settle(
    slot: &RegionSlot,
    out: &TickOutput,
    first_pos: u64,
    n_inputs: usize,
) -> Vec<(Waiting, Option<EntityId>)> {
    let mut acks = Vec::new();
    let mut q = slot.acks.lock();
    let end = first_pos + n_inputs as u64;
    while q.waiting.front().is_some_and(|(pos, _)| *pos < end) {
        let (pos, w) = q.waiting.pop_front().expect("just looked");
        let index = (pos.saturating_sub(first_pos)) as usize;
        if let Some(r) = out.rejected.iter().find(|r| r.index == index) {
            (w.ack)(Err(AckError::Refused(r.error.clone())));
            continue;
        }
        let created = w.tag.and_then(|t| out.created.iter().find(|c| c.tag == t)).map(|c| c.id);
        acks.push((w, created));
    }
    acks
}

/// After a tick on a host without a store: the acks say applied, not durable.
pub(crate) fn after_tick_without_store(slot: &RegionSlot, out: &TickOutput, first_pos: u64, n_inputs: usize) {
    for (w, created) in settle(slot, out, first_pos, n_inputs) {
        (w.ack)(Ok(Acked { tick: out.tick, seq: None, created, durable: false }));
    }
}

/// Longest a client's request waits for its acknowledgement.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Seconds a client waits before sending again a change answered 503 (`Retry-After`): not
/// applied, because the region is moving or its input queue is full.
pub const RETRY_AFTER_SECS: u64 = 1;

/// `POST /regions/X,Y/changes`: one durable input; answers once it is durable. The statuses
/// (README, control API): 200 acknowledged; 400 not a durable change; 404 the region is not on
/// this host; 422 refused by the region, nothing changed; 503 not applied (the region is moving,
/// or busy): send it again after `Retry-After`; 500 and 504 the outcome is unknown (the change
/// may be applied but not stored, and lost if the host dies).
pub(crate) async fn http_change(host: Host, id: RegionId, input: Input) -> Result<Acked, (u16, String)> {
    if !world::durable::is_durable(&input) {
        return Err((400, "not a durable change: send create, rez, edit, link, unlink, delete, terrain, script or module inputs".into()));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    host.send_durable(
        id,
        input,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )
    .map_err(|e| match e {
        HostError::UnknownRegion(_) => (404, e.to_string()),
        _ => (503, e.to_string()),
    })?;
    match tokio::time::timeout(ACK_TIMEOUT, rx).await {
        Ok(Ok(Ok(acked))) => Ok(acked),
        Ok(Ok(Err(AckError::Refused(e)))) => Err((422, e.to_string())),
        Ok(Ok(Err(e @ AckError::Moved))) => Err((503, e.to_string())),
        Ok(Ok(Err(e @ AckError::Store(_)))) => Err((500, e.to_string())),
        Ok(Err(_)) => Err((500, "the host dropped the change before acknowledging it".into())),
        Err(_) => Err((504, "no acknowledgement within ACK_TIMEOUT".into())),
    }
}

/// A durable change that came over a link (from a gateway): the outcome goes back on `reply`
/// as `ChangeDone` with the sender's `request`.
pub(crate) fn link_change(host: &Host, region: RegionId, request: u64, input: Input, reply: link::LinkTx) {
    use link::{ChangeAck, ChangeFailed, LinkMsg};
    let answer = move |result: Result<ChangeAck, ChangeFailed>| {
        if !reply.send(&LinkMsg::ChangeDone { request, result }) {
            tracing::debug!(%region, request, "change outcome dropped: the link is full or closed");
        }
    };
    if !world::durable::is_durable(&input) {
        return answer(Err(ChangeFailed::Rejected(
            "not a change made on purpose (create, edit, delete…)".into(),
        )));
    }
    let reply_to = answer.clone();
    let done: AckFn = Box::new(move |r| {
        reply_to(match r {
            Ok(a) => Ok(ChangeAck { tick: a.tick, created: a.created, durable: a.durable }),
            Err(AckError::Refused(e)) => Err(ChangeFailed::Rejected(e.to_string())),
            Err(e @ AckError::Moved) => Err(ChangeFailed::TryAgain(e.to_string())),
            Err(e @ AckError::Store(_)) => Err(ChangeFailed::Unknown(e.to_string())),
        })
    });
    if let Err(e) = host.send_durable(region, input, done) {
        answer(Err(ChangeFailed::TryAgain(e.to_string())));
    }
}

/// The crossing messages of a tick, to send once its record is committed (`None` if none).
pub(crate) fn after_commit_send(
    shared: &crate::Shared,
    id: RegionId,
    transmits: Vec<crossing::Transmit>,
) -> Option<AfterCommit> {
    if transmits.is_empty() {
        return None;
    }
    let me = shared.me.clone();
    Some(Box::new(move || {
        if let Some(shared) = me.upgrade() {
            crate::send_transmits(&shared, id, transmits);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_leaving_drops_its_durable_inputs_and_answers_them_send_again() {
        let answers: Arc<parking_lot::Mutex<Vec<Result<Acked, AckError>>>> = Arc::default();
        let mut q = AckQueue::default();
        // Two inputs already taken by ticks; then queued: a move (not durable), a delete
        // (durable, waiting for its ack), another move.
        q.take(2);
        let seen = answers.clone();
        q.waiting.push_back((3, Waiting { ack: Box::new(move |r| seen.lock().push(r)), tag: None }));
        let avatar =
            |n: u64| Input::AddAvatar { id: EntityId((1 << 63) | n), name: "a".into(), owner: n, pos: None };
        let queued = vec![avatar(1), Input::DeleteObject { id: EntityId(7) }, avatar(2)];
        let going = q.fail_all(queued);
        assert_eq!(going, vec![avatar(1), avatar(2)], "only the durable input stays behind");
        assert_eq!(*answers.lock(), vec![Err(AckError::Moved)]);
        assert!(q.waiting.is_empty());
    }
}
