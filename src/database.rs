/*!
The database URL and the connection pool.

[`DatabaseUrl`] is the only holder of the connection string: its `Display` and `Debug`
never show the password, and [`DatabaseUrl::scrub`] removes it from any text that might
echo it. [`Database::connect`] fails fast and clearly when the server is unreachable
(one direct connection with libpq's `connect_timeout`, instead of r2d2's silent
30-second retry loop), then builds a pool whose connections are discarded, not reused,
whenever a unit of work did not finish cleaning up after itself.
*/

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, PooledConnection};
use std::fmt;
use std::time::Duration;

/// A PostgreSQL connection string (URL or `key=value` form) that never shows its password.
///
/// It is parsed by libpq itself (`PQconninfoParse`), so whatever libpq accepts is accepted,
/// and libpq's own marking of secret options (`password`, `sslpassword`) says what to hide.
#[derive(Clone)]
pub struct DatabaseUrl {
    raw: String,
    /// Values never to show (libpq's secret options).
    secrets: Vec<String>,
    /// The string's other values (user, database, host, ...).
    ordinary: Vec<String>,
}

/// Secrets at least this long are masked wherever they appear; shorter ones only where a
/// password is written.
const SCRUB_ANYWHERE: usize = 6;

/// One option of a parsed connection string.
struct ConnOption {
    keyword: String,
    value: String,
    secret: bool,
}

impl DatabaseUrl {
    /// Checks that libpq can parse `raw`; the error never shows the password.
    pub(crate) fn validate(raw: &str) -> Result<(), String> {
        match conninfo_parse(raw.trim()) {
            Ok(_) => Ok(()),
            Err(e) => {
                let hidden = DatabaseUrl {
                    raw: String::new(),
                    secrets: password_guesses(raw),
                    ordinary: Vec::new(),
                };
                Err(format!("the database URL cannot be used: {}", hidden.scrub(e.trim())))
            }
        }
    }

    /// Wraps a connection string as given (the timeout is added when the run connects).
    pub(crate) fn as_given(raw: &str) -> DatabaseUrl {
        let raw = raw.trim();
        let options = conninfo_parse(raw).unwrap_or_default();
        DatabaseUrl::wrap(raw.to_string(), raw, &options)
    }

    /// `raw` with the secrets and ordinary values of `options` (parsed from `original`).
    fn wrap(raw: String, original: &str, options: &[ConnOption]) -> DatabaseUrl {
        let (secret, ordinary): (Vec<&ConnOption>, Vec<&ConnOption>) = options.iter().partition(|o| o.secret);
        let mut secrets: Vec<String> = secret.iter().map(|o| o.value.clone()).collect();
        secrets.extend(password_guesses(original));
        DatabaseUrl {
            raw,
            secrets,
            ordinary: ordinary.iter().map(|o| o.value.clone()).collect(),
        }
    }

    /// Wraps a connection string, adding what it does not set itself: `connect_timeout`
    /// (whole seconds, at least 1), `application_name` (`migrate-tenants <version> pid <pid>`,
    /// so that `pg_stat_activity` and a waiting runner can name us) and TCP keepalives (a
    /// dead peer is noticed within about a minute instead of the kernel's two hours).
    pub fn new(raw: &str, connect_timeout: Duration) -> DatabaseUrl {
        let trimmed = raw.trim();
        let options = conninfo_parse(trimmed).unwrap_or_default();
        if options.is_empty() {
            // As given: one libpq cannot parse fails at connect, scrubbed.
            return DatabaseUrl::wrap(trimmed.to_string(), trimmed, &options);
        }
        let has = |key: &str| options.iter().any(|o| o.keyword == key);
        let application = format!(
            "migrate-tenants {} pid {}",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        );
        let defaults = [
            ("connect_timeout", connect_timeout.as_secs().max(1).to_string()),
            ("application_name", application),
            ("keepalives", "1".into()),
            ("keepalives_idle", "30".into()),
            ("keepalives_interval", "10".into()),
            ("keepalives_count", "3".into()),
        ];
        // Rebuilt in key=value form from what libpq parsed: appending to a URL is not safe
        // (a `?` may belong to the password).
        let pairs: Vec<String> = options
            .iter()
            .map(|o| (o.keyword.as_str(), o.value.clone()))
            .chain(defaults.into_iter().filter(|(key, _)| !has(key)))
            .map(|(key, value)| format!("{key}={}", conninfo_quote(&value)))
            .collect();
        DatabaseUrl::wrap(pairs.join(" "), trimmed, &options)
    }

