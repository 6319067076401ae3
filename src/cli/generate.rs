/*!
`generate`: a new migration directory in the diesel CLI's format.

`<dir>/<YYYY-MM-DD-HHMMSS>_<name>/{up.sql,down.sql}` with the current UTC time. When a
migration with that version already exists (two generated in one second), a diesel 2.3
style `-NNNN` suffix makes the version distinct and still sorted after the first.
*/

use chrono::{DateTime, Utc};
use migrate_tenants_set::version_of;
use std::path::{Path, PathBuf};

/// Why a migration could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The name has characters outside `[a-z0-9_]`.
    #[error("migration name {0:?} must match [a-z0-9_]+ (e.g. add_users_email_index)")]
    BadName(String),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Every suffix for this second is taken.
    #[error("too many migrations generated at {0}")]
    Exhausted(String),
}

/// Creates the migration directory and its files; returns the directory.
pub fn generate(
    dir: &Path,
    name: &str,
    now: DateTime<Utc>,
    run_in_transaction: bool,
) -> Result<PathBuf, GenerateError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(GenerateError::BadName(name.to_string()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenerateError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let taken = existing_versions(dir).map_err(io(dir))?;
    let stamp = now.format("%Y-%m-%d-%H%M%S").to_string();
    let target = candidates(&stamp)
        .map(|prefix| dir.join(format!("{prefix}_{name}")))
        .find(|path| {
            let version = version_of(&path.file_name().unwrap_or_default().to_string_lossy());
            !taken.contains(&version) && std::fs::create_dir(path).is_ok()
        })
        .ok_or_else(|| GenerateError::Exhausted(stamp.clone()))?;
    let dir_name = target.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let write = |file: &str, text: String| std::fs::write(target.join(file), text).map_err(io(&target.join(file)));
    write("up.sql", up_template(&dir_name))?;
    write("down.sql", down_template(&dir_name))?;
    if !run_in_transaction {
        write(
            "metadata.toml",
            "# The single statement in up.sql runs outside a transaction.\nrun_in_transaction = false\n".into(),
        )?;
    }
    Ok(target)
}

fn candidates(stamp: &str) -> impl Iterator<Item = String> + '_ {
    std::iter::once(stamp.to_string()).chain((1..=9999).map(move |n| format!("{stamp}-{n:04}")))
}

fn existing_versions(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        versions.push(version_of(&entry?.file_name().to_string_lossy()));
    }
    Ok(versions)
}

/// Placeholders that load as a valid migration but refuse to run until edited, so a
/// forgotten edit can never be recorded as applied, nor silently "reverted".
fn up_template(dir_name: &str) -> String {
    format!(
        "-- Runs once in every tenant schema, with search_path = <tenant>, public.\n\
         -- Replace the statement below with this migration's SQL.\n\
         DO $$ BEGIN RAISE EXCEPTION 'migration {dir_name} is not written yet: edit its up.sql'; END $$;\n"
    )
}

fn down_template(dir_name: &str) -> String {
    format!(
        "-- Undo everything up.sql does. Replace the statement below.\n\
         -- An empty (or comment-only) down.sql reverts as a no-op: only the history row is removed.\n\
         -- Delete this file to make the migration irreversible (`down` will then refuse it).\n\
         DO $$ BEGIN RAISE EXCEPTION 'migration {dir_name} has no reverse written yet: edit its down.sql'; END $$;\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use migrate_tenants_set::MigrationSet;

    #[test]
    fn same_second_gets_a_distinct_sorted_version() {
        let tmp = tempfile::tempdir().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 30, 0).unwrap();
        let a = generate(tmp.path(), "add_a", now, true).unwrap();
        let b = generate(tmp.path(), "add_b", now, false).unwrap();
        assert!(a.ends_with("2026-11-26-103000_add_a"));
        assert!(b.ends_with("2026-11-26-103000-0001_add_b"));
        let set = MigrationSet::from_dir(tmp.path()).unwrap();
        let dirs: Vec<_> = set
            .migrations()
            .iter()
            .map(|m| (m.dir_name.as_str(), m.run_in_transaction))
            .collect();
        assert_eq!(
            dirs,
            [
                ("2026-11-26-103000_add_a", true),
                ("2026-11-26-103000-0001_add_b", false)
            ]
        );
        let later = Utc.with_ymd_and_hms(2026, 11, 26, 10, 30, 1).unwrap();
        let c = generate(tmp.path(), "add_c", later, true).unwrap();
        assert!(version_of(&c.file_name().unwrap().to_string_lossy()) > set.migrations()[1].version);
    }

    #[test]
    fn refuses_bad_names() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["", "Add", "a-b", "a b", "../x"] {
            assert!(
                matches!(
                    generate(tmp.path(), name, Utc::now(), true),
                    Err(GenerateError::BadName(_))
                ),
                "{name}"
            );
        }
    }
}
