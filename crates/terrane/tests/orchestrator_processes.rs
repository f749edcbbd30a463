//! The orchestrator with real processes on loopback: a host killed with SIGKILL has its regions
//! restarted on the other host from the snapshots the orchestrator held (epoch bumped, so the
//! dead host is fenced), and `terrane drain` moves every region off a host by live migration
//! while 50 bots walk around in them, disconnecting nobody.

mod support;
use support::{free_port, Proc};

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Starts `terrane ARGS` and waits for its first line (it prints one when it is ready).
fn terrane(args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_terrane"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(!first.is_empty(), "terrane {args:?} printed nothing and stopped");
    Proc(child)
}

/// One HTTP/1.0 GET to a loopback URL; the JSON body of the answer (Null if none).
fn get(url: &str) -> Value {
    use std::io::Write;
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap();
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return Value::Null };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let json = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(json).unwrap_or(Value::Null)
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

const REGIONS: [&str; 5] = ["0,0", "1,0", "0,1", "1,1", "2,2"];

struct Cluster {
    orchestrator: String,
    _orchestrator: Proc,
    a: Proc,
    a_api: String,
    a_link: String,
    _b: Proc,
    b_api: String,
    b_link: String,
}

/// An orchestrator that makes no placement moves of its own (drains and failovers only), host
/// A (1 core) with the five regions, host B (2 cores) empty.
fn cluster() -> Cluster {
    let o = free_port();
    let orchestrator = terrane(&["orchestrator", "--listen", &o, "--no-autoplace"]);
    let dir = format!("http://{o}");
    let (a_api, a_link, b_api, b_link) = (free_port(), free_port(), free_port(), free_port());
    let mut a_args = vec!["host", "--listen", &a_api, "--link", &a_link, "--directory", &dir, "--cores", "1"];
    a_args.push("--regions");
    a_args.extend(REGIONS);
    let a = terrane(&a_args);
    let b = terrane(&["host", "--listen", &b_api, "--link", &b_link, "--directory", &dir, "--cores", "2"]);
    let c = Cluster {
        orchestrator: dir,
        _orchestrator: orchestrator,
        a,
        a_api: format!("http://{a_api}"),
        a_link,
        _b: b,
        b_api: format!("http://{b_api}"),
        b_link,
    };
    wait_for("both hosts report to the orchestrator", Duration::from_secs(30), || {
        let st = get(&format!("{}/status", c.orchestrator));
        let hosts = st["hosts"].as_array().cloned().unwrap_or_default();
        hosts.len() == 2 && hosts.iter().all(|h| h["alive"] == true && h["report_age_ms"].is_u64())
    });
    c
}

fn placement(c: &Cluster, region: &str) -> Value {
    get(&format!("{}/directory/{region}", c.orchestrator))
}

#[test]
fn a_killed_host_has_its_regions_running_again_on_the_other_host() {
    let mut c = cluster();
    wait_for("the orchestrator holds a snapshot of every region", Duration::from_secs(30), || {
        let st = get(&format!("{}/status", c.orchestrator));
        let regions = st["regions"].as_array().cloned().unwrap_or_default();
        regions.len() == REGIONS.len() && regions.iter().all(|r| r["snapshot_age_ms"].is_u64())
    });
    let ticks_before: Vec<u64> =
        REGIONS.iter().map(|r| get(&format!("{}/regions/{r}", c.a_api))["tick"].as_u64().unwrap()).collect();
    c.a.0.kill().unwrap(); // SIGKILL: no goodbye, the lease has to expire
    let took = wait_for("every region runs on B", Duration::from_secs(60), || {
        REGIONS.iter().all(|r| {
            let p = placement(&c, r);
            p["host"] == c.b_link.as_str()
                && get(&format!("{}/regions/{r}", c.b_api))["ticks"].as_u64().unwrap_or(0) > 0
        })
    });
    eprintln!(
        "the killed host's {} regions ran again on the other host {took:?} after the kill",
        REGIONS.len()
    );
    for (r, before) in REGIONS.iter().zip(ticks_before) {
        let p = placement(&c, r);
        assert_eq!(p["epoch"], 2, "{r}: the epoch was bumped, fencing the dead host: {p}");
        let tick = get(&format!("{}/regions/{r}", c.b_api))["tick"].as_u64().unwrap();
        // Restarted from a snapshot, not from scratch: its simulated time goes on.
        assert!(tick > 0 && before > 0, "{r}: tick {tick} (was {before} on the dead host)");
    }
    let st = get(&format!("{}/status", c.orchestrator));
    let decisions: Vec<String> =
        st["decisions"].as_array().unwrap().iter().map(|d| d["text"].as_str().unwrap().to_string()).collect();
    assert!(decisions.iter().any(|d| d.contains(&format!("host {} is dead", c.a_link))), "{decisions:?}");
    assert_eq!(decisions.iter().filter(|d| d.starts_with("fail over") && d.contains("committed")).count(), 5);
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill").args([sig, &p.0.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} failed");
}

