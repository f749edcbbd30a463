//! `plan` and `drain`: the cluster view goes into a ledger of each host's load, moves are chosen
//! against it one by one (failovers, then busy regions, then packing), and each move books its
//! cost on the target at once, so later choices see it and no host is planned past capacity.

use std::collections::{BTreeMap, BTreeSet};

use world::RegionId;

use crate::{Class, ClusterView, HostLoad, Move, Policy, Reason, RegionLoad};

/// What is booked on one host: the regions on it plus those in flight or planned to it.
struct Book<'a> {
    host: &'a HostLoad,
    capacity: u64,
    load: u64,
    idle: u32,
    idle_limit: u32,
}

impl Book<'_> {
    /// Live, not being drained, and with cores: the only hosts anything moves to.
    fn accepts(&self) -> bool {
        self.host.alive && !self.host.draining && self.host.cores > 0
    }

    /// Capacity not yet booked; negative when reports grew past it.
    fn free(&self) -> i64 {
        self.capacity as i64 - self.load as i64
    }

    fn fits(&self, cost: u64) -> bool {
        self.load + cost <= self.capacity
    }

    /// Packing order: more idle regions first, then name; a total order, so idle regions only
    /// ever flow one way and packing cannot cycle.
    fn pack_rank(&self) -> (u32, std::cmp::Reverse<&str>) {
        (self.idle, std::cmp::Reverse(self.host.name.as_str()))
    }
}

struct Ledger<'a> {
    policy: &'a Policy,
    now_ms: u64,
    books: BTreeMap<&'a str, Book<'a>>,
    /// Regions in id order; ids are unique (the directory gives each region one owner).
    regions: BTreeMap<RegionId, &'a RegionLoad>,
    /// In flight or already moved in this plan: a region moves at most once per plan.
    settled: BTreeSet<RegionId>,
    migrations_left: usize,
    moves: Vec<Move>,
}

