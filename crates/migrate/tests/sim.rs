//! The migration protocol in a deterministic simulated network: loss, duplication, delay and
//! reordering, partitions, and crashed peers at any moment, over many seeds.
//!
//! Checked for every seed: at most one host ticks the region at any time and only the
//! directory's owner does; after a commit the target holds exactly the source's frozen state
//! (same hash); replaying every tick that any host ran, in order, from the initial state gives
//! the final live state (nothing lost, nothing applied twice); every client input is applied
//! exactly once. A failing seed is printed; `MIGRATE_SIM_SEED=n` replays just that seed and
//! `MIGRATE_SIM_SEEDS=n` runs more.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::OnceLock;

use migrate::{
    CopyJob, FenceResult, MigrationId, Msg, NoConvergence, Phase, Policy, Source, SourceEvent, Target,
    TargetEvent,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use world::{Compression, Controls, EntityId, Input, ObjectSpec, Region, RegionId, Terrain, Vec3};

const REGION: RegionId = RegionId::new(4, 2);
const TICK_US: u64 = 22_222;
const END_US: u64 = 9_000_000;
const MIGRATION: MigrationId = MigrationId(77);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Source,
    Target,
}

#[derive(Debug)]
struct Scenario {
    loss: f64,
    duplicate: f64,
    max_delay_us: u64,
    bandwidth: f64,
    partition: Option<(u64, u64)>,
    crash: Option<(Node, u64)>,
    policy: Policy,
    directory_delay_us: u64,
    /// With `policy.copies_by_caller`: how long the host takes to hand over a copy.
    snapshot_delay_us: u64,
    /// The source host keeps a log it flushes at the freeze, before releasing the region;
    /// `None`: no log, the release leaves with the final round.
    log_flush_us: Option<u64>,
}

impl Scenario {
    fn random(rng: &mut SmallRng) -> Scenario {
        let loss = [0.0, 0.0, 0.02, 0.1, 0.3][rng.random_range(0..5)];
        let partition = rng.random_bool(0.25).then(|| {
            let start = rng.random_range(0..2_000_000);
            (start, start + rng.random_range(100_000..4_000_000))
        });
        let crash = match rng.random_range(0..6) {
            0 => Some((Node::Target, rng.random_range(100_000..1_500_000))),
            1 => Some((Node::Source, rng.random_range(100_000..1_500_000))),
            _ => None,
        };
        let mut policy = Policy::default();
        match rng.random_range(0..5) {
            // A freeze budget nothing fits: the round and byte limits decide.
            0 => {
                policy.freeze_budget_us = 1;
                policy.max_rounds = rng.random_range(2..10);
                policy.on_no_convergence = if rng.random_bool(0.5) {
                    NoConvergence::Abort
                } else {
                    NoConvergence::FreezeAnyway { cap_us: 10_000_000 }
                };
            }
            1 => policy.assumed_bandwidth = 1e3,
            2 => policy.pre_copy = false,
            _ => {}
        }
        // Half the runs make copies the way hosts do: off the tick, handed over later; some of
        // them every round that will not be the final one.
        policy.copies_by_caller = rng.random_bool(0.5);
        if rng.random_bool(0.5) {
            policy.off_tick_raw_bytes = 0;
        }
        Scenario {
            loss,
            duplicate: if rng.random_bool(0.3) { 0.05 } else { 0.0 },
            max_delay_us: [200, 2_000, 20_000][rng.random_range(0..3)],
            bandwidth: [20e6, 200e6][rng.random_range(0..2)],
            partition,
            crash,
            policy,
            directory_delay_us: rng.random_range(100..5_000),
            snapshot_delay_us: rng.random_range(0..60_000),
            log_flush_us: rng.random_bool(0.5).then(|| rng.random_range(100..1_500_000)),
        }
    }
}

enum Event {
    /// A protocol message (lossy link).
    Packet { to: Node, bytes: Vec<u8> },
    /// A client input (reliable link, e.g. the gateway's TCP connection, or a host forwarding).
    ClientInput { to: Node, input: Input },
    /// The directory applies a compare-and-swap naming `by` as the owner at `to`.
    DirectoryCas { by: Node, from: u64, to: u64 },
    /// The answer to the target's compare-and-swap.
    CasResult { swapped: bool },
    /// The answer to the source's fence.
    FenceAnswer { result: FenceResult },
    /// The source host's log is in its store.
    LogFlushed,
    /// The source host's full copy, made off the tick, is ready.
    CopyReady { bytes: Vec<u8>, generation: u64 },
}

