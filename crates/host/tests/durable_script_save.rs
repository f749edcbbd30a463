//! A script's `save()` makes its state durable with its tick's other durable changes: after
//! the host dies (no checkpoint since), recovery brings back the saved state, not a later one.

use std::time::{Duration, Instant};

use host::durable::{Durability, DurableConfig};
use host::{Host, HostConfig};
use store::{SqliteStore, Store};
use world::{EntityId, Input, ModuleHash, ObjectSpec, Region, RegionId, Vec3};

mod support;

const HOME: RegionId = RegionId::new(6, 1);
const ALICE: EntityId = EntityId(0xA11CE);
const WAIT: Duration = Duration::from_secs(20);
/// Where the script keeps its touch counter.
const COUNTER_AT: usize = 256;

/// Counts touches; saves when the count reaches 2 (and only then).
const SAVER: &str = r#"(module
  (import "terrane" "save" (func $save))
  (memory 1 1)
  (func (export "touch") (param i64)
    (i32.store (i32.const 256) (i32.add (i32.load (i32.const 256)) (i32.const 1)))
    (if (i32.eq (i32.load (i32.const 256)) (i32.const 2)) (then (call $save)))))"#;

fn counter(region: &Region) -> u32 {
    let record = region.scripts().next().expect("the script's record");
    let memory = record.memory();
    u32::from_le_bytes(memory[COUNTER_AT..COUNTER_AT + 4].try_into().unwrap())
}

fn durability(dir: &std::path::Path) -> std::sync::Arc<Durability> {
    let dir = dir.to_path_buf();
    Durability::start(
        Box::new(move || Ok(Box::new(SqliteStore::open_dir(&dir)?) as Box<dyn Store>)),
        // No periodic checkpoint during the test: only the first tick's, before the script.
        DurableConfig { checkpoint_period: Duration::from_secs(3600), ..Default::default() },
    )
    .unwrap()
}

fn durable(host: &Host, input: Input) -> host::durable::Acked {
    support::durable(host, HOME, input, WAIT)
}

#[test]
fn a_saved_script_state_survives_the_host_and_a_later_unsaved_one_does_not() {
    let data = tempfile::tempdir().unwrap();
    let d = durability(data.path());
    let host = Host::start(HostConfig { cores: 1, seed: 3 });
    host.set_durability(d.clone());
    host.load_new(HOME, None).unwrap();
    host.send(HOME, Input::AddAvatar { id: ALICE, name: "Alice".into(), owner: 1, pos: None }).unwrap();
    durable(&host, Input::AddModule { bytes: SAVER.as_bytes().to_vec() });
    let spec = ObjectSpec { name: "saver".into(), pos: Vec3::new(120.0, 120.0, 30.0), ..Default::default() };
    let object = durable(&host, Input::CreateObject { tag: 1, spec }).created.unwrap();
    durable(&host, Input::AddScript { object, module: ModuleHash::of(SAVER.as_bytes()) });

    for expected in 1..=3u32 {
        host.send(HOME, Input::Touch { avatar: ALICE, object }).unwrap();
        let started = Instant::now();
        while host.with_region(HOME, counter).unwrap() != expected {
            assert!(started.elapsed() < WAIT, "the script never counted touch {expected}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // The host dies: no checkpoint after the script ran, only what the log holds survives.
    host.shutdown();
    d.flush();
    drop(host);

    let after = durability(data.path());
    let back = after.recover(HOME, || Region::new(HOME, 3)).unwrap().expect("something stored");
    assert_eq!(counter(&back), 2, "recovery brings back the saved state, not the later unsaved one");
}
