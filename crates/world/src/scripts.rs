//! The region's scripts as pure data: one record per script (its 64 KiB memory in 16 stamped
//! chunks and an opaque control blob), the module binaries they run and the object templates
//! scripts create from. The live instances that run them belong to the host; these records are
//! what snapshots, deltas and the state hash carry, so a migration moves scripts for free.

use std::collections::BTreeMap;
use std::sync::Arc;

use glam::{Quat, Vec3};
use serde::{Deserialize, Serialize};

use crate::entity::EntityId;
use crate::input::{InputError, ObjectSpec};
use crate::limits::{
    MAX_SCRIPTS, MAX_SCRIPT_CONTROL_BYTES, MAX_SCRIPT_MODULES, MAX_SCRIPT_MODULE_BYTES,
    MAX_SCRIPT_TEMPLATE_SCRIPTS, MAX_TEMPLATES, SCRIPT_CHUNKS, SCRIPT_CHUNK_BYTES,
};
use crate::region::Region;

/// Stable id of a script, unique in the world. Allocated from the region's serial like object
/// ids (`x << 48 | y << 32 | serial`), so script ids and object ids never collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScriptId(pub u64);

impl std::fmt::Display for ScriptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "script {:016x}", self.0)
    }
}

/// Content hash (xxh3-128) of a module's bytes as stored in the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModuleHash(pub u128);

impl ModuleHash {
    pub fn of(bytes: &[u8]) -> ModuleHash {
        ModuleHash(xxhash_rust::xxh3::xxh3_128(bytes))
    }
}

impl std::fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One 4 KiB piece of a script's memory with the generation of its last change.
///
/// An all-zero chunk is stored empty: most of a script's 64 KiB is never written, and the
/// canonical form must be unique for hashes to agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryChunk {
    pub gen: u64,
    #[serde(with = "raw_bytes")]
    pub bytes: Vec<u8>,
}

impl MemoryChunk {
    /// The canonical form of `bytes` (exactly `SCRIPT_CHUNK_BYTES` long): empty when all zero.
    pub fn canonical(bytes: &[u8]) -> Vec<u8> {
        if bytes.iter().all(|&b| b == 0) {
            Vec::new()
        } else {
            bytes.to_vec()
        }
    }

    /// Whether this chunk holds exactly `bytes` (a full 4 KiB chunk).
    pub fn holds(&self, bytes: &[u8]) -> bool {
        if self.bytes.is_empty() {
            bytes.iter().all(|&b| b == 0)
        } else {
            self.bytes == bytes
        }
    }

    /// Writes the chunk's 4 KiB into `out`.
    pub fn copy_to(&self, out: &mut [u8]) {
        if self.bytes.is_empty() {
            out.fill(0);
        } else {
            out.copy_from_slice(&self.bytes);
        }
    }

    fn validate(&self) -> Result<(), &'static str> {
        match self.bytes.len() {
            0 => Ok(()),
            SCRIPT_CHUNK_BYTES if self.bytes.iter().any(|&b| b != 0) => Ok(()),
            SCRIPT_CHUNK_BYTES => Err("an all-zero memory chunk must be stored empty"),
            _ => Err("a memory chunk is neither empty nor SCRIPT_CHUNK_BYTES long"),
        }
    }
}

/// How a script begins when the host first instantiates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptStart {
    /// Seed of the script's random generator, derived from the region's state.
    pub seed: u64,
    /// The object whose script created this one's object (`create_object`), with the `param`
    /// it passed: the new script receives it as a 4-byte message from that object.
    pub creator: Option<(EntityId, i32)>,
}

/// One script as the region holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScriptRecord {
    pub id: ScriptId,
    /// The object the script lives in; the script goes when the object goes.
    pub object: EntityId,
    pub module: ModuleHash,
    pub start: ScriptStart,
    /// Generation of the record's creation.
    pub created: u64,
    /// Generation of the record's last change of any kind.
    pub gen: u64,
    /// The 64 KiB memory, `SCRIPT_CHUNKS` chunks in order.
    pub chunks: Vec<MemoryChunk>,
    /// Everything else of the script's state (globals, timer, listens, queue, random
    /// generator, error), serialized by the script engine. Empty until the host first runs it.
    #[serde(with = "raw_bytes")]
    pub control: Vec<u8>,
    pub control_gen: u64,
}

