//! The region: one 256 m square of the world as a pure state machine.
//!
//! Time and inputs come in through [`Region::tick`]; changes come out in its [`TickOutput`].
//! Every mutation is stamped with the region's generation, which makes snapshots, deltas and
//! pre-copy rounds exact. Nothing here reads a clock, does I/O or spawns a thread.

use std::collections::BTreeMap;
use std::f32::consts::PI;
use std::sync::Arc;

use glam::{Quat, Vec3};

use crate::border::Neighbours;
use crate::entity::{
    validate_name, validate_scale, validate_text, AvatarState, Entity, EntityId, Kind, ObjectState, Shape,
};
use crate::input::{
    Created, EntityChange, Input, InputError, ObjectEdit, ObjectSpec, Rejected, ScriptRefused, TickOutput,
};
use crate::limits::*;
use crate::scripts::{
    check_new_module, MemoryChunk, ModuleBlob, ModuleHash, NoScripts, ScriptEffect, ScriptId, ScriptOutcome,
    ScriptPass, ScriptRecord, ScriptStart, ScriptTable, Template, Touch,
};
use crate::terrain::Terrain;
use crate::RegionId;

/// Most avatars an arriving unit may carry seated on it.
const MAX_ARRIVING_RIDERS: usize = 64;

/// Motion constants (SI units).
pub mod motion {
    pub const GRAVITY: f32 = 9.81;
    pub const WALK_SPEED: f32 = 3.2;
    pub const RUN_SPEED: f32 = 6.0;
    pub const FLY_SPEED: f32 = 10.0;
    pub const FLY_VERTICAL_SPEED: f32 = 6.0;
    pub const TURN_RATE: f32 = 2.5;
    pub const JUMP_SPEED: f32 = 5.0;
    /// Half an avatar's height: its position is the centre of its body.
    pub const AVATAR_HALF_HEIGHT: f32 = 0.9;
    /// An avatar walking downhill stays on the ground if it is at most this far above it.
    pub const GROUND_SNAP: f32 = 0.6;
    /// Highest an avatar may fly above the ground.
    pub const MAX_FLY_ALTITUDE: f32 = 400.0;
    /// Share of sliding speed lost per second on the ground.
    pub const GROUND_FRICTION: f32 = 3.0;
    /// Below this speed a sliding object comes to rest.
    pub const REST_SPEED: f32 = 0.05;
}
use motion::*;

/// Distance kept from the region's edges until border crossings hand entities on.
const EDGE: f32 = 0.01;

#[derive(Clone, Debug)]
pub struct Region {
    pub(crate) id: RegionId,
    pub(crate) tick: u64,
    pub(crate) generation: u64,
    pub(crate) now_us: u64,
    pub(crate) next_serial: u32,
    pub(crate) terrain: Terrain,
    /// Rows are shared between copies of the region (`Arc`, copied on write), so a full copy
    /// taken on the tick thread costs a reference per row, not a copy of every row.
    pub(crate) entities: BTreeMap<EntityId, Arc<Entity>>,
    /// Deleted ids with the generation of their deletion, for deltas.
    pub(crate) tombstones: BTreeMap<EntityId, u64>,
    /// Tombstones older than this were pruned: deltas must start at or after it.
    pub(crate) tombstone_floor: u64,
    /// Derived: number of avatars in `entities`.
    pub(crate) avatars: usize,
    /// Script records, the modules they run and the templates they create from.
    pub(crate) scripts: ScriptTable,
    /// Removed scripts with the generation of their removal, for deltas (pruned with the
    /// entity tombstones, under the same floor).
    pub(crate) script_tombstones: BTreeMap<ScriptId, u64>,
    /// Derived: hashes of rows by generation stamp, so `state_hash` is cheap.
    pub(crate) hash_cache: crate::hash::HashCache,
    /// The entities changed in the last generations (derived; see [`crate::dirty`]).
    pub(crate) recent: crate::dirty::Recent,
    /// Configuration (not state): which neighbours exist, so entities cross towards them.
    pub(crate) neighbours: crate::border::Neighbours,
    /// The crossing protocol's durable record (opaque here) and the generation it was set at.
    pub(crate) border: Vec<u8>,
    pub(crate) border_gen: u64,
    /// Derived, this tick only: objects that arrived from a neighbour, with where from (their
    /// scripts get `region_cross`).
    pub(crate) arrivals: Vec<(EntityId, RegionId)>,
}

/// Per-tick scratch: the generation being stamped and who was touched.
struct Stamp {
    gen: u64,
    dirty: Vec<EntityId>,
}

impl Stamp {
    fn motion(&mut self, e: &mut Entity) {
        if e.gen != self.gen {
            e.gen = self.gen;
            self.dirty.push(e.id);
        }
    }
    fn body(&mut self, e: &mut Entity) {
        self.motion(e);
        e.body_gen = self.gen;
    }
}

impl Region {
    /// A new region with generated terrain and no entities.
    pub fn new(id: RegionId, seed: u32) -> Region {
        Region::with_terrain(id, Terrain::generate(seed, id))
    }

    pub fn with_terrain(id: RegionId, terrain: Terrain) -> Region {
        Region {
            id,
            tick: 0,
            generation: 0,
            now_us: 0,
            next_serial: 1,
            terrain,
            entities: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            tombstone_floor: 0,
            avatars: 0,
            scripts: ScriptTable::default(),
            script_tombstones: BTreeMap::new(),
            hash_cache: Default::default(),
            recent: crate::dirty::Recent::at(0),
            neighbours: Default::default(),
            border: Vec::new(),
            border_gen: 0,
            arrivals: Vec::new(),
        }
    }

    pub fn id(&self) -> RegionId {
        self.id
    }
    pub fn tick_number(&self) -> u64 {
        self.tick
    }
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// Simulated time of the last tick, microseconds.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }
    pub fn terrain(&self) -> &Terrain {
        &self.terrain
    }
    pub fn entity(&self, id: EntityId) -> Option<&Entity> {
        self.entities.get(&id).map(|e| &**e)
    }
    /// A row to change: copied first if a copy of the region still shares it.
    fn entity_mut(&mut self, id: EntityId) -> Option<&mut Entity> {
        self.entities.get_mut(&id).map(Arc::make_mut)
    }
    pub fn entities(&self) -> impl Iterator<Item = &Entity> {
        self.entities.values().map(|e| &**e)
    }
    pub fn entity_count(&self) -> usize {
        self.entities.len()
    }
    pub fn avatar_count(&self) -> usize {
        self.avatars
    }

