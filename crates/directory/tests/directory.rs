//! Every backend keeps the same contract: compare-and-swap with one winner, host liveness that
//! expires when heartbeats stop, and watches that see every change. The memory and HTTP
//! backends always run; the etcd one runs against the server in TERRANE_TEST_ETCD (started by
//! scripts/test) and fails when TERRANE_REQUIRE_SERVICES=1 and it is missing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use directory::{Change, Directory, HostRecord, HttpDirectory, MemoryDirectory, Placement};
use tokio::sync::broadcast;
use world::RegionId;

fn at(host: &str, epoch: u64) -> Placement {
    Placement { host: host.into(), epoch }
}

fn host(name: &str, cores: u32) -> HostRecord {
    HostRecord { name: name.into(), api: format!("http://{name}-api"), cores }
}

async fn contract(dir: &dyn Directory, r: RegionId) {
    assert_eq!(dir.get(r).await.unwrap(), None);
    assert!(dir.compare_and_swap(r, None, at("a", 1)).await.unwrap());
    assert!(!dir.compare_and_swap(r, None, at("b", 1)).await.unwrap(), "only one first owner");
    assert!(!dir.compare_and_swap(r, Some(7), at("b", 8)).await.unwrap(), "a stale epoch loses");
    assert!(dir.compare_and_swap(r, Some(1), at("b", 2)).await.unwrap());
    assert!(!dir.compare_and_swap(r, Some(1), at("c", 2)).await.unwrap(), "the same epoch moves once");
    assert_eq!(dir.get(r).await.unwrap(), Some(at("b", 2)));
    assert!(dir.list().await.unwrap().contains(&(r, at("b", 2))));
}

/// Two directory clients (two orchestrators) race to move the same region: one wins.
async fn racing_swaps_have_one_winner(a: Arc<dyn Directory>, b: Arc<dyn Directory>, r: RegionId) {
    assert!(a.compare_and_swap(r, None, at("origin", 1)).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let dir = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            dir.compare_and_swap(r, Some(1), at(&format!("h{i}"), 2)).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += t.await.unwrap() as u32;
    }
    assert_eq!(wins, 1, "exactly one of the racing swaps wins");
    assert_eq!(a.get(r).await.unwrap().unwrap().epoch, 2);
    assert_eq!(b.get(r).await.unwrap().unwrap().epoch, 2);
}

async fn next_change(rx: &mut broadcast::Receiver<Change>, want: impl Fn(&Change) -> bool) -> Change {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(c)) if want(&c) => return c,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("watch ended: {e}"),
            Err(_) => panic!("the awaited change never came"),
        }
    }
}

