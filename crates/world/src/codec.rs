//! Snapshots, deltas, their wire encoding, and the state hash.
//!
//! The canonical encoding is postcard over the region's state in a fixed order (entities by
//! id). The state hash is xxh3 over exactly those bytes, and a snapshot is those bytes plus
//! the tombstones that let the holder serve deltas. On the wire a payload is wrapped in an
//! envelope: magic, format version, kind, compression, raw length and a checksum, so
//! truncated, corrupted or foreign bytes are refused before they are parsed.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};
use xxhash_rust::xxh3::xxh3_64;

use crate::entity::{Entity, EntityId, Kind};
use crate::limits::{
    COMPRESS_ABOVE_BYTES, MAX_BORDER_STATE_BYTES, MAX_ENCODED_BYTES, MAX_ENTITIES, MAX_SCRIPTS,
    MAX_SCRIPT_MODULES, MAX_TEMPLATES, MAX_TOMBSTONES,
};
use crate::region::Region;
use crate::scripts::{ModuleBlob, ModuleHash, ScriptId, ScriptPatch, ScriptRecord, ScriptTable, Template};
use crate::terrain::{Terrain, TerrainPatch};
use crate::RegionId;

/// Version of the canonical encoding. Bump it on any change of layout.
pub const FORMAT_VERSION: u16 = 4;
const MAGIC: [u8; 4] = *b"TRRN";
const HEADER_BYTES: usize = 4 + 2 + 1 + 1 + 4 + 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadKind {
    Snapshot = 1,
    Delta = 2,
}

/// How a payload is compressed on the wire. Small payloads are never compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    /// Fast, for per-tick and per-round deltas.
    Lz4 = 1,
    /// Denser, for bulk snapshots.
    Zstd = 2,
}

/// zstd level for bulk snapshots: the fastest of the standard levels.
const ZSTD_LEVEL: i32 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("payload is {0} bytes, shorter than its {HEADER_BYTES}-byte header")]
    Truncated(usize),
    #[error("not a terrane payload (bad magic)")]
    BadMagic,
    #[error("format version {found} is not supported (this build reads version {FORMAT_VERSION})")]
    WrongVersion { found: u16 },
    #[error("expected a {expected:?} payload, found kind {found}")]
    WrongKind { expected: PayloadKind, found: u8 },
    #[error("unknown compression {0}")]
    UnknownCompression(u8),
    #[error("payload of {0} bytes exceeds MAX_ENCODED_BYTES")]
    TooLarge(usize),
    #[error("checksum mismatch: the payload is corrupted")]
    Checksum,
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("invalid state: {0}")]
    Invalid(&'static str),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    #[error("generation {asked} is in the future (region is at {current})")]
    Future { asked: u64, current: u64 },
    #[error("generation {asked} is older than the pruned tombstones ({floor}): send a snapshot")]
    TooOld { asked: u64, floor: u64 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("delta is for region {delta} but this is region {replica}")]
    WrongRegion { delta: RegionId, replica: RegionId },
    #[error("delta starts at generation {base} but the replica is at {replica}")]
    BaseMismatch { base: u64, replica: u64 },
    #[error("invalid delta: {0}")]
    Invalid(&'static str),
}

/// The canonical state, borrowed, in encoding order. Hash input and snapshot prefix.
#[derive(Serialize)]
struct StateRef<'a> {
    region: RegionId,
    tick: u64,
    generation: u64,
    now_us: u64,
    next_serial: u32,
    terrain: &'a Terrain,
    #[serde(serialize_with = "values_in_order")]
    entities: &'a BTreeMap<EntityId, Arc<Entity>>,
    scripts: &'a ScriptTable,
    border_gen: u64,
    #[serde(with = "crate::scripts::raw_bytes")]
    border: &'a Vec<u8>,
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    state: StateRef<'a>,
    tombstone_floor: u64,
    tombstones: &'a BTreeMap<EntityId, u64>,
    script_tombstones: &'a BTreeMap<ScriptId, u64>,
}

