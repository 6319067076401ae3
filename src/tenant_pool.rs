/*!
Serving tenants from the application: pooled connections scoped to one tenant's schema.

diesel's answer to SQLAlchemy's `schema_translate_map`: the application's tables are declared
once, unqualified (`table! { users ... }`), and [`TenantPool::get`] hands out a connection whose
`search_path` is the tenant's schema (then the configured suffix, `public` by default), so
`users` means `acme.users` on `get("acme")`. When the [`TenantConnection`] is dropped, the
session is put back as the runner puts it back between tenants (`search_path`, settings, roles,
temporary tables, `LISTEN`, cursors, prepared statements) before the connection returns to the
pool; if that fails (a transaction left open or failed, a dead connection), the connection is
closed instead of being handed to the next request.

Optionally ([`TenantPool::require_current`]), `get` refuses a tenant whose schema is missing or
behind the application's migrations, so that an instance of a new release never serves a
tenant that is not migrated yet. The check rides on the same round trip as setting the
`search_path`, and a tenant seen current is remembered ([`TenantPool::forget`] and
[`TenantPool::forget_all`] clear that).
*/

use crate::database::{mark_broken, Pool, PooledConn};
use crate::source::EmbeddedMigrations;
use crate::tenant::{quote_literal, NameError, SchemaName};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, Nullable, Text};
use migrate_tenants_set::{MigrationSet, SetError};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// Why no tenant connection was handed out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantPoolError {
    /// The name is not a valid tenant name (refused before any SQL).
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The pool gave no connection.
    #[error("no database connection: {0}")]
    Pool(#[source] r2d2::Error),
    /// The tenant's schema does not exist (or this role may not use it).
    #[error("tenant {tenant}: its schema does not exist, or this role may not use it")]
    MissingSchema {
        /// The tenant.
        tenant: String,
    },
    /// The tenant's schema lacks migrations the application needs.
    #[error("tenant {tenant} is not migrated yet: {} missing ({})", missing.len(), missing.join(", "))]
    Behind {
        /// The tenant.
        tenant: String,
        /// The versions it lacks, oldest first.
        missing: Vec<String>,
    },
    /// Setting up the connection failed.
    #[error("tenant {tenant}: {source}")]
    Database {
        /// The tenant.
        tenant: String,
        /// What PostgreSQL said.
        #[source]
        source: diesel::result::Error,
    },
}

/// Hands out pooled connections scoped to one tenant's schema (see the module docs).
///
/// ```no_run
/// use diesel::prelude::*;
/// use migrate_tenants::TenantPool;
///
/// # fn run(pool: migrate_tenants::Pool) -> Result<(), Box<dyn std::error::Error>> {
/// let tenants = TenantPool::new(pool);
/// let mut conn = tenants.get("acme")?; // search_path = "acme", public
/// conn.transaction(|c| diesel::sql_query("INSERT INTO notes (body) VALUES ('hello')").execute(c))?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TenantPool {
    pool: Pool,
    suffix: Vec<String>,
    required: Option<Arc<Vec<String>>>,
    current: Arc<RwLock<HashSet<String>>>,
}

impl std::fmt::Debug for TenantPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantPool")
            .field("suffix", &self.suffix)
            .field("required", &self.required.as_ref().map(|r| r.len()))
            .finish_non_exhaustive()
    }
}

#[derive(QueryableByName)]
struct Scope {
    #[diesel(sql_type = Nullable<Text>)]
    schema: Option<String>,
    #[diesel(sql_type = Nullable<Array<Text>>)]
    versions: Option<Vec<String>>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    clean: bool,
}

/// Whether the session is as the pool should hand it out: no transaction open from an earlier
/// message, no role switched, no temporary table.
const INHERITED_CLEAN: &str = "(transaction_timestamp() = statement_timestamp() AND current_user = session_user \
    AND (pg_my_temp_schema() = 0 OR NOT EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = pg_my_temp_schema())))";

