//! Events delivered to a script, and the effects a script asks the region to carry out.
//!
//! Both are plain data: events are part of a script's migrated state (its queue), effects are
//! what running an event gives back to the caller, which applies them in a deterministic order.

use serde::{Deserialize, Serialize};
use world::{EntityId, Quat, RegionId, Vec3};

use crate::abi::Handler;

/// Something that happened to a script's object, waiting in its queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The script was created (not sent again after a migration or restore).
    Start,
    /// The script's timer came due.
    Timer,
    /// An avatar touched the object.
    Touch { toucher: EntityId },
    /// Chat heard on a channel the script listens on.
    Listen { channel: i32, sender: EntityId, text: String },
    /// A direct message from another object.
    Message { sender: EntityId, bytes: Vec<u8> },
    /// The object started (`phase` 0) or stopped (`phase` 1) touching another entity.
    Collision { other: EntityId, phase: i32 },
    /// Something about the object changed: `abi::CHANGED_*` bits.
    Changed { what: i32 },
    /// The object crossed into another region.
    RegionCross { from: RegionId, to: RegionId },
}

impl Event {
    /// The handler that receives this event.
    pub fn handler(&self) -> Handler {
        match self {
            Event::Start => Handler::Start,
            Event::Timer => Handler::Timer,
            Event::Touch { .. } => Handler::Touch,
            Event::Listen { .. } => Handler::Listen,
            Event::Message { .. } => Handler::Message,
            Event::Collision { .. } => Handler::Collision,
            Event::Changed { .. } => Handler::Changed,
            Event::RegionCross { .. } => Handler::RegionCross,
        }
    }

    /// Bytes the handler can read with `read_event`.
    pub fn payload_len(&self) -> usize {
        match self {
            Event::Listen { text, .. } => text.len(),
            Event::Message { bytes, .. } => bytes.len(),
            _ => 0,
        }
    }
}

/// How far a chat line carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChatRange {
    /// `limits::SAY_RANGE` metres.
    Say,
    /// `limits::SHOUT_RANGE` metres.
    Shout,
    /// The whole region.
    Region,
}

impl ChatRange {
    /// Range in metres; `None` for the whole region.
    pub fn metres(self) -> Option<f32> {
        match self {
            ChatRange::Say => Some(crate::limits::SAY_RANGE),
            ChatRange::Shout => Some(crate::limits::SHOUT_RANGE),
            ChatRange::Region => None,
        }
    }
}

/// What a script asks the region to do. Listening and the timer are the script's own state and
/// change at once; everything that touches the region comes out as an effect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    Say {
        channel: i32,
        range: ChatRange,
        text: String,
    },
    SetPos(Vec3),
    SetRot(Quat),
    SetVel(Vec3),
    SetScale(Vec3),
    SetText(String),
    Message {
        to: EntityId,
        bytes: Vec<u8>,
    },
    CreateObject {
        template: String,
        pos: Vec3,
        param: i32,
    },
    DeleteSelf,
    /// Make the script's state durable with this tick's other durable changes.
    Save,
}
