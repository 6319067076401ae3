/*!
The skeleton every fleet run shares, whatever it does to each tenant: connect, say what runs
where, run the shared schema's migrations first, hand the tenants to worker threads, and
finish with the shared schema (for a revert) and the run's report.

Reports flow from the workers over a channel to the calling thread, which passes each to the
[`Observer`] as it arrives (so output never interleaves) and collects them into the returned
[`FleetReport`]. Nothing here prints or exits.
*/

use crate::config::{Command, RunConfig, Settings};
use crate::control::{RunControl, StopReason};
use crate::database::{Connector, Database, Workers};
use crate::error::Error;
use crate::journal::{Journal, JournalRun};
use crate::observer::Observer;
use crate::report::{FailureKind, FleetReport, Outcome, RunInfo, RunKind, TenantReport};
use crate::shared::Shared;
use crate::source::SetInfo;
use crate::tenant::SchemaName;
use diesel::connection::SimpleConnection;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How often the thread that started the run looks for an interruption and for notices
/// while the workers run.
const TICK: Duration = Duration::from_millis(50);

/// A connected fleet run.
pub(crate) struct Fleet<'c> {
    pub(crate) db: Database,
    pub(crate) shared: Shared<'c>,
    /// Why the run stops early, the backends in flight, notices.
    pub(crate) control: RunControl,
    /// How migrations run on this database (the run's settings, Citus mode resolved).
    pub(crate) settings: Settings,
    report: FleetReport,
    clock: Instant,
    /// The run's journal (changing runs, unless turned off).
    journal: Option<Journal>,
}

