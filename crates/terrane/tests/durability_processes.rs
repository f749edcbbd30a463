//! Acceptance of issue 7 with real processes: clients make acknowledged creations and edits
//! while the host is killed with SIGKILL at a random moment; after a restart on the same store
//! every acknowledged change is there and nothing unacknowledged is half-applied. Once on the
//! embedded store, once on PostgreSQL (`TERRANE_TEST_POSTGRES`, scripts/services/postgres.sh).
//! `DURABILITY_SEEDS=n` runs more seeds; a failure prints its seed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use world::{EntityId, Input, ObjectEdit, ObjectSpec, Region, RegionId, Vec3};

/// Changes the clients make in all, per seed (the kill usually comes before the end).
const CHANGES: usize = 1_000;
/// Clients making changes at once (each waits for its acknowledgement before the next).
const CLIENTS: usize = 40;

fn start_host(store_args: &[String], region: RegionId) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_terrane"))
        .args(["host", "--listen", "127.0.0.1:0", "--link", "127.0.0.1:0", "--cores", "1", "--regions"])
        .arg(region.to_string())
        .args(store_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn terrane host");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("host's first line");
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split([',', ' ']).next())
        .unwrap_or_else(|| panic!("no API address in {first:?}"))
        .to_string();
    (child, addr)
}

/// One HTTP/1.0 request; `None` when the host is gone.
fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(40))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = std::str::from_utf8(&out[9..12]).ok()?.parse().ok()?;
    Some((status, out[head_end + 4..].to_vec()))
}

/// What one client knows of one of its objects: the last acknowledged (name, text), and the
/// one in flight when the host died, if any.
#[derive(Clone, Debug, Default)]
struct Known {
    acked: Option<(String, String)>,
    in_flight: Option<(String, String)>,
}

fn change(addr: &str, region: RegionId, input: &Input) -> Option<serde_json::Value> {
    let body = serde_json::to_string(input).expect("json");
    let (status, body) = http(addr, "POST", &format!("/regions/{region}/changes"), &body)?;
    assert!(
        status == 200 || status >= 500,
        "change refused with {status}: {}",
        String::from_utf8_lossy(&body)
    );
    (status == 200).then(|| serde_json::from_slice(&body).expect("ack json"))
}

fn run_seed(seed: u64, store_args: Vec<String>) {
    let region = RegionId::new((seed % 50) as u16 * 1000 + (std::process::id() % 1000) as u16, 7);
    let (mut host, addr) = start_host(&store_args, region);
    let known: Arc<Mutex<HashMap<EntityId, Known>>> = Default::default();
    let pending_creates: Arc<Mutex<usize>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(CHANGES));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, known, stop, budget, pending) =
                (addr.clone(), known.clone(), stop.clone(), budget.clone(), pending_creates.clone());
            std::thread::spawn(move || {
                let mut mine: Vec<EntityId> = Vec::new();
                let mut k = 0u64;
                while !stop.load(Ordering::SeqCst) && budget.fetch_sub(1, Ordering::SeqCst) > 0 {
                    k += 1;
                    // Two edits per creation: create, edit, edit, create, …
                    if k % 3 == 1 || mine.is_empty() {
                        let name = format!("c{c} n{k}");
                        let spec = ObjectSpec {
                            name: name.clone(),
                            pos: Vec3::new(10.0 + c as f32 * 5.0, 10.0 + (k % 200) as f32, 30.0),
                            ..Default::default()
                        };
                        *pending.lock().unwrap() += 1;
                        let Some(ack) = change(
                            &addr,
                            region,
                            &Input::CreateObject { tag: c as u64 * 1_000_000 + k, spec },
                        ) else {
                            return;
                        };
                        *pending.lock().unwrap() -= 1;
                        let id = EntityId(ack["created"].as_u64().expect("created id"));
                        mine.push(id);
                        known
                            .lock()
                            .unwrap()
                            .insert(id, Known { acked: Some((name, String::new())), in_flight: None });
                    } else {
                        let id = mine[(k as usize) % mine.len()];
                        // Name and text change together: a half-applied edit would show.
                        let (name, text) = (format!("c{c} e{k}"), format!("edit {k} by {c}"));
                        let edit = ObjectEdit {
                            name: Some(name.clone()),
                            text: Some(text.clone()),
                            ..Default::default()
                        };
                        known.lock().unwrap().get_mut(&id).expect("mine").in_flight =
                            Some((name.clone(), text.clone()));
                        if change(&addr, region, &Input::EditObject { id, edit }).is_none() {
                            return;
                        }
                        let mut kn = known.lock().unwrap();
                        let e = kn.get_mut(&id).expect("mine");
                        e.acked = Some((name, text));
                        e.in_flight = None;
                    }
                }
            })
        })
        .collect();
    // The kill comes at a moment drawn from the seed, while the clients are busy.
    let kill_after = Duration::from_millis(300 + splitmix(seed) % 2_500);
    let started = Instant::now();
    while started.elapsed() < kill_after && budget.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    host.kill().expect("SIGKILL the host");
    host.wait().expect("reap");
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
    let known = known.lock().unwrap().clone();
    let acked = known.values().filter(|k| k.acked.is_some()).count();
    assert!(acked > 0, "seed {seed}: no change was acknowledged before the kill");

    let (mut host, addr) = start_host(&store_args, region);
    let (status, bytes) = http(&addr, "GET", &format!("/regions/{region}/snapshot"), "").expect("snapshot");
    assert_eq!(status, 200, "seed {seed}");
    let recovered = Region::from_snapshot(&bytes).expect("snapshot decodes");
    host.kill().expect("stop the host");
    host.wait().expect("reap");

    for (id, k) in &known {
        let e =
            recovered.entity(*id).unwrap_or_else(|| panic!("seed {seed}: acknowledged object {id} is gone"));
        let got = (e.name.clone(), e.text.clone());
        let ok = k.acked.as_ref() == Some(&got) || k.in_flight.as_ref() == Some(&got);
        assert!(
            ok,
            "seed {seed}: object {id} is {got:?}; acknowledged {:?}, in flight {:?}",
            k.acked, k.in_flight
        );
    }
    let extra = recovered.entity_count() - known.len();
    assert!(
        extra <= *pending_creates.lock().unwrap(),
        "seed {seed}: {extra} objects nobody was creating when the host died"
    );
    eprintln!(
        "seed {seed}: killed after {kill_after:?}; {acked} acknowledged objects all recovered ({} entities)",
        recovered.entity_count()
    );
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seeds() -> u64 {
    std::env::var("DURABILITY_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3)
}

#[test]
fn acknowledged_changes_survive_a_sigkilled_host_on_the_embedded_store() {
    for seed in 1..=seeds() {
        let dir = tempfile::tempdir().expect("temp dir");
        run_seed(seed, vec!["--data".into(), dir.path().display().to_string()]);
    }
}

#[test]
fn acknowledged_changes_survive_a_sigkilled_host_on_postgresql() {
    let Ok(url) = std::env::var("TERRANE_TEST_POSTGRES") else {
        panic!(
            "TERRANE_TEST_POSTGRES is not set: run through ./scripts/test, which starts PostgreSQL \
             (scripts/services/postgres.sh)"
        );
    };
    for seed in 1..=seeds() {
        run_seed(100 + seed, vec!["--store".into(), url.clone()]);
    }
}
