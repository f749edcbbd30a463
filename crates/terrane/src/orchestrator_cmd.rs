//! `terrane orchestrator`: the control plane as a process. With no `--directory` it keeps the
//! directory itself (in memory, or in `--data FILE`) and serves it to hosts and gateways; with
//! `--directory etcd://…` the directory lives in etcd and this process only decides.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use clap::Args;
use directory::{Directory, MemoryDirectory};

#[derive(Args)]
pub struct OrchestratorArgs {
    /// Address of the orchestrator's API (/status, /reports, /hosts/NAME/drain) and, when the
    /// directory is embedded, of the directory (/directory).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// File the embedded directory is kept in across restarts (written on every change).
    #[arg(long, value_name = "FILE", conflicts_with = "directory")]
    pub data: Option<std::path::PathBuf>,
    /// An external directory instead of the embedded one: etcd://HOST:PORT[/PREFIX].
    #[arg(long, value_name = "URL")]
    pub directory: Option<String>,
    /// Sent to hosts' control APIs as a bearer token, and required for reports and drains here.
    #[arg(long, env = "TERRANE_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
    /// Only drain and fail over: make no placement moves of its own.
    #[arg(long)]
    pub no_autoplace: bool,
    /// Terrain seed of the world (for a region restarted with no snapshot held).
    #[arg(long, default_value_t = 1)]
    pub seed: u32,
}

pub fn run(args: OrchestratorArgs) -> anyhow::Result<()> {
    // Every migration's commit is a compare-and-swap answered here, inside the region's freeze:
    // an answer that waits for a core lengthens the freeze.
    let rt = crate::raised_runtime("orchestrator")?;
    rt.block_on(async {
        let (dir, embedded): (Arc<dyn Directory>, bool) = match &args.directory {
            Some(url) => (directory::connect(url).await?, false),
            None => {
                let d = Arc::new(match &args.data {
                    Some(path) => MemoryDirectory::persistent(path.clone())?,
                    None => MemoryDirectory::new(),
                });
                d.sweep_expired();
                (d, true)
            }
        };
        let config = orchestrator::OrchestratorConfig {
            control_token: args.control_token.clone().filter(|t| !t.is_empty()),
            autoplace: !args.no_autoplace,
            world_seed: args.seed,
            ..Default::default()
        };
        let orch = orchestrator::Orchestrator::start(dir.clone(), config)?;
        let mut app = orchestrator::api::router(orch);
        if embedded {
            app = app.merge(directory::router(dir));
        }
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        let at = listener.local_addr()?;
        match &args.directory {
            Some(url) => println!("terrane orchestrator: API on http://{at} (status at /status); directory {url}"),
            None => println!(
                "terrane orchestrator: API on http://{at} (status at /status); directory on http://{at}/directory"
            ),
        }
        // The migration's commit point is a request to this server: no Nagle delay on answers.
        axum::serve(listener.tap_io(crate::no_delay), app).with_graceful_shutdown(crate::run::stop_signal(None)).await?;
        anyhow::Ok(())
    })
}
