//! Migration state: a captured script restored elsewhere continues exactly (same state hash
//! after every step), deltas carry only changed chunks, and a prepared instance catches up by
//! deltas alone.

mod common;

use std::sync::{Arc, OnceLock};

use common::{engine, load, new_script, view};
use proptest::prelude::*;
use script::{Event, Script, ScriptDelta, ScriptEngine, ScriptModule, ScriptState, StateError, TickBudget};
use world::{EntityId, RegionId};

/// Two engines, standing for the migration's source and target hosts (compiling once for all
/// proptest cases keeps the test fast).
fn hosts() -> &'static (ScriptEngine, Arc<ScriptModule>, ScriptEngine, Arc<ScriptModule>) {
    static HOSTS: OnceLock<(ScriptEngine, Arc<ScriptModule>, ScriptEngine, Arc<ScriptModule>)> =
        OnceLock::new();
    HOSTS.get_or_init(|| {
        let (a, b) = (engine(), engine());
        let (ma, mb) = (load(&a, "counter"), load(&b, "counter"));
        (a, ma, b, mb)
    })
}

#[derive(Clone, Debug)]
enum Step {
    Send(Event),
    /// Simulation time moves on (the timer may fire).
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let id = (0u64..5).prop_map(EntityId);
    prop_oneof![
        id.clone().prop_map(|toucher| Step::Send(Event::Touch { toucher })),
        (prop_oneof![Just(7), 0..20i32], id.clone(), "[a-zé ]{0,40}")
            .prop_map(|(channel, sender, text)| Step::Send(Event::Listen { channel, sender, text })),
        (id.clone(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(sender, bytes)| Step::Send(Event::Message { sender, bytes })),
        (id, 0..2i32).prop_map(|(other, phase)| Step::Send(Event::Collision { other, phase })),
        (0..16i32).prop_map(|what| Step::Send(Event::Changed { what })),
        (0..4u16, 0..4u16).prop_map(|(x, y)| Step::Send(Event::RegionCross {
            from: RegionId::new(x, y),
            to: RegionId::new(x + 1, y)
        })),
        (1u64..250).prop_map(Step::Wait),
    ]
}

/// Applies one step to a script and runs its tick; returns the effects.
fn advance(s: &mut Script, v: &mut script::StaticView, step: &Step) -> Vec<script::Effect> {
    match step {
        Step::Send(e) => {
            s.enqueue(e.clone());
        }
        Step::Wait(ms) => v.now_ms += ms,
    }
    s.run_tick(v, TickBudget::UNLIMITED);
    s.take_effects()
}

fn roundtrip(state: &ScriptState) -> ScriptState {
    let bytes = postcard::to_stdvec(state).expect("encode");
    postcard::from_bytes(&bytes).expect("decode")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_restored_script_continues_exactly_like_the_original(
        before in prop::collection::vec(step(), 0..12),
        after in prop::collection::vec(step(), 1..24),
    ) {
        let (_, source_module, _, target_module) = hosts();
        let mut v = view(1);
        let mut original = new_script(source_module, 0);
        for s in &before {
            advance(&mut original, &mut v, s);
        }

        // Three ways to the same state on the other host: a full state through the wire
        // format, a delta since version 0 into an instance made ahead of time, and a stream
        // of deltas after every step (checked below).
        let state = roundtrip(&original.capture());
        prop_assert_eq!(state.state_hash(), original.state_hash());
        let mut restored = Script::restore(target_module, &state).expect("restore");
        let mut prepared = Script::prepare(target_module, original.id(), original.object()).expect("prepare");
        prepared.apply_delta(&original.delta_since(0)).expect("delta since 0");
        let mut follower = state.clone();
        let mut v_copy = v.clone();
        let mut v_prep = v.clone();
        prop_assert_eq!(restored.state_hash(), original.state_hash());
        prop_assert_eq!(prepared.state_hash(), original.state_hash());

        for s in &after {
            let base = original.version();
            let e1 = advance(&mut original, &mut v, s);
            let e2 = advance(&mut restored, &mut v_copy, s);
            let e3 = advance(&mut prepared, &mut v_prep, s);
            prop_assert_eq!(&e1, &e2);
            prop_assert_eq!(&e1, &e3);
            let h = original.state_hash();
            prop_assert_eq!(h, restored.state_hash());
            prop_assert_eq!(h, prepared.state_hash());
            follower.apply(&original.delta_since(base)).expect("delta applies");
            prop_assert_eq!(h, follower.state_hash());
        }
    }
}

#[test]
fn a_delta_carries_only_the_chunks_that_changed() {
    let e = engine();
    let m = load(&e, "counter");
    let mut s = new_script(&m, 0);
    let mut v = view(1);
    s.run_tick(&v, TickBudget::UNLIMITED);
    let base = s.capture();

    let idle = s.delta_since(base.version);
    assert!(idle.chunks.is_empty(), "nothing ran, nothing to send");

    // The message handler writes its bytes at 8192: that chunk only.
    let chunk = (8192 / script::limits::CHUNK_BYTES) as u8;
    s.enqueue(Event::Message { sender: EntityId(3), bytes: b"cargo".to_vec() });
    s.run_tick(&v, TickBudget::UNLIMITED);
    let d = s.delta_since(base.version);
    assert_eq!(d.chunks.iter().map(|c| c.index).collect::<Vec<_>>(), vec![chunk]);

    // The same bytes again change no content: still only that chunk since the base, and nothing
    // since the previous delta.
    let mid = s.version();
    s.enqueue(Event::Message { sender: EntityId(3), bytes: b"cargo".to_vec() });
    s.run_tick(&v, TickBudget::UNLIMITED);
    assert!(s.delta_since(mid).chunks.is_empty());

    // A touch logs the toucher at 12288 and writes one random word at 16384 or above.
    s.enqueue(Event::Touch { toucher: EntityId(77) });
    v.now_ms += 1;
    s.run_tick(&v, TickBudget::UNLIMITED);
    let d = s.delta_since(mid);
    let chunks: Vec<u8> = d.chunks.iter().map(|c| c.index).collect();
    assert_eq!(chunks.len(), 2, "{chunks:?}");
    let at = |byte: usize| (byte / script::limits::CHUNK_BYTES) as u8;
    assert_eq!(chunks[0], at(12288));
    assert!((at(16384)..=at(65535)).contains(&chunks[1]));

    let mut copy = base.clone();
    copy.apply(&s.delta_since(base.version)).expect("apply");
    assert_eq!(copy.state_hash(), s.state_hash());
}

#[test]
fn a_delta_for_another_version_is_refused() {
    let e = engine();
    let m = load(&e, "counter");
    let mut s = new_script(&m, 0);
    let mut state = s.capture();
    s.run_tick(&view(1), TickBudget::UNLIMITED);
    let v1 = s.version();
    s.enqueue(Event::Touch { toucher: EntityId(1) });
    s.run_tick(&view(1), TickBudget::UNLIMITED);
    let late: ScriptDelta = s.delta_since(v1);
    assert_eq!(state.apply(&late), Err(StateError::WrongBase { expected: 0, found: v1 }));
    let mut other = new_script(&m, 1);
    assert!(matches!(other.apply_delta(&late), Err(StateError::WrongScript { .. })));
}

#[test]
fn a_damaged_state_is_refused_not_applied() {
    let e = engine();
    let m = load(&e, "counter");
    let mut s = new_script(&m, 0);
    let mut state = s.capture();
    state.memory.truncate(100);
    assert_eq!(
        Script::restore(&m, &state).err().map(|e| e.to_string()),
        Some(StateError::MemorySize(100).to_string())
    );
    let mut state = s.capture();
    state.globals.pop();
    assert!(matches!(s.apply_state(&state), Err(StateError::GlobalCount { expected: 4, found: 3 })));
    let mut state = s.capture();
    state.globals[0] = script::GlobalValue::F64(0);
    assert!(matches!(s.apply_state(&state), Err(StateError::GlobalType { index: 0, .. })));
}

/// Writes memory every way a script can: stores of each width (one across a chunk boundary,
/// one through an offset), a vector store, memory.fill and memory.copy, and host calls that
/// write into memory (`get_pos`, `read_event`).
const EVERY_WRITE: &str = r#"(module
  (import "terrane" "get_pos" (func $get_pos (param i32)))
  (import "terrane" "read_event" (func $read_event (param i32 i32) (result i32)))
  (memory 1 1)
  (func (export "touch") (param $who i64)
    (i32.store (i32.const 1022) (i32.const -1))
    (i64.store8 offset=5000 (i32.const 0) (i64.const 7))
    (f64.store (i32.const 20000) (f64.const 1.5))
    (v128.store (i32.const 65520) (v128.const i32x4 1 2 3 4))
    (memory.fill (i32.const 30000) (i32.const 9) (i32.const 3000))
    (memory.copy (i32.const 40000) (i32.const 1022) (i32.const 8))
    (call $get_pos (i32.const 50000)))
  (func (export "message") (param $from i64) (param $len i32)
    (drop (call $read_event (i32.const 60000) (local.get $len)))))"#;