impl TenantPool {
    /// Tenant-scoped connections from `pool` (`search_path = <tenant>, public`).
    pub fn new(pool: Pool) -> TenantPool {
        TenantPool {
            pool,
            suffix: vec!["public".into()],
            required: None,
            current: Arc::default(),
        }
    }

    /// Schemas after the tenant's on `search_path` (default `public`: extensions, shared
    /// tables); an invalid name makes every `get` fail with it.
    pub fn search_path_suffix<I: IntoIterator<Item = S>, S: Into<String>>(mut self, schemas: I) -> TenantPool {
        self.suffix = schemas.into_iter().map(Into::into).collect();
        self
    }

    /// Refuses tenants that lack any migration of the application's embedded set (or whose
    /// schema is missing): see [`TenantPoolError::Behind`].
    pub fn require_current(self, migrations: &EmbeddedMigrations) -> Result<TenantPool, SetError> {
        Ok(self.require_set(&migrations.tenant_set()?))
    }

    /// Like [`TenantPool::require_current`], for a set read from a directory.
    pub fn require_set(mut self, set: &MigrationSet) -> TenantPool {
        self.required = Some(Arc::new(set.migrations().iter().map(|m| m.version.clone()).collect()));
        // What was current for another set proves nothing for this one.
        self.current = Arc::default();
        self
    }

    /// Checks `tenant` again at its next `get`: after reverting it (`down`) or dropping and
    /// creating it again (a tenant that was behind is never remembered, so nothing is needed
    /// after migrating one).
    pub fn forget(&self, tenant: &str) {
        self.current.write().unwrap_or_else(|e| e.into_inner()).remove(tenant);
    }

