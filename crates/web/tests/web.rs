//! The pages' server over real HTTP and WebSocket on loopback, with a cluster view whose answers
//! the test controls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use web::{Cluster, ClusterView, HostView, MigrationView, RegionView, ViewError, WebConfig};
use world::RegionId;

type Shared<T> = Arc<std::sync::Mutex<T>>;
type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message of the live feed, as JSON.
async fn next(ws: &mut Ws) -> serde_json::Value {
    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
    serde_json::from_str(msg.to_text().unwrap()).unwrap()
}

const TOKEN: &str = "a-control-token-for-tests";

#[derive(Default)]
struct Fake {
    cluster: Cluster,
    migrate_calls: Vec<(RegionId, String)>,
    drain_calls: Vec<String>,
}

struct FakeView(Shared<Fake>);

#[async_trait]
impl ClusterView for FakeView {
    async fn cluster(&self) -> Result<Cluster, ViewError> {
        Ok(self.0.lock().unwrap().cluster.clone())
    }
    async fn migrations(&self) -> Result<Vec<MigrationView>, ViewError> {
        Ok(self.0.lock().unwrap().cluster.migrations.clone())
    }
    async fn migrate(&self, region: RegionId, to: &str) -> Result<String, ViewError> {
        if to == "nowhere" {
            return Err(ViewError::Unknown("no host nowhere".into()));
        }
        self.0.lock().unwrap().migrate_calls.push((region, to.to_string()));
        Ok(format!("moving {region} to {to}"))
    }
    async fn drain(&self, host: &str) -> Result<String, ViewError> {
        self.0.lock().unwrap().drain_calls.push(host.to_string());
        Ok(format!("draining {host}"))
    }
}

fn cluster() -> Cluster {
    let host = |n: &str| HostView {
        name: n.into(),
        api: format!("http://{n}"),
        cores: 2,
        up: true,
        ..Default::default()
    };
    Cluster {
        hosts: vec![host("a:1"), host("b:2")],
        regions: (0..9u16)
            .map(|i| RegionView {
                region: format!("{},{}", i % 3, i / 3),
                x: i % 3,
                y: i / 3,
                host: if i % 2 == 0 { "a:1".into() } else { "b:2".into() },
                epoch: 1,
                budget_ms: 22.2,
                ..Default::default()
            })
            .collect(),
        migrations: Vec::new(),
    }
}

