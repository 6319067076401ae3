/*!
Rendering reports: one line per tenant as each finishes, then a summary (human), or one
JSON document (json). The engine never prints; this is the only place that decides how
results look.
*/

use super::flags::{Format, PlanArgs};
use super::output::{errln, outln};
use crate::{
    FailureKind, FleetReport, NameError, Observer, Outcome, RunInfo, RunKind, SchemaName, StopReason, TenantReport,
};

/// Prints reports as they arrive.
pub struct Printer {
    format: Format,
    quiet: bool,
    kind: RunKind,
    /// `status`: only tenants that are not current.
    behind_only: bool,
    /// `status`: tenant lines wait for the fleet summary (and the journal's checksums).
    hold: bool,
    /// A dry run (`--dry-run`, `--sql`).
    plan: PlanArgs,
}

impl Printer {
    /// A printer for the reports of a `kind` run.
    pub fn new(format: Format, quiet: bool, kind: RunKind) -> Printer {
        Printer {
            format,
            quiet,
            kind,
            behind_only: false,
            hold: kind == RunKind::Status && format == Format::Human,
            plan: PlanArgs::default(),
        }
    }

    /// `status`: list only the tenants that are not current.
    pub fn behind_only(mut self, behind_only: bool) -> Printer {
        self.behind_only = behind_only;
        self
    }

    /// Prints a dry run's plan (and with `--sql`, the SQL on stdout, the rest on stderr).
    pub fn planning(mut self, plan: PlanArgs) -> Printer {
        if plan.sql && self.format == Format::Human {
            super::output::human_to_stderr();
        }
        self.plan = plan;
        self
    }

    /// Prints the end of the run: the summary (human), the whole report (json) or the
    /// summary object (json-lines).
    pub fn finish(&self, fleet: &FleetReport) {
        match self.format {
            Format::Json => outln!("{}", serde_json::to_string_pretty(fleet).unwrap_or_default()),
            Format::JsonLines => outln!("{}", super::json_lines::summary(fleet)),
            Format::Human if fleet.dry_run => outln!("{}", super::plan::summary(fleet)),
            Format::Human => {
                if self.hold {
                    outln!("{}", fleet_status(fleet));
                    let shown = fleet
                        .tenants
                        .iter()
                        .filter(|r| self.shows() && !(self.behind_only && current(r)));
                    for r in shown {
                        outln!("{}", tenant_line(r, self.kind));
                    }
                }
                outln!("{}", summary(fleet))
            }
        }
    }

    /// A tenant's lines (and SQL) as it finishes.
    fn report(&self, report: &TenantReport, shared: bool) {
        if self.format == Format::JsonLines {
            return outln!("{}", super::json_lines::tenant(report, shared));
        }
        if self.plan.sql && self.format == Format::Human {
            if let Some(script) = super::plan::script(report, shared) {
                super::output::script(&script);
            }
        }
        if !self.shows() {
            return;
        }
        let prefix = if shared { "shared schema " } else { "" };
        if self.plan.planning() {
            for line in super::plan::tenant_lines(report, self.kind) {
                outln!("{prefix}{line}");
            }
            return;
        }
        outln!("{prefix}{}", tenant_line(report, self.kind));
        for note in &report.notes {
            outln!("    note: {note}");
        }
    }

    /// Per-tenant lines: human output, not quiet (quiet prints failures once, in the summary).
    fn shows(&self) -> bool {
        self.format == Format::Human && !self.quiet
    }
}

/// The first line of a run: what runs, from where, on which database, e.g.
/// `migrations: 5 from migrations/ embedded in myapp 1.4.0 (newest ...); database: app@db:5432/app`.
pub fn run_line(run: &RunInfo) -> String {
    let shared = match &run.shared_source {
        Some(shared) => format!("; shared: {shared}"),
        None => String::new(),
    };
    format!("migrations: {}{shared}; database: {}", run.source, run.target)
}

impl Observer for Printer {
    fn started(&mut self, run: &RunInfo) {
        if self.format == Format::Human {
            outln!("{}", run_line(run));
        }
    }

    fn discovered(&mut self, tenants: &[SchemaName], invalid: &[NameError]) {
        if self.format == Format::Human {
            for e in invalid {
                errln!("skipped invalid tenant name: {e}");
            }
            if tenants.is_empty() {
                errln!("warning: no tenants found");
            }
            if !self.quiet {
                outln!("{} tenant(s)", tenants.len());
            }
        }
    }

    fn shared_done(&mut self, report: &TenantReport) {
        self.report(report, true);
    }

    fn waiting(&mut self, tenant: &SchemaName, holder: &str) {
        if self.format == Format::Human {
            outln!("{tenant}: waiting for its lock, held by {holder}");
        }
    }

    fn warning(&mut self, message: &str) {
        errln!("warning: {message}");
    }

    fn tenant_done(&mut self, report: &TenantReport) {
        if !self.hold {
            self.report(report, false);
        }
    }
}

/// The migration's name (its directory), the bare version if unknown, `none` for none.
fn version(r: &TenantReport, v: &Option<String>) -> String {
    super::names::of(&r.schema, v.as_deref())
}

