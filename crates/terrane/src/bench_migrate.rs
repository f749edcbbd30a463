//! `terrane bench migrate`: moves one busy region back and forth between two host processes
//! and compares three ways of doing it in the same run: pre-copy live migration, stop-and-copy,
//! and restart from a snapshot.

use std::time::{Duration, Instant};

use clap::Args;
use link::{LinkMsg, LinkTx, Role};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;
use world::{Controls, EntityId, Input, ObjectSpec, RegionId, Vec3};

#[derive(Args)]
pub struct MigrateBenchArgs {
    /// Avatars in the busy region (driven with changing controls).
    #[arg(long, default_value_t = 200)]
    avatars: usize,
    /// Objects in the busy region.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Scripts, one each in the first objects: each counts in its memory on a 500 ms timer.
    #[arg(long, default_value_t = 2000)]
    scripts: usize,
    /// Migrations per strategy (alternating direction).
    #[arg(long, default_value_t = 10)]
    repeat: usize,
    /// Threads per host.
    #[arg(long, default_value_t = 1)]
    cores: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Drive the avatars through host links instead of real clients (no gateway, no bots, so
    /// no client-side figures).
    #[arg(long)]
    no_bots: bool,
    /// Control token the bench's hosts are started with and its requests carry (default: a
    /// fresh random one).
    #[arg(long, env = "TERRANE_CONTROL_TOKEN", hide_env_values = true, value_parser = crate::parse_control_token)]
    control_token: Option<String>,
    #[arg(long)]
    json: bool,
}

const REGION: RegionId = RegionId::new(5, 5);
/// Around each migration's request and answer, the gaps that count as "during" it.
const WINDOW_MARGIN: Duration = Duration::from_millis(25);

/// A busy little script: every 500 ms it counts in its memory (so every round has chunks to
/// carry) and its globals change.
const BENCH_SCRIPT: &str = r#"(module
  (import "terrane" "set_timer" (func $set_timer (param i64)))
  (memory 1 1)
  (global $n (mut i32) (i32.const 0))
  (func (export "start") (call $set_timer (i64.const 500)))
  (func (export "timer")
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (i32.store (i32.const 1024) (global.get $n))))"#;

fn free_addr() -> anyhow::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

struct HostAddrs {
    api: String,
    link: String,
}

#[derive(Serialize, Default)]
struct Summary {
    migrations: usize,
    committed: usize,
    hash_match: bool,
    freeze_ms_p50: f64,
    freeze_ms_p99: f64,
    freeze_ms_max: f64,
    total_ms_p50: f64,
    rounds_mean: f64,
    bytes_mean: f64,
}

#[derive(Serialize)]
struct Report {
    avatars: usize,
    objects: usize,
    scripts: usize,
    repeat: usize,
    pre_copy: Summary,
    stop_and_copy: Summary,
    restart: Summary,
    /// Median pre-copy freeze over median stop-and-copy freeze.
    pre_copy_over_stop_and_copy: f64,
    /// What the bots (the avatars, connected through a gateway) saw, per phase (one cohort for
    /// pre-copy, one for stop-and-copy and restart): over the cohort's whole stay, arrival
    /// included (update gaps, sequence gaps, disconnects), and in `during_migrations` per
    /// strategy the update gaps that overlap a migration (its request to its answer, ±25 ms);
    /// `between_migrations` has the gaps from the first migration on that overlap none (the
    /// same crowd on the same machine with no migration running, to compare against).
    bots: Option<Value>,
}

pub fn bench(a: MigrateBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.repeat >= 1, "--repeat must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // The bots stand in for clients, which have machines of their own. Here they share two
    // cores with the gateway, which runs raised (`raised_runtime`): at the normal priority they
    // would read their updates only once the gateway has nothing left to do, and a hand-over,
    // when two ticks fan out close together, would measure this machine's scheduler rather
    // than the migration. So they run at the gateway's priority, on a runtime of their own
    // (the children are started from `rt`, whose threads keep the normal priority they pass on).
    let bots = crate::raised_runtime("the bench's bots")?;
    let report = rt.block_on(run(&a, bots.handle()));
    bots.shutdown_background();
    crate::bench::emit(&report?, a.json)
}

