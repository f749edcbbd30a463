//! Update sequence numbers: the gateway numbers each client's updates 1, 2, 3… with
//! [`SeqCounter`]; a client feeds them to [`SeqTracker`] to count gaps (lost updates) and
//! replays (duplicates or going backwards), which should both stay at zero.

/// The sequence number of a session's first update.
pub const FIRST_SEQ: u64 = 1;

/// The gateway's per-client numbering: strictly increasing, gap-free.
#[derive(Clone, Debug)]
pub struct SeqCounter {
    next: u64,
}

impl Default for SeqCounter {
    fn default() -> Self {
        SeqCounter::new()
    }
}

impl SeqCounter {
    pub fn new() -> SeqCounter {
        SeqCounter { next: FIRST_SEQ }
    }

    /// The number for the next update sent; each call uses one up.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        seq
    }

    /// How many numbers have been handed out.
    pub fn issued(&self) -> u64 {
        self.next - FIRST_SEQ
    }
}

/// What one observed sequence number means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqEvent {
    /// Exactly the next one.
    InOrder,
    /// Ahead of the next one: `missing` updates were never seen.
    Gap { missing: u64 },
    /// Not after the last one seen: a duplicate or a step back. It is not counted as received
    /// and does not move the tracker.
    Replay,
}

/// A client's view of the update sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqTracker {
    /// The highest sequence number seen; 0 before the first (real ones start at 1).
    last: u64,
    received: u64,
    gaps: u64,
    missing: u64,
    replays: u64,
}

impl SeqTracker {
    pub fn new() -> SeqTracker {
        SeqTracker::default()
    }

    /// Records one update's sequence number.
    pub fn observe(&mut self, seq: u64) -> SeqEvent {
        if seq <= self.last {
            self.replays += 1;
            return SeqEvent::Replay;
        }
        let missing = seq - self.last - 1;
        self.last = seq;
        self.received += 1;
        if missing == 0 {
            SeqEvent::InOrder
        } else {
            self.gaps += 1;
            self.missing += missing;
            SeqEvent::Gap { missing }
        }
    }

    /// The highest sequence number seen, if any.
    pub fn last(&self) -> Option<u64> {
        (self.last >= FIRST_SEQ).then_some(self.last)
    }

    /// Updates accepted (everything but replays).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// How many times the sequence jumped ahead.
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// How many sequence numbers were skipped in all gaps together.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// Duplicates and steps back.
    pub fn replays(&self) -> u64 {
        self.replays
    }
}
