//! A small grid in one test process: hosts with their link listeners, a memory directory and
//! a gateway, all on 127.0.0.1, plus a raw WebSocket client that can also misbehave.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use directory::{Directory, MemoryDirectory};
use futures_util::{SinkExt, StreamExt};
use gateway::{Gateway, GatewayConfig};
use host::net::Net;
use host::{Host, HostConfig};
use proto::{decode_server, encode_client, ClientMsg, Encoding, Hello, ServerMsg, Update};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use world::RegionId;

pub const SEED: u32 = 5;
pub const HOME: RegionId = RegionId::new(1, 1);
/// Every wait in these tests is bounded by this.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub async fn start_host(dir: Arc<dyn Directory>) -> Arc<Net> {
    let host = Host::start(HostConfig { cores: 1, seed: SEED });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Net::start(host, listener, dir)
}

pub fn config() -> GatewayConfig {
    GatewayConfig { world_seed: SEED, spawn_region: HOME, ..GatewayConfig::default() }
}

pub struct Grid {
    pub dir: Arc<dyn Directory>,
    pub host: Arc<Net>,
    pub gateway: Gateway,
}

/// One host with region (1, 1), and a gateway in front of it.
pub async fn grid(config: GatewayConfig) -> Grid {
    let dir: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    let host = start_host(dir.clone()).await;
    host.claim_new(HOME, None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = Gateway::start(config, dir.clone(), listener).await.unwrap();
    Grid { dir, host, gateway }
}

pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A client that speaks the protocol in `encoding`, or sends anything it is told to.
pub struct Raw {
    pub ws: Ws,
    pub encoding: Encoding,
    pub close_code: Option<u16>,
}

impl Raw {
    pub async fn open(url: &str, encoding: Encoding) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Raw { ws, encoding, close_code: None }
    }

    pub async fn hello(url: &str, token: &str, encoding: Encoding) -> Raw {
        let mut raw = Raw::open(url, encoding).await;
        raw.send(&ClientMsg::Hello(Hello::new(token))).await;
        raw
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        let m = match encode_client(msg, self.encoding) {
            proto::Frame::Text(s) => Message::text(s),
            proto::Frame::Binary(b) => Message::binary(b),
        };
        self.ws.send(m).await.unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next message, or `None` once closed (the close code is kept).
    pub async fn recv(&mut self) -> Option<ServerMsg> {
        loop {
            let next =
                tokio::time::timeout(PATIENCE, self.ws.next()).await.expect("the gateway answers in time");
            let bytes = match next {
                Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                Some(Ok(Message::Binary(b))) => b.to_vec(),
                Some(Ok(Message::Close(f))) => {
                    self.close_code = f.map(|f| u16::from(f.code));
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            };
            return Some(decode_server(&bytes, self.encoding).expect("the gateway sends valid frames"));
        }
    }

    /// Reads until an update arrives (skipping welcome, region info, chat…).
    pub async fn next_update(&mut self) -> Option<Update> {
        loop {
            match self.recv().await? {
                ServerMsg::Update(u) => return Some(u),
                ServerMsg::Error { code, message } if code.closes_session() => {
                    panic!("session closed: {code:?} {message}")
                }
                _ => {}
            }
        }
    }

    /// Reads until the gateway closes, returning the error it sent before, if any.
    pub async fn until_closed(&mut self) -> Option<(proto::ErrorCode, String)> {
        let mut last = None;
        for _ in 0..100_000 {
            match self.recv().await {
                Some(ServerMsg::Error { code, message }) => last = Some((code, message)),
                Some(_) => {}
                None => return last,
            }
        }
        panic!("the session did not close");
    }
}