impl<'a> Ledger<'a> {
    fn new(view: &'a ClusterView, policy: &'a Policy) -> Ledger<'a> {
        let mut hosts: Vec<&HostLoad> = view.hosts.iter().collect();
        // Sorted so a duplicated name resolves the same way whatever the input order.
        hosts.sort_by(|a, b| {
            (&a.name, a.cores, a.alive, a.draining).cmp(&(&b.name, b.cores, b.alive, b.draining))
        });
        let mut books = BTreeMap::new();
        for h in hosts {
            books.entry(h.name.as_str()).or_insert(Book {
                host: h,
                capacity: policy.capacity_milli(h),
                load: 0,
                idle: 0,
                idle_limit: policy.idle_limit(h),
            });
        }
        let regions: BTreeMap<RegionId, &RegionLoad> = view.regions.iter().map(|r| (r.region, r)).collect();
        let mut ledger = Ledger {
            policy,
            now_ms: view.now_ms,
            books,
            regions,
            settled: BTreeSet::new(),
            migrations_left: 0,
            moves: Vec::new(),
        };
        for r in ledger.regions.values().copied().collect::<Vec<_>>() {
            ledger.book(&r.host, r, true);
        }
        let mut migrations_in_flight = 0;
        for m in &view.in_flight {
            ledger.settled.insert(m.region);
            if m.reason != Reason::Failover {
                migrations_in_flight += 1;
            }
            // Reserve the cost on the target too: until commit, the region may end up on either.
            if let Some(r) = ledger.regions.get(&m.region).copied() {
                if r.host != m.to {
                    ledger.book(&m.to, r, true);
                }
            }
        }
        ledger.migrations_left = policy.max_concurrent_migrations.saturating_sub(migrations_in_flight);
        ledger
    }

    /// Adds (or takes away) a region's cost and idle slot on a host; unknown hosts hold nothing.
    fn book(&mut self, host: &str, r: &RegionLoad, add: bool) {
        let cost = self.policy.cost_milli(r);
        let idle = u32::from(self.policy.class(r) == Class::Idle);
        if let Some(b) = self.books.get_mut(host) {
            if add {
                b.load += cost;
                b.idle += idle;
            } else {
                b.load = b.load.saturating_sub(cost);
                b.idle = b.idle.saturating_sub(idle);
            }
        }
    }

    fn host_alive(&self, name: &str) -> bool {
        self.books.get(name).is_some_and(|b| b.host.alive)
    }

    fn take(&mut self, r: &RegionLoad, to: &str, reason: Reason) {
        debug_assert!(!self.settled.contains(&r.region));
        self.book(&r.host, r, false);
        self.book(to, r, true);
        self.settled.insert(r.region);
        if reason != Reason::Failover {
            self.migrations_left -= 1;
        }
        self.moves.push(Move { region: r.region, from: r.host.clone(), to: to.to_owned(), reason });
    }

    /// The accepting host (not `except`) with the most room left after taking `cost`; ties go
    /// to more cores, then the first name.
    fn roomiest(&self, except: &str, cost: u64, helps: impl Fn(&Book) -> bool) -> Option<&'a str> {
        let mut best: Option<(&'a str, (u64, u32))> = None;
        for (&name, b) in &self.books {
            if name == except || !b.accepts() || !b.fits(cost) || !helps(b) {
                continue;
            }
            let key = (b.capacity - b.load - cost, b.host.cores);
            if best.is_none_or(|(_, k)| key > k) {
                best = Some((name, key));
            }
        }
        best.map(|(name, _)| name)
    }

    /// The accepting host (not `except`) that already holds the most idle regions and still has
    /// an idle slot and room; with `above`, only hosts ranked above that one.
    fn pack_target(&self, except: &str, cost: u64, above: Option<&Book>) -> Option<&'a str> {
        let floor = above.map(|d| d.pack_rank());
        self.books
            .iter()
            .filter(|(&name, b)| name != except && b.accepts() && b.fits(cost) && b.idle < b.idle_limit)
            .filter(|(_, b)| floor.is_none_or(|f| b.pack_rank() > f))
            .max_by_key(|(_, b)| b.pack_rank())
            .map(|(&name, _)| name)
    }

    /// Where a region goes when it must leave `except`: idle ones are packed, others get room.
    fn refuge(&self, r: &RegionLoad, except: &str) -> Option<&'a str> {
        let cost = self.policy.cost_milli(r);
        let packed = match self.policy.class(r) {
            Class::Idle => self.pack_target(except, cost, None),
            _ => None,
        };
        packed.or_else(|| self.roomiest(except, cost, |_| true))
    }

    /// Regions of dead (or unknown) hosts restart on live ones, cooldown or not.
    fn failover(&mut self) {
        let orphans: Vec<&'a RegionLoad> = self
            .regions
            .values()
            .copied()
            .filter(|r| !self.settled.contains(&r.region) && !self.host_alive(&r.host))
            .collect();
        for r in orphans {
            if let Some(to) = self.refuge(r, &r.host) {
                self.take(r, to, Reason::Failover);
            }
        }
    }

    /// Can this region be moved by the policy now (not by a drain or failover)?
    fn movable(&self, r: &RegionLoad) -> bool {
        !self.settled.contains(&r.region)
            && !self.policy.in_cooldown(r, self.now_ms)
            && self.host_alive(&r.host)
    }

    /// Busy regions, most expensive first, to the roomiest host, if it leaves them clearly more
    /// room than they have where they are.
    fn relieve(&mut self) {
        let mut busy: Vec<&'a RegionLoad> = self
            .regions
            .values()
            .copied()
            .filter(|r| self.policy.class(r) == Class::Busy && self.movable(r))
            .collect();
        busy.sort_by_key(|r| (std::cmp::Reverse(self.policy.cost_milli(r)), r.region));
        for r in busy {
            if self.migrations_left == 0 {
                return;
            }
            let cost = self.policy.cost_milli(r);
            let source_free = self.books[r.host.as_str()].free();
            let gain = self.policy.min_gain_milli as i64;
            // The region must end up with clearly more free capacity around it than it has now.
            // With a gain above zero each such move lowers the sum over hosts of free², so busy
            // moves never cycle and the move back can never qualify.
            let helps = |t: &Book| t.free() - cost as i64 >= source_free + gain;
            if let Some(to) = self.roomiest(&r.host, cost, helps) {
                self.take(r, to, Reason::Busy);
            }
        }
    }

    /// Idle regions flow from hosts holding few idle regions to hosts holding many, so they
    /// end up on the fewest hosts; the emptiest holdings are emptied first.
    fn pack(&mut self) {
        let mut donors: Vec<&'a str> =
            self.books.iter().filter(|(_, b)| b.host.alive).map(|(&n, _)| n).collect();
        donors.sort_by_key(|n| self.books[n].pack_rank());
        for donor in donors {
            let idle: Vec<&'a RegionLoad> = self
                .regions
                .values()
                .copied()
                .filter(|r| r.host == donor && self.policy.class(r) == Class::Idle && self.movable(r))
                .collect();
            for r in idle {
                if self.migrations_left == 0 {
                    return;
                }
                let cost = self.policy.cost_milli(r);
                if let Some(to) = self.pack_target(donor, cost, Some(&self.books[donor])) {
                    self.take(r, to, Reason::Pack);
                }
            }
        }
    }

    /// Invariant: every host that receives a region accepts regions and ends within its capacity
    /// (checked here too, not only in tests: a broken plan must never reach the orchestrator).
    fn finish(self) -> Vec<Move> {
        for m in &self.moves {
            let b = &self.books[m.to.as_str()];
            assert!(
                b.load <= b.capacity,
                "placement planned {} past capacity: {} > {}",
                m.to,
                b.load,
                b.capacity
            );
            assert!(b.accepts(), "placement planned a move to {}, which does not accept regions", m.to);
        }
        self.moves
    }
}

