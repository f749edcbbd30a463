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

/// One HTTP/1.0 request with extra header lines; returns (status, body).
async fn http_with(addr: std::net::SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.0\r\nHost: x\r\n{headers}Content-Length: 0\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut buf)).await.unwrap().unwrap();
    let status = buf.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn with_a_control_token_changes_are_refused_without_it_and_accepted_with_it() {
    let host = Host::start(HostConfig { cores: 1, seed: 3 });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = "a-control-token-for-tests".to_string();
    let app = host::api::router_with_token(host.clone(), host::metrics::prometheus(), None, Some(token));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (status, body) = http(addr, "POST", "/regions/4,4").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("control token") && body.contains("Authorization: Bearer"), "{body}");
    let (status, body) =
        http_with(addr, "POST", "/regions/4,4", "Authorization: Bearer not-the-token\r\n").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("wrong"), "{body}");
    // Nothing was loaded by the refused requests; reading needs no token.
    let (status, body) = http(addr, "GET", "/regions").await;
    assert_eq!((status, body.as_str()), (200, "[]"));

    let bearer = "Authorization: Bearer a-control-token-for-tests\r\n";
    assert_eq!(http_with(addr, "POST", "/regions/4,4", bearer).await.0, 201);
    assert_eq!(http(addr, "GET", "/regions/4,4").await.0, 200);
    assert_eq!(http(addr, "DELETE", "/regions/4,4").await.0, 401);
    assert_eq!(http(addr, "POST", "/regions/4,4/restore").await.0, 401);
    assert_eq!(http(addr, "POST", "/regions/4,4/migrate").await.0, 401);
    assert_eq!(http_with(addr, "DELETE", "/regions/4,4", bearer).await.0, 204);
    host.shutdown();
}