/// One tenant's line, e.g. `acme: 2024-01-01-000003_create_projects -> 2024-01-01-000005_add_users_last_login_at
/// (2 applied, 41 ms)`.
pub fn tenant_line(r: &TenantReport, kind: RunKind) -> String {
    let name = &r.schema;
    let (before, after) = (version(r, &r.version_before), version(r, &r.version_after));
    match &r.outcome {
        Outcome::Unchanged if kind.reads_only() && !r.exists => format!("{name}: schema does not exist"),
        Outcome::Unchanged if kind.reads_only() => {
            let mut unknown = match r.unknown.is_empty() {
                true => String::new(),
                false => format!(", unknown applied versions: {}", r.unknown.join(", ")),
            };
            if !r.changed_since_applied.is_empty() {
                let names: Vec<String> = r
                    .changed_since_applied
                    .iter()
                    .map(|v| super::names::of(&r.schema, Some(v)))
                    .collect();
                unknown.push_str(&format!(", up.sql changed since applied: {}", names.join(", ")));
            }
            format!(
                "{name}: {after} ({} applied, {} pending{unknown})",
                r.applied_count, r.pending_count
            )
        }
        Outcome::Unchanged if kind == RunKind::Down => format!("{name}: nothing to revert (at {after})"),
        Outcome::Unchanged if kind == RunKind::Redo => format!("{name}: nothing to redo (at {after})"),
        Outcome::Unchanged if kind == RunKind::Mark => format!("{name}: already so, at {after}"),
        Outcome::Unchanged if r.past_target.is_some() => format!(
            "{name}: already past {} (at {after}): nothing to apply",
            r.past_target.as_deref().unwrap_or_default()
        ),
        Outcome::Unchanged => format!("{name}: up to date at {after}{}", pending_note(r)),
        Outcome::Changed if kind == RunKind::Mark => format!("{name}: {before} -> {after} (history only)"),
        Outcome::Changed if kind == RunKind::TenantDrop => {
            format!("{name}: dropped (was at {before}, {} ms)", r.elapsed_ms)
        }
        Outcome::Changed if kind == RunKind::TenantCreate && r.version_before.is_none() => {
            format!("{name}: created at {after} ({}, {} ms)", counts(r), r.elapsed_ms)
        }
        Outcome::Changed => format!(
            "{name}: {before} -> {after} ({}{}, {} ms)",
            counts(r),
            retries(r),
            r.elapsed_ms
        ),
        Outcome::Failed {
            failure,
            migration,
            error,
        } => {
            let at = migration.as_deref().map(|m| format!(" in {m}")).unwrap_or_default();
            let done = match r.applied.is_empty() && r.reverted.is_empty() {
                true => String::new(),
                false => format!(" after {}", counts(r)),
            };
            let left_at = match kind {
                RunKind::TenantCreate | RunKind::TenantDrop if r.version_after.is_none() => String::new(),
                _ => format!(", left at {after}"),
            };
            format!("{name}: FAILED{at}{done}{left_at}: {error}{}", hint(*failure, kind))
        }
        Outcome::Skipped { reason } => format!("{name}: skipped: {reason}"),
    }
}

/// What to do about a failure, naming this CLI's flags.
pub(super) fn hint(failure: FailureKind, kind: RunKind) -> &'static str {
    match (failure, kind) {
        (FailureKind::MissingSchema, RunKind::TenantDrop) => " (--if-exists skips it)",
        (FailureKind::MissingSchema, _) => " (create it, or run with --missing create or --missing skip)",
        (FailureKind::SchemaExists, _) => " (--if-not-exists migrates it instead)",
        (FailureKind::NotATenant, _) => " (--force drops it anyway)",
        (FailureKind::LockWait, _) => " (--lock-wait-timeout sets how long to wait)",
        (FailureKind::OutOfOrder, _) => " (--allow-out-of-order applies it anyway)",
        _ => "",
    }
}

fn pending_note(r: &TenantReport) -> String {
    if r.pending_count > 0 {
        format!(" ({} later migration(s) not requested)", r.pending_count)
    } else {
        String::new()
    }
}

fn retries(r: &TenantReport) -> String {
    match r.retries {
        0 => String::new(),
        n => format!(" after {n} retr{}", if n == 1 { "y" } else { "ies" }),
    }
}

fn counts(r: &TenantReport) -> String {
    match (r.applied.len(), r.reverted.len()) {
        (a, 0) => format!("{a} applied"),
        (0, d) => format!("{d} reverted"),
        (a, d) => format!("{d} reverted, {a} applied"),
    }
}

/// Whether a tenant is where the set says it should be.
fn current(r: &TenantReport) -> bool {
    r.exists && !r.failed() && r.pending_count == 0 && r.unknown.is_empty() && r.changed_since_applied.is_empty()
}

