//! Defaults of the placement policy, named in one place.
//!
//! Costs are in millicores (1000 = one core) so capacity sums are exact integers.

/// Avatars at or above which a region is busy and looks for a bigger place.
pub const DEFAULT_BUSY_AVATARS: u32 = 60;
/// Avatars at or below which a busy region counts as idle again (the hysteresis gap).
pub const DEFAULT_IDLE_AVATARS: u32 = 2;
/// Tick p99 / tick budget at or above which a region is overrunning (busy).
pub const DEFAULT_OVERRUN_RATIO: f64 = 0.8;
/// Tick p99 / tick budget at or below which a region may count as idle.
pub const DEFAULT_IDLE_RATIO: f64 = 0.25;
/// Idle regions packed per core of a host.
pub const DEFAULT_IDLE_REGIONS_PER_CORE: u32 = 16;
/// Live migrations running at once across the cluster (in-flight ones included).
pub const DEFAULT_MAX_CONCURRENT_MIGRATIONS: usize = 2;
/// A region that moved stays put this long (busy and pack moves), so nothing ping-pongs.
pub const DEFAULT_COOLDOWN_MS: u64 = 30_000;
/// Share of a host's cores that placement may fill (percent); the rest absorbs load spikes
/// between two reports and the host's own work (links, scripts' pool, metrics).
pub const DEFAULT_HOST_HEADROOM_PERCENT: u64 = 80;
/// Least cost of any region (millicores): even an empty region ticks at 5 Hz and holds memory,
/// so no host is planned to hold unboundedly many.
pub const DEFAULT_REGION_COST_FLOOR_MILLI: u64 = 20;
/// A busy region moves only if the target's free capacity after the move exceeds its host's free
/// capacity now by this much (millicores): a move that barely helps is not worth a freeze.
pub const DEFAULT_MIN_GAIN_MILLI: u64 = 200;

/// Most a region can cost: one thread ticks a region, so it never uses more than one core.
pub const MAX_REGION_COST_MILLI: u64 = 1000;
/// Millicores in one core.
pub const MILLI_PER_CORE: u64 = 1000;
