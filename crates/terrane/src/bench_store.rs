//! `terrane bench store`: what durability costs. Durable changes per second through a host's
//! durable path (group commit) with many concurrent clients, the time to checkpoint a region of
//! 10,000 objects (the copy on the tick thread, the encoding on the checkpoint builder, the
//! write on the store's writer), recovery from a checkpoint plus a log, and a busy region's tick
//! p99 with frequent checkpoints against none. SQLite in a temporary directory, or PostgreSQL with `--store`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use host::durable::{Durability, DurableConfig, StoreOpener};
use host::{Host, HostConfig};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;
use store::Store as _;
use world::{EntityId, Input, ObjectEdit, ObjectSpec, Region, RegionId};

#[derive(Args)]
pub struct StoreBenchArgs {
    /// Keep the store in PostgreSQL (postgres://user@host:port/db) instead of a temporary
    /// SQLite file. The bench regions' rows are deleted before and after.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Clients sending durable edits at once, each waiting for its acknowledgement.
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// Regions the clients are spread over (each ticks at 45 Hz: one avatar in each).
    #[arg(long, default_value_t = 4)]
    regions: u16,
    /// Seconds of durable edits.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Objects in the checkpointed region.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Log records after the checkpoint that recovery replays.
    #[arg(long, default_value_t = 300)]
    records: usize,
    /// Seconds of ticking for each side of the tick p99 comparison.
    #[arg(long, default_value_t = 8.0)]
    tick_seconds: f64,
    /// Checkpoint period while measuring the tick p99 with checkpoints, in ms.
    #[arg(long, default_value_t = 250)]
    checkpoint_ms: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    backend: String,
    clients: usize,
    regions: u16,
    durable_changes: u64,
    durable_changes_per_s: f64,
    group_commits: u64,
    records_per_commit: f64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    checkpoint_objects: usize,
    checkpoint_bytes: usize,
    /// The copy of the region taken on the tick thread (`Region::checkpoint_copy`).
    checkpoint_copy_ms: f64,
    /// Encoding the snapshot (on the checkpoint builder thread, at a lower priority).
    checkpoint_encode_ms: f64,
    /// Writing it to the store (on the writer).
    checkpoint_write_ms: f64,
    recovery_records: usize,
    recovery_ms: f64,
    tick_p50_ms_without_checkpoints: f64,
    tick_p99_ms_without_checkpoints: f64,
    tick_p50_ms_with_checkpoints: f64,
    tick_p99_ms_with_checkpoints: f64,
    checkpoints_during_ticks: u64,
    /// The copies for those checkpoints, on the tick thread: mean and longest.
    checkpoint_copy_in_tick_mean_ms: f64,
    checkpoint_copy_in_tick_max_ms: f64,
    tick_p99_increase_pct: f64,
}

