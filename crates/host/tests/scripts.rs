//! Scripts inside region ticks on a host: events reach them, their effects and state land in
//! the region, hostile ones stop alone, and a region's scripts go on exactly after a restore.

use std::time::{Duration, Instant};

use host::scripting::{RegionScripts, ScriptConfig, ScriptHost};
use host::{Host, HostConfig};
use proptest::prelude::*;
use script::ErrorKind;
use world::{EntityId, Input, ModuleHash, ObjectSpec, Region, RegionId, Terrain, TickOutput, Vec3};

const R: RegionId = RegionId::new(4, 4);
const TICK_US: u64 = 22_222;
const ALICE: EntityId = EntityId(0xA11CE);
/// The agent who owns every scripted object of these tests.
const OWNER: u64 = 0xADA;

const COUNTER: &str = include_str!("../../script/scripts/counter.wat");
const GREETER: &str = include_str!("../../script/scripts/greeter.wat");
const INFINITE_LOOP: &str = include_str!("../../script/scripts/infinite_loop.wat");
const GROW: &str = include_str!("../../script/scripts/grow.wat");
const RECURSE: &str = include_str!("../../script/scripts/recurse.wat");
const FLOOD: &str = include_str!("../../script/scripts/flood.wat");
const BAD_POINTER: &str = include_str!("../../script/scripts/bad_pointer.wat");
const BAD_IMPORT: &str = include_str!("../../script/scripts/bad_import.wat");

/// Says "ping" on channel 5 when touched, and shows whatever it hears on channel 5.
const PINGER: &str = r#"(module
  (import "terrane" "say" (func $say (param i32 i32 i32)))
  (import "terrane" "listen" (func $listen (param i32) (result i32)))
  (import "terrane" "read_event" (func $read_event (param i32 i32) (result i32)))
  (import "terrane" "set_text" (func $set_text (param i32 i32)))
  (memory 1 1)
  (data (i32.const 0) "ping")
  (func (export "start") (drop (call $listen (i32.const 5))))
  (func (export "touch") (param i64) (call $say (i32.const 5) (i32.const 0) (i32.const 4)))
  (func (export "listen") (param i32 i64 i32)
    (call $set_text (i32.const 64) (call $read_event (i32.const 64) (i32.const 64)))))"#;

fn script_host(threads: usize) -> ScriptHost {
    ScriptHost::new(ScriptConfig { threads, time_budget: false, max_scripts: 256, module_cache: None })
        .unwrap()
}

/// A flat region with Alice in it and one object per module at 2 m spacing, each running it.
fn region_with(modules: &[&str]) -> (Region, Vec<EntityId>) {
    let mut r = Region::with_terrain(R, Terrain::flat(20.0));
    let mut inputs = vec![Input::AddAvatar { id: ALICE, name: "Alice".into(), owner: 1, pos: None }];
    for (k, m) in modules.iter().enumerate() {
        inputs.push(Input::AddModule { bytes: m.as_bytes().to_vec() });
        let pos = Vec3::new(100.0 + 2.0 * k as f32, 100.0, 0.0);
        let spec = ObjectSpec { pos, owner: OWNER, ..Default::default() };
        inputs.push(Input::CreateObject { tag: k as u64, spec });
    }
    let out = r.tick(0, inputs);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let objects: Vec<EntityId> = out.created.iter().map(|c| c.id).collect();
    let adds = objects
        .iter()
        .zip(modules)
        .map(|(&object, m)| Input::AddScript { object, module: ModuleHash::of(m.as_bytes()) });
    let out = r.tick(TICK_US, adds);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    (r, objects)
}

struct Run {
    host: ScriptHost,
    region: Region,
    scripts: RegionScripts,
}

impl Run {
    fn new(modules: &[&str]) -> (Run, Vec<EntityId>) {
        let (region, objects) = region_with(modules);
        (Run { host: script_host(2), region, scripts: RegionScripts::default() }, objects)
    }

    fn tick(&mut self, inputs: Vec<Input>) -> TickOutput {
        let now = self.region.now_us() + TICK_US;
        self.scripts.tick_on(&self.host, &mut self.region, now, inputs).0
    }