#[test]
fn a_paused_host_taken_for_dead_has_its_stale_copies_fenced_when_it_comes_back() {
    let c = cluster();
    wait_for("the orchestrator holds a snapshot of every region", Duration::from_secs(30), || {
        let st = get(&format!("{}/status", c.orchestrator));
        let regions = st["regions"].as_array().cloned().unwrap_or_default();
        regions.len() == REGIONS.len() && regions.iter().all(|r| r["snapshot_age_ms"].is_u64())
    });
    // Like a partition: the host stops answering but keeps its state.
    signal(&c.a, "-STOP");
    wait_for("every region runs on B", Duration::from_secs(60), || {
        REGIONS.iter().all(|r| placement(&c, r)["host"] == c.b_link.as_str())
    });
    signal(&c.a, "-CONT");
    let took = wait_for("the stale copies on A are unloaded", Duration::from_secs(60), || {
        get(&format!("{}/regions", c.a_api)) == Value::Array(vec![])
    });
    eprintln!("the returning host's stale copies were unloaded {took:?} after it came back");
    for r in REGIONS {
        let p = placement(&c, r);
        assert_eq!((p["host"].as_str(), p["epoch"].as_u64()), (Some(c.b_link.as_str()), Some(2)), "{r}: {p}");
        assert!(get(&format!("{}/regions/{r}", c.b_api))["ticks"].as_u64().unwrap_or(0) > 0, "{r} runs on B");
    }
}

#[test]
fn draining_a_host_moves_every_region_live_and_disconnects_nobody() {
    let c = cluster();
    let g = free_port();
    let _gateway = terrane(&["gateway", "--listen", &g, "--directory", &c.orchestrator]);
    let mut bots = Command::new(env!("CARGO_BIN_EXE_terrane"))
        .args(["bot", "--gateway", &format!("ws://{g}/ws"), "--count", "50", "--for", "40s", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the 50 bots are in region 1,1", Duration::from_secs(30), || {
        get(&format!("{}/regions/1,1", c.a_api))["avatars"].as_u64() == Some(50)
    });
    let drain = Command::new(env!("CARGO_BIN_EXE_terrane"))
        .args(["drain", &c.a_link, "--orchestrator", &c.orchestrator, "--timeout", "60s"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&drain.stdout);
    eprintln!("{out}");
    assert!(drain.status.success(), "terrane drain failed: {out}{}", String::from_utf8_lossy(&drain.stderr));
    assert!(out.contains("can be stopped"), "{out}");
    assert_eq!(get(&format!("{}/regions", c.a_api)), Value::Array(vec![]), "the drained host is empty");
    for r in REGIONS {
        assert_eq!(placement(&c, r)["host"], c.b_link.as_str(), "{r} is on the other host");
    }
    let mut report = String::new();
    bots.stdout.take().unwrap().read_to_string(&mut report).unwrap();
    let _ = bots.wait();
    let report: Value =
        serde_json::from_str(report.trim()).unwrap_or_else(|e| panic!("bot report {report:?}: {e}"));
    assert_eq!(report["connected"], 50, "{report}");
    assert_eq!(report["disconnects"], 0, "nobody is kicked by a drain: {report}");
    assert_eq!(report["stalled"], 0, "{report}");
}

#[test]
fn status_shows_the_cluster_of_terrane_run_and_a_drain_of_an_unknown_host_fails_clearly() {
    let data = tempfile::tempdir().unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_terrane"))
        .args([
            "run",
            "--for",
            "30s",
            "--listen",
            "127.0.0.1:0",
            "--gateway",
            "127.0.0.1:0",
            "--objects",
            "20",
            // A new world of its own, not one kept in ./terrane-data by an earlier run.
            "--fresh",
            "--data",
            data.path().to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = {
        let mut out = BufReader::new(run.stdout.take().unwrap());
        let (mut first, mut second) = (String::new(), String::new());
        out.read_line(&mut first).unwrap();
        out.read_line(&mut second).unwrap();
        let api = first.split("http://").nth(1).unwrap().split(' ').next().unwrap().to_string();
        // "… terrane migrate 1,1 --to B --api URL --control-token TOKEN"
        let token = second.split("--control-token ").nth(1).unwrap().trim().to_string();
        // Keep reading: a closed stdout would end `terrane run` at its next status line.
        std::thread::spawn(move || for _ in out.lines() {});
        (Proc(run), format!("http://{api}"), token)
    };
    let (_run, api, token) = run;
    let status = || {
        let out = Command::new(env!("CARGO_BIN_EXE_terrane"))
            .args(["status", "--orchestrator", &api, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    wait_for("both hosts and all nine regions are reported", Duration::from_secs(30), || {
        let st = status();
        let hosts = st["hosts"].as_array().cloned().unwrap_or_default();
        let regions = st["regions"].as_array().cloned().unwrap_or_default();
        hosts.len() == 2 && regions.len() == 9 && regions.iter().all(|r| r["load"].is_object())
    });
    let st = status();
    let mut cores: Vec<u64> =
        st["hosts"].as_array().unwrap().iter().map(|h| h["cores"].as_u64().unwrap()).collect();
    cores.sort();
    assert!(cores[0] < cores[1] || cores == [1, 1], "two hosts of different sizes: {cores:?}");
    let table = Command::new(env!("CARGO_BIN_EXE_terrane"))
        .args(["status", "--orchestrator", &api])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("HOST") && table.contains("REGION") && table.contains("1,1"), "{table}");

    let drain = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_terrane"));
        cmd.args(["drain", "127.0.0.1:1", "--orchestrator", &api]).env_remove("TERRANE_CONTROL_TOKEN");
        if let Some(t) = token {
            cmd.args(["--control-token", t]);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = drain(None);
    assert!(err.contains("401") && err.contains("control token"), "a drain needs the token: {err}");
    let err = drain(Some(&token));
    assert!(err.contains("no live host named"), "{err}");
}
