//! Units for the tests: a vehicle (a root with linked children and seated avatars) built from
//! plain `world` entities.

use world::{AvatarState, Entity, EntityId, Kind, ObjectState, Quat, Shape, Vec3};

fn entity(id: u64, kind: Kind, parent: Option<EntityId>) -> Entity {
    Entity {
        id: EntityId(id),
        kind,
        pos: Vec3::new(250.0, 10.0, 30.0),
        rot: Quat::IDENTITY,
        vel: Vec3::new(3.0, 0.0, 0.0),
        scale: Vec3::ONE,
        shape: Shape::Box,
        owner: 7,
        name: format!("e{id}"),
        text: String::new(),
        parent,
        gen: 1,
        body_gen: 1,
    }
}

/// A vehicle with root id `root`, `children` linked parts and `riders` seated avatars.
pub fn vehicle(root: u64, children: u64, riders: u64) -> crossing::Unit {
    let r = EntityId(root);
    let mut entities = vec![entity(root, Kind::Object(ObjectState { physical: true }), None)];
    entities.extend(
        (1..=children).map(|k| entity(root + k, Kind::Object(ObjectState { physical: false }), Some(r))),
    );
    entities.extend((1..=riders).map(|k| {
        let a = AvatarState {
            controls: Default::default(),
            yaw: 0.0,
            flying: false,
            grounded: false,
            seat: Some(r),
        };
        entity(root + 1000 + k, Kind::Avatar(a), None)
    }));
    crossing::Unit { root: r, entities, scripts: Vec::new(), modules: Vec::new() }
}

/// A started script living in `object`, with some memory and control state.
pub fn script(id: u64, object: EntityId) -> world::ScriptRecord {
    world::ScriptRecord {
        id: world::ScriptId(id),
        object,
        module: world::ModuleHash(0xfeed_u128 << 64 | id as u128),
        start: world::ScriptStart { seed: id, creator: None },
        created: 1,
        gen: 2,
        chunks: vec![world::MemoryChunk { gen: 2, bytes: vec![7; 64] }],
        control: vec![1, 2, 3],
        control_gen: 2,
    }
}