#[test]
fn every_kind_of_memory_write_reaches_the_next_delta() {
    let e = engine();
    let m = e.load(EVERY_WRITE.as_bytes()).expect("load");
    let mut s = new_script(&m, 0);
    let v = view(1);
    let changed = |before: &[u8], after: &[u8]| -> Vec<u8> {
        let n = script::limits::CHUNK_BYTES;
        (0..before.len() / n)
            .filter(|&i| before[i * n..(i + 1) * n] != after[i * n..(i + 1) * n])
            .map(|i| i as u8)
            .collect()
    };
    let base = s.capture();

    s.enqueue(Event::Touch { toucher: EntityId(5) });
    s.run_tick(&v, TickBudget::UNLIMITED);
    let expected = changed(&base.memory, s.memory());
    // 1022..1026 spans chunks 0 and 1; 5000, 20000, 30000..33000, 40000, 50000 and 65520.
    assert_eq!(expected.len(), 11, "{expected:?}");
    let d = s.delta_since(base.version);
    assert_eq!(d.chunks.iter().map(|c| c.index).collect::<Vec<_>>(), expected);

    let mid = s.capture();
    s.enqueue(Event::Message { sender: EntityId(3), bytes: b"written by the host".to_vec() });
    s.run_tick(&v, TickBudget::UNLIMITED);
    let expected = changed(&mid.memory, s.memory());
    assert_eq!(expected, vec![(60000 / script::limits::CHUNK_BYTES) as u8]);
    let d = s.delta_since(mid.version);
    assert_eq!(d.chunks.iter().map(|c| c.index).collect::<Vec<_>>(), expected);

    let mut copy = base.clone();
    copy.apply(&s.delta_since(base.version)).expect("apply");
    assert_eq!(copy.state_hash(), s.state_hash());
}
