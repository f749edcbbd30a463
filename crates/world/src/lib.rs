//! The region core of terrane: one 256 m × 256 m region of the world as a pure state machine.
//!
//! A [`Region`] takes time and inputs in [`Region::tick`] and gives back what changed. Its
//! whole state can be snapshotted, diffed since a generation, applied to a replica and hashed
//! at any tick boundary. It never does I/O, reads a clock or spawns a thread: hosts, tests and
//! benchmarks drive it.

pub mod border;
pub mod codec;
mod dirty;
pub mod durable;
pub mod entity;
mod hash;
pub mod input;
pub mod limits;
pub mod region;
pub mod scripts;
pub mod terrain;

pub use border::{Neighbours, UnitParts};
pub use codec::{ApplyError, CodecError, Compression, Delta, DeltaApplyError, DeltaError, FORMAT_VERSION};
pub use entity::{AvatarState, Controls, Entity, EntityId, Kind, ObjectState, Shape};
pub use glam::{Quat, Vec3};
pub use input::{
    Created, EntityChange, Input, InputError, ObjectEdit, ObjectSpec, Rejected, ScriptRefused, TickOutput,
};
pub use region::Region;
pub use scripts::{
    MemoryChunk, ModuleHash, NoScripts, ObjectEffects, ScriptEffect, ScriptId, ScriptOutcome, ScriptPass,
    ScriptRecord, ScriptStart, ScriptStopped, ScriptUpdate, Template, Touch,
};
pub use terrain::Terrain;

use serde::{Deserialize, Serialize};

/// A region's place on the world grid. Region (x, y) covers world metres
/// `[256·x, 256·x + 256) × [256·y, 256·y + 256)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RegionId {
    pub x: u16,
    pub y: u16,
}

impl RegionId {
    pub const fn new(x: u16, y: u16) -> RegionId {
        RegionId { x, y }
    }
}

impl std::fmt::Display for RegionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.x, self.y)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a region is written as X,Y with whole numbers from 0 to 65535, e.g. 1,2: got {0:?}")]
pub struct ParseRegionIdError(String);

impl std::str::FromStr for RegionId {
    type Err = ParseRegionIdError;
    fn from_str(s: &str) -> Result<RegionId, ParseRegionIdError> {
        let err = || ParseRegionIdError(s.to_string());
        let (x, y) = s.split_once([',', ':', '/']).ok_or_else(err)?;
        Ok(RegionId { x: x.trim().parse().map_err(|_| err())?, y: y.trim().parse().map_err(|_| err())? })
    }
}
