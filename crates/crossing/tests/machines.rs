//! Hand-driven exchanges between one sending and one receiving border: the basic crossing,
//! duplicates, refusals, give-up and the decoder's checks.

mod common;

use common::{script, vehicle};
use crossing::limits::{GIVE_UP_US, MAX_INCOMING_IN_FLIGHT, RETRANSMIT_US};
use crossing::{
    CrossingId, Incoming, IncomingEvent, Msg, MsgError, Outgoing, OutgoingEvent, RefuseReason, ReturnReason,
    StartError, Transmit, UnitError,
};
use world::{EntityId, RegionId};

const A: RegionId = RegionId::new(0, 0);
const B: RegionId = RegionId::new(1, 0);

fn transmits(f: impl FnMut() -> Option<Transmit>) -> Vec<Transmit> {
    std::iter::from_fn(f).collect()
}

fn only(mut v: Vec<Transmit>, to: RegionId) -> Msg {
    assert_eq!(v.len(), 1, "expected one message, got {v:?}");
    let t = v.remove(0);
    assert_eq!(t.to, to);
    t.msg
}

#[test]
fn an_accepted_and_released_vehicle_moves_whole_to_the_neighbour() {
    let (mut a, mut b) = (Outgoing::new(A), Incoming::new(B));
    let unit = vehicle(100, 3, 2);
    let id = a.start(0, unit.clone(), B).unwrap();
    let offer = only(transmits(|| a.poll_transmit()), B);
    assert!(a.poll_event().is_none(), "the unit stays in the sender until it is decided");

    b.handle_msg(10, A, offer);
    assert_eq!(b.poll_event(), Some(IncomingEvent::Accepted { id, root: EntityId(100) }));
    assert!(b.poll_event().is_none(), "an accepted unit is not adopted before its release");
    let accept = only(transmits(|| b.poll_transmit()), A);

    a.handle_msg(20, B, accept);
    assert_eq!(a.poll_event(), Some(OutgoingEvent::Released { id, root: EntityId(100), to: B }));
    let release = only(transmits(|| a.poll_transmit()), B);

    b.handle_msg(30, A, release);
    assert_eq!(b.poll_event(), Some(IncomingEvent::Adopt { id, unit }));
    let done = only(transmits(|| b.poll_transmit()), A);
    a.handle_msg(40, B, done);
    assert_eq!(a.poll_event(), Some(OutgoingEvent::Completed { id }));
    assert_eq!((a.in_flight(), b.provisional()), (0, 0));
    assert_eq!((a.poll_timeout(), b.poll_timeout()), (None, None));
}

#[test]
fn duplicate_offers_are_accepted_once_and_ignored_after_adoption() {
    let (mut a, mut b) = (Outgoing::new(A), Incoming::new(B));
    a.start(0, vehicle(100, 1, 0), B).unwrap();
    let offer = only(transmits(|| a.poll_transmit()), B);
    b.handle_msg(1, A, offer.clone());
    b.handle_msg(2, A, offer.clone());
    let accepts = transmits(|| b.poll_transmit());
    assert_eq!(accepts.len(), 2);
    assert_eq!(accepts[0], accepts[1], "a duplicate offer is answered with the same acceptance");
    assert!(matches!(b.poll_event(), Some(IncomingEvent::Accepted { .. })));
    assert!(b.poll_event().is_none());
    assert_eq!(b.provisional(), 1);

    a.handle_msg(3, B, accepts[0].msg.clone());
    a.handle_msg(3, B, accepts[1].msg.clone());
    let releases = transmits(|| a.poll_transmit());
    assert!(matches!(a.poll_event(), Some(OutgoingEvent::Released { .. })));
    assert!(a.poll_event().is_none(), "a crossing is released once");
    for r in releases {
        b.handle_msg(4, A, r.msg);
    }
    assert!(matches!(b.poll_event(), Some(IncomingEvent::Adopt { .. })));
    assert!(b.poll_event().is_none(), "a duplicated release adopts nothing more");
    let _ = transmits(|| b.poll_transmit());

    b.handle_msg(5, A, offer);
    assert!(b.poll_event().is_none() && b.poll_transmit().is_none(), "a late duplicate offer is ignored");
}

