//! Live migration between real processes on loopback: an orchestrator (the directory) and two
//! hosts. The target is killed during the rounds and during the freeze; the region stays on
//! the source, keeps ticking and keeps everything it had.

mod support;
use support::{free_port, Proc};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn terrane(args: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_terrane"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    (Proc(child), first)
}

fn get(url: &str) -> Value {
    http("GET", url, "")
}

/// One HTTP/1.0 request to a loopback URL; the JSON body of the answer (Null if none).
fn http(method: &str, url: &str, body: &str) -> Value {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap();
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return Value::Null };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let json = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(json).unwrap_or(Value::Null)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Cluster {
    _orchestrator: Proc,
    source: Proc,
    source_api: String,
    target: Proc,
    target_link: String,
}

fn cluster(target_env: &[(&str, &str)]) -> Cluster {
    let dir = free_port();
    // No placement moves of its own: this test moves the region by hand.
    let (orchestrator, _) = terrane(&["orchestrator", "--listen", &dir, "--no-autoplace"], &[]);
    let dir_url = format!("http://{dir}");
    let (source_api, source_link, target_api, target_link) =
        (free_port(), free_port(), free_port(), free_port());
    let (source, _) = terrane(
        &[
            "host",
            "--listen",
            &source_api,
            "--link",
            &source_link,
            "--directory",
            &dir_url,
            "--cores",
            "1",
            "--regions",
            "2,2",
        ],
        &[],
    );
    let (target, _) = terrane(
        &["host", "--listen", &target_api, "--link", &target_link, "--directory", &dir_url, "--cores", "1"],
        target_env,
    );
    Cluster {
        _orchestrator: orchestrator,
        source,
        source_api: format!("http://{source_api}"),
        target,
        target_link,
    }
}

fn region(c: &Cluster) -> Value {
    get(&format!("{}/regions/2,2", c.source_api))
}

/// Starts a migration that never converges (no freeze budget, very many rounds), so it is
/// still in its rounds when the target dies.
fn start_endless_migration(c: &Cluster) -> u64 {
    let body = format!(
        r#"{{"to":"{}","freeze_budget_ms":0,"max_rounds":100000,"max_bytes_factor":1000000,"on_no_convergence":"abort"}}"#,
        c.target_link
    );
    let v = http("POST", &format!("{}/regions/2,2/migrate", c.source_api), &body);
    v["id"].as_u64().unwrap_or_else(|| panic!("no migration id in {v}"))
}

#[test]
fn a_target_killed_during_the_rounds_leaves_the_region_running_on_the_source() {
    let mut c = cluster(&[]);
    wait_for("the source ticks", || region(&c)["ticks"].as_u64().unwrap_or(0) > 10);
    let id = start_endless_migration(&c);
    let mig = |c: &Cluster| get(&format!("{}/migrations/{id}", c.source_api));
    wait_for("a few rounds went by", || mig(&c)["rounds"].as_u64().unwrap_or(0) >= 3);
    let before = region(&c);
    c.target.0.kill().unwrap(); // SIGKILL
    wait_for("the source gives up", || mig(&c)["done"].as_bool() == Some(true));
    let m = mig(&c);
    assert_eq!(m["committed"], false, "{m}");
    let tick = region(&c)["tick"].as_u64().unwrap();
    wait_for("the region ticks on", || region(&c)["tick"].as_u64().unwrap_or(0) > tick + 5);
    let after = region(&c);
    assert_eq!(after["entities"], before["entities"]);
    assert!(c.source.0.try_wait().unwrap().is_none(), "the source is alive");
}

#[test]
fn a_target_killed_inside_the_freeze_leaves_the_region_running_on_the_source() {
    let c = cluster(&[("TERRANE_FAILPOINTS", "target-dies-at-freeze")]);
    wait_for("the source ticks", || region(&c)["ticks"].as_u64().unwrap_or(0) > 10);
    let out = Command::new(env!("CARGO_BIN_EXE_terrane"))
        .args(["migrate", "2,2", "--to", &c.target_link, "--api", &c.source_api, "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "the migration must fail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["committed"], false);
    assert!(result["abort_reason"].as_str().unwrap().contains("did not take the region"), "{result}");
    let tick = region(&c)["tick"].as_u64().unwrap();
    wait_for("the region ticks on", || region(&c)["tick"].as_u64().unwrap_or(0) > tick + 5);
}
