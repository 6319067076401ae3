/*!
`runs` and `runs show ID`: the run journal, read back for people (a table) and scripts (JSON).
*/

use super::flags::Format;
use super::output::outln;
use crate::{RunDetail, RunRecord};

/// `runs`: one line per run, newest first.
pub fn list(format: Format, runs: &[RunRecord]) {
    match format {
        Format::Json => return outln!("{}", serde_json::to_string_pretty(runs).unwrap_or_default()),
        Format::JsonLines => {
            for run in runs {
                outln!("{}", serde_json::to_string(run).unwrap_or_default());
            }
            return;
        }
        Format::Human => {}
    }
    if runs.is_empty() {
        outln!("no runs in the journal yet");
        return;
    }
    outln!(
        "{:>6}  {:<20}  {:<24}  {:<14}  {:>7} {:>6} {:>7}  arguments",
        "id",
        "started (UTC)",
        "who",
        "command",
        "ok",
        "failed",
        "skipped"
    );
    for r in runs {
        outln!(
            "{:>6}  {:<20}  {:<24}  {:<14}  {:>7} {:>6} {:>7}  {}{}",
            r.id,
            r.started_at,
            format!("{}@{}", r.db_user, r.host),
            r.command,
            r.ok,
            r.failed,
            r.skipped,
            r.arguments,
            state(r)
        );
    }
}

/// `runs show ID`: the run, its tenants, its steps.
pub fn show(format: Format, detail: &RunDetail) {
    match format {
        Format::Json => return outln!("{}", serde_json::to_string_pretty(detail).unwrap_or_default()),
        Format::JsonLines => return outln!("{}", serde_json::to_string(detail).unwrap_or_default()),
        Format::Human => {}
    }
    let r = &detail.run;
    outln!("run {}: {} {}{}", r.id, r.command, r.arguments, state(r));
    outln!(
        "  started {} by {}@{} (pid {}), migrate-tenants {}; finished {}",
        r.started_at,
        r.db_user,
        r.host,
        r.pid,
        r.tool_version,
        r.finished_at
            .as_deref()
            .unwrap_or("never (running, or the runner died)")
    );
    outln!("  migrations: {}", r.source);
    outln!(
        "  tenants: {} ok, {} failed, {} skipped or not reached",
        r.ok,
        r.failed,
        r.skipped
    );
    for t in &detail.tenants {
        let versions = match (&t.version_before, &t.version_after) {
            (b, a) if b != a => format!(" {} -> {}", opt(b), opt(a)),
            (_, a) => format!(" at {}", opt(a)),
        };
        let versions = if t.outcome == "pending" {
            String::new()
        } else {
            versions
        };
        let why = t.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        outln!("  {}: {}{versions}{why}", t.tenant, t.outcome);
        for s in detail.steps.iter().filter(|s| s.tenant == t.tenant) {
            let error = s.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
            let sqlstate = s.sqlstate.as_deref().map(|c| format!(" [{c}]")).unwrap_or_default();
            let took = s.duration_ms.map(|ms| format!(" ({ms} ms)")).unwrap_or_default();
            outln!("      {} {} {}{took}{sqlstate}{error}", s.direction, s.name, s.status);
        }
    }
    if r.outcome.as_deref() != Some("succeeded") && r.command == "up" && (r.failed > 0 || r.skipped > 0) {
        outln!(
            "next: `up --resume {}` runs again the tenants that failed or were not reached",
            r.id
        );
    }
}

fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("none")
}

fn state(r: &RunRecord) -> String {
    match (&r.outcome, &r.finished_at) {
        (Some(outcome), _) => format!("  [{outcome}]"),
        (None, _) => "  [not finished: running, or the runner died]".into(),
    }
}