    fn touch(&mut self, object: EntityId) -> TickOutput {
        self.tick(vec![Input::Touch { avatar: ALICE, object }])
    }

    fn error_of(&self, object: EntityId) -> Option<ErrorKind> {
        self.scripts.live().iter().find(|s| s.object() == object).and_then(|s| s.error().map(|e| e.kind))
    }

    fn counter_events(&self, object: EntityId) -> u64 {
        self.scripts.live().iter().find(|s| s.object() == object).map_or(0, |s| s.counters().events_run)
    }
}

#[test]
fn a_new_script_starts_on_the_next_tick_and_its_state_lands_in_the_region_record() {
    let (mut run, objects) = Run::new(&[COUNTER]);
    assert!(!run.region.scripts_of(objects[0]).next().unwrap().started());
    run.tick(vec![]);
    let rec = run.region.scripts_of(objects[0]).next().unwrap();
    assert!(rec.started(), "the control state was written back");
    let generation = run.region.generation();
    run.touch(objects[0]);
    let rec = run.region.scripts_of(objects[0]).next().unwrap();
    // The counter logs its toucher at byte 12288: that chunk changed in this tick.
    assert_eq!(rec.chunks[12288 / world::limits::SCRIPT_CHUNK_BYTES].gen, run.region.generation());
    assert_eq!(&rec.memory()[12288..12296], &ALICE.0.to_le_bytes());
    assert!(rec.control_gen > generation);
}

#[test]
fn chat_is_heard_in_range_on_the_next_tick_and_answered() {
    let (mut run, objects) = Run::new(&[PINGER, GREETER]);
    run.tick(vec![]);
    run.touch(objects[0]);
    // Tick 2: the greeter hears "ping" and says "pong"; tick 3: the pinger hears it.
    run.tick(vec![]);
    run.tick(vec![]);
    assert_eq!(run.region.entity(objects[0]).unwrap().text, "pong");
}

#[test]
fn a_script_moves_its_object_through_the_region() {
    let (mut run, objects) = Run::new(&[COUNTER]);
    let x = run.region.entity(objects[0]).unwrap().pos.x;
    // The counter's timer (every 100 ms) steps it one metre east.
    for _ in 0..20 {
        run.tick(vec![]);
    }
    assert!(run.region.entity(objects[0]).unwrap().pos.x >= x + 3.0);
}

#[test]
fn hostile_scripts_stop_alone_and_the_region_and_its_other_scripts_go_on() {
    let hostile = [INFINITE_LOOP, GROW, RECURSE, BAD_POINTER];
    let mut modules = hostile.to_vec();
    modules.push(COUNTER);
    let (mut run, objects) = Run::new(&modules);
    run.tick(vec![]);
    let counter = objects[hostile.len()];
    let before = run.counter_events(counter);
    let tick = run.region.tick_number();
    for &o in &objects[..hostile.len()] {
        run.touch(o);
    }
    for _ in 0..10 {
        run.touch(counter);
    }
    assert_eq!(run.error_of(objects[0]), Some(ErrorKind::OutOfFuel));
    assert_eq!(run.error_of(objects[1]), Some(ErrorKind::MemoryGrowth));
    assert_eq!(run.error_of(objects[2]), Some(ErrorKind::StackOverflow));
    assert_eq!(run.error_of(objects[3]), Some(ErrorKind::BadCall));
    assert_eq!(run.error_of(counter), None);
    assert!(run.counter_events(counter) >= before + 10, "the healthy script kept running");
    assert_eq!(run.region.tick_number(), tick + hostile.len() as u64 + 10);
    assert_eq!(run.scripts.stats().errors, hostile.len());
    // The error is part of the script's state: a copy of the region knows it too.
    let copy = Region::from_snapshot(&run.region.snapshot()).unwrap();
    let mut fresh = RegionScripts::default();
    let mut copy = copy;
    fresh.tick_on(&run.host, &mut copy, run.region.now_us() + TICK_US, vec![]);
    assert_eq!(fresh.stats().errors, hostile.len());
}

