//! Checkpoints after the first are built from deltas on the store's writer (the tick thread
//! hands over only what changed): what they recover must be the region as it was.

use std::time::Duration;

use host::durable::{Durability, DurableConfig};
use host::{Host, HostConfig};
use store::{SqliteStore, Store};
use world::{Input, ObjectEdit, ObjectSpec, Region, RegionId, Vec3};

mod support;

const HOME: RegionId = RegionId::new(3, 3);

fn durable(host: &Host, input: Input) -> host::durable::Acked {
    support::durable(host, HOME, input, Duration::from_secs(20))
}

#[test]
fn checkpoints_built_from_deltas_recover_the_region_as_it_was() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().to_path_buf();
    let d = Durability::start(
        Box::new(move || Ok(Box::new(SqliteStore::open_dir(&path)?) as Box<dyn Store>)),
        DurableConfig { checkpoint_period: Duration::from_millis(30), ..Default::default() },
    )
    .unwrap();
    let host = Host::start(HostConfig { cores: 1, seed: 5 });
    host.set_durability(d.clone());
    host.load_new(HOME, None).unwrap();
    let mut ids = Vec::new();
    for k in 0..40u64 {
        let spec = ObjectSpec {
            name: format!("o{k}"),
            pos: Vec3::new(10.0 + k as f32, 50.0, 30.0),
            ..Default::default()
        };
        ids.push(durable(&host, Input::CreateObject { tag: k, spec }).created.unwrap());
        if k % 3 == 0 {
            let edit = ObjectEdit { text: Some(format!("t{k}")), ..Default::default() };
            durable(&host, Input::EditObject { id: ids[(k / 2) as usize], edit });
        }
        if k % 7 == 6 {
            durable(&host, Input::DeleteObject { id: ids[(k / 3) as usize] });
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    host.shutdown();
    let live = host.with_region(HOME, support::rows).unwrap();
    d.flush();
    let written = d.stats.checkpoints.load(std::sync::atomic::Ordering::Relaxed);
    let deltas = d.stats.checkpoint_deltas.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        written >= 3 && deltas >= 2,
        "several checkpoints, from deltas after the first ({written}, {deltas})"
    );

    // The newest checkpoint alone (no log after it) is the region as it was.
    let rec = d.recovered(HOME).unwrap();
    let newest = Region::from_snapshot(&rec.checkpoints[0].bytes).expect("the checkpoint decodes");
    assert_eq!(support::rows(&newest), live, "the delta-built checkpoint is the region");
    let back = d.recover(HOME, || Region::new(HOME, 5)).unwrap().expect("something stored");
    assert_eq!(support::rows(&back), live);
}