fn values_in_order<S: Serializer>(m: &BTreeMap<EntityId, Arc<Entity>>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.values())
}

/// Reads the entity sequence straight into the table (no intermediate vector to grow, copy
/// and sort), refusing ids that are not strictly increasing.
fn entities_in_order<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<EntityId, Arc<Entity>>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = BTreeMap<EntityId, Arc<Entity>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("entities in increasing id order")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut map = BTreeMap::new();
            let mut last: Option<EntityId> = None;
            while let Some(e) = seq.next_element::<Entity>()? {
                if last.is_some_and(|l| l >= e.id) {
                    return Err(serde::de::Error::custom("entity ids are not strictly increasing"));
                }
                if map.len() >= MAX_ENTITIES {
                    return Err(serde::de::Error::custom("more than MAX_ENTITIES entities"));
                }
                last = Some(e.id);
                map.insert(e.id, Arc::new(e));
            }
            Ok(map)
        }
    }
    d.deserialize_seq(V)
}

/// A decoded snapshot. Same layout as [`SnapshotRef`].
#[derive(Deserialize)]
struct Snapshot {
    region: RegionId,
    tick: u64,
    generation: u64,
    now_us: u64,
    next_serial: u32,
    terrain: Terrain,
    #[serde(deserialize_with = "entities_in_order")]
    entities: BTreeMap<EntityId, Arc<Entity>>,
    scripts: ScriptTable,
    border_gen: u64,
    #[serde(with = "crate::scripts::raw_bytes")]
    border: Vec<u8>,
    tombstone_floor: u64,
    tombstones: Vec<(EntityId, u64)>,
    script_tombstones: Vec<(ScriptId, u64)>,
}

/// Everything that changed after generation `base`, up to `generation`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub region: RegionId,
    pub base: u64,
    pub generation: u64,
    pub tick: u64,
    pub now_us: u64,
    pub next_serial: u32,
    pub water_level: f32,
    /// Whole rows of entities changed after `base`, by id.
    pub entities: Vec<Entity>,
    /// Ids deleted after `base`, with their deletion's generation, by id.
    pub removed: Vec<(EntityId, u64)>,
    pub terrain: Vec<TerrainPatch>,
    /// Scripts changed after `base` (only their changed chunks and control), by id.
    pub scripts: Vec<ScriptPatch>,
    /// Scripts removed after `base`, with their removal's generation, by id.
    pub scripts_removed: Vec<(ScriptId, u64)>,
    /// Modules stored after `base`, by hash (modules are never removed).
    pub modules: Vec<(ModuleHash, ModuleBlob)>,
    /// Templates defined after `base`, by name.
    pub templates: Vec<(String, Template)>,
    /// The crossing protocol's record with its generation, if set after `base`.
    pub border: Option<(u64, crate::scripts::ByteVec)>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
            && self.removed.is_empty()
            && self.terrain.is_empty()
            && self.scripts.is_empty()
            && self.scripts_removed.is_empty()
            && self.modules.is_empty()
            && self.templates.is_empty()
            && self.border.is_none()
    }

    pub fn encode(&self) -> Vec<u8> {
        let raw = postcard::to_stdvec(self).expect("serializing to memory cannot fail");
        seal(PayloadKind::Delta, Compression::Lz4, &raw)
    }

    /// The size of the delta's encoding before compression, without encoding it (what
    /// handling it costs scales with this, not with its compressed size).
    pub fn raw_len(&self) -> usize {
        postcard::experimental::serialized_size(self).expect("sizing in memory cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Delta, CodecError> {
        let raw = open(PayloadKind::Delta, bytes)?;
        let d: Delta = parse(&raw)?;
        d.validate().map_err(CodecError::Invalid)?;
        Ok(d)
    }

    fn validate(&self) -> Result<(), &'static str> {
        if self.base > self.generation {
            return Err("delta ends before it starts");
        }
        if self.entities.len() > MAX_ENTITIES || self.removed.len() > MAX_TOMBSTONES {
            return Err("delta carries more than MAX_ENTITIES");
        }
        strictly_increasing(self.entities.iter().map(|e| e.id))?;
        strictly_increasing(self.removed.iter().map(|r| r.0))?;
        for e in &self.entities {
            e.validate()?;
            if e.gen <= self.base || e.gen > self.generation {
                return Err("entity generation outside the delta's range");
            }
        }
        for p in &self.terrain {
            p.validate()?;
        }
        if !self.water_level.is_finite() {
            return Err("water level is not a number");
        }
        if self.scripts.len() > MAX_SCRIPTS
            || self.scripts_removed.len() > MAX_TOMBSTONES
            || self.modules.len() > MAX_SCRIPT_MODULES
            || self.templates.len() > MAX_TEMPLATES
        {
            return Err("delta carries more scripts, modules or templates than a region holds");
        }
        strictly_increasing_by(self.scripts.iter().map(|p| p.id))?;
        strictly_increasing_by(self.scripts_removed.iter().map(|r| r.0))?;
        strictly_increasing_by(self.modules.iter().map(|m| m.0))?;
        strictly_increasing_by(self.templates.iter().map(|t| t.0.as_str()))?;
        for p in &self.scripts {
            p.validate(self.base, self.generation)?;
        }
        for (hash, m) in &self.modules {
            crate::scripts::validate_module(*hash, m, self.generation)?;
            if m.gen <= self.base {
                return Err("module generation outside the delta's range");
            }
        }
        for (_, t) in &self.templates {
            if t.gen <= self.base || t.gen > self.generation {
                return Err("template generation outside the delta's range");
            }
        }
        if let Some((gen, state)) = &self.border {
            if *gen <= self.base || *gen > self.generation {
                return Err("border record generation outside the delta's range");
            }
            if state.0.len() > MAX_BORDER_STATE_BYTES {
                return Err("border record larger than MAX_BORDER_STATE_BYTES");
            }
        }
        Ok(())
    }
}

