//! Every limit of the wire protocol, named in one place.
//!
//! Decoders check sizes before parsing and contents after; docs/protocol.md lists the same
//! numbers for third-party clients (a test keeps them in step).

/// Largest frame a client may send to the gateway, in bytes (either encoding). Client messages
/// are small (controls, chat, a token): anything bigger is an attack or a bug.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// Largest frame the gateway sends, in bytes. Sized to hold a maximal [`crate::Update`] in
/// the JSON encoding with worst-case string escapes (a test proves it).
pub const MAX_SERVER_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Longest chat text, in bytes of UTF-8 (Second Life's 1023 rounded up).
pub const MAX_CHAT_BYTES: usize = 1024;
/// Longest session token, in bytes. Tokens are printable ASCII.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// Longest error message the gateway sends, in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;
/// Longest error kind and message in a `script_error`, in bytes: the region's own limits.
pub const MAX_SCRIPT_ERROR_KIND_BYTES: usize = world::limits::MAX_SCRIPT_ERROR_KIND_BYTES;
pub const MAX_SCRIPT_ERROR_MESSAGE_BYTES: usize = world::limits::MAX_SCRIPT_ERROR_MESSAGE_BYTES;
/// Longest display name (avatar or object), in bytes: the region's own limit.
pub const MAX_NAME_BYTES: usize = world::limits::MAX_NAME_BYTES;
/// Longest floating text over an entity, in bytes: the region's own limit.
pub const MAX_TEXT_BYTES: usize = world::limits::MAX_TEXT_BYTES;

/// Highest chat channel a client may speak on; clients use `0..=MAX_CLIENT_CHANNEL`.
/// Channel 0 is public chat; negative channels and `i32::MAX` (the script debug channel, as in
/// Second Life) are reserved for scripts and the system.
pub const MAX_CLIENT_CHANNEL: i32 = i32::MAX - 1;

/// Most entity changes in one update; the gateway splits a larger tick (e.g. a late join into a
/// busy region) into several updates with the same tick and consecutive sequence numbers.
pub const MAX_CHANGES_PER_UPDATE: usize = 1024;
/// Most removed entity ids in one update.
pub const MAX_REMOVED_PER_UPDATE: usize = 4096;

/// Heightmap samples per side, as in the region core (one sample per metre).
pub const TERRAIN_SAMPLES: usize = world::limits::TERRAIN_SAMPLES;
/// Largest compressed terrain blob in a region info: zstd's worst case for the raw
/// 256 × 256 × 4 bytes is a little above the raw size.
pub const MAX_TERRAIN_BLOB_BYTES: usize = 288 * 1024;

/// Highest tick rate a welcome may announce, in Hz.
pub const MAX_TICK_HZ: u32 = 1000;
/// Farthest draw distance a welcome may announce, in metres.
pub const MAX_DRAW_DISTANCE: f32 = 1024.0;
/// Largest coordinate a position may have, in metres, on any axis. Region-local positions are
/// within a few regions of the square (children are relative to their root; entities near a
/// border may be just outside it), far below this.
pub const MAX_COORDINATE: f32 = 1.0e6;

/// How long the gateway waits for the hello after the WebSocket opens, in seconds.
pub const HELLO_TIMEOUT_SECS: u64 = 10;
/// Most messages per second a client may send; the gateway enforces it (controls are worth
/// sending at most once per tick: 45 Hz).
pub const MAX_CLIENT_MSGS_PER_SEC: u32 = 60;

/// Shortest secret accepted for signing or verifying session tokens, in bytes.
pub const MIN_TOKEN_SECRET_BYTES: usize = 16;

/// Most `create`/`edit`/`delete` requests of one session waiting for their `ack` or
/// `refused`; beyond it a request is refused with `try_again` at once.
pub const MAX_PENDING_CHANGES: usize = 64;
/// Longest the gateway waits for a change's outcome before answering `refused` with
/// `unknown`, in seconds.
pub const CHANGE_TIMEOUT_SECS: u64 = 30;
