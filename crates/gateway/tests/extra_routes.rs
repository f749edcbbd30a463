//! Extra routes (the web pages in `terrane run`) share the gateway's listener with its own.

use std::sync::Arc;
use std::time::Duration;

use directory::{Directory, MemoryDirectory};
use gateway::{Gateway, GatewayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut buf)).await.unwrap().unwrap();
    let status = buf.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[tokio::test]
async fn extra_routes_are_served_beside_the_gateways_own() {
    let dir: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let extra = axum::Router::new().route("/hello", axum::routing::get(|| async { "from the extra routes" }));
    let gw = Gateway::start_with_routes(GatewayConfig::default(), dir, listener, extra).await.unwrap();
    assert_eq!(get(gw.addr(), "/hello").await, (200, "from the extra routes".to_string()));
    assert_eq!(get(gw.addr(), "/health").await, (200, "ok".to_string()));
    let (status, body) = get(gw.addr(), "/guest?name=Ada").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"name\":\"Ada\""), "{body}");
    assert_eq!(get(gw.addr(), "/nothing-here").await.0, 404);
    gw.shutdown().await;
}
