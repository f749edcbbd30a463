//! What crosses a border (the unit) and the messages between the two regions, with their
//! encoding. Decoding checks every limit and never panics on bad bytes.

use serde::{Deserialize, Serialize};
use world::{Entity, EntityId, RegionId, ScriptRecord};

use crate::limits::{
    MAX_MESSAGE_BYTES, MAX_SEATED_AVATARS, MAX_UNIT_BYTES, MAX_UNIT_ENTITIES, MAX_UNIT_SCRIPTS,
};

/// Names one crossing in the whole world: the sending region and its own sequence number.
///
/// The sender's counter is part of its durable state, so an id is never reused, also across
/// a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CrossingId {
    pub from: RegionId,
    pub seq: u64,
}

impl std::fmt::Display for CrossingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}#{}", self.from, self.seq)
    }
}

/// Everything that crosses as one piece: a linkset (root and children), the avatars seated
/// on it, and the script records of its objects.
///
/// Entities keep their ids and their region-local poses as the sender had them; the receiver
/// shifts positions by the region offset when it inserts them. Script records travel whole
/// (memory and control state), so a script resumes where it stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    pub root: EntityId,
    pub entities: Vec<Entity>,
    pub scripts: Vec<ScriptRecord>,
    /// The modules the scripts run, so a receiver that lacks one can store it.
    pub modules: Vec<world::scripts::ByteVec>,
}

impl Unit {
    /// Checks the shape of a unit: limits, the root present once, children linked to the
    /// root, riders seated on a member, scripts living in a member object, the encoded size.
    pub fn validate(&self) -> Result<(), UnitError> {
        if self.entities.len() > MAX_UNIT_ENTITIES {
            return Err(UnitError::TooManyEntities(self.entities.len()));
        }
        if self.scripts.len() > MAX_UNIT_SCRIPTS || self.modules.len() > MAX_UNIT_SCRIPTS {
            return Err(UnitError::TooManyScripts(self.scripts.len().max(self.modules.len())));
        }
        let mut ids: Vec<EntityId> = self.entities.iter().map(|e| e.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(UnitError::Inconsistent("an entity appears twice"));
        }
        let member = |id: EntityId| ids.binary_search(&id).is_ok();
        let root = self
            .entities
            .iter()
            .find(|e| e.id == self.root)
            .ok_or(UnitError::Inconsistent("the root is not among the entities"))?;
        if root.parent.is_some() {
            return Err(UnitError::Inconsistent("the root is linked to a parent"));
        }
        let mut riders = 0;
        for e in &self.entities {
            if e.id == self.root {
                continue;
            }
            match e.avatar() {
                Some(a) => {
                    riders += 1;
                    if !a.seat.is_some_and(member) {
                        return Err(UnitError::Inconsistent("an avatar in the unit is not seated on it"));
                    }
                }
                None if e.parent != Some(self.root) => {
                    return Err(UnitError::Inconsistent("an object in the unit is not linked to its root"));
                }
                None => {}
            }
        }
        if riders > MAX_SEATED_AVATARS {
            return Err(UnitError::TooManyEntities(self.entities.len()));
        }
        if self.scripts.iter().any(|s| !member(s.object)) {
            return Err(UnitError::Inconsistent("a script lives in an object outside the unit"));
        }
        let size = unit_bytes(self);
        if size > MAX_UNIT_BYTES {
            return Err(UnitError::TooLarge(size));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum UnitError {
    #[error("unit of {0} entities exceeds MAX_UNIT_ENTITIES (or MAX_SEATED_AVATARS): split the linkset or unseat riders")]
    TooManyEntities(usize),
    #[error("unit of {0} scripts exceeds MAX_UNIT_SCRIPTS")]
    TooManyScripts(usize),
    #[error("unit of {0} encoded bytes exceeds MAX_UNIT_BYTES")]
    TooLarge(usize),
    #[error("inconsistent unit: {0}")]
    Inconsistent(&'static str),
}

/// Why a receiver turned an offer down. The sender takes the unit back in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseReason {
    /// `MAX_INCOMING_IN_FLIGHT` provisional units already held: try again later.
    Full,
    /// The offer names another region as its destination.
    WrongRegion,
    /// The unit breaks a limit or is inconsistent.
    BadUnit,
}

/// The protocol. `nonce` names one provisional acceptance of a crossing by the receiver, so
/// that a release or cancel can only ever act on the acceptance it was decided for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    // sender → receiver
    /// Take this unit (sent again until answered or given up).
    Offer {
        id: CrossingId,
        to: RegionId,
        unit: Unit,
    },
    /// The sender has deleted the unit: acceptance `nonce` is now the owner, start ticking it.
    Release {
        id: CrossingId,
        nonce: u64,
    },
    /// The sender did not release to acceptance `nonce` (it took the unit back, or released to
    /// another acceptance, or no longer knows the crossing): drop it.
    Cancel {
        id: CrossingId,
        nonce: u64,
    },
    // receiver → sender
    /// Accepted provisionally as `nonce`; also the receiver's repeated question "released?".
    Accept {
        id: CrossingId,
        nonce: u64,
    },
    Refuse {
        id: CrossingId,
        reason: RefuseReason,
    },
    /// Release `nonce` applied: the sender may forget the crossing.
    Done {
        id: CrossingId,
        nonce: u64,
    },
}

impl Msg {
    pub fn id(&self) -> CrossingId {
        match self {
            Msg::Offer { id, .. }
            | Msg::Release { id, .. }
            | Msg::Cancel { id, .. }
            | Msg::Accept { id, .. }
            | Msg::Refuse { id, .. }
            | Msg::Done { id, .. } => *id,
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
        if let Msg::Offer { unit, .. } = &msg {
            unit.validate()?;
        }
        Ok(msg)
    }
}

/// The encoded size of a unit, checked against `MAX_UNIT_BYTES` before it is offered.
pub(crate) fn unit_bytes(unit: &Unit) -> usize {
    postcard::experimental::serialized_size(unit).unwrap_or(usize::MAX)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsgError {
    #[error("crossing message of {0} bytes exceeds MAX_MESSAGE_BYTES")]
    TooLarge(usize),
    #[error("malformed crossing message: {0}")]
    Malformed(String),
    #[error("crossing message carries a bad unit: {0}")]
    BadUnit(#[from] UnitError),
}