    /// Script records by id.
    pub fn scripts(&self) -> impl Iterator<Item = &ScriptRecord> {
        self.scripts.records.values().map(|r| &**r)
    }
    pub fn script(&self, id: ScriptId) -> Option<&ScriptRecord> {
        self.scripts.records.get(&id).map(|r| &**r)
    }
    pub fn script_count(&self) -> usize {
        self.scripts.records.len()
    }
    /// The scripts in one object, by id.
    pub fn scripts_of(&self, object: EntityId) -> impl Iterator<Item = &ScriptRecord> {
        self.scripts().filter(move |r| r.object == object)
    }
    /// The bytes of a module the region holds.
    pub fn module(&self, hash: ModuleHash) -> Option<&[u8]> {
        self.scripts.modules.get(&hash).map(|m| m.bytes.as_slice())
    }
    /// Hashes of the modules the region holds.
    pub fn modules(&self) -> impl Iterator<Item = ModuleHash> + '_ {
        self.scripts.modules.keys().copied()
    }
    pub fn template(&self, name: &str) -> Option<&Template> {
        self.scripts.templates.get(name)
    }

    /// Ticks per second at the region's current activity.
    pub fn rate_hz(&self) -> u32 {
        if self.avatars > 0 {
            ACTIVE_TICK_HZ
        } else {
            IDLE_TICK_HZ
        }
    }

    pub fn interval_us(&self) -> u64 {
        1_000_000 / u64::from(self.rate_hz())
    }

    /// World position of an entity (children of a linkset are stored relative to the root).
    pub fn world_pos(&self, id: EntityId) -> Option<Vec3> {
        let e = self.entities.get(&id)?;
        match e.parent.and_then(|p| self.entities.get(&p)) {
            Some(root) => Some(root.pos + root.rot * e.pos),
            None => Some(e.pos),
        }
    }

    /// Advances the region by one tick at simulated time `now_us`, applying `inputs` first.
    /// Scripts do not run (see [`Region::tick_with`]).
    ///
    /// The step integrated is the time since the previous tick, at most `MAX_TICK_DT_MS`;
    /// the first tick integrates one nominal interval.
    pub fn tick(&mut self, now_us: u64, inputs: impl IntoIterator<Item = Input>) -> TickOutput {
        self.tick_with(now_us, inputs, &mut NoScripts)
    }

    /// Like [`Region::tick`], and runs the region's scripts through `scripts` after inputs and
    /// motion; their effects and new states are applied in the same tick, stamped with its
    /// generation, in script id order. So at every tick boundary the records are complete.
    pub fn tick_with(
        &mut self,
        now_us: u64,
        inputs: impl IntoIterator<Item = Input>,
        scripts: &mut dyn ScriptPass,
    ) -> TickOutput {
        let dt_us = if self.tick == 0 {
            self.interval_us()
        } else {
            now_us.saturating_sub(self.now_us).min(MAX_TICK_DT_MS * 1000)
        };
        let dt = dt_us as f32 * 1e-6;
        self.now_us = self.now_us.max(now_us);
        self.tick += 1;
        self.generation += 1;
        let mut stamp = Stamp { gen: self.generation, dirty: Vec::new() };
        let mut out = TickOutput { tick: self.tick, generation: self.generation, ..TickOutput::default() };

        let mut touches = Vec::new();
        self.arrivals.clear();
        let mut durable = crate::durable::Touched::default();
        for (index, input) in inputs.into_iter().enumerate() {
            let intent = crate::durable::Intent::of(&input);
            let result = if index >= MAX_INPUTS_PER_TICK {
                Err(InputError::TooManyInputs)
            } else {
                self.apply_input(input, &mut stamp, &mut out, &mut touches)
            };
            match result {
                Ok(()) => durable.applied(intent, &out),
                Err(error) => out.rejected.push(Rejected { index, error }),
            }
        }
        self.drop_orphan_scripts(&out.removed);

        self.step_motion(dt, &mut stamp, &mut out);

        let outcome = scripts.run(self, &touches);
        durable.saved(&outcome.saved);
        self.apply_script_outcome(outcome, &mut stamp, &mut out);

        // An entity removed and re-added in one tick is listed twice; report it once, in id order.
        stamp.dirty.sort_unstable();
        stamp.dirty.dedup();
        self.recent.record(self.generation - 1, self.generation, stamp.dirty.iter().copied());
        out.changes.reserve(stamp.dirty.len());
        for id in stamp.dirty {
            // Touched and then deleted in the same tick: only the removal is reported.
            let Some(e) = self.entities.get(&id) else {
                continue;
            };
            out.changes.push(if e.body_gen == self.generation {
                EntityChange::Full(Entity::clone(e))
            } else {
                EntityChange::Motion { id, pos: e.pos, rot: e.rot, vel: e.vel }
            });
        }
        out.interval_us = self.interval_us();
        out.durable = durable.record(self);
        out
    }

    /// Between two ticks, applies the crossing steps that must not wait for the next one (see
    /// [`crate::border`]): the crossing protocol's record and departures of held units, and
    /// nothing else (any other input is refused). It is a step of its own: a fresh generation,
    /// the same tick number, nothing moves and no script runs. The output holds the removals
    /// (the caller reports them with the next tick's), refusals and the durable record.
    pub fn amend(&mut self, inputs: impl IntoIterator<Item = Input>) -> TickOutput {
        self.generation += 1;
        let mut stamp = Stamp { gen: self.generation, dirty: Vec::new() };
        let mut out = TickOutput { tick: self.tick, generation: self.generation, ..TickOutput::default() };
        let mut touches = Vec::new();
        let mut durable = crate::durable::Touched::default();
        for (index, input) in inputs.into_iter().enumerate() {
            let intent = crate::durable::Intent::of(&input);
            let result = match input {
                _ if index >= MAX_INPUTS_PER_TICK => Err(InputError::TooManyInputs),
                Input::Border { .. } | Input::Depart { .. } => {
                    self.apply_input(input, &mut stamp, &mut out, &mut touches)
                }
                _ => Err(invalid("only crossing records and departures amend a region between ticks")),
            };
            match result {
                Ok(()) => durable.applied(intent, &out),
                Err(error) => out.rejected.push(Rejected { index, error }),
            }
        }
        self.drop_orphan_scripts(&out.removed);
        debug_assert!(stamp.dirty.is_empty(), "an amendment moves nothing");
        self.recent.record(self.generation - 1, self.generation, stamp.dirty.iter().copied());
        out.interval_us = self.interval_us();
        out.durable = durable.record(self);
        out
    }

    /// Writes the crossing protocol's record into the tick that just ran, as if it had been
    /// one of its inputs: for a caller that decides on the tick's output (offers of units that
    /// reached an edge) before anything of the tick was observed. `out` must be that tick's
    /// output; its durable record then includes the crossing record.
    pub fn amend_tick_border(&mut self, state: Vec<u8>, out: &mut TickOutput) -> Result<(), InputError> {
        if out.generation != self.generation || out.tick != self.tick {
            return Err(invalid("the crossing record amends only the tick that just ran"));
        }
        if state.len() > MAX_BORDER_STATE_BYTES {
            return Err(invalid("border record larger than MAX_BORDER_STATE_BYTES"));
        }
        if state == self.border {
            return Ok(());
        }
        self.border = state;
        self.border_gen = self.generation;
        let record = (self.generation, crate::scripts::ByteVec(self.border.clone()));
        match out.durable.as_mut() {
            Some(d) => d.border = Some(record),
            None => {
                let mut touched = crate::durable::Touched::default();
                touched.applied(crate::durable::Intent::Other, out);
                out.durable = touched.record(self);
            }
        }
        Ok(())
    }

    fn apply_input(
        &mut self,
        input: Input,
        stamp: &mut Stamp,
        out: &mut TickOutput,
        touches: &mut Vec<Touch>,
    ) -> Result<(), InputError> {
        match input {
            Input::AddAvatar { id, name, owner, pos } => {
                validate_name(&name).map_err(invalid)?;
                if self.entities.contains_key(&id) {
                    return Err(InputError::AlreadyPresent(id));
                }
                self.ensure_room()?;
                let pos = match pos {
                    Some(p) => finite(p)?,
                    None => Vec3::new(REGION_SIZE / 2.0, REGION_SIZE / 2.0, 0.0),
                };
                let pos = self.clamp_xy(pos);
                let ground = self.terrain.height_at(pos.x, pos.y) + AVATAR_HALF_HEIGHT;
                let avatar = Entity {
                    id,
                    kind: Kind::Avatar(AvatarState {
                        controls: Default::default(),
                        yaw: 0.0,
                        flying: false,
                        grounded: pos.z <= ground,
                        seat: None,
                    }),
                    pos: Vec3::new(pos.x, pos.y, pos.z.max(ground)),
                    rot: Quat::IDENTITY,
                    vel: Vec3::ZERO,
                    scale: Vec3::new(0.5, 0.4, 2.0 * AVATAR_HALF_HEIGHT),
                    shape: Shape::Body,
                    owner,
                    name,
                    text: String::new(),
                    parent: None,
                    gen: 0,
                    body_gen: 0,
                };
                self.insert(avatar, stamp);
            }
            Input::RemoveAvatar { id } => {
                // Held at a border: it leaves with the crossing; the caller removes it there.
                self.not_held(id)?;
                self.avatar_mut(id)?;
                self.remove(id, out);
            }
            Input::Controls { id, controls } => {
                let e = self.avatar_mut(id)?;
                let Kind::Avatar(a) = &mut e.kind else { unreachable!() };
                let controls = controls.clamped();
                if a.controls != controls {
                    a.controls = controls;
                    stamp.body(e);
                }
            }
            Input::Sit { avatar, object } => {
                self.object(object)?;
                self.not_held(object)?;
                self.not_held(avatar)?;
                let e = self.avatar_mut(avatar)?;
                let Kind::Avatar(a) = &mut e.kind else { unreachable!() };
                a.seat = Some(object);
                e.vel = Vec3::ZERO;
                stamp.body(e);
            }
            Input::Stand { avatar } => {
                self.not_held(avatar)?;
                let e = self.avatar_mut(avatar)?;
                let Kind::Avatar(a) = &mut e.kind else { unreachable!() };
                if a.seat.take().is_some() {
                    a.grounded = false;
                    stamp.body(e);
                }
            }
            Input::CreateObject { tag, spec } => {
                let id = self.create_object(spec, stamp)?;
                out.created.push(Created { tag, id });
            }
            Input::EditObject { id, edit } => {
                self.not_held(id)?;
                self.edit_object(id, edit, stamp)?
            }
            Input::DeleteObject { id } => {
                self.not_held(id)?;
                self.delete_object(id, out)?;
                self.unseat_from_missing(stamp);
            }
            Input::Link { root, child } => {
                self.not_held(root)?;
                self.not_held(child)?;
                self.link(root, child, stamp)?
            }
            Input::Unlink { child } => {
                self.not_held(child)?;
                let pos = self.world_pos(child).ok_or(InputError::UnknownEntity(child))?;
                let e = self.object_mut(child)?;
                let Some(root) = e.parent else {
                    return Err(InputError::LinkRefused(format!("{child} is not linked")));
                };
                let root_rot = self.entities[&root].rot;
                let e = self.entity_mut(child).expect("checked above");
                e.parent = None;
                e.pos = pos;
                e.rot = root_rot * e.rot;
                stamp.body(e);
            }
            Input::EditTerrain { x, y, radius, delta } => {
                if !(x.is_finite() && y.is_finite() && radius.is_finite() && delta.is_finite()) {
                    return Err(invalid("terrain edit is not a number"));
                }
                if !(0.0..REGION_SIZE).contains(&x) || !(0.0..REGION_SIZE).contains(&y) {
                    return Err(invalid("terrain edit outside the region"));
                }
                let delta = delta.clamp(-MAX_TERRAIN_BRUSH, MAX_TERRAIN_BRUSH);
                if self.terrain.edit(x, y, radius, delta, stamp.gen) {
                    out.terrain_changed = true;
                }
            }
            Input::Touch { avatar, object } => {
                self.avatar_mut(avatar)?;
                self.object(object)?;
                touches.push(Touch { avatar, object });
            }
            Input::AddModule { bytes } => {
                let hash = check_new_module(&self.scripts, &bytes)?;
                self.scripts.modules.entry(hash).or_insert(ModuleBlob { gen: stamp.gen, bytes });
            }
            Input::AddScript { object, module } => {
                self.object(object)?;
                self.add_script(object, module, None, stamp.gen)?;
            }
            Input::RemoveScript { id } => {
                if self.scripts.records.remove(&id).is_none() {
                    return Err(InputError::UnknownScript(id));
                }
                self.script_tombstones.insert(id, stamp.gen);
                self.prune_tombstones();
            }
            Input::Rez { tag, template, pos } => {
                let id = self.rez(&template, pos, None, stamp)?;
                out.created.push(Created { tag, id });
            }
            Input::DefineTemplate { name, spec, scripts } => {
                let t = Template { gen: stamp.gen, spec, scripts };
                crate::scripts::validate_template(&name, &t, stamp.gen, |h| {
                    self.scripts.modules.contains_key(&h)
                })
                .map_err(invalid)?;
                if !self.scripts.templates.contains_key(&name)
                    && self.scripts.templates.len() >= MAX_TEMPLATES
                {
                    return Err(InputError::TooManyScripts(
                        "the region holds MAX_TEMPLATES templates".into(),
                    ));
                }
                self.scripts.templates.insert(name, t);
            }
            Input::Depart { root } => {
                if self.held_towards(root).is_none() {
                    return Err(invalid(format!("{root} is not held at the border")));
                }
                let members = self.unit_members(root);
                for id in members {
                    self.remove(id, out);
                }
            }
            Input::Return { root } => {
                if self.held_towards(root).is_none() {
                    return Err(invalid(format!("{root} is not held at the border")));
                }
                let e = self.entity_mut(root).expect("held, so present");
                for axis in 0..2 {
                    if e.pos[axis] < 0.0 || e.pos[axis] >= REGION_SIZE {
                        e.pos[axis] = e.pos[axis].clamp(0.0, REGION_SIZE - EDGE);
                        e.vel[axis] = if e.is_avatar() { 0.0 } else { -e.vel[axis] };
                    }
                }
                stamp.motion(e);
                self.place_riders(root, stamp);
            }
            Input::Arrive { from, entities, scripts, modules } => {
                self.arrive(from, entities, scripts, modules, stamp, out)?
            }
            Input::Border { state } => {
                if state.len() > MAX_BORDER_STATE_BYTES {
                    return Err(invalid("border record larger than MAX_BORDER_STATE_BYTES"));
                }
                if state != self.border {
                    self.border = state;
                    self.border_gen = stamp.gen;
                }
            }
        }
        Ok(())
    }

    /// Inserts a unit adopted from the neighbour `from`: checked whole first, then inserted
    /// with fresh generation stamps (rows keep ids and content, not the sender's stamps).
    fn arrive(
        &mut self,
        from: RegionId,
        entities: Vec<Entity>,
        scripts: Vec<ScriptRecord>,
        modules: Vec<Vec<u8>>,
        stamp: &mut Stamp,
        out: &mut TickOutput,
    ) -> Result<(), InputError> {
        let dx = (i32::from(from.x) - i32::from(self.id.x)) as f32 * REGION_SIZE;
        let dy = (i32::from(from.y) - i32::from(self.id.y)) as f32 * REGION_SIZE;
        if dx.abs() > REGION_SIZE || dy.abs() > REGION_SIZE || from == self.id {
            return Err(invalid(format!("region {from} is not a neighbour of {}", self.id)));
        }
        if entities.len() > crate::limits::MAX_LINKSET_CHILDREN + 1 + MAX_ARRIVING_RIDERS {
            return Err(invalid("arriving unit has too many entities"));
        }
        for e in &entities {
            e.validate().map_err(invalid)?;
            if self.entities.contains_key(&e.id) {
                return Err(InputError::AlreadyPresent(e.id));
            }
        }
        let ids: Vec<EntityId> = entities.iter().map(|e| e.id).collect();
        for r in &scripts {
            if !ids.contains(&r.object) {
                return Err(invalid("an arriving script lives outside its unit"));
            }
            if self.scripts.records.contains_key(&r.id) {
                return Err(invalid(format!("script {} is already in this region", r.id)));
            }
        }
        if modules.len() > MAX_SCRIPT_MODULES {
            return Err(invalid("arriving unit carries more than MAX_SCRIPT_MODULES modules"));
        }
        for bytes in modules {
            // A module the region lacks (or cannot take) leaves its scripts out, reported below.
            if let Ok(hash) = check_new_module(&self.scripts, &bytes) {
                self.scripts.modules.entry(hash).or_insert(ModuleBlob { gen: stamp.gen, bytes });
            }
        }
        let shift = Vec3::new(dx, dy, 0.0);
        let mut roots = Vec::new();
        for mut e in entities {
            // Children stay relative to their root; roots and riders move into this frame.
            if !e.is_avatar() {
                self.arrivals.push((e.id, from));
            }
            if e.parent.is_none() {
                e.pos = self.clamp_xy(e.pos + shift);
                if !e.is_avatar() || e.avatar().is_some_and(|a| a.seat.is_none()) {
                    roots.push(e.id);
                }
            }
            self.insert(e, stamp);
        }
        for mut r in scripts {
            if !self.scripts.modules.contains_key(&r.module) {
                // Its module did not come along (or was refused): reported, not kept half.
                out.script_refused
                    .push(ScriptRefused { script: r.id, error: InputError::UnknownModule(r.module) });
                continue;
            }
            r.created = stamp.gen;
            r.gen = stamp.gen;
            r.control_gen = stamp.gen;
            for c in &mut r.chunks {
                c.gen = stamp.gen;
            }
            self.script_tombstones.remove(&r.id);
            self.scripts.records.insert(r.id, Arc::new(r));
        }
        for root in roots {
            self.place_riders(root, stamp);
        }
        Ok(())
    }

    /// Puts the avatars seated on `root` on their seat again (after it moved by an input).
    fn place_riders(&mut self, root: EntityId, stamp: &mut Stamp) {
        let Some(r) = self.entities.get(&root) else { return };
        let target = r.pos + Vec3::Z * (r.scale.z * 0.5 + AVATAR_HALF_HEIGHT);
        for row in self.entities.values_mut() {
            if row.avatar().and_then(|a| a.seat) == Some(root) && row.pos != target {
                let e = Arc::make_mut(row);
                e.pos = target;
                stamp.motion(e);
            }
        }
    }

    /// A new script record, not started: the host instantiates it on its next script pass.
    fn add_script(
        &mut self,
        object: EntityId,
        module: ModuleHash,
        creator: Option<(EntityId, i32)>,
        gen: u64,
    ) -> Result<ScriptId, InputError> {
        if !self.scripts.modules.contains_key(&module) {
            return Err(InputError::UnknownModule(module));
        }
        if self.scripts.records.len() >= MAX_SCRIPTS {
            return Err(InputError::TooManyScripts("the region holds MAX_SCRIPTS scripts".into()));
        }
        if self.scripts.records.values().filter(|r| r.object == object).count() >= MAX_SCRIPTS_PER_OBJECT {
            return Err(InputError::TooManyScripts("the object holds MAX_SCRIPTS_PER_OBJECT scripts".into()));
        }
        let id =
            ScriptId(u64::from(self.id.x) << 48 | u64::from(self.id.y) << 32 | u64::from(self.next_serial));
        self.next_serial = self.next_serial.wrapping_add(1);
        if self.scripts.records.contains_key(&id) {
            // A serial that wrapped around onto a live script: refuse rather than overwrite.
            return Err(InputError::TooManyScripts("script serials wrapped onto a live script".into()));
        }
        let seed = splitmix64(u64::from(self.terrain.seed) << 32 ^ id.0 ^ self.generation);
        self.script_tombstones.remove(&id);
        self.scripts.records.insert(
            id,
            Arc::new(ScriptRecord {
                id,
                object,
                module,
                start: ScriptStart { seed, creator },
                created: gen,
                gen,
                chunks: vec![MemoryChunk { gen, bytes: Vec::new() }; SCRIPT_CHUNKS],
                control: Vec::new(),
                control_gen: gen,
            }),
        );
        Ok(id)
    }

    /// An object made from a template, with its scripts.
    fn rez(
        &mut self,
        template: &str,
        pos: Vec3,
        creator: Option<(EntityId, i32)>,
        stamp: &mut Stamp,
    ) -> Result<EntityId, InputError> {
        let t = self
            .scripts
            .templates
            .get(template)
            .ok_or_else(|| InputError::UnknownTemplate(template.into()))?;
        let (spec, modules) = (ObjectSpec { pos, ..t.spec.clone() }, t.scripts.clone());
        if self.scripts.records.len() + modules.len() > MAX_SCRIPTS {
            return Err(InputError::TooManyScripts("the region holds MAX_SCRIPTS scripts".into()));
        }
        let id = self.create_object(spec, stamp)?;
        for m in modules {
            self.add_script(id, m, creator, stamp.gen)?;
        }
        Ok(id)
    }

    /// Scripts go with their object: records of removed entities become tombstones.
    fn drop_orphan_scripts(&mut self, removed: &[EntityId]) {
        if removed.is_empty() || self.scripts.records.is_empty() {
            return;
        }
        let gone: Vec<ScriptId> = self
            .scripts
            .records
            .values()
            .filter(|r| !self.entities.contains_key(&r.object))
            .map(|r| r.id)
            .collect();
        for id in gone {
            self.scripts.records.remove(&id);
            self.script_tombstones.insert(id, self.generation);
        }
        self.prune_tombstones();
    }

    /// Applies what the scripts did: effects in script id order, then their new states. Bad
    /// effects are refused one by one and reported; the others still apply.
    fn apply_script_outcome(&mut self, outcome: ScriptOutcome, stamp: &mut Stamp, out: &mut TickOutput) {
        let removed_before = out.removed.len();
        let mut created = 0usize;
        debug_assert!(outcome.effects.windows(2).all(|w| w[0].script < w[1].script));
        for fx in outcome.effects {
            for effect in fx.effects {
                if let Err(error) = self.apply_script_effect(fx.object, effect, &mut created, stamp, out) {
                    out.script_refused.push(ScriptRefused { script: fx.script, error });
                }
            }
        }
        if out.removed.len() > removed_before {
            self.unseat_from_missing(stamp);
            self.drop_orphan_scripts(&out.removed[removed_before..].to_vec());
        }
        for mut stopped in outcome.stopped.into_iter().take(MAX_SCRIPT_ERRORS_PER_TICK) {
            stopped.owner = self.entities.get(&stopped.object).map_or(0, |e| e.owner);
            truncate_utf8(&mut stopped.kind, MAX_SCRIPT_ERROR_KIND_BYTES);
            truncate_utf8(&mut stopped.message, MAX_SCRIPT_ERROR_MESSAGE_BYTES);
            out.script_errors.push(stopped);
        }
        for update in outcome.updates {
            // A script whose object was deleted by this tick's effects is gone already.
            // Copied here if a full copy of the region still shares it.
            let Some(r) = self.scripts.records.get_mut(&update.id).map(Arc::make_mut) else { continue };
            let mut changed = false;
            for (index, bytes) in update.chunks {
                let Some(chunk) = r.chunks.get_mut(usize::from(index)) else { continue };
                if bytes.len() != SCRIPT_CHUNK_BYTES || chunk.holds(&bytes) {
                    continue;
                }
                *chunk = MemoryChunk { gen: stamp.gen, bytes: MemoryChunk::canonical(&bytes) };
                changed = true;
            }
            if update.control != r.control && update.control.len() <= MAX_SCRIPT_CONTROL_BYTES {
                r.control = update.control;
                r.control_gen = stamp.gen;
                changed = true;
            }
            if changed {
                r.gen = stamp.gen;
            }
        }
    }

    fn apply_script_effect(
        &mut self,
        object: EntityId,
        effect: ScriptEffect,
        created: &mut usize,
        stamp: &mut Stamp,
        out: &mut TickOutput,
    ) -> Result<(), InputError> {
        let edit = match effect {
            ScriptEffect::SetPos(p) => ObjectEdit { pos: Some(p), ..Default::default() },
            ScriptEffect::SetRot(r) => ObjectEdit { rot: Some(r), ..Default::default() },
            ScriptEffect::SetVel(v) => ObjectEdit { vel: Some(v), ..Default::default() },
            ScriptEffect::SetScale(s) => ObjectEdit { scale: Some(s), ..Default::default() },
            ScriptEffect::SetText(t) => ObjectEdit { text: Some(t), ..Default::default() },
            ScriptEffect::DeleteSelf => {
                // An earlier effect of this tick may have deleted it already.
                if self.entities.contains_key(&object) {
                    self.delete_object(object, out)?;
                }
                return Ok(());
            }
            ScriptEffect::CreateObject { template, pos, param } => {
                if *created >= MAX_SCRIPT_CREATIONS_PER_TICK {
                    return Err(InputError::TooManyScripts("MAX_SCRIPT_CREATIONS_PER_TICK reached".into()));
                }
                *created += 1;
                self.rez(&template, pos, Some((object, param)), stamp)?;
                return Ok(());
            }
        };
        if !self.entities.contains_key(&object) {
            // Deleted earlier in this tick: its remaining effects have nothing to act on.
            return Ok(());
        }
        self.edit_object(object, edit, stamp)
    }

    fn delete_object(&mut self, id: EntityId, out: &mut TickOutput) -> Result<(), InputError> {
        let e = self.object(id)?;
        if e.parent.is_some() {
            // Deleting a child takes it out of its linkset only.
            self.remove(id, out);
        } else {
            let children: Vec<EntityId> = self.children_of(id).collect();
            for child in children {
                self.remove(child, out);
            }
            self.remove(id, out);
        }
        Ok(())
    }

    /// A unit held at the border is frozen: what it is offered as must stay what it is.
    fn not_held(&self, id: EntityId) -> Result<(), InputError> {
        if self.is_held(id) {
            return Err(InputError::Crossing(id));
        }
        Ok(())
    }

    fn ensure_room(&self) -> Result<(), InputError> {
        if self.entities.len() >= MAX_ENTITIES {
            return Err(InputError::RegionFull);
        }
        Ok(())
    }

    fn create_object(&mut self, spec: ObjectSpec, stamp: &mut Stamp) -> Result<EntityId, InputError> {
        validate_name(&spec.name).map_err(invalid)?;
        validate_text(&spec.text).map_err(invalid)?;
        validate_scale(spec.scale).map_err(invalid)?;
        let pos = self.clamp_xy(finite(spec.pos)?);
        let rot = finite_rot(spec.rot)?;
        let vel = clamp_speed(finite(spec.vel)?);
        self.ensure_room()?;
        let id =
            EntityId(u64::from(self.id.x) << 48 | u64::from(self.id.y) << 32 | u64::from(self.next_serial));
        if self.entities.contains_key(&id) {
            // An object with this id came back across a border: skip its serial.
            self.next_serial = self.next_serial.wrapping_add(1);
            return Err(InputError::AlreadyPresent(id));
        }
        self.next_serial = self.next_serial.wrapping_add(1);
        let ground = self.terrain.height_at(pos.x, pos.y) + spec.scale.z * 0.5;
        let object = Entity {
            id,
            kind: Kind::Object(ObjectState { physical: spec.physical }),
            pos: Vec3::new(pos.x, pos.y, pos.z.max(ground)),
            rot,
            vel,
            scale: spec.scale,
            shape: spec.shape,
            owner: spec.owner,
            name: spec.name,
            text: spec.text,
            parent: None,
            gen: 0,
            body_gen: 0,
        };
        self.insert(object, stamp);
        Ok(id)
    }

    fn edit_object(&mut self, id: EntityId, edit: ObjectEdit, stamp: &mut Stamp) -> Result<(), InputError> {
        // Validate everything before changing anything: an edit applies whole or not at all.
        if let Some(n) = &edit.name {
            validate_name(n).map_err(invalid)?;
        }
        if let Some(t) = &edit.text {
            validate_text(t).map_err(invalid)?;
        }
        if let Some(s) = edit.scale {
            validate_scale(s).map_err(invalid)?;
        }
        let pos = edit.pos.map(finite).transpose()?;
        let vel = edit.vel.map(finite).transpose()?.map(clamp_speed);
        let rot = edit.rot.map(finite_rot).transpose()?;
        let linked = self.object(id)?.parent.is_some();
        let pos = pos.map(|p| {
            if linked {
                p.clamp(Vec3::splat(-MAX_SCALE), Vec3::splat(MAX_SCALE))
            } else {
                self.clamp_xy(p)
            }
        });
        let e = self.object_mut(id)?;
        let mut body = false;
        let mut moved = false;
        if let Some(p) = pos {
            moved |= e.pos != p;
            e.pos = p;
        }
        if let Some(r) = rot {
            moved |= e.rot != r;
            e.rot = r;
        }
        if let Some(v) = vel {
            moved |= e.vel != v;
            e.vel = v;
        }
        if let Some(s) = edit.scale {
            body |= e.scale != s;
            e.scale = s;
        }
        if let Some(s) = edit.shape {
            body |= e.shape != s;
            e.shape = s;
        }
        if let Some(n) = edit.name {
            body |= e.name != n;
            e.name = n;
        }
        if let Some(t) = edit.text {
            body |= e.text != t;
            e.text = t;
        }
        if let Some(p) = edit.physical {
            let Kind::Object(o) = &mut e.kind else { unreachable!() };
            body |= o.physical != p;
            o.physical = p;
        }
        if body {
            stamp.body(e);
        } else if moved {
            stamp.motion(e);
        }
        Ok(())
    }

    fn link(&mut self, root: EntityId, child: EntityId, stamp: &mut Stamp) -> Result<(), InputError> {
        if root == child {
            return Err(InputError::LinkRefused("an object cannot link to itself".into()));
        }
        let r = self.object(root)?;
        if r.parent.is_some() {
            return Err(InputError::LinkRefused(format!("{root} is itself a child (MAX_LINK_DEPTH)")));
        }
        let (root_pos, root_rot) = (r.pos, r.rot);
        let c = self.object(child)?;
        if c.parent.is_some() {
            return Err(InputError::LinkRefused(format!("{child} is already linked")));
        }
        if self.children_of(child).next().is_some() {
            return Err(InputError::LinkRefused(format!("{child} is a linkset root (MAX_LINK_DEPTH)")));
        }
        if self.children_of(root).count() >= MAX_LINKSET_CHILDREN {
            return Err(InputError::LinkRefused("linkset has MAX_LINKSET_CHILDREN children".into()));
        }
        let inv = root_rot.inverse();
        let e = self.entity_mut(child).expect("checked above");
        e.pos = inv * (e.pos - root_pos);
        e.rot = inv * e.rot;
        e.vel = Vec3::ZERO;
        e.parent = Some(root);
        stamp.body(e);
        Ok(())
    }

    fn children_of(&self, root: EntityId) -> impl Iterator<Item = EntityId> + '_ {
        self.entities.values().filter(move |e| e.parent == Some(root)).map(|e| e.id)
    }

    fn insert(&mut self, mut e: Entity, stamp: &mut Stamp) {
        if e.is_avatar() {
            self.avatars += 1;
        }
        self.tombstones.remove(&e.id);
        e.gen = 0;
        stamp.body(&mut e);
        self.entities.insert(e.id, Arc::new(e));
    }

    fn remove(&mut self, id: EntityId, out: &mut TickOutput) {
        if let Some(e) = self.entities.remove(&id) {
            if e.is_avatar() {
                self.avatars -= 1;
            }
            self.tombstones.insert(id, self.generation);
            out.removed.push(id);
            self.prune_tombstones();
        }
    }

    /// Keeps the tombstone sets bounded: drops the older half of a set when it reaches the
    /// limit. Both sets share one floor: a delta must start after everything pruned.
    fn prune_tombstones(&mut self) {
        if self.tombstones.len() > MAX_TOMBSTONES {
            let cut = median_gen(self.tombstones.values());
            self.tombstones.retain(|_, g| *g > cut);
            self.tombstone_floor = self.tombstone_floor.max(cut);
        }
        if self.script_tombstones.len() > MAX_TOMBSTONES {
            let cut = median_gen(self.script_tombstones.values());
            self.script_tombstones.retain(|_, g| *g > cut);
            self.tombstone_floor = self.tombstone_floor.max(cut);
        }
    }

    /// Avatars sitting on an object that is gone stand up.
    fn unseat_from_missing(&mut self, stamp: &mut Stamp) {
        let missing: Vec<EntityId> = self
            .entities
            .values()
            .filter_map(|e| match &e.kind {
                Kind::Avatar(AvatarState { seat: Some(s), .. }) if !self.entities.contains_key(s) => {
                    Some(e.id)
                }
                _ => None,
            })
            .collect();
        for id in missing {
            let e = self.entity_mut(id).expect("just found");
            if let Kind::Avatar(a) = &mut e.kind {
                a.seat = None;
                a.grounded = false;
            }
            stamp.body(e);
        }
    }

    fn object(&self, id: EntityId) -> Result<&Entity, InputError> {
        match self.entities.get(&id) {
            Some(e) if !e.is_avatar() => Ok(e),
            Some(_) => Err(InputError::NotAnObject(id)),
            None => Err(InputError::UnknownEntity(id)),
        }
    }

    fn object_mut(&mut self, id: EntityId) -> Result<&mut Entity, InputError> {
        match self.entity_mut(id) {
            Some(e) if !e.is_avatar() => Ok(e),
            Some(_) => Err(InputError::NotAnObject(id)),
            None => Err(InputError::UnknownEntity(id)),
        }
    }

    fn avatar_mut(&mut self, id: EntityId) -> Result<&mut Entity, InputError> {
        match self.entity_mut(id) {
            Some(e) if e.is_avatar() => Ok(e),
            Some(_) => Err(InputError::NotAnAvatar(id)),
            None => Err(InputError::UnknownEntity(id)),
        }
    }

    fn clamp_xy(&self, p: Vec3) -> Vec3 {
        Vec3::new(
            p.x.clamp(0.0, REGION_SIZE - EDGE),
            p.y.clamp(0.0, REGION_SIZE - EDGE),
            p.z.clamp(TERRAIN_MIN_HEIGHT, TERRAIN_MAX_HEIGHT + MAX_FLY_ALTITUDE),
        )
    }

    /// Moves everything that moves by `dt` seconds.
    fn step_motion(&mut self, dt: f32, stamp: &mut Stamp, out: &mut TickOutput) {
        let terrain = &self.terrain;
        let open = self.neighbours;
        let region = self.id;
        let mut seated: Vec<(EntityId, EntityId)> = Vec::new();
        for row in self.entities.values_mut() {
            if row.parent.is_none() && crate::border::outside(row.pos) {
                continue; // held at the border until the crossing is settled
            }
            // A row is written (and copied, if a full copy still shares it) only if it moves.
            let moved = match &row.kind {
                Kind::Object(o) => {
                    let physical = o.physical;
                    if row.parent.is_some() || at_rest(row, physical, terrain) {
                        continue;
                    }
                    step_object(Arc::make_mut(row), physical, terrain, dt, open)
                }
                Kind::Avatar(a) => {
                    if let Some(seat) = a.seat {
                        seated.push((row.id, seat));
                        continue;
                    }
                    step_avatar(Arc::make_mut(row), terrain, dt, open)
                }
            };
            if moved {
                stamp.motion(Arc::make_mut(row));
            }
            if row.parent.is_none() && crate::border::outside(row.pos) {
                let (dx, dy) = crate::border::side(row.pos);
                if let Some(to) = crate::border::offset(region, dx, dy) {
                    out.leaving.push((row.id, to));
                }
            }
        }
        for (avatar, seat) in seated {
            let Some(s) = self.entities.get(&seat) else {
                continue;
            };
            let target = s.pos + Vec3::Z * (s.scale.z * 0.5 + AVATAR_HALF_HEIGHT);
            let e = self.entity_mut(avatar).expect("collected above");
            if e.pos != target {
                e.pos = target;
                stamp.motion(e);
            }
        }
    }
}

