//! The region's script records, one rule per test: they are pure data the region stamps,
//! carries in deltas and drops with their object.

use world::{
    EntityId, Input, InputError, ModuleHash, ObjectEffects, ObjectSpec, Region, RegionId, ScriptEffect,
    ScriptId, ScriptOutcome, ScriptPass, ScriptUpdate, Terrain, Touch, Vec3,
};

const R: RegionId = RegionId::new(2, 5);
const TICK: u64 = 200_000;
const MODULE: &[u8] = b"\0asm stand-in";
const ALICE: EntityId = EntityId(0xA11CE);

/// A pass that plays a fixed outcome once and records the touches it was given.
struct Once(Option<ScriptOutcome>, Vec<Touch>);

impl ScriptPass for Once {
    fn run(&mut self, _: &Region, touches: &[Touch]) -> ScriptOutcome {
        self.1.extend_from_slice(touches);
        self.0.take().unwrap_or_default()
    }
}

fn next(r: &Region) -> u64 {
    r.now_us() + TICK
}

/// A region with one object holding one script.
fn scripted() -> (Region, EntityId, ScriptId) {
    let mut r = Region::with_terrain(R, Terrain::flat(20.0));
    let out = r.tick(
        0,
        [
            Input::AddModule { bytes: MODULE.to_vec() },
            Input::CreateObject { tag: 1, spec: ObjectSpec::default() },
            Input::AddAvatar { id: ALICE, name: "Alice".into(), owner: 1, pos: None },
        ],
    );
    let object = out.created[0].id;
    let out = r.tick(next(&r), [Input::AddScript { object, module: ModuleHash::of(MODULE) }]);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let id = r.scripts_of(object).next().expect("the script was added").id;
    (r, object, id)
}

fn update(id: ScriptId, chunk: u8, byte: u8, control: &[u8]) -> ScriptUpdate {
    ScriptUpdate {
        id,
        chunks: vec![(chunk, vec![byte; world::limits::SCRIPT_CHUNK_BYTES])],
        control: control.to_vec(),
    }
}

#[test]
fn a_new_script_is_recorded_unstarted_with_zeroed_memory() {
    let (r, object, id) = scripted();
    let rec = r.script(id).unwrap();
    assert_eq!(rec.object, object);
    assert!(!rec.started());
    assert!(rec.memory().iter().all(|&b| b == 0));
}

#[test]
fn a_script_needs_a_stored_module() {
    let (mut r, object, _) = scripted();
    let out = r.tick(next(&r), [Input::AddScript { object, module: ModuleHash(7) }]);
    assert_eq!(out.rejected[0].error, InputError::UnknownModule(ModuleHash(7)));
}

#[test]
fn only_chunks_whose_bytes_changed_get_the_ticks_generation() {
    let (mut r, _, id) = scripted();
    let first = ScriptOutcome { updates: vec![update(id, 3, 9, b"c1")], ..Default::default() };
    r.tick_with(next(&r), [], &mut Once(Some(first), vec![]));
    let g1 = r.generation();
    assert_eq!(r.script(id).unwrap().chunks[3].gen, g1);
    // Same bytes again in chunk 3, new bytes in chunk 4.
    let mut u = update(id, 3, 9, b"c1");
    u.chunks.push((4, vec![1; world::limits::SCRIPT_CHUNK_BYTES]));
    r.tick_with(
        next(&r),
        [],
        &mut Once(Some(ScriptOutcome { updates: vec![u], ..Default::default() }), vec![]),
    );
    let rec = r.script(id).unwrap();
    assert_eq!(rec.chunks[3].gen, g1);
    assert_eq!(rec.chunks[4].gen, r.generation());
    assert_eq!(rec.control_gen, g1, "the control blob did not change");
    let delta = r.delta_since(g1).unwrap();
    assert_eq!(delta.scripts.len(), 1);
    assert_eq!(delta.scripts[0].chunks.iter().map(|c| c.0).collect::<Vec<_>>(), vec![4]);
    assert!(delta.scripts[0].control.is_none());
}

#[test]
fn deleting_an_object_removes_its_scripts_and_deltas_carry_the_tombstone() {
    let (mut r, object, id) = scripted();
    let mut replica = Region::from_snapshot(&r.snapshot()).unwrap();
    let base = r.generation();
    r.tick(next(&r), [Input::DeleteObject { id: object }]);
    assert_eq!(r.script_count(), 0);
    let delta = r.delta_since(base).unwrap();
    assert_eq!(delta.scripts_removed, vec![(id, r.generation())]);
    replica.apply_delta(&delta).unwrap();
    assert_eq!(replica.state_hash(), r.state_hash());
}