/// A host that stops its heartbeats (as if killed) drops out within about its TTL, and the
/// watcher, on another client, sees it go; one that keeps them up stays.
async fn liveness_and_watch(
    host_side: Arc<dyn Directory>,
    observer: Arc<dyn Directory>,
    tag: &str,
    r: RegionId,
) {
    let ttl = Duration::from_secs(2);
    let mut changes = observer.watch().await.unwrap();
    let dying = host(&format!("{tag}-dying:1"), 1);
    let staying = host(&format!("{tag}-staying:2"), 2);
    host_side.heartbeat(&dying, ttl).await.unwrap();
    host_side.heartbeat(&staying, ttl).await.unwrap();
    next_change(&mut changes, |c| c == &Change::HostUp(dying.clone())).await;
    let hosts = observer.hosts().await.unwrap();
    assert!(hosts.contains(&dying) && hosts.contains(&staying), "{hosts:?}");

    // Region changes reach the watcher too.
    assert!(host_side.compare_and_swap(r, None, at(&staying.name, 1)).await.unwrap());
    let seen =
        next_change(&mut changes, |c| matches!(c, Change::Region { region, .. } if *region == r)).await;
    assert_eq!(seen, Change::Region { region: r, placement: Some(at(&staying.name, 1)) });

    // `dying` stops; `staying` keeps heartbeating. Bounded: 3 TTLs is a correctness bound
    // (a lease that never expires), not a speed figure.
    let stopped = Instant::now();
    let keep = {
        let dir = host_side.clone();
        let staying = staying.clone();
        tokio::spawn(async move {
            loop {
                dir.heartbeat(&staying, ttl).await.unwrap();
                tokio::time::sleep(ttl / 4).await;
            }
        })
    };
    let gone = loop {
        let hosts = observer.hosts().await.unwrap();
        if !hosts.iter().any(|h| h.name == dying.name) {
            break stopped.elapsed();
        }
        assert!(stopped.elapsed() < ttl * 3, "a host without heartbeats is still live after 3 TTLs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    next_change(&mut changes, |c| c == &Change::HostDown { name: dying.name.clone() }).await;
    eprintln!("{tag}: a host without heartbeats dropped out after {gone:?} (TTL {ttl:?})");
    assert!(observer.hosts().await.unwrap().contains(&staying), "a heartbeating host stays live");
    keep.abort();

    // A clean leave is seen at once.
    host_side.leave(&staying.name).await.unwrap();
    next_change(&mut changes, |c| c == &Change::HostDown { name: staying.name.clone() }).await;
    assert!(!observer.hosts().await.unwrap().iter().any(|h| h.name == staying.name));
}

#[tokio::test]
async fn the_memory_directory_keeps_the_contract_and_survives_a_restart() {
    contract(&MemoryDirectory::new(), RegionId::new(1, 2)).await;
    let path = std::env::temp_dir().join(format!("terrane-dir-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    contract(&MemoryDirectory::persistent(path.clone()).unwrap(), RegionId::new(1, 2)).await;
    let again = MemoryDirectory::persistent(path.clone()).unwrap();
    assert_eq!(again.get(RegionId::new(1, 2)).await.unwrap().unwrap().epoch, 2);
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn memory_racing_swaps_have_one_winner() {
    let dir: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    racing_swaps_have_one_winner(dir.clone(), dir, RegionId::new(0, 0)).await;
}

#[tokio::test]
async fn memory_liveness_expires_and_is_watched() {
    let dir = Arc::new(MemoryDirectory::new());
    dir.sweep_expired();
    liveness_and_watch(dir.clone(), dir, "mem", RegionId::new(3, 3)).await;
}

async fn serve_http() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = Arc::new(MemoryDirectory::new());
    dir.sweep_expired();
    let app = directory::router(dir);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn the_http_directory_keeps_the_contract() {
    let base = serve_http().await;
    contract(&HttpDirectory::new(&base), RegionId::new(1, 2)).await;
}

#[tokio::test]
async fn http_racing_swaps_have_one_winner() {
    let base = serve_http().await;
    let (a, b): (Arc<dyn Directory>, Arc<dyn Directory>) =
        (Arc::new(HttpDirectory::new(&base)), Arc::new(HttpDirectory::new(&base)));
    racing_swaps_have_one_winner(a, b, RegionId::new(0, 0)).await;
}

#[tokio::test]
async fn http_liveness_expires_and_is_watched() {
    let base = serve_http().await;
    liveness_and_watch(
        Arc::new(HttpDirectory::new(&base)),
        Arc::new(HttpDirectory::new(&base)),
        "http",
        RegionId::new(3, 3),
    )
    .await;
}

#[tokio::test]
async fn a_registration_with_bad_fields_is_refused() {
    let dir = MemoryDirectory::new();
    let bad = HostRecord { name: "a/b".into(), api: String::new(), cores: 1 };
    assert!(dir.heartbeat(&bad, Duration::from_secs(2)).await.is_err());
    assert!(dir.heartbeat(&host("ok:1", 1), Duration::from_millis(1)).await.is_err(), "TTL below the floor");
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use directory::EtcdDirectory;

    /// The etcd server of the test command, or None (a failure when services are required).
    fn endpoint() -> Option<String> {
        match std::env::var("TERRANE_TEST_ETCD") {
            Ok(e) if !e.is_empty() => Some(e),
            _ => {
                assert!(
                    std::env::var("TERRANE_REQUIRE_SERVICES").as_deref() != Ok("1"),
                    "TERRANE_TEST_ETCD is not set: run the tests with ./scripts/test, which starts etcd \
                     (scripts/services/etcd.sh)"
                );
                eprintln!("TERRANE_TEST_ETCD not set: skipping the etcd backend");
                None
            }
        }
    }

    /// A client under a prefix of its own, so tests do not see each other's keys.
    async fn client(prefix: &str) -> Option<Arc<dyn Directory>> {
        let e = endpoint()?;
        let p = format!("/terrane-test/{}/{prefix}/", std::process::id());
        Some(Arc::new(EtcdDirectory::connect(&[e], &p).await.expect("connecting to etcd")))
    }

    #[tokio::test]
    async fn the_etcd_directory_keeps_the_contract() {
        let Some(dir) = client("contract").await else { return };
        contract(dir.as_ref(), RegionId::new(1, 2)).await;
    }

    #[tokio::test]
    async fn etcd_racing_swaps_from_two_orchestrators_have_one_winner() {
        let (Some(a), Some(b)) = (client("race").await, client("race").await) else { return };
        racing_swaps_have_one_winner(a, b, RegionId::new(0, 0)).await;
    }

    #[tokio::test]
    async fn etcd_leases_expire_and_are_watched() {
        let (Some(a), Some(b)) = (client("lease").await, client("lease").await) else { return };
        liveness_and_watch(a, b, "etcd", RegionId::new(3, 3)).await;
    }
}
