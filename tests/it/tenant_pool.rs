//! `TenantPool`: tenant-scoped pooled connections for the application, and the schema-version
//! guard.

use crate::helpers::*;
use crate::support::TestDb;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use migrate_tenants::{EmbeddedMigrations, Runner, TenantPool, TenantPoolError, TenantSource};

const BASIC_SET: EmbeddedMigrations = migrate_tenants::embed_migrations!("tests/fixtures/basic");

diesel::table! {
    notes (id) {
        id -> Int4,
        body -> Text,
    }
}

fn pool(db: &TestDb, size: u32) -> Pool<ConnectionManager<PgConnection>> {
    Pool::builder()
        .max_size(size)
        .build(ConnectionManager::<PgConnection>::new(&db.url))
        .expect("pool")
}

fn with_notes(db: &TestDb, tenants: &[&str]) {
    for t in tenants {
        db.exec(&format!(
            "CREATE SCHEMA {t}; CREATE TABLE {t}.notes (id serial PRIMARY KEY, body text NOT NULL);"
        ));
    }
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

fn search_path(conn: &mut PgConnection) -> String {
    diesel::sql_query("SELECT current_setting('search_path') AS value")
        .get_result::<Setting>(conn)
        .unwrap()
        .value
}

#[test]
fn concurrent_requests_for_two_tenants_write_only_into_their_own_tables() {
    for size in [1, 2] {
        let db = TestDb::new();
        with_notes(&db, &["acme", "globex"]);
        let pool = pool(&db, size);
        let tenants = TenantPool::new(pool.clone());
        std::thread::scope(|scope| {
            for tenant in ["acme", "globex"] {
                let tenants = tenants.clone();
                scope.spawn(move || {
                    for i in 0..100 {
                        let mut conn = tenants.get(tenant).expect("a tenant connection");
                        // Unqualified, like an application's table! definitions.
                        diesel::insert_into(notes::table)
                            .values(notes::body.eq(format!("{tenant} {i}")))
                            .execute(&mut *conn)
                            .unwrap();
                        let mine: i64 = notes::table
                            .filter(notes::body.like(format!("{tenant} %")))
                            .count()
                            .get_result(&mut *conn)
                            .unwrap();
                        let all: i64 = notes::table.count().get_result(&mut *conn).unwrap();
                        assert_eq!(mine, all, "{tenant} sees only its own rows");
                    }
                });
            }
        });
        for tenant in ["acme", "globex"] {
            assert_eq!(
                db.query(&format!(
                    "SELECT count(*) FILTER (WHERE body LIKE '{tenant} %') || '/' || count(*) FROM {tenant}.notes"
                )),
                "100/100"
            );
        }
        // Back in the pool, a connection has the database's default search_path.
        let mut plain = pool.get().unwrap();
        assert_eq!(search_path(&mut plain), "\"$user\", public");
    }
}

#[test]
fn transactions_stay_per_tenant_and_the_reset_undoes_what_the_request_set() {
    let db = TestDb::new();
    with_notes(&db, &["acme", "globex"]);
    let pool = pool(&db, 1);
    let tenants = TenantPool::new(pool.clone());
    {
        let mut conn = tenants.get("acme").unwrap();
        assert_eq!(conn.tenant().as_str(), "acme");
        assert_eq!(search_path(&mut conn), "\"acme\", \"public\"");
        let failed: Result<(), diesel::result::Error> = conn.transaction(|c| {
            diesel::insert_into(notes::table)
                .values(notes::body.eq("kept?"))
                .execute(c)?;
            Err(diesel::result::Error::RollbackTransaction)
        });
        assert!(failed.is_err());
        conn.transaction(|c| {
            diesel::insert_into(notes::table)
                .values(notes::body.eq("kept"))
                .execute(c)
        })
        .unwrap();
        // The application's own SET is not the library's business, but it is undone.
        conn.batch_execute("SET search_path TO globex; SET statement_timeout = 1234")
            .unwrap();
    }
    let mut plain = pool.get().unwrap();
    assert_eq!(search_path(&mut plain), "\"$user\", public");
    let timeout: Setting = diesel::sql_query("SELECT current_setting('statement_timeout') AS value")
        .get_result(&mut plain)
        .unwrap();
    assert_eq!(timeout.value, "0");
    drop(plain);
    assert_eq!(db.query("SELECT string_agg(body, ',') FROM acme.notes"), "kept");
    assert_eq!(db.query("SELECT count(*) FROM globex.notes"), "0");
}

fn backend_pid(conn: &mut PgConnection) -> String {
    diesel::sql_query("SELECT pg_backend_pid()::text AS value")
        .get_result::<Setting>(conn)
        .unwrap()
        .value
}

#[test]
fn a_connection_whose_reset_fails_is_never_reused() {
    let db = TestDb::new();
    with_notes(&db, &["acme"]);
    let pool = pool(&db, 1);
    let tenants = TenantPool::new(pool.clone());
    let first = {
        let mut conn = tenants.get("acme").unwrap();
        let pid = backend_pid(&mut conn);
        // A raw BEGIN diesel does not know about: the connection would go back inside a
        // transaction.
        conn.batch_execute("BEGIN; INSERT INTO notes (body) VALUES ('uncommitted')")
            .unwrap();
        pid
    };
    let mut next = pool.get().unwrap();
    assert_ne!(
        backend_pid(&mut next),
        first,
        "the connection left in a transaction was closed"
    );
    assert_eq!(db.query("SELECT count(*) FROM acme.notes"), "0");
}

#[test]
fn the_version_guard_refuses_a_tenant_that_is_behind_until_it_is_migrated() {
    let db = TestDb::new();
    create_schemas(&db, &["current", "behind"]);
    let runner = Runner::new(&BASIC_SET).database_url(&db.url);
    runner.clone().tenants(TenantSource::list(["current"])).up().unwrap();
    runner
        .clone()
        .tenants(TenantSource::list(["behind"]))
        .run(
            &migrate_tenants::Task::Up {
                to: Some(BASIC[3].into()),
            },
            &mut (),
        )
        .unwrap();
    let tenants = TenantPool::new(pool(&db, 2)).require_current(&BASIC_SET).unwrap();
    assert!(tenants.get("current").is_ok());
    match tenants.get("behind") {
        Err(TenantPoolError::Behind { tenant, missing }) => {
            assert_eq!(tenant, "behind");
            assert_eq!(missing, [BASIC[4]]);
        }
        other => panic!("{other:?}"),
    }
    match tenants.get("nowhere") {
        Err(TenantPoolError::MissingSchema { tenant }) => assert_eq!(tenant, "nowhere"),
        other => panic!("{other:?}"),
    }
    create_schemas(&db, &["fresh"]);
    assert!(
        matches!(tenants.get("fresh"), Err(TenantPoolError::Behind { .. })),
        "never migrated"
    );
    runner.clone().tenants(TenantSource::list(["behind"])).up().unwrap();
    assert!(tenants.get("behind").is_ok(), "accepted once migrated");
    // Without the guard, a missing schema is still refused (search_path would skip it).
    let plain = TenantPool::new(pool(&db, 1));
    assert!(matches!(
        plain.get("nowhere"),
        Err(TenantPoolError::MissingSchema { .. })
    ));
}

#[test]
fn hostile_tenant_names_are_refused_before_any_sql() {
    let db = TestDb::new();
    let before = snapshot(&db);
    let tenants = TenantPool::new(pool(&db, 1));
    for name in [
        "acme; DROP SCHEMA public CASCADE",
        "\"acme\"",
        "Acme",
        "pg_catalog",
        "public",
        "",
        "a b",
    ] {
        assert!(
            matches!(tenants.get(name), Err(TenantPoolError::InvalidName(_))),
            "{name:?}"
        );
    }
    assert_eq!(snapshot(&db), before);
}

#[test]
fn state_left_by_a_plain_user_of_the_pool_never_reaches_a_tenant_request() {
    let db = TestDb::new();
    with_notes(&db, &["acme"]);
    let pool = pool(&db, 1);
    {
        // Plain code on the same pool: a temporary table named like the tenant's, and a
        // transaction it forgot to close.
        let mut plain = pool.get().unwrap();
        plain
            .batch_execute("CREATE TEMP TABLE notes (id int, body text); INSERT INTO notes VALUES (1, 'temp')")
            .unwrap();
    }
    let tenants = TenantPool::new(pool.clone());
    {
        let mut conn = tenants.get("acme").unwrap();
        diesel::insert_into(notes::table)
            .values(notes::body.eq("real"))
            .execute(&mut *conn)
            .unwrap();
    }
    assert_eq!(
        db.query("SELECT string_agg(body, ',') FROM acme.notes"),
        "real",
        "not into the temporary table"
    );
    {
        let mut plain = pool.get().unwrap();
        plain.batch_execute("BEGIN; SET LOCAL statement_timeout = 1").unwrap();
    }
    let mut conn = tenants.get("acme").unwrap();
    let n: i64 = notes::table.count().get_result(&mut *conn).unwrap();
    assert_eq!(n, 1);
    // The shared schema is never served as a tenant.
    assert!(matches!(tenants.get("public"), Err(TenantPoolError::InvalidName(_))));
}
