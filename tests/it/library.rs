//! The library API, without the binary: this test crate is an application that embeds sets
//! with `embed_migrations!`, runs them through the `Runner` builder (on a URL or on its own
//! pool), gets typed reports and errors, and hands the same constant to diesel's harness.

use crate::helpers::*;
use crate::support::TestDb;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::PgConnection;
use migrate_tenants::{
    CommandError, DownTarget, EmbeddedMigrations, Error, FailureKind, MissingPolicy, Observer, Outcome, RunInfo,
    RunKind, Runner, Task, TenantReport, TenantSource,
};

/// The tests' basic set, compiled into this test crate.
const BASIC_EMBEDDED: EmbeddedMigrations = migrate_tenants::embed_migrations!("tests/fixtures/basic");

/// The test application's set (a different one, with a shared set beside it).
const APP: EmbeddedMigrations = migrate_tenants::embed_migrations!("tests/app/migrations");

#[derive(Default)]
struct Seen {
    started: Vec<RunInfo>,
    tenants: Vec<String>,
}

impl Observer for Seen {
    fn started(&mut self, run: &RunInfo) {
        self.started.push(run.clone());
    }
    fn tenant_done(&mut self, report: &TenantReport) {
        self.tenants.push(report.schema.to_string());
    }
}

#[test]
fn runner_applies_the_embedded_set_and_streams_progress() {
    let db = TestDb::new();
    create_schemas(&db, &["lib_a", "lib_b"]);
    let runner = Runner::new(&BASIC_EMBEDDED)
        .database_url(&db.url_with_password("s3cr3t-lib"))
        .tenants(TenantSource::list(["lib_b", "lib_a"]))
        .concurrency(2);
    let mut seen = Seen::default();
    let report = runner.run(&Task::Up { to: None }, &mut seen).expect("run");
    assert_eq!(report.run.command, RunKind::Up);
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.summary.applied, 10);
    let names: Vec<&str> = report.tenants.iter().map(|t| t.schema.as_str()).collect();
    assert_eq!(names, ["lib_a", "lib_b"], "reports come back sorted");
    for tenant in &report.tenants {
        assert_eq!(tenant.outcome, Outcome::Changed);
        assert_eq!(tenant.version_after.as_deref(), Some(BASIC[4]));
        assert_eq!(tenant.applied, versions(&BASIC));
    }
    seen.tenants.sort();
    assert_eq!(seen.tenants, ["lib_a", "lib_b"], "the observer saw every tenant");
    assert_eq!(seen.started.len(), 1);
    let run = &seen.started[0];
    assert_eq!(run.source.kind, "embedded");
    assert_eq!(run.source.migrations, 5);
    assert_eq!(run.source.newest.as_deref(), Some(BASIC_DIRS[4]));
    assert!(
        run.source.origin.contains("tests/fixtures/basic"),
        "{}",
        run.source.origin
    );
    assert!(
        run.source.origin.contains(env!("CARGO_PKG_NAME")),
        "{}",
        run.source.origin
    );
    assert_eq!(run.target.database, db.name);
    assert_eq!(run.target.user, "postgres");
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("s3cr3t-lib"), "{json}");
    assert!(json.contains("\"target\"") && json.contains("\"source\""), "{json}");

    let down = runner.down(DownTarget::Steps(2)).expect("down");
    assert!(down.tenants.iter().all(|t| t.reverted == [BASIC[4], BASIC[3]]));
    assert_eq!(history(&db, "lib_a"), versions(&BASIC[..3]));
}

#[test]
fn an_application_set_migrates_with_its_own_migrations_only() {
    let db = TestDb::new();
    let runner = Runner::new(&APP)
        .database_url(&db.url)
        .tenants(TenantSource::list(["shop_1", "shop_2"]))
        .missing(MissingPolicy::Create);
    let report = runner.up().expect("up");
    assert_eq!(report.exit_code(), 0, "{report:?}");
    let shared = report.shared.as_ref().expect("the shared set beside it was embedded");
    assert_eq!(shared.applied, ["20250101000000"]);
    for tenant in ["shop_1", "shop_2"] {
        assert_eq!(tables_in(&db, tenant), ["__diesel_schema_migrations", "invoices"]);
        assert_eq!(
            history(&db, tenant),
            ["20250201090000", "20250202090000", "202502030900indexinvoicesdue"]
        );
    }
    assert_eq!(tables_in(&db, "public"), ["__diesel_schema_migrations", "app_plans"]);
    let foreign = db.query("SELECT count(*) FROM pg_class WHERE relname IN ('users', 'projects', 'tasks')");
    assert_eq!(foreign, "0", "nothing of another set was applied");
}

#[test]
fn runner_works_on_the_applications_pool_and_leaves_its_connections_clean() {
    let db = TestDb::new();
    create_schemas(&db, &["pool_a", "pool_b", "pool_c"]);
    let pool = Pool::builder()
        .max_size(3)
        .build(ConnectionManager::<PgConnection>::new(&db.url))
        .expect("pool");
    let report = Runner::new(&BASIC_EMBEDDED)
        .pool(pool.clone())
        .tenants(TenantSource::Pattern("pool\\_%".into()))
        .concurrency(8)
        .up()
        .expect("up");
    assert_eq!(report.summary.changed, 3, "{report:?}");
    assert!(report.tenants.iter().all(|t| t.applied == versions(&BASIC)));
    // Every connection the pool hands out again has the default search_path.
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Path {
        #[diesel(sql_type = diesel::sql_types::Text)]
        path: String,
    }
    for _ in 0..3 {
        let mut conn = pool.get().unwrap();
        let p: Path = diesel::sql_query("SELECT current_setting('search_path') AS path")
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(p.path, "\"$user\", public");
    }
    let one = Pool::builder()
        .max_size(1)
        .build(ConnectionManager::<PgConnection>::new(&db.url))
        .unwrap();
    let error = Runner::new(&BASIC_EMBEDDED)
        .pool(one)
        .tenants(TenantSource::list(["pool_a"]))
        .status()
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error}");
}