    /// The full connection string, password included. Only for handing to libpq.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The host the string names (the first one, for a multi-host string), if any.
    pub fn host(&self) -> Option<String> {
        let options = conninfo_parse(&self.raw).ok()?;
        let host = options
            .iter()
            .find(|o| o.keyword == "host" || o.keyword == "hostaddr")?;
        host.value
            .split(',')
            .next()
            .map(str::to_string)
            .filter(|h| !h.is_empty())
    }

    /// `text` with every secret (as typed, or percent-encoded) replaced by `***`.
    ///
    /// A second line of defence: nothing formats the raw string (see `Display`). A secret
    /// long enough not to occur by chance is masked wherever it appears; a short one, or one
    /// equal to another value of the string (a password that is also the user or database
    /// name), only where a password is written (`:secret@`, `password=secret`), so that
    /// ordinary words are not mangled and the mask does not give away the equality.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in self.secrets.iter().filter(|s| !s.is_empty()) {
            let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            let percent = form.replace('+', "%20");
            let anywhere = secret.chars().count() >= SCRUB_ANYWHERE && !self.ordinary.contains(secret);
            for shown in [secret.as_str(), form.as_str(), percent.as_str()] {
                out = if anywhere {
                    out.replace(shown, "***")
                } else {
                    out.replace(&format!(":{shown}@"), ":***@")
                        .replace(&format!("password={shown}"), "password=***")
                        .replace(&format!("password='{shown}'"), "password='***'")
                };
            }
        }
        out
    }
}

/// Shows where the string points (`host`, `hostaddr`, `port`, `dbname`, `user`) as
/// `key=value`, and `password=***` when it has one.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: [&str; 6] = ["host", "hostaddr", "port", "dbname", "user", "password"];
        let Ok(options) = conninfo_parse(&self.raw) else {
            return f.write_str("<connection string libpq cannot parse>");
        };
        let shown: Vec<String> = options
            .iter()
            .filter(|o| SHOWN.contains(&o.keyword.as_str()))
            .map(|o| format!("{}={}", o.keyword, if o.secret { "***" } else { o.value.as_str() }))
            .collect();
        f.write_str(&self.scrub(&shown.join(" ")))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// A value quoted for a libpq key=value string.
fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn is_url(raw: &str) -> bool {
    raw.starts_with("postgres://") || raw.starts_with("postgresql://")
}

/// What may be a password in a string libpq could not parse, so that even its parse
/// errors never show it: a URL's userinfo password (libpq's userinfo runs to the first `@`
/// before any `/`; the last `@` is guessed too), and every `password=` value (a URL query
/// value runs to `&`; a keyword value is quoted or runs to whitespace).
fn password_guesses(raw: &str) -> Vec<String> {
    let mut guesses = Vec::new();
    if let Some((_, rest)) = raw.split_once("://") {
        let authority = rest.split('/').next().unwrap_or("");
        let userinfos = [
            authority.split_once('@').map(|(u, _)| u),
            authority.rsplit_once('@').map(|(u, _)| u),
        ];
        for userinfo in userinfos.into_iter().flatten() {
            if let Some((_, password)) = userinfo.split_once(':') {
                guesses.push(password.to_string());
            }
        }
    }
    for (i, _) in raw.match_indices("password=") {
        let after = &raw[i + "password=".len()..];
        let value = if is_url(raw) {
            after.split('&').next().unwrap_or("").to_string()
        } else if let Some(quoted) = after.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    c => value.push(c),
                }
            }
            value
        } else {
            after.split_whitespace().next().unwrap_or("").to_string()
        };
        guesses.push(value);
    }
    guesses.retain(|g| !g.is_empty());
    guesses
}

