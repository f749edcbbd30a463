//! Live migration between two hosts over real links on loopback (one process, two hosts,
//! one directory): the region moves while it runs, its state carries on, and inputs sent to
//! the old host during and after the move are applied exactly once by the new one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use directory::{Directory, MemoryDirectory};
use host::net::Net;
use host::{Host, HostConfig};
use migrate::Policy;
use world::{EntityId, Input, ObjectSpec, RegionId};

async fn start_host(dir: Arc<dyn Directory>) -> Arc<Net> {
    let host = Host::start(HostConfig { cores: 1, seed: 5 });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Net::start(host, listener, dir)
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn count_named(net: &Net, region: RegionId, prefix: &str) -> Vec<String> {
    net.host()
        .with_region(region, |r| {
            r.entities().filter(|e| e.name.starts_with(prefix)).map(|e| e.name.clone()).collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_region_moves_to_another_host_and_no_input_is_lost_or_doubled() {
    let dir: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    let a = start_host(dir.clone()).await;
    let b = start_host(dir.clone()).await;
    let r = RegionId::new(3, 3);
    a.claim_new(r, None).await.unwrap();
    for k in 0..20 {
        a.input(r, Input::AddAvatar { id: EntityId(100 + k), name: format!("a{k}"), owner: 0, pos: None });
    }
    for k in 0..300 {
        a.input(
            r,
            Input::CreateObject {
                tag: k,
                spec: ObjectSpec { name: format!("obj {k}"), ..Default::default() },
            },
        );
    }
    eventually("the region is populated", || a.host().stats(r).map(|s| s.entities).unwrap_or(0) == 320).await;

    // Inputs keep coming to the old host throughout; it applies or forwards each exactly once.
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            for n in 0..200u64 {
                a.input(
                    r,
                    Input::CreateObject {
                        tag: n,
                        spec: ObjectSpec { name: format!("input {n}"), ..Default::default() },
                    },
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    let tick_before = a.host().stats(r).unwrap().tick;
    let id = a.migrate(r, b.name().to_string(), Policy::default()).await.unwrap();
    let status = a.wait(id, Duration::from_secs(20)).await.unwrap();
    assert!(status.committed, "{status:?}");
    assert!(status.freeze_ms.is_some(), "the target reported its first tick: {status:?}");
    sender.await.unwrap();

    assert!(a.host().stats(r).is_err(), "the old host let go of the region");
    let placement = dir.get(r).await.unwrap().unwrap();
    assert_eq!((placement.host.as_str(), placement.epoch), (b.name(), 2));
    eventually("the new host ticks it", || b.host().stats(r).is_ok_and(|s| s.tick > tick_before + 5)).await;
    eventually("every input landed", || count_named(&b, r, "input ").len() == 200).await;
    let mut names = count_named(&b, r, "input ");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 200, "an input was applied twice");
    assert_eq!(count_named(&b, r, "obj ").len(), 300);
    assert_eq!(b.host().stats(r).unwrap().avatars, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_to_a_host_that_is_not_there_fails_and_the_region_stays() {
    let dir: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    let a = start_host(dir.clone()).await;
    let r = RegionId::new(0, 0);
    a.claim_new(r, None).await.unwrap();
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    assert!(a.migrate(r, gone, Policy::default()).await.is_err());
    let t = a.host().stats(r).unwrap().tick;
    eventually("the region still ticks", || a.host().stats(r).unwrap().tick > t).await;
    assert_eq!(dir.get(r).await.unwrap().unwrap().host, a.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_owned_elsewhere_cannot_be_claimed_or_migrated() {
    let dir: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    let a = start_host(dir.clone()).await;
    let b = start_host(dir.clone()).await;
    let r = RegionId::new(1, 0);
    a.claim_new(r, None).await.unwrap();
    assert!(b.claim_new(r, None).await.is_err());
    assert!(b.migrate(r, a.name().to_string(), Policy::default()).await.is_err());
    assert!(a.migrate(r, a.name().to_string(), Policy::default()).await.is_err(), "not to itself");
}

/// Counts in its memory every 50 ms: every pre-copy round has script chunks to carry.
const COUNTER: &str = r#"(module
  (import "terrane" "set_timer" (func $set_timer (param i64)))
  (memory 1 1)
  (global $n (mut i32) (i32.const 0))
  (func (export "start") (call $set_timer (i64.const 50)))
  (func (export "timer")
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (i32.store (i32.const 1024) (global.get $n))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_scripts_move_with_their_region_and_keep_counting_on_the_new_host() {
    let dir: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    let a = start_host(dir.clone()).await;
    let b = start_host(dir.clone()).await;
    let r = RegionId::new(2, 1);
    a.claim_new(r, None).await.unwrap();
    a.input(r, Input::AddAvatar { id: EntityId(1), name: "a".into(), owner: 0, pos: None });
    for k in 0..40 {
        a.input(r, Input::CreateObject { tag: k, spec: ObjectSpec::default() });
    }
    eventually("objects exist", || a.host().stats(r).map(|s| s.entities).unwrap_or(0) == 41).await;
    let module = COUNTER.as_bytes().to_vec();
    let hash = world::ModuleHash::of(&module);
    a.input(r, Input::AddModule { bytes: module });
    for k in 0..40u64 {
        let object = EntityId(u64::from(r.x) << 48 | u64::from(r.y) << 32 | (k + 1));
        a.input(r, Input::AddScript { object, module: hash });
    }
    eventually("the scripts run", || {
        a.host().stats(r).is_ok_and(|s| s.scripts == 40 && s.script_events > 80)
    })
    .await;

    let id = a.migrate(r, b.name().to_string(), Policy::default()).await.unwrap();
    let status = a.wait(id, Duration::from_secs(20)).await.unwrap();
    assert!(status.committed, "{status:?}");
    let events = b.host().stats(r).unwrap().script_events;
    eventually("they keep counting there", || b.host().stats(r).is_ok_and(|s| s.script_events > events + 80))
        .await;
    let s = b.host().stats(r).unwrap();
    assert_eq!((s.scripts, s.script_errors), (40, 0), "{s:?}");
}
