/*!
Stopping a run early, and what is in flight when it stops.

A [`CancelToken`] is how an application (or the CLI's signal handler) asks a run to stop: no
new tenant starts, and the statements in flight are cancelled on the server
(`pg_cancel_backend` on each worker's backend, sent from the control connection), so their
transactions roll back. [`RunControl`] is the run's shared state: why it stopped, the backends
working on a tenant, the failures so far, and notices for the observer (a tenant waiting for
another runner's lock).
*/

use crate::tenant::SchemaName;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Asks a run to stop (clone it, hand one to the runner, call [`cancel`](CancelToken::cancel)
/// from anywhere: a signal handler thread, a timeout, a shutdown hook).
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Stops the run: no new tenant starts, statements in flight are cancelled.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`cancel`](CancelToken::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why a run stopped starting tenants before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StopReason {
    /// A tenant failed and the run stops at the first failure.
    FailFast,
    /// The number of failed tenants reached the limit.
    MaxFailures,
    /// The run was cancelled (a signal, or the application's [`CancelToken`]).
    Interrupted,
    /// The database server could not be reached any more.
    ServerLost,
    /// A canary tenant failed: the rest of the fleet was not started.
    CanaryFailed,
}

impl StopReason {
    /// Why a tenant was not started, for its report.
    pub(crate) fn skip_reason(self) -> &'static str {
        match self {
            StopReason::FailFast => "not started: an earlier tenant failed and the run stops at the first failure",
            StopReason::MaxFailures => "not started: the run reached its maximum number of failed tenants",
            StopReason::Interrupted => "not started: the run was interrupted",
            StopReason::ServerLost => "not started: the database server was lost",
            StopReason::CanaryFailed => {
                "not started: a canary tenant failed, so the rest of the fleet was left untouched"
            }
        }
    }
}

/// A run's shared state, read and written by the workers and the thread that started it.
#[derive(Debug, Default)]
pub(crate) struct RunControl {
    cancel: Option<CancelToken>,
    stop: Mutex<Option<StopReason>>,
    failures: AtomicUsize,
    /// Stop after this many failed tenants (`Some(1)`: fail fast).
    max_failures: Option<usize>,
    /// Backend pid -> the tenant it works on.
    active: Mutex<HashMap<i32, SchemaName>>,
    /// (tenant, who holds its lock), for the observer.
    waiting: Mutex<Vec<(SchemaName, String)>>,
    cancelled_in_flight: AtomicBool,
}

impl RunControl {
    pub(crate) fn new(cancel: Option<CancelToken>, max_failures: Option<usize>) -> RunControl {
        RunControl {
            cancel,
            max_failures,
            ..RunControl::default()
        }
    }

    /// Why the run stopped, if it did. An interruption wins over any earlier reason: the
    /// run stops starting tenants either way, but an interruption also cancels what is in
    /// flight, and the exit code says so.
    pub(crate) fn stopped(&self) -> Option<StopReason> {
        if self.interrupted() {
            return Some(StopReason::Interrupted);
        }
        *self.stop.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the run was interrupted (the token was cancelled).
    pub(crate) fn interrupted(&self) -> bool {
        self.cancel.as_ref().is_some_and(CancelToken::is_cancelled)
    }

    /// Stops starting tenants (the first reason wins; an interruption always wins).
    pub(crate) fn stop(&self, reason: StopReason) {
        let mut stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        stop.get_or_insert(reason);
    }

    /// Counts a failed tenant; stops the run at the limit.
    pub(crate) fn failed(&self) {
        let failures = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
        match self.max_failures {
            Some(1) => self.stop(StopReason::FailFast),
            Some(max) if failures >= max => self.stop(StopReason::MaxFailures),
            _ => {}
        }
    }

    /// A backend started working on a tenant.
    pub(crate) fn track(&self, pid: i32, schema: &SchemaName) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.insert(pid, schema.clone());
    }

    /// The backend is done with its tenant.
    pub(crate) fn untrack(&self, pid: i32) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.remove(&pid);
    }

    /// Once the run is interrupted, calls `cancel` with the backends working on a tenant
    /// (asked again on every tick, so a backend that starts a statement after the first
    /// cancel is cancelled too). The list stays locked while `cancel` runs, so a backend
    /// cannot finish its tenant and go back to an application's pool in between.
    pub(crate) fn cancel_in_flight(&self, cancel: impl FnOnce(&[i32])) {
        if !self.interrupted() {
            return;
        }
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let pids: Vec<i32> = active.keys().copied().collect();
        if !pids.is_empty() {
            if !self.cancelled_in_flight.swap(true, Ordering::SeqCst) {
                log::info!("interrupted: cancelling the statements of {} backend(s)", pids.len());
            }
            cancel(&pids);
        }
    }

    /// A tenant waits for another runner's lock on it.
    pub(crate) fn waiting(&self, schema: &SchemaName, holder: String) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.push((schema.clone(), holder));
    }

    /// The waiting notices not yet passed on.
    pub(crate) fn take_waiting(&self) -> Vec<(SchemaName, String)> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *waiting)
    }
}
