//! The orchestrator's HTTP API over real loopback HTTP: status, reports, drains, and the
//! control token on its writes.

use std::sync::Arc;
use std::time::Duration;

use directory::report::HostReport;
use directory::{Directory, HostRecord, MemoryDirectory};
use orchestrator::{Orchestrator, OrchestratorConfig};

async fn serve(token: Option<&str>) -> (String, Arc<dyn Directory>) {
    let dir: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    let config = OrchestratorConfig { control_token: token.map(String::from), ..Default::default() };
    let o = Orchestrator::start(dir.clone(), config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, orchestrator::api::router(o)).await });
    (format!("http://{addr}"), dir)
}

fn report() -> HostReport {
    HostReport {
        host: HostRecord { name: "127.0.0.1:9".into(), api: "http://127.0.0.1:10".into(), cores: 2 },
        load_milli: 10,
        regions: vec![],
        shared_store: None,
    }
}

#[tokio::test]
async fn writes_need_the_control_token_when_one_is_set() {
    let (base, dir) = serve(Some("sesame")).await;
    let c = reqwest::Client::new();
    let r = c.post(format!("{base}/reports")).json(&report()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.post(format!("{base}/reports")).bearer_auth("wrong").json(&report()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.post(format!("{base}/reports")).bearer_auth("sesame").json(&report()).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = c.post(format!("{base}/hosts/127.0.0.1:9/drain")).send().await.unwrap();
    assert_eq!(r.status(), 401, "a drain needs the token too");
    // Reading the status needs none.
    let st: serde_json::Value = c.get(format!("{base}/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["hosts"][0]["name"], "127.0.0.1:9");
    // A live host (registered in the directory) can be drained with the token.
    dir.heartbeat(&report().host, Duration::from_secs(5)).await.unwrap();
    let r = c.post(format!("{base}/hosts/127.0.0.1:9/drain")).bearer_auth("sesame").send().await.unwrap();
    assert_eq!(r.status(), 202);
    let d: serde_json::Value =
        c.get(format!("{base}/hosts/127.0.0.1:9/drain")).send().await.unwrap().json().await.unwrap();
    assert!(d["phase"] == "Running" || d["phase"] == "Done", "{d}");
    // Undrain: the token again, then the host is no longer draining.
    let r = c.post(format!("{base}/hosts/127.0.0.1:9/undrain")).send().await.unwrap();
    assert_eq!(r.status(), 401, "an undrain needs the token too");
    let r = c.post(format!("{base}/hosts/127.0.0.1:9/undrain")).bearer_auth("sesame").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let u: serde_json::Value = r.json().await.unwrap();
    assert_eq!(u["host"], "127.0.0.1:9");
    assert!(u["ended_drain"].is_object(), "{u}");
    let st: serde_json::Value = c.get(format!("{base}/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["hosts"][0]["draining"], false, "{st}");
    let r = c.get(format!("{base}/hosts/127.0.0.1:9/drain")).send().await.unwrap();
    assert_eq!(r.status(), 404, "the drain is over");
}

#[tokio::test]
async fn bad_reports_and_unknown_hosts_are_refused_clearly() {
    let (base, _dir) = serve(None).await;
    let c = reqwest::Client::new();
    let mut bad = report();
    bad.host.name = "no/slashes".into();
    let r = c.post(format!("{base}/reports")).json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c.post(format!("{base}/reports")).body("{not json").send().await.unwrap();
    assert!(r.status().is_client_error());
    let r = c.post(format!("{base}/hosts/nobody:1/drain")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(body.contains("no live host"), "{body}");
    let r = c.get(format!("{base}/hosts/nobody:1/drain")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c.post(format!("{base}/hosts/nobody:1/undrain")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
