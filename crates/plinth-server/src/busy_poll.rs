//! Busy polling: before a runtime worker goes to sleep, it watches the server's sockets for a
//! short, adaptive window, so that a request arriving within it is picked up without the cost
//! of waking a sleeping thread (on a virtual machine, a halted vCPU woken by an interrupt: tens
//! of microseconds per request, more than Plinth spends answering one).
//!
//! How: every listening and accepted socket is also registered, edge-triggered, in an epoll set
//! of our own. The runtime's `before_park` hook ([`BusyPoll::before_park`]) polls that set (and
//! the runtime's injection queue, where wake-ups from other threads land) without blocking,
//! until something is ready or the window ends; then the worker parks as usual, and finds the
//! event at once. Nothing is read here: the runtime still owns every socket.
//!
//! The window adapts per worker, like the kernel's halt-polling: after a spin that found
//! nothing, a short sleep (under [`BUSY_HORIZON`] budgets: requests keep coming, and a longer
//! spin would have caught the next one, sparing the wake-up) doubles it up to the configured
//! budget, and a long sleep (an idle server) halves it down to nothing, so an idle server
//! costs no CPU. A budget of 0 turns busy polling off.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{Timespec, epoll};

/// The shared set of watched sockets and the configured budget.
pub struct BusyPoll {
    epoll: OwnedFd,
    budget_ns: AtomicU64,
}

impl std::fmt::Debug for BusyPoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusyPoll").field("budget_ns", &self.budget_ns).finish()
    }
}

thread_local! {
    /// This worker's current window, in nanoseconds (`u64::MAX`: not yet set).
    static WINDOW_NS: Cell<u64> = const { Cell::new(u64::MAX) };
    /// When this worker went to sleep after a spin that found nothing.
    static SLEPT_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Below this, a shrinking window drops to zero (and grows back from here).
const MIN_WINDOW_NS: u64 = 2_000;

/// A sleep shorter than this many budgets means work is still arriving: the window grows. (Not
/// one budget: once the window is small, waking up makes every gap between requests longer
/// than the budget, and the window would never grow back.)
pub const BUSY_HORIZON: u64 = 10;

/// The process's poller (one runtime serves per process), off until a budget is set; `None`
/// where the system has no epoll.
pub fn global() -> Option<&'static BusyPoll> {
    static POLL: OnceLock<Option<BusyPoll>> = OnceLock::new();
    POLL.get_or_init(|| BusyPoll::new().ok()).as_ref()
}

impl BusyPoll {
    /// A poller with busy polling off until [`BusyPoll::set_budget`].
    pub fn new() -> std::io::Result<BusyPoll> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(BusyPoll { epoll, budget_ns: AtomicU64::new(0) })
    }

    /// The longest a worker spins before sleeping; zero turns busy polling off.
    pub fn set_budget(&self, budget: Duration) {
        self.budget_ns.store(budget.as_nanos().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }

    pub fn budget(&self) -> Duration {
        Duration::from_nanos(self.budget_ns.load(Ordering::Relaxed))
    }

    /// Watches a socket for incoming data or connections. The kernel forgets it when it closes.
    pub fn watch(&self, socket: impl AsFd) {
        if self.budget_ns.load(Ordering::Relaxed) == 0 {
            return;
        }
        let flags = epoll::EventFlags::IN | epoll::EventFlags::ET | epoll::EventFlags::RDHUP;
        // A failure only means this socket is served without busy polling.
        let _ = epoll::add(&self.epoll, socket, epoll::EventData::new_u64(0), flags);
    }

    /// The runtime's `before_park` hook: spin until a watched socket or the runtime's injection
    /// queue has work, or the window ends.
    pub fn before_park(&self) {
        let budget = self.budget_ns.load(Ordering::Relaxed);
        if budget == 0 {
            return;
        }
        let window = WINDOW_NS.with(|w| {
            if w.get() > budget {
                w.set(budget);
            }
            w.get()
        });
        if window == 0 {
            SLEPT_AT.with(|s| s.set(Some(Instant::now())));
            return;
        }
        let runtime = tokio::runtime::Handle::try_current().ok();
        let started = Instant::now();
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        let mut events = [MaybeUninit::<epoll::Event>::uninit(); 4];
        loop {
            match epoll::wait(&self.epoll, &mut events[..], Some(&zero)) {
                Ok((ready, _)) if !ready.is_empty() => return,
                Ok(_) => {}
                // Never spin on a broken poller.
                Err(_) => return,
            }
            if runtime.as_ref().is_some_and(|r| r.metrics().global_queue_depth() > 0) {
                return;
            }
            if started.elapsed().as_nanos() as u64 >= window {
                SLEPT_AT.with(|s| s.set(Some(Instant::now())));
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// The runtime's `after_unpark` hook: adapt the window to how long the sleep lasted.
    pub fn after_unpark(&self) {
        let budget = self.budget_ns.load(Ordering::Relaxed);
        let Some(slept_at) = SLEPT_AT.with(Cell::take) else { return };
        let slept = slept_at.elapsed().as_nanos() as u64;
        WINDOW_NS.with(|w| {
            let current = w.get().min(budget);
            let next = if slept < budget.saturating_mul(BUSY_HORIZON) {
                // Work keeps coming: a longer spin would have caught it without a wake-up.
                (current * 2).clamp(MIN_WINDOW_NS, budget)
            } else if current / 2 < MIN_WINDOW_NS {
                0
            } else {
                current / 2
            };
            w.set(next);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_socket_ends_the_spin_and_an_idle_one_lets_the_window_shrink() {
        let poll = BusyPoll::new().unwrap();
        poll.set_budget(Duration::from_secs(600));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        poll.watch(&listener);
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        poll.before_park();
        assert!(
            SLEPT_AT.with(Cell::get).is_none(),
            "a pending connection ends the spin (a window that runs out records a sleep)"
        );

        // Nothing pending: the spin runs out, and a long sleep after it halves the window...
        poll.set_budget(Duration::from_micros(100));
        poll.before_park();
        assert!(SLEPT_AT.with(Cell::get).is_some());
        std::thread::sleep(Duration::from_millis(20));
        poll.after_unpark();
        assert_eq!(WINDOW_NS.with(Cell::get), 50_000);
        // ...down to nothing, after which the worker sleeps at once...
        for _ in 0..5 {
            poll.before_park();
            std::thread::sleep(Duration::from_millis(20));
            poll.after_unpark();
        }
        assert_eq!(WINDOW_NS.with(Cell::get), 0);
        // ...until sleeps get short again (work is arriving): then it grows back to the budget.
        for _ in 0..10 {
            poll.before_park();
            poll.after_unpark();
        }
        assert_eq!(WINDOW_NS.with(Cell::get), 100_000);
    }

    #[test]
    fn a_zero_budget_never_spins() {
        let poll = BusyPoll::new().unwrap();
        poll.before_park();
        assert!(SLEPT_AT.with(Cell::get).is_none(), "no spin, so no sleep after one");
        assert_eq!(WINDOW_NS.with(Cell::get), u64::MAX, "the window is never touched");
    }
}
