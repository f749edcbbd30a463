//! Every limit of the bots, named in one place: how often they think, how they steer, and
//! how long they wait for the gateway.

/// How often a bot reconsiders its controls, in milliseconds. Controls are only sent when
/// they change, so a bot stays far below the gateway's message rate limit.
pub const THINK_MS: u64 = 100;
/// Heading error within which a bot walks straight on, in radians.
pub const STEER_DEADBAND_RAD: f32 = 0.2;
/// Heading error beyond which a bot stops to turn instead of walking in a circle, in radians.
pub const TURN_IN_PLACE_RAD: f32 = 1.2;
/// Close enough to a target to call it reached, in metres.
pub const ARRIVE_M: f32 = 3.0;
/// A bot that got no closer to its target for this long picks another (a wall, a border
/// that does not let it through), in milliseconds.
pub const STUCK_MS: u64 = 6_000;
/// Longest pause at a reached target for wandering bots, in milliseconds.
pub const MAX_PAUSE_MS: u64 = 2_000;
/// Radius of the spot club bots gather around, in metres.
pub const CLUB_RADIUS_M: f32 = 6.0;
/// How far past the border commuters walk into the neighbour region, in metres.
pub const COMMUTE_REACH_M: f32 = 40.0;
/// Margin wanderers keep from their region's edges, in metres.
pub const WANDER_MARGIN_M: f32 = 20.0;

/// A bot's WebSocket read buffer: a few updates. The WebSocket layer zeroes the whole buffer on
/// every read, so its 128 KiB default made hundreds of bots spend more on that than on reading.
pub const READ_BUFFER_BYTES: usize = 32 * 1024;

/// How long a bot waits to connect and be welcomed, in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// A bot that saw no update for this long at the end of a run counts as stalled, in ms.
pub const STALL_MS: u64 = 2_000;
/// Most error texts kept in a report.
pub const MAX_REPORTED_ERRORS: usize = 20;
/// Most bots one run starts.
pub const MAX_BOTS: usize = 10_000;
/// Largest frame a bot accepts: the gateway's largest.
pub const MAX_SERVER_FRAME_BYTES: usize = proto::limits::MAX_SERVER_FRAME_BYTES;
