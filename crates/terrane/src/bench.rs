//! `terrane bench …`: measurements of the region core, printed as text or one JSON object.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use world::limits::{ACTIVE_TICK_HZ, REGION_SIZE};
use world::{Controls, EntityId, Input, ObjectEdit, ObjectSpec, Region, RegionId, Shape, Vec3};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Tick one busy region as fast as possible and report the cost of a tick.
    Tick(TickArgs),
    /// Encode and decode snapshots of one region and measure the deltas of a churning one.
    Snapshot(SnapshotArgs),
    /// Move a busy region back and forth between two host processes: pre-copy live migration
    /// against stop-and-copy against restart, in one run.
    Migrate(crate::bench_migrate::MigrateBenchArgs),
    /// Run trivial script events on 1 thread and on --threads threads: throughput, latency,
    /// instantiation and snapshot cost, and the speed-up.
    Scripts(ScriptsArgs),
    /// What durability costs: durable changes per second with group commit, checkpoint and
    /// recovery times, and a busy region's tick p99 with frequent checkpoints against none.
    Store(crate::bench_store::StoreBenchArgs),
    /// The orchestrator on its own: a crowd gathers in one region of a small host and leaves;
    /// when it was seen busy, moved to the big host, and packed back.
    Placement(crate::bench_placement::PlacementBenchArgs),
}

#[derive(Args)]
pub struct ScriptsArgs {
    /// Script instances (each with its own 64 KiB memory).
    #[arg(long, default_value_t = 10_000)]
    scripts: usize,
    /// Threads of the parallel run (compared with one thread).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Events each script runs in the timed batches (enough to hide the start-up of each batch).
    #[arg(long, default_value_t = 512)]
    events: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TickArgs {
    /// Avatars walking, running, turning and jumping.
    #[arg(long, default_value_t = 200)]
    avatars: usize,
    /// Objects; one in ten glides and one in ten is thrown now and then.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Ticks to measure (after a one-second warm-up).
    #[arg(long, default_value_t = 900)]
    ticks: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SnapshotArgs {
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Percentage of objects changed each tick, for the delta size.
    #[arg(long, default_value_t = 1.0)]
    churn: f64,
    /// Repetitions of each encode and decode.
    #[arg(long, default_value_t = 20)]
    repeat: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

pub fn bench(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Tick(a) => emit(&tick(&a)?, a.json),
        BenchCommand::Snapshot(a) => emit(&snapshot(&a)?, a.json),
        BenchCommand::Migrate(a) => crate::bench_migrate::bench(a),
        BenchCommand::Scripts(a) => emit(&scripts(&a)?, a.json),
        BenchCommand::Store(a) => crate::bench_store::bench(a),
        BenchCommand::Placement(a) => crate::bench_placement::bench(a),
    }
}

pub fn emit<T: Serialize>(report: &T, json: bool) -> anyhow::Result<()> {
    let value = serde_json::to_value(report)?;
    if json {
        println!("{value}");
    } else if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            println!("{k:>24}  {v}");
        }
    }
    Ok(())
}

const BENCH_REGION: RegionId = RegionId::new(0, 0);
const TICK_US: u64 = 1_000_000 / ACTIVE_TICK_HZ as u64;

pub(crate) fn populated(objects: usize, moving: bool, rng: &mut SmallRng) -> anyhow::Result<Region> {
    let mut region = Region::new(BENCH_REGION, 1);
    let shapes = [Shape::Box, Shape::Sphere, Shape::Cylinder, Shape::Cone, Shape::Torus];
    let mut left = objects;
    let mut tag = 0;
    while left > 0 {
        let n = left.min(world::limits::MAX_INPUTS_PER_TICK);
        let inputs: Vec<Input> = (0..n)
            .map(|_| {
                tag += 1;
                let mut spec = ObjectSpec {
                    name: format!("Object {tag}"),
                    shape: shapes[tag % shapes.len()],
                    pos: Vec3::new(
                        rng.random_range(0.0..REGION_SIZE),
                        rng.random_range(0.0..REGION_SIZE),
                        0.0,
                    ),
                    scale: Vec3::splat(rng.random_range(0.3..3.0)),
                    ..Default::default()
                };
                match tag % 10 {
                    _ if !moving => {}
                    0 => {
                        spec.pos.z = 50.0;
                        spec.vel = Vec3::new(rng.random_range(-4.0..4.0), rng.random_range(-4.0..4.0), 0.0);
                    }
                    1 => spec.physical = true,
                    _ => {}
                }
                Input::CreateObject { tag: tag as u64, spec }
            })
            .collect();
        let now = region.now_us() + TICK_US;
        let out = region.tick(now, inputs);
        anyhow::ensure!(out.rejected.is_empty(), "setting up the region failed: {:?}", out.rejected[0]);
        left -= n;
    }
    Ok(region)
}

