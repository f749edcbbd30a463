//! The read-only view of the world a script sees while its events run.
//!
//! The caller (the region) implements [`WorldView`] over its own tables; scripts read it
//! through host calls and never change it: changes come back as effects.

use world::{EntityId, Quat, RegionId, Vec3};

/// Pose and size of an entity, as a script reads them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose {
    pub pos: Vec3,
    pub rot: Quat,
    pub vel: Vec3,
    pub scale: Vec3,
}

/// Which kinds of entity a sensor looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SensorKinds {
    pub avatars: bool,
    pub objects: bool,
}

/// One entity a sensor found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sensed {
    pub id: EntityId,
    pub avatar: bool,
    pub pos: Vec3,
}

/// What scripts may read of the world during one batch. Shared by all threads of the batch,
/// hence `Sync`; it is only read.
pub trait WorldView: Sync {
    /// Simulation time in milliseconds (the tick's time, not a wall clock).
    fn now_ms(&self) -> u64;
    /// The region the scripts run in.
    fn region(&self) -> RegionId;
    /// Pose of an entity (a script asks about its own object).
    fn pose(&self, id: EntityId) -> Option<Pose>;
    /// Floating text of an entity.
    fn text(&self, id: EntityId) -> Option<&str>;
    /// Appends to `out` the entities of the given kinds within `range` metres of `origin`.
    /// Order does not matter and extra entities are harmless: the engine filters by range and
    /// kind, drops the script's own object, sorts by distance then id and keeps the nearest.
    fn sensor(&self, origin: Vec3, range: f32, kinds: SensorKinds, out: &mut Vec<Sensed>);
    /// Whether the scripts of this object are paused this tick (its object is held at a
    /// region border while it crosses): they run no events and their timers wait.
    fn paused(&self, _object: EntityId) -> bool {
        false
    }
}

/// A `WorldView` made of plain data, for tests, benchmarks and tools.
#[derive(Clone, Debug)]
pub struct StaticView {
    pub now_ms: u64,
    pub region: RegionId,
    /// Entities by id: (pose, is avatar, text).
    pub entities: std::collections::BTreeMap<EntityId, (Pose, bool, String)>,
}

impl StaticView {
    pub fn new(now_ms: u64, region: RegionId) -> StaticView {
        StaticView { now_ms, region, entities: Default::default() }
    }

    /// Adds an object or avatar at `pos`, unrotated, at rest, 1 m in size.
    pub fn insert(&mut self, id: EntityId, avatar: bool, pos: Vec3) {
        let pose = Pose { pos, rot: Quat::IDENTITY, vel: Vec3::ZERO, scale: Vec3::ONE };
        self.entities.insert(id, (pose, avatar, String::new()));
    }
}

impl WorldView for StaticView {
    fn now_ms(&self) -> u64 {
        self.now_ms
    }
    fn region(&self) -> RegionId {
        self.region
    }
    fn pose(&self, id: EntityId) -> Option<Pose> {
        self.entities.get(&id).map(|e| e.0)
    }
    fn text(&self, id: EntityId) -> Option<&str> {
        self.entities.get(&id).map(|e| e.2.as_str())
    }
    fn sensor(&self, origin: Vec3, range: f32, kinds: SensorKinds, out: &mut Vec<Sensed>) {
        for (id, (pose, avatar, _)) in &self.entities {
            let wanted = if *avatar { kinds.avatars } else { kinds.objects };
            if wanted && pose.pos.distance(origin) <= range {
                out.push(Sensed { id: *id, avatar: *avatar, pos: pose.pos });
            }
        }
    }
}
