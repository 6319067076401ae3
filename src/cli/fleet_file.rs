/*!
The fleet file: several databases in one TOML file, each with the environment variable that
holds its URL (never the URL itself: no secrets in the file), its tenant source and an
optional cap on its workers.

```toml
[databases.eu]
url_env = "EU_DATABASE_URL"
schema_pattern = "tenant\\_%"
concurrency = 4

[databases.us]
url_env = "US_DATABASE_URL"
tenants_file = "us-tenants.txt"     # relative to this file
```

Found only where it is named (`--fleet FILE` or `MIGRATE_TENANTS_FLEET`), never by looking
around: a file lying in a directory must not turn a single-database run into a fleet run.
*/

use super::flags::UsageError;
use crate::database::DatabaseUrl;
use crate::{NamedDatabase, TenantSource};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    /// The databases by name.
    databases: BTreeMap<String, DatabaseEntry>,
}

/// One database of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseEntry {
    /// The environment variable holding the database's URL.
    url_env: String,
    tenants: Option<Vec<String>>,
    tenants_file: Option<PathBuf>,
    tenants_query: Option<String>,
    schema_pattern: Option<String>,
    #[serde(default)]
    all_tenants: bool,
    /// At most this many workers on this database.
    concurrency: Option<usize>,
}

/// Reads the fleet file at `path`: every database with its URL from the environment.
pub fn read(path: &Path) -> Result<Vec<NamedDatabase>, UsageError> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| UsageError(format!("cannot read the fleet file {shown}: {e}")))?;
    let file: FleetFile =
        toml::from_str(&text).map_err(|e| UsageError(format!("fleet file {shown}: {}", e.to_string().trim_end())))?;
    if file.databases.is_empty() {
        return Err(UsageError(format!(
            "fleet file {shown}: no database ([databases.NAME] tables)"
        )));
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    file.databases
        .iter()
        .map(|(name, entry)| {
            entry
                .database(name, dir, &|var| std::env::var(var).ok())
                .map_err(|e| UsageError(format!("fleet file {shown}: database {name}: {e}")))
        })
        .collect()
}

impl DatabaseEntry {
    /// The library's database; `env` reads a variable.
    fn database(&self, name: &str, dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<NamedDatabase, String> {
        let plain = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
        if !name.chars().all(plain) {
            return Err("a database name holds only letters, digits, _, - and .".into());
        }
        let url = match env(&self.url_env) {
            Some(url) if !url.trim().is_empty() => url,
            _ => {
                return Err(format!(
                    "the environment variable {} (its url_env) is not set",
                    self.url_env
                ))
            }
        };
        DatabaseUrl::validate(&url).map_err(|e| format!("{} holds a URL that cannot be used: {e}", self.url_env))?;
        let mut db = NamedDatabase::url(name, &url).tenants(self.source(dir)?);
        if let Some(workers) = self.concurrency {
            if workers == 0 {
                return Err("concurrency must be at least 1".into());
            }
            db = db.max_concurrency(workers);
        }
        Ok(db)
    }

    /// Exactly one tenant source (a file relative to the fleet file's directory).
    fn source(&self, dir: &Path) -> Result<TenantSource, String> {
        let mut sources = Vec::new();
        if let Some(names) = &self.tenants {
            sources.push(TenantSource::List(names.clone()));
        }
        if let Some(path) = &self.tenants_file {
            sources.push(TenantSource::File(match path.as_os_str() == "-" {
                true => path.clone(),
                false => dir.join(path),
            }));
        }
        if let Some(sql) = &self.tenants_query {
            sources.push(TenantSource::Query(sql.clone()));
        }
        if let Some(pattern) = &self.schema_pattern {
            sources.push(TenantSource::Pattern(pattern.clone()));
        }
        if self.all_tenants {
            sources.push(TenantSource::AllTenants);
        }
        match sources.len() {
            1 => Ok(sources.remove(0)),
            n => Err(format!(
                "give exactly one tenant source (tenants, tenants_file, tenants_query, schema_pattern or \
                 all_tenants = true), not {n}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FleetFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn env(var: &str) -> Option<String> {
        (var == "EU_URL").then(|| "postgres://app:s3cr3t-pw@eu.internal/app".to_string())
    }

    #[test]
    fn a_database_with_its_url_from_the_environment() {
        let file =
            parse("[databases.eu]\nurl_env = \"EU_URL\"\nschema_pattern = \"t\\\\_%\"\nconcurrency = 2\n").unwrap();
        let db = file.databases["eu"].database("eu", Path::new("/x"), &env).unwrap();
        assert_eq!(db.name(), "eu");
        assert!(!format!("{db:?}").contains("s3cr3t"), "{db:?}");
    }

    #[test]
    fn unknown_keys_missing_variables_and_sources_are_refused() {
        let unknown = parse("[databases.eu]\nurl_env = \"EU_URL\"\nall_tenants = true\nurl = \"postgres://x\"\n");
        assert!(unknown.unwrap_err().contains("unknown field `url`"));
        assert!(parse("[database.eu]\nurl_env = \"EU_URL\"\n").is_err());
        let file = parse("[databases.eu]\nurl_env = \"NOPE\"\nall_tenants = true\n").unwrap();
        let e = file.databases["eu"].database("eu", Path::new(""), &env).unwrap_err();
        assert!(e.contains("NOPE") && e.contains("not set"), "{e}");
        let file = parse("[databases.eu]\nurl_env = \"EU_URL\"\ntenants = [\"a\"]\nall_tenants = true\n").unwrap();
        let e = file.databases["eu"].database("eu", Path::new(""), &env).unwrap_err();
        assert!(e.contains("exactly one tenant source"), "{e}");
    }

    #[test]
    fn a_tenants_file_is_relative_to_the_fleet_file() {
        let file = parse("[databases.eu]\nurl_env = \"EU_URL\"\ntenants_file = \"eu.txt\"\n").unwrap();
        let source = file.databases["eu"].source(Path::new("/etc/fleet")).unwrap();
        assert_eq!(source, TenantSource::File("/etc/fleet/eu.txt".into()));
    }
}
