//! The region's rules, one sentence each.

use world::limits::{ACTIVE_TICK_HZ, IDLE_TICK_HZ, MAX_TOMBSTONES};
use world::region::motion::AVATAR_HALF_HEIGHT;
use world::{
    Controls, DeltaError, EntityChange, EntityId, Input, InputError, Kind, ObjectEdit, ObjectSpec, Region,
    RegionId, Terrain, Vec3,
};

const R: RegionId = RegionId::new(1, 1);
const TICK: u64 = 1_000_000 / ACTIVE_TICK_HZ as u64;
const ALICE: EntityId = EntityId(0xA11CE);

fn flat() -> Region {
    Region::with_terrain(R, Terrain::flat(25.0))
}

fn run(region: &mut Region, ticks: u64) {
    for _ in 0..ticks {
        let now = region.now_us() + TICK;
        region.tick(now, []);
    }
}

fn add_alice(region: &mut Region, pos: Vec3) {
    let out = region.tick(
        region.now_us() + TICK,
        [Input::AddAvatar { id: ALICE, name: "Alice".into(), owner: 1, pos: Some(pos) }],
    );
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
}

fn create(region: &mut Region, spec: ObjectSpec) -> EntityId {
    let out = region.tick(region.now_us() + TICK, [Input::CreateObject { tag: 9, spec }]);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.created[0].tag, 9);
    out.created[0].id
}

#[test]
fn an_empty_region_ticks_at_the_idle_rate_and_a_visited_one_at_the_active_rate() {
    let mut region = flat();
    let out = region.tick(0, []);
    assert_eq!(out.interval_us, 1_000_000 / u64::from(IDLE_TICK_HZ));
    add_alice(&mut region, Vec3::new(10.0, 10.0, 0.0));
    assert_eq!(region.rate_hz(), ACTIVE_TICK_HZ);
    let out = region.tick(region.now_us() + TICK, [Input::RemoveAvatar { id: ALICE }]);
    assert_eq!(out.removed, vec![ALICE]);
    assert_eq!(out.interval_us, 1_000_000 / u64::from(IDLE_TICK_HZ));
}

#[test]
fn an_avatar_walks_forward_and_stays_on_the_ground() {
    let mut region = Region::new(R, 7);
    add_alice(&mut region, Vec3::new(100.0, 100.0, 0.0));
    let start = region.entity(ALICE).unwrap().pos;
    let out = region.tick(
        region.now_us() + TICK,
        [Input::Controls { id: ALICE, controls: Controls { forward: 1, ..Default::default() } }],
    );
    assert!(matches!(out.changes[0], EntityChange::Full(_)), "a control change is a body change");
    run(&mut region, ACTIVE_TICK_HZ as u64 * 2);
    let e = region.entity(ALICE).unwrap();
    assert!(e.pos.x - start.x > 5.0, "walked {} m in two seconds", e.pos.x - start.x);
    let ground = region.terrain().height_at(e.pos.x, e.pos.y) + AVATAR_HALF_HEIGHT;
    assert!((e.pos.z - ground).abs() < 0.7, "avatar at {} with ground at {ground}", e.pos.z);
}

#[test]
fn an_avatar_that_flies_up_rises_and_one_that_stops_stops() {
    let mut region = flat();
    add_alice(&mut region, Vec3::new(50.0, 50.0, 0.0));
    region.tick(
        region.now_us() + TICK,
        [Input::Controls { id: ALICE, controls: Controls { fly: true, up: 1, ..Default::default() } }],
    );
    run(&mut region, 45);
    let z = region.entity(ALICE).unwrap().pos.z;
    assert!(z > 25.0 + AVATAR_HALF_HEIGHT + 5.0, "flew to {z}");
    region.tick(
        region.now_us() + TICK,
        [Input::Controls { id: ALICE, controls: Controls { fly: true, ..Default::default() } }],
    );
    let out = region.tick(region.now_us() + TICK, []);
    assert!(out.changes.is_empty(), "a hovering avatar does not change: {:?}", out.changes);
}

#[test]
fn a_physical_object_falls_and_comes_to_rest_on_the_terrain() {
    let mut region = flat();
    let id = create(
        &mut region,
        ObjectSpec {
            pos: Vec3::new(30.0, 30.0, 60.0),
            vel: Vec3::new(2.0, 0.0, 0.0),
            physical: true,
            ..Default::default()
        },
    );
    run(&mut region, 10 * IDLE_TICK_HZ as u64 * 9);
    let e = region.entity(id).unwrap();
    assert_eq!(e.vel, Vec3::ZERO);
    assert!((e.pos.z - 25.5).abs() < 1e-4, "rests at {}", e.pos.z);
    let gen = e.gen;
    run(&mut region, 5);
    assert_eq!(region.entity(id).unwrap().gen, gen, "a resting object is not stamped again");
}

#[test]
fn a_gliding_object_moves_and_bounces_off_the_region_edge() {
    let mut region = flat();
    let id = create(
        &mut region,
        ObjectSpec {
            pos: Vec3::new(250.0, 30.0, 40.0),
            vel: Vec3::new(10.0, 0.0, 0.0),
            ..Default::default()
        },
    );
    run(&mut region, 45);
    let e = region.entity(id).unwrap();
    assert!(e.vel.x < 0.0 && e.pos.x < 256.0, "{:?}", e);
}