/// Parses a connection string with libpq's `PQconninfoParse`: the options it sets.
fn conninfo_parse(raw: &str) -> Result<Vec<ConnOption>, String> {
    use std::ffi::{CStr, CString};
    let text = |p: *const std::os::raw::c_char| -> String {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: libpq returns NUL-terminated strings that live until PQconninfoFree.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let c = CString::new(raw).map_err(|_| "the connection string contains a NUL byte".to_string())?;
    let mut error: *mut std::os::raw::c_char = std::ptr::null_mut();
    // SAFETY: `c` is a valid C string; on success libpq returns an array terminated by an
    // entry with a NULL keyword, freed below with PQconninfoFree; on failure it may set
    // `error`, which is freed with PQfreemem.
    unsafe {
        let options = pq_sys::PQconninfoParse(c.as_ptr(), &mut error);
        if options.is_null() {
            let message = if error.is_null() {
                "libpq could not parse it".to_string()
            } else {
                text(error)
            };
            if !error.is_null() {
                pq_sys::PQfreemem(error.cast());
            }
            return Err(message);
        }
        let mut parsed = Vec::new();
        let mut option = options;
        while !(*option).keyword.is_null() {
            if !(*option).val.is_null() {
                let dispchar = text((*option).dispchar);
                parsed.push(ConnOption {
                    keyword: text((*option).keyword),
                    value: text((*option).val),
                    secret: dispchar.starts_with('*'),
                });
            }
            option = option.add(1);
        }
        pq_sys::PQconninfoFree(options);
        Ok(parsed)
    }
}

/// The pool type the runner works with: diesel's r2d2 pool of `PgConnection`s, the same type
/// an application already has.
pub type Pool = r2d2::Pool<ConnectionManager<PgConnection>>;

/// A connection checked out of a [`Pool`].
pub(crate) type PooledConn = PooledConnection<ConnectionManager<PgConnection>>;

/// Makes sure the pool closes `conn` instead of handing it out again, after a unit of work
/// could not undo its session state (lock, `search_path`, settings).
///
/// r2d2 asks diesel, when a connection comes back, whether it is broken; diesel says yes
/// while its transaction manager is in error. Setting that state needs no round trip, so it
/// works on a dead connection too.
pub(crate) fn mark_broken(conn: &mut PgConnection) {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    AnsiTransactionManager::transaction_manager_status_mut(conn).set_in_error();
}

/// Undoes whatever session state a migration may have left behind (`SET` of any setting,
/// `SET ROLE`, `SET SESSION AUTHORIZATION`, temporary tables, `LISTEN`, cursors, `PREPARE`d
/// statements), so the next tenant on this pooled connection starts clean. `RESET ALL`
/// keeps settings given at connection time (URL `options`) but also undoes the two diesel
/// sets when it connects, so they are set again. Never `DISCARD ALL`: it would drop
/// diesel's own prepared statements (protocol-level, `from_sql = false`) and the lock.
pub(crate) const SESSION_RESET: &str = "RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL; \
    SET TIME ZONE 'UTC'; SET CLIENT_ENCODING TO 'UTF8'; DISCARD TEMP; UNLISTEN *; CLOSE ALL;\n\
    DO $mt$DECLARE s text; BEGIN FOR s IN SELECT name FROM pg_prepared_statements WHERE from_sql LOOP \
    EXECUTE format('DEALLOCATE %I', s); END LOOP; END$mt$;";

/// The database could not be reached (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {url}: {message}")]
#[non_exhaustive]
pub struct Unreachable {
    /// The URL, password hidden.
    pub url: String,
    /// libpq's message, password scrubbed.
    pub message: String,
}

/// Where a run connects: a URL (the runner builds its own pool) or an application's pool.
#[derive(Clone, Debug)]
pub(crate) enum Connector {
    /// A connection string.
    Url(DatabaseUrl),
    /// An existing pool (its size bounds the runner's concurrency).
    Pool(Pool),
}

/// The control connection: the runner's own, or one taken from the application's pool.
pub(crate) enum Control {
    Direct(PgConnection),
    Pooled(Box<PooledConn>),
}

impl std::ops::Deref for Control {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Control::Direct(c) => c,
            Control::Pooled(c) => c,
        }
    }
}

impl std::ops::DerefMut for Control {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Control::Direct(c) => c,
            Control::Pooled(c) => c,
        }
    }
}

/// The server a run works on, as the server itself reports it (never a password).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Target {
    /// Host name or address as given in the URL, else the server's address, else
    /// `local socket`.
    pub host: String,
    /// The server's port.
    pub port: Option<u16>,
    /// The database.
    pub database: String,
    /// The role the runner is connected as.
    pub user: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "/{}", self.database)
    }
}

#[derive(QueryableByName)]
struct TargetRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    database: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    user: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    host: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    port: Option<i32>,
}

