//! The gateway: the clients' edge of terrane. It holds each client's WebSocket session,
//! checks its token, forwards its inputs to whichever host owns the avatar's region right now,
//! and merges the update streams of that region and its neighbours into one stream per client.
//!
//! Clients never learn where regions run: a region that migrates between hosts is followed by
//! the gateway's feed (see `feed`), and the sessions watching it carry on undisturbed.
//!
//! HTTP surface: `GET /ws` (the WebSocket of docs/protocol.md), `GET /guest?name=NAME` (mints
//! a guest token, unless disabled in [`GatewayConfig::guest_tokens`]) and `GET /health`.

mod changes;
pub mod feed;
pub mod limits;
mod session;
pub mod view;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use directory::Directory;
use parking_lot::Mutex;
use proto::Token;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use world::{EntityId, RegionId, Vec3};

use crate::feed::{Feeds, Mailbox};
use crate::limits::*;

pub use feed::FeedError;

/// How a gateway runs. `Default` gives a working gateway for a grid whose hosts use seed 1.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The HMAC secret tokens are signed with (at least 16 bytes). `None`: a random one,
    /// so only tokens minted by this gateway process work.
    pub secret: Option<Vec<u8>>,
    /// The terrain seed of the world, as the hosts use it: region infos are generated from it.
    pub world_seed: u32,
    /// Where new avatars appear.
    pub spawn_region: RegionId,
    /// Radius around an avatar within which entities are streamed, in metres.
    pub draw_distance: f32,
    /// Per-client bandwidth cap in bytes per second, and the burst above it.
    pub client_bytes_per_sec: u64,
    pub client_burst_bytes: u64,
    /// Frames queued for one client before it is dropped as a slow consumer.
    pub send_queue_frames: usize,
    /// How long a new connection may take to send its hello.
    pub hello_timeout: Duration,
    /// Serve `GET /guest?name=` (anyone who can reach the gateway gets a session). Turn off
    /// when tokens come from elsewhere.
    pub guest_tokens: bool,
    /// Subscribe every region in the directory at start, so that mirrors (and late joins)
    /// include objects that never change.
    pub subscribe_all: bool,
    /// This gateway's name in link hellos (logs on the hosts).
    pub name: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            secret: None,
            world_seed: 1,
            spawn_region: RegionId::new(1, 1),
            draw_distance: DEFAULT_DRAW_DISTANCE_M,
            client_bytes_per_sec: CLIENT_BYTES_PER_SEC,
            client_burst_bytes: CLIENT_BURST_BYTES,
            send_queue_frames: SEND_QUEUE_FRAMES,
            hello_timeout: Duration::from_secs(proto::limits::HELLO_TIMEOUT_SECS),
            guest_tokens: true,
            subscribe_all: true,
            name: "gateway".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("token secret: {0}")]
    Secret(#[from] proto::TokenError),
    #[error("draw distance {0} m is outside 1..={max} m", max = proto::limits::MAX_DRAW_DISTANCE)]
    DrawDistance(f32),
    #[error("the gateway listener has no address: {0}")]
    Listener(std::io::Error),
    #[error("cannot subscribe the directory's regions: {0}")]
    Feeds(#[from] FeedError),
}

/// A guest session ticket: where to connect and the token to put in the hello.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuestPass {
    /// The WebSocket URL, `ws://ADDR/ws`.
    pub url: String,
    pub token: String,
    /// The avatar id the token is for, as a decimal string (like ids in the protocol).
    pub agent: String,
    pub name: String,
    pub expires_unix: u64,
}

