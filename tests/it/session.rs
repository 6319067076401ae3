//! Each tenant starts on a clean session: whatever a migration changed in its session
//! (settings, role, temporary tables) never reaches the next tenant on the same pooled
//! connection; and statements wait at most --lock-timeout for a table lock.

use crate::helpers::*;
use crate::support::TestDb;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn session_state_does_not_leak_to_the_next_tenant() {
    let db = TestDb::new();
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_observe_and_pollute",
        "CREATE TABLE seen (marker text, usr text, srr text, temp_exists boolean);\n\
         INSERT INTO seen SELECT current_setting('mt.marker', true), current_user, \
           current_setting('session_replication_role'), to_regclass('pg_temp.scratch') IS NOT NULL;\n\
         SELECT set_config('mt.marker', 'left by ' || current_schema(), false);\n\
         SET session_replication_role = replica;\n\
         CREATE TEMP TABLE scratch (id int);\n",
        Some("DROP TABLE seen;"),
    );
    create_schemas(&db, &["s_a", "s_b", "s_c"]);
    let out = mt_dir(&db, &dir, &["--tenants", "s_a,s_b,s_c", "--concurrency", "1", "up"]);
    assert_code(&out, 0);
    for t in ["s_a", "s_b", "s_c"] {
        assert_eq!(
            db.query(&format!(
                "SELECT coalesce(marker, '') || '|' || usr || '|' || srr || '|' || temp_exists FROM {t}.seen"
            )),
            "|postgres|origin|false",
            "{t} saw another tenant's session state"
        );
    }
}

#[test]
fn set_role_in_a_migration_does_not_leak() {
    let db = TestDb::new();
    db.exec("DO $$ BEGIN CREATE ROLE mt_low NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;");
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_role",
        "CREATE TABLE who (usr text); INSERT INTO who SELECT current_user;\n\
         GRANT USAGE, CREATE ON SCHEMA public TO mt_low;\n\
         SET ROLE mt_low;\n",
        Some("DROP TABLE who;"),
    );
    create_schemas(&db, &["r_a", "r_b"]);
    // mt_low may write the history row that follows the SET ROLE in r_a.
    db.exec("GRANT USAGE, CREATE ON SCHEMA r_a, r_b TO mt_low; ALTER DEFAULT PRIVILEGES IN SCHEMA r_a, r_b GRANT ALL ON TABLES TO mt_low;");
    let out = mt_dir(&db, &dir, &["--tenants", "r_a,r_b", "--concurrency", "1", "up"]);
    assert_code(&out, 0);
    assert_eq!(db.query("SELECT usr FROM r_b.who"), "postgres");
}

#[test]
fn lock_timeout_stops_a_migration_waiting_for_a_busy_table() {
    let db = TestDb::new();
    create_schemas(&db, &["busy"]);
    let dir = MigDir::new();
    dir.add("2024-01-01-000001_t", "CREATE TABLE t (id int);", Some("DROP TABLE t;"))
        .add(
            "2024-01-01-000002_alter",
            "ALTER TABLE t ADD COLUMN x int;",
            Some("ALTER TABLE t DROP COLUMN x;"),
        );
    assert_code(
        &mt_dir(&db, &dir, &["--tenants", "busy", "up", "--to", "2024-01-01-000001"]),
        0,
    );
    // Another session holds a lock on busy.t for a while.
    let mut holder = Command::new("psql")
        .args([
            "-X",
            "-q",
            &db.url,
            "-c",
            "BEGIN; LOCK TABLE busy.t IN ACCESS SHARE MODE; SELECT pg_sleep(8); COMMIT;",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    let deadline = Instant::now() + Duration::from_secs(5);
    while db.query(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 't' AND l.granted",
    ) == "0"
    {
        assert!(Instant::now() < deadline, "the lock holder never got its lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let out = mt_dir(&db, &dir, &["--tenants", "busy", "--lock-timeout", "300", "up"]);
    let elapsed = started.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_code(&out, 1);
    assert!(
        elapsed < Duration::from_secs(5),
        "waited {elapsed:?} despite --lock-timeout"
    );
    assert_contains(&out.stdout, &["2024-01-01-000002_alter", "lock timeout", "rolled back"]);
    assert_eq!(history(&db, "busy"), versions(&["20240101000001"]));
}

#[test]
fn every_tenant_runs_with_the_same_time_zone_and_encoding() {
    let db = TestDb::new();
    db.exec(&format!(
        "ALTER DATABASE \"{}\" SET timezone = 'America/New_York';",
        db.name
    ));
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_settings",
        "CREATE TABLE settings AS SELECT current_setting('TimeZone') AS tz, current_setting('client_encoding') AS enc;",
        Some("DROP TABLE settings;"),
    );
    create_schemas(&db, &["z_a", "z_b", "z_c"]);
    assert_code(
        &mt_dir(&db, &dir, &["--tenants", "z_a,z_b,z_c", "--concurrency", "1", "up"]),
        0,
    );
    for t in ["z_a", "z_b", "z_c"] {
        assert_eq!(
            db.query(&format!("SELECT tz || '|' || enc FROM {t}.settings")),
            "UTC|UTF8",
            "{t}"
        );
    }
}

#[test]
fn prepared_statements_and_advisory_locks_of_a_migration_do_not_leak() {
    let db = TestDb::new();
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_prepare",
        "CREATE TABLE nums (n int);\nPREPARE add_num(int) AS INSERT INTO nums VALUES ($1);\nEXECUTE add_num(1);\n\
         SELECT pg_advisory_lock(4242);",
        Some("DROP TABLE nums;"),
    );
    create_schemas(&db, &["p_a", "p_b", "p_c"]);
    let out = mt_dir(&db, &dir, &["--tenants", "p_a,p_b,p_c", "--concurrency", "1", "up"]);
    assert_code(&out, 0);
    for t in ["p_a", "p_b", "p_c"] {
        assert_eq!(db.query(&format!("SELECT count(*) FROM {t}.nums")), "1", "{t}");
    }
    // Nobody still holds the migration's own advisory lock.
    assert_eq!(db.query("SELECT pg_try_advisory_lock(4242)"), "t");
}
