//! Durable records: a checkpoint plus the records of the ticks after it gives back every change
//! made on purpose, exactly.

use proptest::prelude::*;
use world::durable::is_durable;
use world::{Delta, EntityId, Input, ObjectEdit, ObjectSpec, Region, RegionId, Shape, Terrain, Vec3};

fn flat() -> Region {
    Region::with_terrain(RegionId::new(2, 3), Terrain::flat(10.0))
}

/// One input chosen from a few numbers, among the objects that exist.
fn input(kind: u8, pick: usize, value: f32, objects: &[EntityId]) -> Input {
    let some = |i: usize| objects.get(i % objects.len().max(1)).copied().unwrap_or(EntityId(1));
    match kind % 7 {
        0 | 1 => Input::CreateObject {
            tag: pick as u64,
            spec: ObjectSpec {
                name: format!("made {pick}"),
                pos: Vec3::new(value, 255.0 - value, 12.0),
                ..ObjectSpec::default()
            },
        },
        2 => Input::EditObject {
            id: some(pick),
            edit: ObjectEdit {
                text: Some(format!("text {value}")),
                pos: Some(Vec3::new(value, value, 11.0)),
                ..Default::default()
            },
        },
        3 => Input::EditObject {
            id: some(pick),
            edit: ObjectEdit {
                name: Some(format!("renamed {pick}")),
                scale: Some(Vec3::splat(1.0 + value / 100.0)),
                shape: Some(Shape::Sphere),
                ..Default::default()
            },
        },
        4 => Input::DeleteObject { id: some(pick) },
        5 => Input::Link { root: some(pick), child: some(pick + 1) },
        _ => Input::EditTerrain { x: value, y: 100.0, radius: 4.0, delta: 1.5 },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With nothing moving, a checkpoint plus the durable records after it is the whole state:
    /// recovered and live regions have the same state hash at the last logged tick.
    #[test]
    fn a_checkpoint_plus_the_durable_records_after_it_gives_back_every_change(
        ops in prop::collection::vec((0u8..7, 0usize..50, 1.0f32..250.0), 1..80),
        checkpoint_at in 0usize..80,
    ) {
        let mut live = flat();
        let mut objects: Vec<EntityId> = Vec::new();
        let mut checkpoint = live.snapshot();
        let mut records: Vec<(Delta, u64)> = Vec::new();
        let mut now = 0;
        for (i, (kind, pick, value)) in ops.iter().enumerate() {
            now += 200_000;
            let inp = input(*kind, *pick, *value, &objects);
            prop_assert!(is_durable(&inp));
            let out = live.tick(now, [inp]);
            objects.extend(out.created.iter().map(|c| c.id));
            objects.retain(|id| live.entity(*id).is_some());
            if let Some(d) = out.durable {
                records.push((d.clone(), live.durable_rows_hash(&d)));
            }
            if i == checkpoint_at {
                checkpoint = live.snapshot();
                records.clear();
            }
        }
        let mut recovered = Region::from_snapshot(&checkpoint).unwrap();
        for (d, hash) in &records {
            recovered.replay_durable(d).unwrap();
            prop_assert_eq!(recovered.durable_rows_hash(d), *hash);
        }
        if records.last().is_some_and(|(d, _)| d.tick == live.tick_number()) {
            prop_assert_eq!(recovered.state_hash(), live.state_hash());
        }
        let ids = |r: &Region| r.entities().map(|e| (e.id, e.name.clone(), e.text.clone(), e.parent)).collect::<Vec<_>>();
        prop_assert_eq!(ids(&recovered), ids(&live));
        prop_assert_eq!(recovered.terrain().heights(), live.terrain().heights());
    }
}

#[test]
fn motion_is_not_logged_but_an_edit_of_a_moving_object_is() {
    let mut live = flat();
    let out = live.tick(
        0,
        [Input::CreateObject {
            tag: 1,
            spec: ObjectSpec { vel: Vec3::new(1.0, 0.0, 0.0), ..ObjectSpec::default() },
        }],
    );
    let id = out.created[0].id;
    let checkpoint = live.snapshot();
    for t in 1..10 {
        assert!(live.tick(t * 200_000, []).durable.is_none(), "motion alone makes no record");
    }
    let out = live.tick(
        10 * 200_000,
        [Input::EditObject { id, edit: ObjectEdit { text: Some("hello".into()), ..Default::default() } }],
    );
    let record = out.durable.expect("an edit is durable");
    let mut recovered = Region::from_snapshot(&checkpoint).unwrap();
    recovered.replay_durable(&record).unwrap();
    assert_eq!(recovered.entity(id), live.entity(id), "the row as it stood at the logged tick");
    assert!(recovered.replay_durable(&record).is_err(), "a record is replayed once");
}

#[test]
fn a_refused_input_makes_no_record() {
    let mut r = flat();
    let out = r.tick(0, [Input::DeleteObject { id: EntityId(42) }]);
    assert_eq!(out.rejected.len(), 1);
    assert!(out.durable.is_none());
}

#[test]
fn a_checkpoint_copy_is_the_region_without_its_caches() {
    let mut r = flat();
    let spec = ObjectSpec { name: "kept".into(), ..ObjectSpec::default() };
    r.tick(1_000, vec![Input::CreateObject { tag: 1, spec }]);
    let hash = r.state_hash();
    let copy = r.checkpoint_copy();
    assert_eq!(copy.snapshot(), r.snapshot(), "the same canonical bytes");
    assert_eq!(copy.state_hash(), hash, "the same state hash, computed afresh");
}
