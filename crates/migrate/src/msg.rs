//! The messages between a migration's source and target, and their encoding.
//!
//! Every message names its migration; a side ignores messages of other migrations. Round
//! payloads (a world snapshot or delta, already compressed and checksummed by `world`) travel
//! in chunks that carry their own checksum, so a chunk damaged in transit is dropped and sent
//! again rather than applied.

use serde::{Deserialize, Serialize};
use world::RegionId;

use crate::limits::{MAX_CHUNKS_PER_ROUND, MAX_CHUNK_BYTES, MAX_MESSAGE_BYTES, MAX_REASON_BYTES};

/// Identifies one migration attempt (chosen by whoever starts it; unique per source host).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MigrationId(pub u64);

impl std::fmt::Display for MigrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "m{:x}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A full `world` snapshot: the first round, or when a delta is no longer possible.
    Snapshot,
    /// A `world` delta from the generation the target acknowledged last.
    Delta,
}

/// Present on the chunks of the final round: the source is frozen at this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub tick: u64,
    pub state_hash: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    // source → target
    Prepare {
        id: MigrationId,
        region: RegionId,
        epoch: u64,
    },
    Chunk {
        id: MigrationId,
        round: u32,
        payload: Payload,
        index: u32,
        count: u32,
        freeze: Option<Freeze>,
        checksum: u64,
        data: Vec<u8>,
    },
    /// The source's log is in the store up to the frozen tick: the target may take the
    /// region (by compare-and-swap) once its replica matches the final round.
    Release {
        id: MigrationId,
    },
    Abort {
        id: MigrationId,
        reason: String,
    },
    // target → source
    Prepared {
        id: MigrationId,
    },
    RoundAck {
        id: MigrationId,
        round: u32,
        generation: u64,
    },
    FreezeAck {
        id: MigrationId,
        round: u32,
        state_hash: u64,
        ok: bool,
    },
    /// The target's compare-and-swap named it owner at `epoch`: the commit has happened.
    Committed {
        id: MigrationId,
        epoch: u64,
    },
    /// The target gives up; sent only by a target that has not asked for (and so never will
    /// ask for) the compare-and-swap.
    Refuse {
        id: MigrationId,
        reason: String,
    },
}

impl Msg {
    pub fn id(&self) -> MigrationId {
        match self {
            Msg::Prepare { id, .. }
            | Msg::Chunk { id, .. }
            | Msg::Release { id }
            | Msg::Abort { id, .. }
            | Msg::Prepared { id }
            | Msg::RoundAck { id, .. }
            | Msg::FreezeAck { id, .. }
            | Msg::Committed { id, .. }
            | Msg::Refuse { id, .. } => *id,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("serializing to memory cannot fail")
    }

    /// Decodes and checks a message from the wire. Never panics on bad bytes.
    pub fn decode(bytes: &[u8]) -> Result<Msg, MsgError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(MsgError::TooLarge(bytes.len()));
        }
        let msg: Msg = postcard::from_bytes(bytes).map_err(|e| MsgError::Malformed(e.to_string()))?;
        msg.validate()?;
        Ok(msg)
    }

    fn validate(&self) -> Result<(), MsgError> {
        match self {
            Msg::Chunk { index, count, data, checksum, .. } => {
                if *count == 0 || *count > MAX_CHUNKS_PER_ROUND || index >= count {
                    return Err(MsgError::Invalid("chunk index or count out of range"));
                }
                if data.len() > MAX_CHUNK_BYTES {
                    return Err(MsgError::Invalid("chunk larger than MAX_CHUNK_BYTES"));
                }
                if xxhash_rust::xxh3::xxh3_64(data) != *checksum {
                    return Err(MsgError::Invalid("chunk checksum mismatch"));
                }
            }
            Msg::Abort { reason, .. } | Msg::Refuse { reason, .. } if reason.len() > MAX_REASON_BYTES => {
                return Err(MsgError::Invalid("reason longer than MAX_REASON_BYTES"));
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsgError {
    #[error("message of {0} bytes exceeds MAX_MESSAGE_BYTES")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

/// Splits a round's payload into chunk messages.
pub(crate) fn chunks(
    id: MigrationId,
    round: u32,
    payload: Payload,
    freeze: Option<Freeze>,
    bytes: &[u8],
) -> Vec<Msg> {
    let pieces: Vec<&[u8]> =
        if bytes.is_empty() { vec![&[][..]] } else { bytes.chunks(MAX_CHUNK_BYTES).collect() };
    let count = pieces.len() as u32;
    pieces
        .into_iter()
        .enumerate()
        .map(|(index, data)| Msg::Chunk {
            id,
            round,
            payload,
            index: index as u32,
            count,
            freeze,
            checksum: xxhash_rust::xxh3::xxh3_64(data),
            data: data.to_vec(),
        })
        .collect()
}

/// Truncates a reason to what a message may carry.
pub(crate) fn reason(s: impl Into<String>) -> String {
    let mut s = s.into();
    if s.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
