//! Stopping in bounded time.
//!
//! A [`Stopper`] carries one deadline through every step of a stop: each
//! task is awaited until the deadline at most (or a tighter cap of its
//! own); a task still running then is logged by name and aborted, and the
//! next step goes on. What was cut short ends up in the [`StopReport`].

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// How long [`crate::daemon::Daemon::stop`] lets the graceful part of a
/// stop take (closing sessions, letting applies in progress become
/// durable, telling peers, the final flush) before it aborts what is left.
pub const STOP_BUDGET: Duration = Duration::from_millis(2_500);

/// Time every step gets even when the budget is spent: enough to drop
/// aborted tasks, to hand a last flush to the store's flusher thread. A
/// stop where everything overruns takes the budget plus a few of these
/// (under four seconds in all), however many tasks there are.
const FLOOR: Duration = Duration::from_millis(200);

/// What a stop did.
#[derive(Clone, Debug, Default)]
pub struct StopReport {
    /// How long the stop took.
    pub elapsed: Duration,
    /// The tasks and steps that did not finish in time and were aborted
    /// or abandoned, by name (e.g. `partner task Globex`). Empty after a
    /// clean stop.
    pub aborted: Vec<String>,
}

impl StopReport {
    /// Whether every task and step finished on its own.
    pub fn is_clean(&self) -> bool {
        self.aborted.is_empty()
    }
}

/// One deadline shared by the steps of a stop.
pub(crate) struct Stopper {
    what: &'static str,
    started: Instant,
    deadline: Instant,
    report: StopReport,
}

impl Stopper {
    /// A stop of `what` (used in the logs) that should be over `budget`
    /// from now.
    pub(crate) fn new(what: &'static str, budget: Duration) -> Stopper {
        let started = Instant::now();
        Stopper {
            what,
            started,
            deadline: started + budget,
            report: StopReport::default(),
        }
    }

    /// Time left before the deadline (zero once it passed).
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Time left, but at least the floor every step gets.
    fn allowance(&self, cap: Option<Duration>) -> Duration {
        let left = self.remaining().max(FLOOR);
        cap.map_or(left, |c| left.min(c.max(FLOOR)))
    }

    /// Awaits `handle` until the deadline (or `cap`, if sooner); a task
    /// still running then is logged by `name`, aborted and reported.
    pub(crate) async fn join<T>(
        &mut self,
        name: impl Display,
        handle: JoinHandle<T>,
        cap: Option<Duration>,
    ) {
        self.join_all(vec![(name.to_string(), handle)], cap).await;
    }

    /// Awaits every task until one common deadline (the stop's, or `cap`
    /// from now if sooner); the tasks still running then are logged by
    /// name, aborted together and reported. Takes the same time for one
    /// task as for a thousand.
    pub(crate) async fn join_all<T>(
        &mut self,
        tasks: Vec<(String, JoinHandle<T>)>,
        cap: Option<Duration>,
    ) {
        let wait = self.allowance(cap);
        let until = tokio::time::Instant::now() + wait;
        let mut late = Vec::new();
        for (name, mut handle) in tasks {
            let t = Instant::now();
            let joined = tokio::time::timeout_at(until, &mut handle).await;
            tracing::debug!(stopping = self.what, task = %name,
                took_us = t.elapsed().as_micros() as u64, "joined");
            match joined {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.is_panic() => {
                    tracing::error!(stopping = self.what, task = %name, "task had panicked");
                }
                // Cancelled elsewhere: nothing left to stop.
                Ok(Err(_)) => {}
                Err(_) => {
                    tracing::warn!(
                        stopping = self.what,
                        task = %name,
                        waited_ms = wait.as_millis() as u64,
                        "task did not stop in time; aborting it"
                    );
                    handle.abort();
                    late.push((name, handle));
                }
            }
        }
        // An aborted task is dropped at its next await; one stuck inside a
        // blocking call is abandoned instead of waited for.
        let dropped = tokio::time::Instant::now() + FLOOR;
        for (name, handle) in late {
            if tokio::time::timeout_at(dropped, handle).await.is_err() {
                tracing::error!(stopping = self.what, task = %name,
                    "aborted task is stuck in a blocking call; abandoning it");
            }
            self.report.aborted.push(name);
        }
    }

