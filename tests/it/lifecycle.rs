//! up / down / redo / status over a small fleet with the basic fixture set, `list`, and
//! history rows this binary does not know.

use crate::helpers::*;
use crate::support::TestDb;

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const TENANT_ARG: &str = "acme,globex,initech";

fn fleet() -> TestDb {
    let db = TestDb::new();
    create_schemas(&db, &TENANTS);
    db
}

#[track_caller]
fn assert_all_at(db: &TestDb, expected: &[&str]) {
    for t in TENANTS {
        assert_eq!(history(db, t), versions(expected), "history of {t}");
    }
}

#[test]
fn up_migrates_every_tenant_and_status_reports_it() {
    let db = fleet();

    let out = mt(&db, &["--tenants", TENANT_ARG, "up"]);
    assert_code(&out, 0);
    for t in TENANTS {
        assert_changed_line(
            &out.stdout,
            &format!("{t}: none -> 2024-01-01-000005_add_users_last_login_at (5 applied"),
        );
        for table in ["users", "projects", "tasks"] {
            assert!(relation_exists(&db, t, table), "{t}.{table} missing");
        }
    }
    assert_contains(
        &out.stdout,
        &["up: 3 tenant(s): 3 changed, 0 unchanged, 0 failed, 0 skipped; 15 migration(s) applied"],
    );
    assert_all_at(&db, &BASIC);
    // Migration 5 ran: the column and the enum value exist.
    assert_eq!(
        db.query(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'globex' \
             AND table_name = 'users' AND column_name = 'last_login_at'"
        ),
        "1"
    );
    assert_eq!(db.query("SELECT 'guest'::initech.user_role::text"), "guest");

    let out = mt(&db, &["--tenants", TENANT_ARG, "status"]);
    assert_code(&out, 0);
    for t in TENANTS {
        assert_eq!(
            line(&out.stdout, &format!("{t}: ")),
            format!("{t}: 2024-01-01-000005_add_users_last_login_at (5 applied, 0 pending)")
        );
    }
    // The first line names the set and the database; a read-only summary counts states.
    let first = out.stdout.lines().next().unwrap_or_default();
    assert_contains(
        first,
        &[
            &format!("migrations: 5 from {BASIC_SET} (newest {})", BASIC_DIRS[4]),
            "database: postgres@127.0.0.1:",
            &format!("/{}", db.name),
        ],
    );
    assert_contains(
        &out.stdout,
        &["status: 3 tenant(s): 3 up to date, 0 with pending migrations, 0 failed, 0 skipped in"],
    );
    assert!(!out.stdout.contains("applied, 0 reverted"), "{}", out.stdout);

    // A second `up` changes nothing.
    let before = snapshot(&db);
    let out = mt(&db, &["--tenants", TENANT_ARG, "up"]);
    assert_code(&out, 0);
    for t in TENANTS {
        assert_eq!(
            line(&out.stdout, &format!("{t}: ")),
            format!("{t}: up to date at 2024-01-01-000005_add_users_last_login_at")
        );
    }
    assert_contains(&out.stdout, &["0 changed, 3 unchanged"]);
    assert_eq!(snapshot(&db), before);
}

#[test]
fn status_before_any_migration_shows_everything_pending() {
    let db = fleet();
    let before = snapshot(&db);
    let out = mt(&db, &["--tenants", TENANT_ARG, "status"]);
    assert_code(&out, 0);
    for t in TENANTS {
        assert_eq!(
            line(&out.stdout, &format!("{t}: ")),
            format!("{t}: none (0 applied, 5 pending)")
        );
    }
    // status is read-only: not even the history table is created.
    assert_eq!(snapshot(&db), before);
}

