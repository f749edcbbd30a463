//! The messages: [`ClientMsg`] (client → gateway) and [`ServerMsg`] (gateway → client), and
//! the checks a decoded message must pass before anyone acts on it.
//!
//! Both enums are externally tagged, so every message is `{"<type>": {fields}}` in JSON. In the
//! binary encoding a message is its variant index then its fields in order: reordering
//! variants or fields is a protocol change (bump `PROTOCOL_VERSION`).

use serde::{Deserialize, Serialize};
use world::{Controls, EntityId, ObjectEdit, RegionId};

use crate::change::{validate_edit, NewObject, Refusal};

use crate::codec::Encoding;
use crate::entity::EntityUpdate;
use crate::error::{ErrorCode, ProtoError};
use crate::limits::*;
use crate::wire;

/// The first message of a session. It must stay variant 0 with `version` first, so that a
/// gateway can read the version of any client, old or new (see `peek_hello_version`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The client's `PROTOCOL_VERSION`.
    pub version: u32,
    /// The session token, opaque to the protocol: the gateway verifies it.
    pub token: String,
    /// Optional: the encoding the client means to speak. The hello's frame type decides; if
    /// this is given it must agree (a guard against a client library sending the wrong kind).
    #[serde(default)]
    pub encoding: Option<Encoding>,
}

/// Client → gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientMsg {
    Hello(Hello),
    /// What the person holds down now; it stays in force until the next controls message.
    Controls(Controls),
    /// Say `text` on `channel` (0 = public chat; other channels reach listening scripts).
    Chat {
        channel: i32,
        text: String,
    },
    /// Touch (click) an object.
    Touch {
        #[serde(with = "wire::id")]
        object: EntityId,
    },
    /// Sit on an object.
    Sit {
        #[serde(with = "wire::id")]
        object: EntityId,
    },
    /// Stand up from whatever the avatar sits on.
    Stand {},
    /// Asks for a pong with the same nonce: for round-trip times and keep-alive.
    Ping {
        nonce: u64,
    },
    /// Creates an object in the avatar's region; answered by `ack` (with the new id) once
    /// the change is durable, or by `refused`. `request_id` is the client's, echoed back.
    Create {
        request_id: u64,
        object: NewObject,
    },
    /// Changes fields of an object within reach (absent fields stay as they are).
    Edit {
        request_id: u64,
        #[serde(with = "wire::id")]
        object: EntityId,
        edit: ObjectEdit,
    },
    /// Deletes an object within reach (a linkset root takes its children with it).
    Delete {
        request_id: u64,
        #[serde(with = "wire::id")]
        object: EntityId,
    },
}

impl ClientMsg {
    /// The message's type as written in JSON, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Hello(_) => "hello",
            ClientMsg::Controls(_) => "controls",
            ClientMsg::Chat { .. } => "chat",
            ClientMsg::Touch { .. } => "touch",
            ClientMsg::Sit { .. } => "sit",
            ClientMsg::Stand {} => "stand",
            ClientMsg::Ping { .. } => "ping",
            ClientMsg::Create { .. } => "create",
            ClientMsg::Edit { .. } => "edit",
            ClientMsg::Delete { .. } => "delete",
        }
    }

    /// Checks every field against the limits; a decoded message that fails is refused.
    pub fn validate(&self) -> Result<(), ProtoError> {
        match self {
            ClientMsg::Hello(h) => validate_token_text(&h.token),
            ClientMsg::Controls(c) => {
                for (axis, v) in
                    [("forward", c.forward), ("strafe", c.strafe), ("turn", c.turn), ("up", c.up)]
                {
                    if !(-1..=1).contains(&v) {
                        return Err(invalid(format!("controls.{axis} is {v}; axes are -1, 0 or 1")));
                    }
                }
                Ok(())
            }
            ClientMsg::Chat { channel, text } => {
                if !(0..=MAX_CLIENT_CHANNEL).contains(channel) {
                    return Err(invalid(format!(
                        "chat channel {channel} is reserved; clients speak on 0..={MAX_CLIENT_CHANNEL}"
                    )));
                }
                if text.is_empty() {
                    return Err(invalid("chat text is empty".into()));
                }
                validate_chat_text(text)
            }
            ClientMsg::Create { object, .. } => object.validate(),
            ClientMsg::Edit { edit, .. } => validate_edit(edit),
            ClientMsg::Touch { .. }
            | ClientMsg::Sit { .. }
            | ClientMsg::Stand {}
            | ClientMsg::Delete { .. }
            | ClientMsg::Ping { .. } => Ok(()),
        }
    }
}