/// Whether an object stays where it is this tick: still, and resting on the ground if it
/// is physical.
fn at_rest(e: &Entity, physical: bool, terrain: &Terrain) -> bool {
    e.vel == Vec3::ZERO && (!physical || e.pos.z <= terrain.height_at(e.pos.x, e.pos.y) + e.scale.z * 0.5)
}

/// Returns whether the object moved.
fn step_object(e: &mut Entity, physical: bool, terrain: &Terrain, dt: f32, open: Neighbours) -> bool {
    if at_rest(e, physical, terrain) {
        return false;
    }
    let ground = |p: Vec3| terrain.height_at(p.x, p.y) + e.scale.z * 0.5;
    let (old_pos, old_vel) = (e.pos, e.vel);
    if physical {
        e.vel.z -= GRAVITY * dt;
    }
    let mut p = e.pos + e.vel * dt;
    // Past an edge towards a neighbour: held there for a crossing. Else bounce off it.
    edge(&mut p, &mut e.vel, open, -1.0);
    let g = ground(p);
    if p.z <= g {
        p.z = g;
        if physical {
            e.vel.z = 0.0;
            let keep = (1.0 - GROUND_FRICTION * dt).max(0.0);
            e.vel.x *= keep;
            e.vel.y *= keep;
            if e.vel.length() < REST_SPEED {
                e.vel = Vec3::ZERO;
            }
        } else if e.vel.z < 0.0 {
            e.vel.z = 0.0;
        }
    }
    e.pos = p;
    e.pos != old_pos || e.vel != old_vel
}

