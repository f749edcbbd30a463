//! Failover from durable state with real processes: two hosts keep their regions in the same
//! PostgreSQL store (`TERRANE_TEST_POSTGRES`, scripts/services/postgres.sh). Clients make
//! acknowledged creations on host A up to the moment it is killed with SIGKILL; the
//! orchestrator restarts the region on host B from the store's checkpoint and write-ahead log,
//! not from its own (up to 5 s old) snapshot, so every acknowledged object is there.

mod support;
use support::{free_port, Proc};

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use world::{EntityId, Input, ObjectSpec, Region, RegionId, Vec3};

/// Clients making changes at once (each waits for its acknowledgement before the next).
const CLIENTS: usize = 8;
/// How long the clients make changes before the kill.
const CHANGING_FOR: Duration = Duration::from_millis(1_500);

fn terrane(args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_terrane"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn terrane");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("first line");
    assert!(!first.is_empty(), "terrane {args:?} printed nothing and stopped");
    Proc(child)
}

/// One HTTP/1.0 request to `addr` (host:port); `None` when nobody answers.
fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = std::str::from_utf8(out.get(9..12)?).ok()?.parse().ok()?;
    Some((status, out[head_end + 4..].to_vec()))
}

fn get(addr: &str, path: &str) -> Value {
    match http(addr, "GET", path, "") {
        Some((200, body)) => serde_json::from_slice(&body).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Waits until `f` holds, at most `limit` (a bound on a hang, not a speed figure).
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn a_killed_hosts_region_restarts_from_the_shared_store_with_every_acknowledged_change() {
    let Ok(url) = std::env::var("TERRANE_TEST_POSTGRES") else {
        panic!(
            "TERRANE_TEST_POSTGRES is not set: run through ./scripts/test, which starts PostgreSQL \
             (scripts/services/postgres.sh)"
        );
    };
    // A region of its own in the shared database (other tests use other rows).
    let region = RegionId::new(50_000 + (std::process::id() % 10_000) as u16, 11);
    let r = region.to_string();
    let o = free_port();
    let _orchestrator = terrane(&["orchestrator", "--listen", &o, "--no-autoplace"]);
    let dir = format!("http://{o}");
    let (a_api, a_link, b_api, b_link) = (free_port(), free_port(), free_port(), free_port());
    let mut a = terrane(&[
        "host",
        "--listen",
        &a_api,
        "--link",
        &a_link,
        "--directory",
        &dir,
        "--cores",
        "1",
        "--store",
        &url,
        "--regions",
        &r,
    ]);
    let _b = terrane(&[
        "host",
        "--listen",
        &b_api,
        "--link",
        &b_link,
        "--directory",
        &dir,
        "--cores",
        "2",
        "--store",
        &url,
    ]);
    wait_for("both hosts report to the orchestrator", Duration::from_secs(30), || {
        let hosts = get(&o, "/status")["hosts"].as_array().cloned().unwrap_or_default();
        hosts.len() == 2 && hosts.iter().all(|h| h["alive"] == true && h["report_age_ms"].is_u64())
    });

    // Clients create objects and wait for each acknowledgement, until the host dies.
    let acked: Arc<Mutex<HashMap<EntityId, String>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, acked, stop) = (a_api.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut k = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    k += 1;
                    let name = format!("c{c} n{k}");
                    let spec = ObjectSpec {
                        name: name.clone(),
                        pos: Vec3::new(10.0 + c as f32 * 20.0, 10.0 + (k % 200) as f32, 30.0),
                        ..Default::default()
                    };
                    let input = Input::CreateObject { tag: c as u64 * 1_000_000 + k, spec };
                    let body = serde_json::to_string(&input).expect("json");
                    let Some((200, ack)) = http(&addr, "POST", &format!("/regions/{region}/changes"), &body)
                    else {
                        return;
                    };
                    let ack: Value = serde_json::from_slice(&ack).expect("ack json");
                    let id = EntityId(ack["created"].as_u64().expect("created id"));
                    acked.lock().unwrap().insert(id, name);
                }
            })
        })
        .collect();
    std::thread::sleep(CHANGING_FOR);
    a.0.kill().expect("SIGKILL host A"); // no goodbye: its liveness has to expire
    a.0.wait().expect("reap");
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= CLIENTS, "only {} changes were acknowledged before the kill", acked.len());

    let took = wait_for("the region runs on B", Duration::from_secs(60), || {
        get(&o, &format!("/directory/{r}"))["host"] == b_link.as_str()
            && get(&b_api, &format!("/regions/{r}"))["ticks"].as_u64().unwrap_or(0) > 0
    });
    let (status, bytes) = http(&b_api, "GET", &format!("/regions/{r}/snapshot"), "").expect("snapshot");
    assert_eq!(status, 200);
    let state = Region::from_snapshot(&bytes).expect("snapshot decodes");
    for (id, name) in &acked {
        let e = state.entity(*id).unwrap_or_else(|| panic!("acknowledged object {id} ({name}) is gone"));
        assert_eq!(&e.name, name, "object {id}");
    }
    let decisions: Vec<String> = get(&o, "/status")["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|d| d["text"].as_str().map(str::to_string))
        .collect();
    assert!(
        decisions
            .iter()
            .any(|d| d.starts_with(&format!("fail over {r}: restarted on {b_link} from the store"))),
        "the failover did not say it used the store: {decisions:?}"
    );
    eprintln!(
        "{} acknowledged objects made up to the SIGKILL were all on B {took:?} after it (from the store)",
        acked.len()
    );
}
