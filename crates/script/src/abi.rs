//! The script ABI: the functions a script may import from module `terrane`, the event
//! handlers it may export, and the constants and record layouts they share.
//!
//! docs/scripting.md is the user-facing description of the same table; a module is checked
//! against these lists when it is loaded, so anything not named here is refused.

/// The only import module a script may use.
pub const IMPORT_MODULE: &str = "terrane";

/// Prefix of the exports the loader adds to every module (its memory and mutable globals).
/// Modules may not export names of their own with this prefix.
pub const RESERVED_EXPORT_PREFIX: &str = "__terrane_";
/// Export name the loader gives the script's memory.
pub const MEMORY_EXPORT: &str = "__terrane_memory";

/// Export name of the global the loader adds to every module: the mask of memory chunks the
/// script wrote since the host last looked (not script state: never captured or hashed).
pub const WRITES_EXPORT: &str = "__terrane_writes";

/// Export name the loader gives the mutable global with this index.
pub fn global_export_name(index: u32) -> String {
    format!("{RESERVED_EXPORT_PREFIX}global_{index}")
}

/// A WebAssembly value type as the ABI uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbiType {
    I32,
    I64,
    F32,
}

impl AbiType {
    pub fn name(self) -> &'static str {
        match self {
            AbiType::I32 => "i32",
            AbiType::I64 => "i64",
            AbiType::F32 => "f32",
        }
    }
}

/// One function signature of the ABI.
#[derive(Clone, Copy, Debug)]
pub struct Signature {
    pub name: &'static str,
    pub params: &'static [AbiType],
    pub results: &'static [AbiType],
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |ts: &[AbiType]| ts.iter().map(|t| t.name()).collect::<Vec<_>>().join(" ");
        write!(f, "{} (param {}) (result {})", self.name, list(self.params), list(self.results))
    }
}

use AbiType::{F32, I32, I64};

const fn sig(name: &'static str, params: &'static [AbiType], results: &'static [AbiType]) -> Signature {
    Signature { name, params, results }
}

/// Every function a script may import from [`IMPORT_MODULE`].
pub const IMPORTS: &[Signature] = &[
    // Chat on a numbered channel: (channel, text ptr, text len).
    sig("say", &[I32, I32, I32], &[]),
    sig("shout", &[I32, I32, I32], &[]),
    sig("region_say", &[I32, I32, I32], &[]),
    // listen(channel) -> handle, or -1 when MAX_LISTENS_PER_SCRIPT are open.
    sig("listen", &[I32], &[I32]),
    // unlisten(handle) -> 1 if it was open, 0 otherwise.
    sig("unlisten", &[I32], &[I32]),
    // send_message(object id, bytes ptr, bytes len).
    sig("send_message", &[I64, I32, I32], &[]),
    // set_timer(interval ms); 0 or less stops the timer.
    sig("set_timer", &[I64], &[]),
    // Own pose: get_* write little-endian f32s to a pointer, set_* take them as parameters.
    sig("get_pos", &[I32], &[]),
    sig("set_pos", &[F32, F32, F32], &[]),
    sig("get_rot", &[I32], &[]),
    sig("set_rot", &[F32, F32, F32, F32], &[]),
    sig("get_vel", &[I32], &[]),
    sig("set_vel", &[F32, F32, F32], &[]),
    sig("get_scale", &[I32], &[]),
    sig("set_scale", &[F32, F32, F32], &[]),
    // get_text(dst ptr, dst capacity) -> full length in bytes.
    sig("get_text", &[I32, I32], &[I32]),
    sig("set_text", &[I32, I32], &[]),
    sig("now_ms", &[], &[I64]),
    // region() -> x << 16 | y.
    sig("region", &[], &[I32]),
    sig("own_id", &[], &[I64]),
    sig("random_u64", &[], &[I64]),
    // random_f32() -> uniform in [0, 1).
    sig("random_f32", &[], &[F32]),
    // sensor(kinds mask, range m, out ptr, max records) -> records written.
    sig("sensor", &[I32, F32, I32, I32], &[I32]),
    // create_object(template ptr, template len, x, y, z, start param).
    sig("create_object", &[I32, I32, F32, F32, F32, I32], &[]),
    sig("delete_self", &[], &[]),
    // save(): log the script's state with this tick's durable changes (docs/scripting.md).
    sig("save", &[], &[]),
    // read_event(dst ptr, dst capacity) -> payload length of the running event.
    sig("read_event", &[I32, I32], &[I32]),
];

/// Looks an import up by name.
pub fn import(name: &str) -> Option<&'static Signature> {
    IMPORTS.iter().find(|s| s.name == name)
}

/// The event handlers a script may export. Every one is optional; an event whose handler is
/// missing is never queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Handler {
    Start = 0,
    Timer = 1,
    Touch = 2,
    Listen = 3,
    Message = 4,
    Collision = 5,
    Changed = 6,
    RegionCross = 7,
}

impl Handler {
    pub const ALL: [Handler; 8] = [
        Handler::Start,
        Handler::Timer,
        Handler::Touch,
        Handler::Listen,
        Handler::Message,
        Handler::Collision,
        Handler::Changed,
        Handler::RegionCross,
    ];

    pub fn signature(self) -> Signature {
        match self {
            Handler::Start => sig("start", &[], &[]),
            Handler::Timer => sig("timer", &[], &[]),
            // touch(toucher id)
            Handler::Touch => sig("touch", &[I64], &[]),
            // listen(channel, sender id, text len); the text is read with read_event.
            Handler::Listen => sig("listen", &[I32, I64, I32], &[]),
            // message(sender id, bytes len); the bytes are read with read_event.
            Handler::Message => sig("message", &[I64, I32], &[]),
            // collision(other id, phase: 0 start, 1 end)
            Handler::Collision => sig("collision", &[I64, I32], &[]),
            // changed(CHANGED_* bits)
            Handler::Changed => sig("changed", &[I32], &[]),
            // region_cross(from region, to region), each x << 16 | y
            Handler::RegionCross => sig("region_cross", &[I32, I32], &[]),
        }
    }

    pub fn name(self) -> &'static str {
        self.signature().name
    }

    pub fn from_export(name: &str) -> Option<Handler> {
        Handler::ALL.into_iter().find(|h| h.name() == name)
    }

    pub(crate) fn bit(self) -> u16 {
        1 << self as u8
    }
}

/// Sensor kinds mask bits.
pub const SENSE_AVATARS: i32 = 1;
pub const SENSE_OBJECTS: i32 = 2;

/// Bytes of one sensor record: id u64, kind u32 (1 avatar, 2 object), distance f32,
/// position 3 × f32, 4 reserved zero bytes. Little-endian, like all of wasm memory.
pub const SENSOR_RECORD_BYTES: usize = 32;

/// `changed` bits.
pub const CHANGED_SCALE: i32 = 1 << 0;
pub const CHANGED_TEXT: i32 = 1 << 1;
pub const CHANGED_OWNER: i32 = 1 << 2;
pub const CHANGED_REGION: i32 = 1 << 3;
pub const CHANGED_LINK: i32 = 1 << 4;

/// Packs a region id the way `region()` and `region_cross` pass it.
pub fn pack_region(r: world::RegionId) -> i32 {
    ((r.x as u32) << 16 | r.y as u32) as i32
}
