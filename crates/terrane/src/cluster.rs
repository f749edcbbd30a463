//! The control plane of `terrane run`: an in-process orchestrator over the embedded directory,
//! the hosts' liveness and load reports to it, and hosts of two sizes so placement has a
//! reason to move regions (the first host keeps `--cores`, the second gets half as many).

use std::net::SocketAddr;
use std::sync::Arc;

use directory::Directory;
use host::net::Net;

/// The configuration of the `i`th host of `terrane run`.
pub fn host_config(base: &host::HostConfig, i: usize) -> host::HostConfig {
    let cores = if i == 0 { base.cores } else { (base.cores / 2).max(1) };
    host::HostConfig { cores, ..base.clone() }
}

/// How the orchestrator of `terrane run` acts.
pub struct Placing {
    /// The hosts' control token.
    pub token: Option<String>,
    /// False: only drains and failovers, no placement moves of its own.
    pub autoplace: bool,
}

/// Starts the orchestrator and every host's reports; returns the orchestrator's routes, to be
/// served on `api` (the first host's control API).
pub fn start(
    rt: &tokio::runtime::Runtime,
    directory: Arc<dyn Directory>,
    hosts: &[(Arc<Net>, SocketAddr)],
    api: SocketAddr,
    placing: Placing,
) -> anyhow::Result<axum::Router> {
    let _guard = rt.enter();
    let token = placing.token;
    let config = orchestrator::OrchestratorConfig {
        control_token: token.clone(),
        autoplace: placing.autoplace,
        ..Default::default()
    };
    let orch = orchestrator::Orchestrator::start(directory, config)?;
    for (net, host_api) in hosts {
        host::report::start(
            net.clone(),
            host::report::ReportConfig {
                api: format!("http://{host_api}"),
                orchestrator: Some(format!("http://{api}")),
                ttl: host::report::DEFAULT_HOST_TTL,
                token: token.clone(),
            },
        );
    }
    Ok(orchestrator::api::router(orch))
}
