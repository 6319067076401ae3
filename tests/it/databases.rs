//! Several databases, one fleet (`--fleet FILE`, `Databases`): clusters of their own on
//! loopback ports, tenants spread over them; a stopped cluster fails only its tenants; a
//! tenant in two databases is refused; passwords never show.

use crate::helpers::*;
use crate::support::{self, exec_url, query_url, Cluster, Out, TestDb};
use migrate_tenants::{Databases, DatabasesObserver, MigrationSet, NamedDatabase, Runner, TenantReport, TenantSource};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A fleet file in a directory of its own, and the URL variables it names.
struct FleetFile {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl FleetFile {
    /// `entries`: (database name, URL, source lines).
    fn new(entries: &[(&str, &str, &str)]) -> FleetFile {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = String::new();
        let mut env = Vec::new();
        for (name, url, source) in entries {
            let var = format!("FLEET_TEST_{}_URL", name.to_uppercase());
            text.push_str(&format!("[databases.{name}]\nurl_env = \"{var}\"\n{source}\n\n"));
            env.push((var, url.to_string()));
        }
        std::fs::write(dir.path().join("fleet.toml"), text).expect("write fleet file");
        FleetFile { dir, env }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("fleet.toml")
    }

    /// `migrate-tenants --fleet <file> <args>` with the URL variables set.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = support::cli();
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--fleet")
            .arg(self.path())
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Out {
        support::run(&mut self.cmd(args))
    }
}

/// A cluster of its own with a database `app` holding these tenant schemas.
fn cluster_with(name: &str, tenants: &[&str]) -> (Cluster, String) {
    let cluster = Cluster::start(name);
    exec_url(&cluster.url, "CREATE DATABASE app");
    let url = format!("{}/app", cluster.url.rsplit_once('/').expect("a URL").0);
    let sql: String = tenants.iter().map(|t| format!("CREATE SCHEMA {t};\n")).collect();
    if !sql.is_empty() {
        exec_url(&url, &sql);
    }
    (cluster, url)
}

fn history_at(url: &str, schema: &str) -> Vec<String> {
    let exists = query_url(
        url,
        &format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}' AND tablename = '__diesel_schema_migrations'"
        ),
    );
    if exists != "1" {
        return Vec::new();
    }
    rows(&query_url(
        url,
        &format!("SELECT version FROM {schema}.__diesel_schema_migrations ORDER BY version"),
    ))
}

/// One database's block of human output (blocks come in the order the databases finish).
fn block<'a>(stdout: &'a str, database: &str) -> &'a str {
    let header = format!("== {database} ==");
    let start = stdout
        .find(&header)
        .unwrap_or_else(|| panic!("no {header} in:\n{stdout}"));
    let rest = &stdout[start + header.len()..];
    let end = rest.find("\n== ").map_or(rest.len(), |e| e);
    &rest[..end]
}

fn json(out: &Out) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", out.stdout))
}

