//! The `terrane` command as a person runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn terrane() -> Command {
    Command::new(env!("CARGO_BIN_EXE_terrane"))
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn run_for_a_while_shows_nine_regions_ticking_serves_metrics_and_exits_cleanly() {
    let mut child = terrane()
        .args(["run", "--for", "3s", "--listen", "127.0.0.1:0", "--gateway", "127.0.0.1:0"])
        .args(["--fresh", "--data"])
        .arg(std::env::temp_dir().join(format!("terrane-cli-run-{}", std::process::id())))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first.split("http://").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let status = lines.by_ref().map(Result::unwrap).find(|l| l.starts_with('[')).unwrap();
    assert!(status.contains("regions 9 (9 ticking; 5+4 per host)"), "{status}");
    let metrics = http_get(&addr, "/metrics");
    assert!(metrics.contains("terrane_region_tick_seconds{region=\"2,2\",quantile=\"0.99\"}"), "{metrics}");
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(rest.last().map(String::as_str), Some("terrane: stopped cleanly"), "{rest:?}");
}

fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = terrane().args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bench_tick_prints_one_json_object_with_the_tick_costs() {
    let v = bench_json(&["bench", "tick", "--avatars", "10", "--objects", "200", "--ticks", "20", "--json"]);
    for key in ["tick_p50_ms", "tick_p99_ms", "ticks_per_s"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
}

#[test]
fn bench_scripts_prints_event_rates_and_the_world_modules_compile_and_load_times() {
    let v = bench_json(&["bench", "scripts", "--scripts", "100", "--events", "8", "--json"]);
    for key in ["events_per_s", "instantiate_us", "module_compile_ms", "module_load_ms", "module_cache_bytes"]
    {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
    assert_eq!(v["world_modules"], 5, "{v}");
}

#[test]
fn bench_snapshot_prints_sizes_speeds_and_a_matching_hash() {
    let v = bench_json(&["bench", "snapshot", "--objects", "300", "--churn", "5", "--repeat", "2", "--json"]);
    for key in ["snapshot_bytes", "encode_mb_per_s", "decode_mb_per_s", "delta_bytes_per_tick"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
    assert_eq!(v["hash_match"], true);
}

#[test]
fn bad_arguments_are_explained() {
    let out = terrane().args(["run", "--for", "soon"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("10s"));
    let out = terrane().args(["bench", "snapshot", "--churn", "300"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("percentage"));
    let out = terrane().args(["host", "--regions", "a,b"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("X,Y"));
}

#[test]
fn migrate_moves_a_region_of_a_running_grid_to_the_other_host() {
    let mut child = terrane()
        .args([
            "run",
            "--fresh",
            "--data",
            &std::env::temp_dir()
                .join(format!("terrane-cli-migrate-{}", std::process::id()))
                .display()
                .to_string(),
            "--for",
            "20s",
            "--listen",
            "127.0.0.1:0",
            "--gateway",
            "127.0.0.1:0",
            "--objects",
            "50",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _apis = lines.next().unwrap().unwrap();
    let hosts = lines.next().unwrap().unwrap();
    // "terrane: hosts A and B; move a region with: terrane migrate 1,1 --to B --api URL --control-token T"
    let to = hosts.split("--to ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let api = hosts.split("--api ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let token = hosts.split("--control-token ").nth(1).unwrap().trim().to_string();
    // Without the control token the host refuses, and says what is missing.
    let refused = terrane()
        .env_remove("TERRANE_CONTROL_TOKEN")
        .args(["migrate", "0,0", "--to", &to, "--api", &api])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("401") && why.contains("control token"), "{why}");
    let out = terrane()
        .args(["migrate", "0,0", "--to", &to, "--api", &api, "--control-token", &token, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["committed"], true, "{v}");
    assert!(v["freeze_ms"].as_f64().is_some(), "{v}");
    assert!(v["rounds"].as_u64().unwrap() >= 2, "a full copy and at least the final round: {v}");
    // The region is gone from the first host: a second request is refused, clearly.
    let again = terrane()
        .args(["migrate", "0,0", "--to", &to, "--api", &api, "--control-token", &token])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not on this host"));
    let _ = child.kill();
    let _ = child.wait();
}

/// The processes whose parent is `pid` (Linux: from /proc), with their command lines.
#[cfg(target_os = "linux")]
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}

/// Whether process `pid` still runs (a zombie waiting to be reaped does not).
#[cfg(target_os = "linux")]
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|rest| rest.trim_start().chars().next() != Some('Z')))
        .unwrap_or(false)
}

#[test]
#[cfg(target_os = "linux")]
fn a_bench_killed_midway_takes_its_orchestrator_hosts_and_gateway_with_it() {
    let mut bench = terrane()
        .args(["bench", "migrate", "--avatars", "4", "--objects", "50", "--scripts", "5", "--repeat", "50"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Orchestrator, two hosts and the gateway, all started (bounded wait).
    let mut started = Vec::new();
    for _ in 0..600 {
        started = children_of(bench.id());
        if started.len() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(started.len(), 4, "the bench did not start its processes: {started:?}");
    // Killed outright: no destructor runs, only the kernel can stop the children.
    bench.kill().unwrap();
    bench.wait().unwrap();
    for _ in 0..200 {
        if !started.iter().any(|p| running(*p)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = started.into_iter().filter(|p| running(*p)).collect();
    panic!("processes of a killed bench still run: {left:?}");
}
