//! Durable changes: what people change on purpose (create, rez, edit, link, unlink, delete,
//! terrain edits, scripts and modules they add or remove) must survive a crash of the host.
//!
//! A tick that applies such inputs yields a [`Delta`] in [`TickOutput::durable`] holding only
//! the rows they touched, as they stand at the end of that tick (plus every removal of the
//! tick: a removal is always a true fact). The host logs it before acknowledging; recovery
//! replays these records on top of a checkpoint with [`Region::replay_durable`]. Motion and
//! whatever scripts did on their own are not logged: they come back as of the checkpoint.

use xxhash_rust::xxh3::Xxh3;

use crate::codec::{ApplyError, Delta};
use crate::entity::EntityId;
use crate::input::{Input, TickOutput};
use crate::region::Region;
use crate::scripts::{ScriptId, ScriptPatch};

/// What the durable inputs of one tick touched (rows are read at the end of the tick).
#[derive(Default)]
pub(crate) struct Touched {
    any: bool,
    terrain: bool,
    entities: Vec<EntityId>,
    /// Scripts whose whole record is logged (they asked to be saved).
    saved: Vec<ScriptId>,
}

/// Which row an input is about, known before it is applied (it is consumed by then).
pub(crate) enum Intent {
    None,
    Entity(EntityId),
    Entities(Vec<EntityId>),
    Created,
    Terrain,
    Other,
}

impl Intent {
    pub(crate) fn of(input: &Input) -> Intent {
        match input {
            Input::CreateObject { .. } | Input::Rez { .. } => Intent::Created,
            Input::EditObject { id, .. } => Intent::Entity(*id),
            Input::Link { child, .. } | Input::Unlink { child } => Intent::Entity(*child),
            Input::AddScript { object, .. } => Intent::Entity(*object),
            Input::DeleteObject { .. }
            | Input::RemoveScript { .. }
            | Input::AddModule { .. }
            | Input::DefineTemplate { .. } => Intent::Other,
            Input::EditTerrain { .. } => Intent::Terrain,
            // Crossing steps: a unit that left (its removals are logged) or arrived, one that
            // came back inside, and the crossing protocol's record (see `border`).
            Input::Depart { .. } | Input::Border { .. } => Intent::Other,
            Input::Return { root } => Intent::Entity(*root),
            Input::Arrive { entities, .. } => Intent::Entities(entities.iter().map(|e| e.id).collect()),
            Input::AddAvatar { .. }
            | Input::RemoveAvatar { .. }
            | Input::Controls { .. }
            | Input::Sit { .. }
            | Input::Stand { .. }
            | Input::Touch { .. } => Intent::None,
        }
    }
}

/// Whether an input of this kind is a durable change (logged before it is acknowledged).
pub fn is_durable(input: &Input) -> bool {
    !matches!(Intent::of(input), Intent::None)
}

impl Touched {
    /// Notes the scripts that asked to be saved this tick.
    pub(crate) fn saved(&mut self, scripts: &[ScriptId]) {
        if !scripts.is_empty() {
            self.saved.extend_from_slice(scripts);
            self.any = true;
        }
    }

    /// Notes an input that was applied (not refused).
    pub(crate) fn applied(&mut self, intent: Intent, out: &TickOutput) {
        match intent {
            Intent::None => return,
            Intent::Entity(id) => self.entities.push(id),
            Intent::Entities(ids) => self.entities.extend(ids),
            Intent::Created => self.entities.extend(out.created.last().map(|c| c.id)),
            Intent::Terrain => self.terrain = true,
            Intent::Other => {}
        }
        self.any = true;
    }