/// `status`: the fleet at a glance, before the tenant lines.
fn fleet_status(fleet: &FleetReport) -> String {
    let histogram: Vec<String> = fleet
        .versions
        .iter()
        .map(|v| {
            let at = v.name.as_deref().or(v.version.as_deref()).unwrap_or("nothing applied");
            format!("{at}: {} tenant(s)", v.tenants)
        })
        .collect();
    let t = &fleet.tenants;
    let count = |f: &dyn Fn(&TenantReport) -> bool| t.iter().filter(|r| f(r)).count();
    let up_to_date = count(&current);
    let behind = count(&|r| r.exists && !r.failed() && r.pending_count > 0);
    let ahead = count(&|r| !r.unknown.is_empty());
    let missing = count(&|r| !r.exists);
    let changed = count(&|r| !r.changed_since_applied.is_empty());
    let mut text = format!(
        "versions: {}
fleet: {} tenant(s): {up_to_date} up to date, {behind} behind, {ahead} ahead (versions this set \
         does not know), {missing} missing schema, {changed} with up.sql changed since applied",
        if histogram.is_empty() {
            "none".to_string()
        } else {
            histogram.join(" · ")
        },
        t.len()
    );
    if let Some(last) = &fleet.last_run {
        let outcome = last.outcome.as_deref().unwrap_or("not finished");
        text.push_str(&format!(
            ", {} failed in the last up run (run {}, {outcome})",
            last.failed.len(),
            last.id
        ));
        if !last.failed.is_empty() {
            let shown: Vec<&str> = last.failed.iter().take(10).map(String::as_str).collect();
            text.push_str(&format!(": {}", shown.join(", ")));
        }
    }
    text
}

/// The closing summary, naming every failed tenant.
pub fn summary(fleet: &FleetReport) -> String {
    let s = &fleet.summary;
    let kind = fleet.run.command;
    let mut text = if kind.reads_only() {
        let (mut current, mut behind) = (0, 0);
        for r in fleet.tenants.iter().filter(|r| r.outcome == Outcome::Unchanged) {
            match r.pending_count {
                0 => current += 1,
                _ => behind += 1,
            }
        }
        format!(
            "{}: {} tenant(s): {current} up to date, {behind} with pending migrations, {} failed, {} skipped in {} ms",
            kind.name(),
            s.tenants,
            s.failed,
            s.skipped,
            fleet.elapsed_ms
        )
    } else {
        let shared = match fleet.shared.as_ref().map(|r| r.applied.len() + r.reverted.len()) {
            Some(n) if n > 0 => format!(" ({n} in the shared schema)"),
            _ => String::new(),
        };
        format!(
            "{}: {} tenant(s): {} changed, {} unchanged, {} failed, {} skipped; {} migration(s) applied, {} reverted{shared} in {} ms",
            kind.name(),
            s.tenants,
            s.changed,
            s.unchanged,
            s.failed,
            s.skipped,
            s.applied,
            s.reverted,
            fleet.elapsed_ms
        )
    };
    if let Some(reason) = fleet.stopped {
        let not_started = fleet.tenants.iter().filter(|r| r.skipped()).count();
        let why = match reason {
            StopReason::FailFast => "a tenant failed (--fail-fast)",
            StopReason::MaxFailures => "too many tenants failed (--max-failures)",
            StopReason::Interrupted => {
                "interrupted; tenants in flight were cancelled and rolled back, except \
                                        where their line says NOT rolled back"
            }
            StopReason::ServerLost => "the database server was lost; run the same command again once it is back",
            StopReason::CanaryFailed => "a canary tenant failed (--canary); the rest of the fleet was left untouched",
        };
        text.push_str(&format!("\nstopped early: {why}; {not_started} tenant(s) not started"));
    }
    if let Some(shared) = fleet.shared.as_ref().filter(|r| r.failed()) {
        let consequence = match fleet.tenants.is_empty() {
            true => "; no tenant was touched",
            false => " after the tenants were processed",
        };
        text.push_str(&format!(
            "\nshared schema failed{consequence}:\n  {}",
            tenant_line(shared, kind)
        ));
    }
    let failed: Vec<&TenantReport> = fleet.tenants.iter().filter(|r| r.failed()).collect();
    if !failed.is_empty() {
        text.push_str("\nfailed tenants:");
        for r in failed {
            text.push_str(&format!("\n  {}", tenant_line(r, kind)));
        }
    }
    text.push_str(&next_step(fleet));
    text
}

/// The command to run next when a journaled run left tenants behind.
fn next_step(fleet: &FleetReport) -> String {
    let Some(id) = fleet.run_id else { return String::new() };
    let left = fleet.tenants.iter().filter(|r| r.failed() || r.skipped()).count();
    if left == 0 {
        return String::new();
    }
    let program = std::env::args_os()
        .next()
        .and_then(|p| {
            std::path::Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "migrate-tenants".into());
    match fleet.run.command {
        RunKind::Up => format!(
            "\nnext: `{program} up --resume {id}` runs again the {left} tenant(s) that failed or were not reached; \
             `{program} runs show {id}` shows what run {id} did"
        ),
        _ => format!("\nrun {id} in the journal: `{program} runs show {id}` shows what it did"),
    }
}