async fn run(a: &MigrateBenchArgs, bots_rt: &tokio::runtime::Handle) -> anyhow::Result<Report> {
    let clock = (Instant::now(), std::time::SystemTime::now());
    let mut procs = crate::children::Children::default();
    let dir = free_addr()?;
    procs.spawn(&["orchestrator", "--listen", &dir])?;
    let dir_url = format!("http://{dir}");
    let cores = a.cores.to_string();
    let token = a.control_token.clone().unwrap_or_else(crate::new_control_token);
    let mut hosts = Vec::new();
    for _ in 0..2 {
        let (api, link) = (free_addr()?, free_addr()?);
        procs.spawn(&[
            "host",
            "--listen",
            &api,
            "--link",
            &link,
            "--directory",
            &dir_url,
            "--cores",
            &cores,
            "--control-token",
            &token,
        ])?;
        hosts.push(HostAddrs { api: format!("http://{api}"), link });
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(crate::migrate_cmd::bearer_headers(Some(&token))?)
        .build()?;
    let resp =
        http.post(format!("{}/regions/{REGION}", hosts[0].api)).json(&serde_json::json!({})).send().await?;
    anyhow::ensure!(resp.status().is_success(), "could not create the busy region: {}", resp.text().await?);

    // Fill the region through a link, as a gateway would.
    let mut rng = SmallRng::seed_from_u64(a.seed);
    let mut owner = 0usize;
    let tool = link::connect(&hosts[0].link, Role::Tool, "bench").await?;
    for k in 0..a.objects {
        let pos = Vec3::new(rng.random_range(0.0..256.0), rng.random_range(0.0..256.0), 0.0);
        let spec = ObjectSpec { name: format!("Object {k}"), pos, ..Default::default() };
        send(&tool.tx, Input::CreateObject { tag: k as u64, spec }).await;
    }
    wait_entities(&http, &hosts[0].api, a.objects as u64).await?;
    anyhow::ensure!(a.scripts <= a.objects, "--scripts can be at most --objects (one script per object)");
    if a.scripts > 0 {
        let module = BENCH_SCRIPT.as_bytes().to_vec();
        let hash = world::ModuleHash::of(&module);
        send(&tool.tx, Input::AddModule { bytes: module }).await;
        for k in 0..a.scripts {
            // Objects made in this order got serials 1, 2, 3… from the region.
            let object = EntityId(u64::from(REGION.x) << 48 | u64::from(REGION.y) << 32 | (k as u64 + 1));
            send(&tool.tx, Input::AddScript { object, module: hash }).await;
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while stats(&http, &hosts[0].api).await["scripts"].as_u64().unwrap_or(0) < a.scripts as u64 {
            anyhow::ensure!(Instant::now() < deadline, "the scripts never all started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let owner_now = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut driver = None;
    let mut gateway_url = None;
    if a.no_bots {
        // Avatars driven over host links, moving during the whole run.
        let avatars: Vec<EntityId> = (0..a.avatars).map(|k| EntityId(1 << 63 | k as u64)).collect();
        for &id in &avatars {
            let pos = Vec3::new(rng.random_range(20.0..236.0), rng.random_range(20.0..236.0), 0.0);
            send(
                &tool.tx,
                Input::AddAvatar { id, name: format!("Bench {}", id.0 & 0xffff), owner: 0, pos: Some(pos) },
            )
            .await;
        }
        let links: Vec<LinkTx> =
            vec![tool.tx.clone(), link::connect(&hosts[1].link, Role::Tool, "bench").await?.tx];
        let (owner_now, avatars) = (owner_now.clone(), avatars.clone());
        driver = Some(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(7);
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let to = &links[owner_now.load(std::sync::atomic::Ordering::SeqCst)];
                for &id in &avatars {
                    if rng.random_bool(0.05) {
                        let controls =
                            Controls { forward: 1, turn: rng.random_range(-1..=1), ..Default::default() };
                        to.send(&LinkMsg::Input { region: REGION, input: Input::Controls { id, controls } });
                    }
                }
            }
        }));
    } else if a.avatars > 0 {
        // The avatars are real clients: bots connected through a gateway process.
        let gw = free_addr()?;
        let spawn_at = REGION.to_string();
        procs.spawn(&["gateway", "--listen", &gw, "--directory", &dir_url, "--spawn", &spawn_at])?;
        gateway_url = Some(format!("ws://{gw}/ws"));
    }

    // Pre-copy first, watched by its own cohort of bots, so the clients' figures for it are
    // not mixed with the longer freezes of the other two strategies.
    let phases: [(&str, &[&str]); 2] =
        [("pre_copy", &["pre-copy"]), ("stop_and_copy_and_restart", &["stop-and-copy", "restart"])];
    let mut results: Vec<(&str, Vec<Value>)> =
        vec![("pre-copy", vec![]), ("stop-and-copy", vec![]), ("restart", vec![])];
    let mut bots = serde_json::Map::new();
    for (phase, strategies) in phases {
        let window =
            Duration::from_secs(5) + Duration::from_millis(1500) * (a.repeat * strategies.len()) as u32;
        let cohort = gateway_url.as_ref().map(|url| {
            let mut config = bot::BotConfig::new(url.clone(), a.avatars, bot::Behaviour::Wander, window);
            config.seed = a.seed;
            bots_rt.spawn(bot::run_bots_logged(config))
        });
        // When each migration of the phase ran, per strategy: the clients' figures "during the
        // migrations" are the gaps that overlap these (plus a tick either side).
        let mut windows: Vec<(&str, (Instant, Instant))> = Vec::new();
        let joined = Instant::now();
        wait_entities(&http, &hosts[owner].api, (a.objects + a.avatars) as u64).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let settled = Instant::now();
        for round in 0..a.repeat {
            for strategy in strategies {
                let to = 1 - owner;
                let began = Instant::now();
                let r = if *strategy == "restart" {
                    restart(&http, &hosts[owner], &hosts[to]).await?
                } else {
                    migrate(&http, &hosts[owner], &hosts[to], strategy).await?
                };
                windows.push((strategy, (began - WINDOW_MARGIN, Instant::now() + WINDOW_MARGIN)));
                if r["committed"] == true {
                    owner = to;
                    owner_now.store(owner, std::sync::atomic::Ordering::SeqCst);
                }
                results.iter_mut().find(|(s, _)| s == strategy).expect("known strategy").1.push(r);
                // Let the region settle into its new home before the next move.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if !a.json {
                eprintln!("bench migrate: {phase}: round {} of {} done", round + 1, a.repeat);
            }
        }
        let covered = joined.elapsed() + Duration::from_millis(500) < window;
        if let Some(c) = cohort {
            let (report, log) = c.await??;
            let mut report = serde_json::to_value(report)?;
            let mut during = serde_json::Map::new();
            for strategy in strategies {
                let w: Vec<(Instant, Instant)> =
                    windows.iter().filter(|(s, _)| s == strategy).map(|(_, w)| *w).collect();
                let mut figures = serde_json::to_value(log.within(&w))?;
                let runs = &results.iter().find(|(s, _)| s == strategy).expect("known strategy").1;
                figures["longest_gaps"] = longest_gaps(&log, &w, runs, clock);
                during.insert(strategy.replace('-', "_"), figures);
            }
            report["during_migrations"] = Value::Object(during);
            // The same crowd while no migration runs: what this machine does to the gaps anyway.
            let all: Vec<(Instant, Instant)> = windows.iter().map(|(_, w)| *w).collect();
            report["between_migrations"] = serde_json::to_value(log.outside(settled, &all))?;
            // Whether every migration of the phase happened while the bots were connected.
            report["covered_all_migrations"] = Value::Bool(covered);
            bots.insert(phase.to_string(), report);
            // The cohort's avatars leave with it; the next cohort brings its own.
            wait_entities(&http, &hosts[owner].api, a.objects as u64).await?;
        }
    }
    if let Some(d) = driver {
        d.abort();
    }
    let bots = (!bots.is_empty()).then_some(Value::Object(bots));
    let pre = summarize(&results[0].1);
    let stop = summarize(&results[1].1);
    let restart = summarize(&results[2].1);
    Ok(Report {
        avatars: a.avatars,
        objects: a.objects,
        scripts: a.scripts,
        repeat: a.repeat,
        pre_copy_over_stop_and_copy: pre.freeze_ms_p50 / stop.freeze_ms_p50.max(1e-9),
        pre_copy: pre,
        stop_and_copy: stop,
        restart,
        bots,
    })
}

/// For each migration, the longest update gap a bot saw during it and where it began relative
/// to the freeze (negative: before the source's last tick), so a long gap can be told apart as
/// the freeze itself or something around it. `clock` pairs an instant with the unix time then.
fn longest_gaps(
    log: &bot::GapLog,
    windows: &[(Instant, Instant)],
    runs: &[Value],
    clock: (Instant, std::time::SystemTime),
) -> Value {
    let unix_us = |at: Instant| {
        let since = clock.1.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let offset = at.checked_duration_since(clock.0).unwrap_or_default();
        (since + offset).as_micros() as f64
    };
    let each = windows.iter().zip(runs).filter_map(|(&w, run)| {
        let (began, len) = log.longest_within(w)?;
        let mut gap = serde_json::json!({ "gap_ms": len.as_secs_f64() * 1000.0 });
        if let Some(from) = run["freeze_from_unix_us"].as_f64() {
            gap["began_ms_after_freeze"] =
                Value::from(((unix_us(began) - from) / 1000.0 * 10.0).round() / 10.0);
        }
        Some(gap)
    });
    Value::Array(each.collect())
}

async fn wait_entities(http: &reqwest::Client, api: &str, want: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats(http, api).await["entities"].as_u64() != Some(want) {
        anyhow::ensure!(Instant::now() < deadline, "the region never reached {want} entities");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Sends an input, waiting while the link's queue is full.
async fn send(tx: &LinkTx, input: Input) {
    let frame = LinkMsg::Input { region: REGION, input }.encode();
    for _ in 0..10_000 {
        if tx.send_frame(frame.clone()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn stats(http: &reqwest::Client, api: &str) -> Value {
    match http.get(format!("{api}/regions/{REGION}")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn migrate(
    http: &reqwest::Client,
    from: &HostAddrs,
    to: &HostAddrs,
    strategy: &str,
) -> anyhow::Result<Value> {
    let body = serde_json::json!({ "to": to.link, "strategy": strategy });
    let resp = http.post(format!("{}/regions/{REGION}/migrate", from.api)).json(&body).send().await?;
    anyhow::ensure!(resp.status().is_success(), "migration refused: {}", resp.text().await?);
    let id = resp.json::<Value>().await?["id"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s: Value = http.get(format!("{}/migrations/{id}", from.api)).send().await?.json().await?;
        let settled = s["committed"] != true || !s["freeze_ms"].is_null();
        if s["done"] == true && settled {
            return Ok(s);
        }
        anyhow::ensure!(Instant::now() < deadline, "migration {id} did not finish: {s}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Today's way: stop the region, start it elsewhere from a snapshot. The freeze runs from the
/// stop to the first tick at the new place.
async fn restart(http: &reqwest::Client, from: &HostAddrs, to: &HostAddrs) -> anyhow::Result<Value> {
    let started = Instant::now();
    let tick_before = stats(http, &from.api).await["tick"].as_u64().unwrap_or(0);
    let snap = http.get(format!("{}/regions/{REGION}/snapshot", from.api)).send().await?.bytes().await?;
    let stopped = Instant::now();
    let resp = http.delete(format!("{}/regions/{REGION}", from.api)).send().await?;
    anyhow::ensure!(resp.status().is_success(), "could not stop the region: {}", resp.text().await?);
    let resp = http.post(format!("{}/regions/{REGION}/restore", to.api)).body(snap.clone()).send().await?;
    anyhow::ensure!(resp.status().is_success(), "could not restore the region: {}", resp.text().await?);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = stats(http, &to.api).await;
        if s["ticks"].as_u64().unwrap_or(0) >= 1 {
            let freeze = stopped.elapsed().as_secs_f64() * 1000.0;
            return Ok(serde_json::json!({
                "committed": true,
                // Ticks made after the snapshot was taken are lost by a restart.
                "hash_match": s["tick"].as_u64().unwrap_or(0) > tick_before,
                "freeze_ms": freeze,
                "total_ms": started.elapsed().as_secs_f64() * 1000.0,
                "rounds": 1,
                "bytes": snap.len(),
            }));
        }
        anyhow::ensure!(Instant::now() < deadline, "the restored region never ticked");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn summarize(runs: &[Value]) -> Summary {
    let committed: Vec<&Value> = runs.iter().filter(|r| r["committed"] == true).collect();
    let mut freeze: Vec<f64> = committed.iter().filter_map(|r| r["freeze_ms"].as_f64()).collect();
    let mut total: Vec<f64> = committed.iter().filter_map(|r| r["total_ms"].as_f64()).collect();
    let mean = |key: &str| {
        committed.iter().filter_map(|r| r[key].as_f64()).sum::<f64>() / committed.len().max(1) as f64
    };
    Summary {
        migrations: runs.len(),
        committed: committed.len(),
        // A committed live migration has had its state hash verified by the target at the
        // handover; the restart strategy reports whether the region ticked on.
        hash_match: committed.len() == runs.len() && committed.iter().all(|r| r["hash_match"] != false),
        freeze_ms_p50: quantile(&mut freeze, 0.5),
        freeze_ms_p99: quantile(&mut freeze, 0.99),
        freeze_ms_max: freeze.iter().copied().fold(0.0, f64::max),
        total_ms_p50: quantile(&mut total, 0.5),
        rounds_mean: mean("rounds"),
        bytes_mean: mean("bytes"),
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}
