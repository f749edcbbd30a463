//! A migration target prepares live script instances round by round; at the handover they
//! must hold exactly what the source's instances hold.

use host::scripting::{RegionScripts, ScriptConfig, ScriptHost};
use world::{EntityId, Input, ModuleHash, ObjectSpec, Region, RegionId, Terrain};

const R: RegionId = RegionId::new(3, 3);
const TICK_US: u64 = 22_222;

/// Counts in memory on a 30 ms timer and keeps a running sum in a global.
const COUNTER: &str = r#"(module
  (import "terrane" "set_timer" (func $set_timer (param i64)))
  (import "terrane" "random_u64" (func $random_u64 (result i64)))
  (memory 1 1)
  (global $n (mut i32) (i32.const 0))
  (global $sum (mut i64) (i64.const 0))
  (func (export "start") (call $set_timer (i64.const 30)))
  (func (export "timer")
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (global.set $sum (i64.add (global.get $sum) (call $random_u64)))
    (i32.store (i32.add (i32.const 1024) (i32.mul (i32.and (global.get $n) (i32.const 15)) (i32.const 4096)))
      (global.get $n))))"#;

fn host() -> ScriptHost {
    ScriptHost::new(ScriptConfig { threads: 1, time_budget: false, ..Default::default() }).unwrap()
}

/// A region of `n` objects, each running `module`, after the two ticks that create them
/// (with an avatar in it when `visited`): the region, its live scripts and the time now.
fn scripted_region(host: &ScriptHost, module: &str, n: u64, visited: bool) -> (Region, RegionScripts, u64) {
    let mut region = Region::with_terrain(R, Terrain::flat(10.0));
    let mut live = RegionScripts::default();
    let module = module.as_bytes().to_vec();
    let hash = ModuleHash::of(&module);
    let mut inputs: Vec<Input> =
        (0..n).map(|tag| Input::CreateObject { tag, spec: ObjectSpec::default() }).collect();
    inputs.push(Input::AddModule { bytes: module });
    if visited {
        inputs.push(Input::AddAvatar { id: EntityId(0xA11CE), name: "Alice".into(), owner: 1, pos: None });
    }
    let mut now = TICK_US;
    live.tick_on(host, &mut region, now, inputs);
    let scripts: Vec<Input> = (1..=n)
        .map(|k| Input::AddScript {
            object: EntityId(u64::from(R.x) << 48 | u64::from(R.y) << 32 | k),
            module: hash,
        })
        .collect();
    now += TICK_US;
    live.tick_on(host, &mut region, now, scripts);
    (region, live, now)
}

#[test]
fn instances_prepared_from_pre_copy_rounds_match_the_source_at_the_handover() {
    let (source_host, target_host) = (host(), host());
    let (mut region, mut live, mut now) = scripted_region(&source_host, COUNTER, 12, false);

    // Round 0: a snapshot; then a delta every few ticks, each followed by a prepare.
    let mut replica = Region::from_snapshot(&region.snapshot()).unwrap();
    let mut prepared = RegionScripts::default();
    prepared.prepare_from(&target_host, &replica, None);
    let mut since = replica.generation();
    for round in 0..8 {
        for _ in 0..(1 + round % 3) {
            now += TICK_US;
            live.tick_on(&source_host, &mut region, now, vec![]);
        }
        let delta = region.delta_since(replica.generation()).unwrap();
        replica.apply_delta(&delta).unwrap();
        prepared.prepare_from(&target_host, &replica, Some(since));
        since = replica.generation();
    }
    assert_eq!(replica.state_hash(), region.state_hash());
    assert_eq!(prepared.live().len(), 12);
    for (a, b) in live.live().iter().zip(prepared.live()) {
        assert_eq!(a.id(), b.id());
        assert_eq!(a.version(), b.version(), "script {:?}", a.id());
        assert_eq!(a.memory(), b.memory(), "script {:?} memory", a.id());
    }
    // And both sides go on identically.
    for _ in 0..20 {
        now += TICK_US;
        live.tick_on(&source_host, &mut region, now, vec![]);
        prepared.tick_on(&target_host, &mut replica, now, vec![]);
        assert_eq!(replica.state_hash(), region.state_hash());
    }
}

/// Busy for a few hundred thousand instructions on every 30 ms timer, then counts in memory:
/// a few dozen of these due in one tick outlast the time budget.
const SLOW_TIMER: &str = r#"(module
  (import "terrane" "set_timer" (func $set_timer (param i64)))
  (memory 1 1)
  (global $n (mut i32) (i32.const 0))
  (func (export "start") (call $set_timer (i64.const 30)))
  (func (export "timer")
    (local $i i32)
    (loop $spin
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $spin (i32.lt_u (local.get $i) (i32.const 150000))))
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (i32.store (i32.const 2048) (global.get $n))))"#;

#[test]
fn scripts_the_time_budget_defers_are_written_back_exactly_when_they_run() {
    // With a time budget: some due scripts wait for later ticks. Whatever waited or ran, the
    // region's records must hold exactly each instance's state after every tick.
    let budgeted =
        ScriptHost::new(ScriptConfig { threads: 1, time_budget: true, ..Default::default() }).unwrap();
    let fresh = host();
    // Someone present: the region ticks at its full rate, with a budget of a share of that.
    let (mut region, mut live, mut now) = scripted_region(&budgeted, SLOW_TIMER, 96, true);
    let mut deferred = 0;
    for _ in 0..40 {
        now += TICK_US;
        let (_, report) = live.tick_on(&budgeted, &mut region, now, vec![]);
        deferred += report.deferred;
        let mut from_records = RegionScripts::default();
        from_records.prepare_from(&fresh, &region, None);
        assert_eq!(from_records.live().len(), live.live().len());
        for (a, b) in live.live().iter().zip(from_records.live()) {
            assert_eq!(a.version(), b.version(), "script {:?}", a.id());
            assert_eq!(a.queued(), b.queued(), "script {:?} queue", a.id());
            assert_eq!(a.timer(), b.timer(), "script {:?} timer", a.id());
            assert_eq!(a.memory(), b.memory(), "script {:?} memory", a.id());
        }
    }
    assert!(deferred > 0, "the budget never deferred a script: the test proves nothing");
}
