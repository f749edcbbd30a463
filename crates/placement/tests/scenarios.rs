//! Scenarios in the spirit of issue 6's benchmark, stepped second by second with migrations that
//! take a few seconds to commit: a club in a small world, a dead host, a drain, the hysteresis gap.
//! They check the policy's decisions, not the processes that would carry them out.

use std::collections::BTreeMap;

use placement::{drain, plan, ClusterView, HostLoad, Move, Policy, PolicyError, Reason, RegionLoad};
use world::RegionId;

const ACTIVE_BUDGET_MS: f64 = 1000.0 / 45.0;
const IDLE_BUDGET_MS: f64 = 200.0;
/// How long a planned move takes to commit in these simulations.
const MIGRATION_MS: u64 = 3_000;

fn host(name: &str, cores: u32) -> HostLoad {
    HostLoad { name: name.into(), cores, alive: true, draining: false }
}

/// A region with `avatars` people in it; its tick grows with the crowd, as on a real host.
fn region(x: u16, y: u16, host: &str, avatars: u32) -> RegionLoad {
    let mut r = RegionLoad {
        region: RegionId::new(x, y),
        host: host.into(),
        avatars: 0,
        objects: 200,
        scripts: 20,
        tick_p99_ms: 0.0,
        tick_budget_ms: 0.0,
        script_ms: 0.3,
        last_moved_ms: None,
    };
    set_avatars(&mut r, avatars);
    r
}

fn set_avatars(r: &mut RegionLoad, avatars: u32) {
    r.avatars = avatars;
    // 45 Hz with anyone in it, 5 Hz without; about 0.09 ms of tick per avatar.
    r.tick_budget_ms = if avatars > 0 { ACTIVE_BUDGET_MS } else { IDLE_BUDGET_MS };
    r.tick_p99_ms = 1.0 + 0.09 * avatars as f64;
}

/// The 3×3 default world, every region on `on`.
fn world_on(on: &str) -> Vec<RegionLoad> {
    (0..3).flat_map(|y| (0..3).map(move |x| region(x, y, on, 0))).collect()
}

/// A cluster stepped once a second: migrations commit `MIGRATION_MS` after they are planned.
struct Sim {
    view: ClusterView,
    policy: Policy,
    pending: Vec<(u64, Move)>,
    committed: Vec<(u64, Move)>,
}

impl Sim {
    fn new(hosts: Vec<HostLoad>, regions: Vec<RegionLoad>) -> Sim {
        let view = ClusterView { now_ms: 0, hosts, regions, in_flight: Vec::new() };
        Sim { view, policy: Policy::default(), pending: Vec::new(), committed: Vec::new() }
    }

    fn region_mut(&mut self, x: u16, y: u16) -> &mut RegionLoad {
        self.view.regions.iter_mut().find(|r| r.region == RegionId::new(x, y)).unwrap()
    }

    /// One second: commit what is due, plan against the view with the rest in flight.
    fn step(&mut self) {
        self.view.now_ms += 1000;
        let now = self.view.now_ms;
        let (due, rest): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(at, _)| *at <= now);
        self.pending = rest;
        let done: Vec<Move> = due.iter().map(|(_, m)| m.clone()).collect();
        self.view = self.view.after(&done);
        self.committed.extend(due.into_iter().map(|(_, m)| (now, m)));
        self.view.in_flight = self.pending.iter().map(|(_, m)| m.clone()).collect();
        for m in plan(&self.view, &self.policy) {
            self.pending.push((now + MIGRATION_MS, m));
        }
    }

    fn moves_of(&self, x: u16, y: u16) -> Vec<(u64, &Move)> {
        self.committed.iter().filter(|(_, m)| m.region == RegionId::new(x, y)).map(|(t, m)| (*t, m)).collect()
    }
}

#[test]
fn a_club_moves_to_the_big_host_and_is_packed_back_after_the_crowd_leaves() {
    let mut sim = Sim::new(vec![host("small", 1), host("big", 2)], world_on("small"));
    let (arrive_ms, leave_ms) = (20_000, 90_000);
    while sim.view.now_ms < 240_000 {
        let t = sim.view.now_ms;
        // 150 people walk in over five seconds and leave over five seconds.
        let crowd = if t < arrive_ms {
            0
        } else if t < leave_ms {
            ((t - arrive_ms) / 1000 * 30).min(150) as u32
        } else {
            150u32.saturating_sub(((t - leave_ms) / 1000 * 30) as u32)
        };
        set_avatars(sim.region_mut(1, 1), crowd);
        sim.step();
        if t < arrive_ms {
            assert!(sim.committed.is_empty() && sim.pending.is_empty(), "a packed idle world stays put");
        }
    }
    let club = sim.moves_of(1, 1);
    assert_eq!(club.len(), 2, "the club moves out and back: {club:?}");
    let (out_ms, out) = club[0];
    assert_eq!((out.from.as_str(), out.to.as_str(), out.reason), ("small", "big", Reason::Busy));
    assert!(
        out_ms <= arrive_ms + 10_000,
        "moved to the big host {} ms after the crowd arrived",
        out_ms - arrive_ms
    );
    let (back_ms, back) = club[1];
    assert_eq!((back.from.as_str(), back.to.as_str(), back.reason), ("big", "small", Reason::Pack));
    assert!(back_ms <= leave_ms + 60_000, "packed back {} ms after the crowd left", back_ms - leave_ms);
    assert!(back_ms > leave_ms, "not packed back while the crowd was still there");
    assert_eq!(sim.committed.len(), 2, "no other region moved: {:?}", sim.committed);
    assert!(sim.view.regions.iter().all(|r| r.host == "small"), "the idle world ends packed on one host");
}

