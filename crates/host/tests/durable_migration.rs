//! Live migration between two hosts that share one store (SQLite): the target continues the
//! region's log, and every change acknowledged on either side, before or after the move, is in
//! the store exactly once; changes sent while it moves are refused ("send again"), never half
//! applied. Both when each host has its store writer and when the two share one (as the hosts
//! of `terrane run` do: then the target claims the region before the source lets it go).
//! (The order "flush, then release" is the migration machines' rule, tested in
//! crates/migrate; here nothing purposeful is queued at the freeze, since changes are refused
//! during a move.)

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use directory::{Directory, MemoryDirectory};
use host::durable::{AckError, Acked, Durability, DurableConfig, StoreOpener};
use host::net::Net;
use host::{Host, HostConfig};
use migrate::Policy;
use store::{SqliteStore, Store};
use world::{Input, ObjectSpec, Region, RegionId, Vec3};

const HOME: RegionId = RegionId::new(6, 1);
const WAIT: Duration = Duration::from_secs(20);

fn opener(dir: &std::path::Path) -> StoreOpener {
    let dir = dir.to_path_buf();
    Box::new(move || Ok(Box::new(SqliteStore::open_dir(&dir)?) as Box<dyn Store>))
}

fn durable_host(open: StoreOpener) -> (Host, Arc<Durability>) {
    let d = Durability::start(open, DurableConfig::default()).expect("store opens");
    let host = Host::start(HostConfig { cores: 1, seed: 3 });
    host.set_durability(d.clone());
    (host, d)
}

/// Queues a durable create on whichever host `net` is; the answer comes on the receiver.
fn send_create(net: &Net, tag: u64) -> mpsc::Receiver<Result<Acked, AckError>> {
    let (tx, rx) = mpsc::sync_channel(1);
    let spec = ObjectSpec {
        name: format!("change {tag}"),
        pos: Vec3::new(10.0 + (tag % 200) as f32, 40.0, 30.0),
        ..Default::default()
    };
    let queued = net.host().send_durable(
        HOME,
        Input::CreateObject { tag, spec },
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    if queued.is_err() {
        // Not (or no longer, or not yet) on that host: a client would send it again.
        let (tx, rx) = mpsc::sync_channel(1);
        let _ = tx.send(Err(AckError::Moved));
        return rx;
    }
    rx
}

fn names(r: &Region) -> Vec<String> {
    let mut n: Vec<String> =
        r.entities().filter(|e| e.name.starts_with("change ")).map(|e| e.name.clone()).collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_store_the_target_continues_the_log_and_no_acknowledged_change_is_lost() {
    migrate_with_a_store(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_sharing_one_store_writer_keep_logging_a_region_that_moved_between_them() {
    migrate_with_a_store(true).await;
}

/// Moves HOME from one host to the other while changes flow; `shared`: both hosts use one
/// Durability (one writer thread), otherwise each opens the store itself.
async fn migrate_with_a_store(shared: bool) {
    let data = tempfile::tempdir().unwrap();
    let dir: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    let (ha, da) = durable_host(opener(data.path()));
    let hb = if shared {
        let hb = Host::start(HostConfig { cores: 1, seed: 3 });
        hb.set_durability(da.clone());
        hb
    } else {
        durable_host(opener(data.path())).0
    };
    let la = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = Net::start(ha, la, dir.clone());
    let b = Net::start(hb, lb, dir.clone());
    a.claim_new(HOME, None).await.unwrap();

    // Changes go to whichever host the directory names, before, during and after the move.
    let mut answers = Vec::new();
    let mut acked = Vec::new();
    let mut migration = None;
    let started = Instant::now();
    let mut after_commit = 0;
    let mut tag = 0u64;
    while after_commit < 40 {
        let owner = dir.get(HOME).await.unwrap().unwrap().host;
        let net = if owner == b.name() { &b } else { &a };
        answers.push((tag, send_create(net, tag)));
        if tag == 40 {
            migration = Some(a.migrate(HOME, b.name().to_string(), Policy::default()).await.unwrap());
        }
        if migration.and_then(|id| a.migration(id)).is_some_and(|s| s.done) {
            after_commit += 1;
        }
        tag += 1;
        tokio::time::sleep(Duration::from_millis(3)).await;
        assert!(started.elapsed() < WAIT, "the migration did not end in time");
    }
    let status = a.wait(migration.expect("started"), WAIT).await.unwrap();
    assert!(status.committed, "{status:?}");
    for (tag, rx) in answers {
        let answer = tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT)).await.unwrap();
        match answer.expect("an answer in time") {
            Ok(ack) if ack.durable => acked.push(format!("change {tag}")),
            // Queued on the source as the region left, or sent to a host that did not hold it
            // (yet): applied nowhere, "send again".
            Err(AckError::Moved) => {}
            other => panic!("change {tag}: {other:?}"),
        }
    }
    // Refused while the region moves ("send again"); the 40 before and the 40 after it land.
    assert!(acked.len() >= 80, "changes before and after the move are acknowledged: {}", acked.len());
    a.host().shutdown();
    b.host().shutdown();

    // A third host reading the store finds every acknowledged change once, and nothing else.
    let (_, check) = durable_host(opener(data.path()));
    let back = check.recover(HOME, || Region::new(HOME, 3)).unwrap().expect("stored");
    let mut want = acked.clone();
    want.sort();
    let got = names(&back);
    assert_eq!(got, want, "the store holds exactly the acknowledged changes");
}
