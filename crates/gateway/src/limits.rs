//! Every limit of the gateway, named in one place: queues, rates, budgets and timers.
//!
//! The protocol's own limits (frame sizes, hello timeout, client message rate) live in
//! `proto::limits`; these are the gateway's choices on top of them.

/// Default radius around an avatar within which entities are streamed, in metres.
pub const DEFAULT_DRAW_DISTANCE_M: f32 = 128.0;

/// Per-client bandwidth cap, in bytes per second of encoded frames. 1 MB/s carries a busy
/// region's motion at 45 Hz; a late join into 10,000 objects streams them nearest first at
/// this rate instead of flooding the link (and every other client behind the same uplink).
pub const CLIENT_BYTES_PER_SEC: u64 = 1_000_000;
/// How far a client may burst above its rate, in bytes: the first quarter second of a late
/// join (some 2,500 nearest objects in the binary encoding) goes out at once.
pub const CLIENT_BURST_BYTES: u64 = 256 * 1024;

/// Frames waiting to be written to one client. A client that stops reading fills its socket
/// buffers, then this queue, and is dropped (`slow_consumer`) instead of holding memory or
/// stalling anyone else.
pub const SEND_QUEUE_FRAMES: usize = 256;
/// Region ticks and chat waiting for one session's task. A session task never blocks on its
/// socket, so a full queue means the task itself is starved: it is dropped like a slow reader.
pub const SESSION_EVENT_QUEUE: usize = 1024;

/// Largest WebSocket message the transport accepts before the protocol decoder sees it.
/// Above `proto::limits::MAX_FRAME_BYTES`, so that a moderately oversized frame gets a clean
/// `too_large` error; beyond this the WebSocket layer itself refuses the message.
pub const WS_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Read buffer of a client's WebSocket. Clients send small frames; the WebSocket layer zeroes
/// the whole buffer on every read, so its 128 KiB default cost more than the reading itself.
pub const WS_READ_BUFFER_BYTES: usize = 8 * 1024;

/// Most sessions one gateway holds; beyond it the upgrade is answered 503.
pub const MAX_SESSIONS: usize = 10_000;
/// Most regions one gateway streams (one subscription each, shared by all its clients).
pub const MAX_FEEDS: usize = 4_096;

/// An avatar that moved this far since the last view scan triggers a new one, in metres.
pub const SCAN_MOVE_M: f32 = 8.0;
/// A view is rescanned at least this often even if the avatar stands still, in milliseconds
/// (entities that glide into draw distance on their own are found by it).
pub const SCAN_INTERVAL_MS: u64 = 1_000;
/// How often a session sends what its bandwidth budget held back, in milliseconds.
pub const BACKLOG_FLUSH_MS: u64 = 20;

/// How far public chat carries, in metres (Second Life's "say" range).
pub const CHAT_RANGE_M: f32 = 20.0;

/// First and longest wait between attempts to re-subscribe a region whose host went away or
/// answered "not here", in milliseconds.
pub const RESUBSCRIBE_FIRST_MS: u64 = 10;
pub const RESUBSCRIBE_MAX_MS: u64 = 1_000;
/// Attempts before a region is given up (its sessions then get `region_unavailable`).
pub const RESUBSCRIBE_ATTEMPTS: u32 = 600;
/// A region missing from the directory is not looked up again for this long, in milliseconds.
pub const ABSENT_REGION_TTL_MS: u64 = 2_000;
/// A session whose avatar's region has sent nothing for this long is closed with
/// `region_unavailable`, in seconds.
pub const REGION_SILENT_SECS: u64 = 10;

/// Lifetime of a guest token from `/guest`, in seconds.
pub const GUEST_TOKEN_TTL_SECS: u64 = 24 * 3600;
/// Length of a generated token secret, in bytes.
pub const GENERATED_SECRET_BYTES: usize = 32;

/// Rough encoded size of one entity change, used to fill a budget before encoding; the actual
/// bytes are charged after. JSON is about three times the binary size.
pub const ESTIMATED_FULL_BYTES: u64 = 110;
pub const ESTIMATED_MOTION_BYTES: u64 = 52;
pub const JSON_SIZE_FACTOR: u64 = 3;

/// How long a closing session waits for its last frames (error, close) to be written.
pub const CLOSE_LINGER_MS: u64 = 500;

/// After a session ends, its avatar's removal is asked again after these waits (ms), in its
/// home region and the neighbours in view: it may have been crossing a border at the time.
pub const LEAVE_RETRY_MS: [u64; 3] = [300, 1000, 3000];

/// Most changes (create, edit, delete) this gateway has forwarded and not yet heard back
/// about, over all sessions; beyond it a change is refused with `try_again`.
pub const MAX_PENDING_CHANGES_TOTAL: usize = 65_536;