#[test]
fn up_status_down_over_two_clusters_grouped_by_database() {
    let (_a, url_a) = cluster_with("fleet-two-a", &["acme", "globex"]);
    let (_b, url_b) = cluster_with("fleet-two-b", &["tenant_initech", "tenant_hooli"]);
    let fleet = FleetFile::new(&[
        ("eu", &url_a, "tenants = [\"acme\", \"globex\"]\nconcurrency = 1"),
        ("us", &url_b, "schema_pattern = 'tenant\\_%'"),
    ]);

    let out = fleet.run(&["up"]);
    assert_code(&out, 0);
    assert_contains(
        &out.stdout,
        &[
            "== eu ==",
            "== us ==",
            "acme: none -> 2024-01-01-000005_add_users_last_login_at",
            "tenant_hooli: none ->",
        ],
    );
    let eu = block(&out.stdout, "eu");
    assert!(eu.contains("globex:") && !eu.contains("tenant_hooli"), "grouped: {eu}");
    assert_contains(
        line(&out.stdout, "up over 2 database(s)"),
        &["all succeeded", "4 tenant(s): 4 changed", "20 migration(s) applied"],
    );
    for (url, t) in [
        (&url_a, "acme"),
        (&url_a, "globex"),
        (&url_b, "tenant_initech"),
        (&url_b, "tenant_hooli"),
    ] {
        assert_eq!(history_at(url, t), versions(&BASIC), "{t}");
    }
    assert!(history_at(&url_b, "acme").is_empty(), "no tenant crosses databases");

    let out = fleet.run(&["--format", "json", "status"]);
    assert_code(&out, 0);
    let doc = json(&out);
    assert_eq!(doc["command"], "status");
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(doc["summary"]["databases"], 2);
    assert_eq!(doc["summary"]["tenants"], 4);
    let dbs = doc["databases"].as_array().unwrap();
    assert_eq!(dbs[0]["name"], "eu");
    assert_eq!(dbs[1]["name"], "us");
    assert_eq!(dbs[1]["report"]["tenants"].as_array().unwrap().len(), 2);
    assert_eq!(dbs[1]["report"]["tenants"][0]["schema"], "tenant_hooli");

    let out = fleet.run(&["status", "--check"]);
    assert_code(&out, 0);

    let out = fleet.run(&["--database", "us", "down", "--steps", "2", "--yes"]);
    assert_code(&out, 0);
    assert!(!out.stdout.contains("== eu =="), "{}", out.stdout);
    assert_eq!(history_at(&url_b, "tenant_hooli"), versions(&BASIC[..3]));
    assert_eq!(
        history_at(&url_a, "acme"),
        versions(&BASIC),
        "--database restricts the run"
    );

    let out = fleet.run(&["status", "--check"]);
    assert_code(&out, 4);
    let out = fleet.run(&["--tenant", "tenant_hooli", "up"]);
    assert_code(&out, 0);
    assert_eq!(history_at(&url_b, "tenant_hooli"), versions(&BASIC));
    assert_eq!(
        history_at(&url_b, "tenant_initech"),
        versions(&BASIC[..3]),
        "--tenant over the fleet"
    );
}

