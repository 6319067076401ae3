//! Each tenant's objects and history live in its own schema only; `public` is never written.

use crate::helpers::*;
use crate::support::TestDb;

#[test]
fn tenants_objects_and_history_stay_in_their_own_schema() {
    let db = TestDb::new();
    create_schemas(&db, &["alpha", "beta"]);

    // Only alpha first: beta is not touched at all.
    let out = mt(&db, &["--tenants", "alpha", "up"]);
    assert_code(&out, 0);
    assert_eq!(history(&db, "alpha"), versions(&BASIC));
    assert!(!has_history(&db, "beta"));
    assert!(tables_in(&db, "beta").is_empty());
    assert_public_empty(&db);

    let out = mt(&db, &["--tenants", "alpha,beta", "up"]);
    assert_code(&out, 0);
    assert_contains(
        &out.stdout,
        &["alpha: up to date at 2024-01-01-000005_add_users_last_login_at"],
    );
    assert_changed_line(
        &out.stdout,
        "beta: none -> 2024-01-01-000005_add_users_last_login_at (5 applied",
    );

    for t in ["alpha", "beta"] {
        assert_eq!(
            tables_in(&db, t),
            ["__diesel_schema_migrations", "projects", "tasks", "users"],
            "tables of {t}"
        );
        assert_eq!(history(&db, t), versions(&BASIC));
        // Types, functions and indexes were created next to the tables.
        assert_eq!(
            db.query(&format!(
                "SELECT count(*) FROM pg_type WHERE typname = 'user_role' \
                 AND typnamespace = '{t}'::regnamespace"
            )),
            "1"
        );
        assert_eq!(
            db.query(&format!(
                "SELECT count(*) FROM pg_proc WHERE proname = 'set_updated_at' \
                 AND pronamespace = '{t}'::regnamespace"
            )),
            "1"
        );
        assert!(relation_exists(&db, t, "tasks_open_by_assignee_idx"));
        // References resolve inside the tenant: FKs point at the tenant's own tables ...
        let fk_targets = rows(&db.query(&format!(
            "SELECT DISTINCT confrelid::regclass::text FROM pg_constraint \
             WHERE contype = 'f' AND connamespace = '{t}'::regnamespace ORDER BY 1"
        )));
        assert_eq!(fk_targets, [format!("{t}.projects"), format!("{t}.users")]);
        // ... the enum column uses the tenant's type, the triggers the tenant's function.
        assert_eq!(
            db.query(&format!(
                "SELECT atttypid::regtype::text FROM pg_attribute \
                 WHERE attrelid = '{t}.users'::regclass AND attname = 'role'"
            )),
            format!("{t}.user_role")
        );
        assert_eq!(
            db.query(&format!(
                "SELECT DISTINCT p.pronamespace::regnamespace::text FROM pg_trigger tg \
                 JOIN pg_proc p ON p.oid = tg.tgfoid JOIN pg_class c ON c.oid = tg.tgrelid \
                 WHERE c.relnamespace = '{t}'::regnamespace AND NOT tg.tgisinternal"
            )),
            t
        );
    }
    assert_public_empty(&db);
    assert_eq!(user_schemas(&db), ["alpha", "beta", "public"]);

    // Reverting one tenant leaves the other alone.
    let out = mt(&db, &["--tenants", "beta", "down", "--all"]);
    assert_code(&out, 0);
    assert_eq!(history(&db, "beta"), Vec::<String>::new());
    assert_eq!(tables_in(&db, "beta"), ["__diesel_schema_migrations"]);
    assert_eq!(history(&db, "alpha"), versions(&BASIC));
    assert_eq!(
        tables_in(&db, "alpha"),
        ["__diesel_schema_migrations", "projects", "tasks", "users"]
    );
    assert_public_empty(&db);
}

#[test]
fn unqualified_names_resolve_to_the_tenant_even_when_public_has_the_same_table() {
    let db = TestDb::new();
    create_schemas(&db, &["alpha", "beta"]);
    // A table of the same name in public must not be what the migration writes to.
    db.exec("CREATE TABLE public.settings (k text PRIMARY KEY, v text)");
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_settings",
        "CREATE TABLE settings (k text PRIMARY KEY, v text);\n\
         INSERT INTO settings VALUES ('tenant', current_schema());",
        Some("DROP TABLE settings;"),
    );
    let out = mt_dir(&db, &dir, &["--tenants", "alpha,beta", "up"]);
    assert_code(&out, 0);
    for t in ["alpha", "beta"] {
        assert_eq!(
            db.query(&format!("SELECT v FROM \"{t}\".settings WHERE k = 'tenant'")),
            t
        );
    }
    assert_eq!(db.query("SELECT count(*) FROM public.settings"), "0");
    assert!(!has_history(&db, "public"));
}
