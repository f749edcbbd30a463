//! Border crossings: an avatar or object, with its linkset children, seated avatars and
//! scripts, handed from a region to its neighbour so that it is never lost and never in two
//! regions. Offer → provisional accept → release, decided by the sender alone.
//!
//! [`Outgoing`] (the sending border of a region) and [`Incoming`] (the receiving border) are
//! state machines without I/O: messages and timeouts go in through `handle_*`; what to send,
//! when to wake and what happened come out through `poll_*`. The safety argument is in
//! [`outgoing`].

pub mod incoming;
pub mod limits;
pub mod msg;
pub mod outgoing;

pub use incoming::{Incoming, IncomingEvent};
pub use msg::{CrossingId, Msg, MsgError, RefuseReason, Unit, UnitError};
pub use outgoing::{Outgoing, OutgoingEvent, ReturnReason, StartError};

use world::RegionId;

/// A message to send to the region `to`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transmit {
    pub to: RegionId,
    pub msg: Msg,
}
