//! Snapshots and deltas reproduce a region exactly: same canonical bytes, same hash, with
//! scripts writing their memory and control state and acting on the world along the way.

use std::sync::OnceLock;

use proptest::prelude::*;
use world::{
    Controls, Entity, EntityId, Input, Kind, ModuleHash, Neighbours, ObjectEdit, ObjectEffects, ObjectSpec,
    ObjectState, Quat, Region, RegionId, ScriptEffect, ScriptId, ScriptOutcome, ScriptPass, ScriptUpdate,
    Shape, Terrain, Touch, Vec3,
};

const REGION: RegionId = RegionId::new(3, 7);
const TICK_US: u64 = 22_222;

/// A region with a few scripted objects already in it, so every run has scripts to mutate.
fn base_region() -> Region {
    static TERRAIN: OnceLock<Terrain> = OnceLock::new();
    let mut r = Region::with_terrain(REGION, TERRAIN.get_or_init(|| Terrain::generate(42, REGION)).clone());
    // Open towards some neighbours: entities that reach those edges are held for crossings.
    r.set_neighbours(Neighbours::of(REGION, |n| n.x >= REGION.x && n.y != REGION.y + 1));
    let mut setup: Vec<Input> = MODULES.iter().map(|m| Input::AddModule { bytes: m.to_vec() }).collect();
    setup.extend((0..4).map(|t| Input::CreateObject { tag: t, spec: ObjectSpec::default() }));
    // Serials 1..=4 went to the objects; the scripts get the next ones.
    setup.extend((0..4u8).map(|k| Input::AddScript { object: object(k), module: module(k) }));
    let out = r.tick(0, setup);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(r.script_count(), 4);
    r
}

fn avatar(k: u8) -> EntityId {
    EntityId(0xA000_0000 + u64::from(k % 6))
}

/// Objects get serial ids from their region; the first few dozen are the likely ones.
fn object(k: u8) -> EntityId {
    EntityId(u64::from(REGION.x) << 48 | u64::from(REGION.y) << 32 | u64::from(1 + k % 24))
}

/// Scripts take ids from the same serial as objects.
fn script(k: u8) -> ScriptId {
    ScriptId(object(k).0)
}

/// Three stand-in module binaries: the region stores bytes; only a host compiles them.
const MODULES: [&[u8]; 3] = [b"\0asm module one", b"\0asm module two", b"\0asm module three"];

fn module(k: u8) -> ModuleHash {
    ModuleHash::of(MODULES[usize::from(k) % MODULES.len()])
}

/// What a stand-in script does in one tick: write a chunk, change its control state, act.
#[derive(Clone, Debug)]
struct Action {
    pick: u8,
    chunk: u8,
    byte: u8,
    effect: u8,
}

fn action() -> impl Strategy<Value = Action> {
    (any::<u8>(), 0u8..16, any::<u8>(), 0u8..8).prop_map(|(pick, chunk, byte, effect)| Action {
        pick,
        chunk,
        byte,
        effect,
    })
}

/// Plays a script pass from a list of actions, deterministically from the region's records.
struct Stand(Vec<Action>);

impl ScriptPass for Stand {
    fn run(&mut self, region: &Region, touches: &[Touch]) -> ScriptOutcome {
        let records: Vec<_> = region.scripts().map(|r| (r.id, r.object, r.control.clone())).collect();
        let mut out = ScriptOutcome::default();
        if records.is_empty() {
            return out;
        }
        let mut effects = std::collections::BTreeMap::<ScriptId, ObjectEffects>::new();
        for a in self.0.drain(..) {
            let (id, object, control) = &records[usize::from(a.pick) % records.len()];
            let mut bytes = vec![0u8; 4096];
            bytes[usize::from(a.byte) % 4096] = a.byte;
            let mut control = control.clone();
            control.push(a.byte ^ touches.len() as u8);
            out.updates.push(ScriptUpdate { id: *id, chunks: vec![(a.chunk, bytes)], control });
            let effect = match a.effect {
                0 => ScriptEffect::SetPos(Vec3::new(f32::from(a.byte), 40.0, 30.0)),
                1 => ScriptEffect::SetText(format!("byte {}", a.byte)),
                2 => ScriptEffect::CreateObject {
                    template: "seed".into(),
                    pos: Vec3::new(f32::from(a.byte), 10.0, 30.0),
                    param: i32::from(a.byte),
                },
                3 => ScriptEffect::DeleteSelf,
                4 => ScriptEffect::SetScale(Vec3::splat(-1.0)),
                _ => continue,
            };
            effects
                .entry(*id)
                .or_insert_with(|| ObjectEffects { script: *id, object: *object, effects: Vec::new() })
                .effects
                .push(effect);
        }
        out.effects = effects.into_values().collect();
        out
    }
}

