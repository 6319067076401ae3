/*!
Finding the migrations directory for the stock binary, the way the diesel CLI does:
`--migrations-dir`, then `MIGRATION_DIRECTORY`, then `[migrations_directory] dir` of
`diesel.toml` (`DIESEL_CONFIG_FILE`, else the nearest `diesel.toml` in the current directory or
a parent), then `migrations/` in the project root (the directory of that `diesel.toml`, else
the nearest with a `Cargo.toml`, else the current directory). Nothing found is an error saying
where it looked: the stock binary has no migrations of its own.
*/

use super::flags::UsageError;
use std::path::{Path, PathBuf};

/// How the error saying no directory was found starts.
pub(crate) const NOT_FOUND: &str = "no migrations directory found";

/// A migrations directory and how it was found.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub(crate) dir: PathBuf,
    /// `--migrations-dir`, `MIGRATION_DIRECTORY`, `diesel.toml (<path>)` or `project root`.
    pub(crate) how: String,
}

/// The tenant migrations directory.
pub(crate) fn migrations_dir(flag: Option<&Path>) -> Result<Located, UsageError> {
    if let Some(dir) = flag {
        return Ok(Located {
            dir: dir.to_path_buf(),
            how: "--migrations-dir".into(),
        });
    }
    if let Some(dir) = env_path("MIGRATION_DIRECTORY") {
        return Ok(Located {
            dir,
            how: "MIGRATION_DIRECTORY".into(),
        });
    }
    let cwd = std::env::current_dir().map_err(|e| UsageError(format!("cannot read the current directory: {e}")))?;
    let config = diesel_toml(&cwd);
    if let Some(path) = &config {
        if let Some(dir) = configured_dir(path)? {
            return Ok(Located {
                dir,
                how: format!("diesel.toml ({})", path.display()),
            });
        }
    }
    let root = match &config {
        Some(path) => path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        None => ancestor_with(&cwd, "Cargo.toml").unwrap_or_else(|| cwd.clone()),
    };
    let default = root.join("migrations");
    if default.is_dir() {
        return Ok(Located {
            dir: default,
            how: "project root".into(),
        });
    }
    let looked = match &config {
        Some(path) => format!("{} (it names no [migrations_directory])", path.display()),
        None => format!("a diesel.toml in {} or its parents (none)", cwd.display()),
    };
    Err(UsageError(format!(
        "{NOT_FOUND}: this binary has no migrations of its own and reads them at run time.\n\
         Looked for --migrations-dir, MIGRATION_DIRECTORY, {looked}, and {} (missing).\n\
         hint: pass --migrations-dir DIR, or run from your diesel project; an application can embed its \
         migrations with migrate_tenants::embed_migrations! and run them with migrate_tenants::cli::main",
        default.display()
    )))
}

/// The shared-schema directory: the flag, `SHARED_MIGRATION_DIRECTORY`, or `migrations_shared/`
/// beside the tenant directory when it exists.
pub(crate) fn shared_dir(flag: Option<&Path>, tenant: &Path) -> Option<Located> {
    if let Some(dir) = flag {
        return Some(Located {
            dir: dir.to_path_buf(),
            how: "--shared-migrations-dir".into(),
        });
    }
    if let Some(dir) = env_path("SHARED_MIGRATION_DIRECTORY") {
        return Some(Located {
            dir,
            how: "SHARED_MIGRATION_DIRECTORY".into(),
        });
    }
    // Beside the directory itself, also when it was given as `.` or `migrations/`.
    let tenant = tenant.canonicalize().unwrap_or_else(|_| tenant.to_path_buf());
    let beside = tenant.with_file_name("migrations_shared");
    beside.is_dir().then(|| Located {
        dir: beside,
        how: "beside the migrations directory".into(),
    })
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// `DIESEL_CONFIG_FILE` if set, else the nearest `diesel.toml` from `cwd` up.
fn diesel_toml(cwd: &Path) -> Option<PathBuf> {
    if let Some(path) = env_path("DIESEL_CONFIG_FILE") {
        return Some(path);
    }
    ancestor_with(cwd, "diesel.toml").map(|dir| dir.join("diesel.toml"))
}

fn ancestor_with(start: &Path, file: &str) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join(file).is_file())
        .map(Path::to_path_buf)
}

/// `[migrations_directory] dir` of a diesel.toml, relative to the file's directory.
fn configured_dir(path: &Path) -> Result<Option<PathBuf>, UsageError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(UsageError(format!("cannot read {}: {e}", path.display()))),
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e| UsageError(format!("{} is not valid TOML: {e}", path.display())))?;
    let dir = table
        .get("migrations_directory")
        .and_then(|m| m.get("dir"))
        .and_then(|d| d.as_str());
    Ok(dir.map(|d| path.parent().unwrap_or(Path::new(".")).join(d)))
}
