//! Snapshots and deltas reproduce a region exactly: same canonical bytes, same hash.

use std::sync::OnceLock;

use proptest::prelude::*;
use world::{
    Controls, EntityId, Input, ObjectEdit, ObjectSpec, Quat, Region, RegionId, Shape, Terrain, Vec3,
};

const REGION: RegionId = RegionId::new(3, 7);
const TICK_US: u64 = 22_222;

fn base_region() -> Region {
    static TERRAIN: OnceLock<Terrain> = OnceLock::new();
    Region::with_terrain(REGION, TERRAIN.get_or_init(|| Terrain::generate(42, REGION)).clone())
}

fn avatar(k: u8) -> EntityId {
    EntityId(0xA000_0000 + u64::from(k % 6))
}

/// Objects get serial ids from their region; the first few dozen are the likely ones.
fn object(k: u8) -> EntityId {
    EntityId(u64::from(REGION.x) << 48 | u64::from(REGION.y) << 32 | u64::from(1 + k % 24))
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
    ]
}

/// A run: ticks of inputs, each tick with its own time step (late ticks included).
fn run() -> impl Strategy<Value = Vec<(u64, Vec<Input>)>> {
    proptest::collection::vec((1u64..3 * TICK_US, proptest::collection::vec(input(), 0..6)), 1..40)
}

fn assert_same(a: &Region, b: &Region) {
    assert_eq!(a.state_hash(), b.state_hash());
    assert_eq!(a.canonical_bytes(), b.canonical_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_replica_fed_every_ticks_delta_stays_hash_equal(ticks in run()) {
        let mut region = base_region();
        let mut replica = Region::from_snapshot(&region.snapshot()).unwrap();
        assert_same(&region, &replica);
        let mut now = 0;
        for (dt, inputs) in ticks {
            let base = region.generation();
            now += dt;
            region.tick(now, inputs);
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
        for (dt, inputs) in before {
            now += dt;
            region.tick(now, inputs);
        }
        let mut replica = Region::from_snapshot(&region.snapshot()).unwrap();
        assert_same(&region, &replica);
        // Pre-copy style: deltas cover a varying number of ticks each.
        for ((dt, inputs), send) in after.into_iter().zip(rounds) {
            now += dt;
            region.tick(now, inputs);
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
    fn the_same_inputs_give_the_same_hash(ticks in run()) {
        let mut a = base_region();
        let mut b = base_region();
        let mut now = 0;
        for (dt, inputs) in ticks {
            now += dt;
            let oa = a.tick(now, inputs.clone());
            let ob = b.tick(now, inputs);
            prop_assert_eq!(oa, ob);
        }
        assert_same(&a, &b);
    }
}
