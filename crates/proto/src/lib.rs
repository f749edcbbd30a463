//! The client ↔ gateway wire protocol of terrane: the messages, their two encodings (compact
//! binary with postcard, JSON for tools and third-party clients), the limits, the handshake
//! and session tokens. Sans-IO: bytes in, messages out; the gateway and bots own the sockets.
//!
//! docs/protocol.md describes the same protocol for people writing a client in any language.

pub mod change;
pub mod codec;
pub mod entity;
pub mod error;
pub mod handshake;
pub mod limits;
pub mod msg;
pub mod seq;
pub mod terrain;
pub mod token;
mod wire;

pub use change::{NewObject, Refusal};
pub use codec::{
    decode_client, decode_server, encode_client, encode_server, try_encode_server, Encoding, Frame,
};
pub use entity::{EntityKind, EntityUpdate, EntityView};
pub use error::{ErrorCode, ProtoError};
pub use handshake::{accept_hello, check_version, check_welcome, peek_hello_version};
pub use msg::{ClientMsg, Hello, RegionInfo, ServerMsg, Update, Welcome};
pub use seq::{SeqCounter, SeqEvent, SeqTracker};
pub use token::{Token, TokenError};

/// The protocol version spoken by this build. Client and gateway must agree exactly: the hello
/// carries the client's, the welcome echoes the gateway's, and a mismatch ends the session
/// with [`ErrorCode::VersionMismatch`]. Bump it on any change to a message's shape.
pub const PROTOCOL_VERSION: u32 = 2;
