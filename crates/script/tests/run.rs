//! Running scripts: hostile scripts are each contained, the ABI behaves as documented, and a
//! batch gives the same result on one thread as on two.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{engine, load, new_script, object, view, wat};
use script::limits::{MAX_EFFECTS_PER_EVENT, MAX_QUEUED_EVENTS};
use script::{run_batch, ChatRange, Effect, Enqueued, ErrorKind, Event, Script, TickBudget};
use world::{EntityId, RegionId, Vec3};

const TOUCH: Event = Event::Touch { toucher: EntityId(7) };

fn touch_and_run(s: &mut Script) -> Vec<Effect> {
    s.enqueue(TOUCH);
    s.run_tick(&view(4), TickBudget::UNLIMITED);
    s.take_effects()
}

#[test]
fn an_infinite_loop_is_stopped_by_fuel_and_other_scripts_run_on() {
    let e = engine();
    let looping = load(&e, "infinite_loop");
    let counter = load(&e, "counter");
    let mut scripts = vec![new_script(&looping, 0), new_script(&counter, 1)];
    for s in &mut scripts {
        s.enqueue(TOUCH);
    }
    let report = run_batch(None, &mut scripts, &view(2), TickBudget::UNLIMITED);
    let err = scripts[0].error().expect("the loop is stopped");
    assert_eq!(err.kind, ErrorKind::OutOfFuel, "{err}");
    assert_eq!(report.stopped, vec![scripts[0].id()]);
    assert!(scripts[1].error().is_none());
    assert_eq!(report.effects.len(), 1, "the well-behaved script's touch says something");
    // A stopped script takes no more events.
    assert_eq!(scripts[0].enqueue(TOUCH), Enqueued::Stopped);
}

#[test]
fn growing_memory_stops_the_script_with_a_memory_error() {
    let e = engine();
    let mut s = new_script(&load(&e, "grow"), 0);
    s.run_tick(&view(1), TickBudget::UNLIMITED);
    let err = s.error().expect("stopped");
    assert_eq!(err.kind, ErrorKind::MemoryGrowth, "{err}");
    assert_eq!(s.memory().len(), 65_536);
}

#[test]
fn deep_recursion_stops_the_script_with_a_stack_overflow() {
    let e = engine();
    let mut s = new_script(&load(&e, "recurse"), 0);
    touch_and_run(&mut s);
    let err = s.error().expect("stopped");
    assert_eq!(err.kind, ErrorKind::StackOverflow, "{err}");
}

#[test]
fn a_flooding_handler_is_capped_at_the_effect_limit() {
    let e = engine();
    let mut s = new_script(&load(&e, "flood"), 0);
    s.run_tick(&view(1), TickBudget::UNLIMITED);
    let effects = s.take_effects();
    assert!(s.error().is_none(), "{:?}", s.error());
    assert_eq!(effects.len(), MAX_EFFECTS_PER_EVENT);
    assert!(effects
        .iter()
        .all(|e| *e == Effect::Say { channel: 0, range: ChatRange::Say, text: "spam".into() }));
    assert_eq!(s.counters().effects_dropped, 10_000 - MAX_EFFECTS_PER_EVENT as u64);
}

#[test]
fn a_pointer_outside_memory_stops_only_that_script() {
    let e = engine();
    let mut s = new_script(&load(&e, "bad_pointer"), 0);
    let effects = touch_and_run(&mut s);
    let err = s.error().expect("stopped");
    assert_eq!(err.kind, ErrorKind::BadCall);
    assert!(err.message.contains("outside"), "{err}");
    assert!(effects.is_empty());
}

#[test]
fn the_time_budget_stops_a_runaway_event_when_fuel_would_not() {
    let e = script::ScriptEngine::new(script::EngineConfig {
        max_scripts: 4,
        fuel_per_event: u64::MAX / 8,
        ..Default::default()
    })
    .expect("engine");
    let mut s = new_script(&load(&e, "infinite_loop"), 0);
    s.enqueue(TOUCH);
    let ticker = e.ticker();
    let stop = Arc::new(AtomicBool::new(false));
    let clock = {
        let (ticker, stop) = (ticker.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(1));
                ticker.tick();
            }
        })
    };
    let report = s.run_tick(&view(1), e.budget(5));
    stop.store(true, Ordering::Relaxed);
    clock.join().expect("ticker thread");
    assert!(report.stopped);
    assert_eq!(s.error().map(|e| e.kind), Some(ErrorKind::TimeBudget));
}

