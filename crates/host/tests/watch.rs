//! A host follows the directory's placements through its watch (owners learnt as they change,
//! with no polling), and falls back to polling when the directory offers no watch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use directory::{Change, Directory, DirectoryError, HostRecord, MemoryDirectory, Placement};
use host::net::Net;
use host::{Host, HostConfig};
use tokio::sync::broadcast;
use world::RegionId;

async fn start_host(dir: Arc<dyn Directory>) -> Arc<Net> {
    let host = Host::start(HostConfig { cores: 1, seed: 5 });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Net::start(host, listener, dir)
}

/// Waits until `f` holds, at most `limit` (a bound on a hang, not a speed figure).
async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn placed(host: &str, epoch: u64) -> Placement {
    Placement { host: host.into(), epoch }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_are_learnt_from_the_watch_as_they_change() {
    let dir: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    let net = start_host(dir.clone()).await;
    wait_for("the host watches the directory", Duration::from_secs(10), || net.placements().is_watching())
        .await;
    let r = RegionId::new(4, 4);
    assert_eq!(net.placements().current_owner(r), None);
    assert!(dir.compare_and_swap(r, None, placed("127.0.0.1:9", 1)).await.unwrap());
    wait_for("the first owner is learnt", Duration::from_secs(10), || {
        net.placements().current_owner(r).as_deref() == Some("127.0.0.1:9")
    })
    .await;
    // A failover elsewhere: the new owner replaces the old one.
    assert!(dir.compare_and_swap(r, Some(1), placed("127.0.0.1:8", 2)).await.unwrap());
    wait_for("the new owner is learnt", Duration::from_secs(10), || {
        net.placements().last_known(r) == Some(placed("127.0.0.1:8", 2))
    })
    .await;
    assert_eq!(net.placements().current_owner(r).as_deref(), Some("127.0.0.1:8"));
}

/// A directory that refuses to be watched.
struct NoWatch(MemoryDirectory);

#[async_trait::async_trait]
impl Directory for NoWatch {
    async fn get(&self, region: RegionId) -> Result<Option<Placement>, DirectoryError> {
        self.0.get(region).await
    }
    async fn list(&self) -> Result<Vec<(RegionId, Placement)>, DirectoryError> {
        self.0.list().await
    }
    async fn compare_and_swap(
        &self,
        region: RegionId,
        expected: Option<u64>,
        new: Placement,
    ) -> Result<bool, DirectoryError> {
        self.0.compare_and_swap(region, expected, new).await
    }
    async fn heartbeat(&self, host: &HostRecord, ttl: Duration) -> Result<(), DirectoryError> {
        self.0.heartbeat(host, ttl).await
    }
    async fn leave(&self, name: &str) -> Result<(), DirectoryError> {
        self.0.leave(name).await
    }
    async fn hosts(&self) -> Result<Vec<HostRecord>, DirectoryError> {
        self.0.hosts().await
    }
    async fn watch(&self) -> Result<broadcast::Receiver<Change>, DirectoryError> {
        Err(DirectoryError::Unreachable("watches are switched off in this test".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_watch_the_placements_are_polled() {
    let dir: Arc<dyn Directory> = Arc::new(NoWatch(MemoryDirectory::new()));
    let net = start_host(dir.clone()).await;
    let r = RegionId::new(5, 5);
    // After the first read: only a later poll can find it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(dir.compare_and_swap(r, None, placed("127.0.0.1:9", 1)).await.unwrap());
    wait_for("a poll reads the placement", Duration::from_secs(10), || {
        net.placements().last_known(r) == Some(placed("127.0.0.1:9", 1))
    })
    .await;
    assert!(!net.placements().is_watching());
    // Polled owners may be a second old: routing does not take them as current.
    assert_eq!(net.placements().current_owner(r), None);
}
