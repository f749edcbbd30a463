//! Fencing: two hosts share one store; when one takes a region over (the other taken for dead,
//! e.g. paused), the old host's later writes for that region are refused by the store, it never
//! acknowledges them, and it stops running the region. Run against SQLite (one file, two
//! connections) and PostgreSQL (`TERRANE_TEST_POSTGRES`, started by scripts/services/postgres.sh).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use host::durable::{AckError, Acked, Durability, DurableConfig, StoreOpener};
use host::{Host, HostConfig};
use store::{PgStore, SqliteStore, Store};
use world::{Input, ObjectSpec, Region, RegionId, Vec3};

const HOME: RegionId = RegionId::new(2, 5);
const WAIT: Duration = Duration::from_secs(20);

fn create(host: &Host, tag: u64, name: &str) -> Result<Acked, AckError> {
    send_create(host, tag, name).recv_timeout(WAIT).expect("an answer in time")
}

/// Queues a create; the answer comes on the receiver.
fn send_create(host: &Host, tag: u64, name: &str) -> mpsc::Receiver<Result<Acked, AckError>> {
    let (tx, rx) = mpsc::sync_channel(1);
    let spec =
        ObjectSpec { name: name.into(), pos: Vec3::new(20.0 + tag as f32, 40.0, 30.0), ..Default::default() };
    host.send_durable(
        HOME,
        Input::CreateObject { tag, spec },
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )
    .expect("queued");
    rx
}

fn names(r: &Region) -> Vec<String> {
    let mut n: Vec<String> = r.entities().filter(|e| !e.is_avatar()).map(|e| e.name.clone()).collect();
    n.sort();
    n
}

fn durable_host(open: StoreOpener) -> (Host, std::sync::Arc<Durability>) {
    let d = Durability::start(open, DurableConfig::default()).expect("store opens");
    let host = Host::start(HostConfig { cores: 1, seed: 9 });
    host.set_durability(d.clone());
    (host, d)
}

fn a_paused_host_cannot_write_after_a_takeover(open: impl Fn() -> StoreOpener) {
    let (old, _) = durable_host(open());
    old.load_new(HOME, None).unwrap();
    assert!(create(&old, 1, "before the takeover").unwrap().durable);

    // The old host pauses between two ticks (as a SIGSTOP would), with a change queued.
    let (paused_tx, paused) = mpsc::channel();
    let (resume, resume_rx) = mpsc::channel::<()>();
    let pauser = {
        let old = old.clone();
        std::thread::spawn(move || {
            old.with_region(HOME, |_| {
                paused_tx.send(()).unwrap();
                let _ = resume_rx.recv();
            })
        })
    };
    paused.recv_timeout(WAIT).expect("paused");
    let late = send_create(&old, 2, "from the old owner");

    // Meanwhile another host sharing the store takes the region over from what is stored.
    let (new, _) = durable_host(open());
    let (region, _) = new.recover_stored(HOME).unwrap().expect("the region is stored");
    assert_eq!(names(&region), vec!["before the takeover".to_string()]);
    new.load(region).unwrap();

    // The old host wakes up and goes on as if nothing happened: its change is applied in its
    // memory, refused by the store, and never acknowledged.
    resume.send(()).unwrap();
    pauser.join().unwrap().unwrap();
    let late = late.recv_timeout(WAIT).expect("an answer in time");
    assert!(matches!(late, Err(AckError::Moved)), "a fenced host must not acknowledge: {late:?}");
    // And it stops running the region.
    let started = Instant::now();
    while old.region_ids().contains(&HOME) {
        assert!(started.elapsed() < WAIT, "the fenced host still runs {HOME}");
        std::thread::sleep(Duration::from_millis(10));
    }

    // The new owner continues the log.
    assert!(create(&new, 3, "after the takeover").unwrap().durable);
    new.shutdown();
    old.shutdown();

    // What the store holds: both acknowledged changes, not the refused one.
    let (_, check) = durable_host(open());
    let back = check.recover(HOME, || Region::new(HOME, 9)).unwrap().expect("stored");
    assert_eq!(names(&back), vec!["after the takeover".to_string(), "before the takeover".to_string()]);
}

#[test]
fn sqlite_a_paused_host_cannot_write_after_a_takeover() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    a_paused_host_cannot_write_after_a_takeover(|| {
        let dir = dir.clone();
        Box::new(move || Ok(Box::new(SqliteStore::open_dir(&dir)?) as Box<dyn Store>))
    });
}

#[test]
fn postgres_a_paused_host_cannot_write_after_a_takeover() {
    let Ok(url) = std::env::var("TERRANE_TEST_POSTGRES") else {
        panic!(
            "TERRANE_TEST_POSTGRES is not set: run the tests through ./scripts/test, which starts a \
             PostgreSQL server for them (scripts/services/postgres.sh)"
        );
    };
    let schema = format!("host_fencing_{}", std::process::id());
    a_paused_host_cannot_write_after_a_takeover(|| {
        let (url, schema) = (url.clone(), schema.clone());
        Box::new(move || Ok(Box::new(PgStore::connect_in_schema(&url, &schema)?) as Box<dyn Store>))
    });
}
