//! With a store, a crossing message leaves only after the tick that wrote its cause is
//! committed: were the host to die before the commit, recovery would bring back a region that
//! never offered (or released) the unit, so nobody may have heard of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use host::durable::{Durability, DurableConfig};
use host::{Host, HostConfig};
use parking_lot::{Condvar, Mutex};
use store::{Checkpoint, LogRecord, SqliteStore, Store, StoreError};
use world::{Input, ObjectSpec, RegionId, Vec3};

const WEST: RegionId = RegionId::new(0, 0);
const EAST: RegionId = RegionId::new(1, 0);

/// A gate the test opens and closes: while closed, appends wait (a slow disk).
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn set_closed(&self, closed: bool) {
        *self.0 .0.lock() = closed;
        self.0 .1.notify_all();
    }
    fn pass(&self) {
        let mut closed = self.0 .0.lock();
        while *closed {
            self.0 .1.wait(&mut closed);
        }
    }
}

/// SQLite behind the gate.
struct GatedStore {
    inner: SqliteStore,
    gate: Gate,
}

impl Store for GatedStore {
    fn claim(&mut self, region: RegionId) -> Result<u64, StoreError> {
        self.inner.claim(region)
    }
    fn owner(&mut self, region: RegionId) -> Result<u64, StoreError> {
        self.inner.owner(region)
    }
    fn append(&mut self, records: &[LogRecord]) -> Result<(), StoreError> {
        self.gate.pass();
        self.inner.append(records)
    }
    fn put_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.inner.put_checkpoint(checkpoint)
    }
    fn regions(&mut self) -> Result<Vec<RegionId>, StoreError> {
        self.inner.regions()
    }
    fn cut_log(&mut self, region: RegionId, seq: u64) -> Result<(), StoreError> {
        self.inner.cut_log(region, seq)
    }
    fn forget(&mut self, region: RegionId) -> Result<(), StoreError> {
        self.inner.forget(region)
    }
    fn raw_checkpoints(&mut self, region: RegionId) -> Result<Vec<(Checkpoint, u64)>, StoreError> {
        self.inner.raw_checkpoints(region)
    }
    fn raw_log(
        &mut self,
        region: RegionId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(LogRecord, u64)>, StoreError> {
        self.inner.raw_log(region, after, limit)
    }
}

fn holds_slider(host: &Host, region: RegionId) -> bool {
    host.with_region(region, |r| r.entities().any(|e| e.name == "slider")).unwrap()
}

#[test]
fn a_neighbour_hears_of_a_crossing_only_after_its_cause_is_committed() {
    let data = tempfile::tempdir().unwrap();
    let gate = Gate::default();
    let (path, g) = (data.path().to_path_buf(), gate.clone());
    let durability = Durability::start(
        Box::new(move || {
            Ok(Box::new(GatedStore { inner: SqliteStore::open_dir(&path)?, gate: g }) as Box<dyn Store>)
        }),
        DurableConfig::default(),
    )
    .unwrap();
    let host = Host::start(HostConfig { cores: 1, seed: 5 });
    host.set_durability(durability);
    host.set_grid([WEST, EAST]);
    host.load_new(WEST, None).unwrap();
    host.load_new(EAST, None).unwrap();
    both_ticked(&host);

    // The disk stalls; a slider heads east across the border.
    gate.set_closed(true);
    send_slider(&host);
    let deadline = Instant::now() + Duration::from_secs(20);
    while host.stats(WEST).unwrap().crossings.offered == 0 {
        assert!(Instant::now() < deadline, "the slider never reached the border");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Ticks go on meanwhile (the tick threads never wait for the store), but the offer's
    // cause is not durable: the neighbour must not hear of it.
    let ticks = host.stats(WEST).unwrap().ticks;
    std::thread::sleep(Duration::from_millis(800));
    assert!(host.stats(WEST).unwrap().ticks >= ticks + 2, "the region keeps ticking while the store stalls");
    let east = host.stats(EAST).unwrap().crossings;
    assert_eq!((east.in_flight, east.arrived), (0, 0), "the neighbour heard of an uncommitted crossing");
    assert!(holds_slider(&host, WEST) && !holds_slider(&host, EAST));

    // The disk comes back: the crossing completes, exactly once.
    gate.set_closed(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(holds_slider(&host, EAST) && !holds_slider(&host, WEST)) {
        assert!(Instant::now() < deadline, "the crossing never completed after the commit");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(host.stats(EAST).unwrap().crossings.arrived, 1);
    host.shutdown();
}

#[test]
fn a_crossing_answered_between_ticks_is_logged_and_recovers_in_exactly_one_region() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().to_path_buf();
    // No periodic checkpoint: after the first one (empty), recovery rests on the log alone.
    let config = DurableConfig { checkpoint_period: Duration::from_secs(3600), ..Default::default() };
    let durability = Durability::start(
        Box::new(move || Ok(Box::new(SqliteStore::open_dir(&path)?) as Box<dyn Store>)),
        config,
    )
    .unwrap();
    let host = Host::start(HostConfig { cores: 1, seed: 5 });
    host.set_durability(durability.clone());
    host.set_grid([WEST, EAST]);
    host.load_new(WEST, None).unwrap();
    host.load_new(EAST, None).unwrap();
    both_ticked(&host);

    send_slider(&host);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(holds_slider(&host, EAST) && !holds_slider(&host, WEST)) {
        assert!(Instant::now() < deadline, "the crossing never completed");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The acceptance (east) and the departure (west) were written between ticks: each region
    // has taken a generation of its own besides its ticks.
    let amended = |r: RegionId| host.with_region(r, |r| r.generation() > r.tick_number()).unwrap();
    assert!(amended(WEST) && amended(EAST), "the crossing waited for ticks");
    durability.flush();

    // Rebuilt from checkpoint and log, as after a crash: the slider is in exactly one region.
    let recover = |id: RegionId| durability.recover(id, || world::Region::new(id, 5)).unwrap().unwrap();
    let slider = |r: &world::Region| r.entities().any(|e| e.name == "slider");
    let (west, east) = (recover(WEST), recover(EAST));
    assert!(!slider(&west), "the departure amended between ticks was not logged");
    assert!(slider(&east), "the arrival was not logged");
    host.shutdown();
}

/// Each region learns its neighbour at its first tick: waits for both to have ticked.
fn both_ticked(host: &Host) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while ![WEST, EAST].iter().all(|&r| host.with_region(r, |r| r.tick_number() > 0).unwrap()) {
        assert!(Instant::now() < deadline, "the regions never ticked");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A physical object two metres from the east edge of WEST, heading east.
fn send_slider(host: &Host) {
    let spec = ObjectSpec {
        name: "slider".into(),
        pos: Vec3::new(254.0, 128.0, 0.0),
        vel: Vec3::new(12.0, 0.0, 0.0),
        physical: true,
        ..Default::default()
    };
    host.send(WEST, Input::CreateObject { tag: 1, spec }).unwrap();
}
