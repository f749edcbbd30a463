//! The two sides driven by hand, message by message, for the cases the simulation cannot
//! reach on its own (a replica that disagrees) and for the basic handshake.

use migrate::{
    FenceResult, MigrationId, Msg, Phase, Policy, Source, SourceEvent, Target, TargetEvent, TargetPhase,
};
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
fn an_idle_region_freezes_after_the_first_round_and_the_target_commits_by_compare_and_swap() {
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
    // The final round matched and the source released the region with it.
    assert_eq!(t.phase(), TargetPhase::Committing);
    let Some(TargetEvent::CasEpoch { from: 3, to: 4, .. }) = t.poll_event() else { panic!("no CAS asked") };
    assert_eq!(s.phase(), Phase::Frozen, "the source waits for the target's word");
    assert_eq!(s.buffer_input(Input::RemoveAvatar { id: world::EntityId(1) }), Ok(()));
    t.handle_cas_result(true);
    let Some(TargetEvent::Committed { region, epoch: 4 }) = t.poll_event() else { panic!() };
    assert_eq!(region.state_hash(), r.state_hash());
    exchange(30_200, &mut s, &mut t);
    let Some(SourceEvent::Committed { report, buffered }) = s.poll_event() else { panic!() };
    assert_eq!(buffered.len(), 1, "inputs held during the freeze go to the new owner");
    assert_eq!(report.rounds, 2);
    assert_eq!(report.freeze_us(), Some(199));
    assert!(!s.should_tick());
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
    // A release that comes after changes nothing: a target that refused never asks for the swap.
    t.handle_msg(40, Msg::Release { id: ID });
    assert!(!matches!(t.poll_event(), Some(TargetEvent::CasEpoch { .. })));
    assert!(t.poll_event().is_none());
}

#[test]
fn a_failed_hash_check_resumes_the_source_at_once_with_its_buffered_inputs() {
    let (mut s, _t) = frozen_pair();
    assert_eq!(s.phase(), Phase::Frozen);
    s.buffer_input(Input::RemoveAvatar { id: world::EntityId(1) }).unwrap();
    s.handle_msg(30_010, Msg::FreezeAck { id: ID, round: 1, state_hash: 7, ok: false });
    let Some(SourceEvent::Aborted { report, buffered }) = s.poll_event() else { panic!() };
    assert!(report.abort_reason.unwrap().contains("hash mismatch"));
    assert_eq!(buffered.len(), 1, "held inputs are applied by the source after all");
    assert!(s.should_tick());
    assert!(std::iter::from_fn(|| s.poll_transmit()).any(|m| matches!(m, Msg::Abort { .. })));
}

#[test]
fn a_target_that_claims_a_match_with_another_hash_is_fenced_out_not_trusted() {
    let (mut s, _t) = frozen_pair();
    s.handle_msg(30_010, Msg::FreezeAck { id: ID, round: 1, state_hash: 7, ok: true });
    assert_eq!(s.phase(), Phase::Fencing);
    assert!(!s.should_tick(), "it may be committing: only the directory settles it");
    let Some(SourceEvent::Fence { from: 3, to: 4, .. }) = s.poll_event() else { panic!("no fence asked") };
}

