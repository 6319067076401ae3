/*!
The skeleton every fleet run shares, whatever it does to each tenant: connect, say what runs
where, run the shared schema's migrations first, hand the tenants to worker threads, and
finish with the shared schema (for a revert) and the run's report.

Reports flow from the workers over a channel to the calling thread, which passes each to the
[`Observer`] as it arrives (so output never interleaves) and collects them into the returned
[`FleetReport`]. Nothing here prints or exits.
*/

use crate::config::{Command, RunConfig};
use crate::database::{Connector, Database};
use crate::error::Error;
use crate::observer::Observer;
use crate::report::{FleetReport, RunInfo, RunKind, TenantReport};
use crate::shared::Shared;
use crate::source::SetInfo;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

/// Why a tenant was not started when the run stops at the first failure.
pub(crate) const FAIL_FAST_SKIP: &str = "not started: an earlier tenant failed and the run stops at the first failure";

/// A connected fleet run.
pub(crate) struct Fleet<'c> {
    pub(crate) config: &'c RunConfig,
    pub(crate) db: Database,
    pub(crate) shared: Shared<'c>,
    report: FleetReport,
    clock: Instant,
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
        let run = RunInfo {
            command: kind,
            source: SetInfo::of(&config.migrations),
            shared_source: shared.set().map(SetInfo::of),
            target: db.target.clone(),
        };
        observer.started(&run);
        Ok(Fleet {
            config,
            db,
            shared,
            report: FleetReport::new(run),
            clock,
        })
    }

    /// Runs the shared migrations that come before the tenants; `false` when they failed
    /// (then no tenant may be touched).
    pub(crate) fn shared_first(&mut self, observer: &mut dyn Observer) -> bool {
        self.report.shared = self.shared.before_tenants(&mut self.db, observer);
        !self.report.shared.as_ref().is_some_and(TenantReport::failed)
    }

    /// Records names refused as tenant names.
    pub(crate) fn refused_names(&mut self, names: Vec<String>) {
        self.report.invalid_names = names;
    }

    /// Runs `work` on the workers; each item's report goes to `observer` (on this thread) as
    /// soon as it is done. After a failure, when the run stops at the first failure, items
    /// not yet started get `skipped(item)` instead of `each(item)`.
    pub(crate) fn parallel<W, F, S>(
        &self,
        work: &[W],
        observer: &mut dyn Observer,
        each: F,
        skipped: S,
    ) -> Vec<TenantReport>
    where
        W: Sync,
        F: Fn(&W) -> TenantReport + Sync,
        S: Fn(&W) -> TenantReport + Sync,
    {
        let fail_fast = self.config.fail_fast;
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel::<TenantReport>();
        let workers = self.db.workers.count.clamp(1, work.len().max(1));
        let mut reports = Vec::with_capacity(work.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let tx = tx.clone();
                let (next, stop, each, skipped) = (&next, &stop, &each, &skipped);
                scope.spawn(move || {
                    while let Some(item) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let report = if stop.load(Ordering::Relaxed) {
                            skipped(item)
                        } else {
                            each(item)
                        };
                        if report.failed() && fail_fast {
                            stop.store(true, Ordering::Relaxed);
                        }
                        if tx.send(report).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            for report in rx {
                observer.tenant_done(&report);
                reports.push(report);
            }
        });
        reports
    }

    /// Reverts the shared schema when the run includes it (after every tenant succeeded),
    /// and returns the run's report.
    pub(crate) fn finish(mut self, tenants: Vec<TenantReport>, observer: &mut dyn Observer) -> FleetReport {
        if let Some(report) = self.shared.after_tenants(&mut self.db, &tenants, observer) {
            self.report.shared = Some(report);
        }
        self.report.finish(tenants, self.clock)
    }
}