fn strictly_increasing_by<T: PartialOrd>(items: impl Iterator<Item = T>) -> Result<(), &'static str> {
    let mut last: Option<T> = None;
    for item in items {
        if last.as_ref().is_some_and(|l| *l >= item) {
            return Err("items are not in strictly increasing order");
        }
        last = Some(item);
    }
    Ok(())
}

fn strictly_increasing(ids: impl Iterator<Item = EntityId>) -> Result<(), &'static str> {
    let mut last = None;
    for id in ids {
        if last.is_some_and(|l| l >= id) {
            return Err("ids are not strictly increasing");
        }
        last = Some(id);
    }
    Ok(())
}

impl Region {
    fn state_ref(&self) -> StateRef<'_> {
        StateRef {
            region: self.id,
            tick: self.tick,
            generation: self.generation,
            now_us: self.now_us,
            next_serial: self.next_serial,
            terrain: &self.terrain,
            entities: &self.entities,
            scripts: &self.scripts,
            border_gen: self.border_gen,
            border: &self.border,
        }
    }

    /// The canonical encoding of the region's state (uncompressed): what the hash covers.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(&self.state_ref()).expect("serializing to memory cannot fail")
    }

    /// A full snapshot at the current tick boundary, enveloped and compressed (zstd).
    pub fn snapshot(&self) -> Vec<u8> {
        self.snapshot_with(Compression::Zstd)
    }

    pub fn snapshot_with(&self, compression: Compression) -> Vec<u8> {
        let snap = SnapshotRef {
            state: self.state_ref(),
            tombstone_floor: self.tombstone_floor,
            tombstones: &self.tombstones,
            script_tombstones: &self.script_tombstones,
        };
        let raw = postcard::to_stdvec(&snap).expect("serializing to memory cannot fail");
        seal(PayloadKind::Snapshot, compression, &raw)
    }

    /// Rebuilds a region from [`Region::snapshot`] bytes. Bad bytes are an error, never a panic.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Region, CodecError> {
        let raw = open(PayloadKind::Snapshot, bytes)?;
        let s: Snapshot = parse(&raw)?;
        s.terrain.validate().map_err(CodecError::Invalid)?;
        if s.tombstones.len() > MAX_TOMBSTONES {
            return Err(CodecError::Invalid("snapshot exceeds MAX_TOMBSTONES"));
        }
        strictly_increasing(s.tombstones.iter().map(|t| t.0)).map_err(CodecError::Invalid)?;
        if s.script_tombstones.len() > MAX_TOMBSTONES {
            return Err(CodecError::Invalid("snapshot exceeds MAX_TOMBSTONES"));
        }
        strictly_increasing_by(s.script_tombstones.iter().map(|t| t.0)).map_err(CodecError::Invalid)?;
        for e in s.entities.values() {
            e.validate().map_err(CodecError::Invalid)?;
            if e.gen > s.generation {
                return Err(CodecError::Invalid("entity newer than the region"));
            }
        }
        let entities = s.entities;
        check_links(&entities).map_err(CodecError::Invalid)?;
        s.scripts.validate(s.generation).map_err(CodecError::Invalid)?;
        check_script_objects(s.scripts.records.values().map(|r| &**r), |id| entities.get(&id).map(|e| &**e))
            .map_err(CodecError::Invalid)?;
        let avatars = entities.values().filter(|e| e.is_avatar()).count();
        if s.border.len() > MAX_BORDER_STATE_BYTES || s.border_gen > s.generation {
            return Err(CodecError::Invalid("border record out of bounds"));
        }
        Ok(Region {
            id: s.region,
            tick: s.tick,
            generation: s.generation,
            now_us: s.now_us,
            next_serial: s.next_serial,
            terrain: s.terrain,
            entities,
            tombstones: s.tombstones.into_iter().collect(),
            tombstone_floor: s.tombstone_floor,
            avatars,
            scripts: s.scripts,
            script_tombstones: s.script_tombstones.into_iter().collect(),
            hash_cache: Default::default(),
            recent: crate::dirty::Recent::at(s.generation),
            neighbours: Default::default(),
            border: s.border,
            border_gen: s.border_gen,
            arrivals: Vec::new(),
        })
    }

    /// The entities stamped after `base`, in id order: from the index of recent changes when
    /// it reaches back that far, else by a scan of every entity.
    fn changed_since(&self, base: u64) -> Vec<Entity> {
        let scan = || self.entities().filter(|e| e.gen > base).cloned().collect::<Vec<_>>();
        let Some(ids) = self.recent.since(base) else { return scan() };
        let rows: Vec<Entity> =
            ids.iter().filter_map(|id| self.entity(*id)).filter(|e| e.gen > base).cloned().collect();
        debug_assert_eq!(rows, scan(), "the index of recent changes missed a change");
        rows
    }

    /// Everything that changed after generation `base`.
    pub fn delta_since(&self, base: u64) -> Result<Delta, DeltaError> {
        if base > self.generation {
            return Err(DeltaError::Future { asked: base, current: self.generation });
        }
        if base < self.tombstone_floor {
            return Err(DeltaError::TooOld { asked: base, floor: self.tombstone_floor });
        }
        Ok(Delta {
            region: self.id,
            base,
            generation: self.generation,
            tick: self.tick,
            now_us: self.now_us,
            next_serial: self.next_serial,
            water_level: self.terrain.water_level,
            entities: self.changed_since(base),
            removed: self.tombstones.iter().filter(|(_, &g)| g > base).map(|(&id, &g)| (id, g)).collect(),
            terrain: self.terrain.patches_since(base),
            scripts: self
                .scripts
                .records
                .values()
                .filter(|r| r.gen > base)
                .map(|r| ScriptPatch::since(r, base))
                .collect(),
            scripts_removed: self
                .script_tombstones
                .iter()
                .filter(|(_, &g)| g > base)
                .map(|(&id, &g)| (id, g))
                .collect(),
            modules: self
                .scripts
                .modules
                .iter()
                .filter(|(_, m)| m.gen > base)
                .map(|(h, m)| (*h, m.clone()))
                .collect(),
            templates: self
                .scripts
                .templates
                .iter()
                .filter(|(_, t)| t.gen > base)
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect(),
            border: (self.border_gen > base)
                .then(|| (self.border_gen, crate::scripts::ByteVec(self.border.clone()))),
        })
    }

    /// Applies a delta taken at this replica's generation. Checked before anything changes:
    /// a refused delta leaves the replica as it was.
    pub fn apply_delta(&mut self, d: &Delta) -> Result<(), ApplyError> {
        if d.region != self.id {
            return Err(ApplyError::WrongRegion { delta: d.region, replica: self.id });
        }
        if d.base != self.generation {
            return Err(ApplyError::BaseMismatch { base: d.base, replica: self.generation });
        }
        d.validate().map_err(ApplyError::Invalid)?;
        self.check_delta_links(d).map_err(ApplyError::Invalid)?;
        let patched = self.check_delta_scripts(d).map_err(ApplyError::Invalid)?;
        for &(id, g) in &d.removed {
            self.entities.remove(&id);
            self.tombstones.insert(id, g);
        }
        for e in &d.entities {
            self.tombstones.remove(&e.id);
            self.entities.insert(e.id, Arc::new(e.clone()));
        }
        for p in &d.terrain {
            self.terrain.apply_patch(p);
        }
        self.terrain.water_level = d.water_level;
        for (hash, m) in &d.modules {
            self.scripts.modules.insert(*hash, m.clone());
        }
        for (name, t) in &d.templates {
            self.scripts.templates.insert(name.clone(), t.clone());
        }
        for &(id, g) in &d.scripts_removed {
            self.scripts.records.remove(&id);
            self.script_tombstones.insert(id, g);
        }
        for r in patched {
            self.script_tombstones.remove(&r.id);
            self.scripts.records.insert(r.id, Arc::new(r));
        }
        if let Some((gen, state)) = &d.border {
            self.border_gen = *gen;
            self.border = state.0.clone();
        }
        self.recent.record(d.base, d.generation, d.entities.iter().map(|e| e.id));
        self.generation = d.generation;
        self.tick = d.tick;
        self.now_us = d.now_us;
        self.next_serial = d.next_serial;
        self.avatars = self.entities.values().filter(|e| e.is_avatar()).count();
        Ok(())
    }

    /// Checks that after the delta every linked entity still has a valid root, without
    /// building the new table: entities are looked up in the delta first, then here.
    fn check_delta_links(&self, d: &Delta) -> Result<(), &'static str> {
        let updated =
            |id: EntityId| d.entities.binary_search_by_key(&id, |e| e.id).ok().map(|i| &d.entities[i]);
        let removed = |id: EntityId| d.removed.binary_search_by_key(&id, |r| r.0).is_ok();
        let after = |id: EntityId| match updated(id) {
            Some(e) => Some(e),
            None if removed(id) => None,
            None => self.entity(id),
        };
        let valid_root = |p: EntityId| {
            after(p).is_some_and(|root| root.parent.is_none() && matches!(root.kind, Kind::Object(_)))
        };
        for e in &d.entities {
            if e.parent.is_some_and(|p| !valid_root(p)) {
                return Err("linked entity without a valid root");
            }
        }
        // Rows the delta leaves alone may point at a root that it removes or turns into a child.
        if !d.removed.is_empty() || d.entities.iter().any(|e| e.parent.is_some()) {
            for e in self.entities.values() {
                if updated(e.id).is_none() && !removed(e.id) && e.parent.is_some_and(|p| !valid_root(p)) {
                    return Err("linked entity without a valid root");
                }
            }
        }
        Ok(())
    }

    /// Builds the script records the delta leaves, and checks that every script of the result
    /// runs a module the region holds, in an object it holds; nothing changes here.
    fn check_delta_scripts(&self, d: &Delta) -> Result<Vec<ScriptRecord>, &'static str> {
        if d.scripts.is_empty()
            && d.scripts_removed.is_empty()
            && d.removed.is_empty()
            && d.templates.is_empty()
        {
            return Ok(Vec::new());
        }
        let has_module = |h: ModuleHash| {
            self.scripts.modules.contains_key(&h) || d.modules.binary_search_by_key(&h, |m| m.0).is_ok()
        };
        let mut patched = Vec::with_capacity(d.scripts.len());
        for p in &d.scripts {
            let r = p
                .apply_to(d.base, self.script(p.id))
                .ok_or("a script patch does not match the replica's record")?;
            if !has_module(r.module) {
                return Err("a script runs a module the region does not hold");
            }
            patched.push(r);
        }
        for (name, t) in &d.templates {
            crate::scripts::validate_template(name, t, d.generation, has_module)?;
        }
        let updated =
            |id: EntityId| d.entities.binary_search_by_key(&id, |e| e.id).ok().map(|i| &d.entities[i]);
        let removed = |id: EntityId| d.removed.binary_search_by_key(&id, |r| r.0).is_ok();
        let entity_after = |id: EntityId| match updated(id) {
            Some(e) => Some(e),
            None if removed(id) => None,
            None => self.entity(id),
        };
        let script_removed = |id: ScriptId| d.scripts_removed.binary_search_by_key(&id, |r| r.0).is_ok();
        check_script_objects(patched.iter(), entity_after)?;
        let untouched = self
            .scripts()
            .filter(|r| !script_removed(r.id) && d.scripts.binary_search_by_key(&r.id, |p| p.id).is_err());
        check_script_objects(untouched, entity_after)?;
        Ok(patched)
    }

    /// Decodes and applies an encoded delta.
    pub fn apply_encoded_delta(&mut self, bytes: &[u8]) -> Result<(), DeltaApplyError> {
        let d = Delta::decode(bytes)?;
        self.apply_delta(&d)?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaApplyError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Linksets reference roots that exist, are objects and are not children themselves.
fn check_links(entities: &BTreeMap<EntityId, Arc<Entity>>) -> Result<(), &'static str> {
    for e in entities.values() {
        if let Some(p) = e.parent {
            match entities.get(&p) {
                Some(root) if root.parent.is_none() && matches!(root.kind, Kind::Object(_)) => {}
                _ => return Err("linked entity without a valid root"),
            }
        }
    }
    Ok(())
}

