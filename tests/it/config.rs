//! Configuration sources: `.env`, and how the stock binary finds its migrations
//! (`--migrations-dir`, then `MIGRATION_DIRECTORY`, then `diesel.toml` found like the diesel CLI
//! finds it, then `migrations/` in the project root; nothing else: it embeds no migrations).

use crate::helpers::*;
use crate::support::{self, TestDb};
use std::path::PathBuf;
use std::process::Command;

/// `support::cli()` without the fixture's `MIGRATION_DIRECTORY`.
fn bare() -> Command {
    let mut cmd = support::cli();
    cmd.env_remove("MIGRATION_DIRECTORY");
    cmd
}

fn cwd(cmd: &Command) -> PathBuf {
    cmd.get_current_dir()
        .expect("support::cli sets a working directory")
        .to_path_buf()
}

/// A one-migration set whose only version is `version`.
fn one(version: &str) -> MigDir {
    let dir = MigDir::new();
    dir.add(
        &format!("{version}_only"),
        "CREATE TABLE only_one (id int);",
        Some("DROP TABLE only_one;"),
    );
    dir
}

fn listed(cmd: &mut Command) -> String {
    let out = support::run(cmd.arg("list"));
    assert_code(&out, 0);
    out.stdout
}

#[test]
fn dotenv_supplies_the_database_and_tenants() {
    let db = TestDb::new();
    create_schemas(&db, &["env_a", "env_b"]);
    let mut cmd = bare();
    // In a parent directory, as in an application whose tool runs from a subdirectory.
    std::fs::write(
        cwd(&cmd).join(".env"),
        format!(
            "DATABASE_URL={}\nTENANTS=env_a,env_b\nMIGRATION_DIRECTORY={BASIC_SET}\n\
             # a pattern needs single quotes (a backslash is an escape otherwise)\n\
             TENANT_SCHEMA_PATTERN_EXAMPLE='tenant\\_%'\n",
            db.url
        ),
    )
    .unwrap();
    let sub = cwd(&cmd).join("deploy/scripts");
    std::fs::create_dir_all(&sub).unwrap();
    let out = support::run(cmd.current_dir(&sub).arg("up"));
    assert_code(&out, 0);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    assert_eq!(history(&db, "env_a"), versions(&BASIC));
    assert_eq!(history(&db, "env_b"), versions(&BASIC));
}

#[test]
fn env_file_pattern_in_single_quotes_is_taken_literally() {
    let db = TestDb::new();
    create_schemas(&db, &["tenant_a", "tenantxb"]);
    let mut cmd = support::cli();
    std::fs::write(
        cwd(&cmd).join(".env"),
        format!("DATABASE_URL={}\nTENANT_SCHEMA_PATTERN='tenant\\_%'\n", db.url),
    )
    .unwrap();
    let out = support::run(cmd.arg("status"));
    assert_code(&out, 0);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    assert_contains(&out.stdout, &["1 tenant(s)", "tenant_a:"]);
    assert!(!out.stdout.contains("tenantxb"), "{}", out.stdout);
}

#[test]
fn migrations_directory_precedence_follows_the_diesel_cli() {
    let (from_flag, from_env, from_toml) = (one("1001"), one("2002"), one("3003"));
    let mut cmd = bare();
    let toml = format!("[migrations_directory]\ndir = {:?}\n", from_toml.path_str());
    std::fs::write(cwd(&cmd).join("diesel.toml"), toml).unwrap();
    assert_contains(&listed(&mut cmd), &["3003_only"]);

    let mut cmd = bare();
    std::fs::write(
        cwd(&cmd).join("diesel.toml"),
        format!("[migrations_directory]\ndir = {:?}\n", from_toml.path_str()),
    )
    .unwrap();
    cmd.env("MIGRATION_DIRECTORY", from_env.path());
    assert_contains(&listed(&mut cmd), &["2002_only"]);

    let mut cmd = bare();
    cmd.env("MIGRATION_DIRECTORY", from_env.path())
        .arg("--migrations-dir")
        .arg(from_flag.path());
    assert_contains(&listed(&mut cmd), &["1001_only"]);
}

#[test]
fn without_a_migrations_directory_the_stock_binary_exits_2_and_touches_nothing() {
    let db = TestDb::new();
    create_schemas(&db, &["none_a"]);
    let before = snapshot(&db);
    for args in [&["up"][..], &["status"], &["tenant", "create", "none_b"], &["list"]] {
        let mut cmd = bare();
        let out = support::run(
            cmd.arg("--database-url")
                .arg(&db.url)
                .arg("--tenants")
                .arg("none_a")
                .args(args),
        );
        if args[0] == "tenant" {
            // tenant create names its tenants itself: --tenants is refused first.
            assert_code(&out, 2);
            continue;
        }
        assert_code(&out, 2);
        assert_contains(
            &out.stderr,
            &[
                "no migrations directory found",
                "--migrations-dir",
                "MIGRATION_DIRECTORY",
                "diesel.toml",
            ],
        );
    }
    let mut cmd = bare();
    let out = support::run(
        cmd.arg("--database-url")
            .arg(&db.url)
            .args(["tenant", "create", "none_b"]),
    );
    assert_code(&out, 2);
    assert_eq!(snapshot(&db), before, "nothing was touched");
}

#[test]
fn from_a_subdirectory_the_project_diesel_toml_is_found_like_the_diesel_cli() {
    let cmd = bare();
    let root = cwd(&cmd);
    std::fs::write(root.join("Cargo.toml"), "[package]\nname = \"app\"\n").unwrap();
    std::fs::write(
        root.join("diesel.toml"),
        "[migrations_directory]\ndir = \"db/migrations\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("db/migrations/0042_rel")).unwrap();
    std::fs::write(root.join("db/migrations/0042_rel/up.sql"), "SELECT 1;").unwrap();
    std::fs::create_dir_all(root.join("src/deep/er")).unwrap();
    let mut cmd = bare();
    cmd.current_dir(root.join("src/deep/er"));
    let out = listed(&mut cmd);
    assert_contains(&out, &["1 migration(s) from", "db/migrations", "0042_rel"]);

    // No diesel.toml: migrations/ in the project root (the nearest Cargo.toml).
    let cmd = bare();
    let root = cwd(&cmd);
    std::fs::write(root.join("Cargo.toml"), "[package]\nname = \"app\"\n").unwrap();
    std::fs::create_dir_all(root.join("migrations/0007_x")).unwrap();
    std::fs::write(root.join("migrations/0007_x/up.sql"), "SELECT 1;").unwrap();
    std::fs::create_dir_all(root.join("src")).unwrap();
    let mut cmd = bare();
    cmd.current_dir(root.join("src"));
    assert_contains(&listed(&mut cmd), &["0007_x"]);
}

#[test]
fn diesel_toml_relative_dir_is_relative_to_the_file() {
    let mut cmd = bare();
    let root = cwd(&cmd);
    std::fs::create_dir_all(root.join("db/migrations/0042_rel")).unwrap();
    std::fs::write(root.join("db/migrations/0042_rel/up.sql"), "SELECT 1;").unwrap();
    std::fs::write(
        root.join("db/diesel.toml"),
        "[migrations_directory]\ndir = \"migrations\"\n",
    )
    .unwrap();
    cmd.env("DIESEL_CONFIG_FILE", root.join("db/diesel.toml"));
    assert_contains(&listed(&mut cmd), &["0042_rel"]);
}