impl<'c> Fleet<'c> {
    /// Checks the shared set for `command` (`None`: the run has no shared part), connects,
    /// and tells the observer what runs where.
    pub(crate) fn open(
        config: &'c RunConfig,
        command: Option<&Command>,
        kind: RunKind,
        observer: &mut dyn Observer,
    ) -> Result<Fleet<'c>, Error> {
        let clock = Instant::now();
        let shared = Shared::load(config, command)?;
        if let Connector::Pool(pool) = &config.connector {
            if pool.max_size() < 2 {
                return Err(Error::Config(format!(
                    "the connection pool has max_size {}; the runner needs one connection to coordinate \
                     and at least one for a worker (max_size 2 or more)",
                    pool.max_size()
                )));
            }
        }
        let db = Database::connect(&config.connector, config.concurrency, config.connect_timeout)?;
        if db.workers.count == 0 {
            return Err(Error::Config(
                "the application's connection pool has no free connection for a worker (the application holds \
                 the others): give it a larger max_size or run when it is idle"
                    .into(),
            ));
        }
        let run = RunInfo {
            command: kind,
            source: SetInfo::of(&config.migrations),
            shared_source: shared.set().map(SetInfo::of),
            target: db.target.clone(),
        };
        observer.started(&run);
        let mut report = FleetReport::new(run);
        report.dry_run = config.dry_run;
        let control = RunControl::new(config.cancel.clone(), config.max_failures);
        let mut db = db;
        report.warnings = crate::preflight::check(&mut db, config, kind)?;
        for warning in &report.warnings {
            observer.warning(warning);
        }
        let mut settings = crate::citus::prepare_database(&mut db, config)?;
        let journal = match &config.journal {
            Some(journal) if !kind.reads_only() && !config.dry_run => {
                let target = match command {
                    Some(Command::Up { to }) => to.as_deref(),
                    _ => None,
                };
                // The tenants' histories are the truth: a journal that cannot be written
                // (a role without CREATE on the database, say) costs the run its history,
                // not the deploy.
                match Journal::begin(&mut db.control, journal, &report.run, target) {
                    Ok(journal) => Some(journal),
                    Err(e) => {
                        let warning = format!("{e}; this run is not journaled");
                        observer.warning(&warning);
                        report.warnings.push(warning);
                        None
                    }
                }
            }
            _ => None,
        };
        report.run_id = journal.as_ref().map(|j| j.run().id());
        settings.journal = journal.as_ref().map(|j| j.run().clone());
        let mut shared = shared;
        shared.journal = journal.as_ref().map(|j| j.run().for_shared());
        Ok(Fleet {
            db,
            shared,
            control,
            settings,
            report,
            clock,
            journal,
        })
    }

    /// Runs the shared migrations that come before the tenants; `false` when they failed
    /// (then no tenant may be touched).
    pub(crate) fn shared_first(&mut self, observer: &mut dyn Observer) -> bool {
        self.report.shared = self.shared.before_tenants(&mut self.db, &self.settings, observer);
        !self.report.shared.as_ref().is_some_and(TenantReport::failed)
    }

    /// Whether the shared schema's migrations changed something in this run.
    pub(crate) fn shared_changed(&self) -> bool {
        self.report
            .shared
            .as_ref()
            .is_some_and(|s| !s.applied.is_empty() || !s.reverted.is_empty())
    }

    /// Records the tenants the run selected in its journal (all `pending` until done).
    pub(crate) fn journal_tenants(&mut self, tenants: &[SchemaName]) -> Result<(), Error> {
        match &mut self.journal {
            Some(journal) => {
                let names: Vec<String> = tenants.iter().map(ToString::to_string).collect();
                journal.tenants(&mut self.db.control, &names)
            }
            None => Ok(()),
        }
    }

    /// Records the tenants a resumed run carries over from run `from` without running them.
    pub(crate) fn journal_carried(&mut self, tenants: &[String], from: i64) -> Result<(), Error> {
        match &mut self.journal {
            Some(journal) if !tenants.is_empty() => journal.carried(&mut self.db.control, tenants, from),
            _ => Ok(()),
        }
    }

    /// The run's journal, if it keeps one.
    pub(crate) fn journal_run(&self) -> Option<&JournalRun> {
        self.journal.as_ref().map(Journal::run)
    }

    /// Records names refused as tenant names.
    pub(crate) fn refused_names(&mut self, names: Vec<String>) {
        self.report.invalid_names = names;
    }

    /// Runs `work` on the workers; each item's report goes to `observer` (on this thread) as
    /// soon as it is done. Once the run stops early (failures, an interruption, a lost
    /// server), items not yet started get `skipped(item, reason)` instead of `each(item)`.
    /// A panic in `each` fails that item alone. On an interruption, the statements in
    /// flight are cancelled from the control connection.
    pub(crate) fn parallel<W, F, S>(
        &mut self,
        work: &[W],
        observer: &mut dyn Observer,
        each: F,
        skipped: S,
    ) -> Vec<TenantReport>
    where
        W: Sync,
        F: Fn(&W, &Worker<'_>) -> TenantReport + Sync,
        S: Fn(&W, &str) -> TenantReport + Sync,
    {
        let next = AtomicUsize::new(0);
        let (tx, rx) = mpsc::channel::<TenantReport>();
        let count = self.db.workers.count.clamp(1, work.len().max(1));
        let mut reports = Vec::with_capacity(work.len());
        let (control, workers, db_control) = (&self.control, &self.db.workers, &mut self.db.control);
        let journal = &mut self.journal;
        let worker = Worker {
            workers,
            control,
            settings: &self.settings,
        };
        std::thread::scope(|scope| {
            for _ in 0..count {
                let tx = tx.clone();
                let (next, each, skipped, worker) = (&next, &each, &skipped, &worker);
                scope.spawn(move || {
                    while let Some(item) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let report = match control.stopped() {
                            Some(reason) => skipped(item, reason.skip_reason()),
                            None => contained(|| each(item, worker), || skipped(item, "")),
                        };
                        if report.failed() {
                            control.failed();
                            if lost_connection(&report) && !workers.server_reachable() {
                                control.stop(StopReason::ServerLost);
                            }
                        }
                        if tx.send(report).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            loop {
                match rx.recv_timeout(TICK) {
                    Ok(report) => {
                        observer.tenant_done(&report);
                        if let Some(journal) = journal.as_mut() {
                            journal.record(&report);
                        }
                        reports.push(report);
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if let Some(journal) = journal.as_mut() {
                    journal.flush_due(db_control);
                }
                for (tenant, holder) in control.take_waiting() {
                    observer.waiting(&tenant, &holder);
                }
                control.cancel_in_flight(|pids| cancel_backends(db_control, pids));
            }
        });
        reports
    }

    /// Reverts the shared schema when the run includes it (after every tenant succeeded),
    /// and returns the run's report.
    pub(crate) fn finish(mut self, tenants: Vec<TenantReport>, observer: &mut dyn Observer) -> FleetReport {
        if let Some(report) = self
            .shared
            .after_tenants(&mut self.db, &self.settings, &tenants, &self.control, observer)
        {
            self.report.shared = Some(report);
        }
        self.report.stopped = self.control.stopped();
        let empty = FleetReport::new(self.report.run.clone());
        let report = std::mem::replace(&mut self.report, empty).finish(tenants, self.clock);
        if let Some(journal) = self.journal.take() {
            journal.finish(&mut self.db.control, &report);
        }
        report
    }
}

impl Drop for Fleet<'_> {
    /// A run that ended with an error before its report (a refusal, a failed discovery)
    /// closes its journal row as `error`, so it never looks like a run that died.
    fn drop(&mut self) {
        if let Some(journal) = self.journal.take() {
            journal.abandon(&mut self.db.control);
        }
    }
}

/// What a worker thread works with.
pub(crate) struct Worker<'a> {
    /// The pool.
    pub(crate) workers: &'a Workers,
    /// The run's shared state.
    pub(crate) control: &'a RunControl,
    /// How migrations run on this database.
    pub(crate) settings: &'a Settings,
}

/// Runs `work`; a panic becomes a failed report (the pool closes the connection the panicking
/// thread held, since r2d2 sees it dropped while panicking).
fn contained(work: impl FnOnce() -> TenantReport, report: impl FnOnce() -> TenantReport) -> TenantReport {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(done) => done,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            let mut failed = report();
            failed.outcome = Outcome::Failed {
                failure: FailureKind::Internal,
                migration: None,
                error: format!("internal error (please report it): {message}; the tenant's current migration, if any, was rolled back with its connection"),
            };
            failed
        }
    }
}

fn lost_connection(report: &TenantReport) -> bool {
    matches!(
        report.outcome,
        Outcome::Failed {
            failure: FailureKind::Connection | FailureKind::ConnectionLost,
            ..
        }
    ) || matches!(&report.outcome, Outcome::Failed { error, .. } if error.contains("the connection was lost"))
}

/// Cancels the statements of `pids` (their transactions roll back), from the control
/// connection.
fn cancel_backends(control: &mut diesel::PgConnection, pids: &[i32]) {
    if pids.is_empty() {
        return;
    }
    let list: Vec<String> = pids.iter().map(i32::to_string).collect();
    let sql = format!(
        "SELECT pg_cancel_backend(pid) FROM unnest(ARRAY[{}]::int[]) AS pid",
        list.join(",")
    );
    if let Err(e) = control.batch_execute(&sql) {
        log::warn!("interrupted: could not cancel the statements in flight: {e}");
    }
}