    /// The record of this tick's durable changes, read from the region at the end of the tick.
    pub(crate) fn record(mut self, region: &Region) -> Option<Delta> {
        if !self.any {
            return None;
        }
        let g = region.generation;
        self.entities.sort_unstable();
        self.entities.dedup();
        self.saved.sort_unstable();
        self.saved.dedup();
        // A row whose edit changed nothing keeps its older stamp: there is nothing to log.
        let entities = self
            .entities
            .iter()
            .filter_map(|id| region.entity(*id))
            .filter(|e| e.gen == g)
            .cloned()
            .collect();
        let scripts = region
            .scripts
            .records
            .values()
            .filter(|r| {
                (r.created == g && self.entities.binary_search(&r.object).is_ok())
                    || self.saved.binary_search(&r.id).is_ok()
            })
            .map(|r| ScriptPatch::since(r, 0))
            .collect();
        Some(Delta {
            region: region.id,
            base: g - 1,
            generation: g,
            tick: region.tick,
            now_us: region.now_us,
            next_serial: region.next_serial,
            water_level: region.terrain.water_level,
            entities,
            removed: region.tombstones.iter().filter(|(_, &t)| t == g).map(|(&id, &t)| (id, t)).collect(),
            terrain: if self.terrain { region.terrain.patches_since(g - 1) } else { Vec::new() },
            scripts,
            scripts_removed: region
                .script_tombstones
                .iter()
                .filter(|(_, &t)| t == g)
                .map(|(&id, &t)| (id, t))
                .collect(),
            modules: region
                .scripts
                .modules
                .iter()
                .filter(|(_, m)| m.gen == g)
                .map(|(h, m)| (*h, m.clone()))
                .collect(),
            templates: region
                .scripts
                .templates
                .iter()
                .filter(|(_, t)| t.gen == g)
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect(),
            border: (region.border_gen == g).then(|| (g, crate::scripts::ByteVec(region.border.clone()))),
        })
    }
}

impl Region {
    /// A copy for a checkpoint, taken at a tick boundary: everything the snapshot encodes,
    /// without the derived row-hash cache (rebuilt on demand), so the tick thread copies only
    /// state. Its `state_hash` equals the original's.
    pub fn checkpoint_copy(&self) -> Region {
        Region {
            id: self.id,
            tick: self.tick,
            generation: self.generation,
            now_us: self.now_us,
            next_serial: self.next_serial,
            terrain: self.terrain.clone(),
            entities: self.entities.clone(),
            tombstones: self.tombstones.clone(),
            tombstone_floor: self.tombstone_floor,
            avatars: self.avatars,
            scripts: self.scripts.clone(),
            script_tombstones: self.script_tombstones.clone(),
            hash_cache: Default::default(),
            recent: crate::dirty::Recent::at(self.generation),
            neighbours: self.neighbours,
            border: self.border.clone(),
            border_gen: self.border_gen,
            arrivals: Vec::new(),
        }
    }

    /// Applies one logged record of durable changes on top of this region (a checkpoint and the
    /// records before it), whatever happened in between that was not logged. Checked whole
    /// before anything changes, like a delta; a refused record leaves the region as it was.
    pub fn replay_durable(&mut self, record: &Delta) -> Result<(), ApplyError> {
        if record.generation <= self.generation {
            return Err(ApplyError::Invalid("durable record is not newer than the region"));
        }
        let mut d = record.clone();
        d.base = self.generation;
        self.apply_delta(&d)
    }

    /// A hash of the rows a durable record names, as this region holds them now: taken when the
    /// record is made and again after it is replayed, the two must be equal.
    pub fn durable_rows_hash(&self, record: &Delta) -> u64 {
        let mut h = Xxh3::new();
        let mut row = |bytes: Vec<u8>| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        };
        let enc = |v: &dyn erased::Encode| v.encode();
        for e in &record.entities {
            row(self.entities.get(&e.id).map_or_else(Vec::new, |e| enc(e)));
        }
        for (id, _) in &record.removed {
            row(vec![u8::from(self.entities.contains_key(id))]);
        }
        for p in &record.scripts {
            row(self.scripts.records.get(&p.id).map_or_else(Vec::new, |r| enc(r)));
        }
        for (id, _) in &record.scripts_removed {
            row(vec![u8::from(self.scripts.records.contains_key(id))]);
        }
        if !record.terrain.is_empty() {
            let current = self.terrain.patches_since(0);
            for p in &record.terrain {
                row(current.iter().find(|c| c.index == p.index).map_or_else(Vec::new, |c| enc(&c.heights)));
            }
        }
        h.digest()
    }
}

mod erased {
    /// Canonical (postcard) bytes of any serializable row, behind one object-safe method.
    pub trait Encode {
        fn encode(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Vec<u8> {
            postcard::to_stdvec(self).expect("serializing to memory cannot fail")
        }
    }
}
