//! `terrane bench placement`: the orchestrator acting on its own. A small host (1 core) holds
//! the 3×3 world and a big host (2 cores) stands by; a crowd of bots gathers in one region (a
//! club), stays a while, then leaves. The timeline says when the orchestrator saw the region
//! busy, when it started and committed its migration to the big host, the region's tick p99
//! before and after, and when it was packed back after the crowd left.

use std::time::{Duration, Instant};

use clap::Args;
use orchestrator::brain::{MovePhase, Status};
use placement::Reason;
use serde::Serialize;
use world::RegionId;

/// Where the crowd gathers (the gateway's spawn region).
const CLUB: RegionId = RegionId::new(1, 1);
/// How often the bench reads the orchestrator's status.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

#[derive(Args)]
pub struct PlacementBenchArgs {
    /// Bots in the crowd (behaviour club).
    #[arg(long, default_value_t = 150)]
    bots: usize,
    /// How long the crowd stays once it is there.
    #[arg(long, default_value = "25s", value_parser = crate::parse_duration, value_name = "DURATION")]
    stay: Duration,
    /// Longest wait for the region to be packed back after the crowd left.
    #[arg(long, default_value = "90s", value_parser = crate::parse_duration, value_name = "DURATION")]
    settle: Duration,
    #[arg(long)]
    json: bool,
}

fn free_addr() -> anyhow::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

/// Seconds since the bots started connecting, for each step; None if it never happened.
#[derive(Serialize, Default)]
struct Timeline {
    /// The club region's reports first showed the busy threshold of avatars (the crowd arrived).
    crowd_arrived_s: Option<f64>,
    /// The orchestrator decided to move the region (it saw it busy) and started the migration.
    migration_started_s: Option<f64>,
    migration_committed_s: Option<f64>,
    /// The bots left and the region's reports showed no avatars.
    crowd_left_s: Option<f64>,
    /// The orchestrator started packing the region back onto the small host, and committed it.
    pack_started_s: Option<f64>,
    packed_back_s: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    bots: usize,
    small_host: String,
    big_host: String,
    timeline: Timeline,
    /// From the crowd's arrival to the committed move to the big host (acceptance: ≤ 10 s).
    moved_after_arrival_s: Option<f64>,
    /// From the crowd's departure to the committed pack back (acceptance: ≤ 60 s).
    packed_after_departure_s: Option<f64>,
    /// Median of the club region's per-second tick p99 while crowded on the small host, and on
    /// the big host.
    tick_p99_ms_before: Option<f64>,
    tick_p99_ms_after: Option<f64>,
    /// Median avatars in the region over the same samples: the move comes within seconds of
    /// the threshold, so "before" covers the crowd still arriving.
    avatars_before: Option<f64>,
    avatars_after: Option<f64>,
    tick_budget_ms: f64,
    /// Most moves of any one region during the run (acceptance: ≤ 2).
    max_moves_per_region: u32,
    moves: Vec<String>,
    /// What the bots saw: disconnects (acceptance: 0), update gaps.
    bot_disconnects: u64,
    bot_failed: u64,
    bot_gap_p99_ms: f64,
    bot_gap_max_ms: f64,
    passed: bool,
}

