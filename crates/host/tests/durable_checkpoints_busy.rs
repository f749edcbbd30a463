//! Checkpoints are built off the tick and writer threads while changes keep coming: each one
//! must cover exactly the log records of the ticks up to the one it was copied at, so a
//! recovery (newest checkpoint, then the log after it) is the region as it was, whatever the
//! moment the host stopped.

use std::sync::Arc;
use std::time::Duration;

use host::durable::{Durability, DurableConfig};
use host::{Host, HostConfig};
use store::{SqliteStore, Store};
use world::{EntityId, Input, ObjectEdit, ObjectSpec, Region, RegionId, Vec3};

mod support;

const HOME: RegionId = RegionId::new(4, 4);
const CLIENTS: u64 = 4;
const CHANGES_PER_CLIENT: u64 = 60;

fn durable(host: &Host, input: Input) -> host::durable::Acked {
    support::durable(host, HOME, input, Duration::from_secs(20))
}

#[test]
fn checkpoints_built_while_changes_arrive_cover_exactly_their_log() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().to_path_buf();
    // A checkpoint every few ticks: some are in the builder while records keep being appended,
    // and the newest usually has records after it.
    let d = Durability::start(
        Box::new(move || Ok(Box::new(SqliteStore::open_dir(&path)?) as Box<dyn Store>)),
        DurableConfig { checkpoint_period: Duration::from_millis(60), ..Default::default() },
    )
    .unwrap();
    let host = Host::start(HostConfig { cores: 2, seed: 9 });
    host.set_durability(d.clone());
    host.load_new(HOME, None).unwrap();
    // Someone in the region: it ticks at the active rate.
    let avatar = EntityId((1 << 63) | 1);
    host.send(HOME, Input::AddAvatar { id: avatar, name: "Visitor".into(), owner: 1, pos: None }).unwrap();
    let host = Arc::new(host);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let host = host.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for k in 0..CHANGES_PER_CLIENT {
                    if k % 4 == 0 || mine.is_empty() {
                        let spec = ObjectSpec {
                            name: format!("c{c} o{k}"),
                            pos: Vec3::new(10.0 + c as f32 * 30.0, 10.0 + k as f32, 30.0),
                            ..Default::default()
                        };
                        let tag = c * 1_000 + k;
                        mine.push(durable(&host, Input::CreateObject { tag, spec }).created.unwrap());
                    } else if k % 9 == 8 {
                        let id = mine.remove(0);
                        durable(&host, Input::DeleteObject { id });
                    } else {
                        let edit = ObjectEdit { text: Some(format!("c{c} t{k}")), ..Default::default() };
                        durable(&host, Input::EditObject { id: mine[(k as usize) % mine.len()], edit });
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    // A few more, one at a time and each on another object (a record skipped or replayed twice
    // shows), so the last records come after the newest checkpoint.
    let some: Vec<EntityId> = host
        .with_region(HOME, |r| r.entities().filter(|e| !e.is_avatar()).take(8).map(|e| e.id).collect())
        .unwrap();
    for (k, id) in some.into_iter().enumerate() {
        let edit = ObjectEdit { text: Some(format!("last {k}")), ..Default::default() };
        durable(&host, Input::EditObject { id, edit });
    }
    host.shutdown();
    let live = host.with_region(HOME, support::rows).unwrap();
    d.flush();
    let written = d.stats.checkpoints.load(std::sync::atomic::Ordering::Relaxed);
    assert!(written >= 5, "checkpoints were written while the changes came ({written})");

    let rec = d.recovered(HOME).unwrap();
    let newest = &rec.checkpoints[0];
    let after: Vec<u64> = rec.log.iter().map(|r| r.seq).filter(|&s| s > newest.covers_seq).collect();
    eprintln!(
        "{written} checkpoints; the newest covers seq {}, {} records after it",
        newest.covers_seq,
        after.len()
    );
    let back = d.recover(HOME, || Region::new(HOME, 9)).unwrap().expect("something stored");
    assert_eq!(
        support::rows(&back),
        live,
        "checkpoint covering seq {} plus {} records after it is the region",
        newest.covers_seq,
        after.len()
    );
}
