//! A script's whole state as plain data, for migration, checkpoints and the state hash.
//!
//! [`ScriptState`] is everything needed to continue a script elsewhere: its memory, its
//! mutable globals, timer, listens, event queue, random generator, error and counters.
//! [`ScriptDelta`] is the same minus the 4 KiB memory chunks that did not change since a
//! version the receiver already has.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use world::EntityId;

use crate::event::Event;
use crate::limits::{
    CHUNKS, CHUNK_BYTES, MAX_LISTENS_PER_SCRIPT, MAX_MESSAGE_BYTES, MAX_QUEUED_EVENTS, MEMORY_BYTES,
};

/// Stable id of a script, unique in the world. Batches return effects ordered by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScriptId(pub u64);

impl std::fmt::Display for ScriptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "script {:016x}", self.0)
    }
}

/// Content hash (xxh3-128) of a module's WebAssembly binary, as the script author wrote it
/// (before the loader's rewrite).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModuleHash(pub u128);

impl ModuleHash {
    pub fn of(wasm: &[u8]) -> ModuleHash {
        ModuleHash(xxhash_rust::xxh3::xxh3_128(wasm))
    }
}

impl std::fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The value of one mutable global, bit-exact (floats as their bits, so NaNs survive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GlobalValue {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
    V128(u128),
}

/// The script's timer: fires every `interval_ms`, next at `next_due_ms` (simulation time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Timer {
    pub interval_ms: u64,
    pub next_due_ms: u64,
}

/// One open listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Listen {
    pub handle: i32,
    pub channel: i32,
}

/// Why a script stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// An event used all of `FUEL_PER_EVENT` (a runaway loop, most often).
    OutOfFuel,
    /// An event was still running when the tick's time budget ran out (epoch interruption).
    TimeBudget,
    /// The script recursed deeper than `MAX_WASM_STACK`.
    StackOverflow,
    /// The script tried to grow its memory past its one 64 KiB page.
    MemoryGrowth,
    /// A WebAssembly trap: `unreachable`, out-of-bounds access, division by zero…
    Trap,
    /// A host call with bad arguments: a pointer outside memory, text that is too long or not
    /// UTF-8.
    BadCall,
    /// The engine failed for a reason that is not the script's fault.
    Internal,
}

/// A script's error state: it runs no more events until it is reset.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ScriptError {
    pub kind: ErrorKind,
    pub message: String,
}

/// Running totals, part of the state so a migrated script reports the same numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Counters {
    /// Events that ran (including one that ended in an error).
    pub events_run: u64,
    /// Events refused because the queue was full.
    pub events_dropped: u64,
    /// Effects refused because an event already made `MAX_EFFECTS_PER_EVENT`.
    pub effects_dropped: u64,
    /// Fuel burnt by all events.
    pub fuel_used: u64,
}

/// Everything of a script's state except its memory and globals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScriptVars {
    pub timer: Option<Timer>,
    /// Open listens, ordered by handle.
    pub listens: Vec<Listen>,
    pub next_listen_handle: i32,
    /// State of the script's random generator (SplitMix64), seeded when the script is created.
    pub rng: u64,
    pub queue: VecDeque<Event>,
    pub error: Option<ScriptError>,
    pub counters: Counters,
}

impl ScriptVars {
    /// Checks the limits that state from elsewhere (a migration source, a checkpoint) must keep.
    pub fn validate(&self) -> Result<(), StateError> {
        if self.listens.len() > MAX_LISTENS_PER_SCRIPT {
            return Err(StateError::Invalid("more listens than MAX_LISTENS_PER_SCRIPT"));
        }
        if self.queue.len() > MAX_QUEUED_EVENTS {
            return Err(StateError::Invalid("more queued events than MAX_QUEUED_EVENTS"));
        }
        if self.queue.iter().any(|e| e.payload_len() > MAX_MESSAGE_BYTES) {
            return Err(StateError::Invalid("a queued event is longer than MAX_MESSAGE_BYTES"));
        }
        if self.next_listen_handle < 0 || self.listens.iter().any(|l| l.handle < 0) {
            return Err(StateError::Invalid("listen handles are never negative"));
        }
        Ok(())
    }
}

/// A script's complete state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScriptState {
    pub id: ScriptId,
    /// The object the script lives in.
    pub object: EntityId,
    pub module: ModuleHash,
    /// Bumped by every event run and every state applied; deltas are taken since a version.
    pub version: u64,
    /// The whole linear memory, `MEMORY_BYTES` long.
    pub memory: Vec<u8>,
    /// Mutable globals in the module's global index order.
    pub globals: Vec<GlobalValue>,
    pub vars: ScriptVars,
}

