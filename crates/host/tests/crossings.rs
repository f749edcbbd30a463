//! Border crossings between hosts over real links on loopback (one process, two hosts, one
//! directory): objects that slide across a border arrive in the neighbour exactly once, also
//! when the region they leave migrates to the other host while crossings are in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use directory::{Directory, MemoryDirectory};
use host::net::Net;
use host::{Host, HostConfig};
use migrate::Policy;
use world::{Input, ObjectSpec, RegionId, Vec3};

const WEST: RegionId = RegionId::new(0, 0);
const EAST: RegionId = RegionId::new(1, 0);
/// Sliders per side.
const N: u64 = 30;

async fn start_host(dir: Arc<dyn Directory>) -> Arc<Net> {
    let host = Host::start(HostConfig { cores: 1, seed: 5 });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Net::start(host, listener, dir)
}

/// Where each slider is now: id → regions holding it (a healthy world has exactly one each).
fn census(nets: &[&Arc<Net>]) -> BTreeMap<String, Vec<RegionId>> {
    let mut seen: BTreeMap<String, Vec<RegionId>> = BTreeMap::new();
    for net in nets {
        for r in [WEST, EAST] {
            let names = net
                .host()
                .with_region(r, |reg| {
                    reg.entities().filter(|e| e.name.starts_with("slider")).map(|e| e.name.clone()).collect()
                })
                .unwrap_or_else(|_| Vec::new());
            for n in names {
                seen.entry(n).or_default().push(r);
            }
        }
    }
    seen
}

fn in_flight(nets: &[&Arc<Net>]) -> u64 {
    nets.iter().flat_map(|n| n.host().all_stats()).map(|s| s.crossings.in_flight).sum()
}

/// Sliders near the shared border, pushed across it: physical objects that slide a few
/// metres on the ground and stop, so the world comes to rest on the other side.
fn push_sliders(net: &Net, region: RegionId, east: bool) {
    for k in 0..N {
        let x = if east { 254.6 + (k % 10) as f32 * 0.1 } else { 1.4 - (k % 10) as f32 * 0.1 };
        let spec = ObjectSpec {
            name: format!("slider {region} {k}"),
            pos: Vec3::new(x, 20.0 + k as f32 * 7.0, 0.0),
            vel: Vec3::new(if east { 12.0 } else { -12.0 }, 0.0, 0.0),
            physical: true,
            ..Default::default()
        };
        net.input(region, Input::CreateObject { tag: k, spec });
    }
}

