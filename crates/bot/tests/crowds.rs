//! Crowds of bots through a real gateway to real hosts on loopback: every behaviour gives a
//! sane report, and a region that migrates to another host under a crowd goes unnoticed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bot::{run_bots, Behaviour, BotConfig, BotReport, TokenSource};
use directory::{Directory, MemoryDirectory};
use gateway::{Gateway, GatewayConfig};
use host::net::Net;
use host::{Host, HostConfig};
use world::RegionId;

const SEED: u32 = 3;
const HOME: RegionId = RegionId::new(1, 1);
const EAST: RegionId = RegionId::new(2, 1);
const SECRET: &[u8] = b"a test secret of enough bytes";

async fn start_host(dir: Arc<dyn Directory>) -> Arc<Net> {
    let host = Host::start(HostConfig { cores: 1, seed: SEED });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Net::start(host, listener, dir)
}

/// Two hosts: (1, 1) on the first, its east neighbour (2, 1) on the second; one gateway.
async fn two_hosts() -> (Arc<Net>, Arc<Net>, Gateway) {
    let dir: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
    let a = start_host(dir.clone()).await;
    let b = start_host(dir.clone()).await;
    a.claim_new(HOME, None).await.unwrap();
    b.claim_new(EAST, None).await.unwrap();
    let config = GatewayConfig {
        world_seed: SEED,
        spawn_region: HOME,
        secret: Some(SECRET.to_vec()),
        ..GatewayConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = Gateway::start(config, dir, listener).await.unwrap();
    (a, b, gateway)
}

fn assert_sane(what: &str, r: &BotReport, bots: u64) {
    println!("{what}: {}", serde_json::to_string(r).unwrap());
    assert_eq!((r.connected, r.failed), (bots, 0), "{what}: {:?}", r.errors);
    assert_eq!(r.disconnects, 0, "{what}: {:?}", r.errors);
    assert_eq!((r.seq_gaps, r.replays), (0, 0), "{what}");
    assert_eq!(r.stalled, 0, "{what}: every bot was still receiving at the end");
    assert!(r.updates >= bots * 10, "{what}: {} updates", r.updates);
    assert!(r.gap_p50_ms <= r.gap_p99_ms && r.gap_p99_ms <= r.gap_max_ms, "{what}");
    assert!(r.gap_p50_ticks >= 1, "{what}: tick gaps are measured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_bots_of_each_behaviour_produce_a_sane_report() {
    let (_a, _b, gateway) = two_hosts().await;
    let run = |behaviour, tokens, seed| {
        let mut c = BotConfig::new(gateway.ws_url(), 20, behaviour, Duration::from_secs(4));
        c.tokens = tokens;
        c.seed = seed;
        c.name_prefix = format!("{behaviour:?}");
        run_bots(c)
    };
    let (wander, club, commute) = tokio::join!(
        run(Behaviour::Wander, TokenSource::Guest, 1),
        run(Behaviour::Club, TokenSource::Secret(SECRET.to_vec()), 2),
        run(Behaviour::Commute, TokenSource::Guest, 3),
    );
    assert_sane("wander", &wander.unwrap(), 20);
    assert_sane("club", &club.unwrap(), 20);
    assert_sane("commute", &commute.unwrap(), 20);
    assert_eq!(gateway.stats().refused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_migrated_to_another_host_under_a_crowd_goes_unnoticed() {
    let (a, b, gateway) = two_hosts().await;
    let mut config = BotConfig::new(gateway.ws_url(), 20, Behaviour::Wander, Duration::from_secs(7));
    config.tokens = TokenSource::Secret(SECRET.to_vec());
    let crowd = tokio::spawn(run_bots(config));

    let deadline = Instant::now() + Duration::from_secs(20);
    while a.host().stats(HOME).map(|s| s.avatars).unwrap_or(0) < 20 {
        assert!(Instant::now() < deadline, "the crowd never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let id = a.migrate(HOME, b.name().to_string(), migrate::Policy::default()).await.unwrap();
    let status = a.wait(id, Duration::from_secs(20)).await.unwrap();
    assert!(status.committed, "{status:?}");
    println!(
        "migration: freeze {:?} ms, total {:?} ms, {} rounds",
        status.freeze_ms, status.total_ms, status.rounds
    );

    let report = crowd.await.unwrap().unwrap();
    assert_sane("migrated", &report, 20);
    assert!(gateway.stats().resubscribes >= 1, "the gateway followed the region");
    // Everyone left through the new owner.
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.host().stats(HOME).map(|s| s.avatars).unwrap_or(99) != 0 {
        assert!(Instant::now() < deadline, "avatars were left behind on the new host");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
