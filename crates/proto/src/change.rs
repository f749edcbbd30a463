//! Changes a person makes on purpose (create, edit, delete an object) and how the gateway
//! answers them: an `ack` once the change is durable, or a `refused` naming the request.

use serde::{Deserialize, Serialize};
use world::{ObjectEdit, ObjectSpec, Quat, Shape, Vec3};

use crate::error::ProtoError;
use crate::limits::{MAX_COORDINATE, MAX_NAME_BYTES, MAX_TEXT_BYTES};
use crate::msg::invalid;

/// A new object, as a client asks for it (the owner is the session's agent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewObject {
    pub name: String,
    pub shape: Shape,
    /// Metres, region-local, in the avatar's region.
    pub pos: Vec3,
    pub rot: Quat,
    pub scale: Vec3,
    /// Falls under gravity and slides to rest.
    pub physical: bool,
    /// Floating text shown above it.
    pub text: String,
}

impl NewObject {
    /// The region's form of the object, owned by `owner`.
    pub fn spec(&self, owner: u64) -> ObjectSpec {
        ObjectSpec {
            name: self.name.clone(),
            owner,
            shape: self.shape,
            pos: self.pos,
            rot: self.rot,
            scale: self.scale,
            vel: Vec3::ZERO,
            physical: self.physical,
            text: self.text.clone(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ProtoError> {
        check_strings(Some(&self.name), Some(&self.text))?;
        check_vec("create.pos", self.pos)?;
        check_vec("create.scale", self.scale)?;
        check_rot("create.rot", self.rot)
    }
}

/// Why a change was not acknowledged. JSON: the snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The region refused it (no such object, a value out of range, the object is crossing a
    /// border…): nothing changed.
    Rejected,
    /// It was not applied (the region is moving to another host, or busy): send it again.
    TryAgain,
    /// The outcome is not known (the host stopped answering, or could not store the change):
    /// it may have been applied, and if so may be lost if its host dies. Look at the object.
    Unknown,
}

pub(crate) fn validate_edit(edit: &ObjectEdit) -> Result<(), ProtoError> {
    check_strings(edit.name.as_ref(), edit.text.as_ref())?;
    for (what, v) in [("edit.pos", edit.pos), ("edit.vel", edit.vel), ("edit.scale", edit.scale)] {
        if let Some(v) = v {
            check_vec(what, v)?;
        }
    }
    match edit.rot {
        Some(r) => check_rot("edit.rot", r),
        None => Ok(()),
    }
}

fn check_strings(name: Option<&String>, text: Option<&String>) -> Result<(), ProtoError> {
    if let Some(name) = name {
        if name.len() > MAX_NAME_BYTES {
            return Err(invalid(format!("object name longer than {MAX_NAME_BYTES} bytes")));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("object name has control characters".into()));
        }
    }
    if let Some(text) = text {
        if text.len() > MAX_TEXT_BYTES {
            return Err(invalid(format!("object text longer than {MAX_TEXT_BYTES} bytes")));
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(invalid("object text has control characters other than newline".into()));
        }
    }
    Ok(())
}

fn check_vec(what: &str, v: Vec3) -> Result<(), ProtoError> {
    if v.is_finite() && v.abs().max_element() <= MAX_COORDINATE {
        Ok(())
    } else {
        Err(invalid(format!("{what} is not a finite number within MAX_COORDINATE")))
    }
}

fn check_rot(what: &str, r: Quat) -> Result<(), ProtoError> {
    if r.is_finite() && r.length_squared() > 0.0 {
        Ok(())
    } else {
        Err(invalid(format!("{what} is not a finite, non-zero quaternion")))
    }
}

#[cfg(test)]
mod tests {
    use crate::{decode_client, ClientMsg, Encoding};

    #[test]
    fn an_edit_may_leave_out_the_fields_it_does_not_change() {
        let msg = decode_client(
            br#"{"edit":{"request_id":5,"object":"42","edit":{"text":"Off"}}}"#,
            Encoding::Json,
        )
        .expect("decodes");
        let ClientMsg::Edit { request_id: 5, edit, .. } = msg else { panic!("an edit: {msg:?}") };
        assert_eq!((edit.text.as_deref(), edit.pos, edit.name), (Some("Off"), None, None));
    }

    #[test]
    fn a_create_with_a_non_finite_position_is_invalid() {
        let bad = br#"{"create":{"request_id":1,"object":{"name":"x","shape":"Box","pos":[1e39,0.0,0.0],"rot":[0.0,0.0,0.0,1.0],"scale":[1.0,1.0,1.0],"physical":false,"text":""}}}"#;
        assert!(decode_client(bad, Encoding::Json).is_err());
    }
}
