//! Confirmations: a fleet-wide `down` or `redo` needs `--yes` when stdin is not a terminal
//! (exit 2, nothing changed); one explicitly named tenant does not; on a terminal the plan is
//! shown and the answer decides.

use crate::helpers::*;
use crate::support::TestDb;
use std::io::Write;
use std::process::Stdio;

fn migrated(names: &[&str]) -> TestDb {
    let db = TestDb::new();
    create_schemas(&db, names);
    assert_code(&mt(&db, &["--tenants", &names.join(","), "up"]), 0);
    db
}

#[test]
fn fleet_wide_down_and_redo_are_refused_without_yes_off_a_terminal() {
    let db = migrated(&["acme", "globex"]);
    let before = snapshot(&db);
    for command in [&["down"][..], &["redo"], &["down", "--all"]] {
        let out = mt(&db, &[&["--tenants", "acme,globex"][..], command].concat());
        assert_code(&out, 2);
        assert_contains(
            &out.stderr,
            &["stdin is not a terminal", "add --yes", "nothing was changed"],
        );
    }
    let query = mt(&db, &["--schema-pattern", "acme", "down"]);
    assert_code(&query, 2);
    let dry = mt(&db, &["--tenants", "acme,globex", "down", "--dry-run"]);
    assert_code(&dry, 0);
    assert_eq!(snapshot(&db), before);

    assert_code(&mt(&db, &["--tenants", "acme", "down"]), 0);
    assert_code(&mt(&db, &["--tenants", "acme,globex", "--tenant", "globex", "down"]), 0);
    assert_code(&mt(&db, &["--tenants", "acme,globex", "redo", "--yes"]), 0);
    assert_eq!(history(&db, "acme"), versions(&BASIC[..4]));
}

/// Runs the binary with a pseudo-terminal as stdin (util-linux `script`), answering `answer`.
fn on_a_terminal(db: &TestDb, args: &str, answer: &str) -> Option<crate::support::Out> {
    which("script")?;
    let bin = env!("CARGO_BIN_EXE_migrate-tenants");
    let line = format!("{bin} --database-url '{}' {args}", db.url);
    let mut script = std::process::Command::new("script");
    for var in [
        "DATABASE_URL",
        "TENANTS",
        "TENANTS_QUERY",
        "TENANT_SCHEMA_PATTERN",
        "RUST_LOG",
    ] {
        script.env_remove(var);
    }
    script
        .env("MIGRATION_DIRECTORY", BASIC_SET)
        .current_dir(std::env::temp_dir())
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut running = script.spawn().ok()?;
    // The question comes after the plan; typed-ahead input waits in the terminal.
    running.stdin.take()?.write_all(format!("{answer}\n").as_bytes()).ok()?;
    let output = running.wait_with_output().ok()?;
    let out = crate::support::Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).replace('\r', ""),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!(
        "$ script {line}\n--- exit code {} ---\n{}{}",
        out.code, out.stdout, out.stderr
    );
    Some(out)
}

fn which(program: &str) -> Option<()> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .any(|d| d.join(program).is_file())
        .then_some(())
}

#[test]
fn on_a_terminal_the_plan_is_shown_and_the_answer_decides() {
    let db = migrated(&["acme", "globex"]);
    let Some(no) = on_a_terminal(&db, "--tenants acme,globex down", "no") else {
        eprintln!("util-linux script is not installed: skipped");
        return;
    };
    assert_contains(
        &no.stdout,
        &[
            "revert 2024-01-01-000005_add_users_last_login_at",
            "Type yes",
            "not confirmed",
        ],
    );
    assert_eq!(history(&db, "acme"), versions(&BASIC));
    let yes = on_a_terminal(&db, "--tenants acme,globex down", "yes").expect("script ran before");
    assert_code(&yes, 0);
    assert_eq!(history(&db, "globex"), versions(&BASIC[..4]));
}