/// The gateway's answer to a good hello. Must stay variant 0 of [`ServerMsg`] with `version`
/// first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The gateway's `PROTOCOL_VERSION` (equal to the client's, or there is no welcome).
    pub version: u32,
    /// The id of this session's avatar.
    #[serde(with = "wire::id")]
    pub agent: EntityId,
    /// The region the avatar is in now.
    pub region: RegionId,
    /// The region's tick rate in Hz: updates arrive at most this often per region.
    pub tick_hz: u32,
    /// Radius in metres around the avatar within which entities are streamed.
    pub draw_distance: f32,
}

/// A region's ground and water, sent after the welcome and for every region that comes into
/// draw distance (and again when its terrain is edited).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionInfo {
    pub region: RegionId,
    /// Height of the water surface, metres.
    pub water_level: f32,
    /// The 256 × 256 heightmap: little-endian f32 metres, row-major with x fastest
    /// (`heights[y * 256 + x]` is the ground at region-local (x, y)), zstd-compressed.
    /// JSON: standard base64 with padding. See [`RegionInfo::heights`].
    #[serde(with = "wire::blob")]
    pub terrain: Vec<u8>,
}

/// What changed in one region during one tick, within the client's draw distance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub region: RegionId,
    /// The region's tick number. Several updates may share one tick when its changes are split
    /// (at most `MAX_CHANGES_PER_UPDATE` each) and the ticks of different regions are unrelated.
    pub tick: u64,
    /// Per-client sequence number of this update: 1 for the first update of a session, then
    /// exactly one more for each following update, whatever its region.
    pub seq: u64,
    pub changes: Vec<EntityUpdate>,
    /// Entities deleted, or that left the draw distance: forget them.
    #[serde(with = "wire::ids")]
    pub removed: Vec<EntityId>,
}

/// Gateway → client.
///
/// The order of the first two variants is frozen: `Welcome` is 0 and `Error` is 1 in the
/// binary encoding, so that a client of any version can read the answer to its hello.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMsg {
    Welcome(Welcome),
    /// Something went wrong. If `code.closes_session()`, the gateway closes the WebSocket next.
    Error {
        code: ErrorCode,
        message: String,
    },
    RegionInfo(RegionInfo),
    Update(Update),
    /// Chat heard by the avatar.
    Chat {
        /// The avatar or object that spoke.
        #[serde(with = "wire::id")]
        from: EntityId,
        /// Its display name at the time.
        name: String,
        channel: i32,
        text: String,
    },
    /// The answer to a ping.
    Pong {
        nonce: u64,
    },
    /// A script in an object this session's agent owns stopped with an error (or cannot run
    /// where its region is). Sent once, when it stops, wherever the avatar is.
    ScriptError {
        /// The object the script lives in.
        #[serde(with = "wire::id")]
        object: EntityId,
        /// The script's id.
        #[serde(with = "wire::u64_id")]
        script: u64,
        /// The region the object is in.
        region: RegionId,
        /// What stopped it: `out_of_fuel`, `time_budget`, `stack_overflow`, `memory_growth`,
        /// `trap`, `bad_call`, `internal` or `cannot_run` (docs/scripting.md).
        kind: String,
        /// What happened, for people.
        message: String,
    },
    /// A `create`, `edit` or `delete` is done: applied by the region and, when `durable`,
    /// written to its store's log (it survives the death of its host). Without a store the
    /// region only applied it (`durable` is false).
    Ack {
        request_id: u64,
        /// The object created, edited or deleted.
        #[serde(with = "wire::id")]
        object: EntityId,
        /// The region tick that applied it.
        tick: u64,
        durable: bool,
    },
    /// A `create`, `edit` or `delete` was not acknowledged; `reason` says whether anything
    /// changed. The session goes on.
    Refused {
        request_id: u64,
        reason: Refusal,
        message: String,
    },
}

