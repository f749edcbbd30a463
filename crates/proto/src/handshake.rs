//! The hello / welcome exchange: the gateway checks the first frame of a session (a hello of
//! the same protocol version, in the encoding its frame type selects) and the client checks
//! the answer (a welcome, or the error that refused it).

use crate::codec::{decode_client, Encoding};
use crate::error::ProtoError;
use crate::msg::{ClientMsg, Hello, ServerMsg, Welcome};
use crate::PROTOCOL_VERSION;

/// Checks a peer's protocol version against this build's.
pub fn check_version(client: u32) -> Result<(), ProtoError> {
    if client != PROTOCOL_VERSION {
        return Err(ProtoError::VersionMismatch { client, server: PROTOCOL_VERSION });
    }
    Ok(())
}

/// Gateway side: decodes the first frame of a session, which must be a hello of this protocol
/// version. `encoding` comes from the frame type (text = JSON, binary = binary) and stays the
/// session's encoding, also for the error answer if this fails.
///
/// A hello from another version is reported as `VersionMismatch` even when the rest of it does
/// not parse as this version's hello: the version is read from its frozen position.
pub fn accept_hello(frame: &[u8], encoding: Encoding) -> Result<Hello, ProtoError> {
    let msg = match decode_client(frame, encoding) {
        Ok(msg) => msg,
        Err(err) => {
            return Err(match peek_hello_version(frame, encoding) {
                Some(v) if v != PROTOCOL_VERSION => {
                    ProtoError::VersionMismatch { client: v, server: PROTOCOL_VERSION }
                }
                _ => err,
            });
        }
    };
    let ClientMsg::Hello(hello) = msg else {
        return Err(ProtoError::ExpectedHello { got: msg.kind() });
    };
    check_version(hello.version)?;
    if let Some(declared) = hello.encoding {
        if declared != encoding {
            return Err(ProtoError::EncodingMismatch { frame: encoding, declared });
        }
    }
    Ok(hello)
}

/// Reads the protocol version out of something that looks like a hello of any version,
/// without decoding the rest. `None` if it does not look like a hello at all.
pub fn peek_hello_version(frame: &[u8], encoding: Encoding) -> Option<u32> {
    if frame.len() > crate::limits::MAX_FRAME_BYTES {
        return None;
    }
    match encoding {
        Encoding::Json => {
            let value: serde_json::Value = serde_json::from_slice(frame).ok()?;
            let version = value.get("hello")?.get("version")?.as_u64()?;
            u32::try_from(version).ok()
        }
        // Variant 0 (hello), then the version varint: frozen in every version.
        Encoding::Binary => {
            let (&variant, rest) = frame.split_first()?;
            if variant != 0 {
                return None;
            }
            postcard::take_from_bytes::<u32>(rest).ok().map(|(v, _)| v)
        }
    }
}

/// Client side: checks the gateway's answer to the hello. An error answer becomes
/// `ProtoError::Refused` with the gateway's code and message.
pub fn check_welcome(msg: ServerMsg) -> Result<Welcome, ProtoError> {
    match msg {
        ServerMsg::Welcome(w) => {
            if w.version != PROTOCOL_VERSION {
                return Err(ProtoError::VersionMismatch { client: PROTOCOL_VERSION, server: w.version });
            }
            Ok(w)
        }
        ServerMsg::Error { code, message } => Err(ProtoError::Refused { code, message }),
        other => Err(ProtoError::ExpectedWelcome { got: other.kind() }),
    }
}

impl Hello {
    /// A hello of this build's version, leaving the encoding to the frame type.
    pub fn new(token: impl Into<String>) -> Hello {
        Hello { version: PROTOCOL_VERSION, token: token.into(), encoding: None }
    }
}