impl ScriptRecord {
    /// Whether the host has run this script yet (a new one starts with its `start` event).
    pub fn started(&self) -> bool {
        !self.control.is_empty()
    }

    /// The whole memory, assembled from the chunks.
    pub fn memory(&self) -> Vec<u8> {
        let mut out = vec![0; SCRIPT_CHUNKS * SCRIPT_CHUNK_BYTES];
        for (chunk, o) in self.chunks.iter().zip(out.chunks_exact_mut(SCRIPT_CHUNK_BYTES)) {
            chunk.copy_to(o);
        }
        out
    }

    pub(crate) fn validate(&self, generation: u64) -> Result<(), &'static str> {
        if self.chunks.len() != SCRIPT_CHUNKS {
            return Err("a script record does not have SCRIPT_CHUNKS memory chunks");
        }
        for c in &self.chunks {
            c.validate()?;
            if c.gen > self.gen {
                return Err("a memory chunk is newer than its script record");
            }
        }
        if self.control.len() > MAX_SCRIPT_CONTROL_BYTES {
            return Err("a script's control state exceeds MAX_SCRIPT_CONTROL_BYTES");
        }
        if self.control_gen > self.gen || self.created > self.gen || self.gen > generation {
            return Err("script record generations out of order");
        }
        Ok(())
    }
}

/// A module binary held by the region, so any host that receives the region can run its scripts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleBlob {
    pub gen: u64,
    #[serde(with = "raw_bytes")]
    pub bytes: Vec<u8>,
}

/// What `create_object` makes from a name: an object and the scripts to put in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub gen: u64,
    pub spec: ObjectSpec,
    pub scripts: Vec<ModuleHash>,
}

/// The script side of a region's state.
///
/// Records are shared between copies of a region (`Arc`, copied on write): a full copy for a
/// migration or a checkpoint is taken on the tick thread, and must not copy every script's
/// memory to do it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScriptTable {
    pub(crate) records: BTreeMap<ScriptId, Arc<ScriptRecord>>,
    pub(crate) modules: BTreeMap<ModuleHash, ModuleBlob>,
    pub(crate) templates: BTreeMap<String, Template>,
}

impl ScriptTable {
    pub(crate) fn validate(&self, generation: u64) -> Result<(), &'static str> {
        if self.records.len() > MAX_SCRIPTS
            || self.modules.len() > MAX_SCRIPT_MODULES
            || self.templates.len() > MAX_TEMPLATES
        {
            return Err("more scripts, modules or templates than a region holds");
        }
        for (hash, m) in &self.modules {
            validate_module(*hash, m, generation)?;
        }
        for (name, t) in &self.templates {
            validate_template(name, t, generation, |h| self.modules.contains_key(&h))?;
        }
        for (id, r) in &self.records {
            if *id != r.id {
                return Err("script record filed under another id");
            }
            r.validate(generation)?;
            if !self.modules.contains_key(&r.module) {
                return Err("a script runs a module the region does not hold");
            }
        }
        Ok(())
    }
}

pub(crate) fn validate_module(hash: ModuleHash, m: &ModuleBlob, generation: u64) -> Result<(), &'static str> {
    if m.bytes.len() > MAX_SCRIPT_MODULE_BYTES {
        return Err("a module exceeds MAX_SCRIPT_MODULE_BYTES");
    }
    if ModuleHash::of(&m.bytes) != hash {
        return Err("a module's bytes do not match its content hash");
    }
    if m.gen > generation {
        return Err("a module is newer than the region");
    }
    Ok(())
}

