//! What goes into a tick (inputs) and what comes out (changes for subscribers).

use glam::{Quat, Vec3};
use serde::{Deserialize, Serialize};

use crate::entity::{Controls, Entity, EntityId, Shape};
use crate::scripts::{ModuleHash, ScriptId};

/// Everything that changes a region enters through one of these, applied at the start of a tick
/// in the order given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// A person's avatar enters. `pos` defaults to the region centre, on the ground.
    AddAvatar {
        id: EntityId,
        name: String,
        owner: u64,
        pos: Option<Vec3>,
    },
    RemoveAvatar {
        id: EntityId,
    },
    Controls {
        id: EntityId,
        controls: Controls,
    },
    Sit {
        avatar: EntityId,
        object: EntityId,
    },
    Stand {
        avatar: EntityId,
    },
    /// `tag` is the caller's, echoed back in [`TickOutput::created`] with the new id.
    CreateObject {
        tag: u64,
        spec: ObjectSpec,
    },
    EditObject {
        id: EntityId,
        edit: ObjectEdit,
    },
    /// Deletes the object and, if it is a linkset root, its children.
    DeleteObject {
        id: EntityId,
    },
    Link {
        root: EntityId,
        child: EntityId,
    },
    Unlink {
        child: EntityId,
    },
    /// Raise (positive) or lower the ground with a round brush centred at (x, y).
    EditTerrain {
        x: f32,
        y: f32,
        radius: f32,
        delta: f32,
    },
    /// An avatar touches an object: the object's scripts get a `touch` event this tick.
    Touch {
        avatar: EntityId,
        object: EntityId,
    },
    /// Stores a script module (WebAssembly binary) in the region under its content hash, so
    /// any host the region moves to can run it. Storing one already held does nothing.
    AddModule {
        bytes: Vec<u8>,
    },
    /// Puts a new script running `module` (already stored) into an object. It starts with its
    /// `start` event when the host next runs the region's scripts.
    AddScript {
        object: EntityId,
        module: ModuleHash,
    },
    RemoveScript {
        id: ScriptId,
    },
    /// Creates an object from a template, with the template's scripts in it. `tag` is
    /// echoed back in [`TickOutput::created`] with the new id.
    Rez {
        tag: u64,
        template: String,
        pos: Vec3,
    },
    /// Defines (or redefines) what scripts' `create_object(name, …)` makes.
    DefineTemplate {
        name: String,
        spec: ObjectSpec,
        scripts: Vec<ModuleHash>,
    },
    /// A held unit (see [`crate::border`]) now belongs to the neighbour: it leaves this region
    /// (root, children, seated avatars and their scripts). Refused if `root` is not held.
    Depart {
        root: EntityId,
    },
    /// A held unit's crossing was called off: it comes back inside the square, bouncing.
    Return {
        root: EntityId,
    },
    /// A unit adopted from the neighbour `from`, with positions in `from`'s frame (shifted
    /// here). Ids are kept; script records resume where they stopped. It may take the region
    /// past `MAX_ENTITIES` (by at most the units in flight): a crossing is never refused
    /// after it was decided.
    Arrive {
        from: crate::RegionId,
        entities: Vec<Entity>,
        scripts: Vec<crate::ScriptRecord>,
        /// The modules its scripts run (stored if the region lacks them).
        modules: Vec<Vec<u8>>,
    },
    /// The crossing protocol's durable record, replaced whole (opaque to the region; at most
    /// `MAX_BORDER_STATE_BYTES`).
    Border {
        #[serde(with = "crate::scripts::raw_bytes")]
        state: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectSpec {
    pub name: String,
    pub owner: u64,
    pub shape: Shape,
    pub pos: Vec3,
    pub rot: Quat,
    pub scale: Vec3,
    pub vel: Vec3,
    pub physical: bool,
    pub text: String,
}

impl Default for ObjectSpec {
    fn default() -> Self {
        ObjectSpec {
            name: "Object".into(),
            owner: 0,
            shape: Shape::Box,
            pos: Vec3::new(128.0, 128.0, 30.0),
            rot: Quat::IDENTITY,
            scale: Vec3::ONE,
            vel: Vec3::ZERO,
            physical: false,
            text: String::new(),
        }
    }
}

/// Fields to change on an object; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectEdit {
    pub pos: Option<Vec3>,
    pub rot: Option<Quat>,
    pub vel: Option<Vec3>,
    pub scale: Option<Vec3>,
    pub shape: Option<Shape>,
    pub name: Option<String>,
    pub text: Option<String>,
    pub physical: Option<bool>,
}

/// Why an input was refused. The tick goes on; the refusal is reported in its output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum InputError {
    #[error("no entity {0} in this region")]
    UnknownEntity(EntityId),
    #[error("entity {0} is already in this region")]
    AlreadyPresent(EntityId),
    #[error("entity {0} is not an avatar")]
    NotAnAvatar(EntityId),
    #[error("entity {0} is not an object")]
    NotAnObject(EntityId),
    #[error("the region is full (MAX_ENTITIES)")]
    RegionFull,
    #[error("more than MAX_INPUTS_PER_TICK inputs in one tick")]
    TooManyInputs,
    #[error("invalid value: {0}")]
    Invalid(String),
    #[error("link refused: {0}")]
    LinkRefused(String),
    #[error("no script {0} in this region")]
    UnknownScript(ScriptId),
    #[error("no module {0} in this region: store it with AddModule first")]
    UnknownModule(ModuleHash),
    #[error("no object template named {0:?} in this region")]
    UnknownTemplate(String),
    #[error("too many scripts: {0}")]
    TooManyScripts(String),
    #[error("entity {0} is crossing a region border; try again in a moment")]
    Crossing(EntityId),
}

/// A script effect the region refused (the tick goes on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScriptRefused {
    pub script: ScriptId,
    pub error: InputError,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    /// Position of the refused input in the tick's input list.
    pub index: usize,
    pub error: InputError,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub tag: u64,
    pub id: EntityId,
}

/// One entity's change in a tick, as subscribers see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EntityChange {
    /// New, or something besides its motion changed: the whole row.
    Full(Entity),
    /// Only pose and velocity changed.
    Motion { id: EntityId, pos: Vec3, rot: Quat, vel: Vec3 },
}

impl EntityChange {
    pub fn id(&self) -> EntityId {
        match self {
            EntityChange::Full(e) => e.id,
            EntityChange::Motion { id, .. } => *id,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TickOutput {
    pub tick: u64,
    pub generation: u64,
    pub changes: Vec<EntityChange>,
    pub removed: Vec<EntityId>,
    pub created: Vec<Created>,
    pub rejected: Vec<Rejected>,
    /// Whether the terrain was edited this tick.
    pub terrain_changed: bool,
    /// When the next tick is due, in microseconds after this one: the region's current rate.
    pub interval_us: u64,
    /// Script effects the region refused this tick.
    pub script_refused: Vec<ScriptRefused>,
    /// Scripts that stopped with an error this tick, with their objects' owners (at most
    /// `MAX_SCRIPT_ERRORS_PER_TICK`): gateways tell the owners.
    pub script_errors: Vec<crate::scripts::ScriptStopped>,
    /// Roots that reached an open edge this tick and are now held there, with the neighbour
    /// they are leaving for (see [`crate::border`]).
    pub leaving: Vec<(EntityId, crate::RegionId)>,
    /// The changes this tick's inputs made on purpose, to log before acknowledging them
    /// (see `durable`). Stays with the host: never sent to subscribers.
    #[serde(skip)]
    pub durable: Option<crate::codec::Delta>,
}