#[test]
fn a_crowd_that_comes_and_goes_faster_than_the_cooldown_moves_its_region_once_per_cooldown_at_most() {
    let mut sim = Sim::new(vec![host("small", 1), host("big", 2)], world_on("small"));
    // The crowd comes and goes every 20 s for four minutes: the cooldown keeps the region from
    // following every swing.
    while sim.view.now_ms < 240_000 {
        let crowded = (sim.view.now_ms / 20_000) % 2 == 1;
        set_avatars(sim.region_mut(1, 1), if crowded { 150 } else { 0 });
        sim.step();
    }
    let club = sim.moves_of(1, 1);
    for pair in club.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= sim.policy.cooldown_ms, "moved again inside the cooldown: {club:?}");
    }
    let mut per_region: BTreeMap<RegionId, usize> = BTreeMap::new();
    for (_, m) in &sim.committed {
        *per_region.entry(m.region).or_default() += 1;
    }
    assert!(per_region.keys().all(|r| *r == RegionId::new(1, 1)), "only the club moves: {per_region:?}");
    assert!(club.len() <= 240_000 / sim.policy.cooldown_ms as usize);
}

#[test]
fn regions_of_a_dead_host_fail_over_to_live_hosts_even_inside_their_cooldown() {
    let mut regions = world_on("a");
    regions[4] = region(1, 1, "a", 150);
    for r in &mut regions {
        r.last_moved_ms = Some(99_000);
    }
    let mut hosts = vec![host("a", 2), host("b", 2), host("c", 1)];
    hosts[0].alive = false;
    let view = ClusterView { now_ms: 100_000, hosts, regions, in_flight: Vec::new() };
    let policy = Policy { max_concurrent_migrations: 1, ..Policy::default() };
    let moves = plan(&view, &policy);
    assert_eq!(moves.len(), 9, "every region restarts, however many migrations are allowed: {moves:?}");
    assert!(moves.iter().all(|m| m.reason == Reason::Failover && m.from == "a" && m.to != "a"));
    // Idle regions are kept together; the crowded one gets room.
    let to = |x, y| moves.iter().find(|m| m.region == RegionId::new(x, y)).unwrap().to.clone();
    let idle_hosts: std::collections::BTreeSet<String> =
        moves.iter().filter(|m| m.region != RegionId::new(1, 1)).map(|m| m.to.clone()).collect();
    assert_eq!(idle_hosts.len(), 1, "idle regions fail over onto one host: {moves:?}");
    assert_eq!(to(1, 1), "b", "the busy region goes to the roomiest host");
}

#[test]
fn a_drain_empties_a_host_over_rounds_never_more_than_the_cap_at_once() {
    let mut regions = world_on("old");
    regions[0] = region(0, 0, "old", 120);
    for r in &mut regions {
        r.last_moved_ms = Some(9_000); // inside the cooldown: a drain does not wait for it
    }
    let hosts = vec![host("old", 2), host("new", 2), host("spare", 1)];
    let mut view = ClusterView { now_ms: 10_000, hosts, regions, in_flight: Vec::new() };
    view.hosts[0].draining = true;
    let policy = Policy::default();
    assert!(plan(&view, &policy).is_empty(), "the policy alone moves nothing here");
    for _ in 0..20 {
        let moves = drain(&view, &policy, "old");
        assert!(moves.len() <= policy.max_concurrent_migrations);
        assert!(moves.iter().all(|m| m.reason == Reason::Drain && m.to != "old"));
        view = view.after(&moves);
        view.now_ms += 1000;
    }
    assert!(view.regions.iter().all(|r| r.host != "old"), "the drained host ends empty");
    assert!(plan(&view, &policy).iter().all(|m| m.to != "old"), "nothing moves back to a draining host");
}

