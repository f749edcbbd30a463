//! `terrane`: run a small grid, run a host, or measure the region core.

mod bench;
mod bench_migrate;
mod bench_placement;
mod bench_store;
mod children;
mod cluster;
mod cluster_view;
mod demo;
mod durable_cmd;
mod living;
mod migrate_cmd;
mod ops;
mod orchestrator_cmd;
mod run;

use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::ListenerExt;
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
    /// Run the orchestrator: places regions by load, drains hosts, fails over dead ones, and
    /// (unless --directory names etcd) serves the region directory to hosts.
    Orchestrator(orchestrator_cmd::OrchestratorArgs),
    /// Show the cluster: hosts, regions, load, migrations in flight (a table, or --json).
    Status(ops::StatusArgs),
    /// Move every region off a host by live migration (nobody is kicked), then it can stop.
    Drain(ops::DrainArgs),
    /// Let a drained host take regions again (a drain still running stops).
    Undrain(ops::UndrainArgs),
    /// Move a running region to another host by live migration, showing its progress.
    Migrate(migrate_cmd::MigrateArgs),
    /// Run a gateway: the clients' edge (WebSocket at /ws, guest tokens at /guest?name=).
    Gateway(GatewayArgs),
    /// Run headless bots against a gateway and print what they measured.
    Bot(BotArgs),
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
    /// Directory to register in: an orchestrator's URL (e.g. http://127.0.0.1:7000) or an etcd
    /// cluster (etcd://127.0.0.1:2379). Without it the host keeps a private directory and cannot
    /// take part in migrations.
    #[arg(long, value_name = "URL")]
    directory: Option<String>,
    /// Where to send load reports (default: the --directory URL when it is an orchestrator's).
    #[arg(long, value_name = "URL")]
    orchestrator: Option<String>,
    /// Requests to the control API that change something (load, unload, migrate, restore) must
    /// carry `Authorization: Bearer TOKEN`. Without it the API is open to anyone who reaches it.
    #[arg(long, env = "TERRANE_CONTROL_TOKEN", hide_env_values = true, value_parser = parse_control_token)]
    control_token: Option<String>,
    /// Keep the regions durable in this directory (checkpoints and write-ahead log); regions
    /// stored there are recovered when loaded.
    #[arg(long, value_name = "DIR")]
    data: Option<std::path::PathBuf>,
    /// Keep the regions durable in PostgreSQL (postgres://user@host:port/db).
    #[arg(long, env = "TERRANE_STORE", value_name = "URL")]
    store: Option<String>,
}

#[derive(Args)]
struct GatewayArgs {
    /// Address clients connect to (WebSocket at ws://ADDR/ws).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The directory to find regions in (an orchestrator's URL).
    #[arg(long, value_name = "URL")]
    directory: String,
    /// Secret that signs session tokens, as text (default: random, so tokens die with the gateway).
    #[arg(long, env = "TERRANE_GATEWAY_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Terrain seed of the world (must match the hosts').
    #[arg(long, default_value_t = 1)]
    seed: u32,
    /// Where new avatars appear, as X,Y.
    #[arg(long, default_value = "1,1")]
    spawn: RegionId,
    /// Refuse to mint guest tokens at /guest.
    #[arg(long)]
    no_guests: bool,
}

#[derive(Args)]
struct BotArgs {
    /// The gateway's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws", value_name = "URL")]
    gateway: String,
    /// How many bots.
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// wander (stroll around), club (gather in one spot), commute (back and forth across a border).
    #[arg(long, default_value = "wander", value_parser = ["wander", "club", "commute"])]
    behaviour: String,
    /// How long each bot stays.
    #[arg(long = "for", default_value = "30s", value_parser = crate::parse_duration, value_name = "DURATION")]
    for_: Duration,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
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
        Command::Orchestrator(args) => orchestrator_cmd::run(args),
        Command::Status(args) => ops::status(args),
        Command::Drain(args) => ops::drain(args),
        Command::Undrain(args) => ops::undrain(args),
        Command::Migrate(args) => migrate_cmd::migrate(args),
        Command::Gateway(args) => run_gateway(args),
        Command::Bot(args) => run_bot(args),
        Command::Bench(cmd) => bench::bench(cmd),
    };
    if let Err(e) = result {
        // The chain of causes, without a backtrace: this is for the person at the terminal.
        eprintln!("terrane: error: {e:#}");
        std::process::exit(1);
    }
}

/// A two-thread tokio runtime whose threads ask for the tick workers' raised priority (where
/// permitted: root or CAP_SYS_NICE), so that nothing else on the machine holds them back: for
/// processes on the path of every client (the gateway) or of every migration's commit (the
/// orchestrator, which keeps the directory). `what` names the process in the one log line said
/// when raising is not permitted.
pub fn raised_runtime(what: &'static str) -> std::io::Result<tokio::runtime::Runtime> {
    let raised = std::sync::atomic::AtomicBool::new(true);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(move || {
            if !host::shift_priority(host::TICK_NICE)
                && raised.swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::info!("{what} threads run at the process's priority (raising it is not permitted)");
            }
        })
        .enable_all()
        .build()
}