#[test]
fn effects_move_the_object_and_a_script_deleting_itself_takes_its_record() {
    let (mut r, object, id) = scripted();
    let effects = vec![ObjectEffects {
        script: id,
        object,
        effects: vec![ScriptEffect::SetPos(Vec3::new(50.0, 60.0, 40.0)), ScriptEffect::SetText("hi".into())],
    }];
    r.tick_with(next(&r), [], &mut Once(Some(ScriptOutcome { effects, ..Default::default() }), vec![]));
    let e = r.entity(object).unwrap();
    assert_eq!((e.pos.x, e.pos.y, e.text.as_str()), (50.0, 60.0, "hi"));
    let effects = vec![ObjectEffects { script: id, object, effects: vec![ScriptEffect::DeleteSelf] }];
    let out =
        r.tick_with(next(&r), [], &mut Once(Some(ScriptOutcome { effects, ..Default::default() }), vec![]));
    assert_eq!(out.removed, vec![object]);
    assert!(r.script(id).is_none());
}

#[test]
fn a_template_creates_an_object_whose_script_knows_its_creator_and_param() {
    let (mut r, object, id) = scripted();
    r.tick(
        next(&r),
        [Input::DefineTemplate {
            name: "seed".into(),
            spec: ObjectSpec { name: "seedling".into(), ..Default::default() },
            scripts: vec![ModuleHash::of(MODULE)],
        }],
    );
    let effects = vec![ObjectEffects {
        script: id,
        object,
        effects: vec![ScriptEffect::CreateObject {
            template: "seed".into(),
            pos: Vec3::new(9.0, 9.0, 0.0),
            param: 42,
        }],
    }];
    r.tick_with(next(&r), [], &mut Once(Some(ScriptOutcome { effects, ..Default::default() }), vec![]));
    let child = r.entities().find(|e| e.name == "seedling").expect("the template made an object").id;
    let rec = r.scripts_of(child).next().expect("with its script");
    assert_eq!(rec.start.creator, Some((object, 42)));
}

#[test]
fn a_bad_effect_is_refused_and_reported_and_the_rest_apply() {
    let (mut r, object, id) = scripted();
    let effects = vec![ObjectEffects {
        script: id,
        object,
        effects: vec![
            ScriptEffect::CreateObject { template: "nothing".into(), pos: Vec3::ZERO, param: 0 },
            ScriptEffect::SetText("still here".into()),
        ],
    }];
    let out =
        r.tick_with(next(&r), [], &mut Once(Some(ScriptOutcome { effects, ..Default::default() }), vec![]));
    assert_eq!(out.script_refused.len(), 1);
    assert_eq!(out.script_refused[0].error, InputError::UnknownTemplate("nothing".into()));
    assert_eq!(r.entity(object).unwrap().text, "still here");
}

#[test]
fn a_touch_reaches_the_script_pass_in_the_same_tick() {
    let (mut r, object, _) = scripted();
    let mut pass = Once(None, vec![]);
    r.tick_with(next(&r), [Input::Touch { avatar: ALICE, object }], &mut pass);
    assert_eq!(pass.1, vec![Touch { avatar: ALICE, object }]);
}

#[test]
fn a_delta_whose_script_patch_does_not_fit_the_replica_is_refused_and_changes_nothing() {
    let (mut r, _, id) = scripted();
    let mut replica = Region::from_snapshot(&r.snapshot()).unwrap();
    let base = r.generation();
    let outcome = ScriptOutcome { updates: vec![update(id, 0, 5, b"x")], ..Default::default() };
    r.tick_with(next(&r), [], &mut Once(Some(outcome), vec![]));
    let mut delta = r.delta_since(base).unwrap();
    delta.scripts[0].object = EntityId(12345);
    let before = replica.state_hash();
    assert!(replica.apply_delta(&delta).is_err());
    assert_eq!(replica.state_hash(), before);
}

#[test]
fn stopped_scripts_are_reported_with_their_owner_within_the_limits() {
    let mut r = Region::with_terrain(R, Terrain::flat(20.0));
    let spec = ObjectSpec { owner: 0xADA, ..ObjectSpec::default() };
    let out = r.tick(0, [Input::CreateObject { tag: 1, spec }]);
    let object = out.created[0].id;
    let stop = |n: u64| world::ScriptStopped {
        script: ScriptId(n),
        object: if n == 0 { object } else { EntityId(0xDEAD) },
        owner: 7, // whatever the pass says, the region fills in the owner
        kind: "out_of_fuel".into(),
        message: "é".repeat(200),
    };
    let n = world::limits::MAX_SCRIPT_ERRORS_PER_TICK as u64 + 10;
    let outcome = ScriptOutcome { stopped: (0..n).map(stop).collect(), ..Default::default() };
    let out = r.tick_with(next(&r), [], &mut Once(Some(outcome), vec![]));
    assert_eq!(out.script_errors.len(), world::limits::MAX_SCRIPT_ERRORS_PER_TICK);
    assert_eq!((out.script_errors[0].object, out.script_errors[0].owner), (object, 0xADA));
    assert_eq!(out.script_errors[1].owner, 0, "an object not in the region has no owner");
    for s in &out.script_errors {
        assert!(s.message.len() <= world::limits::MAX_SCRIPT_ERROR_MESSAGE_BYTES);
        assert!(s.message.len() >= world::limits::MAX_SCRIPT_ERROR_MESSAGE_BYTES - 1);
    }
    // A report belongs to one tick only.
    assert!(r.tick_with(next(&r), [], &mut Once(None, vec![])).script_errors.is_empty());
}
