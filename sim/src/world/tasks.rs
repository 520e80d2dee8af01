//! Futures of the real APIs (membership changes, secrets, probes), polled
//! by the world after each step; a future holding a member's state ends
//! with that member's process.

use super::{Done, Up, World};

/// How long an operation run as a future may take before its outcome is
/// unknown.
const TASK_TIMEOUT_MS: u64 = 3_000;

impl World {
    pub(super) fn spawn(
        &mut self,
        f: impl std::future::Future<Output = Done> + 'static,
        on_timeout: Done,
    ) {
        self.spawn_on(Vec::new(), f, on_timeout);
    }

    /// `spawn`, for a future that holds the state of members `slots`.
    pub(super) fn spawn_on(
        &mut self,
        slots: Vec<usize>,
        f: impl std::future::Future<Output = Done> + 'static,
        on_timeout: Done,
    ) {
        self.tasks.push((
            self.now_ms + TASK_TIMEOUT_MS,
            Box::pin(f),
            on_timeout,
            slots,
        ));
    }

    /// A member's process ends (crash, restart, removal): so does every
    /// future working on its state, coming to its timeout outcome.
    pub(super) fn stop_member(&mut self, slot: usize) -> Option<Up> {
        let up = self.members[slot].up.take();
        self.disrupted_ms = self.now_ms;
        let mut i = 0;
        while i < self.tasks.len() {
            if self.tasks[i].3.contains(&slot) {
                self.give_up_task(i);
            } else {
                i += 1;
            }
        }
        up
    }

    /// Polls every future once, in order (a no-op waker: the world polls
    /// after each step instead of being woken); one past its time comes
    /// to its timeout outcome.
    pub(super) fn poll_tasks(&mut self) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut i = 0;
        while i < self.tasks.len() {
            if let std::task::Poll::Ready(done) = self.tasks[i].1.as_mut().poll(&mut cx) {
                drop(self.tasks.remove(i));
                self.task_done(done);
            } else if self.now_ms >= self.tasks[i].0 {
                self.give_up_task(i);
            } else {
                i += 1;
            }
        }
        // What the futures asked of a member (a proposal, a ReadIndex)
        // wakes its loop, as the channel wakes the real loop's thread;
        // otherwise each waited for the member's next tick (the final
        // secrets check of seeds 7800093 and 7800862 ran out of time so).
        for slot in self.up_members() {
            let queued = self.members[slot]
                .up
                .as_ref()
                .is_some_and(|u| u.stepper.has_inputs());
            if queued {
                self.schedule_run(slot);
            }
        }
    }

    /// Drops future `i` unfinished: it comes to its timeout outcome.
    fn give_up_task(&mut self, i: usize) {
        let (_, task, on_timeout, _) = self.tasks.remove(i);
        drop(task);
        self.task_done(on_timeout);
    }

    fn task_done(&mut self, done: Done) {
        match done {
            Done::Secret(d) => self.secret_done(d),
            Done::Probe {
                slot,
                what,
                refused_with,
                got,
            } => self.probe_done(slot, what, refused_with, got),
            other => self.membership_done(other),
        }
    }
}
