//! What can go wrong with a frame or a handshake ([`ProtoError`], for the code that reads
//! frames) and how the gateway tells a client about it ([`ErrorCode`], on the wire).

use serde::{Deserialize, Serialize};

use crate::codec::Encoding;
use crate::token::TokenError;

/// The reason in a [`crate::ServerMsg::Error`]. JSON: the snake_case name, e.g.
/// `"version_mismatch"`.
///
/// `VersionMismatch` must stay the first variant: its binary form (index 0) is frozen so that
/// a client of any version can read why it was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The hello's protocol version is not the gateway's.
    VersionMismatch,
    /// The first message was not a hello, or a hello came twice.
    ExpectedHello,
    /// The hello named an encoding other than the one its frame type selects.
    EncodingMismatch,
    /// The session token is malformed, forged, or signed with another secret.
    BadToken,
    /// The session token is past its expiry time.
    TokenExpired,
    /// A frame could not be decoded (not JSON / postcard of a known message).
    Malformed,
    /// A frame was larger than the limit.
    TooLarge,
    /// A message decoded but a field is out of range (a limit, a non-finite number…).
    Invalid,
    /// The client sends faster than its rate limit; excess messages were dropped.
    RateLimited,
    /// The object named by a touch or sit is not within reach.
    UnknownObject,
    /// The region of the avatar cannot be reached right now; reconnect later.
    RegionUnavailable,
    /// The client read its stream too slowly and fell too far behind.
    SlowConsumer,
    /// The gateway is shutting down.
    ShuttingDown,
    /// Something failed inside the gateway.
    Internal,
}

impl ErrorCode {
    /// Whether the gateway closes the session after sending this error. Only complaints about
    /// one message that the session survives are not fatal.
    pub fn closes_session(self) -> bool {
        !matches!(self, ErrorCode::RateLimited | ErrorCode::UnknownObject)
    }

    /// The WebSocket close code (RFC 6455 §7.4) the gateway closes with after a fatal error.
    pub fn close_code(self) -> u16 {
        match self {
            ErrorCode::ExpectedHello
            | ErrorCode::EncodingMismatch
            | ErrorCode::Malformed
            | ErrorCode::Invalid => 1002,
            ErrorCode::TooLarge => 1009,
            ErrorCode::VersionMismatch
            | ErrorCode::BadToken
            | ErrorCode::TokenExpired
            | ErrorCode::RateLimited
            | ErrorCode::UnknownObject
            | ErrorCode::SlowConsumer => 1008,
            ErrorCode::ShuttingDown => 1001,
            ErrorCode::RegionUnavailable => 1013,
            ErrorCode::Internal => 1011,
        }
    }

    /// Every code, in wire order: for documentation and tests.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::VersionMismatch,
        ErrorCode::ExpectedHello,
        ErrorCode::EncodingMismatch,
        ErrorCode::BadToken,
        ErrorCode::TokenExpired,
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::Invalid,
        ErrorCode::RateLimited,
        ErrorCode::UnknownObject,
        ErrorCode::RegionUnavailable,
        ErrorCode::SlowConsumer,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ];
}

/// Why a frame or a handshake was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProtoError {
    #[error("frame of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed {encoding} frame: {detail}")]
    Malformed { encoding: Encoding, detail: String },
    #[error("binary frame has {count} bytes after the end of the message")]
    TrailingBytes { count: usize },
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error(
        "protocol version mismatch: the client speaks version {client}, the gateway version {server}; \
         update the client"
    )]
    VersionMismatch { client: u32, server: u32 },
    #[error("the first message of a session must be a hello, got {got}")]
    ExpectedHello { got: &'static str },
    #[error("the first message of a session must be a welcome, got {got}")]
    ExpectedWelcome { got: &'static str },
    #[error(
        "the hello says encoding {declared} but came in a {frame} frame; send JSON in text frames, \
         binary in binary frames"
    )]
    EncodingMismatch { frame: Encoding, declared: Encoding },
    #[error("the gateway refused the session ({code:?}): {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("bad terrain in region info: {0}")]
    Terrain(String),
    #[error("bad session token: {0}")]
    Token(#[from] TokenError),
}

impl ProtoError {
    /// The code the gateway sends back to a client whose frame failed this way.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::TooLarge { .. } => ErrorCode::TooLarge,
            ProtoError::Malformed { .. } | ProtoError::TrailingBytes { .. } => ErrorCode::Malformed,
            ProtoError::Invalid(_) | ProtoError::Terrain(_) => ErrorCode::Invalid,
            ProtoError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            ProtoError::ExpectedHello { .. } | ProtoError::ExpectedWelcome { .. } => ErrorCode::ExpectedHello,
            ProtoError::EncodingMismatch { .. } => ErrorCode::EncodingMismatch,
            ProtoError::Refused { code, .. } => *code,
            ProtoError::Token(TokenError::Expired { .. }) => ErrorCode::TokenExpired,
            ProtoError::Token(_) => ErrorCode::BadToken,
        }
    }
}
