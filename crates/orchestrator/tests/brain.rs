//! The orchestrator's decision loop driven by fake reports, host lists and placements: no
//! process, no network, time as a number.

use directory::report::{HostReport, RegionReport};
use directory::{HostRecord, Placement};
use orchestrator::brain::{Action, Brain, DrainPhase, Outcome};
use placement::{Policy, Reason};
use world::RegionId;

const GRACE_MS: u64 = 4_000;

fn record(name: &str, cores: u32) -> HostRecord {
    HostRecord { name: name.into(), api: format!("http://{name}-api"), cores }
}

fn load(region: RegionId, avatars: u32, p99: f64) -> RegionReport {
    let active = avatars > 0;
    RegionReport {
        region,
        avatars,
        objects: 150,
        scripts: 10,
        tick_p99_ms: p99,
        tick_budget_ms: if active { 1000.0 / 45.0 } else { 200.0 },
        script_ms: 0.1,
        rate_hz: if active { 45 } else { 5 },
    }
}

fn grid() -> Vec<RegionId> {
    (0..3).flat_map(|y| (0..3).map(move |x| RegionId::new(x, y))).collect()
}

/// A small host (1 core) holding the 3×3 grid and an empty big host (2 cores).
struct Cluster {
    brain: Brain,
    now: u64,
    owner: Vec<(RegionId, Placement)>,
}

impl Cluster {
    /// Just started: within the start grace.
    fn fresh() -> Cluster {
        let brain = Brain::new(Policy::default(), 0, GRACE_MS);
        let owner = grid().into_iter().map(|r| (r, Placement { host: "small".into(), epoch: 1 })).collect();
        let mut c = Cluster { brain, now: 0, owner };
        c.tick(&[], &["small", "big"]);
        c
    }

    /// Past the start grace, with every host and region reported.
    fn new() -> Cluster {
        let mut c = Cluster::fresh();
        while c.now < GRACE_MS {
            assert!(c.tick(&[], &["small", "big"]).is_empty(), "nothing moves in the start grace");
        }
        c
    }

    fn hosts(names: &[&str]) -> Vec<HostRecord> {
        names.iter().map(|&n| record(n, if n == "small" { 1 } else { 2 })).collect()
    }

    /// One second passes: the live hosts and the directory are read, each live host reports
    /// its regions (with `crowd` avatars in the listed regions), and the brain decides.
    fn tick(&mut self, crowd: &[(RegionId, u32)], live: &[&str]) -> Vec<Action> {
        self.now += 1_000;
        self.brain.handle_hosts(self.now, Cluster::hosts(live));
        self.brain.handle_placements(self.now, self.owner.clone());
        for &h in live {
            let regions = self
                .owner
                .iter()
                .filter(|(_, p)| p.host == h)
                .map(|(r, _)| {
                    let n = crowd.iter().find(|(c, _)| c == r).map_or(0, |(_, n)| *n);
                    load(*r, n, if n > 0 { 6.0 } else { 0.3 })
                })
                .collect();
            self.brain.handle_report(
                self.now,
                HostReport {
                    host: record(h, if h == "small" { 1 } else { 2 }),
                    load_milli: 100,
                    regions,
                    shared_store: None,
                },
            );
        }
        self.brain.poll_actions(self.now)
    }

    /// The move committed: the directory now says so.
    fn commit(&mut self, region: RegionId, to: &str) {
        let p = self.owner.iter_mut().find(|(r, _)| *r == region).map(|(_, p)| p).unwrap();
        p.host = to.into();
        p.epoch += 1;
        self.brain.handle_outcome(self.now, region, Outcome::Committed);
    }
}

fn moves(actions: &[Action]) -> Vec<(RegionId, String, String, Reason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Migrate { mv, .. } | Action::Restore { mv, .. } => {
                Some((mv.region, mv.from.clone(), mv.to.clone(), mv.reason))
            }
            Action::Fence { .. } => None,
        })
        .collect()
}

