//! `terrane status`, `terrane drain HOST` and `terrane undrain HOST`: the operator's view of the
//! cluster, the way to empty a host before stopping it and to let it take regions again, all
//! through the orchestrator's API.

use std::time::{Duration, Instant};

use clap::Args;
use orchestrator::brain::{DrainPhase, DrainStatus, Status};

/// Where `terrane run` serves the orchestrator's API.
const DEFAULT_ORCHESTRATOR: &str = "http://127.0.0.1:7070";
/// How often `terrane drain` asks for progress.
const DRAIN_POLL: Duration = Duration::from_millis(250);

#[derive(Args)]
pub struct StatusArgs {
    /// The orchestrator's URL (`terrane run` serves it on its first control API; a standalone
    /// `terrane orchestrator` on http://127.0.0.1:7000).
    #[arg(long, default_value = DEFAULT_ORCHESTRATOR, value_name = "URL")]
    pub orchestrator: String,
    /// Print the orchestrator's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DrainArgs {
    /// The host to empty, by its name (its link address, as `terrane status` lists it).
    pub host: String,
    #[arg(long, default_value = DEFAULT_ORCHESTRATOR, value_name = "URL")]
    pub orchestrator: String,
    #[arg(long, env = "TERRANE_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
    /// Give up waiting after this long (the drain itself goes on in the orchestrator).
    #[arg(long, default_value = "10m", value_parser = crate::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Print the final drain status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct UndrainArgs {
    /// The drained host, by its name (its link address, as `terrane status` lists it).
    pub host: String,
    #[arg(long, default_value = DEFAULT_ORCHESTRATOR, value_name = "URL")]
    pub orchestrator: String,
    #[arg(long, env = "TERRANE_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
}

/// `terrane undrain HOST`: a drained host takes regions again (a running drain stops).
pub fn undrain(args: UndrainArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let base = args.orchestrator.trim_end_matches('/').to_string();
    let url = format!("{base}/hosts/{}/undrain", args.host);
    let mut req = client()?.post(&url);
    if let Some(t) = args.control_token.as_deref().filter(|t| !t.is_empty()) {
        req = req.bearer_auth(t);
    }
    let answer: orchestrator::api::Undrained = rt.block_on(answer(req, &format!("POST {url}")))?;
    match answer.ended_drain {
        Some(d) if d.phase == DrainPhase::Running => {
            println!("{} takes regions again; its drain stopped ({})", answer.host, drain_line(&d))
        }
        _ => println!("{} takes regions again", answer.host),
    }
    Ok(())
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?)
}

