//! The host's async threads raised for the length of a freeze.
//!
//! Every hop of a migration's commit after the source's last tick runs on the host's async
//! runtime: the final round leaving on the link, arriving, being applied and hashed, the
//! directory's compare-and-swap going out and its answer coming back, and the target's first
//! tick. Those threads run at the process's priority, beside the tick workers and the gateway
//! (raised, [`crate::TICK_NICE`]) and everything else on the machine: on a busy machine each hop
//! may wait milliseconds for a core, and the freeze is their sum. Raising the runtime for good
//! would let its other work (pre-copy rounds, snapshots served, reports) crowd out what runs at
//! the normal priority, so it is raised only while a region held here is frozen: a
//! [`FreezeBoost`] raises every registered thread by `TICK_NICE` until the last one is dropped.
//!
//! Threads take part by calling [`register_thread`] when they start and
//! [`unregister_thread`] before they end (tokio's `on_thread_start` / `on_thread_stop`);
//! a runtime whose threads are not registered is simply not raised. Raising needs the right to
//! (root or `CAP_SYS_NICE`); without it a boost changes nothing.

use parking_lot::Mutex;

/// Most threads registered at once (a runtime's workers and its blocking pool); beyond it a
/// thread is not raised by boosts.
pub const MAX_BOOSTED_THREADS: usize = 1024;

struct Registry {
    /// (thread id, its nice value when it registered).
    threads: Vec<(i32, i32)>,
    /// Boosts alive: the threads are raised while this is above zero.
    boosts: usize,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { threads: Vec::new(), boosts: 0 });

/// Registers the calling thread: raised while any boost is alive, from now on.
pub fn register_thread() {
    let Some(tid) = this_thread() else { return };
    let base = nice_of(tid);
    let mut reg = REGISTRY.lock();
    if reg.threads.len() >= MAX_BOOSTED_THREADS || reg.threads.iter().any(|t| t.0 == tid) {
        return;
    }
    reg.threads.push((tid, base));
    if reg.boosts > 0 {
        set_nice(tid, base + crate::TICK_NICE);
    }
}

/// Forgets the calling thread (which is about to end: its id may be reused).
pub fn unregister_thread() {
    let Some(tid) = this_thread() else { return };
    REGISTRY.lock().threads.retain(|t| t.0 != tid);
}

/// While alive, the registered threads run [`crate::TICK_NICE`] steps above their own priority.
#[must_use = "the threads are raised only while the boost is alive"]
#[derive(Debug)]
pub struct FreezeBoost(());

impl FreezeBoost {
    pub fn new() -> FreezeBoost {
        let mut reg = REGISTRY.lock();
        reg.boosts += 1;
        if reg.boosts == 1 {
            for &(tid, base) in &reg.threads {
                set_nice(tid, base + crate::TICK_NICE);
            }
        }
        FreezeBoost(())
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
        reg.boosts -= 1;
        if reg.boosts == 0 {
            for &(tid, base) in &reg.threads {
                set_nice(tid, base);
            }
        }
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

fn set_nice(tid: i32, nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain system call on a thread of this process that is registered, so alive (it
    // unregisters before it ends); no memory is passed.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice.clamp(-20, 19));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (tid, nice);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Boosts are process-wide: these tests must not overlap.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// A registered thread that reports its id, then its nice value each time it is asked.
    fn registered() -> (i32, mpsc::Sender<bool>, mpsc::Receiver<i32>) {
        let (ask, asked) = mpsc::channel::<bool>();
        let (tell, told) = mpsc::channel();
        std::thread::spawn(move || {
            register_thread();
            let tid = this_thread().unwrap_or(0);
            tell.send(tid).unwrap();
            while let Ok(go_on) = asked.recv() {
                tell.send(nice_of(tid)).unwrap();
                if !go_on {
                    break;
                }
            }
            unregister_thread();
        });
        let tid = told.recv().unwrap();
        (tid, ask, told)
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn registered_threads_are_raised_while_a_boost_lives_and_back_after_the_last() {
        let _serial = SERIAL.lock();
        let (_, ask, told) = registered();
        let nice = || {
            ask.send(true).unwrap();
            told.recv().unwrap()
        };
        let base = nice();
        let raised = (base + crate::TICK_NICE).max(-20);
        // Raising needs the right to: without it the thread stays where it is.
        let root = unsafe { libc::geteuid() } == 0;
        let expected = if root { raised } else { base };
        let first = FreezeBoost::new();
        assert_eq!(nice(), expected);
        let second = FreezeBoost::new();
        drop(first);
        assert_eq!(nice(), expected, "one boost is still alive");
        drop(second);
        assert_eq!(nice(), base);
        ask.send(false).unwrap();
        let _ = told.recv();
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_thread_registering_during_a_boost_is_raised_at_once() {
        let _serial = SERIAL.lock();
        let boost = FreezeBoost::new();
        let (tid, ask, told) = registered();
        ask.send(true).unwrap();
        let now = told.recv().unwrap();
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            let base = REGISTRY.lock().threads.iter().find(|t| t.0 == tid).map(|t| t.1).unwrap();
            assert_eq!(now, (base + crate::TICK_NICE).max(-20));
        }
        drop(boost);
        ask.send(false).unwrap();
        let _ = told.recv();
        // It ended: its id is no longer raised by anything.
        for _ in 0..100 {
            if REGISTRY.lock().threads.iter().all(|t| t.0 != tid) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the thread did not unregister");
    }
}