#[test]
fn scripts_not_started_before_the_budget_ends_keep_their_events() {
    let e = engine();
    let m = load(&e, "counter");
    let mut s = new_script(&m, 0);
    e.ticker().tick();
    let spent = script::TickBudget { until_epoch: e.ticker().now() };
    let report = s.run_tick(&view(1), spent);
    assert!(report.deferred);
    assert_eq!(report.events, 0);
    assert_eq!(s.queued(), 1, "start still waits");
    s.run_tick(&view(1), TickBudget::UNLIMITED);
    assert_eq!(s.queued(), 0);
}

#[test]
fn a_due_timer_whose_turn_comes_after_the_budget_leaves_the_script_untouched() {
    let e = engine();
    let mut s = new_script(&load(&e, "counter"), 0);
    let mut v = view(1);
    s.run_tick(&v, TickBudget::UNLIMITED); // start: a timer every 100 ms, due at 100
    let (version, timer) = (s.version(), s.timer());
    v.now_ms = 150;
    e.ticker().tick();
    let spent = script::TickBudget { until_epoch: e.ticker().now() };
    let report = s.run_tick(&v, spent);
    assert!(report.deferred, "a due timer is work the budget defers");
    assert_eq!(report.events, 0);
    // Nothing moved: no event queued, the timer still due, so nothing to write back.
    assert_eq!((s.version(), s.timer(), s.queued()), (version, timer, 0));
    // Its turn: the timer fires late, once, and keeps its interval from then.
    v.now_ms = 170;
    let report = s.run_tick(&v, TickBudget::UNLIMITED);
    assert_eq!(report.events, 1);
    assert_eq!(s.timer().map(|t| t.next_due_ms), Some(270));
}

#[test]
fn a_full_queue_keeps_the_oldest_events_and_counts_the_dropped() {
    let e = engine();
    let mut s = new_script(&load(&e, "counter"), 0);
    let mut outcomes = Vec::new();
    for i in 0..100 {
        outcomes.push(s.enqueue(Event::Touch { toucher: EntityId(i) }));
    }
    assert_eq!(s.queued(), MAX_QUEUED_EVENTS);
    assert_eq!(outcomes.iter().filter(|o| **o == Enqueued::QueueFull).count(), 100 - (MAX_QUEUED_EVENTS - 1));
    assert_eq!(s.counters().events_dropped, 100 - (MAX_QUEUED_EVENTS as u64 - 1));
    // Events for handlers the module lacks are never queued.
    let mut quiet = new_script(&load(&e, "infinite_loop"), 1);
    assert_eq!(quiet.enqueue(Event::Timer), Enqueued::NoHandler);
}

#[test]
fn listen_echo_message_reply_timer_and_pose_work_as_documented() {
    let e = engine();
    let mut s = new_script(&load(&e, "counter"), 0);
    let mut v = view(1);
    s.run_tick(&v, TickBudget::UNLIMITED); // start: listen on 7, timer every 100 ms
    assert!(s.listens_on(7));
    assert_eq!(s.timer().map(|t| (t.interval_ms, t.next_due_ms)), Some((100, 100)));

    s.enqueue(Event::Listen { channel: 7, sender: EntityId(9), text: "héllo".into() });
    s.enqueue(Event::Message { sender: EntityId(9), bytes: vec![1, 2, 3] });
    v.now_ms = 100;
    s.run_tick(&v, TickBudget::UNLIMITED);
    assert_eq!(
        s.take_effects(),
        vec![
            Effect::Say { channel: 8, range: ChatRange::Say, text: "héllo".into() },
            Effect::Message { to: EntityId(9), bytes: vec![1, 2, 3] },
            Effect::SetPos(Vec3::new(101.0, 100.0, 20.0)),
        ]
    );
    assert_eq!(s.timer().map(|t| t.next_due_ms), Some(200));

    s.enqueue(Event::Changed { what: 3 });
    s.enqueue(Event::RegionCross { from: RegionId::new(3, 4), to: RegionId::new(4, 4) });
    s.run_tick(&v, TickBudget::UNLIMITED);
    assert_eq!(s.take_effects(), vec![Effect::SetText("changed".into())]);
    assert!(!s.listens_on(7), "changed toggled the listen off");
    assert_eq!(s.timer(), None, "region_cross stopped the timer");
    assert_eq!(&s.memory()[48..52], &((3i32 << 16) | 4).to_le_bytes());
    assert_eq!(&s.memory()[52..56], &((4i32 << 16) | 4).to_le_bytes());
}

