//! An application crate outside the library (`tests/app`, a workspace member with a set of
//! its own and a shared set beside it) embeds its migrations with the macro and gets the whole
//! command line from `cli::main`: its tenants get its migrations, never another set's, and
//! every run says which set and which database.

use crate::helpers::*;
use crate::support::{self, Out, TestDb};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const APP_VERSIONS: [&str; 3] = ["20250201090000", "20250202090000", "202502030900indexinvoicesdue"];

/// `target/` and the profile directory of this test build.
fn target_dirs() -> (PathBuf, PathBuf) {
    // target/<profile>/deps/tests-<hash> -> target/<profile>
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("target dir");
    (target_dir.to_path_buf(), profile_dir.to_path_buf())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Builds the test application once (cargo reuses this build's artifacts) and returns its
/// binary.
fn app_binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let (target_dir, profile_dir) = target_dirs();
        let mut build = cargo();
        build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "-p", "migrate-tenants-test-app", "--target-dir"])
            .arg(&target_dir);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build for tests/app");
        assert!(status.success(), "building tests/app failed");
        profile_dir.join("test-app-migrate")
    })
}

/// The application's binary against `db` (clean environment, empty cwd: no directory set).
fn app(db: &TestDb, args: &[&str]) -> Out {
    let mut cmd = Command::new(app_binary());
    let scratch = support::cli();
    for (key, _) in std::env::vars() {
        if key.starts_with("MIGRATION") || key.starts_with("TENANT") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(scratch.get_current_dir().expect("cwd"));
    cmd.arg("--database-url").arg(&db.url).args(args);
    support::run(&mut cmd)
}

#[test]
fn the_application_binary_migrates_tenants_with_its_own_set() {
    let db = TestDb::new();
    create_schemas(&db, &["shop_a", "shop_b"]);
    let out = app(&db, &["--tenants", "shop_a,shop_b", "up"]);
    assert_code(&out, 0);
    let first = out.stdout.lines().next().unwrap_or_default();
    assert_contains(
        first,
        &[
            "migrations: 3 from migrations/ embedded in migrate-tenants-test-app 0.3.1",
            "newest 2025-02-03-0900-index-invoices-due",
            "shared: 1 from migrations_shared/",
            "database: postgres@127.0.0.1:",
            &format!("/{}", db.name),
        ],
    );
    for tenant in ["shop_a", "shop_b"] {
        assert_eq!(history(&db, tenant), versions(&APP_VERSIONS));
        assert_eq!(tables_in(&db, tenant), ["__diesel_schema_migrations", "invoices"]);
    }
    assert_eq!(tables_in(&db, "public"), ["__diesel_schema_migrations", "app_plans"]);
    let foreign = db.query("SELECT count(*) FROM pg_class WHERE relname IN ('users', 'projects', 'tasks')");
    assert_eq!(foreign, "0", "nothing of the sample or fixture sets");

    let created = app(&db, &["tenant", "create", "shop_c"]);
    assert_code(&created, 0);
    assert_eq!(tables_in(&db, "shop_c"), ["__diesel_schema_migrations", "invoices"]);

    let status = app(
        &db,
        &["--tenants", "shop_a,shop_b,shop_c", "--format", "json", "status"],
    );
    assert_code(&status, 0);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("one JSON document");
    assert_eq!(json["source"]["kind"], "embedded");
    assert_eq!(json["source"]["migrations"], 3);
    assert_eq!(json["target"]["database"], db.name.as_str());
    assert_eq!(json["target"]["user"], "postgres");
    assert_eq!(json["shared_source"]["migrations"], 1);

    let list = app(&db, &["list"]);
    assert_code(&list, 0);
    assert_contains(
        &list.stdout,
        &["3 migration(s) from migrations/ embedded in migrate-tenants-test-app"],
    );
}

#[test]
fn the_application_binary_refuses_a_migrations_directory() {
    let db = TestDb::new();
    create_schemas(&db, &["shop_x"]);
    let before = snapshot(&db);
    let out = app(&db, &["--tenants", "shop_x", "--migrations-dir", BASIC_SET, "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["compiled into it"]);
    assert_eq!(snapshot(&db), before);
}

#[test]
fn a_set_the_runner_would_refuse_fails_the_applications_build() {
    let krate = tempfile::Builder::new().prefix("mt-bad-app-").tempdir().unwrap();
    let root = krate.path();
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "Cargo.toml",
        &format!(
            "[package]\nname = \"bad-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n\
             [dependencies]\nmigrate-tenants = {{ path = {:?} }}\n",
            env!("CARGO_MANIFEST_DIR")
        ),
    );
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"),
        root.join("Cargo.lock"),
    )
    .unwrap();
    write(
        "src/main.rs",
        "pub const M: migrate_tenants::EmbeddedMigrations = migrate_tenants::embed_migrations!();\n\
         fn main() { migrate_tenants::cli::main(&M) }\n",
    );
    write("migrations/2024-01-01-000001_a/up.sql", "CREATE TABLE a (id int);");
    write("migrations/20240101000001_b/up.sql", "CREATE TABLE b (id int);");
    write(
        "migrations/2024-01-01-000002_c/up.sql",
        "CREATE TABLE c (id int); COMMIT;",
    );
    let (target_dir, _) = target_dirs();
    let out = cargo()
        .current_dir(root)
        .args(["build", "--offline", "--target-dir"])
        .arg(&target_dir)
        .output()
        .expect("run cargo build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the build must fail:\n{stderr}");
    assert_contains(
        &stderr,
        &[
            "embed_migrations!: invalid migration set in migrations/ embedded in bad-app 0.1.0",
            "duplicate version 20240101000001",
            "2024-01-01-000002_c/up.sql line 1: `COMMIT`",
        ],
    );
}
