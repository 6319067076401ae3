//! Configuration sources: `.env`, and the migrations directory's precedence
//! (`--migrations-dir`, then `MIGRATION_DIRECTORY`, then `diesel.toml`, then embedded).

use crate::helpers::*;
use crate::support::{self, TestDb};
use std::path::PathBuf;
use std::process::Command;

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
    let mut cmd = support::cli();
    std::fs::write(
        cwd(&cmd).join(".env"),
        format!("DATABASE_URL={}\nTENANTS=env_a,env_b\n", db.url),
    )
    .unwrap();
    let out = support::run(cmd.arg("up"));
    assert_code(&out, 0);
    assert_eq!(history(&db, "env_a"), versions(&EMBEDDED));
    assert_eq!(history(&db, "env_b"), versions(&EMBEDDED));
}

#[test]
fn migrations_directory_precedence_follows_the_diesel_cli() {
    let (from_flag, from_env, from_toml) = (one("1001"), one("2002"), one("3003"));
    let mut cmd = support::cli();
    let toml = format!("[migrations_directory]\ndir = {:?}\n", from_toml.path_str());
    std::fs::write(cwd(&cmd).join("diesel.toml"), toml).unwrap();
    assert_contains(&listed(&mut cmd), &["3003_only"]);

    let mut cmd = support::cli();
    std::fs::write(
        cwd(&cmd).join("diesel.toml"),
        format!("[migrations_directory]\ndir = {:?}\n", from_toml.path_str()),
    )
    .unwrap();
    cmd.env("MIGRATION_DIRECTORY", from_env.path());
    assert_contains(&listed(&mut cmd), &["2002_only"]);

    let mut cmd = support::cli();
    cmd.env("MIGRATION_DIRECTORY", from_env.path())
        .arg("--migrations-dir")
        .arg(from_flag.path());
    assert_contains(&listed(&mut cmd), &["1001_only"]);

    let mut cmd = support::cli();
    assert_contains(&listed(&mut cmd), &["from the embedded migrations", EMBEDDED_DIRS[4]]);
}

#[test]
fn diesel_toml_relative_dir_is_relative_to_the_file() {
    let mut cmd = support::cli();
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