#[test]
fn a_full_receiver_refuses_and_the_sender_keeps_the_unit() {
    let mut b = Incoming::new(B);
    for seq in 0..MAX_INCOMING_IN_FLIGHT as u64 {
        let id = CrossingId { from: A, seq };
        b.handle_msg(0, A, Msg::Offer { id, to: B, unit: vehicle(10_000 + seq * 10, 0, 0) });
    }
    assert_eq!(b.provisional(), MAX_INCOMING_IN_FLIGHT);
    let _ = transmits(|| b.poll_transmit());

    let mut a = Outgoing::new(A);
    let unit = vehicle(5, 2, 1);
    // A fresh sender numbers from 0: shift it past the ids the receiver already holds.
    let id = CrossingId { from: A, seq: 999 };
    b.handle_msg(1, A, Msg::Offer { id, to: B, unit: unit.clone() });
    assert_eq!(only(transmits(|| b.poll_transmit()), A), Msg::Refuse { id, reason: RefuseReason::Full });

    let own = a.start(2, unit.clone(), B).unwrap();
    let _ = transmits(|| a.poll_transmit());
    a.handle_msg(3, B, Msg::Refuse { id: own, reason: RefuseReason::Full });
    assert_eq!(
        a.poll_event(),
        Some(OutgoingEvent::Returned { id: own, unit, why: ReturnReason::Refused(RefuseReason::Full) })
    );
    assert_eq!(a.in_flight(), 0);
}

#[test]
fn a_sender_that_hears_nothing_takes_the_unit_back_and_cancels_a_late_acceptance() {
    let (mut a, mut b) = (Outgoing::new(A), Incoming::new(B));
    let unit = vehicle(100, 0, 1);
    let id = a.start(0, unit.clone(), B).unwrap();
    let offer = only(transmits(|| a.poll_transmit()), B);
    a.handle_timeout(RETRANSMIT_US);
    assert_eq!(only(transmits(|| a.poll_transmit()), B), offer, "an unanswered offer is sent again");
    a.handle_timeout(GIVE_UP_US);
    assert_eq!(a.poll_event(), Some(OutgoingEvent::Returned { id, unit, why: ReturnReason::NoAnswer }));

    // The offer was only delayed: the receiver accepts provisionally and asks.
    b.handle_msg(GIVE_UP_US + 1, A, offer);
    let accept = only(transmits(|| b.poll_transmit()), A);
    a.handle_msg(GIVE_UP_US + 2, B, accept);
    assert!(a.poll_event().is_none(), "a returned crossing is never released");
    let cancel = only(transmits(|| a.poll_transmit()), B);
    assert!(matches!(cancel, Msg::Cancel { .. }));
    b.handle_msg(GIVE_UP_US + 3, A, cancel);
    assert!(matches!(b.poll_event(), Some(IncomingEvent::Accepted { .. })));
    assert_eq!(b.poll_event(), Some(IncomingEvent::Dropped { id, root: EntityId(100) }));
    assert_eq!(b.provisional(), 0);
}

#[test]
fn a_receiver_whose_acceptance_was_lost_asks_again_until_released() {
    let (mut a, mut b) = (Outgoing::new(A), Incoming::new(B));
    let id = a.start(0, vehicle(100, 0, 0), B).unwrap();
    b.handle_msg(1, A, only(transmits(|| a.poll_transmit()), B));
    let _lost = transmits(|| b.poll_transmit());
    b.handle_timeout(1 + RETRANSMIT_US);
    let again = only(transmits(|| b.poll_transmit()), A);
    a.handle_msg(2 + RETRANSMIT_US, B, again);
    assert!(matches!(a.poll_event(), Some(OutgoingEvent::Released { id: r, .. }) if r == id));
}

#[test]
fn a_cancel_or_release_naming_another_acceptance_changes_nothing() {
    let mut b = Incoming::new(B);
    let id = CrossingId { from: A, seq: 0 };
    b.handle_msg(0, A, Msg::Offer { id, to: B, unit: vehicle(1, 0, 0) });
    let Msg::Accept { nonce, .. } = only(transmits(|| b.poll_transmit()), A) else {
        panic!("expected Accept")
    };
    b.handle_msg(1, A, Msg::Cancel { id, nonce: nonce + 1 });
    assert_eq!(b.provisional(), 1);
    // Messages about A's crossings coming from another region are not A's word.
    b.handle_msg(1, RegionId::new(5, 5), Msg::Release { id, nonce });
    assert_eq!(b.provisional(), 1);
    let _ = b.poll_event();
    assert!(b.poll_event().is_none());
}

#[test]
fn start_rejects_an_inconsistent_unit_and_a_crossing_to_itself() {
    let mut a = Outgoing::new(A);
    assert_eq!(a.start(0, vehicle(1, 0, 0), A), Err(StartError::SameRegion(A)));
    let mut u = vehicle(1, 2, 0);
    u.root = EntityId(77);
    assert!(matches!(a.start(0, u, B), Err(StartError::Unit(UnitError::Inconsistent(_)))));
    let mut u = vehicle(1, 2, 0);
    u.entities[1].parent = None;
    assert!(matches!(a.start(0, u, B), Err(StartError::Unit(UnitError::Inconsistent(_)))));
    assert_eq!(a.in_flight(), 0);
}