#[test]
fn history_table_matches_diesels_ddl() {
    let db = fleet();
    assert_code(&mt(&db, &["--tenants", TENANT_ARG, "up"]), 0);
    for t in TENANTS {
        let columns = rows(&db.query(&format!(
            "SELECT column_name, data_type, coalesce(character_maximum_length::text, ''), \
                    is_nullable, coalesce(column_default, '') \
             FROM information_schema.columns \
             WHERE table_schema = '{t}' AND table_name = '__diesel_schema_migrations' \
             ORDER BY ordinal_position"
        )));
        assert_eq!(
            columns,
            [
                "version|character varying|50|NO|",
                "run_on|timestamp without time zone||NO|CURRENT_TIMESTAMP",
            ],
            "columns of {t}.__diesel_schema_migrations"
        );
        let pk = db.query(&format!(
            "SELECT string_agg(a.attname, ',') FROM pg_constraint c \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) \
             WHERE c.conrelid = '\"{t}\".__diesel_schema_migrations'::regclass AND c.contype = 'p'"
        ));
        assert_eq!(pk, "version", "primary key of {t}.__diesel_schema_migrations");
    }
}

#[test]
fn down_by_steps_to_version_and_all() {
    let db = fleet();
    assert_code(&mt(&db, &["--tenants", TENANT_ARG, "up"]), 0);

    let out = mt(&db, &["--tenants", TENANT_ARG, "down", "--steps", "2", "--yes"]);
    assert_code(&out, 0);
    for t in TENANTS {
        assert_changed_line(
            &out.stdout,
            &format!("{t}: 2024-01-01-000005_add_users_last_login_at -> 2024-01-01-000003_create_projects (2 reverted"),
        );
        assert!(!relation_exists(&db, t, "tasks"), "{t}.tasks still exists");
        assert!(relation_exists(&db, t, "projects"));
    }
    assert_all_at(&db, &BASIC[..3]);
    assert_eq!(
        db.query(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'acme' \
             AND table_name = 'users' AND column_name = 'last_login_at'"
        ),
        "0"
    );

    // Plain `down` reverts exactly one.
    let out = mt(&db, &["--tenants", TENANT_ARG, "down", "--yes"]);
    assert_code(&out, 0);
    for t in TENANTS {
        assert_changed_line(
            &out.stdout,
            &format!("{t}: 2024-01-01-000003_create_projects -> 2024-01-01-000002_create_users (1 reverted"),
        );
    }
    assert_all_at(&db, &BASIC[..2]);

    // Back up, then `down --to` reverts everything newer than the version (either spelling).
    assert_code(&mt(&db, &["--tenants", TENANT_ARG, "up"]), 0);
    assert_all_at(&db, &BASIC);
    let out = mt(
        &db,
        &["--tenants", TENANT_ARG, "down", "--to", "2024-01-01-000001", "--yes"],
    );
    assert_code(&out, 0);
    for t in TENANTS {
        assert_changed_line(
            &out.stdout,
            &format!(
                "{t}: 2024-01-01-000005_add_users_last_login_at -> 2024-01-01-000001_create_set_updated_at (4 reverted"
            ),
        );
        assert!(!relation_exists(&db, t, "users"));
    }
    assert_all_at(&db, &BASIC[..1]);

    // Nothing newer than the target: nothing to do.
    let out = mt(
        &db,
        &["--tenants", TENANT_ARG, "down", "--to", "20240101000001", "--yes"],
    );
    assert_code(&out, 0);
    assert_all_at(&db, &BASIC[..1]);

    // `down --all` leaves only the (empty) history table.
    assert_code(&mt(&db, &["--tenants", TENANT_ARG, "up"]), 0);
    let out = mt(&db, &["--tenants", TENANT_ARG, "down", "--all", "--yes"]);
    assert_code(&out, 0);
    for t in TENANTS {
        assert_changed_line(
            &out.stdout,
            &format!("{t}: 2024-01-01-000005_add_users_last_login_at -> none (5 reverted"),
        );
        assert_eq!(tables_in(&db, t), ["__diesel_schema_migrations"]);
        assert_eq!(
            db.query(&format!(
                "SELECT (SELECT count(*) FROM pg_proc WHERE pronamespace = '{t}'::regnamespace) \
                 + (SELECT count(*) FROM pg_type WHERE typnamespace = '{t}'::regnamespace \
                    AND typname NOT LIKE '%__diesel_schema_migrations')"
            )),
            "0",
            "{t} still has functions or types"
        );
    }
    assert_all_at(&db, &[]);

    let out = mt(&db, &["--tenants", TENANT_ARG, "status"]);
    assert_code(&out, 0);
    assert_eq!(line(&out.stdout, "acme: "), "acme: none (0 applied, 5 pending)");
}