#[derive(Serialize)]
struct TickReport {
    avatars: usize,
    objects: usize,
    ticks: usize,
    tick_p50_ms: f64,
    tick_p99_ms: f64,
    tick_max_ms: f64,
    tick_mean_ms: f64,
    ticks_per_s: f64,
    budget_ms: f64,
    overruns: usize,
    changes_per_tick: f64,
}

fn tick(a: &TickArgs) -> anyhow::Result<TickReport> {
    let mut rng = SmallRng::seed_from_u64(a.seed);
    let mut region = populated(a.objects, true, &mut rng)?;
    let avatars: Vec<EntityId> = (0..a.avatars).map(|k| EntityId(1 << 63 | k as u64)).collect();
    let joins: Vec<Input> = avatars
        .iter()
        .map(|&id| Input::AddAvatar {
            id,
            name: format!("Bot {}", id.0 & 0xffff),
            owner: 0,
            pos: Some(Vec3::new(rng.random_range(10.0..246.0), rng.random_range(10.0..246.0), 0.0)),
        })
        .collect();
    region.tick(region.now_us() + TICK_US, joins);
    let balls: Vec<EntityId> =
        region.entities().filter(|e| e.name.ends_with('1') && !e.is_avatar()).map(|e| e.id).collect();

    let warmup = ACTIVE_TICK_HZ as usize;
    let mut costs = Vec::with_capacity(a.ticks);
    let mut changes = 0usize;
    for t in 0..warmup + a.ticks {
        // People change their minds every second or two; a ball is thrown every tick.
        let mut inputs = Vec::new();
        for &id in &avatars {
            if rng.random_bool(1.0 / 60.0) {
                let controls = Controls {
                    forward: 1,
                    turn: rng.random_range(-1..=1),
                    run: rng.random_bool(0.3),
                    jump: rng.random_bool(0.1),
                    ..Default::default()
                };
                inputs.push(Input::Controls { id, controls });
            }
        }
        if !balls.is_empty() {
            let id = balls[rng.random_range(0..balls.len())];
            let vel = Vec3::new(rng.random_range(-5.0..5.0), rng.random_range(-5.0..5.0), 6.0);
            inputs.push(Input::EditObject { id, edit: ObjectEdit { vel: Some(vel), ..Default::default() } });
        }
        let now = region.now_us() + TICK_US;
        let started = Instant::now();
        let out = region.tick(now, inputs);
        let cost = started.elapsed();
        if t >= warmup {
            costs.push(cost);
            changes += out.changes.len();
        }
    }
    let budget = Duration::from_micros(TICK_US);
    let total: Duration = costs.iter().sum();
    let (p50, p99, max) = quantiles(&mut costs);
    Ok(TickReport {
        avatars: a.avatars,
        objects: a.objects,
        ticks: a.ticks,
        tick_p50_ms: ms(p50),
        tick_p99_ms: ms(p99),
        tick_max_ms: ms(max),
        tick_mean_ms: ms(total) / a.ticks.max(1) as f64,
        ticks_per_s: a.ticks as f64 / total.as_secs_f64().max(1e-9),
        budget_ms: ms(budget),
        overruns: costs.iter().filter(|c| **c > budget).count(),
        changes_per_tick: changes as f64 / a.ticks.max(1) as f64,
    })
}

#[derive(Serialize)]
struct SnapshotReport {
    objects: usize,
    churn_pct: f64,
    canonical_bytes: usize,
    snapshot_bytes: usize,
    encode_mb_per_s: f64,
    decode_mb_per_s: f64,
    hash_mb_per_s: f64,
    encode_ms: f64,
    decode_ms: f64,
    delta_bytes_per_tick: f64,
    delta_encode_us: f64,
    delta_apply_us: f64,
    hash_match: bool,
}

