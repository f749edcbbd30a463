//! The entity table's rows: objects and avatars share one type with stable 64-bit ids.

use glam::{Quat, Vec3};
use serde::{Deserialize, Serialize};

use crate::limits::{MAX_NAME_BYTES, MAX_SCALE, MAX_TEXT_BYTES, MIN_SCALE};

/// Stable id of an entity, unique in the whole world.
///
/// Objects created by a region get `region.x << 48 | region.y << 32 | serial`, so two regions
/// never hand out the same id and an id stays the same when its entity crosses a border.
/// Avatar ids come from the session layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntityId(pub u64);

impl std::fmt::Display for EntityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    Box,
    Sphere,
    Cylinder,
    Cone,
    Torus,
    /// The body shape of an avatar.
    Body,
}

/// What a person's viewer holds down. Axes are -1, 0 or +1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controls {
    pub forward: i8,
    pub strafe: i8,
    pub turn: i8,
    pub up: i8,
    pub jump: bool,
    pub fly: bool,
    pub run: bool,
}

impl Controls {
    pub(crate) fn clamped(self) -> Controls {
        Controls {
            forward: self.forward.clamp(-1, 1),
            strafe: self.strafe.clamp(-1, 1),
            turn: self.turn.clamp(-1, 1),
            up: self.up.clamp(-1, 1),
            ..self
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AvatarState {
    pub controls: Controls,
    /// Heading around the vertical axis, radians; `rot` is derived from it.
    pub yaw: f32,
    pub flying: bool,
    pub grounded: bool,
    /// The object this avatar sits on.
    pub seat: Option<EntityId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectState {
    /// Physical objects fall under gravity and slide to rest; others glide at their velocity.
    pub physical: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    Object(ObjectState),
    Avatar(AvatarState),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub id: EntityId,
    pub kind: Kind,
    /// Region metres; relative to the parent when `parent` is set.
    pub pos: Vec3,
    pub rot: Quat,
    pub vel: Vec3,
    pub scale: Vec3,
    pub shape: Shape,
    pub owner: u64,
    pub name: String,
    /// Floating text shown above the entity.
    pub text: String,
    /// Root of the linkset this entity belongs to.
    pub parent: Option<EntityId>,
    /// Generation of this entity's last change of any kind.
    pub gen: u64,
    /// Generation of its last change other than motion (pose and velocity).
    pub body_gen: u64,
}

impl Entity {
    pub fn is_avatar(&self) -> bool {
        matches!(self.kind, Kind::Avatar(_))
    }

    pub fn avatar(&self) -> Option<&AvatarState> {
        match &self.kind {
            Kind::Avatar(a) => Some(a),
            Kind::Object(_) => None,
        }
    }

    /// Checks the limits a decoded or requested entity must keep.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        validate_name(&self.name)?;
        validate_text(&self.text)?;
        if !(self.pos.is_finite() && self.vel.is_finite() && self.rot.is_finite()) {
            return Err("entity pose is not a number");
        }
        validate_scale(self.scale)?;
        if self.body_gen > self.gen {
            return Err("entity body generation is newer than the entity");
        }
        if let Kind::Avatar(a) = &self.kind {
            if !a.yaw.is_finite() {
                return Err("avatar heading is not a number");
            }
            if self.parent.is_some() {
                return Err("an avatar cannot be linked");
            }
        }
        if self.parent == Some(self.id) {
            return Err("entity is its own parent");
        }
        Ok(())
    }
}

pub(crate) fn validate_name(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_NAME_BYTES {
        return Err("name longer than MAX_NAME_BYTES");
    }
    Ok(())
}

pub(crate) fn validate_text(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_TEXT_BYTES {
        return Err("floating text longer than MAX_TEXT_BYTES");
    }
    Ok(())
}

pub(crate) fn validate_scale(s: Vec3) -> Result<(), &'static str> {
    if !s.is_finite() || s.min_element() < MIN_SCALE || s.max_element() > MAX_SCALE {
        return Err("scale outside MIN_SCALE..=MAX_SCALE");
    }
    Ok(())
}
