//! Live migration of a running region from one host to another (pre-copy).
//!
//! The source and the target are state machines without I/O: messages, timeouts, tick
//! boundaries and the directory's answers go in through `handle_*`; what to send, when to wake
//! and what happened come out through `poll_*`. The host wires them to sockets and the
//! directory; tests wire them to a simulated network.

pub mod limits;
pub mod msg;
pub mod source;
pub mod target;

pub use msg::{MigrationId, Msg, MsgError};
pub use source::{CopyJob, FenceResult, NoConvergence, Phase, Policy, Report, Source, SourceEvent};
pub use target::{Target, TargetEvent, TargetPhase};