fn vec3(range: f32) -> impl Strategy<Value = Vec3> {
    (-range..range, -range..range, -range..range).prop_map(|(x, y, z)| Vec3::new(x, y, z))
}

fn position() -> impl Strategy<Value = Vec3> {
    (-10.0f32..270.0, -10.0f32..270.0, 0.0f32..80.0).prop_map(|(x, y, z)| Vec3::new(x, y, z))
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        (any::<u8>(), proptest::option::of(position())).prop_map(|(k, pos)| Input::AddAvatar {
            id: avatar(k),
            name: format!("avatar {k}"),
            owner: 7,
            pos
        }),
        any::<u8>().prop_map(|k| Input::RemoveAvatar { id: avatar(k) }),
        (any::<u8>(), -1i8..=1, -1i8..=1, -1i8..=1, -1i8..=1, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(k, forward, strafe, turn, up, jump, fly, run)| Input::Controls {
                id: avatar(k),
                controls: Controls { forward, strafe, turn, up, jump, fly, run },
            }),
        (any::<u64>(), position(), vec3(8.0), any::<bool>(), 0.1f32..4.0).prop_map(
            |(tag, pos, vel, physical, s)| {
                Input::CreateObject {
                    tag,
                    spec: ObjectSpec {
                        pos,
                        vel,
                        physical,
                        scale: Vec3::splat(s),
                        shape: Shape::Sphere,
                        ..Default::default()
                    },
                }
            }
        ),
        (
            any::<u8>(),
            proptest::option::of(position()),
            proptest::option::of(vec3(5.0)),
            proptest::option::of("[a-z ]{0,12}")
        )
            .prop_map(|(k, pos, vel, text)| Input::EditObject {
                id: object(k),
                edit: ObjectEdit {
                    pos,
                    vel,
                    text,
                    rot: Some(Quat::from_rotation_z(f32::from(k))),
                    ..Default::default()
                },
            }),
        any::<u8>().prop_map(|k| Input::DeleteObject { id: object(k) }),
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Input::Link { root: object(a), child: object(b) }),
        any::<u8>().prop_map(|k| Input::Unlink { child: object(k) }),
        (any::<u8>(), any::<u8>()).prop_map(|(a, o)| Input::Sit { avatar: avatar(a), object: object(o) }),
        any::<u8>().prop_map(|k| Input::Stand { avatar: avatar(k) }),
        (0.0f32..256.0, 0.0f32..256.0, 1.0f32..20.0, -5.0f32..5.0)
            .prop_map(|(x, y, radius, delta)| Input::EditTerrain { x, y, radius, delta }),
        any::<u8>()
            .prop_map(|k| Input::AddModule { bytes: MODULES[usize::from(k) % MODULES.len()].to_vec() }),
        (any::<u8>(), any::<u8>())
            .prop_map(|(o, m)| Input::AddScript { object: object(o), module: module(m) }),
        (any::<u8>(), any::<u8>())
            .prop_map(|(o, m)| Input::AddScript { object: object(o), module: module(m) }),
        any::<u8>().prop_map(|k| Input::RemoveScript { id: script(k) }),
        any::<u8>().prop_map(|m| Input::DefineTemplate {
            name: "seed".into(),
            spec: ObjectSpec { name: "seedling".into(), ..Default::default() },
            scripts: vec![module(m)],
        }),
        (any::<u8>(), any::<u8>()).prop_map(|(a, o)| Input::Touch { avatar: avatar(a), object: object(o) }),
        any::<u8>().prop_map(|k| Input::Depart { root: object(k) }),
        any::<u8>().prop_map(|k| Input::Return { root: object(k) }),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|state| Input::Border { state }),
        (any::<u8>(), -2.0f32..2.0, 0.0f32..256.0, any::<bool>()).prop_map(|(k, x, y, east)| {
            let from = if east {
                RegionId::new(REGION.x + 1, REGION.y)
            } else {
                RegionId::new(REGION.x, REGION.y - 1)
            };
            let pos = if east { Vec3::new(x, y, 30.0) } else { Vec3::new(y, 256.0 + x, 30.0) };
            Input::Arrive { from, entities: vec![visitor(k, pos)], scripts: Vec::new(), modules: Vec::new() }
        }),
    ]
}

