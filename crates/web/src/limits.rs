//! Every limit of the web pages' server, in one place.

/// How often the live feed pushes the whole cluster view.
pub const LIVE_CLUSTER_EVERY_MS: u64 = 1000;
/// How often the live feed looks for migration news (pushed as they change).
pub const LIVE_MIGRATIONS_EVERY_MS: u64 = 200;
/// Live dashboard connections served at once; more are refused with 503.
pub const MAX_LIVE_CLIENTS: usize = 64;
/// Migration events buffered for a slow live client before it skips ahead.
pub const LIVE_EVENT_QUEUE: usize = 256;
/// Largest frame a live client may send (it only needs to send nothing).
pub const MAX_LIVE_CLIENT_FRAME_BYTES: usize = 1024;
/// Largest body of an action request (`/api/migrate`, `/api/drain`).
pub const MAX_ACTION_BODY_BYTES: usize = 4096;
/// Longest host name in an action request.
pub const MAX_HOST_NAME_BYTES: usize = 256;
/// Most migrations a cluster view carries (the most recent).
pub const MAX_RECENT_MIGRATIONS: usize = 64;
/// Longest control token compared.
pub const MAX_CONTROL_TOKEN_BYTES: usize = 256;