pub fn bench(a: StoreBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.clients > 0 && a.regions > 0, "--clients and --regions must be positive");
    anyhow::ensure!(a.seconds.is_finite() && a.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(a.tick_seconds.is_finite() && a.tick_seconds > 0.0, "--tick-seconds must be positive");
    let dir = std::env::temp_dir().join(format!("terrane-bench-store-{}", std::process::id()));
    let result = run(&a, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    crate::bench::emit(&result?, a.json)
}

fn run(a: &StoreBenchArgs, dir: &std::path::Path) -> anyhow::Result<Report> {
    let regions: Vec<RegionId> = (0..a.regions).map(|i| RegionId::new(100 + i, 100)).collect();
    let big = RegionId::new(200, 200);
    let mut all = regions.clone();
    all.push(big);

    // 1. Durable changes per second.
    let (changes, secs, commits, records, lat) =
        throughput(a, &opener(a, dir.join("changes"), &all), &regions)?;

    // 2. Checkpoint cost, piece by piece, on a region of `objects` objects.
    let mut rng = SmallRng::seed_from_u64(1);
    let mut region = crate::bench::populated(a.objects, false, &mut rng)?;
    region = Region::from_snapshot(&retarget(&region, big)?)?;
    let t = Instant::now();
    let copy = region.checkpoint_copy();
    let copy_ms = ms(t.elapsed());
    let t = Instant::now();
    let bytes = copy.snapshot();
    let encode_ms = ms(t.elapsed());
    let mut store = (opener(a, dir.join("checkpoint"), &all))()?;
    let c = store::Checkpoint { region: big, covers_seq: 0, tick: copy.tick_number(), bytes, owner: 0 };
    let t = Instant::now();
    store.put_checkpoint(&c)?;
    let write_ms = ms(t.elapsed());
    let checkpoint_bytes = c.bytes.len();
    drop(store);

    // 3. Recovery: a checkpoint, then `records` logged edits, through a host.
    let (recovery_records, recovery_ms) = recovery(a, &opener(a, dir.join("recovery"), &all), &region)?;

    // 4. Tick p99 of the busy region without and with frequent checkpoints.
    let (p50_without, p99_without, _) = ticking(a, None, &region)?;
    let (p50_with, p99_with, (checkpoints, copy_mean_ms, copy_max_ms)) =
        ticking(a, Some(opener(a, dir.join("ticks"), &all)), &region)?;

    Ok(Report {
        backend: if a.store.is_some() { "postgresql".into() } else { "sqlite".into() },
        clients: a.clients,
        regions: a.regions,
        durable_changes: changes,
        durable_changes_per_s: changes as f64 / secs,
        group_commits: commits,
        records_per_commit: if commits == 0 { 0.0 } else { records as f64 / commits as f64 },
        ack_p50_ms: lat.0,
        ack_p99_ms: lat.1,
        checkpoint_objects: a.objects,
        checkpoint_bytes,
        checkpoint_copy_ms: copy_ms,
        checkpoint_encode_ms: encode_ms,
        checkpoint_write_ms: write_ms,
        recovery_records,
        recovery_ms,
        tick_p50_ms_without_checkpoints: p50_without,
        tick_p99_ms_without_checkpoints: p99_without,
        tick_p50_ms_with_checkpoints: p50_with,
        tick_p99_ms_with_checkpoints: p99_with,
        checkpoints_during_ticks: checkpoints,
        checkpoint_copy_in_tick_mean_ms: copy_mean_ms,
        checkpoint_copy_in_tick_max_ms: copy_max_ms,
        tick_p99_increase_pct: if p99_without > 0.0 { (p99_with / p99_without - 1.0) * 100.0 } else { 0.0 },
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The same region under another id (snapshot bytes carry the id).
fn retarget(region: &Region, id: RegionId) -> anyhow::Result<Vec<u8>> {
    let mut r = Region::new(id, 1);
    let entities: Vec<world::Entity> = region.entities().cloned().collect();
    let mut tag = 0u64;
    for chunk in entities.chunks(world::limits::MAX_INPUTS_PER_TICK) {
        let inputs: Vec<Input> = chunk
            .iter()
            .map(|e| {
                tag += 1;
                Input::CreateObject {
                    tag,
                    spec: ObjectSpec {
                        name: e.name.clone(),
                        shape: e.shape,
                        pos: e.pos,
                        scale: e.scale,
                        ..Default::default()
                    },
                }
            })
            .collect();
        let now = r.now_us() + 22_222;
        let out = r.tick(now, inputs);
        anyhow::ensure!(out.rejected.is_empty(), "building the bench region failed: {:?}", out.rejected[0]);
    }
    Ok(r.snapshot())
}

/// A store for one phase: SQLite under `dir`, or PostgreSQL with the bench regions cleared.
fn opener(
    a: &StoreBenchArgs,
    dir: PathBuf,
    regions: &[RegionId],
) -> Box<dyn Fn() -> OpenResult + Send + Sync> {
    let regions = regions.to_vec();
    match &a.store {
        Some(url) => {
            let url = url.clone();
            Box::new(move || {
                let mut s = store::PgStore::connect(&url)?;
                for r in &regions {
                    s.forget(*r)?;
                }
                Ok(Box::new(s) as Box<dyn store::Store>)
            })
        }
        None => Box::new(move || Ok(Box::new(store::SqliteStore::open_dir(&dir)?) as Box<dyn store::Store>)),
    }
}

type OpenResult = Result<Box<dyn store::Store>, store::StoreError>;

fn start_durable(
    open: &(dyn Fn() -> OpenResult + Send + Sync),
    period: Duration,
    cores: usize,
) -> anyhow::Result<(Host, Arc<Durability>)> {
    // The opener runs once, on the writer thread: hand it a store opened here.
    let store = open()?;
    let store = std::sync::Mutex::new(Some(store));
    let opener: StoreOpener = Box::new(move || {
        store.lock().ok().and_then(|mut s| s.take()).ok_or_else(|| store::StoreError::Io {
            path: "bench".into(),
            source: std::io::Error::other("the store was opened twice"),
        })
    });
    let d = Durability::start(opener, DurableConfig { checkpoint_period: period, ..Default::default() })?;
    let host = Host::start(HostConfig { cores, seed: 1 });
    host.set_durability(d.clone());
    Ok((host, d))
}

/// Sends a durable input and waits for its acknowledgement.
fn durable(host: &Host, id: RegionId, input: Input) -> anyhow::Result<host::durable::Acked> {
    let (tx, rx) = mpsc::sync_channel(1);
    host.send_durable(
        id,
        input,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )?;
    rx.recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow::anyhow!("no acknowledgement within 30 s"))?
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn add_avatar(host: &Host, id: RegionId, n: u64) -> anyhow::Result<()> {
    let avatar = EntityId((1 << 63) | n);
    host.send(id, Input::AddAvatar { id: avatar, name: format!("Bench {n}"), owner: n, pos: None })?;
    Ok(())
}

type Throughput = (u64, f64, u64, u64, (f64, f64));

fn throughput(
    a: &StoreBenchArgs,
    open: &(dyn Fn() -> OpenResult + Send + Sync),
    regions: &[RegionId],
) -> anyhow::Result<Throughput> {
    let (host, d) = start_durable(open, Duration::from_secs(3600), 2)?;
    for (i, r) in regions.iter().enumerate() {
        host.load(Region::new(*r, 1))?;
        add_avatar(&host, *r, i as u64 + 1)?;
    }
    // Each client edits an object of its own.
    let mut targets = Vec::new();
    for c in 0..a.clients {
        let r = regions[c % regions.len()];
        let spec = ObjectSpec { name: format!("client {c}"), ..Default::default() };
        let acked = durable(&host, r, Input::CreateObject { tag: c as u64, spec })?;
        let id = acked.created.ok_or_else(|| anyhow::anyhow!("a create named no object"))?;
        targets.push((r, id));
    }
    let (records0, commits0) =
        (d.stats.records.load(Ordering::Relaxed), d.stats.commits.load(Ordering::Relaxed));
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(a.seconds);
    let threads: Vec<_> = targets
        .into_iter()
        .map(|(r, id)| {
            let host = host.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut n = 0u64;
                while Instant::now() < until {
                    let t = Instant::now();
                    let edit = ObjectEdit { text: Some(format!("edit {n}")), ..Default::default() };
                    match durable(&host, r, Input::EditObject { id, edit }) {
                        Ok(_) => {
                            lat.push(t.elapsed().as_micros() as u32);
                            n += 1;
                        }
                        // A full queue: back off a little and go on.
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<u32> = Vec::new();
    for t in threads {
        lat.extend(t.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?);
    }
    let secs = started.elapsed().as_secs_f64();
    let records = d.stats.records.load(Ordering::Relaxed) - records0;
    let commits = d.stats.commits.load(Ordering::Relaxed) - commits0;
    host.shutdown();
    let (p50, p99) = host::stats::percentiles(lat.iter().copied());
    Ok((lat.len() as u64, secs, commits, records, (f64::from(p50) / 1000.0, f64::from(p99) / 1000.0)))
}

fn recovery(
    a: &StoreBenchArgs,
    open: &(dyn Fn() -> OpenResult + Send + Sync),
    region: &Region,
) -> anyhow::Result<(usize, f64)> {
    let id = region.id();
    let (host, d) = start_durable(open, Duration::from_secs(3600), 1)?;
    host.load(region.clone())?;
    add_avatar(&host, id, 1)?;
    let some: Vec<EntityId> = region.entities().take(64).map(|e| e.id).collect();
    anyhow::ensure!(!some.is_empty(), "--objects must be at least 1");
    // The first tick writes the checkpoint; the edits come after it.
    std::thread::sleep(Duration::from_millis(500));
    d.flush();
    // One edit per tick (each waits for its acknowledgement): one log record each.
    let mut last = String::new();
    for n in 0..a.records {
        last = format!("record {n}");
        let edit = ObjectEdit { text: Some(last.clone()), ..Default::default() };
        durable(&host, id, Input::EditObject { id: some[n % some.len()], edit })?;
    }
    host.shutdown();
    d.flush();
    let rec = d.recovered(id).map_err(|e| anyhow::anyhow!(e))?;
    let replayed = rec.log.len();
    let t = Instant::now();
    let back = d.recover(id, || Region::new(id, 1)).map_err(|e| anyhow::anyhow!(e))?;
    let took = ms(t.elapsed());
    let back = back.ok_or_else(|| anyhow::anyhow!("nothing recovered"))?;
    anyhow::ensure!(back.entity_count() >= region.entity_count(), "recovery lost objects");
    anyhow::ensure!(
        a.records == 0 || back.entity(some[(a.records - 1) % some.len()]).is_some_and(|e| e.text == last),
        "recovery lost the last acknowledged edit"
    );
    Ok((replayed, took))
}

/// Ticks the region at 45 Hz (one avatar) for --tick-seconds; with a store, checkpoints every
/// --checkpoint-ms. Returns the tick p50 and p99 in ms and the checkpoints written.
fn ticking(
    a: &StoreBenchArgs,
    open: Option<Box<dyn Fn() -> OpenResult + Send + Sync>>,
    region: &Region,
) -> anyhow::Result<(f64, f64, (u64, f64, f64))> {
    let id = region.id();
    let (host, d) = match open {
        Some(open) => {
            let (h, d) = start_durable(&*open, Duration::from_millis(a.checkpoint_ms), 1)?;
            (h, Some(d))
        }
        None => (Host::start(HostConfig { cores: 1, seed: 1 }), None),
    };
    host.load(region.clone())?;
    add_avatar(&host, id, 1)?;
    std::thread::sleep(Duration::from_secs_f64(a.tick_seconds));
    let s = host.stats(id)?;
    host.shutdown();
    let copies = d.as_ref().map_or((0, 0.0, 0.0), |d| {
        let n = d.stats.checkpoints.load(Ordering::Relaxed);
        let total = d.stats.checkpoint_copy_us_total.load(Ordering::Relaxed) as f64 / 1000.0;
        let max = d.stats.checkpoint_copy_us_max.load(Ordering::Relaxed) as f64 / 1000.0;
        (n, if n == 0 { 0.0 } else { total / n as f64 }, max)
    });
    Ok((s.tick_p50_ms, s.tick_p99_ms, copies))
}
