//! `terrane`: run a small grid, run a host, or measure the region core.

mod bench;
mod bench_migrate;
mod demo;
mod migrate_cmd;
mod run;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use world::RegionId;

// Regions allocate and free whole tables when snapshots are built and restored; mimalloc keeps
// that memory instead of returning it to the kernel page by page.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "terrane",
    version,
    about = "A seamless virtual world whose regions move between machines while they run.",
    long_about = "A seamless virtual world whose regions move between machines while they run.\n\n\
        `terrane run` starts a whole small grid on this machine with built-in defaults.\n\
        `terrane host` runs one region host of a cluster. `terrane bench` measures."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a small world on this machine: a 3×3 grid with wandering avatars and moving objects,
    /// a one-line status each second, and the control API (default http://127.0.0.1:7070).
    Run(run::RunArgs),
    /// Run a region host: ticks its regions on --cores threads and serves the control API.
    Host(HostArgs),
    /// Run the orchestrator: serves the region directory (region → host, epoch) to hosts.
    Orchestrator(OrchestratorArgs),
    /// Move a running region to another host by live migration, showing its progress.
    Migrate(migrate_cmd::MigrateArgs),
    /// Measure the region core and print the figures (as one JSON object with --json).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Args)]
struct HostArgs {
    /// Address of the control API (HTTP: /regions, /metrics).
    #[arg(long, default_value = "127.0.0.1:7071")]
    listen: SocketAddr,
    /// Threads that tick regions (default: all cores).
    #[arg(long)]
    cores: Option<usize>,
    /// Regions to load at start, as X,Y (more can be loaded with POST /regions/X,Y).
    #[arg(long, num_args = 0.., value_name = "X,Y")]
    regions: Vec<RegionId>,
    /// Terrain seed for new regions.
    #[arg(long, default_value_t = 1)]
    seed: u32,
    /// Address of the link listener (other hosts and gateways connect here); this is the
    /// host's name in the directory and the HOST of `terrane migrate --to HOST`.
    #[arg(long, default_value = "127.0.0.1:7171")]
    link: SocketAddr,
    /// Directory to register in (an orchestrator's URL, e.g. http://127.0.0.1:7000). Without
    /// it the host keeps a private directory and cannot take part in migrations.
    #[arg(long, value_name = "URL")]
    directory: Option<String>,
}

#[derive(Args)]
struct OrchestratorArgs {
    /// Address of the directory API.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// File the directory is kept in across restarts (written on every change).
    #[arg(long, value_name = "FILE")]
    data: Option<std::path::PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TERRANE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Host(args) => run_host(args),
        Command::Orchestrator(args) => run_orchestrator(args),
        Command::Migrate(args) => migrate_cmd::migrate(args),
        Command::Bench(cmd) => bench::bench(cmd),
    };
    if let Err(e) = result {
        // The chain of causes, without a backtrace: this is for the person at the terminal.
        eprintln!("terrane: error: {e:#}");
        std::process::exit(1);
    }
}

fn run_host(args: HostArgs) -> anyhow::Result<()> {
    let mut config = host::HostConfig { seed: args.seed, ..Default::default() };
    if let Some(c) = args.cores {
        anyhow::ensure!(c >= 1, "--cores must be at least 1");
        config.cores = c;
    }
    let prometheus = host::metrics::prometheus();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let directory: std::sync::Arc<dyn directory::Directory> = match &args.directory {
            Some(url) => std::sync::Arc::new(directory::HttpDirectory::new(url)),
            None => std::sync::Arc::new(directory::MemoryDirectory::new()),
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        let link = tokio::net::TcpListener::bind(args.link)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for links on {}: {e}", args.link))?;
        let host = host::Host::start(config);
        let net = host::net::Net::start(host.clone(), link, directory);
        for r in &args.regions {
            net.claim_new(*r, None).await.map_err(|e| anyhow::anyhow!("cannot load region {r}: {e}"))?;
        }
        println!(
            "terrane host: {} cores, control API on http://{}, links on {}",
            host.cores(),
            listener.local_addr()?,
            net.name()
        );
        let served = axum::serve(listener, host::api::router(host.clone(), prometheus, Some(net)))
            .with_graceful_shutdown(run::stop_signal(None))
            .await;
        host.shutdown();
        served?;
        anyhow::Ok(())
    })
}

fn run_orchestrator(args: OrchestratorArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async {
        let dir: std::sync::Arc<dyn directory::Directory> = match args.data {
            Some(path) => std::sync::Arc::new(directory::MemoryDirectory::persistent(path)?),
            None => std::sync::Arc::new(directory::MemoryDirectory::new()),
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        println!("terrane orchestrator: directory on http://{}/directory", listener.local_addr()?);
        axum::serve(listener, directory::router(dir)).with_graceful_shutdown(run::stop_signal(None)).await?;
        anyhow::Ok(())
    })
}

/// Parses durations like `10s`, `1m30s`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write a duration like 10s, 2m or 500ms)"))
}