#[test]
fn decoding_garbage_truncated_or_inconsistent_bytes_returns_errors() {
    let id = CrossingId { from: A, seq: 3 };
    let good = Msg::Offer { id, to: B, unit: vehicle(1, 2, 1) };
    let bytes = good.encode();
    assert_eq!(Msg::decode(&bytes), Ok(good));
    for cut in 0..bytes.len() {
        assert!(Msg::decode(&bytes[..cut]).is_err(), "a message cut at {cut} bytes decodes");
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..2000 {
        let junk: Vec<u8> = (0..len % 300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = Msg::decode(&junk);
    }
    let mut bad = vehicle(1, 1, 0);
    bad.entities.push(bad.entities[1].clone());
    let bytes = Msg::Offer { id, to: B, unit: bad }.encode();
    assert!(matches!(Msg::decode(&bytes), Err(MsgError::BadUnit(UnitError::Inconsistent(_)))));
    let huge = vec![0u8; crossing::limits::MAX_MESSAGE_BYTES + 1];
    assert!(matches!(Msg::decode(&huge), Err(MsgError::TooLarge(_))));
}

#[test]
fn a_scripted_vehicle_crosses_with_its_scripts_and_riders_in_one_message() {
    let (mut a, mut b) = (Outgoing::new(A), Incoming::new(B));
    let mut unit = vehicle(100, 2, 2);
    unit.scripts = vec![script(1, EntityId(100)), script(2, EntityId(101))];
    let id = a.start(0, unit.clone(), B).unwrap();
    let offer = only(transmits(|| a.poll_transmit()), B);
    let offer = Msg::decode(&offer.encode()).expect("an offer survives the wire");
    b.handle_msg(1, A, offer);
    a.handle_msg(2, B, only(transmits(|| b.poll_transmit()), A));
    b.handle_msg(3, A, only(transmits(|| a.poll_transmit()), B));
    let _ = b.poll_event();
    assert_eq!(b.poll_event(), Some(IncomingEvent::Adopt { id, unit }));
}

#[test]
fn a_script_living_outside_the_unit_is_rejected() {
    let mut unit = vehicle(100, 1, 0);
    unit.scripts = vec![script(1, EntityId(5))];
    assert!(matches!(Outgoing::new(A).start(0, unit, B), Err(StartError::Unit(UnitError::Inconsistent(_)))));
}

#[test]
fn a_late_duplicate_offer_to_a_receiver_that_forgot_the_crossing_is_cancelled_not_adopted() {
    let (mut a, mut b) = (Outgoing::new(A), Incoming::remembering(B, 0));
    let id = a.start(0, vehicle(100, 0, 0), B).unwrap();
    let offer = only(transmits(|| a.poll_transmit()), B);
    b.handle_msg(1, A, offer.clone());
    a.handle_msg(2, B, only(transmits(|| b.poll_transmit()), A));
    let release = only(transmits(|| a.poll_transmit()), B);
    b.handle_msg(3, A, release.clone());
    let done = only(transmits(|| b.poll_transmit()), A);
    assert!(matches!(b.poll_event(), Some(IncomingEvent::Accepted { .. })));
    assert!(matches!(b.poll_event(), Some(IncomingEvent::Adopt { .. })));

    // The receiver remembers nothing: the duplicate is accepted again, under a new nonce.
    b.handle_msg(4, A, offer);
    let second = only(transmits(|| b.poll_transmit()), A);
    assert!(matches!(second, Msg::Accept { nonce: 1, .. }));
    // A duplicate of the old release names the old acceptance: it confirms, never adopts.
    b.handle_msg(5, A, release);
    assert_eq!(b.poll_event(), Some(IncomingEvent::Accepted { id, root: EntityId(100) }));
    assert_eq!(b.poll_event(), Some(IncomingEvent::Dropped { id, root: EntityId(100) }));
    assert!(b.poll_event().is_none());
    assert!(matches!(only(transmits(|| b.poll_transmit()), A), Msg::Done { nonce: 0, .. }));

    // And the sender, released to nonce 0 or already finished, cancels nonce 1 either way.
    a.handle_msg(6, B, second.clone());
    assert_eq!(only(transmits(|| a.poll_transmit()), B), Msg::Cancel { id, nonce: 1 });
    a.handle_msg(7, B, done);
    assert_eq!(a.poll_event(), Some(OutgoingEvent::Released { id, root: EntityId(100), to: B }));
    assert_eq!(a.poll_event(), Some(OutgoingEvent::Completed { id }));
    a.handle_msg(8, B, second);
    assert_eq!(only(transmits(|| a.poll_transmit()), B), Msg::Cancel { id, nonce: 1 });
}
