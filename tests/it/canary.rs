//! `up --canary`: the canaries go first; the rest of the fleet starts only if every one of
//! them succeeded.

use crate::helpers::*;
use crate::support::TestDb;

#[test]
fn failing_canary_leaves_every_other_tenant_untouched() {
    let db = TestDb::new();
    create_schemas(&db, &["alpha", "bravo", "charlie", "delta"]);
    // bravo's create_users fails: the table is already there.
    db.exec("CREATE TABLE bravo.users (id INT);");
    let before = snapshot(&db);
    let out = mt(
        &db,
        &["--tenants", "alpha,bravo,charlie,delta", "up", "--canary", "bravo"],
    );
    assert_code(&out, 1);
    assert_contains(
        &out.stdout,
        &[
            "bravo: FAILED",
            "alpha: skipped: not started: a canary tenant failed",
            "delta: skipped: not started: a canary tenant failed",
            "stopped early: a canary tenant failed (--canary)",
        ],
    );
    let untouched = |line: &String| !line.contains("bravo");
    let after: Vec<String> = snapshot(&db).into_iter().filter(untouched).collect();
    let before: Vec<String> = before.into_iter().filter(untouched).collect();
    assert_eq!(after, before, "a tenant other than the canary was touched");
    for t in ["alpha", "charlie", "delta"] {
        assert!(!has_history(&db, t), "{t} has a history table");
    }
}

#[test]
fn succeeding_canaries_then_the_rest() {
    let db = TestDb::new();
    create_schemas(&db, &["alpha", "bravo", "charlie"]);
    let out = mt(
        &db,
        &[
            "--format",
            "json",
            "--tenants",
            "alpha,bravo,charlie",
            "up",
            "--canary",
            "2",
        ],
    );
    assert_code(&out, 0);
    for t in ["alpha", "bravo", "charlie"] {
        assert_eq!(history(&db, t), versions(&BASIC), "{t}");
    }
    let refused = mt(&db, &["--tenants", "alpha,bravo", "up", "--canary", "zulu"]);
    assert_code(&refused, 2);
    assert_contains(
        &refused.stderr,
        &["canary tenant(s) zulu are not among the selected tenants"],
    );
}
