//! Time as the raft loop and the lessor see it: the machine's monotonic
//! clock in production, or a simulated one that only moves when the
//! deterministic simulation moves it (each member has its own, so one
//! member's clock can jump while the others' do not).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where `now` comes from. Cheap to clone.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<SimTime>>);

impl Clock {
    /// The machine's monotonic clock.
    pub fn real() -> Clock {
        Clock(None)
    }

    /// A clock that reads `time`.
    pub fn simulated(time: Arc<SimTime>) -> Clock {
        Clock(Some(time))
    }

    pub fn now(&self) -> Instant {
        match &self.0 {
            None => Instant::now(),
            Some(t) => t.now(),
        }
    }

    /// Waits `d` on this clock. On a simulated clock the future is ready
    /// once the simulation has moved time far enough; it registers no
    /// waker (the simulation polls every future after each step).
    pub async fn sleep(&self, d: Duration) {
        match &self.0 {
            None => tokio::time::sleep(d).await,
            Some(t) => {
                let until_ms = t.ms().saturating_add(d.as_millis() as u64);
                std::future::poll_fn(|_| {
                    if t.ms() >= until_ms {
                        std::task::Poll::Ready(())
                    } else {
                        std::task::Poll::Pending
                    }
                })
                .await
            }
        }
    }
}

/// A simulated clock: a fixed origin plus milliseconds the simulation sets.
pub struct SimTime {
    origin: Instant,
    now_ms: AtomicU64,
}

impl SimTime {
    pub fn new(now_ms: u64) -> Arc<SimTime> {
        Arc::new(SimTime {
            origin: Instant::now(),
            now_ms: AtomicU64::new(now_ms),
        })
    }

    pub fn set_ms(&self, ms: u64) {
        self.now_ms.store(ms, Ordering::Relaxed);
    }

    pub fn ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    fn now(&self) -> Instant {
        self.origin + Duration::from_millis(self.ms())
    }
}
