//! Entities as clients see them: [`EntityUpdate`] is the client-facing form of a region's
//! `world::EntityChange`, without the simulation's bookkeeping (generations, held controls).
//!
//! Positions are region-local metres (the update's `region` says which region; region (x, y)
//! starts at world metres (256·x, 256·y)). A linked child's pose is relative to its root.

use serde::{Deserialize, Serialize};
use world::{Entity, EntityChange, EntityId, Kind, Quat, Shape, Vec3};

use crate::error::ProtoError;
use crate::limits::{MAX_COORDINATE, MAX_NAME_BYTES, MAX_TEXT_BYTES};
use crate::msg::invalid;
use crate::wire;

/// What kind of entity, with the state a viewer needs to draw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Object {
        /// Falls under gravity and slides to rest (otherwise it glides at its velocity).
        physical: bool,
    },
    Avatar {
        flying: bool,
        /// Standing on the ground (not jumping, falling or flying).
        grounded: bool,
        /// The object it sits on.
        #[serde(with = "wire::opt_id")]
        seat: Option<EntityId>,
    },
}

/// Everything about one entity that a client draws.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityView {
    #[serde(with = "wire::id")]
    pub id: EntityId,
    pub kind: EntityKind,
    pub shape: Shape,
    /// Metres, region-local; relative to the root when `parent` is set.
    pub pos: Vec3,
    /// Unit quaternion `[x, y, z, w]`; relative to the root when `parent` is set.
    pub rot: Quat,
    /// Metres per second, region axes.
    pub vel: Vec3,
    /// Size in metres along the entity's own axes.
    pub scale: Vec3,
    /// The agent that owns it (0 for nobody). A decimal string in JSON, like ids.
    #[serde(with = "wire::u64_str")]
    pub owner: u64,
    pub name: String,
    /// Floating text shown above it.
    pub text: String,
    /// Root of the linkset it belongs to.
    #[serde(with = "wire::opt_id")]
    pub parent: Option<EntityId>,
}

/// One entity's change in an update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityUpdate {
    /// New to this client, or something besides its motion changed: replace all you know.
    Full(EntityView),
    /// Only its pose and velocity changed. Clients extrapolate with `vel` between updates.
    Motion {
        #[serde(with = "wire::id")]
        id: EntityId,
        pos: Vec3,
        rot: Quat,
        vel: Vec3,
    },
}

impl EntityUpdate {
    pub fn id(&self) -> EntityId {
        match self {
            EntityUpdate::Full(v) => v.id,
            EntityUpdate::Motion { id, .. } => *id,
        }
    }

    /// Finite numbers within `MAX_COORDINATE`, strings within their limits.
    pub fn validate(&self) -> Result<(), ProtoError> {
        match self {
            EntityUpdate::Full(v) => {
                validate_motion(v.id, v.pos, v.rot, v.vel)?;
                if !(v.scale.is_finite() && v.scale.abs().max_element() <= MAX_COORDINATE) {
                    return Err(invalid(format!("entity {} has a non-finite scale", v.id)));
                }
                if v.name.len() > MAX_NAME_BYTES {
                    return Err(invalid(format!("entity {} name longer than {MAX_NAME_BYTES} bytes", v.id)));
                }
                if v.text.len() > MAX_TEXT_BYTES {
                    return Err(invalid(format!("entity {} text longer than {MAX_TEXT_BYTES} bytes", v.id)));
                }
                Ok(())
            }
            EntityUpdate::Motion { id, pos, rot, vel } => validate_motion(*id, *pos, *rot, *vel),
        }
    }
}

fn validate_motion(id: EntityId, pos: Vec3, rot: Quat, vel: Vec3) -> Result<(), ProtoError> {
    let bounded = |v: Vec3| v.is_finite() && v.abs().max_element() <= MAX_COORDINATE;
    if !(bounded(pos) && bounded(vel)) {
        return Err(invalid(format!("entity {id} position or velocity is not a finite number within range")));
    }
    // Only finiteness: a quaternion a little off unit length is rounding, not an attack.
    if !rot.is_finite() {
        return Err(invalid(format!("entity {id} rotation is not a finite number")));
    }
    Ok(())
}

impl From<&Entity> for EntityView {
    fn from(e: &Entity) -> EntityView {
        let kind = match &e.kind {
            Kind::Object(o) => EntityKind::Object { physical: o.physical },
            Kind::Avatar(a) => EntityKind::Avatar { flying: a.flying, grounded: a.grounded, seat: a.seat },
        };
        EntityView {
            id: e.id,
            kind,
            shape: e.shape,
            pos: e.pos,
            rot: e.rot,
            vel: e.vel,
            scale: e.scale,
            owner: e.owner,
            name: e.name.clone(),
            text: e.text.clone(),
            parent: e.parent,
        }
    }
}

impl From<&EntityChange> for EntityUpdate {
    fn from(c: &EntityChange) -> EntityUpdate {
        match c {
            EntityChange::Full(e) => EntityUpdate::Full(EntityView::from(e)),
            EntityChange::Motion { id, pos, rot, vel } => {
                EntityUpdate::Motion { id: *id, pos: *pos, rot: *rot, vel: *vel }
            }
        }
    }
}

impl From<EntityChange> for EntityUpdate {
    fn from(c: EntityChange) -> EntityUpdate {
        EntityUpdate::from(&c)
    }
}