/// A reachable database: one control connection and a pool for the workers.
pub(crate) struct Database {
    /// For discovery, the catalog pass and shared migrations.
    pub(crate) control: Control,
    /// The workers' connections.
    pub(crate) workers: Workers,
    /// What the run works on.
    pub(crate) target: Target,
}

/// The workers' side of a database: the pool and how many workers it can feed (shared by
/// the worker threads).
pub(crate) struct Workers {
    pool: Pool,
    /// How many workers the pool can feed.
    pub(crate) count: usize,
    /// Hides the password in messages (URL mode).
    url: Option<DatabaseUrl>,
    /// SQL run on each connection at checkout (`Runner::session_sql`).
    pub(crate) session_sql: Option<String>,
}

impl Workers {
    /// `text` without the password (URL mode).
    pub(crate) fn scrub(&self, text: &str) -> String {
        match &self.url {
            Some(url) => url.scrub(text),
            None => text.to_string(),
        }
    }

    /// Whether the server answers a new connection (URL mode; with an application's pool the
    /// runner cannot tell, and assumes it does).
    pub(crate) fn server_reachable(&self) -> bool {
        match &self.url {
            Some(url) => PgConnection::establish(url.expose()).is_ok(),
            None => true,
        }
    }

    /// A pooled connection for one tenant; the error says why there is none (password hidden).
    /// A connection of the application's pool is reset first: the application may have left
    /// anything on it.
    pub(crate) fn checkout(&self) -> Result<PooledConn, String> {
        let mut conn = self.pool.get().map_err(|e| self.scrub(&e.to_string()))?;
        if self.url.is_none() {
            if let Err(e) = conn.batch_execute(SESSION_RESET) {
                mark_broken(&mut conn);
                return Err(format!("resetting a connection of the application's pool: {e}"));
            }
        }
        if let Some(sql) = &self.session_sql {
            if let Err(e) = conn.batch_execute(sql) {
                mark_broken(&mut conn);
                return Err(format!("running the session SQL: {e}"));
            }
        }
        Ok(conn)
    }
}

impl Database {
    /// Connects: with a URL, once directly (failing within its `connect_timeout`, with
    /// libpq's own message) and then a lazy pool of `workers` connections; with a pool, by
    /// taking the control connection from it.
    pub(crate) fn connect(
        connector: &Connector,
        workers: usize,
        connect_timeout: Duration,
    ) -> Result<Database, Unreachable> {
        let workers = workers.max(1);
        let (mut control, pool, workers, url) = match connector {
            Connector::Url(url) => {
                let unreachable = |e: &dyn fmt::Display| Unreachable {
                    url: url.to_string(),
                    message: url.scrub(e.to_string().trim()),
                };
                let control = PgConnection::establish(url.expose()).map_err(|e| unreachable(&e))?;
                let pool = r2d2::Pool::builder()
                    .max_size(workers as u32)
                    .min_idle(Some(0))
                    .connection_timeout(connect_timeout + Duration::from_secs(5))
                    .error_handler(Box::new(QuietErrors(url.clone())))
                    .build(ConnectionManager::new(url.expose()))
                    .map_err(|e| unreachable(&e))?;
                (Control::Direct(control), pool, workers, Some(url.clone()))
            }
            Connector::Pool(pool) => {
                let unreachable = |e: &dyn fmt::Display| Unreachable {
                    url: "the application's connection pool".into(),
                    message: e.to_string(),
                };
                let mut control = pool.get().map_err(|e| unreachable(&e))?;
                // Whatever the application left on the connection (a role, a search_path,
                // settings) must not shape the run.
                control.batch_execute(SESSION_RESET).map_err(|e| unreachable(&e))?;
                // Connections the application holds are not the runner's to wait for.
                let state = pool.state();
                let in_use = state.connections.saturating_sub(state.idle_connections) as usize;
                let free = (pool.max_size() as usize).saturating_sub(in_use);
                (
                    Control::Pooled(Box::new(control)),
                    pool.clone(),
                    workers.min(free),
                    None,
                )
            }
        };
        let target = read_target(&mut control, url.as_ref())?;
        Ok(Database {
            control,
            workers: Workers {
                pool,
                count: workers,
                url,
                session_sql: None,
            },
            target,
        })
    }
}

