//! `terrane run`: the embedded default grid in one process.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use world::RegionId;

use crate::demo::Population;

#[derive(Args)]
pub struct RunArgs {
    /// Stop by itself after this long (e.g. 10s, 2m); without it, run until Ctrl-C.
    #[arg(long = "for", value_parser = crate::parse_duration, value_name = "DURATION")]
    pub for_: Option<Duration>,
    /// Address of the control API (HTTP: /regions, /metrics).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Threads that tick regions (default: all cores).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Side of the square grid of regions.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub grid: u16,
    /// Wandering avatars per region.
    #[arg(long, default_value_t = 2)]
    pub avatars: usize,
    /// Objects per region (some glide, some get thrown, most stand still).
    #[arg(long, default_value_t = 150)]
    pub objects: usize,
    /// Seed of the terrain and of the population.
    #[arg(long, default_value_t = 1)]
    pub seed: u32,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = host::HostConfig { seed: args.seed, ..Default::default() };
    if let Some(c) = args.cores {
        anyhow::ensure!(c >= 1, "--cores must be at least 1");
        config.cores = c;
    }
    let prometheus = host::metrics::prometheus();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    // Bind first: a busy port is the most likely failure and should stop us before anything runs.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(args.listen))
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e} (pick another with --listen)", args.listen))?;

    let api_addr = listener.local_addr()?;
    let host = host::Host::start(config);
    let regions: Vec<RegionId> =
        (0..args.grid).flat_map(|y| (0..args.grid).map(move |x| RegionId::new(x, y))).collect();
    for &r in &regions {
        host.load_new(r, None)?;
    }
    let population = Population::start(host.clone(), &regions, args.avatars, args.objects, args.seed);
    println!(
        "terrane: {} regions on {} cores; control API http://{} (metrics at /metrics); {}",
        regions.len(),
        host.cores(),
        api_addr,
        match args.for_ {
            Some(d) => format!("stopping after {}", humantime::format_duration(d)),
            None => "Ctrl-C to stop".into(),
        }
    );

    let started = Instant::now();
    let result = rt.block_on(async {
        let server = axum::serve(listener, host::api::router(host.clone(), prometheus))
            .with_graceful_shutdown(stop_signal(args.for_));
        let status = async {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.tick().await;
            loop {
                every.tick().await;
                println!("{}", status_line(&host, started.elapsed()));
            }
        };
        tokio::select! {
            r = server => r.map_err(anyhow::Error::from),
            _ = status => Ok(()),
        }
    });
    population.stop();
    host.shutdown();
    println!("{}", status_line(&host, started.elapsed()));
    println!("terrane: stopped cleanly");
    result
}

fn status_line(host: &host::Host, elapsed: Duration) -> String {
    let stats = host.all_stats();
    let entities: usize = stats.iter().map(|s| s.entities).sum();
    let avatars: usize = stats.iter().map(|s| s.avatars).sum();
    let ticking = stats.iter().filter(|s| s.ticks > 0).count();
    let p99 = stats.iter().map(|s| s.tick_p99_ms).fold(0.0, f64::max);
    let overruns: u64 = stats.iter().map(|s| s.overruns).sum();
    format!(
        "[{:>5}s] regions {} ({} ticking) · entities {} · avatars {} · tick p99 {:.2} ms · overruns {}",
        elapsed.as_secs(),
        stats.len(),
        ticking,
        entities,
        avatars,
        p99,
        overruns
    )
}

/// Resolves on Ctrl-C, SIGTERM, or after `limit`.
pub async fn stop_signal(limit: Option<Duration>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let timer = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
        _ = timer => {}
    }
}
