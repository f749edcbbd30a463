//! Border crossings between real processes on loopback: an orchestrator (the directory), two
//! hosts sharing a 2×2 grid (west column on one, east column on the other), one gateway, and
//! commuting bots walking back and forth across the border between the hosts.
//!
//! Checked: no bot disconnected or missed an update (sequence gaps), every crossing completed
//! (none in flight at the end, none refused, none called off), every departure arrived exactly
//! once (the regions' own counters), and no avatar is left over once the bots have gone.
//!
//! The hand-over pause the bots measured (`crossing_pause_*`, from the avatar's last row inside
//! the old region to its first inside the new one) is printed with their report, not asserted:
//! it is wall-clock time, and on a loaded machine it follows the ordinary update gaps.
//!
//! TERRANE_CROSSING_BOTS (default 100) and TERRANE_CROSSING_SECS (default 60) size the run.

mod support;
use support::{free_port, Proc};

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn terrane(args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_terrane"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Each command prints one line once it listens.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    Proc(child)
}

fn get(url: &str) -> Value {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap();
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return Value::Null };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    serde_json::from_str(answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)).unwrap_or(Value::Null)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Per-region stats of both hosts.
fn regions(apis: &[String]) -> Vec<Value> {
    apis.iter().flat_map(|a| get(&format!("{a}/regions")).as_array().cloned().unwrap_or_default()).collect()
}

fn sum(regions: &[Value], f: impl Fn(&Value) -> u64) -> u64 {
    regions.iter().map(f).sum()
}

fn crossing(r: &Value, key: &str) -> u64 {
    r["crossings"][key].as_u64().unwrap_or(0)
}

#[test]
fn commuting_bots_cross_between_two_hosts_and_nothing_is_lost_or_doubled() {
    let bots = env_or("TERRANE_CROSSING_BOTS", 100);
    let secs = env_or("TERRANE_CROSSING_SECS", 60);
    let dir = free_port();
    let dir_url = format!("http://{dir}");
    // No placement moves of its own: the regions stay split between the two hosts.
    let _orchestrator = terrane(&["orchestrator", "--listen", &dir, "--no-autoplace"]);
    let (west_api, east_api) = (free_port(), free_port());
    let _west = terrane(&[
        "host",
        "--listen",
        &west_api,
        "--link",
        &free_port(),
        "--directory",
        &dir_url,
        "--cores",
        "1",
        "--regions",
        "0,0",
        "0,1",
    ]);
    let _east = terrane(&[
        "host",
        "--listen",
        &east_api,
        "--link",
        &free_port(),
        "--directory",
        &dir_url,
        "--cores",
        "1",
        "--regions",
        "1,0",
        "1,1",
    ]);
    let gateway = free_port();
    let _gateway = terrane(&["gateway", "--listen", &gateway, "--directory", &dir_url, "--spawn", "0,0"]);
    let apis = [format!("http://{west_api}"), format!("http://{east_api}")];
    // Hosts learn the grid from the directory about once a second.
    std::thread::sleep(Duration::from_millis(1500));

    let mut bot = Command::new(env!("CARGO_BIN_EXE_terrane"))
        .args([
            "bot",
            "--gateway",
            &format!("ws://{gateway}/ws"),
            "--count",
            &bots.to_string(),
            "--behaviour",
            "commute",
            "--for",
            &format!("{secs}s"),
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // While they run, watch the avatar count. The two hosts are asked one after the other,
    // so an avatar crossing between the two questions can be counted twice or not at all:
    // doubling is checked where it is exact, by the regions' own crossing counters below.
    let deadline = Instant::now() + Duration::from_secs(secs + 60);
    let mut most = 0;
    let status = loop {
        if let Some(status) = bot.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the bots did not finish");
        most = most.max(sum(&regions(&apis), |r| r["avatars"].as_u64().unwrap_or(0)));
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut out = String::new();
    bot.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "terrane bot failed: {out}");
    let report: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    eprintln!("bots: {report}");
    assert_eq!(report["connected"], bots, "{report}");
    assert_eq!(report["disconnects"], 0, "{report}");
    assert_eq!(report["seq_gaps"], 0, "{report}");
    assert_eq!(report["stalled"], 0, "{report}");
    assert!(report["crossings"].as_u64().unwrap() >= bots, "each bot crossed at least once: {report}");
    assert!(most >= bots, "all avatars were in the world at some point (most seen {most})");

    // The bots have gone: their avatars leave (also those that were crossing at the time) and
    // every crossing settles.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rs = regions(&apis);
        let avatars = sum(&rs, |r| r["avatars"].as_u64().unwrap_or(0));
        let in_flight = sum(&rs, |r| crossing(r, "in_flight"));
        if avatars == 0 && in_flight == 0 {
            eprintln!("regions: {}", Value::Array(rs.clone()));
            assert_eq!(sum(&rs, |r| crossing(r, "refused")), 0, "no crossing step refused");
            assert_eq!(sum(&rs, |r| crossing(r, "returned")), 0, "no crossing called off");
            assert_eq!(
                sum(&rs, |r| crossing(r, "departed")),
                sum(&rs, |r| crossing(r, "arrived")),
                "every departure arrived"
            );
            assert!(sum(&rs, |r| crossing(r, "departed")) >= bots, "each avatar left a region at least once");
            break;
        }
        assert!(Instant::now() < deadline, "left over: {avatars} avatars, {in_flight} crossings in flight");
        std::thread::sleep(Duration::from_millis(200));
    }
}