async fn serve(token: Option<&str>) -> (SocketAddr, Shared<Fake>) {
    let fake: Shared<Fake> =
        Arc::new(std::sync::Mutex::new(Fake { cluster: cluster(), ..Default::default() }));
    let app =
        web::router(Arc::new(FakeView(fake.clone())), WebConfig { control_token: token.map(str::to_string) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, fake)
}

/// One HTTP/1.0 request; returns (status, head, body bytes).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head =
        format!("{method} {path} HTTP/1.0\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head, buf[split + 4..].to_vec())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[tokio::test]
async fn actions_are_refused_without_the_control_token_and_done_with_it() {
    let (addr, fake) = serve(Some(TOKEN)).await;
    let body = br#"{"region":"1,1","to":"b:2"}"#;

    let (status, head, answer) = http(addr, "POST", "/api/migrate", "", body).await;
    assert_eq!(status, 401, "{}", text(&answer));
    assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
    assert!(text(&answer).contains("needs the control token"), "{}", text(&answer));
    let (status, _, answer) =
        http(addr, "POST", "/api/migrate", "Authorization: Bearer wrong\r\n", body).await;
    assert_eq!(status, 401);
    assert!(text(&answer).contains("wrong"), "{}", text(&answer));
    let (status, _, _) = http(addr, "POST", "/api/drain", "", br#"{"host":"a:1"}"#).await;
    assert_eq!(status, 401);
    assert!(fake.lock().unwrap().migrate_calls.is_empty() && fake.lock().unwrap().drain_calls.is_empty());

    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let (status, _, answer) = http(addr, "POST", "/api/migrate", &auth, body).await;
    assert_eq!(status, 202, "{}", text(&answer));
    assert_eq!(text(&answer), r#"{"message":"moving 1,1 to b:2"}"#);
    let (status, _, _) = http(addr, "POST", "/api/drain", &auth, br#"{"host":"a:1"}"#).await;
    assert_eq!(status, 202);
    let f = fake.lock().unwrap();
    assert_eq!(f.migrate_calls, vec![(RegionId::new(1, 1), "b:2".to_string())]);
    assert_eq!(f.drain_calls, vec!["a:1".to_string()]);
}

#[tokio::test]
async fn bad_actions_are_refused_with_a_reason() {
    let (addr, fake) = serve(None).await;
    let (status, _, answer) =
        http(addr, "POST", "/api/migrate", "", br#"{"region":"here","to":"b:2"}"#).await;
    assert_eq!(status, 400);
    assert!(text(&answer).contains("X,Y"), "{}", text(&answer));
    let (status, _, answer) = http(addr, "POST", "/api/migrate", "", b"not json").await;
    assert_eq!(status, 400);
    assert!(text(&answer).contains("expected"), "{}", text(&answer));
    let (status, _, _) = http(addr, "POST", "/api/drain", "", br#"{"host":"with space"}"#).await;
    assert_eq!(status, 400);
    let (status, _, answer) =
        http(addr, "POST", "/api/migrate", "", br#"{"region":"1,1","to":"nowhere"}"#).await;
    assert_eq!(status, 404, "{}", text(&answer));
    let big = vec![b' '; web::limits::MAX_ACTION_BODY_BYTES + 1];
    assert_eq!(http(addr, "POST", "/api/drain", "", &big).await.0, 413);
    assert!(fake.lock().unwrap().drain_calls.is_empty());
}

#[tokio::test]
async fn the_pages_and_their_assets_are_served_from_the_binary() {
    let (addr, _) = serve(None).await;
    for (path, kind, needle) in [
        ("/", "text/html", "terrane · cluster"),
        ("/viewer", "text/html", "terrane · viewer"),
        ("/assets/dashboard.js", "text/javascript", "/api/live"),
        ("/assets/viewer.js", "text/javascript", "const PROTOCOL_VERSION = "),
        ("/assets/style.css", "text/css", ".region"),
    ] {
        let (status, head, body) = http(addr, "GET", path, "", b"").await;
        assert_eq!(status, 200, "{path}");
        assert!(head.contains(kind), "{path}: {head}");
        assert!(text(&body).contains(needle), "{path}");
    }
    let (status, _, body) = http(addr, "GET", "/api/cluster", "", b"").await;
    assert_eq!(status, 200);
    let c: Cluster = serde_json::from_slice(&body).unwrap();
    assert_eq!((c.regions.len(), c.hosts.len()), (9, 2));
}

#[tokio::test]
async fn the_viewer_protocol_version_is_the_gateways() {
    // The viewer is a client of docs/protocol.md: it must speak the version the gateway speaks.
    let (addr, _) = serve(None).await;
    let (_, _, body) = http(addr, "GET", "/assets/viewer.js", "", b"").await;
    let needle = format!("const PROTOCOL_VERSION = {};", proto::PROTOCOL_VERSION);
    assert!(text(&body).contains(&needle), "viewer.js does not say {needle}");
}

#[tokio::test]
async fn the_terrain_endpoint_unpacks_a_region_info_heightmap_and_refuses_garbage() {
    let (addr, _) = serve(None).await;
    let heights: Vec<f32> = (0..256 * 256).map(|i| (i % 977) as f32 * 0.25).collect();
    let info = proto::RegionInfo::new(RegionId::new(1, 1), &heights, 20.0).unwrap();
    let (status, _, raw) = http(addr, "POST", "/api/terrain", "", &info.terrain).await;
    assert_eq!(status, 200);
    assert_eq!(raw.len(), 256 * 256 * 4);
    let back: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(back, heights);
    let (status, _, answer) = http(addr, "POST", "/api/terrain", "", b"not zstd at all").await;
    assert_eq!(status, 400);
    assert!(text(&answer).contains("terrain"), "{}", text(&answer));
}

#[tokio::test]
async fn the_live_feed_pushes_the_cluster_and_every_migration_change() {
    let (addr, fake) = serve(None).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/live")).await.unwrap();
    let first = next(&mut ws).await;
    assert_eq!(first["cluster"]["regions"].as_array().unwrap().len(), 9, "{first}");

    let mut m = MigrationView {
        id: "a:1/7".into(),
        region: "1,1".into(),
        from: "a:1".into(),
        to: "b:2".into(),
        phase: "Rounds".into(),
        rounds: 1,
        ..Default::default()
    };
    fake.lock().unwrap().cluster.migrations.push(m.clone());
    let mut seen_running = false;
    let mut seen_committed = None;
    for _ in 0..50 {
        let v = next(&mut ws).await;
        if let Some(e) = v.get("migration") {
            if e["done"] == false {
                seen_running = true;
                m.done = true;
                m.committed = true;
                m.phase = "Committed".into();
                m.freeze_ms = Some(1.5);
                fake.lock().unwrap().cluster.migrations[0] = m.clone();
            } else {
                seen_committed = Some(e.clone());
                break;
            }
        }
    }
    assert!(seen_running, "the running migration was pushed");
    let done = seen_committed.expect("the committed migration was pushed");
    assert_eq!(done["freeze_ms"], 1.5);
    assert_eq!(done["id"], "a:1/7");
}
