/*!
Confirmations: a fleet-wide `down` or `redo`, and every `tenant drop`, show the plan and ask
on a terminal; without a terminal on stdin they need `--yes` (else exit 2, nothing changed).

"Fleet-wide" means anything but exactly one explicitly named tenant (`--tenants acme`, or a
single `--tenant acme` selection): one named tenant is what the operator typed, while a list,
a file, a query, a pattern or `--all-tenants` can reach more tenants than expected.
*/

use super::flags::{CliCommand, Global};
use super::output::errln;
use crate::report::exit;
use crate::{FleetReport, Runner, Task};
use std::io::{BufRead, IsTerminal};

/// Why a command needs confirmation (`None`: it does not).
pub fn needed(global: &Global, command: &CliCommand) -> Option<&'static str> {
    let (yes, what) = match command {
        CliCommand::Down { yes, .. } => (*yes, "revert migrations on"),
        CliCommand::Redo { yes, .. } => (*yes, "revert and re-apply migrations on"),
        _ => return None,
    };
    let one_named = global.tenants.tenants.len() == 1 || global.tenants.only.len() == 1;
    (!yes && !command.plan().planning() && !one_named).then_some(what)
}

/// Shows the plan of `task` and asks; `Ok` to go on. Without a terminal, refuses (exit 2).
/// The plan is made first either way, so a command the run would refuse (a revert by steps
/// over tenants at different versions, say) is refused for that reason, with its hint.
pub fn ask(runner: &Runner, task: &Task, what: &str) -> Result<(), (i32, String)> {
    let plan = runner
        .clone()
        .dry_run(true)
        .run(task, &mut ())
        .map_err(super::commands::run_error)?;
    if !std::io::stdin().is_terminal() {
        return Err((
            exit::USAGE,
            format!(
                "{} would {what} more than one tenant and stdin is not a terminal, so it cannot ask: nothing was \
                 changed; add --yes to confirm (--dry-run shows the plan first)",
                task.kind().name()
            ),
        ));
    }
    if plan.summary.changed == 0 && plan.summary.failed == 0 {
        return Ok(()); // nothing would change: nothing to confirm
    }
    show(&plan);
    prompt(&format!("{} {} tenant(s)?", capitalized(what), plan.summary.changed))
}

/// The plan on stderr (stdout stays for the run's own output).
fn show(plan: &FleetReport) {
    for report in plan.shared.iter().chain(&plan.tenants) {
        for line in super::plan::tenant_lines(report, plan.run.command) {
            errln!("{line}");
        }
    }
    errln!("{}", super::plan::summary(plan));
}

/// Asks on stderr, reads one line of stdin: `y` or `yes` goes on.
pub fn prompt(question: &str) -> Result<(), (i32, String)> {
    errln!("{question} Type yes to go on: ");
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err((exit::USAGE, "not confirmed: nothing was changed".into())),
    }
}

/// `tenant drop` without `--yes`: on a terminal, the plan and a question; else refused.
pub fn drop(runner: &Runner, task: &Task) -> Result<(), (i32, String)> {
    if !std::io::stdin().is_terminal() {
        return Err((
            exit::USAGE,
            "tenant drop deletes the tenants' schemas and data: add --yes to confirm".into(),
        ));
    }
    let plan = runner
        .clone()
        .dry_run(true)
        .run(task, &mut ())
        .map_err(|e| (e.exit_code(), e.to_string()))?;
    if plan.summary.changed == 0 {
        return Ok(()); // nothing would be dropped: the run reports why
    }
    show(&plan);
    prompt(&format!("Drop {} schema(s) and all their data?", plan.summary.changed))
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}