struct Sim {
    rng: SmallRng,
    sc: Scenario,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Event>>,
    // directory
    owner: Node,
    epoch: u64,
    // source host
    source_alive: bool,
    source_region: Option<Region>,
    source_inputs: VecDeque<Input>,
    source: Option<Source>,
    // target host
    target_alive: bool,
    target: Option<Target>,
    target_region: Option<Region>,
    target_inputs: VecDeque<Input>,
    // checks
    next_tick_at: u64,
    initial: Region,
    log: Vec<(u64, Vec<Input>)>,
    sent_inputs: u64,
    frozen_hash: Option<u64>,
    committed: bool,
    aborted: bool,
}

fn initial_region() -> Region {
    static BASE: OnceLock<Region> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut r = Region::with_terrain(REGION, Terrain::generate(9, REGION));
        let mut inputs: Vec<Input> = (0..200)
            .map(|i| Input::CreateObject {
                tag: i,
                spec: ObjectSpec {
                    pos: Vec3::new((i * 7 % 256) as f32, (i * 13 % 256) as f32, 40.0),
                    vel: if i % 5 == 0 { Vec3::new(1.0, -2.0, 0.0) } else { Vec3::ZERO },
                    physical: i % 3 == 0,
                    ..Default::default()
                },
            })
            .collect();
        inputs.extend((0..8).map(|k| Input::AddAvatar {
            id: EntityId(1000 + k),
            name: format!("a{k}"),
            owner: 0,
            pos: None,
        }));
        r.tick(TICK_US, inputs);
        r
    })
    .clone()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = SmallRng::seed_from_u64(seed);
        let sc = Scenario::random(&mut rng);
        let initial = initial_region();
        Sim {
            rng,
            sc,
            now: initial.now_us(),
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            owner: Node::Source,
            epoch: 1,
            source_alive: true,
            source_region: Some(initial.clone()),
            source_inputs: VecDeque::new(),
            source: None,
            target_alive: true,
            target: None,
            target_region: None,
            target_inputs: VecDeque::new(),
            next_tick_at: initial.now_us() + TICK_US,
            initial,
            log: Vec::new(),
            sent_inputs: 0,
            frozen_hash: None,
            committed: false,
            aborted: false,
        }
    }

    fn at(&mut self, t: u64, e: Event) {
        self.seq += 1;
        self.events.push(Some(e));
        self.queue.push(Reverse((t, self.seq, self.events.len() - 1)));
    }

    fn partitioned(&self) -> bool {
        self.sc.partition.is_some_and(|(a, b)| (a..b).contains(&self.now))
    }

    fn send_packet(&mut self, to: Node, msg: &Msg) {
        let bytes = msg.encode();
        if self.partitioned() || self.rng.random_bool(self.sc.loss) {
            return;
        }
        let copies = if self.rng.random_bool(self.sc.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let transfer = (bytes.len() as f64 / self.sc.bandwidth * 1e6) as u64;
            let delay = self.rng.random_range(50..=self.sc.max_delay_us) + transfer;
            self.at(self.now + delay, Event::Packet { to, bytes: bytes.clone() });
        }
    }

    fn client_send(&mut self, to: Node, input: Input) {
        let delay = self.rng.random_range(100..3_000);
        self.at(self.now + delay, Event::ClientInput { to, input });
    }

    /// Runs the host-side glue after anything happened: drain both machines.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            if self.source_alive {
                if let (Some(s), Some(r)) = (&mut self.source, &self.source_region) {
                    s.on_tick_boundary(self.now, r);
                    if s.phase() == Phase::Frozen && self.frozen_hash.is_none() {
                        self.frozen_hash = Some(r.state_hash());
                    }
                    if let Some(job) = s.take_copy() {
                        let (bytes, generation) = match job {
                            CopyJob::Snapshot => (r.snapshot_with(Compression::Lz4), r.generation()),
                            CopyJob::Delta(d) => (d.encode(), d.generation),
                        };
                        let d = self.sc.snapshot_delay_us;
                        self.at(self.now + d, Event::CopyReady { bytes, generation });
                    }
                }
                while let Some(msg) = self.source.as_mut().and_then(Source::poll_transmit) {
                    self.send_packet(Node::Target, &msg);
                    progressed = true;
                }
                while let Some(ev) = self.source.as_mut().and_then(Source::poll_event) {
                    progressed = true;
                    self.source_event(ev);
                }
            }
            if self.target_alive {
                while let Some(msg) = self.target.as_mut().and_then(Target::poll_transmit) {
                    self.send_packet(Node::Source, &msg);
                    progressed = true;
                }
                while let Some(ev) = self.target.as_mut().and_then(Target::poll_event) {
                    progressed = true;
                    self.target_event(ev);
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn source_event(&mut self, ev: SourceEvent) {
        match ev {
            SourceEvent::FlushLog => {
                let d = self.sc.log_flush_us.expect("a flush is asked for only when there is a log");
                self.at(self.now + d, Event::LogFlushed);
            }
            SourceEvent::Fence { from, to, .. } => {
                let d = self.sc.directory_delay_us;
                self.at(self.now + d, Event::DirectoryCas { by: Node::Source, from, to });
            }
            SourceEvent::Committed { buffered, report } => {
                if std::env::var("MIGRATE_SIM_DEBUG").is_ok() {
                    eprintln!("{report:?}");
                }
                self.source_region = None;
                self.source = None;
                let pending: Vec<Input> = buffered.into_iter().chain(self.source_inputs.drain(..)).collect();
                for input in pending {
                    self.client_send(Node::Target, input);
                }
            }
            SourceEvent::Aborted { buffered, .. } => {
                self.aborted = true;
                for input in buffered.into_iter().rev() {
                    self.source_inputs.push_front(input);
                }
                self.source = None;
            }
            SourceEvent::Fenced { .. } => panic!("nothing else moves the epoch in this simulation"),
        }
    }

    fn target_event(&mut self, ev: TargetEvent) {
        match ev {
            TargetEvent::Prepare { .. } => {
                let now = self.now;
                self.target.as_mut().expect("target").prepared(now);
            }
            TargetEvent::Committed { region, epoch } => {
                assert_eq!(self.owner, Node::Target, "the target committed before the directory named it");
                assert_eq!(epoch, self.epoch);
                assert_eq!(Some(region.state_hash()), self.frozen_hash, "handover changed the state");
                self.target_region = Some(*region);
                self.committed = true;
            }
            TargetEvent::Aborted { .. } => {
                self.target = None;
                self.target_inputs.clear();
                assert!(self.target_region.is_none());
            }
            TargetEvent::CasEpoch { from, to, .. } => {
                let d = self.sc.directory_delay_us;
                self.at(self.now + d, Event::DirectoryCas { by: Node::Target, from, to });
            }
        }
    }

    fn deliver(&mut self, e: Event) {
        match e {
            Event::Packet { to, bytes } => {
                let msg = Msg::decode(&bytes).expect("the simulated link does not corrupt");
                match to {
                    Node::Source if self.source_alive => {
                        if let Some(s) = &mut self.source {
                            s.handle_msg(self.now, msg);
                        }
                    }
                    Node::Target if self.target_alive => {
                        if let Msg::Prepare { id, region, epoch } = msg {
                            if self.target.is_none() && self.target_region.is_none() {
                                self.target = Some(Target::new(self.now, id, region, epoch));
                            }
                        }
                        if let Some(t) = &mut self.target {
                            t.handle_msg(self.now, msg);
                        }
                    }
                    _ => {}
                }
            }
            Event::ClientInput { to: Node::Source, input } if self.source_alive => {
                if self.source_region.is_some() {
                    let input = match self.source.as_mut() {
                        Some(s) => match s.buffer_input(input) {
                            Ok(()) => return,
                            Err(input) => input,
                        },
                        None => input,
                    };
                    self.source_inputs.push_back(input);
                } else {
                    // No longer ours: the old owner forwards to the new one.
                    self.client_send(Node::Target, input);
                }
            }
            Event::ClientInput { to: Node::Target, input } if self.target_alive => {
                self.target_inputs.push_back(input);
            }
            Event::ClientInput { .. } => {}
            Event::DirectoryCas { by, from, to } => {
                let swapped = self.epoch == from;
                if swapped {
                    self.epoch = to;
                    self.owner = by;
                }
                let d = self.sc.directory_delay_us;
                let answer = match by {
                    Node::Target => Event::CasResult { swapped },
                    // The host reads the directory after a failed fence.
                    Node::Source => Event::FenceAnswer {
                        result: if swapped {
                            FenceResult::Kept
                        } else if self.owner == Node::Target && self.epoch == from + 1 {
                            FenceResult::TargetOwns
                        } else {
                            FenceResult::Lost
                        },
                    },
                };
                self.at(self.now + d, answer);
            }
            Event::CasResult { swapped } => {
                if self.target_alive {
                    if let Some(t) = &mut self.target {
                        t.handle_cas_result(swapped);
                    }
                }
            }
            Event::FenceAnswer { result } => {
                if self.source_alive {
                    if let Some(s) = &mut self.source {
                        s.handle_fence_result(self.now, result);
                    }
                }
            }
            Event::LogFlushed => {
                if self.source_alive {
                    if let Some(s) = &mut self.source {
                        s.log_flushed(self.now);
                    }
                }
            }
            Event::CopyReady { bytes, generation } => {
                if self.source_alive {
                    if let Some(s) = &mut self.source {
                        s.copy_ready(self.now, bytes, generation);
                    }
                }
            }
        }
    }

    /// The region's owner ticks it; the client sends an input every tick to whoever the
    /// directory names.
    fn tick(&mut self) {
        let n = self.sent_inputs;
        self.sent_inputs += 1;
        let input = if n % 2 == 0 {
            Input::CreateObject {
                tag: n,
                spec: ObjectSpec { name: format!("input {n}"), ..Default::default() },
            }
        } else {
            let forward = (n / 2 % 3) as i8 - 1;
            Input::Controls {
                id: EntityId(1000 + n % 8),
                controls: Controls { forward, turn: 1, ..Default::default() },
            }
        };
        let to = self.owner;
        self.client_send(to, input);

        let source_ticks = self.source_alive
            && self.source_region.is_some()
            && self.source.as_ref().is_none_or(Source::should_tick);
        let target_ticks = self.target_alive && self.target_region.is_some();
        assert!(!(source_ticks && target_ticks), "two hosts tick the region at once");
        if source_ticks {
            assert_eq!(self.owner, Node::Source, "the source ticks a region the directory gave away");
            let inputs: Vec<Input> = self.source_inputs.drain(..).collect();
            self.log.push((self.now, inputs.clone()));
            self.source_region.as_mut().unwrap().tick(self.now, inputs);
        }
        if target_ticks {
            assert_eq!(self.owner, Node::Target);
            let inputs: Vec<Input> = self.target_inputs.drain(..).collect();
            self.log.push((self.now, inputs.clone()));
            self.target_region.as_mut().unwrap().tick(self.now, inputs);
        }
    }

    fn run(&mut self) {
        let policy = self.sc.policy.clone();
        let started = self.now + 100_000;
        let mut migration_started = false;
        while self.now < END_US {
            let mut next = self.next_tick_at;
            if let Some(Reverse((t, _, _))) = self.queue.peek() {
                next = next.min(*t);
            }
            if !migration_started {
                next = next.min(started);
            }
            if let Some((_, t)) = self.sc.crash {
                if t > self.now {
                    next = next.min(t);
                }
            }
            for t in [
                self.source.as_ref().filter(|_| self.source_alive).and_then(Source::poll_timeout),
                self.target.as_ref().filter(|_| self.target_alive).and_then(Target::poll_timeout),
            ]
            .into_iter()
            .flatten()
            {
                next = next.min(t.max(self.now));
            }
            self.now = next;
            if !migration_started && self.now >= started {
                migration_started = true;
                let mut s = Source::start(MIGRATION, REGION, self.epoch, policy.clone(), self.now);
                if self.sc.log_flush_us.is_some() {
                    s.release_after_log_flush();
                }
                self.source = Some(s);
            }
            if let Some((node, t)) = self.sc.crash {
                if t == self.now {
                    match node {
                        Node::Source => self.source_alive = false,
                        Node::Target => self.target_alive = false,
                    }
                }
            }
            while let Some(Reverse((t, _, _))) = self.queue.peek() {
                if *t > self.now {
                    break;
                }
                let Reverse((_, _, i)) = self.queue.pop().unwrap();
                let e = self.events[i].take().unwrap();
                self.deliver(e);
                self.pump();
            }
            if self.source_alive {
                if let Some(s) = &mut self.source {
                    s.handle_timeout(self.now);
                }
            }
            if self.target_alive {
                if let Some(t) = &mut self.target {
                    t.handle_timeout(self.now);
                }
            }
            self.pump();
            if self.now >= self.next_tick_at {
                self.tick();
                self.next_tick_at += TICK_US;
                self.pump();
            }
        }
    }

    fn check(&mut self) {
        // Let in-flight client inputs land, then one more tick by whoever owns the region.
        let live = match self.owner {
            Node::Source if self.source_alive => self.source_region.is_some(),
            Node::Target if self.target_alive => self.target_region.is_some(),
            _ => false,
        };
        let crashed_owner = match self.owner {
            Node::Source => !self.source_alive,
            Node::Target => !self.target_alive,
        };
        if crashed_owner {
            // The owner died: the region waits for failover (orchestrator). The survivor must
            // not have taken it over on its own.
            assert!(!(self.owner == Node::Source && self.target_region.is_some()));
            return;
        }
        assert!(
            live,
            "the owner holds no region at the end (committed {}, aborted {})",
            self.committed, self.aborted
        );
        let final_region = match self.owner {
            Node::Source => self.source_region.as_ref().unwrap(),
            Node::Target => self.target_region.as_ref().unwrap(),
        };
        let mut replay = self.initial.clone();
        for (now, inputs) in &self.log {
            replay.tick(*now, inputs.clone());
        }
        assert_eq!(
            replay.state_hash(),
            final_region.state_hash(),
            "replaying every tick does not give the live state"
        );

        // Exactly once: every creation the client sent and that has landed exists once.
        let mut seen = std::collections::HashMap::new();
        for e in final_region.entities() {
            if let Some(n) = e.name.strip_prefix("input ") {
                *seen.entry(n.parse::<u64>().unwrap()).or_insert(0) += 1;
            }
        }
        assert!(seen.values().all(|&c| c == 1), "an input was applied twice");
        let in_flight =
            self.events.iter().flatten().filter(|e| matches!(e, Event::ClientInput { .. })).count() as u64;
        let queued = (self.source_inputs.len() + self.target_inputs.len()) as u64;
        let buffered = if self.source.is_some() { 1 } else { 0 };
        let created_sent = self.sent_inputs.div_ceil(2);
        assert!(
            seen.len() as u64 + in_flight + queued + buffered * 64 >= created_sent,
            "inputs lost: {} applied of {created_sent} sent ({in_flight} in flight, {queued} queued)",
            seen.len()
        );
    }
}

fn run_seed(seed: u64) -> (bool, bool) {
    let mut sim = Sim::new(seed);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sim.run();
        sim.check();
        (sim.committed, sim.aborted)
    }));
    match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("migration simulation failed for seed {seed} (replay: MIGRATE_SIM_SEED={seed}); scenario: {:?}", sim.sc);
            std::panic::resume_unwind(e)
        }
    }
}