    /// Checks every tenant again at its next `get` (after a fleet-wide `down`).
    pub fn forget_all(&self) {
        self.current.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// A connection whose `search_path` is `tenant`'s schema, then the suffix: one round trip
    /// over a plain checkout (which also checks the schema is really there, and, when
    /// required and not yet seen current, that it has every migration).
    pub fn get(&self, tenant: &str) -> Result<TenantConnection, TenantPoolError> {
        let schema = SchemaName::tenant(tenant)?;
        let suffix = self
            .suffix
            .iter()
            .map(|s| SchemaName::shared(s))
            .collect::<Result<Vec<_>, _>>()?;
        if suffix.contains(&schema) {
            // The shared schema (or an extensions schema) is on every tenant's path: it is
            // not a tenant to serve.
            return Err(NameError::Shared(tenant.to_string()).into());
        }
        let path: Vec<String> = std::iter::once(&schema)
            .chain(&suffix)
            .map(SchemaName::quoted)
            .collect();
        let check = self
            .required
            .as_ref()
            .filter(|_| !self.current.read().unwrap_or_else(|e| e.into_inner()).contains(tenant));
        let versions = match check {
            Some(_) => format!(
                "(SELECT array_agg(version::text) FROM {}.__diesel_schema_migrations)",
                schema.quoted()
            ),
            None => "NULL::text[]".into(),
        };
        // The subquery sets search_path before current_schema() is read (OFFSET 0 keeps it
        // from being flattened into the outer query).
        // `clean`: what a plain user of the same pool may have left (a transaction, a role, a
        // temporary table that would shadow the tenant's tables) is checked in the same round
        // trip, and reset only when found.
        let sql = format!(
            "SELECT current_schema()::text AS schema, {versions} AS versions, {INHERITED_CLEAN} AS clean \
             FROM (SELECT set_config('search_path', {}, false) OFFSET 0) AS scoped",
            quote_literal(&path.join(", "))
        );
        let conn = self.pool.get().map_err(TenantPoolError::Pool)?;
        let mut guard = TenantConnection {
            conn: Some(conn),
            tenant: schema.clone(),
        };
        let mut scope = diesel::sql_query(&sql).get_result::<Scope>(&mut *guard);
        if scope.as_ref().is_ok_and(|s| !s.clean) {
            if guard.batch_execute(TENANT_RESET).is_err() {
                // Left inside a transaction, or dead: closed, and another connection taken.
                mark_broken(&mut guard);
                drop(guard);
                return self.get(tenant);
            }
            scope = diesel::sql_query(&sql).get_result::<Scope>(&mut *guard);
        }
        let scope = match scope {
            Ok(scope) => scope,
            // A missing history table (or schema) fails the statement: nothing was set.
            Err(e) if check.is_some() => return Err(self.explain(&mut guard, e)),
            Err(source) => {
                return Err(TenantPoolError::Database {
                    tenant: tenant.into(),
                    source,
                })
            }
        };
        if scope.schema.as_deref() != Some(schema.as_str()) {
            return Err(TenantPoolError::MissingSchema { tenant: tenant.into() });
        }
        if let Some(required) = check {
            let applied = scope.versions.unwrap_or_default();
            let missing: Vec<String> = required.iter().filter(|v| !applied.contains(v)).cloned().collect();
            if !missing.is_empty() {
                return Err(TenantPoolError::Behind {
                    tenant: tenant.into(),
                    missing,
                });
            }
            self.current
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(tenant.to_string());
        }
        Ok(guard)
    }

    /// Why the checked scoping query failed: a missing schema, a schema that was never
    /// migrated, or something else.
    fn explain(&self, guard: &mut TenantConnection, source: diesel::result::Error) -> TenantPoolError {
        let tenant = guard.tenant.to_string();
        #[derive(QueryableByName)]
        struct Found {
            #[diesel(sql_type = Nullable<Text>)]
            schema: Option<String>,
            #[diesel(sql_type = Nullable<Text>)]
            history: Option<String>,
        }
        let probe = format!(
            "SELECT (SELECT nspname::text FROM pg_namespace WHERE nspname = {literal}) AS schema, \
             to_regclass({history})::text AS history",
            literal = guard.tenant.literal(),
            history = quote_literal(&format!("{}.__diesel_schema_migrations", guard.tenant.quoted())),
        );
        match diesel::sql_query(probe).get_result::<Found>(&mut **guard) {
            Ok(Found { schema: None, .. }) => TenantPoolError::MissingSchema { tenant },
            Ok(Found { history: None, .. }) => TenantPoolError::Behind {
                tenant,
                missing: self.required.as_ref().map(|r| r.to_vec()).unwrap_or_default(),
            },
            _ => TenantPoolError::Database { tenant, source },
        }
    }
}

/// The runner's session reset between tenants, in one round trip and without PL/pgSQL (it
/// runs at every return to the pool). A connection left inside a transaction the application
/// opened with a raw `BEGIN` (in one message, both timestamps are equal only when the message
/// started the transaction), or holding SQL-level prepared statements, fails the first
/// statement with a division by zero: it is closed, never handed back.
const TENANT_RESET: &str = "SELECT 1 / (transaction_timestamp() = statement_timestamp() \
    AND NOT EXISTS (SELECT 1 FROM pg_prepared_statements WHERE from_sql))::int; \
    RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL; SET TIME ZONE 'UTC'; SET CLIENT_ENCODING TO 'UTF8'; \
    DISCARD TEMP; DISCARD SEQUENCES; UNLISTEN *; CLOSE ALL; SELECT pg_advisory_unlock_all();";

/// A pooled connection scoped to one tenant; derefs to diesel's `PgConnection`. Dropping it
/// resets the session (or closes the connection if that fails) before the pool gets it back.
pub struct TenantConnection {
    conn: Option<PooledConn>,
    tenant: SchemaName,
}

impl TenantConnection {
    /// The tenant this connection is scoped to.
    pub fn tenant(&self) -> &SchemaName {
        &self.tenant
    }
}

impl std::fmt::Debug for TenantConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConnection")
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl std::ops::Deref for TenantConnection {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for TenantConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for TenantConnection {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            // Fails inside an open or failed transaction, or on a dead connection: then the
            // connection is closed rather than reused.
            if let Err(e) = conn.batch_execute(TENANT_RESET) {
                log::debug!(
                    "{}: resetting the connection failed ({e}); it will be closed",
                    self.tenant
                );
                mark_broken(&mut conn);
            }
        }
    }
}
