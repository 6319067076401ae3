//! Unreachable databases fail fast with exit code 3; passwords never reach the output.

use crate::helpers::*;
use crate::support::{self, TestDb};
use std::time::{Duration, Instant};

const UNREACHABLE: &str = "postgres://postgres@127.0.0.1:1/x";

#[test]
fn unreachable_database_exits_3_quickly_and_clearly() {
    for command in ["up", "status", "down"] {
        let started = Instant::now();
        let out = mt_bare(&["--database-url", UNREACHABLE, "--tenants", "acme", command]);
        let elapsed = started.elapsed();
        assert_code(&out, 3);
        assert!(elapsed < Duration::from_secs(15), "{command} took {elapsed:?}");
        assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
        assert_contains(&out.stderr, &["cannot connect", "127.0.0.1", "hint"]);
        assert_eq!(out.stderr.matches("cannot connect").count(), 1, "{}", out.stderr);
        assert!(out.stderr.lines().count() <= 6, "too much output:\n{}", out.stderr);
    }
}

#[test]
fn unreachable_database_is_not_retried_noisily_with_logging_on() {
    let started = Instant::now();
    let mut cmd = support::cli();
    cmd.env("RUST_LOG", "debug").args([
        "--database-url",
        UNREACHABLE,
        "--connect-timeout",
        "2",
        "--tenants",
        "acme",
        "up",
    ]);
    let out = support::run(&mut cmd);
    assert_code(&out, 3);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(out.stderr.lines().count() <= 10, "log spam:\n{}", out.stderr);
}

#[test]
fn missing_database_url_is_a_usage_error() {
    let out = mt_bare(&["--tenants", "acme", "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["--database-url"]);
}

fn assert_no_secret(out: &support::Out, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{secret:?} leaked:\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.stdout,
            out.stderr
        );
    }
}

#[test]
fn password_never_appears_in_output_or_logs() {
    let db = TestDb::new();
    create_schemas(&db, &["acme", "globex"]);
    let url = db.url_with_password("s3cr3t-PW");
    let dir = MigDir::new();
    dir.add(
        "2024-01-01-000001_fails_in_globex",
        "CREATE TABLE t (id int);\n\
         DO $$ BEGIN IF current_schema() = 'globex' THEN RAISE EXCEPTION 'nope'; END IF; END $$;",
        Some("DROP TABLE t;"),
    );
    let run = |args: &[&str]| {
        let mut cmd = support::cli();
        cmd.env("RUST_LOG", "trace").arg("--database-url").arg(&url).args(args);
        support::run(&mut cmd)
    };

    let out = run(&["--tenants", "acme,globex", "up"]);
    assert_code(&out, 0);
    assert_no_secret(&out, &["s3cr3t-PW"]);
    let out = run(&["--tenants", "acme,globex", "status"]);
    assert_code(&out, 0);
    assert_no_secret(&out, &["s3cr3t-PW"]);
    let out = run(&["--tenants", "acme,globex,absent", "--format", "json", "status"]);
    assert_code(&out, 1);
    assert_no_secret(&out, &["s3cr3t-PW"]);
    let out = run(&["--tenants", "acme,globex", "down", "--all", "--yes"]);
    assert_code(&out, 0);
    assert_no_secret(&out, &["s3cr3t-PW"]);
    // A failing migration's report does not leak it either.
    let mut cmd = support::cli();
    cmd.env("RUST_LOG", "trace")
        .arg("--database-url")
        .arg(&url)
        .arg("--migrations-dir")
        .arg(dir.path())
        .args(["--tenants", "acme,globex", "up"]);
    let out = support::run(&mut cmd);
    assert_code(&out, 1);
    assert_no_secret(&out, &["s3cr3t-PW"]);
}

#[test]
fn password_never_appears_when_the_database_is_unreachable() {
    for (url, secrets) in [
        (
            "postgres://postgres:s3cr3t-PW@127.0.0.1:1/x".to_string(),
            vec!["s3cr3t-PW"],
        ),
        (
            "postgresql://app:p%40ss%20w0rd%2F%21@127.0.0.1:1/x?sslmode=disable".to_string(),
            vec!["p@ss w0rd/!", "p%40ss%20w0rd%2F%21", "p%40ss+w0rd%2F%21", "w0rd"],
        ),
        (
            "host=127.0.0.1 port=1 user=postgres password=s3cr3t-PW dbname=x".to_string(),
            vec!["s3cr3t-PW"],
        ),
    ] {
        let mut cmd = support::cli();
        cmd.env("RUST_LOG", "trace")
            .args(["--database-url", &url, "--tenants", "acme", "up"]);
        let out = support::run(&mut cmd);
        assert_code(&out, 3);
        assert_no_secret(&out, &secrets);
        assert_contains(&out.stderr, &["cannot connect"]);
    }
}

#[test]
fn password_never_appears_in_the_pool_error_path_either() {
    // DATABASE_URL from the environment instead of the flag.
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let mut cmd = support::cli();
    cmd.env("RUST_LOG", "trace")
        .env("DATABASE_URL", db.url_with_password("s3cr3t-PW"))
        .args(["--tenants", "acme", "up"]);
    let out = support::run(&mut cmd);
    assert_code(&out, 0);
    assert_no_secret(&out, &["s3cr3t-PW"]);
}

#[test]
fn password_in_a_query_parameter_or_quoted_keyword_form_never_appears() {
    let urls = [
        "postgresql://postgres@127.0.0.1:1/db?password=QueryPw9&sslmode=disable",
        "host=127.0.0.1 port=1 dbname=db password='Quoted Pw9'",
        "host=127.0.0.1 port=1 dbname=db password=Plain\\ Pw9",
    ];
    for url in urls {
        let mut cmd = support::cli();
        cmd.env("RUST_LOG", "trace")
            .args(["--database-url", url, "--tenants", "acme", "up"]);
        let out = support::run(&mut cmd);
        assert_code(&out, 3);
        assert_no_secret(&out, &["QueryPw9", "Quoted", "Pw9"]);
        assert_contains(&out.stderr, &["cannot connect", "***"]);
    }
}

#[test]
fn a_malformed_database_url_is_a_usage_error_that_hides_its_value() {
    for url in ["not a url with secret-pw9", "postgres://u:secret-pw9@[bad/x"] {
        let out = mt_bare(&["--database-url", url, "--tenants", "acme", "status"]);
        assert_code(&out, 2);
        assert_contains(&out.stderr, &["the database URL cannot be used"]);
        assert_no_secret(&out, &["secret-pw9"]);
    }
}

#[test]
fn socket_style_and_keyword_urls_are_accepted() {
    let db = TestDb::new();
    db.exec("CREATE SCHEMA acme;");
    // postgres://user@host:port/name -> postgresql://user@/name?host=...&port=...
    let rest = db.url.split_once('@').unwrap().1;
    let (hostport, name) = rest.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let name = name.split('?').next().unwrap();
    for url in [
        format!("postgresql://postgres@/{name}?host={host}&port={port}"),
        format!("host={host} port={port} dbname={name} user=postgres"),
    ] {
        let out = mt_bare(&["--database-url", &url, "--tenants", "acme", "status"]);
        assert_code(&out, 0);
    }
}