    /// Runs `step` until the deadline (or `cap`, if sooner); returns its
    /// output, or `None` after logging `name` when it was cut short.
    pub(crate) async fn step<F: Future>(
        &mut self,
        name: impl Display,
        cap: Option<Duration>,
        step: F,
    ) -> Option<F::Output> {
        let wait = self.allowance(cap);
        let t = Instant::now();
        let done = tokio::time::timeout(wait, step).await;
        tracing::debug!(stopping = self.what, step = %name, took_us = t.elapsed().as_micros() as u64, "step over");
        match done {
            Ok(out) => Some(out),
            Err(_) => {
                let name = name.to_string();
                tracing::warn!(
                    stopping = self.what,
                    step = %name,
                    waited_ms = wait.as_millis() as u64,
                    "step did not finish in time; going on without it"
                );
                self.report.aborted.push(name);
                None
            }
        }
    }

    /// Runs `step` until the deadline (or `cap`, if sooner) where giving up
    /// is normal (e.g. waiting for an unreachable peer to be told): not
    /// reported, logged at debug level only.
    pub(crate) async fn best_effort<F: Future>(&mut self, name: &str, cap: Duration, step: F) {
        let wait = self.remaining().min(cap);
        let t = Instant::now();
        let done = tokio::time::timeout(wait, step).await;
        tracing::debug!(
            stopping = self.what,
            step = name,
            took_us = t.elapsed().as_micros() as u64,
            "step over"
        );
        if done.is_err() {
            tracing::debug!(
                stopping = self.what,
                step = name,
                waited_ms = wait.as_millis() as u64,
                "gave up waiting"
            );
        }
    }

    /// The report, with the time the whole stop took.
    pub(crate) fn finish(mut self) -> StopReport {
        self.report.elapsed = self.started.elapsed();
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_never_ends_is_aborted_by_name_at_the_deadline() {
        let mut s = Stopper::new("test", Duration::from_millis(300));
        let quick = tokio::spawn(async {});
        let stuck = tokio::spawn(std::future::pending::<()>());
        s.join("quick", quick, None).await;
        s.join("stuck", stuck, None).await;
        let never = s.step("never", None, std::future::pending::<()>()).await;
        assert!(never.is_none());
        let r = s.finish();
        assert_eq!(r.aborted, vec!["stuck".to_string(), "never".to_string()]);
        // 300 ms budget, then the floor for the abort and for the step.
        assert!(r.elapsed < Duration::from_secs(2), "{:?}", r.elapsed);
    }

    #[tokio::test]
    async fn many_stuck_tasks_cost_no_more_than_one() {
        let mut s = Stopper::new("test", Duration::from_millis(300));
        let tasks = (0..50)
            .map(|i| {
                (
                    format!("stuck {i}"),
                    tokio::spawn(std::future::pending::<()>()),
                )
            })
            .collect();
        s.join_all(tasks, None).await;
        let r = s.finish();
        assert_eq!(r.aborted.len(), 50);
        assert!(r.elapsed < Duration::from_secs(1), "{:?}", r.elapsed);
    }

    #[tokio::test]
    async fn a_cap_shorter_than_the_budget_applies() {
        let mut s = Stopper::new("test", Duration::from_secs(30));
        let t = Instant::now();
        s.join(
            "stuck",
            tokio::spawn(std::future::pending::<()>()),
            Some(Duration::ZERO),
        )
        .await;
        // The floor, not the cap of zero, not the 30 s budget.
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(!s.finish().is_clean());
    }
}
