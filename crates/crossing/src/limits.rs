//! Limits and timings of the border-crossing protocol, named in one place.
//!
//! Times are microseconds of the caller's clock; the machines never read a clock themselves.

/// Most entities in one unit: a linkset root, its children, and avatars seated on it.
pub const MAX_UNIT_ENTITIES: usize = 1 + world::limits::MAX_LINKSET_CHILDREN + MAX_SEATED_AVATARS;
/// Most avatars riding one unit (seats of a vehicle).
pub const MAX_SEATED_AVATARS: usize = 64;
/// Most script records carried by one unit.
pub const MAX_UNIT_SCRIPTS: usize = 256;
/// Largest encoded unit. A script's memory is 64 KiB, so this allows a busy scripted vehicle
/// while keeping one crossing from monopolising a link.
pub const MAX_UNIT_BYTES: usize = 16 * 1024 * 1024;
/// Largest encoded protocol message (a unit plus its header).
pub const MAX_MESSAGE_BYTES: usize = MAX_UNIT_BYTES + 4096;

/// An offer, a release or a pending acceptance not answered within this is sent again.
pub const RETRANSMIT_US: u64 = 100_000;
/// The sender takes the unit back if no acceptance arrived within this after the offer.
/// Safe at any moment because an acceptance is provisional until the sender's release (see
/// `outgoing`); it bounds how long a unit hangs frozen at the border.
pub const GIVE_UP_US: u64 = 2_000_000;

/// Most crossings a region has out (offered or released, not yet confirmed) at once.
pub const MAX_OUTGOING_IN_FLIGHT: usize = 256;
/// Most provisionally accepted units a region holds at once; beyond this it refuses offers.
pub const MAX_INCOMING_IN_FLIGHT: usize = 256;
/// Finished crossings a receiver remembers so that late duplicate offers are ignored rather
/// than accepted again (accepting again would be safe, only wasteful: see `incoming`).
pub const MAX_REMEMBERED_FINISHED: usize = 4096;
