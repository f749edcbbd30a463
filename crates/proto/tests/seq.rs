//! Sequence numbers: the gateway's counter is gap-free from 1, and a client's tracker counts
//! exactly the updates it missed and the ones it saw twice.

use proptest::prelude::*;
use proto::seq::FIRST_SEQ;
use proto::{SeqCounter, SeqEvent, SeqTracker};

#[test]
fn a_gap_free_stream_has_no_gaps_and_no_replays() {
    let mut counter = SeqCounter::new();
    let mut tracker = SeqTracker::new();
    assert_eq!(tracker.last(), None);
    for _ in 0..100 {
        assert_eq!(tracker.observe(counter.next_seq()), SeqEvent::InOrder);
    }
    assert_eq!((tracker.received(), tracker.gaps(), tracker.missing(), tracker.replays()), (100, 0, 0, 0));
    assert_eq!(tracker.last(), Some(100));
    assert_eq!(counter.issued(), 100);
}

#[test]
fn skipped_numbers_are_counted_as_one_gap_each_jump() {
    let mut tracker = SeqTracker::new();
    assert_eq!(tracker.observe(1), SeqEvent::InOrder);
    assert_eq!(tracker.observe(4), SeqEvent::Gap { missing: 2 });
    assert_eq!(tracker.observe(5), SeqEvent::InOrder);
    assert_eq!(tracker.observe(10), SeqEvent::Gap { missing: 4 });
    assert_eq!((tracker.gaps(), tracker.missing(), tracker.received()), (2, 6, 4));
}

#[test]
fn a_stream_that_does_not_start_at_one_has_a_gap() {
    let mut tracker = SeqTracker::new();
    assert_eq!(tracker.observe(3), SeqEvent::Gap { missing: 2 });
}

#[test]
fn duplicates_and_steps_back_are_replays_and_do_not_move_the_tracker() {
    let mut tracker = SeqTracker::new();
    tracker.observe(1);
    tracker.observe(2);
    assert_eq!(tracker.observe(2), SeqEvent::Replay);
    assert_eq!(tracker.observe(1), SeqEvent::Replay);
    assert_eq!(tracker.observe(0), SeqEvent::Replay);
    assert_eq!(tracker.observe(3), SeqEvent::InOrder);
    assert_eq!((tracker.replays(), tracker.received(), tracker.last()), (3, 3, Some(3)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Dropping and duplicating updates of a gap-free stream is counted exactly.
    #[test]
    fn the_tracker_counts_exactly_what_was_dropped_and_duplicated(
        fates in proptest::collection::vec(0u8..10, 1..300),
    ) {
        let mut counter = SeqCounter::new();
        let mut tracker = SeqTracker::new();
        let (mut dropped_before_last, mut pending_drops, mut duplicated, mut delivered) = (0u64, 0u64, 0u64, 0u64);
        for fate in fates {
            let seq = counter.next_seq();
            match fate {
                0 => pending_drops += 1,
                1 => {
                    tracker.observe(seq);
                    tracker.observe(seq);
                    duplicated += 1;
                    delivered += 1;
                    dropped_before_last += pending_drops;
                    pending_drops = 0;
                }
                _ => {
                    tracker.observe(seq);
                    delivered += 1;
                    dropped_before_last += pending_drops;
                    pending_drops = 0;
                }
            }
        }
        // Drops after the last delivered update are invisible until the next one arrives.
        prop_assert_eq!(tracker.missing(), dropped_before_last);
        prop_assert_eq!(tracker.replays(), duplicated);
        prop_assert_eq!(tracker.received(), delivered);
        prop_assert!(tracker.last().unwrap_or(0) < FIRST_SEQ + counter.issued());
    }
}