/// An object from a neighbour region (ids there have another prefix).
fn visitor(k: u8, pos: Vec3) -> Entity {
    Entity {
        id: EntityId(0xB000_0000 + u64::from(k % 8)),
        kind: Kind::Object(ObjectState { physical: k % 2 == 0 }),
        pos,
        rot: Quat::IDENTITY,
        vel: Vec3::new(f32::from(k % 5) - 2.0, 0.0, 0.0),
        scale: Vec3::ONE,
        shape: Shape::Box,
        owner: 9,
        name: "visitor".into(),
        text: String::new(),
        parent: None,
        gen: 5,
        body_gen: 5,
    }
}

/// One tick of a run: its time step (late ticks included), its inputs, what its scripts do.
type Step = (u64, Vec<Input>, Vec<Action>);

fn run() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        (
            1u64..3 * TICK_US,
            proptest::collection::vec(input(), 0..6),
            proptest::collection::vec(action(), 0..4),
        ),
        1..40,
    )
}

fn assert_same(a: &Region, b: &Region) {
    assert_eq!(a.state_hash(), b.state_hash());
    assert_eq!(a.canonical_bytes(), b.canonical_bytes());
    // The hash caches rows by generation stamp: a fresh copy (empty cache) must agree.
    let fresh = Region::from_snapshot(&a.snapshot_with(world::Compression::None)).unwrap();
    assert_eq!(fresh.state_hash(), a.state_hash(), "a cached row hash went stale");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_replica_fed_every_ticks_delta_stays_hash_equal(ticks in run()) {
        let mut region = base_region();
        let mut replica = Region::from_snapshot(&region.snapshot()).unwrap();
        assert_same(&region, &replica);
        let mut now = 0;
        for (dt, inputs, actions) in ticks {
            let base = region.generation();
            now += dt;
            region.tick_with(now, inputs, &mut Stand(actions));
            let delta = region.delta_since(base).unwrap();
            replica.apply_encoded_delta(&delta.encode()).unwrap();
            assert_same(&region, &replica);
        }
    }

    #[test]
    fn a_snapshot_plus_the_deltas_that_follow_reproduce_the_state(
        before in run(),
        after in run(),
        rounds in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let mut region = base_region();
        let mut now = 0;
        for (dt, inputs, actions) in before {
            now += dt;
            region.tick_with(now, inputs, &mut Stand(actions));
        }
        let mut replica = Region::from_snapshot(&region.snapshot()).unwrap();
        assert_same(&region, &replica);
        // Pre-copy style: deltas cover a varying number of ticks each.
        for ((dt, inputs, actions), send) in after.into_iter().zip(rounds) {
            now += dt;
            region.tick_with(now, inputs, &mut Stand(actions));
            if send {
                let delta = region.delta_since(replica.generation()).unwrap();
                replica.apply_delta(&delta).unwrap();
                assert_same(&region, &replica);
            }
        }
        let last = region.delta_since(replica.generation()).unwrap();
        replica.apply_delta(&last).unwrap();
        assert_same(&region, &replica);
        // A replica also round-trips through its own snapshot.
        let again = Region::from_snapshot(&replica.snapshot()).unwrap();
        assert_same(&region, &again);
    }

    #[test]
    fn a_copy_keeps_its_state_while_the_original_ticks_on(before in run(), after in run()) {
        // Copies share rows and script records until one side writes them (a migration's full
        // copy is taken this way on the tick thread): writes must never show through.
        let mut region = base_region();
        let mut now = 0;
        for (dt, inputs, actions) in before {
            now += dt;
            region.tick_with(now, inputs, &mut Stand(actions));
        }
        let copy = region.clone();
        let (hash, bytes) = (copy.state_hash(), copy.canonical_bytes());
        let frozen = Region::from_snapshot(&region.snapshot()).unwrap();
        for (dt, inputs, actions) in after {
            now += dt;
            region.tick_with(now, inputs, &mut Stand(actions));
        }
        prop_assert_eq!(copy.canonical_bytes(), bytes);
        prop_assert_eq!(copy.state_hash(), hash);
        assert_same(&copy, &frozen);
        // And the original went on exactly as a copy that was never taken would have.
        let delta = region.delta_since(copy.generation()).unwrap();
        let mut caught_up = copy.clone();
        caught_up.apply_delta(&delta).unwrap();
        assert_same(&region, &caught_up);
    }

    #[test]
    fn the_same_inputs_give_the_same_hash(ticks in run()) {
        let mut a = base_region();
        let mut b = base_region();
        let mut now = 0;
        for (dt, inputs, actions) in ticks {
            now += dt;
            let oa = a.tick_with(now, inputs.clone(), &mut Stand(actions.clone()));
            let ob = b.tick_with(now, inputs, &mut Stand(actions));
            prop_assert_eq!(oa, ob);
        }
        assert_same(&a, &b);
    }
}
