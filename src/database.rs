/*!
The database URL and the connection pool.

[`DatabaseUrl`] is the only holder of the connection string: its `Display` and `Debug`
never show the password, and [`DatabaseUrl::scrub`] removes it from any text that might
echo it. [`Database::connect`] fails fast and clearly when the server is unreachable
(one direct connection with libpq's `connect_timeout`, instead of r2d2's silent
30-second retry loop), then builds a pool whose connections are discarded, not reused,
whenever a unit of work did not finish cleaning up after itself.
*/

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, ManageConnection};
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
}

/// One option of a parsed connection string.
struct ConnOption {
    keyword: String,
    value: String,
    secret: bool,
}

impl DatabaseUrl {
    /// Checks that libpq can parse `raw`; the error never shows the password.
    pub fn validate(raw: &str) -> Result<(), String> {
        match conninfo_parse(raw.trim()) {
            Ok(_) => Ok(()),
            Err(e) => {
                let hidden = DatabaseUrl {
                    raw: String::new(),
                    secrets: password_guesses(raw),
                };
                Err(format!("the database URL cannot be used: {}", hidden.scrub(e.trim())))
            }
        }
    }

    /// Wraps a connection string, adding `connect_timeout` (whole seconds, at least 1)
    /// unless it already has one.
    pub fn new(raw: &str, connect_timeout: Duration) -> DatabaseUrl {
        let raw = raw.trim();
        let options = conninfo_parse(raw).unwrap_or_default();
        let mut secrets: Vec<String> = options.iter().filter(|o| o.secret).map(|o| o.value.clone()).collect();
        secrets.extend(password_guesses(raw));
        let has_timeout = options.iter().any(|o| o.keyword == "connect_timeout");
        let raw = if options.is_empty() || has_timeout {
            raw.to_string() // as given (one libpq cannot parse fails at connect, scrubbed)
        } else {
            // Rebuilt in key=value form from what libpq parsed: appending to a URL is
            // not safe (a `?` may belong to the password).
            let secs = connect_timeout.as_secs().max(1);
            let pairs = options
                .iter()
                .map(|o| format!("{}={}", o.keyword, conninfo_quote(&o.value)));
            pairs
                .chain(std::iter::once(format!("connect_timeout={secs}")))
                .collect::<Vec<_>>()
                .join(" ")
        };
        DatabaseUrl { raw, secrets }
    }

    /// The full connection string, password included. Only for handing to libpq.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// `text` with every secret (as typed, or percent-encoded) replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in self.secrets.iter().filter(|s| !s.is_empty()) {
            let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            let percent = form.replace('+', "%20");
            out = out
                .replace(secret.as_str(), "***")
                .replace(&form, "***")
                .replace(&percent, "***");
        }
        out
    }
}

/// Shows the options libpq parsed, as `key=value`, secrets as `***`.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(options) = conninfo_parse(&self.raw) else {
            return f.write_str("<connection string libpq cannot parse>");
        };
        let shown: Vec<String> = options
            .iter()
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

/// A pooled connection plus whether its last unit of work left it clean.
pub struct Session {
    /// The diesel connection.
    pub conn: PgConnection,
    /// `false` while a unit of work is in progress or after it failed to clean up;
    /// such a connection is closed instead of being handed to the next tenant.
    pub clean: bool,
}

/// r2d2 manager for [`Session`]s: diesel's manager plus the `clean` flag.
#[derive(Debug)]
pub struct SessionManager(ConnectionManager<PgConnection>);

impl ManageConnection for SessionManager {
    type Connection = Session;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<Session, Self::Error> {
        self.0.connect().map(|conn| Session { conn, clean: true })
    }

    fn is_valid(&self, session: &mut Session) -> Result<(), Self::Error> {
        self.0.is_valid(&mut session.conn)
    }

    fn has_broken(&self, session: &mut Session) -> bool {
        !session.clean || self.0.has_broken(&mut session.conn)
    }
}

/// The pool type the runner uses.
pub type Pool = r2d2::Pool<SessionManager>;

/// The database could not be reached (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {url}: {message}")]
pub struct Unreachable {
    /// The URL, password hidden.
    pub url: String,
    /// libpq's message, password scrubbed.
    pub message: String,
}

/// A reachable database: one control connection and a pool for the workers.
pub struct Database {
    /// For discovery, the catalog pass and shared migrations.
    pub control: Session,
    /// One connection per worker, created on demand.
    pub pool: Pool,
    /// The URL the pool connects with.
    pub url: DatabaseUrl,
}

impl Database {
    /// Connects once (failing within the URL's `connect_timeout`) and prepares a pool of
    /// `size` connections, opened lazily.
    pub fn connect(url: &DatabaseUrl, size: usize, connect_timeout: Duration) -> Result<Database, Unreachable> {
        let unreachable = |e: &dyn fmt::Display| Unreachable {
            url: url.to_string(),
            message: url.scrub(e.to_string().trim()),
        };
        let control = PgConnection::establish(url.expose()).map_err(|e| unreachable(&e))?;
        let pool = r2d2::Pool::builder()
            .max_size(size.max(1) as u32)
            .min_idle(Some(0))
            .connection_timeout(connect_timeout + Duration::from_secs(5))
            .error_handler(Box::new(QuietErrors(url.clone())))
            .build(SessionManager(ConnectionManager::new(url.expose())))
            .map_err(|e| unreachable(&e))?;
        Ok(Database {
            control: Session {
                conn: control,
                clean: true,
            },
            pool,
            url: url.clone(),
        })
    }
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
        assert!(shown.contains("password=***") && shown.contains("host=db") && shown.contains("connect_timeout=7"));
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
        assert_eq!(
            url("host=db dbname=x").expose(),
            "dbname='x' host='db' connect_timeout=7"
        );
        assert_eq!(
            url("postgres://h/db?connect_timeout=2").expose(),
            "postgres://h/db?connect_timeout=2"
        );
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