/// What the control connection is connected to; the host as the URL gives it when it does.
fn read_target(conn: &mut PgConnection, url: Option<&DatabaseUrl>) -> Result<Target, Unreachable> {
    let row = diesel::sql_query(
        "SELECT current_database()::text AS database, current_user::text AS user, \
         host(inet_server_addr()) AS host, inet_server_port() AS port",
    )
    .get_result::<TargetRow>(conn)
    .map_err(|e| Unreachable {
        url: url.map_or_else(|| "the application's connection pool".into(), ToString::to_string),
        message: format!("connected, but reading the server's identity failed: {e}"),
    })?;
    let given = url.and_then(DatabaseUrl::host);
    Ok(Target {
        host: given.or(row.host).unwrap_or_else(|| "local socket".into()),
        port: row.port.and_then(|p| u16::try_from(p).ok()),
        database: row.database,
        user: row.user,
    })
}

/// Logs pool errors at debug level, password scrubbed (the first error already reached
/// the user through [`Database::connect`] or the tenant's report).
#[derive(Debug)]
struct QuietErrors(DatabaseUrl);

impl r2d2::HandleError<diesel::r2d2::Error> for QuietErrors {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        log::debug!("connection pool: {}", self.0.scrub(&error.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(raw: &str) -> DatabaseUrl {
        DatabaseUrl::new(raw, Duration::from_secs(7))
    }

    #[test]
    fn password_never_shown() {
        let u = url("postgres://app:s%40cret@db:5432/main");
        let shown = u.to_string();
        assert!(!shown.contains("cret"), "{shown}");
        assert!(shown.contains("password=***") && shown.contains("host=db") && shown.contains("dbname=main"));
        assert!(u.expose().contains("connect_timeout='7'"), "{}", u.expose());
        assert!(!format!("{u:?}").contains("cret"));
        assert!(u.expose().contains("password='s@cret'"), "{}", u.expose());
        assert_eq!(u.scrub("bad password s@cret and s%40cret"), "bad password *** and ***");
    }

    #[test]
    fn every_form_libpq_takes_is_accepted_and_hidden() {
        let forms = [
            "postgresql://app@db/main?password=hunter2&sslmode=disable",
            "host=db port=1 password='open \\'hunter2' dbname=x",
            "postgresql://app:hunter2@h1:5432,h2:5433/appdb",
            "postgresql://app:hunter2@/db?host=/tmp",
        ];
        for raw in forms {
            assert!(DatabaseUrl::validate(raw).is_ok(), "{raw}");
            let shown = url(raw).to_string();
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        let expanded = url("host=db dbname=x");
        assert!(
            expanded
                .expose()
                .starts_with("dbname='x' host='db' connect_timeout='7' application_name='migrate-tenants "),
            "{}",
            expanded.expose()
        );
        assert!(expanded
            .expose()
            .ends_with("keepalives='1' keepalives_idle='30' keepalives_interval='10' keepalives_count='3'"));
        let own = url("host=db application_name=mine keepalives=0");
        assert!(own.expose().contains("application_name='mine'") && own.expose().contains("keepalives='0'"));
        let given = url("postgres://h/db?connect_timeout=2");
        assert!(
            given.expose().starts_with("connect_timeout='2' dbname='db' host='h' "),
            "{}",
            given.expose()
        );
    }

    #[test]
    fn short_passwords_and_passwords_equal_to_other_values_are_masked_only_where_written() {
        let short = url("postgres://app:a@db/accounts");
        assert_eq!(
            short.scrub("relation \"accounts\" at postgres://app:a@db and password=a"),
            "relation \"accounts\" at postgres://app:***@db and password=***"
        );
        let same = url("postgres://postgres:postgres@db/postgres");
        assert_eq!(
            same.scrub("password authentication failed for user \"postgres\" (postgres://postgres:postgres@db)"),
            "password authentication failed for user \"postgres\" (postgres://postgres:***@db)"
        );
        let long = url("postgres://app:Sup3rS3cret@db/x");
        assert_eq!(long.scrub("echo Sup3rS3cret"), "echo ***");
    }

    #[test]
    fn invalid_strings_are_refused_without_their_password() {
        for raw in [
            "not a url",
            "host=h pasword=Sup3rSecret",
            "postgres://u:Sup3rSecret@[bad/x",
        ] {
            let error = DatabaseUrl::validate(raw).unwrap_err();
            assert!(!error.contains("Sup3rSecret"), "{error}");
        }
        assert_eq!(
            url("host=h pasword=Sup3rSecret").to_string(),
            "<connection string libpq cannot parse>"
        );
    }
}
