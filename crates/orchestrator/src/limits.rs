//! The orchestrator's limits and periods, named in one place.

use std::time::Duration;

/// How often the placement policy runs.
pub const PLAN_EVERY: Duration = Duration::from_secs(1);
/// How often the host list and the directory are re-read (watches make changes faster).
pub const REFRESH_EVERY: Duration = Duration::from_millis(500);
/// How often the orchestrator fetches a snapshot of every region for failover.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);
/// After start, the policy moves nothing for this long (drains excepted): hosts need a
/// heartbeat or two to show up, an orchestrator restart must not take them all for dead, and
/// a region's load is not judged on its first report.
pub const START_GRACE: Duration = Duration::from_secs(4);
/// How often a running migration's progress is asked for.
pub const MIGRATION_POLL: Duration = Duration::from_millis(100);
/// A migration that has not finished after this long is given up on by the orchestrator (the
/// host's own bounds end it; this only frees the slot).
pub const MIGRATION_DEADLINE: Duration = Duration::from_secs(120);
/// How long one request to a host's control API may take (snapshots included).
pub const HOST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest snapshot held for a region; bigger ones are not kept (and failover logs it).
pub const MAX_SNAPSHOT_BYTES: usize = 256 * 1024 * 1024;
/// Largest load report accepted.
pub const MAX_REPORT_BYTES: usize = 4 * 1024 * 1024;
/// Decisions kept for the status API.
pub const MAX_DECISIONS: usize = 256;
/// Hosts and regions tracked (beyond this, reports of new ones are refused).
pub const MAX_HOSTS: usize = directory::MAX_HOSTS;
pub const MAX_REGIONS: usize = 65_536;
/// A drain gives up after this many failed migrations off its host.
pub const MAX_DRAIN_FAILURES: u32 = 5;
/// Live migrations a drain runs at once ("one by one").
pub const DRAIN_CONCURRENCY: usize = 1;
/// A host that keeps reporting a region the directory gives to another host for this long
/// (and whose owner has held it this long) has that stale copy unloaded.
pub const FENCE_AFTER: Duration = Duration::from_secs(3);
/// Longest shared-store name a host may report (longer: the report is refused).
pub const MAX_STORE_NAME_BYTES: usize = 512;
/// How long a drain waits for room on the other hosts (their loads settle after a start or a
/// move) before it fails; with no other live host it fails at once.
pub const DRAIN_NO_ROOM_PATIENCE: Duration = Duration::from_secs(20);