#[test]
fn a_silent_target_is_fenced_out_and_the_directory_decides_who_owns_the_region() {
    for (answer, phase, ticks) in [
        (FenceResult::Kept, Phase::Aborted, true),
        (FenceResult::TargetOwns, Phase::Committed, false),
        (FenceResult::Lost, Phase::Fenced, false),
    ] {
        let (mut s, _t) = frozen_pair();
        s.buffer_input(Input::RemoveAvatar { id: world::EntityId(1) }).unwrap();
        let deadline = s.poll_timeout().unwrap();
        s.handle_timeout(30_001 + migrate::limits::FREEZE_TIMEOUT_US - 1);
        assert_eq!(s.phase(), Phase::Frozen, "not before FREEZE_TIMEOUT");
        s.handle_timeout(deadline.max(30_001 + migrate::limits::FREEZE_TIMEOUT_US));
        assert_eq!(s.phase(), Phase::Fencing);
        assert!(!s.should_tick(), "the target may be committing: no tick until the directory answers");
        let Some(SourceEvent::Fence { from: 3, to: 4, .. }) = s.poll_event() else {
            panic!("no fence asked")
        };
        // A refusal that arrives now settles nothing: the fence is already asked for.
        s.handle_msg(1_100_000, Msg::Refuse { id: ID, reason: "late".into() });
        assert_eq!(s.phase(), Phase::Fencing);
        s.handle_fence_result(1_200_000, answer);
        assert_eq!(s.phase(), phase);
        assert_eq!(s.should_tick(), ticks);
        match s.poll_event() {
            Some(SourceEvent::Aborted { buffered, .. }) => assert_eq!(buffered.len(), 1),
            Some(SourceEvent::Committed { buffered, .. }) => assert_eq!(buffered.len(), 1),
            Some(SourceEvent::Fenced { .. }) => {}
            other => panic!("{answer:?}: {other:?}"),
        }
    }
}

#[test]
fn a_target_whose_swap_loses_to_the_fence_drops_its_replica_without_a_word() {
    let (mut s, mut t) = frozen_pair();
    exchange(30_100, &mut s, &mut t);
    assert!(matches!(t.poll_event(), Some(TargetEvent::CasEpoch { .. })));
    // Asked for the swap: the target no longer gives up on its own.
    t.handle_timeout(10_000_000);
    assert_eq!(t.phase(), TargetPhase::Committing);
    t.handle_msg(10_000_001, Msg::Abort { id: ID, reason: "no".into() });
    assert_eq!(t.phase(), TargetPhase::Committing, "an abort does not undo a swap that may have happened");
    t.handle_cas_result(false);
    assert_eq!(t.phase(), TargetPhase::Aborted);
    assert!(matches!(t.poll_event(), Some(TargetEvent::Aborted { .. })));
    assert!(t.poll_transmit().is_none(), "no refusal: the source may be resuming only through its fence");
}

#[test]
fn with_a_log_the_source_releases_the_region_only_once_it_is_flushed() {
    let mut r = region();
    let (mut s, mut t) = prepared_pair(0);
    s.release_after_log_flush();
    s.on_tick_boundary(10, &r);
    exchange(20, &mut s, &mut t);
    r.tick(30_000, []);
    s.on_tick_boundary(30_001, &r);
    assert!(matches!(s.poll_event(), Some(SourceEvent::FlushLog)));
    exchange(30_100, &mut s, &mut t);
    assert_eq!(t.phase(), TargetPhase::Verified, "matched, but not released");
    assert!(t.poll_event().is_none());
    s.log_flushed(30_200);
    exchange(30_300, &mut s, &mut t);
    assert!(matches!(t.poll_event(), Some(TargetEvent::CasEpoch { from: 3, to: 4, .. })));
    t.handle_cas_result(true);
    exchange(30_400, &mut s, &mut t);
    assert_eq!(s.phase(), Phase::Committed);
}

#[test]
fn a_lost_commit_notice_is_repeated_when_the_source_releases_again() {
    let (mut s, mut t) = frozen_pair();
    exchange(30_100, &mut s, &mut t);
    t.poll_event();
    t.handle_cas_result(true);
    // The target's `Committed` is lost on the way.
    while t.poll_transmit().is_some() {}
    assert_eq!(s.phase(), Phase::Frozen);
    s.handle_timeout(30_001 + migrate::limits::RETRANSMIT_US);
    exchange(30_001 + migrate::limits::RETRANSMIT_US, &mut s, &mut t);
    assert_eq!(s.phase(), Phase::Committed);
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
    assert_eq!(t.phase(), TargetPhase::Committing);
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
    assert_eq!(t.phase(), TargetPhase::Committing);
    assert_eq!(t.replica().unwrap().state_hash(), r.state_hash());
}