/// Every script lives in an object of the region.
fn check_script_objects<'a>(
    records: impl Iterator<Item = &'a ScriptRecord>,
    entity: impl Fn(EntityId) -> Option<&'a Entity>,
) -> Result<(), &'static str> {
    for r in records {
        match entity(r.object) {
            Some(e) if matches!(e.kind, Kind::Object(_)) => {}
            _ => return Err("a script lives in an object the region does not hold"),
        }
    }
    Ok(())
}

/// The uncompressed size an encoded snapshot or delta declares in its header (0 when the
/// bytes are too short to have one).
pub fn raw_len(bytes: &[u8]) -> u64 {
    bytes.get(8..12).map_or(0, |b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
}

fn seal(kind: PayloadKind, compression: Compression, raw: &[u8]) -> Vec<u8> {
    let compression = if raw.len() < COMPRESS_ABOVE_BYTES { Compression::None } else { compression };
    let body = match compression {
        Compression::None => raw.to_vec(),
        Compression::Lz4 => lz4_flex::block::compress(raw),
        Compression::Zstd => zstd::bulk::compress(raw, ZSTD_LEVEL).expect("zstd compresses in memory"),
    };
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.push(compression as u8);
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxh3_64(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Checks the envelope and returns the raw (decompressed) payload.
fn open(expected: PayloadKind, bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    if bytes.len() < HEADER_BYTES {
        return Err(CodecError::Truncated(bytes.len()));
    }
    if bytes.len() > MAX_ENCODED_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    if bytes[0..4] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(CodecError::WrongVersion { found: version });
    }
    if bytes[6] != expected as u8 {
        return Err(CodecError::WrongKind { expected, found: bytes[6] });
    }
    let compression = bytes[7];
    let raw_len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    if raw_len > MAX_ENCODED_BYTES {
        return Err(CodecError::TooLarge(raw_len));
    }
    let checksum = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let body = &bytes[HEADER_BYTES..];
    if xxh3_64(body) != checksum {
        return Err(CodecError::Checksum);
    }
    let raw = match compression {
        0 => body.to_vec(),
        1 => lz4_flex::block::decompress(body, raw_len).map_err(|e| CodecError::Decompress(e.to_string()))?,
        2 => zstd::bulk::decompress(body, raw_len).map_err(|e| CodecError::Decompress(e.to_string()))?,
        c => return Err(CodecError::UnknownCompression(c)),
    };
    if raw.len() != raw_len {
        return Err(CodecError::Decompress(format!("{} bytes, header says {raw_len}", raw.len())));
    }
    Ok(raw)
}

fn parse<'de, T: Deserialize<'de>>(raw: &'de [u8]) -> Result<T, CodecError> {
    let (value, rest) = postcard::take_from_bytes(raw).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    //! Bad bytes are error values, never panics: random, truncated, flipped, wrong version,
    //! and corrupted payloads re-sealed with a valid checksum (so the parser itself is hit).
    use super::*;
    use crate::{Input, ObjectSpec, Vec3};
    use proptest::prelude::*;

    fn sample() -> Region {
        let mut r = Region::with_terrain(RegionId::new(2, 2), Terrain::flat(10.0));
        let specs = (0..40).map(|t| Input::CreateObject {
            tag: t,
            spec: ObjectSpec { pos: Vec3::new(t as f32, 5.0, 30.0), vel: Vec3::X, ..Default::default() },
        });
        r.tick(0, specs);
        r.tick(22_000, [Input::AddAvatar { id: EntityId(99), name: "a".into(), owner: 1, pos: None }]);
        r
    }

    fn raw_of(kind: PayloadKind, sealed: &[u8]) -> Vec<u8> {
        open(kind, sealed).unwrap()
    }

    #[test]
    fn a_wrong_version_is_named_in_the_error() {
        let mut bytes = sample().snapshot();
        bytes[4] = 9;
        assert_eq!(Region::from_snapshot(&bytes).unwrap_err(), CodecError::WrongVersion { found: 9 });
    }

    #[test]
    fn a_delta_is_not_a_snapshot() {
        let r = sample();
        let delta = r.delta_since(0).unwrap().encode();
        assert!(matches!(Region::from_snapshot(&delta), Err(CodecError::WrongKind { .. })));
    }

    #[test]
    fn every_truncation_of_a_snapshot_is_refused() {
        let bytes = sample().snapshot();
        for len in (0..bytes.len()).step_by(7) {
            assert!(Region::from_snapshot(&bytes[..len]).is_err(), "accepted {len} bytes");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert!(Region::from_snapshot(&bytes).is_err());
            prop_assert!(Delta::decode(&bytes).is_err());
        }

        #[test]
        fn a_flipped_byte_is_caught(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = sample().snapshot();
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(Region::from_snapshot(&bytes).is_err());
        }

        #[test]
        fn corrupted_payloads_with_a_valid_checksum_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let r = sample();
            for (kind, sealed) in [(PayloadKind::Snapshot, r.snapshot()), (PayloadKind::Delta, r.delta_since(0).unwrap().encode())] {
                let mut raw = raw_of(kind, &sealed);
                for (i, b) in &edits {
                    let i = i.index(raw.len());
                    raw[i] = *b;
                }
                if truncate {
                    raw.truncate(cut.index(raw.len()));
                }
                let resealed = seal(kind, Compression::Lz4, &raw);
                // Either refused, or (if the edit hit something harmless) a valid region.
                match kind {
                    PayloadKind::Snapshot => { let _ = Region::from_snapshot(&resealed); }
                    PayloadKind::Delta => {
                        let mut replica = r.clone();
                        let _ = replica.apply_encoded_delta(&resealed);
                    }
                }
            }
        }
    }
}