pub fn bench(a: PlacementBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.bots >= 1, "--bots must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = rt.block_on(run(&a))?;
    crate::bench::emit(&report, a.json)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

async fn run(a: &PlacementBenchArgs) -> anyhow::Result<Report> {
    let mut procs = crate::children::Children::default();
    let orch = free_addr()?;
    procs.spawn(&["orchestrator", "--listen", &orch])?;
    let orch_url = format!("http://{orch}");
    let (small_api, small_link, big_api, big_link) = (free_addr()?, free_addr()?, free_addr()?, free_addr()?);
    let grid: Vec<String> = (0..3).flat_map(|y| (0..3).map(move |x| format!("{x},{y}"))).collect();
    let mut small_args =
        vec!["host", "--listen", &small_api, "--link", &small_link, "--directory", &orch_url];
    small_args.extend(["--cores", "1", "--regions"]);
    small_args.extend(grid.iter().map(String::as_str));
    procs.spawn(&small_args)?;
    procs.spawn(&[
        "host",
        "--listen",
        &big_api,
        "--link",
        &big_link,
        "--directory",
        &orch_url,
        "--cores",
        "2",
    ])?;
    let gw = free_addr()?;
    let club = CLUB.to_string();
    procs.spawn(&["gateway", "--listen", &gw, "--directory", &orch_url, "--spawn", &club])?;

    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let status = || async {
        let r = http.get(format!("{orch_url}/status")).send().await?;
        anyhow::Ok(r.json::<Status>().await?)
    };
    // Both hosts report, and every region has a report, before the crowd comes.
    let ready = Instant::now();
    loop {
        let st = status().await?;
        let reported = st.regions.iter().filter(|r| r.load.is_some()).count();
        if st.hosts.len() == 2 && st.hosts.iter().all(|h| h.report_age_ms.is_some()) && reported == grid.len()
        {
            break;
        }
        anyhow::ensure!(ready.elapsed() < Duration::from_secs(60), "the cluster did not come up: {st:?}");
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    if !a.json {
        eprintln!("bench placement: 9 regions on the small host; {} bots gather in {CLUB}", a.bots);
    }

    let started = Instant::now();
    // The orchestrator's clock, mapped onto the bench's: decisions carry its milliseconds.
    let st0 = status().await?;
    let offset_ms = st0.now_ms as f64 - started.elapsed().as_secs_f64() * 1000.0;
    let at = |orch_ms: u64| ((orch_ms as f64 - offset_ms) / 1000.0).max(0.0);
    let mut config = bot::BotConfig::new(format!("ws://{gw}/ws"), a.bots, bot::Behaviour::Club, a.stay);
    config.ramp = Duration::from_secs(3);
    let mut crowd = Some(tokio::spawn(bot::run_bots(config)));

    let busy_avatars = placement::Policy::default().busy_avatars;
    let mut t = Timeline::default();
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let (mut crowd_before, mut crowd_after) = (Vec::new(), Vec::new());
    let mut budget = 1000.0 / 45.0;
    let mut bots_done = None;
    let mut last;
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let now = started.elapsed().as_secs_f64();
        let st = status().await?;
        if let Some(r) = st.regions.iter().find(|r| r.region == CLUB) {
            if let Some(l) = &r.load {
                let crowded = l.avatars >= busy_avatars;
                if crowded && t.crowd_arrived_s.is_none() {
                    t.crowd_arrived_s = Some(now);
                }
                if crowded {
                    budget = l.tick_budget_ms;
                    if r.host == small_link {
                        before.push(l.tick_p99_ms);
                        crowd_before.push(f64::from(l.avatars));
                    } else if r.host == big_link {
                        after.push(l.tick_p99_ms);
                        crowd_after.push(f64::from(l.avatars));
                    }
                }
                if bots_done.is_some() && l.avatars == 0 && t.crowd_left_s.is_none() {
                    t.crowd_left_s = Some(now);
                }
            }
        }
        for d in &st.decisions {
            let Some(step) = d.step.as_ref().filter(|s| s.mv.region == CLUB) else { continue };
            let slot = match (step.mv.reason, step.phase) {
                (Reason::Busy, MovePhase::Started) => &mut t.migration_started_s,
                (Reason::Busy, MovePhase::Committed) => &mut t.migration_committed_s,
                (Reason::Pack, MovePhase::Started) if t.migration_committed_s.is_some() => {
                    &mut t.pack_started_s
                }
                (Reason::Pack, MovePhase::Committed) if t.migration_committed_s.is_some() => {
                    &mut t.packed_back_s
                }
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(at(d.at_ms));
            }
        }
        last = st;
        if let Some(c) = crowd.take_if(|c| c.is_finished()) {
            bots_done = Some(c.await??);
            if !a.json {
                eprintln!("bench placement: the crowd left at {now:.1} s");
            }
            continue;
        }
        if t.packed_back_s.is_some() {
            break;
        }
        if let Some(left) = t.crowd_left_s {
            if now - left > a.settle.as_secs_f64() {
                break;
            }
        }
        let crowd_limit = a.stay + Duration::from_secs(120);
        anyhow::ensure!(
            bots_done.is_some() || started.elapsed() < crowd_limit,
            "the bots did not finish within {crowd_limit:?}"
        );
    }
    let bots = match bots_done {
        Some(b) => b,
        None => anyhow::bail!("the bots never finished"),
    };
    let moves: Vec<String> = last
        .decisions
        .iter()
        .filter(|d| d.step.as_ref().is_some_and(|s| s.phase == MovePhase::Committed))
        .map(|d| format!("[{:.1}s] {}", at(d.at_ms), d.text))
        .collect();
    let max_moves = last.regions.iter().map(|r| r.moves).max().unwrap_or(0);
    let moved_after = t.migration_committed_s.zip(t.crowd_arrived_s).map(|(c, a)| c - a);
    let packed_after = t.packed_back_s.zip(t.crowd_left_s).map(|(p, l)| p - l);
    let passed = moved_after.is_some_and(|s| s <= 10.0)
        && packed_after.is_some_and(|s| s <= 60.0)
        && bots.disconnects == 0
        && bots.failed == 0
        && max_moves <= 2;
    Ok(Report {
        bots: a.bots,
        small_host: small_link,
        big_host: big_link,
        timeline: t,
        moved_after_arrival_s: moved_after,
        packed_after_departure_s: packed_after,
        tick_p99_ms_before: median(&mut before),
        tick_p99_ms_after: median(&mut after),
        avatars_before: median(&mut crowd_before),
        avatars_after: median(&mut crowd_after),
        tick_budget_ms: budget,
        max_moves_per_region: max_moves,
        moves,
        bot_disconnects: bots.disconnects,
        bot_failed: bots.failed,
        bot_gap_p99_ms: bots.gap_p99_ms,
        bot_gap_max_ms: bots.gap_max_ms,
        passed,
    })
}