pub(crate) fn validate_template(
    name: &str,
    t: &Template,
    generation: u64,
    has_module: impl Fn(ModuleHash) -> bool,
) -> Result<(), &'static str> {
    crate::entity::validate_name(name)?;
    crate::entity::validate_name(&t.spec.name)?;
    crate::entity::validate_text(&t.spec.text)?;
    crate::entity::validate_scale(t.spec.scale)?;
    if !(t.spec.pos.is_finite() && t.spec.vel.is_finite() && t.spec.rot.is_finite()) {
        return Err("template pose is not a number");
    }
    if t.scripts.len() > MAX_SCRIPT_TEMPLATE_SCRIPTS {
        return Err("a template carries more than MAX_SCRIPT_TEMPLATE_SCRIPTS scripts");
    }
    if t.scripts.iter().any(|h| !has_module(*h)) {
        return Err("a template names a module the region does not hold");
    }
    if t.gen > generation {
        return Err("a template is newer than the region");
    }
    Ok(())
}

/// Checks a module before it is stored.
pub(crate) fn check_new_module(table: &ScriptTable, bytes: &[u8]) -> Result<ModuleHash, InputError> {
    if bytes.len() > MAX_SCRIPT_MODULE_BYTES {
        return Err(InputError::Invalid("module larger than MAX_SCRIPT_MODULE_BYTES".into()));
    }
    let hash = ModuleHash::of(bytes);
    if !table.modules.contains_key(&hash) && table.modules.len() >= MAX_SCRIPT_MODULES {
        return Err(InputError::Invalid("the region holds MAX_SCRIPT_MODULES modules".into()));
    }
    Ok(hash)
}

/// An avatar touched an object: its scripts get a `touch` event this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    pub avatar: EntityId,
    pub object: EntityId,
}

/// What a script asks of the region, as the region applies it (chat and messages stay between
/// scripts and never reach the region).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ScriptEffect {
    SetPos(Vec3),
    SetRot(Quat),
    SetVel(Vec3),
    SetScale(Vec3),
    SetText(String),
    CreateObject { template: String, pos: Vec3, param: i32 },
    DeleteSelf,
}

/// The effects of one script in one tick, in the order it made them.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectEffects {
    pub script: ScriptId,
    pub object: EntityId,
    pub effects: Vec<ScriptEffect>,
}

/// A script's state after it ran: chunks that may have changed (the region compares and
/// stamps only those whose bytes differ) and its whole control blob.
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptUpdate {
    pub id: ScriptId,
    /// (chunk index, its 4 KiB).
    pub chunks: Vec<(u8, Vec<u8>)>,
    pub control: Vec<u8>,
}

/// A script that stopped with an error (or cannot run on this host), reported once, in the
/// tick it stopped, so that its owner can be told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptStopped {
    pub script: ScriptId,
    pub object: EntityId,
    /// The agent who owns the object (the region fills it in; 0 for nobody).
    pub owner: u64,
    /// What stopped it, in snake_case (`out_of_fuel`, `trap`, `cannot_run`, ...; see
    /// docs/scripting.md), at most `MAX_SCRIPT_ERROR_KIND_BYTES`.
    pub kind: String,
    /// What happened, for people; at most `MAX_SCRIPT_ERROR_MESSAGE_BYTES`.
    pub message: String,
}

/// What the scripts did this tick, for the region to apply.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScriptOutcome {
    /// Ordered by script id: the order effects are applied in.
    pub effects: Vec<ObjectEffects>,
    pub updates: Vec<ScriptUpdate>,
    /// Scripts that stopped this tick (newly: each is reported once).
    pub stopped: Vec<ScriptStopped>,
    /// Scripts that asked for their state to be saved this tick: their records, as they stand
    /// at the end of the tick, go into the tick's durable record.
    pub saved: Vec<ScriptId>,
}

/// Runs a region's scripts inside its tick, after inputs and motion, against the region as
/// it then stands (read-only). The host implements it over its live instances; the region
/// stays pure because everything the pass does comes back as data.
pub trait ScriptPass {
    fn run(&mut self, region: &Region, touches: &[Touch]) -> ScriptOutcome;
}

