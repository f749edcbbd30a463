//! A benchmark of the engine with trivial handlers: throughput across threads, per-event
//! latency, instantiation and snapshot cost. Measures only; asserts nothing.
//!
//! Run it with `cargo run --release -p script --example bench -- SCRIPTS THREADS EVENTS`.

use std::time::Instant;

use serde::Serialize;
use world::{EntityId, RegionId, Vec3};

use crate::batch::run_batch;
use crate::engine::{EngineConfig, ScriptEngine, TickBudget};
use crate::event::Event;
use crate::limits::MAX_EVENTS_PER_TICK;
use crate::script::{Script, ScriptSpec};
use crate::state::ScriptId;
use crate::view::StaticView;

/// The benchmark's script: every handler returns at once.
pub const TRIVIAL_WAT: &str = include_str!("../scripts/trivial.wat");

/// How many events are timed one by one for the latency percentiles.
const LATENCY_SAMPLES: usize = 20_000;

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub scripts: usize,
    pub threads: usize,
    pub events_per_script: usize,
    pub events_total: u64,
    /// Events per second over the timed batches (all threads together).
    pub events_per_s: f64,
    /// Latency of one event run alone (enqueue excluded), median and 99th percentile.
    pub event_p50_us: f64,
    pub event_p99_us: f64,
    /// Creating one script (instance, store, handler lookup, start event queued).
    pub instantiate_us: f64,
    /// Capturing one script's whole state (64 KiB memory included).
    pub snapshot_us_per_script: f64,
    /// Loading and compiling the module.
    pub compile_ms: f64,
    /// Fuel all scripts burnt: non-zero shows the handlers really ran.
    pub fuel_used_total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Load(#[from] crate::module::LoadError),
    #[error(transparent)]
    Instantiate(#[from] crate::script::InstantiateError),
    #[error("building a thread pool of {threads} threads failed: {message}")]
    Pool { threads: usize, message: String },
}

pub fn bench(scripts: usize, threads: usize, events_per_script: usize) -> Result<BenchReport, BenchError> {
    let scripts = scripts.max(1);
    let threads = threads.max(1);
    let engine =
        ScriptEngine::new(EngineConfig { max_scripts: scripts as u32 + 1, ..EngineConfig::default() })?;
    let t = Instant::now();
    let module = engine.load(TRIVIAL_WAT.as_bytes())?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;

    let mut view = StaticView::new(0, RegionId::new(0, 0));
    let t = Instant::now();
    let mut all = Vec::with_capacity(scripts);
    for i in 0..scripts {
        let spec = ScriptSpec { id: ScriptId(i as u64), object: EntityId(i as u64), seed: i as u64 };
        all.push(Script::new(&module, spec)?);
    }
    let instantiate_us = t.elapsed().as_secs_f64() * 1e6 / scripts as f64;
    for i in 0..scripts {
        view.insert(EntityId(i as u64), false, Vec3::new(128.0, 128.0, 20.0));
    }

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| BenchError::Pool { threads, message: e.to_string() })?;
    // The start events, untimed: they warm the instances and the pool.
    run_batch(Some(&pool), &mut all, &view, TickBudget::UNLIMITED);

    let toucher = EntityId(u64::MAX);
    let mut remaining = events_per_script;
    let mut events_total = 0u64;
    let mut busy = 0f64;
    while remaining > 0 {
        let round = remaining.min(MAX_EVENTS_PER_TICK);
        for s in &mut all {
            for _ in 0..round {
                s.enqueue(Event::Touch { toucher });
            }
        }
        let t = Instant::now();
        let report = run_batch(Some(&pool), &mut all, &view, TickBudget::UNLIMITED);
        busy += t.elapsed().as_secs_f64();
        events_total += report.events;
        view.now_ms += 1;
        remaining -= round;
    }

    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES.min(scripts * events_per_script.max(1)) {
        let s = &mut all[i % scripts];
        s.enqueue(Event::Touch { toucher });
        let t = Instant::now();
        s.run_tick(&view, TickBudget::UNLIMITED);
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    let pct =
        |p: f64| samples.get(((samples.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);

    let fuel_used_total = all.iter().map(|s| s.counters().fuel_used).sum();
    let t = Instant::now();
    let mut bytes = 0usize;
    for s in &mut all {
        bytes += s.capture().memory.len();
    }
    let snapshot_us_per_script = t.elapsed().as_secs_f64() * 1e6 / scripts as f64;
    debug_assert_eq!(bytes, scripts * crate::limits::MEMORY_BYTES);

    Ok(BenchReport {
        scripts,
        threads,
        events_per_script,
        events_total,
        events_per_s: if busy > 0.0 { events_total as f64 / busy } else { 0.0 },
        event_p50_us: pct(0.50),
        event_p99_us: pct(0.99),
        instantiate_us,
        snapshot_us_per_script,
        compile_ms,
        fuel_used_total,
    })
}