#[test]
fn three_clusters_tenant_create_needs_a_database_and_names_stay_unique() {
    let (_a, url_a) = cluster_with("fleet-three-a", &[]);
    let (_b, url_b) = cluster_with("fleet-three-b", &[]);
    let (_c, url_c) = cluster_with("fleet-three-c", &[]);
    let fleet = FleetFile::new(&[
        ("a", &url_a, "all_tenants = true"),
        ("b", &url_b, "all_tenants = true"),
        ("c", &url_c, "all_tenants = true"),
    ]);
    assert_code(&fleet.run(&["tenant", "create", "acme", "--database", "a"]), 0);
    assert_code(&fleet.run(&["tenant", "create", "globex", "--database", "b"]), 0);

    let out = fleet.run(&["tenant", "create", "initech"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["exactly one database", "--database NAME"]);

    let out = fleet.run(&["tenant", "create", "initech", "--database", "c"]);
    assert_code(&out, 0);
    assert_contains(
        &out.stdout,
        &[
            "== c ==",
            "initech: created at 2024-01-01-000005_add_users_last_login_at",
        ],
    );
    assert_eq!(history_at(&url_c, "initech"), versions(&BASIC));

    let out = fleet.run(&["tenant", "create", "acme", "--database", "c"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["acme in a and c", "nothing was changed"]);
    assert_eq!(
        query_url(&url_c, "SELECT count(*) FROM pg_namespace WHERE nspname = 'acme'"),
        "0"
    );

    let out = fleet.run(&["--format", "json", "tenant", "list"]);
    assert_code(&out, 0);
    let doc = json(&out);
    assert_eq!(doc["summary"]["tenants"], 3);
    assert_eq!(doc["databases"].as_array().unwrap().len(), 3);

    // A stray copy of a tenant in another database: refused before any change, naming both.
    exec_url(&url_b, "CREATE SCHEMA acme; CREATE TABLE acme.__diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);");
    exec_url(&url_c, "DELETE FROM initech.__diesel_schema_migrations WHERE version = '20240101000005'; ALTER TABLE initech.users DROP COLUMN last_login_at;");
    let out = fleet.run(&["up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["acme in a and b", "more than one database"]);
    assert_eq!(history_at(&url_c, "initech").len(), 4, "nothing was changed anywhere");

    let out = fleet.run(&["tenant", "drop", "globex", "--yes"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["acme in a and b"]);
    exec_url(&url_b, "DROP SCHEMA acme CASCADE");
    let out = fleet.run(&["tenant", "drop", "globex", "--yes"]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["== b ==", "globex: dropped"]);
    assert!(
        !out.stdout.contains("== a =="),
        "only the database holding it: {}",
        out.stdout
    );
    assert_eq!(
        query_url(&url_b, "SELECT count(*) FROM pg_namespace WHERE nspname = 'globex'"),
        "0"
    );
}

#[test]
fn a_cluster_stopped_mid_run_fails_only_its_tenants() {
    let a_names: Vec<String> = (0..4).map(|i| format!("alpha_{i}")).collect();
    let b_names: Vec<String> = (0..12).map(|i| format!("beta_{i}")).collect();
    let refs = |v: &[String]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (_a, url_a) = cluster_with(
        "fleet-lost-a",
        &refs(&a_names).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let (b, url_b) = cluster_with(
        "fleet-lost-b",
        &refs(&b_names).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let dir = MigDir::new();
    dir.add("0001_a", "CREATE TABLE a (id int);\nSELECT pg_sleep(0.4);", None);
    dir.add("0002_b", "CREATE TABLE b (id int);", None);
    let fleet = FleetFile::new(&[
        ("a", &url_a, "schema_pattern = 'alpha\\_%'"),
        ("b", &url_b, "schema_pattern = 'beta\\_%'\nconcurrency = 1"),
    ]);
    let child = fleet
        .cmd(&["--connect-timeout", "2", "--format", "json", "up"])
        .arg("--migrations-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    support::wait_until(
        &url_b,
        "SELECT count(*) > 0 FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid WHERE n.nspname LIKE 'beta%' AND c.relname = 'b'",
        Duration::from_secs(60),
    );
    b.stop_immediate();
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "one database lost, the other fine");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(doc["databases"][0]["exit_code"], 0);
    assert_eq!(doc["databases"][1]["exit_code"], 3);
    assert_eq!(doc["databases"][1]["report"]["stopped"], "server_lost");
    for t in &a_names {
        assert_eq!(history_at(&url_a, t).len(), 2, "{t}: the other database went on");
    }

    // Both down now that b is stopped and a's URL points nowhere: exit 3.
    let down = FleetFile::new(&[
        (
            "a",
            "postgres://postgres@127.0.0.1:1/app",
            "schema_pattern = 'alpha\\_%'",
        ),
        ("b", &url_b, "tenants = [\"beta_0\"]"),
    ]);
    let out = down.run(&["--connect-timeout", "2", "up"]);
    assert_code(&out, 3);
    assert_contains(&out.stdout, &["== a ==", "== b ==", "cannot connect"]);

    // Back up: the same command converges.
    b.start_again();
    let mut cmd = fleet.cmd(&["up"]);
    cmd.arg("--migrations-dir").arg(dir.path());
    let out = support::run(&mut cmd);
    assert_code(&out, 0);
    for t in &b_names {
        assert_eq!(history_at(&url_b, t).len(), 2, "{t}");
    }
}

#[test]
fn configuration_errors_are_clear_and_change_nothing() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let fleet = FleetFile::new(&[("main", &db.url, "tenants = [\"acme\"]")]);

    let out = fleet.run(&["--database", "nope", "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["no database named nope", "the fleet has: main"]);

    let mut cmd = support::cli();
    cmd.arg("--fleet").arg(fleet.path()).arg("up");
    let out = support::run(&mut cmd);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["database main", "FLEET_TEST_MAIN_URL", "not set"]);

    let out = fleet.run(&["--tenants", "acme", "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["fleet file"]);

    let out = mt(&db, &["--database", "main", "--tenants", "acme", "up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["--fleet"]);

    std::fs::write(
        fleet.path(),
        "[databases.main]\nurl_env = \"FLEET_TEST_MAIN_URL\"\ntenant = [\"acme\"]\n",
    )
    .unwrap();
    let out = fleet.run(&["up"]);
    assert_code(&out, 2);
    assert_contains(&out.stderr, &["unknown field `tenant`"]);
    assert!(!has_history(&db, "acme"), "nothing ran");

    // tenant create cannot check a name against a database it cannot read: refused.
    let two = FleetFile::new(&[
        ("main", &db.url, "all_tenants = true"),
        ("down", "postgres://postgres@127.0.0.1:1/app", "all_tenants = true"),
    ]);
    let out = two.run(&[
        "--connect-timeout",
        "2",
        "tenant",
        "create",
        "newco",
        "--database",
        "main",
    ]);
    assert_code(&out, 2);
    assert_contains(
        &out.stderr,
        &["cannot check the tenant names against database \"down\""],
    );
    assert!(!schema_exists(&db, "newco"));

    // Without --fleet, nothing changes: the single-URL mode ignores a fleet file nearby.
    let out = mt(&db, &["--tenants", "acme", "up"]);
    assert_code(&out, 0);
    assert!(!out.stdout.contains("=="), "{}", out.stdout);
}

#[test]
fn passwords_never_appear_in_fleet_output() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let secret = "fleet-S3cret-pw";
    let good = db.url_with_password(secret);
    let bad = format!("postgres://postgres:{secret}@127.0.0.1:1/app");
    let fleet = FleetFile::new(&[
        ("good", &good, "tenants = [\"acme\"]"),
        ("bad", &bad, "tenants = [\"zed\"]"),
    ]);
    for args in [&["up"][..], &["--format", "json", "status"], &["-vv", "status"]] {
        let mut cmd = fleet.cmd(&["--connect-timeout", "2"]);
        cmd.args(args).env("RUST_LOG", "trace");
        let out = support::run(&mut cmd);
        assert_code(&out, 1);
        let all = all_output(&out);
        assert!(!all.contains(secret), "password leaked:\n{all}");
        assert_contains(&all, &["cannot connect", "password=***"]);
    }
}

/// Collects what the library's observer sees, tagged by database.
#[derive(Default)]
struct Seen(Vec<(String, String)>, Vec<String>);

impl DatabasesObserver for Seen {
    fn tenant_done(&mut self, database: &str, report: &TenantReport) {
        self.0.push((database.to_string(), report.schema.to_string()));
    }
    fn database_done(&mut self, report: &migrate_tenants::DatabaseReport) {
        self.1.push(report.name.clone());
    }
}

#[test]
fn library_runs_the_fleet_and_tags_progress_with_the_database() {
    let (one, two) = (TestDb::new(), TestDb::new());
    create_schemas(&one, &["acme", "globex"]);
    create_schemas(&two, &["initech"]);
    let set = MigrationSet::from_dir(BASIC_SET.as_ref()).unwrap();
    let fleet = Databases::new(Runner::new(set).concurrency(3))
        .database(NamedDatabase::url("one", &one.url).tenants(TenantSource::list(["acme", "globex"])))
        .database(
            NamedDatabase::url("two", &two.url)
                .tenants(TenantSource::AllTenants)
                .max_concurrency(1),
        );
    let mut seen = Seen::default();
    let report = fleet.run(&migrate_tenants::Task::Up { to: None }, &mut seen).unwrap();
    assert_eq!(report.exit_code(), 0);
    assert_eq!(
        report.summary.tenants.tenants, 2,
        "AllTenants finds no history table yet in two"
    );
    seen.0.sort();
    assert_eq!(seen.0, [("one".into(), "acme".into()), ("one".into(), "globex".into())]);
    assert_eq!(seen.1.len(), 2);

    let two_only = fleet.clone().select(["two"]);
    let report = two_only
        .run(
            &migrate_tenants::Task::CreateTenants {
                names: vec!["hooli".into()],
                if_exists_migrate: false,
            },
            &mut (),
        )
        .unwrap();
    assert_eq!(report.exit_code(), 0);
    let duplicate = fleet.clone().select(["one"]);
    let err = duplicate.create_check_error("hooli");
    assert!(err.contains("hooli in two and one"), "{err}");
    let report = fleet.status().unwrap();
    assert_eq!(report.summary.tenants.tenants, 3);
    assert_eq!(
        report.databases.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["one", "two"]
    );
}

trait CreateCheck {
    fn create_check_error(&self, name: &str) -> String;
}

impl CreateCheck for Databases {
    fn create_check_error(&self, name: &str) -> String {
        let task = migrate_tenants::Task::CreateTenants {
            names: vec![name.into()],
            if_exists_migrate: false,
        };
        match self.run(&task, &mut ()) {
            Err(e) => e.to_string(),
            Ok(r) => panic!("expected a refusal, got exit {}", r.exit_code()),
        }
    }
}
