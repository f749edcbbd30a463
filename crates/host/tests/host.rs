//! The host ticks many regions on its own schedule and answers its control API.

use std::time::{Duration, Instant};

use host::{Host, HostConfig, HostError, MAX_QUEUED_INPUTS};
use world::{EntityId, Input, RegionId};

/// Polls `f` until it holds, for at most ten seconds (a bound, not a speed expectation).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn avatar(id: u64) -> Input {
    Input::AddAvatar { id: EntityId(id), name: "a".into(), owner: 0, pos: None }
}

#[test]
fn inputs_reach_the_region_at_its_next_tick() {
    let host = Host::start(HostConfig { cores: 2, seed: 3 });
    let r = RegionId::new(0, 0);
    host.load_new(r, None).unwrap();
    host.send(r, avatar(1)).unwrap();
    eventually("the avatar is in", || host.stats(r).unwrap().avatars == 1);
    host.shutdown();
}

#[test]
fn a_region_with_avatars_ticks_faster_than_an_empty_one() {
    let host = Host::start(HostConfig { cores: 2, seed: 3 });
    let (busy, empty) = (RegionId::new(0, 0), RegionId::new(1, 0));
    host.load_new(busy, None).unwrap();
    host.load_new(empty, None).unwrap();
    host.send(busy, avatar(1)).unwrap();
    eventually("the busy region ticked 90 times", || host.stats(busy).unwrap().ticks >= 90);
    let (b, e) = (host.stats(busy).unwrap(), host.stats(empty).unwrap());
    assert_eq!((b.rate_hz, e.rate_hz), (45, 5));
    assert!(e.ticks * 3 < b.ticks, "empty region ticked {} times, busy {}", e.ticks, b.ticks);
    host.shutdown();
}

#[test]
fn unloading_hands_back_the_state_and_the_region_is_gone() {
    let host = Host::start(HostConfig { cores: 1, seed: 3 });
    let r = RegionId::new(4, 4);
    host.load_new(r, None).unwrap();
    assert_eq!(host.load_new(r, None), Err(HostError::AlreadyLoaded(r)));
    host.send(r, avatar(7)).unwrap();
    eventually("the avatar is in", || host.stats(r).unwrap().avatars == 1);
    let region = host.unload(r).unwrap();
    assert!(region.entity(EntityId(7)).is_some());
    assert_eq!(host.stats(r), Err(HostError::UnknownRegion(r)));
    assert_eq!(host.send(r, avatar(8)), Err(HostError::UnknownRegion(r)));
    // Loaded again from that state, it carries on from the same tick.
    let tick = region.tick_number();
    host.load(region).unwrap();
    eventually("it ticks again", || host.stats(r).unwrap().tick > tick);
    host.shutdown();
}

#[test]
fn a_full_input_queue_refuses_instead_of_growing() {
    let host = Host::start(HostConfig { cores: 1, seed: 3 });
    host.shutdown(); // no worker drains the queue
    let r = RegionId::new(0, 0);
    host.load_new(r, None).unwrap();
    for i in 0..MAX_QUEUED_INPUTS {
        host.send(r, avatar(i as u64)).unwrap();
    }
    assert_eq!(host.send(r, avatar(u64::MAX)), Err(HostError::QueueFull(r)));
}

#[test]
fn many_regions_tick_on_a_small_pool() {
    let host = Host::start(HostConfig { cores: 2, seed: 3 });
    let ids: Vec<RegionId> = (0..30).map(|i| RegionId::new(i, 0)).collect();
    for &r in &ids {
        host.load_new(r, None).unwrap();
    }
    eventually("every region ticked", || ids.iter().all(|&r| host.stats(r).unwrap().ticks >= 3));
    host.shutdown();
}

#[test]
fn a_tick_run_on_the_callers_thread_is_never_run_twice() {
    // An empty region ticks at 5 Hz. Three threads asking for its due tick all the time, and
    // the tick worker, must share each due tick: one of them runs it, the others skip it.
    let host = Host::start(HostConfig { cores: 1, seed: 3 });
    let r = RegionId::new(2, 2);
    host.load_new(r, None).unwrap();
    let before = host.stats(r).unwrap().ticks;
    let spin = Duration::from_millis(1000);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let until = Instant::now() + spin;
                while Instant::now() < until {
                    host.tick_if_due(r);
                }
            });
        }
    });
    let stats = host.stats(r).unwrap();
    assert_eq!(stats.rate_hz, 5);
    let ticks = stats.ticks - before;
    // At most one tick per 200 ms interval (and one at the start), however many threads ask.
    assert!((1..=7).contains(&ticks), "{ticks} ticks in {spin:?} at 5 Hz");
    host.shutdown();
}

/// The nice value in a /proc `stat` line: after the command in parentheses, state is field 3
/// and nice field 19.
fn nice_in(stat: &str) -> i64 {
    stat[stat.rfind(')').unwrap() + 2..].split_whitespace().nth(16).unwrap().parse().unwrap()
}

/// Nice values of this process's threads named `name`, from /proc.
fn nice_of_threads(name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        out.push(nice_in(&std::fs::read_to_string(task.path().join("stat")).unwrap()));
    }
    out
}

#[test]
fn tick_workers_run_at_a_raised_priority_where_that_is_permitted() {
    let host = Host::start(HostConfig { cores: 1, seed: 3 });
    let main = nice_in(&std::fs::read_to_string("/proc/self/stat").unwrap());
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
    // Root may raise it; anyone else keeps the process's priority (and is told so in the log).
    let expected = if root { (main + i64::from(host::TICK_NICE)).max(-20) } else { main };
    eventually(&format!("the tick worker at nice {expected} (process {main}, root {root})"), || {
        // Other tests' hosts have tick workers too: every one of them is raised alike.
        let nice = nice_of_threads("tick-0");
        !nice.is_empty() && nice.iter().all(|&n| n == expected)
    });
    host.shutdown();
}