/// Returns whether the avatar's pose or velocity changed.
fn step_avatar(e: &mut Entity, terrain: &Terrain, dt: f32, open: Neighbours) -> bool {
    let Kind::Avatar(a) = &mut e.kind else {
        return false;
    };
    let c = a.controls;
    let (old_pos, old_vel, old_yaw, old_flying) = (e.pos, e.vel, a.yaw, a.flying);
    if c.turn != 0 {
        a.yaw += f32::from(c.turn) * TURN_RATE * dt;
        if a.yaw > PI {
            a.yaw -= 2.0 * PI;
        } else if a.yaw < -PI {
            a.yaw += 2.0 * PI;
        }
    }
    a.flying = c.fly;
    let speed = if a.flying {
        FLY_SPEED
    } else if c.run {
        RUN_SPEED
    } else {
        WALK_SPEED
    };
    let (s, co) = a.yaw.sin_cos();
    let forward = Vec3::new(co, s, 0.0);
    let left = Vec3::new(-s, co, 0.0);
    let horizontal =
        (forward * f32::from(c.forward) + left * f32::from(c.strafe)).normalize_or_zero() * speed;
    e.vel.x = horizontal.x;
    e.vel.y = horizontal.y;

    let mut p = e.pos;
    p.x += e.vel.x * dt;
    p.y += e.vel.y * dt;
    edge(&mut p, &mut e.vel, open, 0.0);
    // Outside the square the ground is the edge's (`height_at` clamps).
    let ground = terrain.height_at(p.x, p.y) + AVATAR_HALF_HEIGHT;
    if a.flying {
        e.vel.z = f32::from(c.up) * FLY_VERTICAL_SPEED;
        p.z = (p.z + e.vel.z * dt).clamp(ground, ground + MAX_FLY_ALTITUDE);
        a.grounded = p.z <= ground;
    } else {
        if a.grounded && c.jump {
            e.vel.z = JUMP_SPEED;
            a.grounded = false;
        }
        if a.grounded && p.z - ground <= GROUND_SNAP {
            p.z = ground;
            e.vel.z = 0.0;
        } else {
            e.vel.z -= GRAVITY * dt;
            p.z += e.vel.z * dt;
            if p.z <= ground {
                p.z = ground;
                e.vel.z = 0.0;
                a.grounded = true;
            } else {
                a.grounded = false;
            }
        }
    }
    e.pos = p;
    if a.yaw != old_yaw {
        e.rot = Quat::from_rotation_z(a.yaw);
    }
    e.pos != old_pos || e.vel != old_vel || a.yaw != old_yaw || a.flying != old_flying
}

