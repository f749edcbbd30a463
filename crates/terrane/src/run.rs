//! `terrane run`: the embedded default grid in one process: two hosts sharing an in-process
//! directory, each with its control API, the default world split between them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use clap::Args;
use directory::{Directory, MemoryDirectory};
use host::net::Net;
use world::RegionId;

use crate::demo::Population;

#[derive(Args)]
pub struct RunArgs {
    /// Stop by itself after this long (e.g. 10s, 2m); without it, run until Ctrl-C.
    #[arg(long = "for", value_parser = crate::parse_duration, value_name = "DURATION")]
    pub for_: Option<Duration>,
    /// Control API of the first host (HTTP: /regions, /migrations, /metrics, /directory).
    /// The second host's API is on the next port (or any free port when this one is 0).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Threads that tick regions, per host (default: all cores).
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
    /// Address of the gateway clients connect to (WebSocket at ws://ADDR/ws).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway: SocketAddr,
    /// Headless bots to connect through the gateway (they move as `--bot-behaviour` says and
    /// measure what they see).
    #[arg(long, default_value_t = 0)]
    pub bots: usize,
    /// What the bots do: commute (run back and forth across the border east of the spawn
    /// region, between the two hosts), wander (stroll in the spawn region) or club (gather).
    #[arg(long, default_value = "commute", value_parser = ["wander", "club", "commute"])]
    pub bot_behaviour: String,
    /// Token that changes through the control APIs and the dashboard must carry
    /// (default: a fresh random one, printed at start).
    #[arg(long, env = "TERRANE_CONTROL_TOKEN", hide_env_values = true, value_parser = crate::parse_control_token)]
    pub control_token: Option<String>,
    /// The orchestrator only drains and fails over: it makes no placement moves of its own.
    #[arg(long)]
    pub no_autoplace: bool,
    #[command(flatten)]
    pub data: crate::durable_cmd::DataArgs,
}

/// One host of the embedded grid.
struct Node {
    net: Arc<Net>,
    api: SocketAddr,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = crate::host_config(args.seed, args.cores)?;
    let prometheus = host::metrics::prometheus();
    // The hosts', the orchestrator's and the gateway's tasks alike.
    let rt = crate::host_runtime()?;
    let directory: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    let second_api = match args.listen.port() {
        0 => args.listen,
        p => SocketAddr::new(args.listen.ip(), p.checked_add(1).unwrap_or(0)),
    };

