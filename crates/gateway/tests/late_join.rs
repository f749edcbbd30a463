//! Late join: a client entering a region that already holds 10,000 objects is sent the
//! nearest ones first, in updates of at most MAX_CHANGES_PER_UPDATE, with gap-free sequence
//! numbers, until it holds everything within draw distance.

mod support;

use std::collections::HashMap;
use std::time::Instant;

use proto::limits::MAX_CHANGES_PER_UPDATE;
use proto::{Encoding, EntityUpdate, SeqTracker};
use support::*;
use world::{Input, ObjectSpec, Vec3};

const OBJECTS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_gets_the_nearest_of_ten_thousand_objects_first() {
    let g = grid(config()).await;
    // Spread evenly over a disc of 110 m around the spawn point (a sunflower pattern).
    for k in 0..OBJECTS {
        let r = 110.0 * ((k as f32 + 0.5) / OBJECTS as f32).sqrt();
        let a = k as f32 * 2.399_963;
        let spec = ObjectSpec {
            name: format!("o{k}"),
            pos: Vec3::new(128.0 + r * a.cos(), 128.0 + r * a.sin(), 30.0),
            ..ObjectSpec::default()
        };
        g.host.input(HOME, Input::CreateObject { tag: k, spec });
    }
    eventually("the region holds every object", || {
        g.host.host().stats(HOME).map(|s| s.entities as u64).unwrap_or(0) == OBJECTS
    })
    .await;
    // The gateway has streamed the region since it started; a couple of ticks more and its
    // mirror has them all.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;

    let p = g.gateway.guest_token("Late").unwrap();
    let joined = Instant::now();
    let mut c = Raw::hello(&p.url, &p.token, Encoding::Binary).await;
    let agent: u64 = p.agent.parse().unwrap();
    let mut seq = SeqTracker::new();
    let mut distance_in_order = Vec::new();
    let mut seen: HashMap<u64, ()> = HashMap::new();
    let mut first_thousand_after = None;
    let deadline = joined + std::time::Duration::from_secs(60);
    while (seen.len() as u64) < OBJECTS {
        assert!(
            Instant::now() < deadline,
            "only {} of {OBJECTS} objects reached the client in 60 s",
            seen.len()
        );
        let u = c.next_update().await.expect("the stream goes on");
        seq.observe(u.seq);
        assert!(u.changes.len() <= MAX_CHANGES_PER_UPDATE);
        for change in &u.changes {
            if let EntityUpdate::Full(v) = change {
                if v.id.0 != agent && seen.insert(v.id.0, ()).is_none() {
                    let flat = ((v.pos.x - 128.0).powi(2) + (v.pos.y - 128.0).powi(2)).sqrt();
                    distance_in_order.push(flat);
                }
            }
        }
        if first_thousand_after.is_none() && seen.len() >= 1000 {
            first_thousand_after = Some(joined.elapsed());
        }
    }
    println!(
        "late join: nearest 1000 of {OBJECTS} objects after {:?}, all after {:?}, in {} updates",
        first_thousand_after.unwrap(),
        joined.elapsed(),
        seq.received()
    );
    assert_eq!(seq.gaps(), 0);
    // The disc's inner tenth (radius 110·√0.1 ≈ 35 m) holds the nearest 1,000: they come first.
    let first = &distance_in_order[..1000];
    assert!(
        first.iter().all(|d| *d < 40.0),
        "far objects among the first 1000: {:?}",
        first.iter().fold(0.0f32, |m, d| m.max(*d))
    );
    let last = &distance_in_order[distance_in_order.len() - 1000..];
    assert!(last.iter().all(|d| *d > 90.0), "the farthest come last");
}
