//! The control API over real HTTP on loopback.

use std::time::Duration;

use host::stats::RegionStats;
use host::{Host, HostConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.0 request; returns (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut buf)).await.unwrap().unwrap();
    let status = buf.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn the_control_api_lists_loads_unloads_and_exports_metrics() {
    let host = Host::start(HostConfig { cores: 1, seed: 3 });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = host::api::router(host.clone(), host::metrics::prometheus(), None);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (status, _) = http(addr, "POST", "/regions/2,3").await;
    assert_eq!(status, 201);
    let (status, body) = http(addr, "POST", "/regions/2,3").await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = http(addr, "GET", "/regions/nowhere").await;
    assert_eq!(status, 400);
    assert!(body.contains("X,Y"), "{body}");

    let mut ticked = false;
    for _ in 0..200 {
        let (_, body) = http(addr, "GET", "/regions").await;
        let list: Vec<RegionStats> = serde_json::from_str(&body).unwrap();
        assert_eq!(list.len(), 1);
        if list[0].ticks > 2 {
            ticked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ticked, "the region never ticked");

    let (status, body) = http(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("terrane_region_tick_seconds{region=\"2,3\""), "{body}");
    assert!(body.contains("terrane_region_ticks_total{region=\"2,3\"}"), "{body}");

    assert_eq!(http(addr, "DELETE", "/regions/2,3").await.0, 204);
    assert_eq!(http(addr, "GET", "/regions/2,3").await.0, 404);
    assert_eq!(http(addr, "DELETE", "/regions/2,3").await.0, 404);
    host.shutdown();
}
