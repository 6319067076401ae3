/*!
Rendering a dry run: per tenant, what the real run would do (migrations in order, named,
transactional or not, irreversible ones flagged), and the summary. With `--sql` the SQL goes
to stdout as a psql script and these lines go to stderr.
*/

use super::render::{hint, tenant_line};
use crate::{FleetReport, Outcome, PlannedStep, RunKind, StepAction, TenantPlan, TenantReport};

/// A planned tenant's lines: a header, then one line per step.
pub fn tenant_lines(r: &TenantReport, kind: RunKind) -> Vec<String> {
    let name = &r.schema;
    let Some(plan) = &r.plan else {
        return vec![unplanned_line(r, kind)];
    };
    if plan.drops_schema {
        let at = super::names::of(&r.schema, r.version_before.as_deref());
        return vec![format!("{name}: would drop the schema and all its data (at {at})")];
    }
    if plan.steps.is_empty() {
        return vec![tenant_line(r, kind)];
    }
    let mut lines = vec![header(r, plan)];
    lines.extend(plan.steps.iter().map(step_line));
    lines
}

/// A tenant the catalog settled: nothing to do, or a predicted failure or skip.
fn unplanned_line(r: &TenantReport, kind: RunKind) -> String {
    match &r.outcome {
        Outcome::Failed { failure, error, .. } => {
            format!("{}: would fail: {error}{}", r.schema, hint(*failure, kind))
        }
        _ => tenant_line(r, kind),
    }
}

fn header(r: &TenantReport, plan: &TenantPlan) -> String {
    let (apply, revert) = counts(plan);
    let what = match (apply, revert) {
        (a, 0) => format!("would apply {a}"),
        (0, d) => format!("would revert {d}"),
        (a, d) => format!("would revert {d}, then apply {a}"),
    };
    let before = super::names::of(&r.schema, r.version_before.as_deref());
    let after = super::names::of(&r.schema, r.version_after.as_deref());
    let mut extra = String::new();
    if plan.creates_schema {
        extra.push_str(", creating the schema");
    }
    if plan.atomic {
        extra.push_str(", all in one transaction");
    }
    format!("{}: {what} ({before} -> {after}{extra}):", r.schema)
}

fn counts(plan: &TenantPlan) -> (usize, usize) {
    let apply = plan.steps.iter().filter(|s| s.action == StepAction::Apply).count();
    (apply, plan.steps.len() - apply)
}

fn step_line(s: &PlannedStep) -> String {
    let action = match s.action {
        StepAction::Apply => "apply ",
        StepAction::Revert => "revert",
    };
    let mut notes = Vec::new();
    if !s.transactional {
        notes.push("outside a transaction: not rolled back on failure");
    }
    if s.irreversible {
        notes.push("irreversible: no down.sql");
    }
    if s.empty_down {
        notes.push("empty down.sql: only its history row is removed");
    }
    let notes = match notes.is_empty() {
        true => String::new(),
        false => format!("  [{}]", notes.join("; ")),
    };
    format!("    {action} {}{notes}", s.migration)
}

/// The closing line of a dry run, naming the tenants that would fail.
pub fn summary(fleet: &FleetReport) -> String {
    let s = &fleet.summary;
    let (mut apply, mut revert) = (0, 0);
    for plan in fleet
        .tenants
        .iter()
        .chain(&fleet.shared)
        .filter_map(|r| r.plan.as_ref())
    {
        let (a, d) = counts(plan);
        apply += a;
        revert += d;
    }
    let mut text = format!(
        "{} (dry run, nothing was changed): {} tenant(s): {} would change, {} unchanged, {} would fail, {} skipped; \
         {apply} migration(s) to apply, {revert} to revert",
        fleet.run.command.name(),
        s.tenants,
        s.changed,
        s.unchanged,
        s.failed,
        s.skipped,
    );
    let failed: Vec<&TenantReport> = fleet
        .tenants
        .iter()
        .chain(&fleet.shared)
        .filter(|r| r.failed())
        .collect();
    if !failed.is_empty() {
        text.push_str("\nwould fail:");
        for r in failed {
            text.push_str(&format!("\n  {}", unplanned_line(r, fleet.run.command)));
        }
    }
    text
}

/// The SQL of one tenant, headed by a comment naming it.
pub fn script(r: &TenantReport, shared: bool) -> Option<String> {
    let sql = r.plan.as_ref()?.sql.as_ref()?;
    let what = if shared { "shared schema" } else { "tenant" };
    Some(format!("-- {what} {}\n{sql}", r.schema))
}