#[test]
fn a_sensor_returns_the_nearest_entities_in_the_documented_layout() {
    let e = engine();
    let mut s = new_script(&load(&e, "greeter"), 0);
    let mut v = view(1); // own object at (100, 100, 20)
    v.insert(EntityId(50), true, Vec3::new(110.0, 100.0, 20.0)); // 10 m
    v.insert(EntityId(51), false, Vec3::new(103.0, 100.0, 20.0)); // 3 m
    v.insert(EntityId(52), true, Vec3::new(140.0, 100.0, 20.0)); // 40 m: out of range
    s.run_tick(&v, TickBudget::UNLIMITED);
    s.enqueue(TOUCH);
    s.enqueue(Event::Listen { channel: 5, sender: EntityId(50), text: "ping".into() });
    s.enqueue(Event::Listen { channel: 5, sender: EntityId(50), text: "pong".into() });
    s.run_tick(&v, TickBudget::UNLIMITED);
    assert_eq!(
        s.take_effects(),
        vec![
            Effect::Say { channel: 0, range: ChatRange::Say, text: "hello".into() },
            Effect::Say { channel: 9, range: ChatRange::Region, text: "2".into() },
            Effect::Say { channel: 5, range: ChatRange::Say, text: "pong".into() },
        ]
    );
    let rec = |i: usize| &s.memory()[1024 + 32 * i..1024 + 32 * (i + 1)];
    assert_eq!(&rec(0)[0..8], &51u64.to_le_bytes());
    assert_eq!(&rec(0)[8..12], &2u32.to_le_bytes());
    assert_eq!(&rec(0)[12..16], &3.0f32.to_le_bytes());
    assert_eq!(&rec(0)[16..20], &103.0f32.to_le_bytes());
    assert_eq!(&rec(1)[0..8], &50u64.to_le_bytes());
    assert_eq!(&rec(1)[8..12], &1u32.to_le_bytes());
}

#[test]
fn random_numbers_are_a_function_of_the_seed() {
    let e = engine();
    let m = load(&e, "counter");
    let run = |seed: u64| {
        let mut s =
            Script::new(&m, script::ScriptSpec { id: script::ScriptId(1), object: object(0), seed }).unwrap();
        for _ in 0..5 {
            touch_and_run(&mut s);
        }
        s.capture().memory
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn a_reset_script_starts_over() {
    let e = engine();
    let mut s = new_script(&load(&e, "grow"), 0);
    s.run_tick(&view(1), TickBudget::UNLIMITED);
    assert!(s.error().is_some());
    let before = s.version();
    s.reset().expect("reset");
    assert!(s.error().is_none());
    assert!(s.version() > before);
    assert_eq!(s.queued(), 1);
}

/// Runs a region-like workload: many scripts, several ticks of mixed events.
fn workload(threads: usize) -> (Vec<u64>, Vec<script::BatchReport>) {
    let e = engine();
    let counter = load(&e, "counter");
    let greeter = load(&e, "greeter");
    let looping = e.load(&wat("infinite_loop")).unwrap();
    let mut scripts: Vec<Script> = (0..40)
        .map(|i| match i % 10 {
            3 => new_script(&greeter, i),
            9 => new_script(&looping, i),
            _ => new_script(&counter, i),
        })
        .collect();
    // The caller's order is not id order: results must not care.
    scripts.reverse();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let mut v = view(40);
    let mut reports = Vec::new();
    for tick in 0..6u64 {
        v.now_ms = tick * 60;
        for s in &mut scripts {
            let id = s.id().0;
            for k in 0..(id + tick) % 4 {
                s.enqueue(Event::Touch { toucher: EntityId(k) });
            }
            s.enqueue(Event::Listen { channel: 7, sender: EntityId(id), text: format!("tick {tick}") });
            s.enqueue(Event::Message { sender: EntityId(id + 1), bytes: vec![tick as u8; id as usize] });
            s.enqueue(Event::Collision { other: EntityId(id), phase: 0 });
        }
        reports.push(run_batch(Some(&pool), &mut scripts, &v, TickBudget::UNLIMITED));
    }
    scripts.sort_by_key(|s| s.id());
    (scripts.iter_mut().map(|s| s.state_hash()).collect(), reports)
}

#[test]
fn one_thread_and_two_threads_give_identical_states_and_effects() {
    let (hashes1, reports1) = workload(1);
    let (hashes2, reports2) = workload(2);
    assert_eq!(hashes1, hashes2);
    assert_eq!(reports1, reports2);
    assert!(reports1.iter().all(|r| r.effects.windows(2).all(|w| w[0].script < w[1].script)));
    assert!(reports1[0].effects.len() > 20, "most scripts produced effects");
    assert_eq!(reports1[0].stopped.len(), 4, "the four looping scripts stopped");
}

#[test]
fn the_benchmark_runs_every_event_it_reports() {
    let r = script::bench(8, 2, 100).expect("bench");
    assert_eq!(r.events_total, 800);
    assert!(r.events_per_s > 0.0 && r.event_p99_us >= r.event_p50_us && r.instantiate_us > 0.0);
    assert!(r.fuel_used_total >= r.events_total, "every event ran its handler");
}