fn seeds(part: u64, parts: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("MIGRATE_SIM_SEED") {
        let s: u64 = s.parse().expect("MIGRATE_SIM_SEED is a number");
        return if s % parts == part { vec![s] } else { vec![] };
    }
    let n: u64 = std::env::var("MIGRATE_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(240);
    (0..n).filter(|s| s % parts == part).collect()
}

fn run_part(part: u64) {
    let (mut committed, mut aborted) = (0, 0);
    for seed in seeds(part, 4) {
        let (c, a) = run_seed(seed);
        committed += c as u32;
        aborted += a as u32;
    }
    eprintln!("part {part}: {committed} committed, {aborted} aborted");
}

// Four tests so the test runner spreads the seeds over the cores.
#[test]
fn migration_invariants_hold_under_faults_seeds_0_mod_4() {
    run_part(0);
}
#[test]
fn migration_invariants_hold_under_faults_seeds_1_mod_4() {
    run_part(1);
}
#[test]
fn migration_invariants_hold_under_faults_seeds_2_mod_4() {
    run_part(2);
}
#[test]
fn migration_invariants_hold_under_faults_seeds_3_mod_4() {
    run_part(3);
}

#[test]
fn on_a_clean_network_a_migration_commits_and_the_freeze_is_one_round() {
    for seed in 0..20 {
        let mut sim = Sim::new(seed);
        sim.sc = Scenario {
            loss: 0.0,
            duplicate: 0.0,
            max_delay_us: 200,
            bandwidth: 200e6,
            partition: None,
            crash: None,
            // Odd seeds make full copies off the tick, as hosts do.
            policy: Policy { copies_by_caller: seed % 2 == 1, ..Policy::default() },
            directory_delay_us: 200,
            snapshot_delay_us: 5_000,
            // Half the hosts keep a log, flushed inside the freeze.
            log_flush_us: (seed % 4 < 2).then_some(300),
        };
        sim.run();
        sim.check();
        assert!(sim.committed && !sim.aborted, "seed {seed}");
    }
}

#[test]
fn a_target_that_dies_during_the_rounds_leaves_the_region_running_on_the_source() {
    let mut sim = Sim::new(1);
    sim.sc.loss = 0.0;
    sim.sc.partition = None;
    sim.sc.policy =
        Policy { freeze_budget_us: 1, max_rounds: 1000, max_bytes_factor: 1e9, ..Policy::default() };
    sim.sc.crash = Some((Node::Target, 400_000));
    sim.run();
    sim.check();
    assert!(
        sim.aborted && !sim.committed,
        "committed {} aborted {} {:?}",
        sim.committed,
        sim.aborted,
        sim.sc
    );
    assert_eq!(sim.owner, Node::Source);
    assert!(sim.source_region.is_some());
}
