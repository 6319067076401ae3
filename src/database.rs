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
#[derive(Clone)]
pub struct DatabaseUrl {
    raw: String,
    password: Option<String>,
}

impl DatabaseUrl {
    /// Checks that `raw` is a `postgres://` / `postgresql://` URL or a libpq `key=value`
    /// string, without showing it (it may hold a password).
    pub fn validate(raw: &str) -> Result<(), String> {
        let raw = raw.trim();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return url::Url::parse(raw)
                .map(|_| ())
                .map_err(|e| format!("the database URL is not a valid URL ({e})"));
        }
        let pairs = conninfo_pairs(raw);
        if pairs.is_empty() || pairs.iter().any(|(k, _)| k.is_empty()) {
            return Err("the database URL is neither a postgres:// URL nor a key=value connection string".into());
        }
        Ok(())
    }

    /// Wraps a connection string, adding `connect_timeout` (whole seconds, at least 1)
    /// unless it already has one.
    pub fn new(raw: &str, connect_timeout: Duration) -> DatabaseUrl {
        let secs = connect_timeout.as_secs().max(1).to_string();
        match url::Url::parse(raw) {
            Ok(mut url) if matches!(url.scheme(), "postgres" | "postgresql") => {
                // libpq also takes the password as a query parameter.
                let password = url.password().map(percent_decode).or_else(|| {
                    url.query_pairs()
                        .find(|(k, _)| k == "password")
                        .map(|(_, v)| v.into_owned())
                });
                if !url.query_pairs().any(|(k, _)| k == "connect_timeout") {
                    url.query_pairs_mut().append_pair("connect_timeout", &secs);
                }
                DatabaseUrl {
                    raw: url.to_string(),
                    password,
                }
            }
            _ => {
                let pairs = conninfo_pairs(raw);
                let password = pairs.iter().find(|(k, _)| k == "password").map(|(_, v)| v.clone());
                let mut raw = raw.trim().to_string();
                if !pairs.iter().any(|(k, _)| k == "connect_timeout") {
                    raw.push_str(&format!(" connect_timeout={secs}"));
                }
                DatabaseUrl { raw, password }
            }
        }
    }

    /// The full connection string, password included. Only for handing to libpq.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// `text` with every occurrence of the password (as typed, or percent-encoded)
    /// replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => {
                let encoded: String = url::form_urlencoded::byte_serialize(p.as_bytes()).collect();
                let percent = url::Url::parse("postgres://u@h/").ok().and_then(|mut u| {
                    u.set_password(Some(p)).ok()?;
                    u.password().map(str::to_string)
                });
                let mut out = text.replace(p.as_str(), "***").replace(&encoded, "***");
                if let Some(percent) = percent {
                    out = out.replace(&percent, "***");
                }
                out
            }
            _ => text.to_string(),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.raw) {
            Ok(mut url) if matches!(url.scheme(), "postgres" | "postgresql") => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                if pairs.iter().any(|(k, _)| k == "password") {
                    let mut query = url.query_pairs_mut();
                    query.clear();
                    for (k, v) in &pairs {
                        query.append_pair(k, if k == "password" { "***" } else { v });
                    }
                }
                write!(f, "{url}")
            }
            // The key=value form: show everything but the password.
            _ => {
                let shown: Vec<String> = conninfo_pairs(&self.raw)
                    .into_iter()
                    .filter(|(k, _)| !k.is_empty())
                    .map(|(k, v)| {
                        if k == "password" {
                            format!("{k}=***")
                        } else {
                            format!("{k}={v}")
                        }
                    })
                    .collect();
                f.write_str(&self.scrub(&shown.join(" ")))
            }
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("p={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// The `key = value` pairs of a libpq keyword/value string: values may be single-quoted,
/// with `\'` and `\\` escapes (libpq's rules).
fn conninfo_pairs(conninfo: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = conninfo.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        if key.is_empty() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            pairs.push((key, String::new()));
            pairs.push((String::new(), String::new())); // marks the string as malformed
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
    pairs
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

    #[test]
    fn password_never_shown() {
        let url = DatabaseUrl::new("postgres://app:s%40cret@db:5432/main", Duration::from_secs(7));
        assert_eq!(url.to_string(), "postgres://app:***@db:5432/main?connect_timeout=7");
        assert!(!format!("{url:?}").contains("cret"));
        assert!(url.expose().contains("s%40cret"));
        assert_eq!(
            url.scrub("bad password s@cret and s%40cret"),
            "bad password *** and ***"
        );
    }

    #[test]
    fn password_as_a_query_parameter_is_hidden() {
        let url = DatabaseUrl::new(
            "postgresql://app@db/main?password=hunter2&sslmode=disable",
            Duration::from_secs(3),
        );
        let shown = url.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sslmode=disable"));
        assert_eq!(url.scrub("error near hunter2"), "error near ***");
    }

    #[test]
    fn quoted_keyword_password_is_hidden() {
        let url = DatabaseUrl::new(
            "host=db port=1 password='open \\'sesame' dbname=x",
            Duration::from_secs(3),
        );
        let shown = url.to_string();
        assert!(!shown.contains("open") && !shown.contains("sesame"), "{shown}");
        assert!(shown.contains("host=db") && shown.contains("connect_timeout=3"));
        assert_eq!(url.scrub("x open 'sesame y"), "x *** y");
    }

    #[test]
    fn keyword_form() {
        let url = DatabaseUrl::new("host=db password=hunter2 dbname=x", Duration::from_secs(3));
        assert_eq!(url.expose(), "host=db password=hunter2 dbname=x connect_timeout=3");
        assert!(!url.to_string().contains("hunter2"));
    }

    #[test]
    fn existing_timeout_kept() {
        let url = DatabaseUrl::new("postgres://h/db?connect_timeout=2", Duration::from_secs(9));
        assert_eq!(url.expose(), "postgres://h/db?connect_timeout=2");
    }
}