    // Changes through the control APIs (and the dashboard's buttons) need this token.
    let control_token = args.control_token.clone().unwrap_or_else(crate::new_control_token);
    let durability = args.data.open()?;
    let mut nodes = Vec::new();
    let mut servers = Vec::new();
    for (i, api) in [args.listen, second_api].into_iter().enumerate() {
        // Bind first: a busy port is the most likely failure and should stop us early.
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(api))
            .map_err(|e| anyhow::anyhow!("cannot listen on {api}: {e} (pick another with --listen)"))?;
        let api = listener.local_addr()?;
        let link = rt.block_on(tokio::net::TcpListener::bind((api.ip(), 0)))?;
        // Compiled script modules are kept with the data, so a restart does not compile them again.
        let module_cache = Some(args.data.data.join("modules"));
        let host = host::Host::start_with_module_cache(crate::cluster::host_config(&config, i), module_cache);
        host.set_durability(durability.clone());
        let net = {
            let _guard = rt.enter();
            Net::start(host.clone(), link, directory.clone())
        };
        let app = host::api::router_with_token(
            host,
            prometheus.clone(),
            Some(net.clone()),
            Some(control_token.clone()),
        )
        .merge(directory::router(directory.clone()));
        servers.push((listener, app));
        nodes.push(Node { net, api });
    }

    let members: Vec<_> = nodes.iter().map(|n| (n.net.clone(), n.api)).collect();
    let placing =
        crate::cluster::Placing { token: Some(control_token.clone()), autoplace: !args.no_autoplace };
    let control = crate::cluster::start(&rt, directory.clone(), &members, nodes[0].api, placing)?;
    servers[0].1 = servers[0].1.clone().merge(control);

    let regions: Vec<RegionId> =
        (0..args.grid).flat_map(|y| (0..args.grid).map(move |x| RegionId::new(x, y))).collect();
    for (i, &r) in regions.iter().enumerate() {
        // The first host gets the larger half.
        let node = &nodes[usize::from(i % 2 == 1)];
        rt.block_on(node.net.claim_new(r, None))?;
    }
    let hosts: Vec<host::Host> = nodes.iter().map(|n| n.net.host().clone()).collect();
    let gateway = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.gateway).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {}: {e} (pick another with --gateway)", args.gateway)
        })?;
        let config = gateway::GatewayConfig { world_seed: args.seed, ..Default::default() };
        let pages = web_pages(&nodes, directory.clone(), &control_token)?;
        anyhow::Ok(gateway::Gateway::start_with_routes(config, directory.clone(), listener, pages).await?)
    })?;
    let guest = gateway.guest_token("Guest")?;
    // A kept world already has its people's things: only a new one is populated.
    let kept = durability.recovered_regions();
    if !kept.is_empty() {
        eprintln!(
            "terrane: world kept in {}: {} regions recovered (--fresh starts anew)",
            args.data.data.display(),
            kept.len()
        );
    }
    let population =
        Population::start(hosts.clone(), &regions, kept.is_empty(), args.avatars, args.objects, args.seed);
    println!(
        "terrane: {} regions on 2 hosts; control APIs http://{} and http://{} (metrics at /metrics); {}",
        regions.len(),
        nodes[0].api,
        nodes[1].api,
        match args.for_ {
            Some(d) => format!("stopping after {}", humantime::format_duration(d)),
            None => "Ctrl-C to stop".into(),
        }
    );
    println!(
        "terrane: hosts {} and {}; move a region with: terrane migrate 1,1 --to {} --api http://{} --control-token {}",
        nodes[0].net.name(),
        nodes[1].net.name(),
        nodes[1].net.name(),
        nodes[0].api,
        control_token
    );
    println!(
        "terrane: gateway {} (guest tokens at {}NAME); a ready guest: {}?token={}",
        gateway.ws_url(),
        gateway.guest_endpoint(),
        guest.url,
        guest.token
    );
    println!(
        "terrane: dashboard http://{addr}/#token={control_token} · viewer http://{addr}/viewer",
        addr = gateway.addr()
    );
    let bots = (args.bots > 0).then(|| {
        let duration = args.for_.unwrap_or(Duration::from_secs(365 * 24 * 3600));
        let behaviour = args.bot_behaviour.parse().unwrap_or(bot::Behaviour::Commute);
        let config = bot::BotConfig::new(gateway.ws_url(), args.bots, behaviour, duration);
        rt.spawn(bot::run_bots(config))
    });

    let started = Instant::now();
    let result = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (listener, app) in servers {
            tasks.spawn(async move { axum::serve(listener.tap_io(crate::no_delay), app).await });
        }
        let status = async {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.tick().await;
            loop {
                every.tick().await;
                println!("{}", status_line(&hosts, &gateway, started.elapsed()));
            }
        };
        tokio::select! {
            _ = stop_signal(args.for_) => Ok(()),
            Some(r) = tasks.join_next() => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::Error::from(e)),
                Err(e) => Err(anyhow::Error::from(e)),
            },
            _ = status => Ok(()),
        }
    });
    if let Some(b) = bots {
        b.abort();
    }
    let last = status_line(&hosts, &gateway, started.elapsed());
    rt.block_on(gateway.shutdown());
    population.stop();
    for h in &hosts {
        h.shutdown();
    }
    println!("{last}");
    println!("terrane: stopped cleanly");
    result
}

/// The dashboard and viewer, reading the hosts through their control APIs.
fn web_pages(nodes: &[Node], directory: Arc<dyn Directory>, token: &str) -> anyhow::Result<axum::Router> {
    let hosts = nodes
        .iter()
        .map(|n| crate::cluster_view::HostEndpoint {
            name: n.net.name().to_string(),
            api: format!("http://{}", n.api),
        })
        .collect();
    let view = crate::cluster_view::HttpCluster::new(hosts, directory, Some(token))?
        .with_orchestrator(&format!("http://{}", nodes[0].api));
    Ok(web::router(Arc::new(view), web::WebConfig { control_token: Some(token.to_string()) }))
}

fn status_line(hosts: &[host::Host], gateway: &gateway::Gateway, elapsed: Duration) -> String {
    let stats: Vec<_> = hosts.iter().flat_map(|h| h.all_stats()).collect();
    let entities: usize = stats.iter().map(|s| s.entities).sum();
    let avatars: usize = stats.iter().map(|s| s.avatars).sum();
    let ticking = stats.iter().filter(|s| s.ticks > 0).count();
    let p99 = stats.iter().map(|s| s.tick_p99_ms).fold(0.0, f64::max);
    let overruns: u64 = stats.iter().map(|s| s.overruns).sum();
    let crossings: u64 = stats.iter().map(|s| s.crossings.arrived).sum();
    let per_host: Vec<String> = hosts.iter().map(|h| h.region_ids().len().to_string()).collect();
    format!(
        "[{:>5}s] regions {} ({} ticking; {} per host) · entities {} · avatars {} · clients {} · crossings {} · tick p99 {:.2} ms · overruns {}",
        elapsed.as_secs(),
        stats.len(),
        ticking,
        per_host.join("+"),
        entities,
        avatars,
        gateway.stats().sessions,
        crossings,
        p99,
        overruns
    ) + &crate::living::status(&stats)
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
