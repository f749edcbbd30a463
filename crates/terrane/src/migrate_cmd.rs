//! `terrane migrate REGION --to HOST`: starts a live migration through the source host's
//! control API and follows it with a progress bar until it commits or aborts.

use std::time::{Duration, Instant};

use clap::Args;
use host::api::{MigrateRequest, MigrateStarted};
use world::RegionId;

#[derive(Args)]
pub struct MigrateArgs {
    /// The region to move, as X,Y.
    region: RegionId,
    /// Link address of the host to move it to (as printed by `terrane run` / `terrane host`).
    #[arg(long, value_name = "HOST")]
    to: String,
    /// Control API of the host that has the region now.
    #[arg(long, default_value = "http://127.0.0.1:7070", value_name = "URL")]
    api: String,
    /// Freeze once the remainder fits this many milliseconds (default: one 45 Hz tick).
    #[arg(long)]
    freeze_budget_ms: Option<f64>,
    /// Most pre-copy rounds (default 30).
    #[arg(long)]
    max_rounds: Option<u32>,
    /// When the rounds do not converge: freeze anyway (up to five ticks) or abort.
    #[arg(long, value_parser = ["freeze", "abort"])]
    on_no_convergence: Option<String>,
    /// pre-copy (live, the default) or stop-and-copy (freeze first, then copy everything).
    #[arg(long, value_parser = ["pre-copy", "stop-and-copy"])]
    strategy: Option<String>,
    /// Give up waiting for the outcome after this long.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// The control token of the source host (`terrane run` prints it), sent as
    /// `Authorization: Bearer TOKEN`.
    #[arg(long, env = "TERRANE_CONTROL_TOKEN", hide_env_values = true)]
    control_token: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Default headers for requests to a control API: the bearer token, when there is one.
pub fn bearer_headers(token: Option<&str>) -> anyhow::Result<reqwest::header::HeaderMap> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| anyhow::anyhow!("the control token must be printable ASCII"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(headers)
}

pub fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let api = args.api.trim_end_matches('/').to_string();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .default_headers(bearer_headers(args.control_token.as_deref())?)
        .build()?;
    let req = MigrateRequest {
        to: args.to.clone(),
        freeze_budget_ms: args.freeze_budget_ms,
        max_rounds: args.max_rounds,
        max_bytes_factor: None,
        on_no_convergence: args.on_no_convergence.clone(),
        strategy: args.strategy.clone(),
    };
    let resp = client
        .post(format!("{api}/regions/{}/migrate", args.region))
        .json(&req)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the control API at {api}: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        anyhow::bail!(
            "migration of {} refused ({status}): {}",
            args.region,
            body["error"].as_str().unwrap_or("?")
        );
    }
    let started: MigrateStarted = resp.json().await?;

    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")?);
        b.enable_steady_tick(Duration::from_millis(80));
        b
    };
    let deadline = Instant::now() + args.timeout;
    let status = loop {
        let s: serde_json::Value = client
            .get(format!("{api}/migrations/{}", started.id))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        bar.set_message(format!(
            "{} → {}: {} · round {} · {} sent",
            args.region,
            args.to,
            s["phase"].as_str().unwrap_or("?"),
            s["rounds"],
            human_bytes(s["bytes"].as_u64().unwrap_or(0))
        ));
        let done = s["done"].as_bool().unwrap_or(false);
        let settled = !s["committed"].as_bool().unwrap_or(false) || !s["freeze_ms"].is_null();
        if done && settled {
            break s;
        }
        if Instant::now() > deadline {
            bar.finish_and_clear();
            anyhow::bail!("no outcome within {}; last seen: {s}", humantime::format_duration(args.timeout));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    bar.finish_and_clear();
    if args.json {
        println!("{status}");
    } else if status["committed"].as_bool() == Some(true) {
        println!(
            "{} moved to {}: freeze {:.2} ms, total {:.1} ms, {} rounds, {} (bytes per round: {})",
            args.region,
            args.to,
            status["freeze_ms"].as_f64().unwrap_or(f64::NAN),
            status["total_ms"].as_f64().unwrap_or(f64::NAN),
            status["rounds"],
            human_bytes(status["bytes"].as_u64().unwrap_or(0)),
            status["bytes_per_round"]
        );
    } else {
        println!(
            "{} stays where it was: migration aborted: {}",
            args.region,
            status["abort_reason"].as_str().unwrap_or("no reason given")
        );
    }
    if status["committed"].as_bool() != Some(true) {
        std::process::exit(2);
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
