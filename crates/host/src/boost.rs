//! The host's async threads raised for the length of a freeze.
//!
//! Every hop of a migration's commit after the source's last tick runs on the host's async
//! runtime: the final round leaving on the link, arriving, being applied and hashed, the
//! directory's compare-and-swap going out and its answer coming back, and the target's first
//! tick. Those threads run at the process's priority, and the freeze begins just as the last
//! tick's updates fan out through the gateway to every client: on a small machine the hops wait
//! for cores the gateway and the clients hold, a millisecond or more each, and the freeze is
//! their sum. So while a region held here is frozen, a [`FreezeBoost`] moves every registered
//! thread into the real-time round-robin class (`SCHED_RR`, [`BOOST_RT_PRIORITY`]), which takes
//! a core from any normal thread at once; where that is not permitted (it needs root or
//! `CAP_SYS_NICE`), it raises them by [`crate::TICK_NICE`] instead. The threads go back when the
//! last boost is dropped, and in any case [`MAX_FREEZE_BOOST`] after a boost began (tick workers
//! call [`expire_overdue`] after every tick and at least every 100 ms): a migration stuck in its
//! freeze (a target that died) does not keep the runtime above the rest of the machine.
//! Raising the runtime for good instead would let its other work (pre-copy rounds, snapshots
//! served) crowd out everything at the normal priority.
//!
//! Threads take part by calling [`register_thread`] when they start and
//! [`unregister_thread`] before they end (tokio's `on_thread_start` / `on_thread_stop`);
//! a runtime whose threads are not registered is simply not raised.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Most threads registered at once (a runtime's workers and its blocking pool); beyond it a
/// thread is not raised by boosts.
pub const MAX_BOOSTED_THREADS: usize = 1024;
/// Longest a boost keeps the threads raised: a freeze is about one tick (a stop-and-copy one
/// a few ticks); past this it is stuck, and waits at the normal priority.
pub const MAX_FREEZE_BOOST: Duration = Duration::from_millis(250);
/// The real-time priority of boosted threads: the lowest (1 to 99 on Linux), above every
/// normal thread and below anything else that asked for real time.
pub const BOOST_RT_PRIORITY: i32 = 1;

struct Registry {
    /// (thread id, its nice value when it registered).
    threads: Vec<(i32, i32)>,
    /// Boosts alive: (id, when it stops counting).
    leases: Vec<(u64, Instant)>,
    next_lease: u64,
    /// Whether the threads are raised now.
    raised: bool,
}

impl Registry {
    fn settle(&mut self) {
        let want = !self.leases.is_empty();
        if want != self.raised {
            self.raised = want;
            RAISED.store(want, Ordering::Relaxed);
            for &(tid, base) in &self.threads {
                set_raised(tid, base, want);
            }
        }
    }
}

/// `Registry::raised`, readable without the lock: the tick workers look at it after every tick.
static RAISED: AtomicBool = AtomicBool::new(false);

static REGISTRY: Mutex<Registry> =
    Mutex::new(Registry { threads: Vec::new(), leases: Vec::new(), next_lease: 0, raised: false });

/// Registers the calling thread: raised while any boost is alive, from now on.
pub fn register_thread() {
    let Some(tid) = this_thread() else { return };
    let base = nice_of(tid);
    let mut reg = REGISTRY.lock();
    if reg.threads.len() >= MAX_BOOSTED_THREADS || reg.threads.iter().any(|t| t.0 == tid) {
        return;
    }
    reg.threads.push((tid, base));
    if reg.raised {
        set_raised(tid, base, true);
    }
}

/// Forgets the calling thread (which is about to end: its id may be reused).
pub fn unregister_thread() {
    let Some(tid) = this_thread() else { return };
    REGISTRY.lock().threads.retain(|t| t.0 != tid);
}

/// Lowers the threads again when every boost alive began more than [`MAX_FREEZE_BOOST`] ago.
pub fn expire_overdue() {
    if RAISED.load(Ordering::Relaxed) {
        expire_at(Instant::now());
    }
}

/// [`expire_overdue`] as of `now`.
fn expire_at(now: Instant) {
    let mut reg = REGISTRY.lock();
    reg.leases.retain(|l| l.1 > now);
    reg.settle();
}

/// While alive (and for at most [`MAX_FREEZE_BOOST`]), the registered threads run raised.
#[must_use = "the threads are raised only while the boost is alive"]
#[derive(Debug)]
pub struct FreezeBoost(u64);

impl FreezeBoost {
    pub fn new() -> FreezeBoost {
        let mut reg = REGISTRY.lock();
        let id = reg.next_lease;
        reg.next_lease += 1;
        reg.leases.push((id, Instant::now() + MAX_FREEZE_BOOST));
        reg.settle();
        FreezeBoost(id)
    }
}

