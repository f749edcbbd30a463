//! Serde adapters that make the JSON encoding safe for JavaScript clients without changing
//! the binary one: entity ids become decimal strings (they exceed 2^53, the largest integer a
//! JavaScript number holds exactly) and byte blobs become base64 strings instead of arrays.

use base64::Engine as _;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use world::EntityId;

/// An entity id on the wire: a decimal string in human-readable formats, a varint otherwise.
#[derive(Clone, Copy)]
pub(crate) struct WireId(pub EntityId);

impl Serialize for WireId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(&self.0 .0)
        } else {
            s.serialize_u64(self.0 .0)
        }
    }
}

impl<'de> Deserialize<'de> for WireId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<WireId, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = WireId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an entity id: a decimal string such as \"281479271677953\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireId, E> {
                Ok(WireId(EntityId(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireId, E> {
                // Only plain digits: u64::from_str would also take a leading '+'.
                if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::invalid_value(de::Unexpected::Str(v), &self));
                }
                v.parse()
                    .map(|n| WireId(EntityId(n)))
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        if d.is_human_readable() {
            // A JSON number is accepted too, for hand-written messages with small ids.
            d.deserialize_any(IdVisitor)
        } else {
            d.deserialize_u64(IdVisitor)
        }
    }
}

/// `#[serde(with = "wire::id")]` for an `EntityId` field.
pub(crate) mod id {
    use super::*;
    pub fn serialize<S: Serializer>(v: &EntityId, s: S) -> Result<S::Ok, S::Error> {
        WireId(*v).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EntityId, D::Error> {
        WireId::deserialize(d).map(|w| w.0)
    }
}

/// `#[serde(with = "wire::u64_id")]` for another 64-bit id (a script's) written like entity
/// ids: a decimal string in JSON, a varint in binary.
pub(crate) mod u64_id {
    use super::*;
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        WireId(EntityId(*v)).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        WireId::deserialize(d).map(|w| w.0 .0)
    }
}

/// `#[serde(with = "wire::opt_id")]` for an `Option<EntityId>` field.
pub(crate) mod opt_id {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Option<EntityId>, s: S) -> Result<S::Ok, S::Error> {
        v.map(WireId).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EntityId>, D::Error> {
        Option::<WireId>::deserialize(d).map(|o| o.map(|w| w.0))
    }
}

/// `#[serde(with = "wire::ids")]` for a `Vec<EntityId>` field.
pub(crate) mod ids {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[EntityId], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|id| WireId(*id)))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EntityId>, D::Error> {
        Vec::<WireId>::deserialize(d).map(|v| v.into_iter().map(|w| w.0).collect())
    }
}

/// `#[serde(with = "wire::blob")]` for a `Vec<u8>` field: standard padded base64 in
/// human-readable formats, length-prefixed bytes otherwise.
pub(crate) mod blob {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&STANDARD.encode(v))
        } else {
            s.serialize_bytes(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct BlobVisitor;
        impl Visitor<'_> for BlobVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes, or a base64 string in JSON")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                STANDARD.decode(v).map_err(|e| E::custom(format_args!("bad base64: {e}")))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(BlobVisitor)
        } else {
            d.deserialize_byte_buf(BlobVisitor)
        }
    }
}

/// `#[serde(with = "wire::u64_str")]` for a `u64` that may exceed 2^53 (owner ids): written
/// like an entity id.
pub(crate) mod u64_str {
    use super::*;
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        WireId(EntityId(*v)).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        WireId::deserialize(d).map(|w| w.0 .0)
    }
}