#[test]
fn a_crowded_region_goes_to_the_big_host_and_is_packed_back_after_the_crowd_leaves() {
    let mut c = Cluster::new();
    let club = RegionId::new(1, 1);
    for _ in 0..3 {
        assert!(c.tick(&[], &["small", "big"]).is_empty(), "an idle cluster stays as it is");
    }
    let actions = c.tick(&[(club, 150)], &["small", "big"]);
    assert_eq!(moves(&actions), vec![(club, "small".into(), "big".into(), Reason::Busy)]);
    match &actions[0] {
        Action::Migrate { from_api, .. } => assert_eq!(from_api, "http://small-api"),
        a => panic!("a busy region moves live, not {a:?}"),
    }
    assert!(c.tick(&[(club, 150)], &["small", "big"]).is_empty(), "a move in flight is not asked again");
    c.commit(club, "big");
    // The crowd stays a while, then leaves; nothing moves during the cooldown.
    let mut packed_at = None;
    for s in 0..90 {
        let crowd: &[(RegionId, u32)] = if s < 10 { &[(club, 150)] } else { &[] };
        let actions = c.tick(crowd, &["small", "big"]);
        if actions.is_empty() {
            continue;
        }
        assert_eq!(moves(&actions), vec![(club, "big".into(), "small".into(), Reason::Pack)]);
        assert!(s >= 10, "nothing moves back while the crowd is there");
        packed_at = Some(s);
        c.commit(club, "small");
        break;
    }
    let at = packed_at.expect("the empty region is packed back onto the small host");
    assert!(at <= 40, "packed back {at} s after; the cooldown is 30 s");
    for _ in 0..60 {
        assert!(c.tick(&[], &["small", "big"]).is_empty(), "no ping-pong");
    }
    let st = c.brain.status(c.now);
    assert_eq!(st.regions.iter().find(|r| r.region == club).unwrap().moves, 2);
}

#[test]
fn the_regions_of_a_dead_host_restart_elsewhere_but_not_during_the_start_grace() {
    let mut c = Cluster::fresh();
    // The small host dies at once: within the grace period nothing is failed over.
    let actions = c.tick(&[], &["big"]);
    assert!(actions.is_empty(), "failover waits for the start grace: {actions:?}");
    let mut restored = Vec::new();
    for _ in 0..8 {
        for a in c.tick(&[], &["big"]) {
            match a {
                Action::Restore { mv, to_api } => {
                    assert_eq!(
                        (mv.from.as_str(), mv.to.as_str(), mv.reason),
                        ("small", "big", Reason::Failover)
                    );
                    assert_eq!(to_api, "http://big-api");
                    restored.push(mv.region);
                }
                a => panic!("a dead host's region is restored, not {a:?}"),
            }
        }
    }
    restored.sort();
    let mut all = grid();
    all.sort();
    assert_eq!(restored, all, "every region of the dead host is restarted, once");
    let st = c.brain.status(c.now);
    assert!(!st.hosts.iter().find(|h| h.name == "small").unwrap().alive);
    assert!(st.decisions.iter().any(|d| d.text.contains("small is dead")), "{:?}", st.decisions);
}

#[test]
fn a_drain_moves_every_region_off_one_at_a_time_and_ends_with_the_host_empty() {
    let mut c = Cluster::new();
    c.tick(&[], &["small", "big"]);
    let status = c.brain.request_drain(c.now, "small").unwrap();
    assert_eq!(status.regions_at_start, 9);
    let mut moved = Vec::new();
    for _ in 0..40 {
        let actions = c.tick(&[], &["small", "big"]);
        assert!(actions.len() <= 1, "a drain moves one region at a time: {actions:?}");
        for (region, from, to, reason) in moves(&actions) {
            assert_eq!((from.as_str(), to.as_str(), reason), ("small", "big", Reason::Drain));
            c.commit(region, "big");
            moved.push(region);
        }
        if c.brain.drain_status("small").unwrap().phase != DrainPhase::Running {
            break;
        }
    }
    let d = c.brain.drain_status("small").unwrap();
    assert_eq!(d.phase, DrainPhase::Done, "{d:?}");
    assert_eq!((d.moved, d.regions_left), (9, 0));
    moved.sort();
    let mut all = grid();
    all.sort();
    assert_eq!(moved, all);
    for _ in 0..40 {
        assert!(c.tick(&[], &["small", "big"]).is_empty(), "nothing goes back to a drained host");
    }
}