/// The moves the policy wants now: regions of dead hosts fail over to live ones; busy regions
/// (tick p99 over `overrun_ratio` of the budget, or `busy_avatars`) go to the host with the most
/// room if that leaves them `min_gain_milli` more free capacity than where they are; idle
/// regions are packed onto the fewest hosts. Migrations respect the cooldown and, with those in flight, the concurrency
/// cap; no host is planned past `cores × host_headroom_percent`. Same view, same moves.
pub fn plan(view: &ClusterView, policy: &Policy) -> Vec<Move> {
    let mut ledger = Ledger::new(view, policy);
    ledger.failover();
    ledger.relieve();
    ledger.pack();
    ledger.finish()
}

/// Moves to empty `host`, biggest regions first, ignoring the cooldown but within capacity and
/// the concurrency cap: the orchestrator calls it each round until the host is empty. Regions
/// that fit nowhere are left; an empty answer with nothing in flight and regions still on the
/// host means the cluster has no room for them. A dead host's regions get `Failover` moves.
pub fn drain(view: &ClusterView, policy: &Policy, host: &str) -> Vec<Move> {
    let mut ledger = Ledger::new(view, policy);
    let reason = if ledger.host_alive(host) { Reason::Drain } else { Reason::Failover };
    let mut leaving: Vec<&RegionLoad> = ledger
        .regions
        .values()
        .copied()
        .filter(|r| r.host == host && !ledger.settled.contains(&r.region))
        .collect();
    leaving.sort_by_key(|r| (std::cmp::Reverse(policy.cost_milli(r)), r.region));
    for r in leaving {
        if reason == Reason::Drain && ledger.migrations_left == 0 {
            break;
        }
        if let Some(to) = ledger.refuge(r, host) {
            ledger.take(r, to, reason);
        }
    }
    ledger.finish()
}