impl ServerMsg {
    /// The message's type as written in JSON, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMsg::Welcome(_) => "welcome",
            ServerMsg::Error { .. } => "error",
            ServerMsg::RegionInfo(_) => "region_info",
            ServerMsg::Update(_) => "update",
            ServerMsg::Chat { .. } => "chat",
            ServerMsg::Pong { .. } => "pong",
            ServerMsg::ScriptError { .. } => "script_error",
            ServerMsg::Ack { .. } => "ack",
            ServerMsg::Refused { .. } => "refused",
        }
    }

    /// Builds the error message for a failure, with the code the failure maps to.
    pub fn error(err: &ProtoError) -> ServerMsg {
        let mut message = err.to_string();
        truncate_utf8(&mut message, MAX_ERROR_MESSAGE_BYTES);
        ServerMsg::Error { code: err.code(), message }
    }

    /// Checks every field against the limits; a decoded message that fails is refused.
    pub fn validate(&self) -> Result<(), ProtoError> {
        match self {
            ServerMsg::Welcome(w) => {
                if !(1..=MAX_TICK_HZ).contains(&w.tick_hz) {
                    return Err(invalid(format!("welcome tick_hz {} outside 1..={MAX_TICK_HZ}", w.tick_hz)));
                }
                if !(w.draw_distance.is_finite() && (0.0..=MAX_DRAW_DISTANCE).contains(&w.draw_distance)) {
                    return Err(invalid(format!(
                        "welcome draw_distance {} outside 0..={MAX_DRAW_DISTANCE} m",
                        w.draw_distance
                    )));
                }
                Ok(())
            }
            ServerMsg::Error { message, .. } => {
                if message.len() > MAX_ERROR_MESSAGE_BYTES {
                    return Err(invalid(format!(
                        "error message longer than {MAX_ERROR_MESSAGE_BYTES} bytes"
                    )));
                }
                Ok(())
            }
            ServerMsg::RegionInfo(r) => {
                if !r.water_level.is_finite() {
                    return Err(invalid("region info water_level is not a finite number".into()));
                }
                if r.terrain.len() > MAX_TERRAIN_BLOB_BYTES {
                    return Err(invalid(format!(
                        "terrain blob of {} bytes is larger than {MAX_TERRAIN_BLOB_BYTES}",
                        r.terrain.len()
                    )));
                }
                Ok(())
            }
            ServerMsg::Update(u) => {
                if u.seq == 0 {
                    return Err(invalid("update seq 0; sequence numbers start at 1".into()));
                }
                if u.changes.len() > MAX_CHANGES_PER_UPDATE {
                    return Err(invalid(format!(
                        "update with {} changes; at most {MAX_CHANGES_PER_UPDATE}",
                        u.changes.len()
                    )));
                }
                if u.removed.len() > MAX_REMOVED_PER_UPDATE {
                    return Err(invalid(format!(
                        "update with {} removals; at most {MAX_REMOVED_PER_UPDATE}",
                        u.removed.len()
                    )));
                }
                u.changes.iter().try_for_each(EntityUpdate::validate)
            }
            ServerMsg::Chat { name, text, .. } => {
                if name.len() > MAX_NAME_BYTES {
                    return Err(invalid(format!("chat speaker name longer than {MAX_NAME_BYTES} bytes")));
                }
                validate_chat_text(text)
            }
            ServerMsg::Pong { .. } => Ok(()),
            ServerMsg::ScriptError { kind, message, .. } => {
                if kind.is_empty()
                    || kind.len() > MAX_SCRIPT_ERROR_KIND_BYTES
                    || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                {
                    return Err(invalid(format!(
                        "script error kind {kind:?} is not snake_case of 1..={MAX_SCRIPT_ERROR_KIND_BYTES} bytes"
                    )));
                }
                if message.len() > MAX_SCRIPT_ERROR_MESSAGE_BYTES {
                    return Err(invalid(format!(
                        "script error message longer than {MAX_SCRIPT_ERROR_MESSAGE_BYTES} bytes"
                    )));
                }
                Ok(())
            }
            ServerMsg::Refused { message, .. } => {
                if message.len() > MAX_ERROR_MESSAGE_BYTES {
                    return Err(invalid(format!(
                        "refusal message longer than {MAX_ERROR_MESSAGE_BYTES} bytes"
                    )));
                }
                Ok(())
            }
            ServerMsg::Ack { .. } => Ok(()),
        }
    }
}

pub(crate) fn invalid(detail: String) -> ProtoError {
    ProtoError::Invalid(detail)
}

/// Tokens are printable ASCII so that they survive URLs, headers and logs unescaped.
fn validate_token_text(token: &str) -> Result<(), ProtoError> {
    if token.is_empty() {
        return Err(invalid("hello token is empty".into()));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid(format!("hello token longer than {MAX_TOKEN_BYTES} bytes")));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("hello token has characters other than printable ASCII".into()));
    }
    Ok(())
}

/// Chat may hold any text but control characters (other than newline and tab), which would
/// let one person garble another's terminal or log.
fn validate_chat_text(text: &str) -> Result<(), ProtoError> {
    if text.len() > MAX_CHAT_BYTES {
        return Err(invalid(format!("chat text of {} bytes; at most {MAX_CHAT_BYTES}", text.len())));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid("chat text has control characters".into()));
    }
    Ok(())
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub(crate) fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
