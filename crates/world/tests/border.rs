//! Border crossings, the region's half: entities reaching an open edge are held, a held unit
//! is frozen until the host settles it (depart, return), and arriving units land in this
//! region's frame with fresh stamps.

use world::{
    Controls, EntityId, Input, InputError, Neighbours, ObjectEdit, ObjectSpec, Region, RegionId, Vec3,
};

const A: RegionId = RegionId::new(1, 1);
const B: RegionId = RegionId::new(2, 1);
const TICK: u64 = 22_222;

fn region(id: RegionId, open: Neighbours) -> Region {
    let mut r = Region::new(id, 7);
    r.set_neighbours(open);
    r
}

fn run(r: &mut Region, ticks: u64) -> Vec<(EntityId, RegionId)> {
    let mut leaving = Vec::new();
    for _ in 0..ticks {
        let now = r.now_us() + TICK;
        leaving.extend(r.tick(now, []).leaving);
    }
    leaving
}

/// An object gliding east at 10 m/s from x = 250.
fn glider(r: &mut Region) -> EntityId {
    let spec = ObjectSpec {
        pos: Vec3::new(250.0, 128.0, 60.0),
        vel: Vec3::new(10.0, 0.0, 0.0),
        ..Default::default()
    };
    let out = r.tick(r.now_us() + TICK, [Input::CreateObject { tag: 1, spec }]);
    out.created[0].id
}

#[test]
fn without_a_neighbour_objects_bounce() {
    let mut r = region(A, Neighbours::NONE);
    let id = glider(&mut r);
    assert!(run(&mut r, 60).is_empty());
    let e = r.entity(id).unwrap();
    assert!(e.pos.x < 256.0 && e.vel.x < 0.0, "bounced back: {:?}", e.pos);
    assert!(r.held().is_empty());
}

#[test]
fn towards_a_neighbour_an_object_is_held_once_and_frozen() {
    let mut r = region(A, Neighbours::ALL);
    let id = glider(&mut r);
    let leaving = run(&mut r, 60);
    assert_eq!(leaving, vec![(id, B)], "reported once, towards the east neighbour");
    assert_eq!(r.held(), vec![(id, B)]);
    let at = r.entity(id).unwrap().pos;
    assert!(at.x >= 256.0);
    run(&mut r, 10);
    assert_eq!(r.entity(id).unwrap().pos, at, "a held unit does not move");
    assert!(r.is_held(id));
    let edit = ObjectEdit { text: Some("hi".into()), ..Default::default() };
    let out = r.tick(r.now_us() + TICK, [Input::EditObject { id, edit }]);
    assert_eq!(out.rejected[0].error, InputError::Crossing(id), "a held unit is not edited");
}

#[test]
fn a_returned_unit_comes_back_inside_and_moves_on() {
    let mut r = region(A, Neighbours::ALL);
    let id = glider(&mut r);
    run(&mut r, 60);
    let out = r.tick(r.now_us() + TICK, [Input::Return { root: id }]);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let e = r.entity(id).unwrap();
    assert!(e.pos.x < 256.0 && e.vel.x < 0.0, "bounced back in: {:?} {:?}", e.pos, e.vel);
    assert!(r.held().is_empty());
    // Not held any more: returning or departing again is refused.
    let out = r.tick(r.now_us() + TICK, [Input::Return { root: id }, Input::Depart { root: id }]);
    assert_eq!(out.rejected.len(), 2);
}

#[test]
fn a_unit_departs_whole_and_arrives_shifted_with_fresh_stamps() {
    let mut a = region(A, Neighbours::ALL);
    let mut b = region(B, Neighbours::ALL);
    run(&mut b, 3);
    let root = glider(&mut a);
    // A child and a seated avatar make it a vehicle.
    let spec = ObjectSpec { pos: Vec3::new(251.0, 128.0, 60.0), ..Default::default() };
    let child = a.tick(a.now_us() + TICK, [Input::CreateObject { tag: 2, spec }]).created[0].id;
    let rider = EntityId(0xA11CE);
    let out = a.tick(
        a.now_us() + TICK,
        [
            Input::Link { root, child },
            Input::AddAvatar { id: rider, name: "rider".into(), owner: 1, pos: None },
            Input::Sit { avatar: rider, object: root },
        ],
    );
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    run(&mut a, 60);
    assert_eq!(a.held().len(), 1);
    let unit = a.unit(root).expect("held unit");
    assert_eq!(unit.entities.len(), 3);
    assert_eq!(a.unit_members(root), {
        let mut m = vec![root, child, rider];
        m.sort();
        m
    });

    let out = a.tick(a.now_us() + TICK, [Input::Depart { root }]);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.removed.len(), 3);
    assert_eq!(a.entity_count(), 0);
    assert_eq!(a.avatar_count(), 0);

    let arrive = Input::Arrive {
        from: A,
        entities: unit.entities.clone(),
        scripts: unit.scripts,
        modules: Vec::new(),
    };
    let out = b.tick(b.now_us() + TICK, [arrive.clone()]);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(b.entity_count(), 3);
    assert_eq!(b.avatar_count(), 1);
    let r = b.entity(root).unwrap();
    assert!(r.pos.x >= 0.0 && r.pos.x < 2.0, "shifted into B's frame: {:?}", r.pos);
    assert!(r.gen >= b.generation() - 1, "restamped");
    // The rider sits on it in B's frame; the unit is not held in B and moves on.
    assert!(b.entity(rider).unwrap().pos.x < 2.0);
    let before = b.entity(root).unwrap().pos;
    run(&mut b, 5);
    assert!(b.entity(root).unwrap().pos.x > before.x);
    // The same unit twice is refused whole: never doubled.
    let out = b.tick(b.now_us() + TICK, [arrive]);
    assert!(matches!(out.rejected[0].error, InputError::AlreadyPresent(_)));
    assert_eq!(b.entity_count(), 3);
    // A replica from B's snapshot is the same state (stamps are B's own).
    let replica = Region::from_snapshot(&b.snapshot()).unwrap();
    assert_eq!(replica.state_hash(), b.state_hash());
}

