//! `generate NAME`: new migration directories in the diesel CLI's format.

use crate::helpers::*;
use crate::support::{self, TestDb};
use std::path::{Path, PathBuf};

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `<YYYY-MM-DD-HHMMSS>[-NNNN]_<name>`: returns the timestamp part.
#[track_caller]
fn timestamp_of<'a>(dir_name: &'a str, name: &str) -> &'a str {
    let stamp = dir_name
        .strip_suffix(&format!("_{name}"))
        .unwrap_or_else(|| panic!("{dir_name} does not end with _{name}"));
    let base = &stamp[..stamp.len().min(17)];
    let shape_ok = base.len() == 17
        && base.char_indices().all(|(i, c)| match i {
            4 | 7 | 10 => c == '-',
            _ => c.is_ascii_digit(),
        })
        && (stamp.len() == 17
            || (stamp.len() == 22 && stamp.as_bytes()[17] == b'-' && stamp[18..].bytes().all(|b| b.is_ascii_digit())));
    assert!(shape_ok, "{dir_name}: not <YYYY-MM-DD-HHMMSS>_{name}");
    base
}

fn generate(dir: &Path, name: &str, extra: &[&str]) -> support::Out {
    let mut cmd = support::cli();
    cmd.env_remove("MIGRATION_DIRECTORY");
    cmd.arg("generate")
        .arg(name)
        .arg("--migrations-dir")
        .arg(dir)
        .args(extra);
    support::run(&mut cmd)
}

#[test]
fn generate_creates_a_loadable_migration() {
    let tmp = tempfile::tempdir().unwrap();
    let out = generate(tmp.path(), "add_things", &[]);
    assert_code(&out, 0);
    let names = entries(tmp.path());
    assert_eq!(names.len(), 1, "{names:?}");
    let dir_name = &names[0];
    let stamp = timestamp_of(dir_name, "add_things");
    // The timestamp is the current UTC time.
    let when =
        chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d-%H%M%S").unwrap_or_else(|e| panic!("{stamp}: {e}"));
    let drift = (chrono::Utc::now().naive_utc() - when).num_seconds().abs();
    assert!(drift < 600, "{stamp} is {drift} s away from now");
    assert_eq!(entries(&tmp.path().join(dir_name)), ["down.sql", "up.sql"]);
    assert_contains(
        &out.stdout,
        &[&format!("created {}", tmp.path().join(dir_name).display())],
    );

    let out = mt_bare(&["list", "--migrations-dir", tmp.path().to_str().unwrap()]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["1 migration(s) from", dir_name]);
    assert_contains(line(&out.stdout, &dir_name.replace('-', "")[..14]), &["[reversible]"]);
}

#[test]
fn quick_generates_get_distinct_sorted_versions() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["first", "second", "third"] {
        assert_code(&generate(tmp.path(), name, &[]), 0);
    }
    let names = entries(tmp.path());
    assert_eq!(names.len(), 3, "{names:?}");
    let out = mt_bare(&[
        "list",
        "--format",
        "json",
        "--migrations-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_code(&out, 0);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let listed: Vec<(String, String)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["version"].as_str().unwrap().to_string(),
                m["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 3);
    // Distinct versions, in generation order.
    let mut unique: Vec<&String> = listed.iter().map(|(v, _)| v).collect();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{listed:?}");
    let order: Vec<&str> = listed
        .iter()
        .map(|(_, n)| n.rsplit_once('_').map_or("", |(_, n)| n))
        .collect();
    assert_eq!(order, ["first", "second", "third"]);
}

#[test]
fn generate_no_transaction_writes_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    assert_code(&generate(tmp.path(), "add_index", &["--no-transaction"]), 0);
    let names = entries(tmp.path());
    assert_eq!(
        entries(&tmp.path().join(&names[0])),
        ["down.sql", "metadata.toml", "up.sql"]
    );
    let out = mt_bare(&["list", "--migrations-dir", tmp.path().to_str().unwrap()]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["runs outside a transaction"]);
}

#[test]
fn generate_refuses_bad_names() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["Add-Thing", "Add", "a-b", "a b", "../x", "x/y"] {
        let out = generate(tmp.path(), name, &[]);
        assert_code(&out, 2);
        assert_contains(&out.stderr, &[name]);
        assert!(entries(tmp.path()).is_empty(), "{name:?} created something");
    }
    assert!(!tmp.path().parent().unwrap().join("x").exists());
}

