/*!
Where a run's migrations come from: the application's own set, compiled in by
[`embed_migrations!`](crate::embed_migrations) as an [`EmbeddedMigrations`] constant, or a
[`MigrationSet`] read from a directory at run time.

An embedded set is also a diesel [`MigrationSource`](diesel::migration::MigrationSource), so
an application that runs diesel's own `MigrationHarness` on a single-schema database (tests,
a local tool) hands it the same constant instead of embedding its migrations twice.
*/

use diesel::connection::BoxableConnection;
use diesel::migration::{self, MigrationMetadata, MigrationName, MigrationVersion};
use diesel::pg::Pg;
use migrate_tenants_set::{DownSql, Migration, MigrationSet, Origin, RawMigration, SetError};
use std::fmt;

/// A migrations directory compiled into an application (see
/// [`embed_migrations!`](crate::embed_migrations)): the tenant set and, when there is one, the
/// shared-schema set.
///
/// ```
/// # // The doctest crate embeds a fixture set of this repository's tests.
/// pub const MIGRATIONS: migrate_tenants::EmbeddedMigrations =
///     migrate_tenants::embed_migrations!("tests/fixtures/basic");
///
/// let set = MIGRATIONS.tenant_set().unwrap();
/// assert_eq!(set.migrations().len(), 5);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedMigrations {
    tenant: EmbeddedSet,
    shared: Option<EmbeddedSet>,
    package: &'static str,
    version: &'static str,
}

/// One embedded directory (built by the macro; not part of the stable API).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedSet {
    /// The directory as given to the macro.
    pub dir: &'static str,
    /// Its migrations, sorted by directory name.
    pub files: &'static [EmbeddedFiles],
}

/// The files of one embedded migration (built by the macro; not part of the stable API).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedFiles {
    /// Directory name.
    pub dir_name: &'static str,
    /// `up.sql`, if present.
    pub up: Option<&'static str>,
    /// `down.sql`, if present.
    pub down: Option<&'static str>,
    /// `metadata.toml`, if present.
    pub metadata: Option<&'static str>,
}

impl EmbeddedMigrations {
    /// Used by the macro's expansion.
    #[doc(hidden)]
    pub const fn __new(
        tenant: EmbeddedSet,
        shared: Option<EmbeddedSet>,
        package: &'static str,
        version: &'static str,
    ) -> EmbeddedMigrations {
        EmbeddedMigrations {
            tenant,
            shared,
            package,
            version,
        }
    }

    /// The tenant migrations, validated (the macro already refused an invalid set at
    /// compile time, so this fails only if the files changed without a rebuild).
    pub fn tenant_set(&self) -> Result<MigrationSet, SetError> {
        self.validate(&self.tenant)
    }

    /// The shared-schema migrations, when the application embedded some.
    pub fn shared_set(&self) -> Result<Option<MigrationSet>, SetError> {
        self.shared.as_ref().map(|set| self.validate(set)).transpose()
    }

    /// The crate that embedded the migrations, and its version.
    pub fn package(&self) -> (&'static str, &'static str) {
        (self.package, self.version)
    }

    fn validate(&self, set: &EmbeddedSet) -> Result<MigrationSet, SetError> {
        let origin = Origin::Embedded {
            package: self.package.to_string(),
            version: self.version.to_string(),
            dir: set.dir.to_string(),
        };
        let raw = set
            .files
            .iter()
            .map(|f| RawMigration {
                dir_name: f.dir_name.to_string(),
                up: f.up.map(str::to_string),
                down: f.down.map(str::to_string),
                metadata: f.metadata.map(str::to_string),
            })
            .collect();
        MigrationSet::validate(origin, raw)
    }
}

/// What a run says about its migrations: where they come from, how many, the newest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct SetInfo {
    /// `embedded` or `directory`.
    pub kind: &'static str,
    /// The directory read, or the embedding crate and directory
    /// (`migrations/ embedded in myapp 1.4.0`).
    pub origin: String,
    /// How many migrations the set holds.
    pub migrations: usize,
    /// The newest migration's directory name.
    pub newest: Option<String>,
}

impl SetInfo {
    pub(crate) fn of(set: &MigrationSet) -> SetInfo {
        SetInfo {
            kind: match set.origin() {
                Origin::Embedded { .. } => "embedded",
                Origin::Directory(_) => "directory",
            },
            origin: set.origin().to_string(),
            migrations: set.migrations().len(),
            newest: set.newest().map(|m| m.dir_name.clone()),
        }
    }
}

impl fmt::Display for SetInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} from {}", self.migrations, self.origin)?;
        if let Some(newest) = &self.newest {
            write!(f, " (newest {newest})")?;
        }
        Ok(())
    }
}

/// One migration as diesel's `MigrationHarness` sees it.
struct DieselMigration(Migration);

impl fmt::Display for DieselMigration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.dir_name)
    }
}

impl MigrationName for DieselMigration {
    fn version(&self) -> MigrationVersion<'_> {
        MigrationVersion::from(self.0.version.as_str())
    }
}

impl MigrationMetadata for DieselMigration {
    fn run_in_transaction(&self) -> bool {
        self.0.run_in_transaction
    }
}

impl migration::Migration<Pg> for DieselMigration {
    fn run(&self, conn: &mut dyn BoxableConnection<Pg>) -> migration::Result<()> {
        conn.batch_execute(&self.0.up).map_err(Into::into)
    }

    fn revert(&self, conn: &mut dyn BoxableConnection<Pg>) -> migration::Result<()> {
        match &self.0.down {
            DownSql::Sql(sql) => conn.batch_execute(sql).map_err(Into::into),
            DownSql::NoOp => Ok(()),
            DownSql::Missing => Err(Box::new(diesel_migrations::MigrationError::NoMigrationRevertFile)),
        }
    }

    fn metadata(&self) -> &dyn MigrationMetadata {
        self
    }

    fn name(&self) -> &dyn MigrationName {
        self
    }
}

/// The tenant set, for diesel's `MigrationHarness` on a single schema (an empty `down.sql`
/// reverts as a no-op, as the runner does).
impl migration::MigrationSource<Pg> for EmbeddedMigrations {
    fn migrations(&self) -> migration::Result<Vec<Box<dyn migration::Migration<Pg>>>> {
        Ok(self
            .tenant_set()?
            .migrations()
            .iter()
            .map(|m| Box::new(DieselMigration(m.clone())) as Box<dyn migration::Migration<Pg>>)
            .collect())
    }
}