/// A host's two-thread tokio runtime, whose threads are raised while a region held here is
/// frozen for a migration (`host::boost`).
pub fn host_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(host::boost::register_thread)
        .on_thread_stop(host::boost::unregister_thread)
        .enable_all()
        .build()
}

/// A host's configuration from the command line: all cores unless `--cores` says otherwise.
pub fn host_config(seed: u32, cores: Option<usize>) -> anyhow::Result<host::HostConfig> {
    let mut config = host::HostConfig { seed, ..Default::default() };
    if let Some(c) = cores {
        anyhow::ensure!(c >= 1, "--cores must be at least 1");
        config.cores = c;
    }
    Ok(config)
}

fn run_host(args: HostArgs) -> anyhow::Result<()> {
    let config = host_config(args.seed, args.cores)?;
    let prometheus = host::metrics::prometheus();
    let rt = host_runtime()?;
    rt.block_on(async {
        let directory: std::sync::Arc<dyn directory::Directory> = match &args.directory {
            Some(url) => directory::connect(url).await?,
            None => std::sync::Arc::new(directory::MemoryDirectory::new()),
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        let link = tokio::net::TcpListener::bind(args.link)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for links on {}: {e}", args.link))?;
        // Compiled script modules are kept with the data, so a restart does not compile them again.
        let module_cache = args.data.as_ref().map(|d| d.join("modules"));
        let host = host::Host::start_with_module_cache(config, module_cache);
        if args.data.is_some() || args.store.is_some() {
            host.set_durability(
                durable_cmd::DataArgs::for_host(args.data.clone(), args.store.clone()).open()?,
            );
        }
        let net = host::net::Net::start(host.clone(), link, directory);
        for r in &args.regions {
            net.claim_new(*r, None).await.map_err(|e| anyhow::anyhow!("cannot load region {r}: {e}"))?;
        }
        if args.directory.is_some() {
            host::report::start(net.clone(), report_config(&listener, &args)?);
        }
        println!(
            "terrane host: {} cores, control API on http://{}, links on {}",
            host.cores(),
            listener.local_addr()?,
            net.name()
        );
        let api = host::api::router_with_token(host.clone(), prometheus, Some(net), args.control_token);
        let served =
            axum::serve(listener.tap_io(no_delay), api).with_graceful_shutdown(run::stop_signal(None)).await;
        host.shutdown();
        served?;
        anyhow::Ok(())
    })
}

/// Liveness and load reports of `terrane host`: to the orchestrator the directory URL names.
fn report_config(
    api: &tokio::net::TcpListener,
    args: &HostArgs,
) -> anyhow::Result<host::report::ReportConfig> {
    Ok(host::report::ReportConfig {
        api: format!("http://{}", api.local_addr()?),
        orchestrator: args
            .orchestrator
            .clone()
            .or_else(|| args.directory.clone().filter(|d| d.starts_with("http"))),
        ttl: host::report::DEFAULT_HOST_TTL,
        token: args.control_token.clone().filter(|t| !t.is_empty()),
    })
}

fn run_gateway(args: GatewayArgs) -> anyhow::Result<()> {
    // A gateway is on every client's path as much as a tick is: an update it sends late is late
    // for every client it carries.
    let rt = raised_runtime("gateway")?;
    rt.block_on(async {
        let config = gateway::GatewayConfig {
            secret: args.secret.map(String::into_bytes),
            world_seed: args.seed,
            spawn_region: args.spawn,
            guest_tokens: !args.no_guests,
            ..Default::default()
        };
        let directory = std::sync::Arc::new(directory::HttpDirectory::new(&args.directory));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        let gw =
            gateway::Gateway::start_with_routes(config, directory, listener, web::viewer_router()).await?;
        println!(
            "terrane gateway: clients connect to {}; guest tokens at {}NAME; viewer at http://{}/viewer",
            gw.ws_url(),
            gw.guest_endpoint(),
            gw.addr()
        );
        run::stop_signal(None).await;
        gw.shutdown().await;
        anyhow::Ok(())
    })
}

fn run_bot(args: BotArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.count >= 1, "--count must be at least 1");
    let behaviour: bot::Behaviour = args.behaviour.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report =
        rt.block_on(bot::run_bots(bot::BotConfig::new(args.gateway, args.count, behaviour, args.for_)))?;
    bench::emit(&report, args.json)
}

/// Small request/answer exchanges (directory compare-and-swap, API calls) must not wait for
/// Nagle's algorithm.
pub fn no_delay(stream: &mut tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// A control token: printable ASCII without spaces, 16 to `MAX_CONTROL_TOKEN_BYTES` bytes.
pub fn parse_control_token(s: &str) -> Result<String, String> {
    let max = host::api::MAX_CONTROL_TOKEN_BYTES;
    if s.len() < 16 || s.len() > max || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("a control token is 16 to {max} printable ASCII characters without spaces"));
    }
    Ok(s.to_string())
}

/// A fresh random control token (32 hex digits), as `terrane run` makes at start.
pub fn new_control_token() -> String {
    format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>())
}

/// Parses durations like `10s`, `1m30s`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write a duration like 10s, 2m or 500ms)"))
}