async fn answer<T: serde::de::DeserializeOwned>(r: reqwest::RequestBuilder, what: &str) -> anyhow::Result<T> {
    let resp = r.send().await.map_err(|e| anyhow::anyhow!("{what}: {e} (is the orchestrator running?)"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        anyhow::bail!("{what}: {status}: {body}");
    }
    Ok(resp.json().await?)
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let base = args.orchestrator.trim_end_matches('/').to_string();
    let st: Status =
        rt.block_on(answer(client()?.get(format!("{base}/status")), &format!("GET {base}/status")))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    print!("{}", table(&st));
    Ok(())
}

/// The status as tables: hosts, regions, migrations in flight, drains, the last decisions.
pub fn table(st: &Status) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<22} {:>5} {:>6} {:>8} {:>8}  {}",
        "HOST", "CORES", "LOAD", "REGIONS", "REPORT", "STATE"
    );
    for h in &st.hosts {
        let state = match (h.alive, h.draining) {
            (false, _) => "dead",
            (true, true) => "draining",
            (true, false) => "alive",
        };
        let age = h.report_age_ms.map_or("-".to_string(), |a| format!("{:.1}s", a as f64 / 1000.0));
        let load = format!("{:.0}%", h.load_milli as f64 / (f64::from(h.cores.max(1)) * 10.0));
        let _ =
            writeln!(o, "{:<22} {:>5} {:>6} {:>8} {:>8}  {}", h.name, h.cores, load, h.regions, age, state);
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<7} {:<22} {:>5} {:>7} {:>7} {:>7} {:>14} {:>5} {:>9}",
        "REGION", "HOST", "EPOCH", "AVATARS", "OBJECTS", "SCRIPTS", "TICK P99/BUDG", "MOVES", "SNAPSHOT"
    );
    for r in &st.regions {
        let (av, ob, sc, tick) = match &r.load {
            Some(l) => (
                l.avatars.to_string(),
                l.objects.to_string(),
                l.scripts.to_string(),
                format!("{:.2}/{:.1} ms", l.tick_p99_ms, l.tick_budget_ms),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let snap = r.snapshot_age_ms.map_or("-".to_string(), |a| format!("{:.0}s ago", a as f64 / 1000.0));
        let _ = writeln!(
            o,
            "{:<7} {:<22} {:>5} {:>7} {:>7} {:>7} {:>14} {:>5} {:>9}",
            r.region.to_string(),
            r.host,
            r.epoch,
            av,
            ob,
            sc,
            tick,
            r.moves,
            snap
        );
    }
    let _ = writeln!(o);
    if st.in_flight.is_empty() {
        let _ = writeln!(o, "no migrations in flight");
    } else {
        let _ = writeln!(o, "IN FLIGHT");
        for f in &st.in_flight {
            let secs = st.now_ms.saturating_sub(f.started_ms) as f64 / 1000.0;
            let _ = writeln!(o, "  {} {} → {} ({:?}, {secs:.1} s)", f.region, f.from, f.to, f.reason);
        }
    }
    for d in &st.drains {
        let _ = writeln!(o, "drain of {}: {}", d.host, drain_line(d));
    }
    let recent = st.decisions.iter().rev().take(8).collect::<Vec<_>>();
    if !recent.is_empty() {
        let _ = writeln!(o, "\nRECENT DECISIONS");
        for d in recent.into_iter().rev() {
            let _ = writeln!(o, "  [{:>7.1}s] {}", d.at_ms as f64 / 1000.0, d.text);
        }
    }
    o
}

fn drain_line(d: &DrainStatus) -> String {
    let phase = match &d.phase {
        DrainPhase::Running => "running".to_string(),
        DrainPhase::Done => "done".to_string(),
        DrainPhase::Failed(why) => format!("FAILED: {why}"),
    };
    format!(
        "{phase}; {} of {} regions moved, {} left, {} failed migrations",
        d.moved, d.regions_at_start, d.regions_left, d.failures
    )
}

pub fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let base = args.orchestrator.trim_end_matches('/').to_string();
    let c = client()?;
    let url = format!("{base}/hosts/{}/drain", args.host);
    let mut req = c.post(&url);
    if let Some(t) = args.control_token.as_deref().filter(|t| !t.is_empty()) {
        req = req.bearer_auth(t);
    }
    let started = Instant::now();
    let mut last: DrainStatus = rt.block_on(answer(req, &format!("POST {url}")))?;
    if !args.json {
        println!("draining {}: {} regions to move off", args.host, last.regions_at_start);
    }
    let mut shown = (u32::MAX, usize::MAX);
    loop {
        if !args.json && (last.moved, last.regions_left) != shown {
            shown = (last.moved, last.regions_left);
            println!("[{:>6.1}s] {}", started.elapsed().as_secs_f64(), drain_line(&last));
        }
        if last.phase != DrainPhase::Running {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < args.timeout,
            "the drain of {} is still running after {:?} (it goes on; see `terrane status`)",
            args.host,
            args.timeout
        );
        std::thread::sleep(DRAIN_POLL);
        last = rt.block_on(answer(c.get(&url), &format!("GET {url}")))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&last)?);
    }
    match &last.phase {
        DrainPhase::Done => {
            if !args.json {
                println!(
                    "{} is empty after {:.1} s: it can be stopped",
                    args.host,
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(())
        }
        DrainPhase::Failed(why) => anyhow::bail!("the drain of {} failed: {why}", args.host),
        DrainPhase::Running => unreachable!("the loop ends only once the drain has ended"),
    }
}