#[test]
fn a_drain_with_nowhere_to_go_fails_and_says_why() {
    let mut c = Cluster::new();
    c.tick(&[], &["small"]);
    c.brain.request_drain(c.now, "small").unwrap();
    c.tick(&[], &["small"]);
    match c.brain.drain_status("small").unwrap().phase {
        DrainPhase::Failed(why) => assert!(why.contains("no other host has room"), "{why}"),
        p => panic!("a drain with no room fails, not {p:?}"),
    }
    assert!(c.brain.request_drain(c.now, "nobody").is_err(), "draining an unknown host is refused");
}

#[test]
fn failed_migrations_free_their_slot_and_a_drain_gives_up_after_repeated_failures() {
    let mut c = Cluster::new();
    c.tick(&[], &["small", "big"]);
    c.brain.request_drain(c.now, "small").unwrap();
    for _ in 0..20 {
        for (region, ..) in moves(&c.tick(&[], &["small", "big"])) {
            c.brain.handle_outcome(c.now, region, Outcome::Failed("target refused".into()));
        }
    }
    match c.brain.drain_status("small").unwrap().phase {
        DrainPhase::Failed(why) => assert!(why.contains("failed"), "{why}"),
        p => panic!("a drain whose migrations keep failing fails, not {p:?}"),
    }
}

#[test]
fn a_report_from_a_host_that_no_longer_owns_a_region_does_not_count() {
    let mut c = Cluster::new();
    let club = RegionId::new(1, 1);
    c.tick(&[(club, 150)], &["small", "big"]);
    c.commit(club, "big");
    c.tick(&[(club, 3)], &["small", "big"]);
    // A stale report from the old owner claims a crowd again.
    c.brain.handle_report(
        c.now,
        HostReport {
            host: record("small", 1),
            load_milli: 0,
            regions: vec![load(club, 150, 9.0)],
            shared_store: None,
        },
    );
    let st = c.brain.status(c.now);
    let r = st.regions.iter().find(|r| r.region == club).unwrap();
    assert_eq!((r.host.as_str(), r.load.as_ref().unwrap().avatars), ("big", 3));
}

#[test]
fn every_move_is_logged_when_it_starts_and_when_it_ends() {
    use orchestrator::brain::MovePhase;
    let mut c = Cluster::new();
    let club = RegionId::new(1, 1);
    c.tick(&[(club, 150)], &["small", "big"]);
    c.commit(club, "big");
    let st = c.brain.status(c.now);
    let steps: Vec<MovePhase> =
        st.decisions.iter().filter_map(|d| d.step.as_ref()).map(|s| s.phase).collect();
    assert_eq!(steps, vec![MovePhase::Started, MovePhase::Committed]);
}

