//! Properties of `plan` and `drain` over random cluster views: capacity, liveness, the
//! concurrency cap, the cooldown, determinism, and no region moving twice while it settles.
//! Each property runs 256 cases; a failure prints the view that broke it.

use std::collections::BTreeMap;

use placement::{drain, plan, ClusterView, HostLoad, Move, Policy, Reason, RegionLoad};
use proptest::prelude::*;
use world::RegionId;

const CASES: u32 = 256;

fn host() -> impl Strategy<Value = (u32, u32, u32)> {
    // (cores, alive one time in ten not, draining one time in ten)
    (0u32..=4, 0u32..10, 0u32..10)
}

fn region() -> impl Strategy<Value = (usize, u32, u32, bool, Option<u64>)> {
    // (host index, avatars, tick p99 in tenths of a ms, active rate, moved how long ago)
    (
        0usize..8,
        prop_oneof![Just(0u32), 0u32..5, 0u32..200],
        0u32..400,
        any::<bool>(),
        proptest::option::of(0u64..120_000),
    )
}

prop_compose! {
    fn cluster()(
        hosts in prop::collection::vec(host(), 1..6),
        regions in prop::collection::vec(region(), 0..40),
        in_flight in prop::collection::vec((0usize..40, 0usize..8, any::<bool>()), 0..4),
        now_ms in 100_000u64..200_000,
        max_concurrent in 0usize..5,
        cooldown_ms in 1_000u64..60_000,
    ) -> (ClusterView, Policy) {
        let hosts: Vec<HostLoad> = hosts
            .iter()
            .enumerate()
            .map(|(i, &(cores, dead, draining))| HostLoad {
                name: format!("host-{i}"),
                cores,
                alive: dead != 0,
                draining: draining == 0,
            })
            .collect();
        let regions: Vec<RegionLoad> = regions
            .iter()
            .enumerate()
            .map(|(i, &(h, avatars, p99_tenths, active, ago))| RegionLoad {
                region: RegionId::new(i as u16 % 8, i as u16 / 8),
                // Now and then a host that is not in the view at all (forgotten after its lease).
                host: if h < hosts.len() + 1 { format!("host-{}", h.min(hosts.len())) } else { format!("host-{h}") },
                avatars,
                objects: avatars * 3,
                scripts: avatars,
                tick_p99_ms: p99_tenths as f64 / 10.0,
                tick_budget_ms: if active { 1000.0 / 45.0 } else { 200.0 },
                script_ms: 0.0,
                last_moved_ms: ago.map(|a| now_ms.saturating_sub(a)),
            })
            .collect();
        let mut flying: Vec<Move> = Vec::new();
        for &(r, to, failover) in &in_flight {
            if let Some(region) = regions.get(r) {
                if flying.iter().all(|m| m.region != region.region) {
                    flying.push(Move {
                        region: region.region,
                        from: region.host.clone(),
                        to: format!("host-{}", to % hosts.len()),
                        reason: if failover { Reason::Failover } else { Reason::Busy },
                    });
                }
            }
        }
        let policy = Policy { max_concurrent_migrations: max_concurrent, cooldown_ms, ..Policy::default() };
        (ClusterView { now_ms, hosts, regions, in_flight: flying }, policy)
    }
}

/// Each host's booked load once `moves` are done, counted as the planner must: every region on
/// its host, regions in flight on their target as well.
fn load_after(view: &ClusterView, policy: &Policy, moves: &[Move]) -> BTreeMap<String, u64> {
    let after = view.after(moves);
    let mut load = BTreeMap::new();
    for r in &after.regions {
        *load.entry(r.host.clone()).or_insert(0) += policy.cost_milli(r);
    }
    for m in &after.in_flight {
        let r = after.regions.iter().find(|r| r.region == m.region).unwrap();
        if r.host != m.to {
            *load.entry(m.to.clone()).or_insert(0) += policy.cost_milli(r);
        }
    }
    load
}

fn host_of<'a>(view: &'a ClusterView, name: &str) -> &'a HostLoad {
    view.hosts.iter().find(|h| h.name == name).expect("moves only name hosts of the view")
}

fn region_of(view: &ClusterView, id: RegionId) -> &RegionLoad {
    view.regions.iter().find(|r| r.region == id).expect("moves only name regions of the view")
}