/// The pass of a region whose scripts do not run (pure tests, tools): touches are dropped.
pub struct NoScripts;

impl ScriptPass for NoScripts {
    fn run(&mut self, _: &Region, _: &[Touch]) -> ScriptOutcome {
        ScriptOutcome::default()
    }
}

/// A script's state as a delta carries it: the header always, memory chunks and control only
/// when they changed after the delta's base. A record created after the base comes whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScriptPatch {
    pub id: ScriptId,
    pub object: EntityId,
    pub module: ModuleHash,
    pub start: ScriptStart,
    pub created: u64,
    pub gen: u64,
    /// (chunk index, chunk) for chunks changed after the base, by index.
    pub chunks: Vec<(u8, MemoryChunk)>,
    pub control: Option<(u64, ByteVec)>,
}

/// Bytes that serialize as one block rather than element by element.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteVec(#[serde(with = "raw_bytes")] pub Vec<u8>);

impl ScriptPatch {
    pub(crate) fn since(r: &ScriptRecord, base: u64) -> ScriptPatch {
        let whole = r.created > base;
        ScriptPatch {
            id: r.id,
            object: r.object,
            module: r.module,
            start: r.start,
            created: r.created,
            gen: r.gen,
            chunks: r
                .chunks
                .iter()
                .enumerate()
                .filter(|(_, c)| whole || c.gen > base)
                .map(|(i, c)| (i as u8, c.clone()))
                .collect(),
            control: (whole || r.control_gen > base).then(|| (r.control_gen, ByteVec(r.control.clone()))),
        }
    }

    pub(crate) fn validate(&self, base: u64, generation: u64) -> Result<(), &'static str> {
        if self.gen <= base || self.gen > generation || self.created > self.gen {
            return Err("script patch generation outside the delta's range");
        }
        let mut last = None;
        for (i, c) in &self.chunks {
            if usize::from(*i) >= SCRIPT_CHUNKS || last.is_some_and(|l| l >= *i) {
                return Err("script patch chunk indices out of range or order");
            }
            last = Some(*i);
            c.validate()?;
            if c.gen > self.gen {
                return Err("script patch chunk newer than its record");
            }
        }
        if let Some((g, bytes)) = &self.control {
            if *g > self.gen || bytes.0.len() > MAX_SCRIPT_CONTROL_BYTES {
                return Err("script patch control state invalid");
            }
        }
        if self.created > base && (self.chunks.len() != SCRIPT_CHUNKS || self.control.is_none()) {
            return Err("a script created after the delta's base must come whole");
        }
        Ok(())
    }

    /// The record after this patch, given the replica's record (required unless whole).
    pub(crate) fn apply_to(&self, base: u64, old: Option<&ScriptRecord>) -> Option<ScriptRecord> {
        let mut r = if self.created > base {
            ScriptRecord {
                id: self.id,
                object: self.object,
                module: self.module,
                start: self.start,
                created: self.created,
                gen: self.gen,
                chunks: vec![MemoryChunk { gen: 0, bytes: Vec::new() }; SCRIPT_CHUNKS],
                control: Vec::new(),
                control_gen: 0,
            }
        } else {
            let old = old?;
            if old.object != self.object || old.module != self.module || old.created != self.created {
                return None;
            }
            old.clone()
        };
        r.gen = self.gen;
        r.start = self.start;
        for (i, c) in &self.chunks {
            r.chunks[usize::from(*i)] = c.clone();
        }
        if let Some((g, bytes)) = &self.control {
            r.control_gen = *g;
            r.control.clone_from(&bytes.0);
        }
        Some(r)
    }
}

/// Byte vectors travel as one block: one copy instead of a serializer call per byte.
pub(crate) mod raw_bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, b: &[u8]) -> Result<Vec<u8>, E> {
                Ok(b.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, b: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(b)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V)
    }
}