#[test]
fn a_flooding_script_costs_the_region_a_bounded_amount() {
    let (mut run, objects) = Run::new(&[FLOOD, PINGER]);
    run.tick(vec![]);
    // 10,000 says in one start event: 64 effects are kept, the rest counted and dropped.
    let flood = run.scripts.live().iter().find(|s| s.object() == objects[0]).unwrap();
    assert_eq!(flood.counters().effects_dropped, 10_000 - 64);
    run.tick(vec![]);
    assert_eq!(run.error_of(objects[1]), None);
}

#[test]
fn a_module_importing_an_unknown_function_is_refused_by_name_and_the_region_ticks_on() {
    let (mut run, objects) = Run::new(&[BAD_IMPORT, COUNTER]);
    run.tick(vec![]);
    run.tick(vec![]);
    let broken: Vec<&String> = run.scripts.broken().values().map(|(_, reason)| reason).collect();
    assert_eq!(broken.len(), 1);
    assert!(broken[0].contains("launch_missiles"), "{}", broken[0]);
    assert_eq!(run.scripts.stats().errors, 1);
    assert!(run.counter_events(objects[1]) > 0);
}

#[test]
fn the_same_region_on_one_thread_and_on_two_gives_the_same_hash() {
    let modules: Vec<&str> = (0..24).map(|k| if k % 3 == 0 { PINGER } else { COUNTER }).collect();
    let hashes: Vec<u64> = [1, 2]
        .into_iter()
        .map(|threads| {
            let (region, objects) = region_with(&modules);
            let mut run = Run { host: script_host(threads), region, scripts: RegionScripts::default() };
            for t in 0..200 {
                run.touch(objects[t % objects.len()]);
            }
            run.region.state_hash()
        })
        .collect();
    assert_eq!(hashes[0], hashes[1]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn a_region_restored_on_a_fresh_engine_goes_on_with_the_same_hash(
        before in proptest::collection::vec(proptest::option::of(0usize..6), 1..60),
        after in proptest::collection::vec(proptest::option::of(0usize..6), 1..60),
    ) {
        let modules = [COUNTER, PINGER, COUNTER, GREETER, COUNTER, PINGER];
        let (mut run, objects) = Run::new(&modules);
        let inputs = |touch: Option<usize>| {
            touch.map(|k| vec![Input::Touch { avatar: ALICE, object: objects[k] }]).unwrap_or_default()
        };
        for t in before {
            run.tick(inputs(t));
        }
        let mut copy = Run {
            host: script_host(1),
            region: Region::from_snapshot(&run.region.snapshot()).unwrap(),
            scripts: RegionScripts::default(),
        };
        prop_assert_eq!(copy.region.state_hash(), run.region.state_hash());
        for t in after {
            run.tick(inputs(t));
            copy.tick(inputs(t));
            prop_assert_eq!(copy.region.state_hash(), run.region.state_hash());
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_host_runs_a_regions_scripts_reports_them_and_hands_them_on_with_the_region() {
    let (region, objects) = region_with(&[COUNTER, PINGER]);
    let a = Host::start(HostConfig { cores: 2, seed: 1 });
    a.load(region).unwrap();
    wait_for("scripts to run", Duration::from_secs(20), || {
        a.stats(R).is_ok_and(|s| s.scripts == 2 && s.script_events > 4)
    });
    a.send(R, Input::Touch { avatar: ALICE, object: objects[1] }).unwrap();
    let moved = a.unload(R).unwrap();
    a.shutdown();
    let b = Host::start(HostConfig { cores: 1, seed: 1 });
    let events = |r: &Region| r.scripts().map(|s| s.control_gen).max().unwrap_or(0);
    let generation = events(&moved);
    b.load(moved).unwrap();
    wait_for("scripts to go on", Duration::from_secs(20), || {
        b.with_region(R, |r| events(r) > generation).unwrap_or(false)
    });
    let s = b.stats(R).unwrap();
    assert_eq!((s.scripts, s.script_errors), (2, 0));
    b.shutdown();
}

#[test]
fn a_replica_fed_pre_copy_deltas_takes_over_the_scripts_exactly() {
    let modules = [COUNTER, PINGER, GREETER, COUNTER];
    let (mut source, objects) = Run::new(&modules);
    let mut replica = Region::from_snapshot(&source.region.snapshot()).unwrap();
    // Rounds every few ticks while the source runs on, as a migration's pre-copy does.
    for t in 0..60 {
        source.touch(objects[t % objects.len()]);
        if t % 7 == 0 {
            let delta = source.region.delta_since(replica.generation()).unwrap();
            replica.apply_encoded_delta(&delta.encode()).unwrap();
        }
    }
    let last = source.region.delta_since(replica.generation()).unwrap();
    replica.apply_delta(&last).unwrap();
    assert_eq!(replica.state_hash(), source.region.state_hash());
    let mut target = Run { host: script_host(1), region: replica, scripts: RegionScripts::default() };
    for t in 0..60 {
        source.touch(objects[t % objects.len()]);
        target.touch(objects[t % objects.len()]);
        assert_eq!(target.region.state_hash(), source.region.state_hash(), "diverged at tick {t}");
    }
}

#[test]
fn a_stopped_script_is_reported_once_in_the_tick_output_with_its_owner() {
    let (mut run, objects) = Run::new(&[INFINITE_LOOP, COUNTER]);
    let mut reports: Vec<world::ScriptStopped> = run.tick(vec![]).script_errors;
    for _ in 0..10 {
        reports.extend(run.touch(objects[0]).script_errors);
    }
    let stopped: Vec<(EntityId, &str)> = reports.iter().map(|s| (s.object, s.kind.as_str())).collect();
    assert_eq!(stopped, vec![(objects[0], "out_of_fuel")], "{reports:?}");
    assert_eq!(reports[0].owner, OWNER);
    assert!(reports[0].message.contains("fuel"), "{}", reports[0].message);
    let listed: Vec<(u64, String)> = run.scripts.stopped().into_iter().map(|s| (s.object, s.kind)).collect();
    assert_eq!(listed, vec![(objects[0].0, "out_of_fuel".to_string())]);
}

#[test]
fn a_record_that_cannot_run_is_reported_once_with_its_owner() {
    let (mut run, objects) = Run::new(&[BAD_IMPORT, COUNTER]);
    let first = run.tick(vec![]);
    let later: Vec<world::ScriptStopped> = (0..5).flat_map(|_| run.tick(vec![]).script_errors).collect();
    assert_eq!(first.script_errors.len(), 1, "{:?}", first.script_errors);
    let s = &first.script_errors[0];
    assert_eq!((s.object, s.owner, s.kind.as_str()), (objects[0], OWNER, "cannot_run"));
    assert!(s.message.contains("launch_missiles"), "{}", s.message);
    assert!(later.is_empty(), "{later:?}");
    let listed: Vec<(u64, String)> = run.scripts.stopped().into_iter().map(|s| (s.object, s.kind)).collect();
    assert_eq!(listed, vec![(objects[0].0, "cannot_run".to_string())]);
}

#[test]
fn a_restarted_script_host_loads_its_regions_modules_from_the_cache_directory() {
    let dir = std::env::temp_dir().join(format!("terrane-host-module-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config =
        ScriptConfig { threads: 1, time_budget: false, max_scripts: 64, module_cache: Some(dir.clone()) };
    let (region, objects) = region_with(&[COUNTER, GREETER, COUNTER]);
    // (compiled, loaded from disk) by the first host, then by a restarted one.
    for expected in [(2, 0), (0, 2)] {
        let host = ScriptHost::new(config.clone()).unwrap();
        let mut run = Run { host, region: region.clone(), scripts: RegionScripts::default() };
        run.tick(vec![]);
        run.touch(objects[0]);
        assert_eq!(run.error_of(objects[0]), None);
        assert!(run.counter_events(objects[0]) >= 2, "the counter ran");
        let s = run.host.engine().cache_stats();
        assert_eq!((s.compiled, s.loaded), expected, "{s:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
