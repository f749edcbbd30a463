//! The dashboard's API as `terrane run` serves it on its gateway: the cluster view read from
//! the real hosts, and actions that need the printed control token.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One HTTP/1.0 request; returns (status, body).
fn http(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}", body.len())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[test]
fn the_dashboard_api_shows_the_grid_and_moves_a_region_only_with_the_control_token() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_terrane"))
        .args([
            "run",
            "--for",
            "30s",
            "--listen",
            "127.0.0.1:0",
            "--gateway",
            "127.0.0.1:0",
            "--objects",
            "30",
            // A new world of its own, not one kept in ./terrane-data by an earlier run.
            "--fresh",
            "--data",
            data.path().to_str().unwrap(),
        ])
        .env_remove("TERRANE_CONTROL_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // "terrane: dashboard http://ADDR/#token=TOKEN · viewer http://ADDR/viewer"
    let line = lines.by_ref().map(Result::unwrap).find(|l| l.starts_with("terrane: dashboard")).unwrap();
    let addr = line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_string();
    let token = line.split("#token=").nth(1).unwrap().split(' ').next().unwrap().to_string();
    // Keep reading the status lines so the grid never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));

    let (status, page) = http(&addr, "GET", "/", "", "");
    assert_eq!(status, 200);
    assert!(page.contains("terrane · cluster"));
    let (status, body) = http(&addr, "GET", "/api/cluster", "", "");
    assert_eq!(status, 200, "{body}");
    let cluster: web::Cluster = serde_json::from_str(&body).unwrap();
    assert_eq!(cluster.regions.len(), 9);
    assert_eq!(cluster.hosts.len(), 2);
    assert!(cluster.hosts.iter().all(|h| h.up && h.cores >= 1), "{:?}", cluster.hosts);
    let r11 = cluster.regions.iter().find(|r| r.region == "1,1").unwrap().clone();
    let other = cluster.hosts.iter().find(|h| h.name != r11.host).unwrap().name.clone();

    let body = format!(r#"{{"region":"1,1","to":"{other}"}}"#);
    let (status, answer) = http(&addr, "POST", "/api/migrate", "", &body);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("control token"), "{answer}");
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (status, answer) = http(&addr, "POST", "/api/migrate", &auth, &body);
    assert_eq!(status, 202, "{answer}");

    // The view shows the region on its new host, one epoch later, and the migration's freeze.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http(&addr, "GET", "/api/cluster", "", "");
        let c: web::Cluster = serde_json::from_str(&body).unwrap();
        let now = c.regions.iter().find(|r| r.region == "1,1").unwrap();
        let m = c.migrations.iter().find(|m| m.region == "1,1");
        if now.host == other && m.is_some_and(|m| m.done && m.freeze_ms.is_some()) {
            assert_eq!(now.epoch, r11.epoch + 1);
            assert!(m.unwrap().committed, "{m:?}");
            break;
        }
        assert!(Instant::now() < deadline, "region 1,1 never showed on {other}: {now:?} {m:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