fn snapshot(a: &SnapshotArgs) -> anyhow::Result<SnapshotReport> {
    anyhow::ensure!((0.0..=100.0).contains(&a.churn), "--churn is a percentage from 0 to 100");
    anyhow::ensure!(a.repeat >= 1, "--repeat must be at least 1");
    let mut rng = SmallRng::seed_from_u64(a.seed);
    // Nothing moves by itself here: the churn is exactly --churn.
    let mut region = populated(a.objects, false, &mut rng)?;
    let canonical = region.canonical_bytes().len();

    let started = Instant::now();
    let mut bytes = Vec::new();
    for _ in 0..a.repeat {
        bytes = region.snapshot();
    }
    let encode = started.elapsed() / a.repeat as u32;

    let started = Instant::now();
    let mut replica = None;
    for _ in 0..a.repeat {
        replica = Some(Region::from_snapshot(&bytes)?);
    }
    let decode = started.elapsed() / a.repeat as u32;
    let mut replica = replica.expect("repeat >= 1");

    let started = Instant::now();
    for _ in 0..a.repeat {
        std::hint::black_box(region.state_hash());
    }
    let hash = started.elapsed() / a.repeat as u32;

    // Churn: each tick a share of the objects is edited (moved and nudged), then the tick's
    // delta is encoded and applied to the replica, as a migration round would.
    let ids: Vec<EntityId> = region.entities().map(|e| e.id).collect();
    let per_tick = ((ids.len() as f64 * a.churn / 100.0).round() as usize).min(ids.len());
    let ticks = 90;
    let (mut delta_bytes, mut delta_encode, mut delta_apply) = (0usize, Duration::ZERO, Duration::ZERO);
    for _ in 0..ticks {
        let inputs: Vec<Input> = (0..per_tick)
            .map(|_| {
                let id = ids[rng.random_range(0..ids.len())];
                let pos =
                    Vec3::new(rng.random_range(0.0..REGION_SIZE), rng.random_range(0.0..REGION_SIZE), 40.0);
                Input::EditObject { id, edit: ObjectEdit { pos: Some(pos), ..Default::default() } }
            })
            .collect();
        let base = region.generation();
        region.tick(region.now_us() + TICK_US, inputs);
        let started = Instant::now();
        let encoded = region.delta_since(base)?.encode();
        delta_encode += started.elapsed();
        delta_bytes += encoded.len();
        let started = Instant::now();
        replica.apply_encoded_delta(&encoded)?;
        delta_apply += started.elapsed();
    }
    let mb = canonical as f64 / 1e6;
    Ok(SnapshotReport {
        objects: a.objects,
        churn_pct: a.churn,
        canonical_bytes: canonical,
        snapshot_bytes: bytes.len(),
        encode_mb_per_s: mb / encode.as_secs_f64(),
        decode_mb_per_s: mb / decode.as_secs_f64(),
        hash_mb_per_s: mb / hash.as_secs_f64(),
        encode_ms: ms(encode),
        decode_ms: ms(decode),
        delta_bytes_per_tick: delta_bytes as f64 / f64::from(ticks),
        delta_encode_us: delta_encode.as_secs_f64() * 1e6 / f64::from(ticks),
        delta_apply_us: delta_apply.as_secs_f64() * 1e6 / f64::from(ticks),
        hash_match: replica.state_hash() == region.state_hash(),
    })
}

#[derive(Serialize)]
struct ScriptsReport {
    scripts: usize,
    threads: usize,
    events_per_script: usize,
    /// Trivial events per second on `threads` threads.
    events_per_s: f64,
    events_per_s_1_thread: f64,
    /// events_per_s / events_per_s_1_thread.
    speedup: f64,
    event_p50_us: f64,
    event_p99_us: f64,
    instantiate_us: f64,
    snapshot_us_per_script: f64,
    compile_ms: f64,
    /// The default world's modules (crates/terrane/world/*.wat): loading them all into a fresh
    /// engine by compiling, and by loading them from the disk cache, as a restarted host does.
    world_modules: usize,
    module_compile_ms: f64,
    module_load_ms: f64,
    module_cache_bytes: u64,
}

fn scripts(a: &ScriptsArgs) -> anyhow::Result<ScriptsReport> {
    anyhow::ensure!(
        a.scripts >= 1 && a.threads >= 1 && a.events >= 1,
        "--scripts, --threads and --events must be at least 1"
    );
    anyhow::ensure!(
        a.scripts <= world::limits::MAX_SCRIPTS,
        "--scripts is at most {} (world::limits::MAX_SCRIPTS)",
        world::limits::MAX_SCRIPTS
    );
    let one = host::scripting::engine_bench(a.scripts, 1, a.events)?;
    let many = host::scripting::engine_bench(a.scripts, a.threads, a.events)?;
    let dir = std::env::temp_dir().join(format!("terrane-bench-module-cache-{}", std::process::id()));
    let cache = host::scripting::module_cache_bench(&crate::living::MODULES, &dir)
        .map_err(|e| anyhow::anyhow!("module cache benchmark: {e}"))?;
    Ok(ScriptsReport {
        scripts: a.scripts,
        threads: a.threads,
        events_per_script: a.events,
        events_per_s: many.events_per_s,
        events_per_s_1_thread: one.events_per_s,
        speedup: if one.events_per_s > 0.0 { many.events_per_s / one.events_per_s } else { 0.0 },
        event_p50_us: many.event_p50_us,
        event_p99_us: many.event_p99_us,
        instantiate_us: many.instantiate_us,
        snapshot_us_per_script: many.snapshot_us_per_script,
        compile_ms: many.compile_ms,
        world_modules: cache.modules,
        module_compile_ms: cache.compile_ms,
        module_load_ms: cache.load_ms,
        module_cache_bytes: cache.cache_bytes,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (p50, p99, max) of a set of durations.
fn quantiles(v: &mut [Duration]) -> (Duration, Duration, Duration) {
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}