impl Default for FreezeBoost {
    fn default() -> FreezeBoost {
        FreezeBoost::new()
    }
}

impl Drop for FreezeBoost {
    fn drop(&mut self) {
        let mut reg = REGISTRY.lock();
        reg.leases.retain(|l| l.0 != self.0);
        reg.settle();
    }
}

#[cfg(target_os = "linux")]
fn this_thread() -> Option<i32> {
    // SAFETY: a plain system call with no arguments.
    Some(unsafe { libc::gettid() })
}

#[cfg(not(target_os = "linux"))]
fn this_thread() -> Option<i32> {
    None
}

/// The nice value of thread `tid` of this process.
pub fn nice_of(tid: i32) -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain system call; no memory is passed.
    unsafe {
        libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        0
    }
}

/// Whether thread `tid` of this process runs in the real-time round-robin class.
pub fn is_real_time(tid: i32) -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain system call; no memory is passed.
    unsafe {
        libc::sched_getscheduler(tid) == libc::SCHED_RR
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        false
    }
}

/// Raises thread `tid` (real time, or else nice `base + TICK_NICE`), or puts it back (normal
/// class, nice `base`).
fn set_raised(tid: i32, base: i32, raised: bool) {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on a thread of this process that is registered, so alive (it
    // unregisters before it ends), with a parameter on our stack.
    unsafe {
        if raised {
            let param = libc::sched_param { sched_priority: BOOST_RT_PRIORITY };
            if libc::sched_setscheduler(tid, libc::SCHED_RR, &param) != 0 {
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, (base + crate::TICK_NICE).max(-20));
            }
        } else {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param);
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, base);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (tid, base, raised);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Boosts are process-wide: these tests must not overlap.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// A registered thread that ends (unregistering) when the sender is dropped.
    struct Registered {
        tid: i32,
        keep: mpsc::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    }

    fn registered() -> Registered {
        let (keep, kept) = mpsc::channel::<()>();
        let (tell, told) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            register_thread();
            tell.send(this_thread().unwrap_or(0)).unwrap();
            let _ = kept.recv();
            unregister_thread();
        });
        Registered { tid: told.recv().unwrap(), keep, thread }
    }

    fn base_of(tid: i32) -> i32 {
        REGISTRY.lock().threads.iter().find(|t| t.0 == tid).map(|t| t.1).expect("registered")
    }

    /// Whether the thread runs raised: in real time, or above the nice value it registered with.
    fn raised(tid: i32) -> bool {
        is_real_time(tid) || nice_of(tid) < base_of(tid)
    }

    /// Raising needs the right to (root here): without it nothing changes.
    fn may_raise() -> bool {
        (unsafe { libc::geteuid() }) == 0
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn registered_threads_are_raised_while_a_boost_lives_and_back_after_the_last() {
        let _serial = SERIAL.lock();
        let thread = registered();
        let tid = thread.tid;
        assert!(!raised(tid));
        let first = FreezeBoost::new();
        assert_eq!(raised(tid), may_raise());
        let second = FreezeBoost::new();
        drop(first);
        assert_eq!(raised(tid), may_raise(), "one boost is still alive");
        drop(second);
        assert!(!raised(tid));
        assert!(!is_real_time(tid));
        assert_eq!(nice_of(tid), base_of(tid));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_thread_registering_during_a_boost_is_raised_at_once_and_forgotten_when_it_ends() {
        let _serial = SERIAL.lock();
        let boost = FreezeBoost::new();
        let thread = registered();
        let tid = thread.tid;
        assert_eq!(raised(tid), may_raise());
        drop(boost);
        assert!(!raised(tid));
        drop(thread.keep);
        thread.thread.join().unwrap();
        assert!(REGISTRY.lock().threads.iter().all(|t| t.0 != tid), "the thread did not unregister");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_boost_held_past_its_limit_stops_raising() {
        let _serial = SERIAL.lock();
        let thread = registered();
        let tid = thread.tid;
        let stuck = FreezeBoost::new();
        expire_overdue();
        assert_eq!(raised(tid), may_raise(), "within the limit");
        expire_at(Instant::now() + MAX_FREEZE_BOOST + Duration::from_millis(1));
        assert!(!raised(tid), "past the limit");
        // A boost that begins now raises them again; dropping the stale one changes nothing.
        let fresh = FreezeBoost::new();
        drop(stuck);
        assert_eq!(raised(tid), may_raise());
        drop(fresh);
        assert!(!raised(tid));
    }
}