#[test]
fn every_mutation_stamps_the_entity_with_the_current_generation() {
    let mut region = flat();
    let id = create(&mut region, ObjectSpec::default());
    let out = region.tick(
        region.now_us() + TICK,
        [Input::EditObject { id, edit: ObjectEdit { text: Some("hello".into()), ..Default::default() } }],
    );
    let e = region.entity(id).unwrap();
    assert_eq!(e.gen, out.generation);
    assert_eq!(e.body_gen, out.generation);
    let out = region.tick(
        region.now_us() + TICK,
        [Input::EditObject { id, edit: ObjectEdit { vel: Some(Vec3::X), ..Default::default() } }],
    );
    assert!(matches!(out.changes[..], [EntityChange::Motion { .. }]), "{:?}", out.changes);
}

#[test]
fn a_deleted_object_leaves_a_tombstone_that_deltas_carry() {
    let mut region = flat();
    let id = create(&mut region, ObjectSpec::default());
    let base = region.generation();
    let out = region.tick(region.now_us() + TICK, [Input::DeleteObject { id }]);
    assert_eq!(out.removed, vec![id]);
    let delta = region.delta_since(base).unwrap();
    assert_eq!(delta.removed, vec![(id, out.generation)]);
    assert!(region.delta_since(region.generation()).unwrap().is_empty());
}

#[test]
fn deleting_a_linkset_root_deletes_its_children_and_stands_up_who_sat_on_it() {
    let mut region = flat();
    let root = create(&mut region, ObjectSpec::default());
    let child = create(&mut region, ObjectSpec { pos: Vec3::new(130.0, 128.0, 30.0), ..Default::default() });
    add_alice(&mut region, Vec3::new(120.0, 120.0, 0.0));
    let out = region.tick(
        region.now_us() + TICK,
        [Input::Link { root, child }, Input::Sit { avatar: ALICE, object: root }],
    );
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(region.world_pos(child).unwrap(), Vec3::new(130.0, 128.0, 30.0));
    let out = region.tick(region.now_us() + TICK, [Input::DeleteObject { id: root }]);
    assert_eq!(out.removed, vec![child, root]);
    let Kind::Avatar(a) = &region.entity(ALICE).unwrap().kind else { panic!() };
    assert_eq!(a.seat, None);
}

#[test]
fn bad_inputs_are_refused_and_the_tick_goes_on() {
    let mut region = flat();
    let id = create(&mut region, ObjectSpec::default());
    let out = region.tick(
        region.now_us() + TICK,
        [
            Input::EditObject {
                id,
                edit: ObjectEdit {
                    text: Some("x".repeat(1000)),
                    pos: Some(Vec3::ZERO),
                    ..Default::default()
                },
            },
            Input::EditObject {
                id,
                edit: ObjectEdit { vel: Some(Vec3::new(f32::NAN, 0.0, 0.0)), ..Default::default() },
            },
            Input::RemoveAvatar { id },
            Input::Controls { id: ALICE, controls: Controls::default() },
            Input::Link { root: id, child: id },
            Input::CreateObject {
                tag: 1,
                spec: ObjectSpec { scale: Vec3::splat(1000.0), ..Default::default() },
            },
        ],
    );
    let errors: Vec<_> = out.rejected.iter().map(|r| (r.index, r.error.clone())).collect();
    assert!(matches!(errors[0], (0, InputError::Invalid(_))));
    assert!(matches!(errors[1], (1, InputError::Invalid(_))));
    assert_eq!(errors[2], (2, InputError::NotAnAvatar(id)));
    assert_eq!(errors[3], (3, InputError::UnknownEntity(ALICE)));
    assert!(matches!(errors[4], (4, InputError::LinkRefused(_))));
    assert!(matches!(errors[5], (5, InputError::Invalid(_))));
    assert_eq!(region.entity(id).unwrap().pos, ObjectSpec::default().pos, "a refused edit changes nothing");
}

#[test]
fn terrain_edits_travel_in_deltas_as_patches() {
    let mut region = flat();
    let mut replica = Region::from_snapshot(&region.snapshot()).unwrap();
    let base = region.generation();
    let out = region.tick(TICK, [Input::EditTerrain { x: 100.0, y: 100.0, radius: 4.0, delta: 3.0 }]);
    assert!(out.terrain_changed);
    assert!(region.terrain().height_at(100.0, 100.0) > 27.9);
    let delta = region.delta_since(base).unwrap();
    assert!(!delta.terrain.is_empty() && delta.terrain.len() <= 4);
    replica.apply_delta(&delta).unwrap();
    assert_eq!(replica.state_hash(), region.state_hash());
}

#[test]
fn deltas_older_than_the_pruned_tombstones_are_refused() {
    let mut region = flat();
    let start = region.generation();
    for _ in 0..(MAX_TOMBSTONES / 1000 + 2) {
        let specs: Vec<Input> =
            (0..1000).map(|t| Input::CreateObject { tag: t, spec: ObjectSpec::default() }).collect();
        let out = region.tick(region.now_us() + TICK, specs);
        let deletes: Vec<Input> = out.created.iter().map(|c| Input::DeleteObject { id: c.id }).collect();
        region.tick(region.now_us() + TICK, deletes);
    }
    assert!(matches!(region.delta_since(start), Err(DeltaError::TooOld { .. })));
    assert!(matches!(region.delta_since(region.generation() + 1), Err(DeltaError::Future { .. })));
    assert!(region.delta_since(region.generation() - 1).is_ok());
}

#[test]
fn neighbouring_regions_share_their_edge_heights() {
    let a = Terrain::generate(5, RegionId::new(0, 0));
    let b = Terrain::generate(5, RegionId::new(1, 0));
    // Sample 255 of region 0 and sample 0 of region 1 are one metre apart: close, not equal.
    for j in 0..256 {
        assert!((a.sample(255, j) - b.sample(0, j)).abs() < 1.5);
    }
}
