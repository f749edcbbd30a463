//! The two sides driven by hand, message by message, for the cases the simulation cannot
//! reach on its own (a replica that disagrees) and for the basic handshake.

use migrate::msg::Outcome;
use migrate::{MigrationId, Msg, Phase, Policy, Source, SourceEvent, Target, TargetEvent, TargetPhase};
use world::{Input, ObjectSpec, Region, RegionId, Terrain};

const R: RegionId = RegionId::new(0, 0);
const ID: MigrationId = MigrationId(1);

fn region() -> Region {
    let mut r = Region::with_terrain(R, Terrain::flat(5.0));
    r.tick(1_000, (0..10).map(|tag| Input::CreateObject { tag, spec: ObjectSpec::default() }));
    r
}

/// Moves every message from one side to the other until both are quiet.
fn exchange(now: u64, s: &mut Source, t: &mut Target) {
    loop {
        let mut moved = false;
        while let Some(m) = s.poll_transmit() {
            t.handle_msg(now, Msg::decode(&m.encode()).unwrap());
            moved = true;
        }
        while let Some(m) = t.poll_transmit() {
            s.handle_msg(now, Msg::decode(&m.encode()).unwrap());
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

fn prepared_pair(now: u64) -> (Source, Target) {
    let mut s = Source::start(ID, R, 3, Policy::default(), now);
    let Some(Msg::Prepare { id, region, epoch }) = s.poll_transmit() else { panic!("no Prepare") };
    let mut t = Target::new(now, id, region, epoch);
    assert!(matches!(t.poll_event(), Some(TargetEvent::Prepare { .. })));
    t.prepared(now);
    exchange(now, &mut s, &mut t);
    assert_eq!(s.phase(), Phase::Copying);
    (s, t)
}

/// A pair past the full copy, with the source frozen one tick later (its final round queued).
fn frozen_pair() -> (Source, Target) {
    let mut r = region();
    let (mut s, mut t) = prepared_pair(0);
    s.on_tick_boundary(10, &r);
    exchange(20, &mut s, &mut t);
    r.tick(30_000, []);
    s.on_tick_boundary(30_001, &r);
    (s, t)
}

#[test]
fn an_idle_region_freezes_after_the_first_round_and_commits_on_the_compare_and_swap() {
    let mut r = region();
    let (mut s, mut t) = prepared_pair(0);
    s.on_tick_boundary(10, &r);
    exchange(20, &mut s, &mut t);
    assert_eq!(t.replica().unwrap().state_hash(), r.state_hash());
    r.tick(30_000, []);
    s.on_tick_boundary(30_001, &r);
    assert_eq!(s.phase(), Phase::Frozen, "a one-tick remainder fits the budget");
    assert!(!s.should_tick());
    exchange(30_100, &mut s, &mut t);
    assert_eq!(t.phase(), TargetPhase::AwaitingCommit);
    let Some(SourceEvent::CasEpoch { from: 3, to: 4, .. }) = s.poll_event() else { panic!("no CAS asked") };
    assert_eq!(s.buffer_input(Input::RemoveAvatar { id: world::EntityId(1) }), Ok(()));
    s.handle_cas_result(30_200, true);
    let Some(SourceEvent::Committed { report, buffered }) = s.poll_event() else { panic!() };
    assert_eq!(buffered.len(), 1, "inputs held during the freeze go to the new owner");
    assert_eq!(report.rounds, 2);
    assert_eq!(report.freeze_us(), Some(199));
    exchange(30_300, &mut s, &mut t);
    let Some(TargetEvent::Committed { region, epoch: 4 }) = t.poll_event() else { panic!() };
    assert_eq!(region.state_hash(), r.state_hash());
}

#[test]
fn a_replica_that_disagrees_at_the_freeze_aborts_and_the_source_resumes() {
    let r = region();
    let (mut s, mut t) = prepared_pair(0);
    s.on_tick_boundary(10, &r);
    exchange(20, &mut s, &mut t);
    // The final round claims a state the replica does not have.
    let bytes = r.delta_since(r.generation()).unwrap().encode();
    let lie = migrate::msg::Freeze { tick: r.tick_number(), state_hash: 42 };
    let chunk = Msg::Chunk {
        id: ID,
        round: 1,
        payload: migrate::msg::Payload::Delta,
        index: 0,
        count: 1,
        freeze: Some(lie),
        checksum: xxhash_rust::xxh3::xxh3_64(&bytes),
        data: bytes,
    };
    t.handle_msg(30, chunk);
    let Some(Msg::FreezeAck { ok: false, .. }) = t.poll_transmit() else { panic!("the target must refuse") };
    assert_eq!(t.phase(), TargetPhase::Aborted);
    assert!(t.replica().is_none());
}

#[test]
fn the_source_refuses_a_hash_mismatch_and_hands_back_buffered_inputs() {
    let (mut s, _t) = frozen_pair();
    assert_eq!(s.phase(), Phase::Frozen);
    s.buffer_input(Input::RemoveAvatar { id: world::EntityId(1) }).unwrap();
    s.handle_msg(30_010, Msg::FreezeAck { id: ID, round: 1, state_hash: 7, ok: true });
    let Some(SourceEvent::Aborted { report, buffered }) = s.poll_event() else { panic!() };
    assert!(report.abort_reason.unwrap().contains("hash mismatch"));
    assert_eq!(buffered.len(), 1, "held inputs are applied by the source after all");
    assert!(s.should_tick());
    // Asked later, the source tells the target what happened.
    s.handle_msg(40_000, Msg::StatusQuery { id: ID });
    while let Some(m) = s.poll_transmit() {
        if let Msg::Status { outcome, .. } = m {
            assert_eq!(outcome, Outcome::Aborted);
            return;
        }
    }
    panic!("no status answer");
}

#[test]
fn a_refused_compare_and_swap_fences_the_source() {
    let (mut s, mut t) = frozen_pair();
    exchange(30_100, &mut s, &mut t);
    assert!(matches!(s.poll_event(), Some(SourceEvent::CasEpoch { .. })));
    s.handle_cas_result(30_200, false);
    assert!(matches!(s.poll_event(), Some(SourceEvent::Fenced { .. })));
    assert_eq!(s.phase(), Phase::Fenced);
    assert!(!s.should_tick(), "a fenced source never ticks the region again");
}

#[test]
fn messages_from_the_wire_are_checked() {
    assert!(Msg::decode(&[0xff; 10]).is_err());
    let mut chunk = Msg::Chunk {
        id: ID,
        round: 0,
        payload: migrate::msg::Payload::Snapshot,
        index: 3,
        count: 2,
        freeze: None,
        checksum: 0,
        data: vec![],
    }
    .encode();
    assert!(Msg::decode(&chunk).is_err(), "index beyond count");
    chunk.truncate(3);
    assert!(Msg::decode(&chunk).is_err());
}

#[test]
fn stop_and_copy_freezes_first_and_sends_everything_in_one_final_round() {
    let r = region();
    let mut s = Source::start(ID, R, 3, Policy::stop_and_copy(), 0);
    let Some(Msg::Prepare { id, region: rid, epoch }) = s.poll_transmit() else { panic!() };
    let mut t = Target::new(0, id, rid, epoch);
    t.poll_event();
    t.prepared(0);
    exchange(0, &mut s, &mut t);
    s.on_tick_boundary(10, &r);
    assert_eq!(s.phase(), Phase::Frozen);
    exchange(20, &mut s, &mut t);
    assert_eq!(t.phase(), TargetPhase::AwaitingCommit);
    assert_eq!(s.report().rounds, 1);
}

#[test]
fn a_large_round_is_never_the_final_one_and_is_left_to_the_caller_to_encode() {
    let mut r = region();
    // A fast link but slow ends (10 MB/s of state): only the work of handling a round's raw
    // bytes can make it too big for the freeze.
    let policy =
        Policy { copies_by_caller: true, assumed_bandwidth: 1e12, state_rate: 10e6, ..Policy::default() };
    let mut s = Source::start(ID, R, 3, policy, 0);
    let Some(Msg::Prepare { id, region, epoch }) = s.poll_transmit() else { panic!("no Prepare") };
    let mut t = Target::new(0, id, region, epoch);
    assert!(matches!(t.poll_event(), Some(TargetEvent::Prepare { .. })));
    t.prepared(0);
    exchange(0, &mut s, &mut t);
    s.on_tick_boundary(10, &r);
    let Some(migrate::CopyJob::Snapshot) = s.take_copy() else { panic!("the full copy is the caller's") };
    assert!(s.take_copy().is_none(), "handed out once");
    s.copy_ready(20, r.snapshot_with(world::Compression::Lz4), r.generation());
    exchange(30, &mut s, &mut t);
    // One tick creates 4,000 alike objects: little on the wire, a lot to cut, apply and hash.
    let base = r.generation();
    let many = (0..4_000).map(|i| Input::CreateObject { tag: 100 + i, spec: ObjectSpec::default() });
    r.tick(30_000, many);
    let raw = r.delta_since(base).unwrap().raw_len();
    assert!(raw > 256 * 1024, "{raw} raw bytes");
    s.on_tick_boundary(30_001, &r);
    assert_eq!(s.phase(), Phase::Copying, "a round of {raw} raw bytes is not frozen on");
    let Some(migrate::CopyJob::Delta(d)) = s.take_copy() else {
        panic!("a large round is encoded off the tick")
    };
    assert_eq!(d.generation, r.generation());
    assert!(s.poll_transmit().is_none(), "nothing sent until the caller's copy is ready");
    // The region ticks on meanwhile; the round goes out when the caller has encoded it.
    r.tick(50_000, []);
    s.on_tick_boundary(50_001, &r);
    assert_eq!(s.phase(), Phase::Copying);
    s.copy_ready(60_000, d.encode(), d.generation);
    exchange(60_100, &mut s, &mut t);
    assert_eq!(t.replica().unwrap().generation(), d.generation);
    // The next round is one quiet tick: that one is the final round.
    r.tick(70_000, []);
    s.on_tick_boundary(70_001, &r);
    assert_eq!(s.phase(), Phase::Frozen);
    exchange(70_100, &mut s, &mut t);
    assert_eq!(t.phase(), TargetPhase::AwaitingCommit);
    assert_eq!(t.replica().unwrap().state_hash(), r.state_hash());
}