async fn settle(nets: &[&Arc<Net>]) -> BTreeMap<String, Vec<RegionId>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = census(nets);
        for (name, regions) in &seen {
            assert_eq!(regions.len(), 1, "{name} is in {regions:?} at once");
        }
        let expected = 2 * N as usize;
        assert!(seen.len() <= expected, "more sliders than were made: {}", seen.len());
        if seen.len() == expected && in_flight(nets) == 0 {
            let all_landed = seen.iter().all(|(name, r)| {
                let from_west = name.starts_with(&format!("slider {WEST}"));
                r[0] == if from_west { EAST } else { WEST }
            });
            if all_landed {
                return seen;
            }
        }
        assert!(
            Instant::now() < deadline,
            "crossings did not settle: {} seen, {} in flight",
            seen.len(),
            in_flight(nets)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two hosts sharing a directory: the west region on the first, the east one on the second,
/// both knowing their neighbour.
async fn west_and_east() -> (Arc<Net>, Arc<Net>) {
    let dir: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    let a = start_host(dir.clone()).await;
    let b = start_host(dir.clone()).await;
    a.claim_new(WEST, None).await.unwrap();
    b.claim_new(EAST, None).await.unwrap();
    grid_known(&[&a, &b]).await;
    (a, b)
}

async fn grid_known(nets: &[&Arc<Net>]) {
    // Hosts learn the grid from the directory (its watch, or a re-read); until then edges bounce.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let known = nets.iter().all(|net| {
            net.host().region_ids().into_iter().all(|r| {
                net.host().with_region(r, |reg| reg.neighbours()).is_ok_and(|n| n != world::Neighbours::NONE)
            })
        });
        if known {
            return;
        }
        assert!(Instant::now() < deadline, "the regions never learnt their neighbours");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_cross_between_hosts_exactly_once() {
    let (a, b) = west_and_east().await;
    push_sliders(&a, WEST, true);
    push_sliders(&b, EAST, false);
    let seen = settle(&[&a, &b]).await;
    assert_eq!(seen.len(), 2 * N as usize);
    let wa = a.host().stats(WEST).unwrap().crossings;
    let eb = b.host().stats(EAST).unwrap().crossings;
    assert_eq!((wa.departed, wa.arrived, wa.refused), (N, N, 0), "{wa:?}");
    assert_eq!((eb.departed, eb.arrived, eb.refused), (N, N, 0), "{eb:?}");
    // Both regions still verify as whole states (the crossing record is part of them).
    for (net, r) in [(&a, WEST), (&b, EAST)] {
        let snap = net.host().with_region(r, |reg| reg.snapshot()).unwrap();
        let back = world::Region::from_snapshot(&snap).unwrap();
        assert_eq!(back.entity_count(), N as usize);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_migrating_in_the_middle_of_crossings_loses_and_doubles_nothing() {
    // Early: offers in flight; later: releases and adoptions in flight, or settled.
    for delay_ms in [150, 450, 800] {
        migrate_during_crossings(delay_ms).await;
    }
}

async fn migrate_during_crossings(delay_ms: u64) {
    let (a, b) = west_and_east().await;
    push_sliders(&a, WEST, true);
    push_sliders(&b, EAST, false);
    // Move the west region to the east host while its sliders are leaving and the east ones
    // are arriving.
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    eprintln!("after {delay_ms} ms, in flight when the migration starts: {}", in_flight(&[&a, &b]));
    let id = a.migrate(WEST, b.name().to_string(), Policy::default()).await.unwrap();
    let status = a.wait(id, Duration::from_secs(20)).await.unwrap();
    assert!(status.committed, "{status:?}");
    let seen = settle(&[&a, &b]).await;
    assert_eq!(seen.len(), 2 * N as usize);
    assert!(a.host().region_ids().is_empty());
    assert_eq!(b.host().region_ids(), vec![WEST, EAST]);
}

/// The default world's ferry: drives east, counts the borders it crossed in its text.
const FERRY: &str = include_str!("../../terrane/world/ferry.wat");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_vehicle_crosses_with_its_script_and_its_rider() {
    let (a, b) = west_and_east().await;
    let module = world::ModuleHash::of(FERRY.as_bytes());
    let spec = ObjectSpec {
        name: "ferry".into(),
        pos: Vec3::new(236.0, 128.0, 0.0),
        scale: Vec3::new(6.0, 2.5, 1.5),
        ..Default::default()
    };
    a.input(WEST, Input::AddModule { bytes: FERRY.as_bytes().to_vec() });
    a.input(WEST, Input::CreateObject { tag: 1, spec });
    let deadline = Instant::now() + Duration::from_secs(10);
    let ferry = loop {
        let found =
            a.host().with_region(WEST, |r| r.entities().find(|e| e.name == "ferry").map(|e| e.id)).unwrap();
        if let Some(id) = found {
            break id;
        }
        assert!(Instant::now() < deadline, "the ferry was not made");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let rider = world::EntityId(0xF00D);
    a.input(WEST, Input::AddScript { object: ferry, module });
    a.input(WEST, Input::AddAvatar { id: rider, name: "passenger".into(), owner: 3, pos: None });
    a.input(WEST, Input::Sit { avatar: rider, object: ferry });

    // 20 m at 7 m/s: across in about three seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (text, seat, scripts) = loop {
        let there = b
            .host()
            .with_region(EAST, |r| {
                let f = r.entity(ferry)?;
                let seat = r.entity(rider).and_then(|e| e.avatar()).and_then(|a| a.seat);
                Some((f.text.clone(), seat, r.scripts_of(ferry).count()))
            })
            .unwrap();
        if let Some(t) = there.clone().filter(|t| t.0.ends_with("0001")) {
            break t;
        }
        assert!(Instant::now() < deadline, "the ferry did not arrive with its script: {there:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(text, "ferry, borders crossed: 0001", "region_cross ran in the new region");
    assert_eq!(seat, Some(ferry), "the passenger rode along, seated");
    assert_eq!(scripts, 1);
    let left = a
        .host()
        .with_region(WEST, |r| (r.entity(ferry).is_some(), r.avatar_count(), r.script_count()))
        .unwrap();
    assert_eq!(left, (false, 0, 0), "nothing of the unit stayed behind");
    let stats = b.host().stats(EAST).unwrap();
    assert_eq!(stats.script_errors, 0);
}