#[test]
fn unedited_generated_migration_refuses_to_run() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let tmp = tempfile::tempdir().unwrap();
    assert_code(&generate(tmp.path(), "todo", &[]), 0);
    let mut cmd = cmd(&db, &["--tenants", "acme", "up"]);
    cmd.arg("--migrations-dir").arg(tmp.path());
    let out = support::run(&mut cmd);
    assert_code(&out, 1);
    assert_contains(line(&out.stdout, "acme: "), &["FAILED", "_todo", "not written yet"]);
    assert!(history(&db, "acme").is_empty());
}

#[test]
fn generate_defaults_to_diesel_toml_then_migrations() {
    // Without --migrations-dir: diesel.toml's directory (relative to the file) ...
    let mut cmd = support::cli();
    cmd.env_remove("MIGRATION_DIRECTORY");
    let cwd: PathBuf = cmd.get_current_dir().unwrap().to_path_buf();
    std::fs::write(
        cwd.join("diesel.toml"),
        "[migrations_directory]\ndir = \"db/tenant_migrations\"\n",
    )
    .unwrap();
    cmd.args(["generate", "from_toml"]);
    assert_code(&support::run(&mut cmd), 0);
    let names = entries(&cwd.join("db/tenant_migrations"));
    assert_eq!(names.len(), 1, "{names:?}");
    timestamp_of(&names[0], "from_toml");
    // `list` in the same directory reads the same set.
    let mut list = support::cli();
    list.env_remove("MIGRATION_DIRECTORY");
    list.current_dir(&cwd).arg("list");
    let out = support::run(&mut list);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["1 migration(s)", &names[0]]);

    // ... else ./migrations.
    let mut cmd = support::cli();
    cmd.env_remove("MIGRATION_DIRECTORY");
    let cwd: PathBuf = cmd.get_current_dir().unwrap().to_path_buf();
    cmd.args(["generate", "plain"]);
    assert_code(&support::run(&mut cmd), 0);
    assert_eq!(entries(&cwd.join("migrations")).len(), 1);
}

#[test]
fn generate_never_reuses_an_existing_version() {
    // Occupy every second around now, so the generated timestamp is certainly taken: the
    // new migration must get a distinct (suffixed) version that still sorts after it.
    let tmp = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now();
    let mut taken = Vec::new();
    for offset in -2..=10 {
        let stamp = (now + chrono::Duration::seconds(offset))
            .format("%Y-%m-%d-%H%M%S")
            .to_string();
        let dir = tmp.path().join(format!("{stamp}_existing_{}", offset + 2));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("up.sql"), "SELECT 1;").unwrap();
        taken.push(stamp.replace('-', ""));
    }
    let out = generate(tmp.path(), "collides", &[]);
    assert_code(&out, 0);
    let created: Vec<String> = entries(tmp.path())
        .into_iter()
        .filter(|n| n.ends_with("_collides"))
        .collect();
    assert_eq!(created.len(), 1);
    let stamp = created[0].strip_suffix("_collides").unwrap();
    assert_eq!(stamp.len(), 22, "{stamp}: expected a -NNNN suffix");
    assert!(taken.contains(&stamp[..17].replace('-', "")));
    // The whole set still loads: no duplicate versions.
    let out = mt_bare(&["list", "--migrations-dir", tmp.path().to_str().unwrap()]);
    assert_code(&out, 0);
    assert_contains(&out.stdout, &["14 migration(s)", &created[0]]);
}

#[test]
fn unedited_generated_down_refuses_to_run() {
    let db = TestDb::new();
    create_schemas(&db, &["acme"]);
    let tmp = tempfile::tempdir().unwrap();
    assert_code(&generate(tmp.path(), "half_done", &[]), 0);
    let dir = entries(tmp.path()).pop().unwrap();
    std::fs::write(tmp.path().join(&dir).join("up.sql"), "CREATE TABLE written (id int);").unwrap();
    let dir_arg = tmp.path().to_str().unwrap();
    assert_code(&mt(&db, &["--tenants", "acme", "--migrations-dir", dir_arg, "up"]), 0);
    let out = mt(&db, &["--tenants", "acme", "--migrations-dir", dir_arg, "down"]);
    assert_code(&out, 1);
    assert_contains(&out.stdout, &["no reverse written yet", "rolled back"]);
    assert_eq!(history(&db, "acme").len(), 1, "a failed down keeps the history row");
    assert!(relation_exists(&db, "acme", "written"));
}