#[test]
fn a_host_taken_for_dead_that_comes_back_has_its_stale_copies_fenced() {
    let mut c = Cluster::new();
    for _ in 0..5 {
        let restored: Vec<RegionId> = moves(&c.tick(&[], &["big"])).into_iter().map(|m| m.0).collect();
        for r in restored {
            c.commit(r, "big");
        }
    }
    assert!(c.owner.iter().all(|(_, p)| p.host == "big" && p.epoch == 2));
    // The small host was only paused: it comes back still running its old copies.
    let stale: Vec<RegionReport> = grid().into_iter().map(|r| load(r, 0, 0.3)).collect();
    let mut fenced = Vec::new();
    for _ in 0..6 {
        c.now += 1_000;
        c.brain.handle_hosts(c.now, Cluster::hosts(&["small", "big"]));
        c.brain.handle_placements(c.now, c.owner.clone());
        let still: Vec<RegionReport> =
            stale.iter().filter(|r| !fenced.contains(&r.region)).cloned().collect();
        c.brain.handle_report(
            c.now,
            HostReport { host: record("small", 1), load_milli: 0, regions: still, shared_store: None },
        );
        for a in c.brain.poll_actions(c.now) {
            match a {
                Action::Fence { region, host, api } => {
                    assert_eq!((host.as_str(), api.as_str()), ("small", "http://small-api"));
                    fenced.push(region);
                }
                a => panic!("only fences are due, not {a:?}"),
            }
        }
    }
    fenced.sort();
    let mut all = grid();
    all.sort();
    assert_eq!(fenced, all, "every stale copy is unloaded, once");
    let st = c.brain.status(c.now);
    assert!(st.regions.iter().all(|r| r.host == "big"), "the owners stay as they are");
}

/// Drives a drain of `host` to its end, committing every move; the regions moved.
fn run_drain(c: &mut Cluster, host: &str, to: &str) -> Vec<RegionId> {
    let mut moved = Vec::new();
    for _ in 0..40 {
        for (region, from, dest, reason) in moves(&c.tick(&[], &["small", "big"])) {
            assert_eq!((from.as_str(), dest.as_str(), reason), (host, to, Reason::Drain));
            c.commit(region, to);
            moved.push(region);
        }
        if c.brain.drain_status(host).is_none_or(|d| d.phase != DrainPhase::Running) {
            break;
        }
    }
    moved
}

#[test]
fn an_undrained_host_takes_regions_again() {
    let mut c = Cluster::new();
    c.tick(&[], &["small", "big"]);
    c.brain.request_drain(c.now, "small").unwrap();
    assert_eq!(run_drain(&mut c, "small", "big").len(), 9);
    // Drained: the other host cannot be emptied onto it.
    c.brain.request_drain(c.now, "big").unwrap();
    c.tick(&[], &["small", "big"]);
    assert!(matches!(c.brain.drain_status("big").unwrap().phase, DrainPhase::Failed(_)));
    c.brain.request_undrain(c.now, "big").unwrap();

    let ended = c.brain.request_undrain(c.now, "small").unwrap();
    assert_eq!(ended.map(|d| d.phase), Some(DrainPhase::Done), "the finished drain is reported");
    assert!(c.brain.drain_status("small").is_none());
    let st = c.brain.status(c.now);
    assert!(st.hosts.iter().all(|h| !h.draining), "{:?}", st.hosts);
    assert!(st.decisions.iter().any(|d| d.text.starts_with("undrain of small")), "{:?}", st.decisions);

    c.brain.request_drain(c.now, "big").unwrap();
    assert_eq!(run_drain(&mut c, "big", "small").len(), 9, "every region goes back to the undrained host");
    assert_eq!(c.brain.drain_status("big").unwrap().phase, DrainPhase::Done);
    assert!(c.brain.request_undrain(c.now, "nobody").is_err(), "undraining an unknown host is refused");
}

#[test]
fn an_undrain_stops_a_running_drain() {
    let mut c = Cluster::new();
    c.tick(&[], &["small", "big"]);
    c.brain.request_drain(c.now, "small").unwrap();
    let first = moves(&c.tick(&[], &["small", "big"]));
    assert_eq!(first.len(), 1, "{first:?}");
    let ended = c.brain.request_undrain(c.now, "small").unwrap().expect("a drain was running");
    assert_eq!(ended.phase, DrainPhase::Running);
    // The migration in flight still ends; nothing more leaves for the drain.
    c.commit(first[0].0, "big");
    for _ in 0..10 {
        let more = moves(&c.tick(&[], &["small", "big"]));
        assert!(more.iter().all(|m| m.3 != Reason::Drain), "the drain went on: {more:?}");
    }
}