/// Keeps `p` inside the square on every axis whose edge has no neighbour beyond it, scaling
/// that axis's velocity by `bounce` (-1 bounces, 0 stops). Past an edge towards a neighbour
/// (diagonal ones too) `p` may leave the square: the entity is then held for a crossing.
fn edge(p: &mut Vec3, vel: &mut Vec3, open: Neighbours, bounce: f32) {
    let (dx, dy) = crate::border::side(*p);
    if open.has(dx, dy) {
        return;
    }
    for axis in 0..2 {
        let dir = if p[axis] < 0.0 {
            -1
        } else if p[axis] > REGION_SIZE - EDGE {
            1
        } else {
            continue;
        };
        let (dx, dy) = if axis == 0 { (dir, 0) } else { (0, dir) };
        if open.has(dx, dy) {
            continue;
        }
        p[axis] = p[axis].clamp(0.0, REGION_SIZE - EDGE);
        vel[axis] *= bounce;
    }
}

fn median_gen<'a>(gens: impl Iterator<Item = &'a u64>) -> u64 {
    let mut gens: Vec<u64> = gens.copied().collect();
    let mid = gens.len() / 2;
    let (_, &mut cut, _) = gens.select_nth_unstable(mid);
    cut
}

/// SplitMix64: spreads a derived seed over all 64 bits.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn invalid(reason: impl Into<String>) -> InputError {
    InputError::Invalid(reason.into())
}

fn finite(v: Vec3) -> Result<Vec3, InputError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(invalid("vector is not a number"))
    }
}

fn finite_rot(q: Quat) -> Result<Quat, InputError> {
    if q.is_finite() && q.length_squared() > 1e-6 {
        Ok(q.normalize())
    } else {
        Err(invalid("rotation is not a unit quaternion"))
    }
}

fn clamp_speed(v: Vec3) -> Vec3 {
    v.clamp_length_max(MAX_SPEED)
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