/// What a gateway has done so far, for status lines and tests.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GatewayStats {
    /// Sessions open now (past the hello).
    pub sessions: u64,
    /// Sessions that passed the hello since start.
    pub sessions_total: u64,
    /// Connections refused at the hello (bad token, version…).
    pub refused: u64,
    /// Sessions closed for a protocol error after the hello (malformed, too large…).
    pub closed_for_errors: u64,
    /// Sessions dropped because they read too slowly.
    pub dropped_slow: u64,
    /// Client messages dropped by the rate limit.
    pub rate_limited: u64,
    /// Updates and bytes sent to clients.
    pub updates_sent: u64,
    pub bytes_sent: u64,
    /// Regions streamed, host links open, and tick outputs received from hosts.
    pub feeds: u64,
    pub host_links: u64,
    pub ticks_received: u64,
    /// Times a region's subscription moved to another host (migrations, lost hosts).
    pub resubscribes: u64,
    pub inputs_forwarded: u64,
    pub inputs_dropped: u64,
    /// Script errors told to the sessions of their owners.
    #[serde(default)]
    pub script_errors_delivered: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    sessions_total: AtomicU64,
    refused: AtomicU64,
    closed_for_errors: AtomicU64,
    dropped_slow: AtomicU64,
    rate_limited: AtomicU64,
    updates_sent: AtomicU64,
    bytes_sent: AtomicU64,
}

/// A session as others see it: for chat, and to refuse a second session of one agent.
pub(crate) struct Presence {
    pub mailbox: Mailbox,
    /// Where the avatar is: region and region-local position.
    pub at: Arc<Mutex<(RegionId, Vec3)>>,
}

pub(crate) struct Shared {
    config: GatewayConfig,
    secret: Vec<u8>,
    feeds: Arc<Feeds>,
    sessions: feed::Owners,
    counters: Counters,
    next_session: AtomicU64,
    shutdown: watch::Receiver<bool>,
    addr: SocketAddr,
}

/// A running gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Starts serving on `listener`: `/ws`, `/guest` (if enabled) and `/health`.
    pub async fn start(
        config: GatewayConfig,
        directory: Arc<dyn Directory>,
        listener: tokio::net::TcpListener,
    ) -> Result<Gateway, GatewayError> {
        Gateway::start_with_routes(config, directory, listener, Router::new()).await
    }

    /// Like [`Gateway::start`], also serving `extra` routes on the same listener (the web
    /// pages in `terrane run`). They must not use `/ws`, `/guest` or `/health`.
    pub async fn start_with_routes(
        config: GatewayConfig,
        directory: Arc<dyn Directory>,
        listener: tokio::net::TcpListener,
        extra: Router,
    ) -> Result<Gateway, GatewayError> {
        let secret = match &config.secret {
            Some(s) => s.clone(),
            None => (0..GENERATED_SECRET_BYTES).map(|_| rand::random::<u8>()).collect(),
        };
        if secret.len() < proto::limits::MIN_TOKEN_SECRET_BYTES {
            return Err(proto::TokenError::WeakSecret(secret.len()).into());
        }
        let dd = config.draw_distance;
        if !(dd.is_finite() && (1.0..=proto::limits::MAX_DRAW_DISTANCE).contains(&dd)) {
            return Err(GatewayError::DrawDistance(dd));
        }
        let addr = listener.local_addr().map_err(GatewayError::Listener)?;
        let sessions = Arc::new(Mutex::new(HashMap::new()));
        let feeds = Feeds::new(directory, config.name.clone(), config.world_seed, sessions.clone());
        if config.subscribe_all {
            let n = feeds.subscribe_all().await?;
            tracing::info!(regions = n, "gateway subscribed the directory's regions");
        }
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            secret,
            feeds,
            sessions,
            counters: Counters::default(),
            next_session: AtomicU64::new(1),
            shutdown,
            addr,
        });
        let app = Router::new()
            .route("/ws", get(ws_upgrade))
            .route("/guest", get(guest))
            .route("/health", get(|| async { "ok" }))
            .with_state(shared.clone())
            .merge(extra);
        let mut until = shared.shutdown.clone();
        let server = tokio::spawn(async move {
            let stopped = async move {
                let _ = until.wait_for(|s| *s).await;
            };
            // Updates are small frames sent every tick: Nagle's algorithm would hold one back
            // until the client acknowledged the previous (up to a delayed ACK, 40 ms).
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                tracing::error!("gateway server stopped: {e}");
            }
        });
        tracing::info!(%addr, "gateway listening");
        Ok(Gateway { shared, stop, server })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The WebSocket URL clients connect to: `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.shared.addr)
    }

    /// The guest-token endpoint: `http://ADDR/guest?name=` (append a name).
    pub fn guest_endpoint(&self) -> String {
        format!("http://{}/guest?name=", self.shared.addr)
    }

    /// Mints a guest token for a new avatar called `name`.
    pub fn guest_token(&self, name: &str) -> Result<GuestPass, proto::TokenError> {
        self.shared.guest_pass(name)
    }

    /// Signs a token for a given agent (for tools and tests that choose ids).
    pub fn sign_token(&self, token: &Token) -> Result<String, proto::TokenError> {
        token.sign(&self.shared.secret)
    }

    pub fn stats(&self) -> GatewayStats {
        self.shared.stats()
    }

    /// Tells every session `shutting_down`, closes them (their avatars are removed) and stops
    /// serving. Waits at most `CLOSE_LINGER_MS` for the last frames to go out.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(CLOSE_LINGER_MS * 4);
        while !self.shared.sessions.lock().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = tokio::time::timeout(Duration::from_millis(CLOSE_LINGER_MS), self.server).await;
    }
}