#[test]
fn a_drain_leaves_what_fits_nowhere_and_never_overloads_the_rest() {
    let mut regions: Vec<RegionLoad> = (0..4).map(|x| region(x, 0, "old", 200)).collect();
    regions.push(region(4, 0, "old", 0));
    let view = ClusterView {
        now_ms: 0,
        hosts: vec![host("old", 4), host("tiny", 1)],
        regions,
        in_flight: Vec::new(),
    };
    let policy = Policy { max_concurrent_migrations: 10, ..Policy::default() };
    let moves = drain(&view, &policy, "old");
    // Each crowded region costs a whole core; the tiny host has 0.8 of one.
    assert_eq!(moves.iter().map(|m| m.region).collect::<Vec<_>>(), vec![RegionId::new(4, 0)]);
}

#[test]
fn a_region_in_the_hysteresis_gap_stays_where_it_is() {
    // 30 people: not a crowd (60), not idle (2): neither moved out nor packed.
    let mut regions = world_on("small");
    regions[4] = region(1, 1, "big", 30);
    let view = ClusterView {
        now_ms: 0,
        hosts: vec![host("small", 1), host("big", 2)],
        regions,
        in_flight: Vec::new(),
    };
    assert!(plan(&view, &Policy::default()).is_empty());
}

#[test]
fn a_crowded_region_alone_on_the_biggest_host_stays_put() {
    let regions = vec![region(0, 0, "big", 150), region(1, 0, "small", 0)];
    let view = ClusterView {
        now_ms: 0,
        hosts: vec![host("small", 1), host("big", 2)],
        regions,
        in_flight: Vec::new(),
    };
    assert!(plan(&view, &Policy::default()).is_empty(), "moving to a smaller host would not help");
}

#[test]
fn packing_stops_at_the_idle_regions_allowed_per_core() {
    // 14 idle regions on one 1-core host, 4 on another: the fuller host is filled to its 16 and
    // the other keeps the rest.
    let mut regions: Vec<RegionLoad> = (0..14).map(|i| region(i % 8, i / 8, "fuller", 0)).collect();
    regions.extend((0..4).map(|i| region(i, 5, "fewer", 0)));
    let view = ClusterView {
        now_ms: 0,
        hosts: vec![host("fuller", 1), host("fewer", 1)],
        regions,
        in_flight: Vec::new(),
    };
    let policy = Policy { max_concurrent_migrations: 100, ..Policy::default() };
    let moves = plan(&view, &policy);
    assert_eq!(moves.len(), 2, "{moves:?}");
    assert!(moves.iter().all(|m| m.reason == Reason::Pack && m.from == "fewer" && m.to == "fuller"));
    assert!(
        plan(&view.after(&moves), &Policy { cooldown_ms: 0, ..policy }).is_empty(),
        "a full host takes no more"
    );
}

#[test]
fn migrations_in_flight_use_up_the_cap_and_reserve_room_on_their_target() {
    let regions = vec![region(0, 0, "a", 150), region(1, 0, "a", 150), region(2, 0, "a", 0)];
    let hosts = vec![host("a", 1), host("b", 1), host("c", 1)];
    let flying = Move { region: RegionId::new(0, 0), from: "a".into(), to: "b".into(), reason: Reason::Busy };
    let view = ClusterView { now_ms: 0, hosts, regions, in_flight: vec![flying] };
    let policy = Policy { max_concurrent_migrations: 2, ..Policy::default() };
    let moves = plan(&view, &policy);
    assert_eq!(moves.len(), 1, "one slot left: {moves:?}");
    assert_eq!(
        (moves[0].region, moves[0].to.as_str()),
        (RegionId::new(1, 0), "c"),
        "b is taken by the move in flight"
    );
    let policy = Policy { max_concurrent_migrations: 1, ..Policy::default() };
    assert!(plan(&view, &policy).is_empty(), "the one allowed migration is in flight");
}

#[test]
fn the_default_policy_is_consistent_and_contradictions_are_refused() {
    assert_eq!(Policy::default().check(), Ok(()));
    let inverted = Policy { idle_avatars: 80, ..Policy::default() };
    assert!(matches!(inverted.check(), Err(PolicyError::AvatarHysteresis { .. })));
    let nan = Policy { overrun_ratio: f64::NAN, ..Policy::default() };
    assert!(matches!(nan.check(), Err(PolicyError::RatioHysteresis { .. })));
    assert!(matches!(
        Policy { host_headroom_percent: 0, ..Policy::default() }.check(),
        Err(PolicyError::Headroom(0))
    ));
    let json = serde_json::to_string(&Policy::default()).unwrap();
    assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), Policy::default());
    assert_eq!(
        serde_json::from_str::<Policy>("{\"cooldown_ms\": 5}").unwrap().cooldown_ms,
        5,
        "missing fields take defaults"
    );
}
