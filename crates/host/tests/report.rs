//! The load report a host sends the orchestrator: each region's crowd and tick cost over the
//! last window, at the rate it ticks now.

use std::time::{Duration, Instant};

use directory::HostRecord;
use host::{Host, HostConfig};
use world::{EntityId, Input, RegionId};

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn record() -> HostRecord {
    HostRecord { name: "127.0.0.1:1".into(), api: "http://127.0.0.1:2".into(), cores: 1 }
}

#[test]
fn a_report_lists_every_region_with_its_crowd_and_its_tick_rate() {
    let host = Host::start(HostConfig { cores: 1, seed: 3 });
    let (busy, empty) = (RegionId::new(0, 0), RegionId::new(1, 0));
    host.load_new(busy, None).unwrap();
    host.load_new(empty, None).unwrap();
    for id in 1..=3 {
        host.send(busy, Input::AddAvatar { id: EntityId(id), name: "a".into(), owner: 0, pos: None })
            .unwrap();
    }
    eventually("the busy region ticked a second's worth", || host.stats(busy).unwrap().ticks >= 50);
    let report = host::report::report(&host, record(), Duration::from_secs(1));
    assert_eq!(report.host, record());
    assert_eq!(report.regions.len(), 2);
    let b = report.regions.iter().find(|r| r.region == busy).unwrap();
    let e = report.regions.iter().find(|r| r.region == empty).unwrap();
    assert_eq!((b.avatars, e.avatars), (3, 0));
    assert_eq!((b.rate_hz, e.rate_hz), (45, 5));
    assert!((b.tick_budget_ms - 1000.0 / 45.0).abs() < 1e-9 && (e.tick_budget_ms - 200.0).abs() < 1e-9);
    assert!(b.tick_p99_ms >= 0.0 && b.tick_p99_ms.is_finite());
    host.shutdown();
}