impl Shared {
    fn guest_pass(&self, name: &str) -> Result<GuestPass, proto::TokenError> {
        // Avatar ids come from the session layer. Object ids are `x << 48 | y << 32 | serial`,
        // so ids with the top bit set only collide with objects of regions x ≥ 32768.
        let agent = EntityId((1 << 63) | (rand::random::<u64>() >> 16));
        let expires_unix = unix_now() + GUEST_TOKEN_TTL_SECS;
        let token = Token { agent, name: name.to_string(), expires_unix }.sign(&self.secret)?;
        Ok(GuestPass {
            url: format!("ws://{}/ws", self.addr),
            token,
            agent: agent.0.to_string(),
            name: name.to_string(),
            expires_unix,
        })
    }

    fn stats(&self) -> GatewayStats {
        let c = &self.counters;
        let f = &self.feeds.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GatewayStats {
            sessions: self.sessions.lock().len() as u64,
            sessions_total: load(&c.sessions_total),
            refused: load(&c.refused),
            closed_for_errors: load(&c.closed_for_errors),
            dropped_slow: load(&c.dropped_slow),
            rate_limited: load(&c.rate_limited),
            updates_sent: load(&c.updates_sent),
            bytes_sent: load(&c.bytes_sent),
            feeds: self.feeds.feed_count() as u64,
            host_links: self.feeds.link_count() as u64,
            ticks_received: load(&f.updates_in),
            resubscribes: load(&f.resubscribes),
            inputs_forwarded: load(&f.inputs_forwarded),
            inputs_dropped: load(&f.inputs_dropped),
            script_errors_delivered: load(&f.script_errors_delivered),
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn ws_upgrade(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    if shared.sessions.lock().len() >= MAX_SESSIONS {
        return (StatusCode::SERVICE_UNAVAILABLE, "this gateway is full; try another").into_response();
    }
    if *shared.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "this gateway is shutting down; try another")
            .into_response();
    }
    ws.max_message_size(WS_MAX_MESSAGE_BYTES)
        .max_frame_size(WS_MAX_MESSAGE_BYTES)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| session::run(shared, socket))
}

#[derive(Deserialize)]
struct GuestQuery {
    name: Option<String>,
}

async fn guest(State(shared): State<Arc<Shared>>, Query(q): Query<GuestQuery>) -> Response {
    if !shared.config.guest_tokens {
        return (StatusCode::NOT_FOUND, "guest tokens are disabled on this gateway").into_response();
    }
    let name = q.name.unwrap_or_else(|| "Guest".into());
    if name.is_empty() || name.chars().any(char::is_control) {
        return (StatusCode::BAD_REQUEST, "name must be non-empty printable text").into_response();
    }
    match shared.guest_pass(&name) {
        Ok(pass) => Json(pass).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}