#[test]
fn a_walking_avatar_is_held_at_an_open_edge() {
    let mut r = region(A, Neighbours::ALL);
    let me = EntityId(0xBEEF);
    let pos = Some(Vec3::new(250.0, 128.0, 0.0));
    let walk = Controls { forward: 1, run: true, ..Default::default() };
    r.tick(TICK, [Input::AddAvatar { id: me, name: "walker".into(), owner: 1, pos }]);
    r.tick(2 * TICK, [Input::Controls { id: me, controls: walk }]);
    let leaving = run(&mut r, 100);
    assert_eq!(leaving, vec![(me, B)]);
    assert!(r.is_held(me));
}

#[test]
fn the_border_record_travels_in_snapshots_and_deltas() {
    let mut r = region(A, Neighbours::ALL);
    run(&mut r, 2);
    let replica_base = r.clone();
    let g = r.generation();
    r.tick(r.now_us() + TICK, [Input::Border { state: vec![1, 2, 3] }]);
    assert_eq!(r.border_state(), &[1, 2, 3]);
    let mut replica = replica_base;
    replica.apply_encoded_delta(&r.delta_since(g).unwrap().encode()).unwrap();
    assert_eq!(replica.border_state(), &[1, 2, 3]);
    assert_eq!(replica.state_hash(), r.state_hash());
    let restored = Region::from_snapshot(&r.snapshot()).unwrap();
    assert_eq!(restored.border_state(), &[1, 2, 3]);
    assert_eq!(restored.state_hash(), r.state_hash());
    let before = r.state_hash();
    r.tick(r.now_us() + TICK, [Input::Border { state: vec![1, 2, 4] }]);
    assert_ne!(r.state_hash(), before);
}

#[test]
fn a_departure_amended_between_ticks_travels_in_deltas_snapshots_and_the_log() {
    let mut a = region(A, Neighbours::ALL);
    let root = glider(&mut a);
    run(&mut a, 60);
    assert_eq!(a.held(), vec![(root, B)]);
    let (tick, g) = (a.tick_number(), a.generation());
    // A warm hash cache must follow the amendment too.
    let _ = a.state_hash();
    let before = a.clone();

    let out = a.amend([Input::Depart { root }, Input::Border { state: vec![9] }]);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.removed, vec![root]);
    assert_eq!((a.tick_number(), a.generation()), (tick, g + 1), "a step of its own, not a tick");
    assert_eq!(a.entity_count(), 0);
    assert_eq!(a.border_state(), &[9]);

    // A replica (a migration's rounds) gets it from a delta, a restart from a snapshot.
    let mut replica = before.clone();
    replica.apply_encoded_delta(&a.delta_since(g).unwrap().encode()).unwrap();
    assert_eq!(replica.state_hash(), a.state_hash());
    let restored = Region::from_snapshot(&a.snapshot()).unwrap();
    assert_eq!(restored.state_hash(), a.state_hash());
    // A recovery from the store replays its record on what came before.
    let record = out.durable.expect("a departure and a record are durable");
    let mut recovered = before;
    recovered.replay_durable(&record).unwrap();
    assert!(recovered.entity(root).is_none());
    assert_eq!(recovered.border_state(), &[9]);
    assert_eq!(recovered.durable_rows_hash(&record), a.durable_rows_hash(&record));

    // The next tick goes on from the amendment's generation.
    let out = a.tick(a.now_us() + TICK, []);
    assert_eq!((out.tick, out.generation), (tick + 1, g + 2));
}

#[test]
fn only_crossing_steps_amend_a_region_between_ticks() {
    let mut a = region(A, Neighbours::ALL);
    run(&mut a, 2);
    let spec = ObjectSpec { pos: Vec3::new(10.0, 10.0, 10.0), ..Default::default() };
    let out = a.amend([
        Input::CreateObject { tag: 1, spec },
        Input::Depart { root: EntityId(77) },
        Input::Border { state: vec![5] },
    ]);
    let refused: Vec<usize> = out.rejected.iter().map(|r| r.index).collect();
    assert_eq!(refused, vec![0, 1], "a creation is not a crossing step; 77 is not held");
    assert_eq!(a.entity_count(), 0);
    assert_eq!(a.border_state(), &[5]);
}

#[test]
fn the_crossing_record_amends_only_the_tick_that_just_ran() {
    let mut a = region(A, Neighbours::ALL);
    run(&mut a, 2);
    let mut out = a.tick(a.now_us() + TICK, []);
    assert!(out.durable.is_none());
    a.amend_tick_border(vec![4, 2], &mut out).unwrap();
    assert_eq!(a.border_state(), &[4, 2]);
    let record = out.durable.as_ref().expect("the tick's record now holds the crossing record");
    assert_eq!(record.border.as_ref().map(|b| (b.0, b.1 .0.clone())), Some((a.generation(), vec![4, 2])));
    let mut stale = out.clone();
    a.tick(a.now_us() + TICK, []);
    assert!(a.amend_tick_border(vec![1], &mut stale).is_err(), "a later tick ran meanwhile");
    assert_eq!(a.border_state(), &[4, 2]);
}