#[test]
fn the_embedded_constant_is_also_a_diesel_migration_source() {
    use diesel::migration::MigrationSource;
    use diesel::pg::Pg;
    use diesel_migrations::MigrationHarness;
    let db = TestDb::new();
    let mut conn = <PgConnection as diesel::Connection>::establish(&db.url).unwrap();
    let names: Vec<String> = MigrationSource::<Pg>::migrations(&BASIC_EMBEDDED)
        .unwrap()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    assert_eq!(names, BASIC_DIRS);
    let applied = conn.run_pending_migrations(BASIC_EMBEDDED).expect("diesel runs them");
    assert_eq!(applied.len(), 5);
    assert_eq!(history(&db, "public"), versions(&BASIC));
}

#[test]
fn errors_are_typed_and_carry_their_exit_code() {
    let runner = Runner::new(&BASIC_EMBEDDED).database_url("postgres://postgres@127.0.0.1:1/none");
    let error = runner.clone().tenants(TenantSource::list(["a"])).status().unwrap_err();
    assert!(matches!(error, Error::Unreachable(_)), "{error}");
    assert_eq!(error.exit_code(), 3);
    let bad = runner
        .clone()
        .tenants(TenantSource::list(["Bad"]))
        .status()
        .unwrap_err();
    assert!(matches!(bad, Error::Discovery(_)), "{bad}");
    assert_eq!(bad.exit_code(), 2);
    let unknown = runner
        .clone()
        .tenants(TenantSource::list(["a"]))
        .run(
            &Task::Up {
                to: Some("1999".into()),
            },
            &mut (),
        )
        .unwrap_err();
    assert!(
        matches!(unknown, Error::Command(CommandError::UnknownVersion { .. })),
        "{unknown}"
    );
    let none = runner.status().unwrap_err();
    assert!(matches!(none, Error::Config(_)), "{none}");
    for e in [error, bad, unknown, none] {
        assert!(!e.to_string().contains("--"), "no CLI flag in a library message: {e}");
    }
}

#[test]
fn a_missing_schema_is_a_typed_failure_without_cli_hints() {
    let db = TestDb::new();
    let report = Runner::new(&BASIC_EMBEDDED)
        .database_url(&db.url)
        .tenants(TenantSource::list(["ghost"]))
        .up()
        .unwrap();
    match &report.tenants[0].outcome {
        Outcome::Failed { failure, error, .. } => {
            assert_eq!(*failure, FailureKind::MissingSchema);
            assert!(!error.contains("--"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

/// Backend pids of every connection the pool hands out (all checked out at once).
fn pool_pids(pool: &Pool<ConnectionManager<PgConnection>>) -> Vec<i32> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let mut conns: Vec<_> = (0..pool.max_size()).map(|_| pool.get().unwrap()).collect();
    let mut pids: Vec<i32> = conns
        .iter_mut()
        .map(|c| {
            diesel::sql_query("SELECT pg_backend_pid() AS pid")
                .get_result::<Pid>(c)
                .unwrap()
                .pid
        })
        .collect();
    pids.sort();
    pids
}

#[test]
fn a_connection_the_runner_could_not_clean_is_never_handed_back_to_the_application() {
    let db = TestDb::new();
    create_schemas(&db, &["lk"]);
    let dir = MigDir::new();
    // The migration drops every advisory lock of its session, the runner's among them: the
    // release check fails, and that connection must be closed, not returned.
    dir.add(
        "0001_unlock",
        "CREATE TABLE t (id int);\nSELECT pg_advisory_unlock_all();",
        None,
    );
    let pool = Pool::builder()
        .max_size(2)
        .build(ConnectionManager::<PgConnection>::new(&db.url))
        .unwrap();
    let before = pool_pids(&pool);
    let report = Runner::new(migrate_tenants::MigrationSet::from_dir(dir.path()).unwrap())
        .pool(pool.clone())
        .tenants(TenantSource::list(["lk"]))
        .up()
        .unwrap();
    assert!(report.tenants[0].failed(), "{report:?}");
    let after = pool_pids(&pool);
    let kept = after.iter().filter(|p| before.contains(p)).count();
    assert_eq!(
        kept, 1,
        "the worker's connection was replaced: before {before:?}, after {after:?}"
    );
}

#[test]
fn connections_the_application_holds_are_not_waited_for() {
    let db = TestDb::new();
    create_schemas(&db, &["busy"]);
    let pool = Pool::builder()
        .max_size(2)
        .build(ConnectionManager::<PgConnection>::new(&db.url))
        .unwrap();
    let held = pool.get().unwrap();
    let started = std::time::Instant::now();
    let error = Runner::new(&BASIC_EMBEDDED)
        .pool(pool.clone())
        .tenants(TenantSource::list(["busy"]))
        .up()
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    drop(held);
    assert_eq!(
        Runner::new(&BASIC_EMBEDDED)
            .pool(pool)
            .tenants(TenantSource::list(["busy"]))
            .up()
            .unwrap()
            .exit_code(),
        0
    );
}