/// One 4 KiB piece of memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryChunk {
    pub index: u8,
    pub bytes: Vec<u8>,
}

/// What changed in a script since `base_version`: only the memory chunks whose content changed,
/// plus globals and vars in full (they are small).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScriptDelta {
    pub id: ScriptId,
    pub module: ModuleHash,
    pub base_version: u64,
    pub version: u64,
    pub chunks: Vec<MemoryChunk>,
    pub globals: Vec<GlobalValue>,
    pub vars: ScriptVars,
}

/// State or a delta that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the state is for {found}, not {expected}")]
    WrongScript { expected: ScriptId, found: ScriptId },
    #[error("the state is for module {found}, but the script runs module {expected}")]
    WrongModule { expected: ModuleHash, found: ModuleHash },
    #[error("the delta starts at version {found}, but the script is at version {expected}: ask the source for a delta since {expected}")]
    WrongBase { expected: u64, found: u64 },
    #[error("the state has {found} mutable globals, the module has {expected}")]
    GlobalCount { expected: usize, found: usize },
    #[error("global {index} holds a {found} value, the module declares {expected}")]
    GlobalType { index: usize, expected: &'static str, found: &'static str },
    #[error("memory is {0} bytes, a script has exactly 65536")]
    MemorySize(usize),
    #[error("memory chunk {index} is invalid (index below 16 and 4096 bytes required, got {len} bytes)")]
    BadChunk { index: u8, len: usize },
    #[error("invalid script state: {0}")]
    Invalid(&'static str),
}

impl GlobalValue {
    pub fn type_name(self) -> &'static str {
        match self {
            GlobalValue::I32(_) => "i32",
            GlobalValue::I64(_) => "i64",
            GlobalValue::F32(_) => "f32",
            GlobalValue::F64(_) => "f64",
            GlobalValue::V128(_) => "v128",
        }
    }
}

pub(crate) fn check_chunk(c: &MemoryChunk) -> Result<(), StateError> {
    if (c.index as usize) < CHUNKS && c.bytes.len() == CHUNK_BYTES {
        Ok(())
    } else {
        Err(StateError::BadChunk { index: c.index, len: c.bytes.len() })
    }
}

impl ScriptState {
    /// Hash of a canonical encoding of the whole state: equal hashes mean a migrated script
    /// continues exactly where it left off.
    pub fn state_hash(&self) -> u64 {
        let mut w = HashWriter(xxhash_rust::xxh3::Xxh3::new());
        // Writing into a hasher cannot fail, and every field is serializable.
        postcard::to_io(self, &mut w).expect("serializing script state into a hasher cannot fail");
        w.0.digest()
    }

    /// Checks sizes and limits of a state that came from elsewhere.
    pub fn validate(&self) -> Result<(), StateError> {
        if self.memory.len() != MEMORY_BYTES {
            return Err(StateError::MemorySize(self.memory.len()));
        }
        self.vars.validate()
    }

    /// Brings this state forward by a delta taken since this state's version.
    pub fn apply(&mut self, delta: &ScriptDelta) -> Result<(), StateError> {
        if delta.id != self.id {
            return Err(StateError::WrongScript { expected: self.id, found: delta.id });
        }
        if delta.module != self.module {
            return Err(StateError::WrongModule { expected: self.module, found: delta.module });
        }
        if delta.base_version != self.version {
            return Err(StateError::WrongBase { expected: self.version, found: delta.base_version });
        }
        if delta.globals.len() != self.globals.len() {
            return Err(StateError::GlobalCount { expected: self.globals.len(), found: delta.globals.len() });
        }
        delta.vars.validate()?;
        for c in &delta.chunks {
            check_chunk(c)?;
        }
        for c in &delta.chunks {
            let at = c.index as usize * CHUNK_BYTES;
            self.memory[at..at + CHUNK_BYTES].copy_from_slice(&c.bytes);
        }
        self.globals.clone_from(&delta.globals);
        self.vars.clone_from(&delta.vars);
        self.version = delta.version;
        Ok(())
    }
}

/// Feeds serialized bytes straight into xxh3, so hashing allocates nothing.
struct HashWriter(xxhash_rust::xxh3::Xxh3);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