fn migrations(moves: &[Move]) -> usize {
    moves.iter().filter(|m| m.reason != Reason::Failover).count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn no_host_that_receives_a_region_ends_past_its_capacity((view, policy) in cluster()) {
        let moves = plan(&view, &policy);
        let load = load_after(&view, &policy, &moves);
        for m in &moves {
            let cap = policy.capacity_milli(host_of(&view, &m.to));
            prop_assert!(load[&m.to] <= cap, "{} holds {} > {} after {:?}", m.to, load[&m.to], cap, moves);
        }
    }

    #[test]
    fn moves_go_only_to_live_accepting_hosts_and_come_from_where_the_region_is((view, policy) in cluster()) {
        for m in plan(&view, &policy) {
            let to = host_of(&view, &m.to);
            prop_assert!(to.alive && !to.draining && to.cores > 0, "{m:?} targets {to:?}");
            prop_assert_eq!(&region_of(&view, m.region).host, &m.from);
            prop_assert_ne!(&m.from, &m.to);
            prop_assert!(view.in_flight.iter().all(|f| f.region != m.region), "{m:?} is already in flight");
        }
    }

    #[test]
    fn migrations_in_flight_and_planned_never_exceed_the_cap((view, policy) in cluster()) {
        let moves = plan(&view, &policy);
        let flying = migrations(&view.in_flight);
        prop_assert!(migrations(&moves) <= policy.max_concurrent_migrations.saturating_sub(flying));
    }

    #[test]
    fn no_region_moves_inside_its_cooldown_unless_its_host_died((view, policy) in cluster()) {
        for m in plan(&view, &policy) {
            let r = region_of(&view, m.region);
            if m.reason == Reason::Failover {
                prop_assert!(view.hosts.iter().all(|h| h.name != m.from || !h.alive), "{m:?} fails over from a live host");
            } else {
                prop_assert!(!policy.in_cooldown(r, view.now_ms), "{m:?} moves {r:?} inside its cooldown");
            }
        }
    }

    #[test]
    fn a_region_moves_at_most_once_per_plan((view, policy) in cluster()) {
        let moves = plan(&view, &policy);
        let mut seen = std::collections::BTreeSet::new();
        for m in &moves {
            prop_assert!(seen.insert(m.region), "{:?} moves twice in {moves:?}", m.region);
        }
    }

    #[test]
    fn the_same_view_in_any_order_or_through_json_gives_the_same_plan((view, policy) in cluster()) {
        let moves = plan(&view, &policy);
        prop_assert_eq!(&moves, &plan(&view, &policy));
        let mut reordered = view.clone();
        reordered.hosts.reverse();
        reordered.regions.reverse();
        reordered.in_flight.reverse();
        prop_assert_eq!(&moves, &plan(&reordered, &policy));
        let json = serde_json::to_string(&view).unwrap();
        let back: ClusterView = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&moves, &plan(&back, &policy));
        let moves_json = serde_json::to_string(&moves).unwrap();
        prop_assert_eq!(moves, serde_json::from_str::<Vec<Move>>(&moves_json).unwrap());
    }

    #[test]
    fn replanning_within_the_cooldown_moves_no_region_a_second_time((view, policy) in cluster(), steps in 1usize..6) {
        let mut view = view;
        view.in_flight.clear();
        let mut moved: BTreeMap<RegionId, u32> = BTreeMap::new();
        // The rounds together span less than one cooldown, as between two reports a second apart.
        let step_ms = policy.cooldown_ms / (steps as u64 + 1);
        for _ in 0..steps {
            let moves = plan(&view, &policy);
            for m in &moves {
                let n = moved.entry(m.region).or_insert(0);
                *n += 1;
                prop_assert!(*n <= 1, "{:?} moved again: {m:?}", m.region);
            }
            view = view.after(&moves);
            view.now_ms += step_ms;
        }
    }

    #[test]
    fn with_loads_unchanged_placement_settles_and_stays_settled((view, policy) in cluster()) {
        // Packing only raises the sum of idle regions² per host and busy moves only lower the sum
        // of free capacity² per host, so with loads unchanged the moves must run out.
        let mut view = view;
        view.in_flight.clear();
        // Past every cooldown of the starting view, so an empty plan means settled, not waiting.
        view.now_ms += policy.cooldown_ms;
        let mut rounds = 0;
        loop {
            let moves = plan(&view, &policy);
            if moves.is_empty() {
                break;
            }
            rounds += 1;
            prop_assert!(rounds <= 200, "still moving after 200 rounds: {moves:?}");
            view = view.after(&moves);
            view.now_ms += policy.cooldown_ms + 1;
        }
        view.now_ms += 10 * policy.cooldown_ms;
        prop_assert!(plan(&view, &policy).is_empty(), "a settled cluster moved again");
    }

    #[test]
    fn a_drain_moves_only_the_drained_hosts_regions_within_capacity((view, policy) in cluster(), which in 0usize..6) {
        let host = format!("host-{}", which % view.hosts.len());
        let moves = drain(&view, &policy, &host);
        let load = load_after(&view, &policy, &moves);
        let alive = host_of(&view, &host).alive;
        for m in &moves {
            prop_assert_eq!(&m.from, &host);
            prop_assert_eq!(m.reason, if alive { Reason::Drain } else { Reason::Failover });
            let to = host_of(&view, &m.to);
            prop_assert!(to.alive && !to.draining && to.cores > 0);
            prop_assert!(load[&m.to] <= policy.capacity_milli(to));
        }
        prop_assert!(migrations(&moves) <= policy.max_concurrent_migrations.saturating_sub(migrations(&view.in_flight)));
    }
}
