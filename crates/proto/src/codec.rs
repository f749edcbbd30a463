//! Frames to messages and back, in either encoding. Decoders check the size first, then parse,
//! then validate every field, and never panic on any bytes: they are the gateway's front door.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ProtoError;
use crate::limits::{MAX_FRAME_BYTES, MAX_SERVER_FRAME_BYTES};
use crate::msg::{ClientMsg, ServerMsg};

/// The two encodings of the one protocol. The WebSocket frame type of the client's hello
/// selects it for the whole session, both ways: a text frame means JSON, a binary frame means
/// binary (postcard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// serde_json, in WebSocket text frames.
    Json,
    /// postcard, in WebSocket binary frames.
    Binary,
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoding::Json => "json",
            Encoding::Binary => "binary",
        })
    }
}

/// One WebSocket message's payload, ready to send: the variant is the frame type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

impl Frame {
    /// The encoding this frame type carries.
    pub fn encoding(&self) -> Encoding {
        match self {
            Frame::Text(_) => Encoding::Json,
            Frame::Binary(_) => Encoding::Binary,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Frame::Text(s) => s.as_bytes(),
            Frame::Binary(b) => b,
        }
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

/// Decodes and validates a frame from a client. `encoding` is the session's (from the
/// hello's frame type); a frame of the other type is for the caller to refuse.
pub fn decode_client(frame: &[u8], encoding: Encoding) -> Result<ClientMsg, ProtoError> {
    let msg: ClientMsg = decode(frame, encoding, MAX_FRAME_BYTES)?;
    msg.validate()?;
    Ok(msg)
}

/// Decodes and validates a frame from the gateway (for clients and bots).
pub fn decode_server(frame: &[u8], encoding: Encoding) -> Result<ServerMsg, ProtoError> {
    let msg: ServerMsg = decode(frame, encoding, MAX_SERVER_FRAME_BYTES)?;
    msg.validate()?;
    Ok(msg)
}

/// Encodes a message for a client. The caller keeps updates within `MAX_CHANGES_PER_UPDATE`;
/// [`try_encode_server`] checks everything for callers that build messages from outside data.
pub fn encode_server(msg: &ServerMsg, encoding: Encoding) -> Frame {
    let frame = encode(msg, encoding);
    debug_assert!(
        frame.len() <= MAX_SERVER_FRAME_BYTES,
        "server frame of {} bytes exceeds MAX_SERVER_FRAME_BYTES: split the update",
        frame.len()
    );
    frame
}

/// Like [`encode_server`], but validates the message and the frame size first, so that what
/// it returns is a frame every client accepts.
pub fn try_encode_server(msg: &ServerMsg, encoding: Encoding) -> Result<Frame, ProtoError> {
    msg.validate()?;
    let frame = encode(msg, encoding);
    if frame.len() > MAX_SERVER_FRAME_BYTES {
        return Err(ProtoError::TooLarge { len: frame.len(), max: MAX_SERVER_FRAME_BYTES });
    }
    Ok(frame)
}

/// Encodes a message for the gateway (for clients and bots).
pub fn encode_client(msg: &ClientMsg, encoding: Encoding) -> Frame {
    encode(msg, encoding)
}

fn encode<T: Serialize>(msg: &T, encoding: Encoding) -> Frame {
    // Neither serializer can fail on these types: no maps with non-string keys, every
    // sequence has a known length, and serde_json writes non-finite floats as null.
    match encoding {
        Encoding::Json => {
            Frame::Text(serde_json::to_string(msg).expect("protocol messages always serialize to JSON"))
        }
        Encoding::Binary => {
            Frame::Binary(postcard::to_stdvec(msg).expect("protocol messages always serialize to postcard"))
        }
    }
}

fn decode<T: DeserializeOwned>(frame: &[u8], encoding: Encoding, max: usize) -> Result<T, ProtoError> {
    if frame.len() > max {
        return Err(ProtoError::TooLarge { len: frame.len(), max });
    }
    let malformed = |detail: String| ProtoError::Malformed { encoding, detail };
    match encoding {
        // serde_json refuses trailing characters and invalid UTF-8 itself.
        Encoding::Json => serde_json::from_slice(frame).map_err(|e| malformed(e.to_string())),
        Encoding::Binary => {
            let (msg, rest) = postcard::take_from_bytes(frame).map_err(|e| malformed(e.to_string()))?;
            // Trailing bytes would mean two parties disagree on the layout: refuse, don't guess.
            if !rest.is_empty() {
                return Err(ProtoError::TrailingBytes { count: rest.len() });
            }
            Ok(msg)
        }
    }
}
