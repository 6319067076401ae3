//! Output for people and scripts: `--format json-lines`, no progress bar when stderr is not
//! a terminal, `completions`.

use crate::helpers::*;
use crate::support::TestDb;

#[test]
fn json_lines_stream_one_object_per_tenant_then_a_summary() {
    let db = TestDb::new();
    create_schemas(&db, &["acme", "globex", "initech"]);
    let out = mt(
        &db,
        &["--format", "json-lines", "--tenants", "acme,globex,initech,ghost", "up"],
    );
    assert_code(&out, 1);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    assert_eq!(lines.len(), 5, "{}", out.stdout);
    let mut tenants: Vec<&str> = lines[..4].iter().map(|l| l["schema"].as_str().unwrap()).collect();
    tenants.sort();
    assert_eq!(tenants, ["acme", "ghost", "globex", "initech"]);
    assert!(lines[..4].iter().all(|l| l["type"] == "tenant"));
    let summary = &lines[4];
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["summary"]["failed"], 1);
    assert_eq!(summary["summary"]["changed"], 3);
    assert!(summary.get("tenants").is_none());

    let error = mt(
        &db,
        &["--format", "json-lines", "--tenants", "acme", "up", "--to", "999"],
    );
    assert_code(&error, 2);
    let line: serde_json::Value = serde_json::from_str(error.stdout.trim()).expect("one error object");
    assert_eq!(line["type"], "error");
}

#[test]
fn no_progress_bar_when_stderr_is_not_a_terminal() {
    let db = TestDb::new();
    create_schemas(&db, &["acme", "globex"]);
    let out = mt(&db, &["--tenants", "acme,globex", "up"]);
    assert_code(&out, 0);
    assert!(
        !out.stderr.contains('\r') && !out.stderr.contains('\u{1b}') && !out.stderr.contains("tenants,"),
        "progress output on stderr: {:?}",
        out.stderr
    );
}

#[test]
fn completions_for_bash_name_the_subcommands() {
    let out = mt_bare(&["completions", "bash"]);
    assert_code(&out, 0);
    assert_contains(
        &out.stdout,
        &["migrate-tenants", "up", "down", "redo", "tenant", "--dry-run"],
    );
    assert_code(&mt_bare(&["completions", "tcsh"]), 2);
}
