//! The library API, without the binary: an application runs the fleet and gets typed
//! reports (and progress through an `Observer`), with nothing printed.

use crate::helpers::*;
use crate::support::TestDb;
use migrate_tenants::config::{DownTarget, TenantSource};
use migrate_tenants::runner::Observer;
use migrate_tenants::{Command, Outcome, RunConfig, RunKind, TenantReport};

#[derive(Default)]
struct Seen(Vec<String>);

impl Observer for Seen {
    fn tenant_done(&mut self, report: &TenantReport) {
        self.0.push(report.schema.to_string());
    }
}

#[test]
fn run_returns_typed_reports_and_streams_progress() {
    let db = TestDb::new();
    create_schemas(&db, &["lib_a", "lib_b"]);
    let mut config = RunConfig::new(&db.url, TenantSource::List(vec!["lib_b".into(), "lib_a".into()]));
    config.concurrency = 2;
    let mut seen = Seen::default();
    let report = migrate_tenants::run(&config, &Command::Up { to: None }, &mut seen).expect("run");
    assert_eq!(report.command, RunKind::Up);
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.summary.applied, 10);
    let names: Vec<&str> = report.tenants.iter().map(|t| t.schema.as_str()).collect();
    assert_eq!(names, ["lib_a", "lib_b"], "reports come back sorted");
    for tenant in &report.tenants {
        assert_eq!(tenant.outcome, Outcome::Changed);
        assert_eq!(tenant.version_after.as_deref(), Some(EMBEDDED[4]));
        assert_eq!(tenant.applied, versions(&EMBEDDED));
    }
    seen.0.sort();
    assert_eq!(seen.0, ["lib_a", "lib_b"], "the observer saw every tenant");

    let down = migrate_tenants::run(&config, &Command::Down(DownTarget::Steps(2)), &mut ()).expect("down");
    assert!(down.tenants.iter().all(|t| t.reverted == [EMBEDDED[4], EMBEDDED[3]]));
    assert_eq!(history(&db, "lib_a"), versions(&EMBEDDED[..3]));
}

#[test]
fn run_errors_carry_their_exit_code() {
    let config = RunConfig::new(
        "postgres://postgres@127.0.0.1:1/none",
        TenantSource::List(vec!["a".into()]),
    );
    let error = migrate_tenants::run(&config, &Command::Status, &mut ()).unwrap_err();
    assert_eq!(error.exit_code(), 3);
    let bad = RunConfig::new(
        "postgres://postgres@127.0.0.1:1/none",
        TenantSource::List(vec!["Bad".into()]),
    );
    assert_eq!(
        migrate_tenants::run(&bad, &Command::Status, &mut ())
            .unwrap_err()
            .exit_code(),
        2
    );
}