#[test]
fn up_to_stops_at_the_version() {
    let db = fleet();
    let out = mt(&db, &["--tenants", TENANT_ARG, "up", "--to", "2024-01-01-000002"]);
    assert_code(&out, 0);
    for t in TENANTS {
        assert_changed_line(
            &out.stdout,
            &format!("{t}: none -> 2024-01-01-000002_create_users (2 applied"),
        );
        assert!(relation_exists(&db, t, "users"));
        assert!(!relation_exists(&db, t, "projects"));
    }
    assert_all_at(&db, &BASIC[..2]);

    let out = mt(&db, &["--tenants", TENANT_ARG, "status"]);
    assert_eq!(
        line(&out.stdout, "globex: "),
        "globex: 2024-01-01-000002_create_users (2 applied, 3 pending)"
    );

    let out = mt(&db, &["--tenants", TENANT_ARG, "up", "--to", "20240101000004"]);
    assert_code(&out, 0);
    assert_changed_line(
        &out.stdout,
        "initech: 2024-01-01-000002_create_users -> 2024-01-01-000004_create_tasks (2 applied",
    );
    assert_all_at(&db, &BASIC[..4]);

    // An unknown target is a usage error, before anything changes.
    let before = snapshot(&db);
    let out = mt(&db, &["--tenants", TENANT_ARG, "up", "--to", "20991231000000"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["20991231000000"]);
    assert_eq!(snapshot(&db), before);
}

#[test]
fn redo_reverts_and_reapplies_the_newest() {
    let db = fleet();
    assert_code(&mt(&db, &["--tenants", TENANT_ARG, "up", "--to", "20240101000003"]), 0);
    for t in TENANTS {
        db.exec(&format!(
            "INSERT INTO \"{t}\".users (email, name) VALUES ('a@example.com', 'A');
             INSERT INTO \"{t}\".projects (owner_id, name) SELECT id, 'p' FROM \"{t}\".users;
             UPDATE \"{t}\".__diesel_schema_migrations SET run_on = '2000-01-01' \
               WHERE version = '20240101000003';"
        ));
    }

    let out = mt(&db, &["--tenants", TENANT_ARG, "redo", "--yes"]);
    assert_code(&out, 0);
    for t in TENANTS {
        assert_changed_line(
            &out.stdout,
            &format!(
                "{t}: 2024-01-01-000003_create_projects -> 2024-01-01-000003_create_projects (1 reverted, 1 applied"
            ),
        );
        // projects was dropped and created again (its row is gone); users was not touched.
        assert_eq!(db.query(&format!("SELECT count(*) FROM \"{t}\".projects")), "0");
        assert_eq!(db.query(&format!("SELECT count(*) FROM \"{t}\".users")), "1");
        // The history row was written again.
        assert_eq!(
            db.query(&format!(
                "SELECT run_on > '2000-01-02' FROM \"{t}\".__diesel_schema_migrations \
                 WHERE version = '20240101000003'"
            )),
            "t"
        );
    }
    assert_all_at(&db, &BASIC[..3]);

    let out = mt(&db, &["--tenants", TENANT_ARG, "redo", "--steps", "2", "--yes"]);
    assert_code(&out, 0);
    assert_changed_line(
        &out.stdout,
        "acme: 2024-01-01-000003_create_projects -> 2024-01-01-000003_create_projects (2 reverted, 2 applied",
    );
    assert_all_at(&db, &BASIC[..3]);
    assert_eq!(db.query("SELECT count(*) FROM acme.users"), "0");
}

#[test]
fn list_shows_the_set_and_where_it_comes_from() {
    let out = mt_bare(&["list"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &[&format!("5 migration(s) from {BASIC_SET}")]);
    for (v, dir) in BASIC.iter().zip(BASIC_DIRS) {
        assert_eq!(line(&out.stdout, v), format!("{v}  {dir}  [reversible]"));
    }
}

#[test]
fn list_marks_irreversible_empty_down_and_non_transactional() {
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_reversible",
        "CREATE TABLE a (id int);",
        Some("DROP TABLE a;"),
    )
    .add("2024-01-01-000002_irreversible", "CREATE TABLE b (id int);", None)
    .add(
        "2024-01-01-000003_empty_down",
        "CREATE TABLE c (id int);",
        Some("-- nothing to undo\n"),
    )
    .add(
        "2024-01-01-000004_concurrent_index",
        "CREATE INDEX CONCURRENTLY a_id_idx ON a (id);",
        Some("DROP INDEX CONCURRENTLY a_id_idx;"),
    )
    .file(
        "2024-01-01-000004_concurrent_index/metadata.toml",
        "run_in_transaction = false\n",
    );

    let out = mt_bare(&["list", "--migrations-dir", dir.path_str()]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &[&format!("4 migration(s) from {}", dir.path_str())]);
    let l = |v: &str| line(&out.stdout, v).to_string();
    assert_eq!(
        l("20240101000001"),
        "20240101000001  2024-01-01-000001_reversible  [reversible]"
    );
    assert_eq!(
        l("20240101000002"),
        "20240101000002  2024-01-01-000002_irreversible  [no down.sql (irreversible)]"
    );
    assert_eq!(
        l("20240101000003"),
        "20240101000003  2024-01-01-000003_empty_down  [empty down.sql (reverts as a no-op)]"
    );
    assert_eq!(
        l("20240101000004"),
        "20240101000004  2024-01-01-000004_concurrent_index  [reversible, runs outside a transaction]"
    );

    let out = mt_bare(&["list", "--format", "json", "--migrations-dir", dir.path_str()]);
    assert_code(&out, 0);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("list --format json");
    let summary: Vec<(String, String, bool)> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|m| {
            (
                m["version"].as_str().unwrap().to_string(),
                m["down"].as_str().unwrap().to_string(),
                m["run_in_transaction"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("20240101000001".to_string(), "sql".to_string(), true),
            ("20240101000002".to_string(), "missing".to_string(), true),
            ("20240101000003".to_string(), "empty".to_string(), true),
            ("20240101000004".to_string(), "sql".to_string(), false),
        ]
    );
}

#[test]
fn unknown_applied_version_is_reported_and_blocks_down() {
    let db = fleet();
    assert_code(&mt(&db, &["--tenants", TENANT_ARG, "up"]), 0);
    db.exec("INSERT INTO acme.__diesel_schema_migrations (version) VALUES ('20991231000000')");

    let out = mt(&db, &["--tenants", TENANT_ARG, "status"]);
    assert_code(&out, 0);
    let acme = line(&out.stdout, "acme: ");
    assert_contains(
        acme,
        &["6 applied", "0 pending", "unknown applied versions: 20991231000000"],
    );
    assert_eq!(
        line(&out.stdout, "globex: "),
        "globex: 2024-01-01-000005_add_users_last_login_at (5 applied, 0 pending)"
    );

    // acme's newest version differs from the others': one step means different things.
    let out = mt(&db, &["--tenants", TENANT_ARG, "down"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["different versions", "20991231000000"]);
    let out = mt(&db, &["--tenants", TENANT_ARG, "down", "--yes"]);
    assert_code(&out, 1);
    let acme = line(&out.stdout, "acme: ");
    assert_contains(acme, &["FAILED", "20991231000000"]);
    let summary = out
        .stdout
        .split("failed tenants:")
        .nth(1)
        .expect("a failed-tenants summary");
    assert_contains(summary, &["acme", "20991231000000"]);
    // acme is untouched; the others were reverted.
    let mut expected = versions(&BASIC);
    expected.push("20991231000000".into());
    assert_eq!(history(&db, "acme"), expected);
    assert!(relation_exists(&db, "acme", "tasks"));
    for t in ["globex", "initech"] {
        assert_eq!(history(&db, t), versions(&BASIC[..4]));
    }
}
