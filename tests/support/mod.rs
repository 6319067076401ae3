//! Shared helpers for the integration tests: a throwaway PostgreSQL server (or the one named by
//! `TEST_DATABASE_URL`), one fresh database per test, psql helpers and a sanitised `Command` for
//! the `migrate-tenants` binary.
//!
//! Without `TEST_DATABASE_URL`, one cluster is started per test process in a private temporary
//! directory. Statics are never dropped, so a detached watchdog shell waits for the test process
//! to exit, then stops the cluster (immediate shutdown) and deletes the directory.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Environment variables that would change what the binary under test does.
const SCRUBBED_ENV: &[&str] = &[
    "DATABASE_URL",
    "TENANTS",
    "TENANTS_QUERY",
    "TENANT_SCHEMA_PATTERN",
    "MIGRATION_DIRECTORY",
    "SHARED_MIGRATION_DIRECTORY",
    "MIGRATE_TENANTS_LINT_ALLOW",
    "MIGRATE_TENANTS_CITUS",
    "MIGRATE_TENANTS_SESSION_SQL",
    "RUST_LOG",
    "DIESEL_CONFIG_FILE",
    "MIGRATE_TENANTS_FLEET",
];

/// OS user that owns and runs the throwaway cluster when the tests run as root.
const PG_OS_USER: &str = "postgres";

static SERVER_URL: OnceLock<String> = OnceLock::new();
static WORK_DIR: OnceLock<PathBuf> = OnceLock::new();
static PG_BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
static DB_COUNTER: AtomicUsize = AtomicUsize::new(0);
static CLI_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// URL of a maintenance database ("postgres") on the test server.
pub fn server_url() -> &'static str {
    SERVER_URL.get_or_init(|| match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
        _ => start_cluster(),
    })
}

/// A fresh database for one test; dropped (WITH (FORCE)) on Drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        let server = server_url();
        let name = format!(
            "mt_{}_{}",
            std::process::id(),
            DB_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        psql_script(server, &format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("could not create test database {name}: {e}"));
        let url = url_with_database(server, &name);
        TestDb { name, url }
    }

    /// Run SQL (may contain several statements) with `psql -X -q -v ON_ERROR_STOP=1`;
    /// panics with psql's stderr on failure.
    pub fn exec(&self, sql: &str) {
        if let Err(e) = psql_script(&self.url, sql) {
            panic!("SQL failed in database {}:\n{sql}\n{e}", self.name);
        }
    }

    /// Run one query with `psql -X -At` and return trimmed stdout (rows separated by '\n',
    /// columns by '|'); panics on failure.
    pub fn query(&self, sql: &str) -> String {
        let out = psql_command(&self.url)
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("could not run psql: {e}"));
        if !out.status.success() {
            panic!(
                "query failed in database {} ({}):\n{sql}\n{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A URL for this database with a password embedded (user `postgres` unless the server URL
    /// names another user). The test server uses trust auth, so it still connects.
    pub fn url_with_password(&self, password: &str) -> String {
        let (scheme, authority, rest) = split_url(&self.url);
        let (user, host) = match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let user = userinfo.split(':').next().unwrap_or("");
                (user, &authority[at + 1..])
            }
            None => ("", authority),
        };
        let user = if user.is_empty() { "postgres" } else { user };
        format!("{scheme}{user}:{}@{host}{rest}", percent_encode(password))
    }
}

impl Default for TestDb {
    fn default() -> Self {
        TestDb::new()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(e) = psql_script(server_url(), &sql) {
            // Never panic in Drop (it may run during unwinding); the cluster is throwaway anyway.
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

/// `std::process::Command` for the migrate-tenants binary, with the configuration environment
/// variables removed and the current directory set to a fresh empty directory (so no `.env` or
/// `diesel.toml` is picked up), and the tests' basic fixture set as `MIGRATION_DIRECTORY`
/// (the stock binary has no migrations of its own; `--migrations-dir` wins over it, and
/// tests of the directory lookup remove it).
pub fn cli() -> Command {
    let dir = work_dir().join(format!("cli-{}", CLI_COUNTER.fetch_add(1, Ordering::SeqCst)));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("could not create {}: {e}", dir.display()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_migrate-tenants"));
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd.env(
        "MIGRATION_DIRECTORY",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/basic"),
    );
    cmd.current_dir(dir);
    cmd
}

/// Output of a finished command.
#[derive(Debug)]
pub struct Out {
    /// Exit code; -1 if the process was killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run a command to completion, echoing its output to the test's output for debugging.
pub fn run(cmd: &mut Command) -> Out {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    let out = Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!(
        "$ {cmd:?}\n--- exit code {} ---\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
        out.code, out.stdout, out.stderr
    );
    out
}

// ---------------------------------------------------------------------------------------------
// psql helpers

/// Runs one query on `url` with `psql -X -At`; trimmed stdout (panics on failure).
pub fn query_url(url: &str, sql: &str) -> String {
    let out = psql_command(url)
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run psql: {e}"));
    if !out.status.success() {
        panic!(
            "query failed on {url}:\n{sql}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs SQL on `url` (panics with psql's stderr on failure).
pub fn exec_url(url: &str, sql: &str) {
    if let Err(e) = psql_script(url, sql) {
        panic!("SQL failed on {url}:\n{sql}\n{e}");
    }
}

/// A background `psql -c <sql>` session, e.g. to hold a lock; its backend is terminated and
/// the client killed on Drop.
pub struct Background {
    child: std::process::Child,
    url: String,
    /// Its `application_name`, to find its backend.
    pub name: String,
}

static BACKGROUND_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Background {
    pub fn start(url: &str, sql: &str) -> Background {
        let name = format!(
            "mt-test-bg-{}-{}",
            std::process::id(),
            BACKGROUND_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let child = psql_command(url)
            .env("PGAPPNAME", &name)
            .args(["-X", "-q", "-c", sql])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not run psql: {e}"));
        Background {
            child,
            url: url.to_string(),
            name,
        }
    }

    /// Waits (up to 20 s) until `sql` returns `t` on `url`.
    pub fn wait_for(&self, sql: &str) {
        wait_until(&self.url, sql, std::time::Duration::from_secs(20));
    }

    /// Whether the session is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Polls `sql` on `url` until it returns `t`; panics after `limit`.
pub fn wait_until(url: &str, sql: &str, limit: std::time::Duration) {
    let start = std::time::Instant::now();
    while query_url(url, sql) != "t" {
        assert!(start.elapsed() < limit, "timed out waiting for: {sql}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = psql_script(
            &self.url,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{}'",
                self.name
            ),
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn psql_command(url: &str) -> Command {
    let psql = find_psql();
    let mut cmd = Command::new(psql);
    cmd.arg("-d").arg(url);
    cmd.env("PGCONNECT_TIMEOUT", "10");
    cmd
}

/// Feed `sql` to psql on stdin (so several statements run one after another, each in its own
/// transaction unless the script says otherwise). Returns stderr on failure.
fn psql_script(url: &str, sql: &str) -> Result<(), String> {
    let mut child = psql_command(url)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not run psql: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("psql has no stdin")?;
    let script = sql.to_string();
    // Write from a thread so a large script cannot deadlock against psql's output.
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("could not wait for psql: {e}"))?;
    let written = writer.join().map_err(|_| "psql stdin writer panicked")?;
    if !out.status.success() {
        return Err(format!(
            "psql {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    written.map_err(|e| format!("could not write SQL to psql: {e}"))
}

fn find_psql() -> PathBuf {
    if let Some(p) = find_on_path("psql") {
        return p;
    }
    if let Some(bin) = pg_bin_dir() {
        let p = bin.join("psql");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "psql not found on PATH nor under /usr/lib/postgresql/*/bin; \
         run scripts/test (it installs PostgreSQL) or set TEST_DATABASE_URL"
    );
}

// ---------------------------------------------------------------------------------------------
// URL helpers

/// Split `scheme://authority/rest` into ("scheme://", "authority", "/rest?query").
fn split_url(url: &str) -> (&str, &str, &str) {
    let after_scheme = url
        .find("://")
        .map(|i| i + 3)
        .unwrap_or_else(|| panic!("not a postgres URL (expected postgres://...): {url}"));
    let rest_start = url[after_scheme..]
        .find(['/', '?'])
        .map(|i| after_scheme + i)
        .unwrap_or(url.len());
    (&url[..after_scheme], &url[after_scheme..rest_start], &url[rest_start..])
}

/// The same server URL, pointing at database `db` (query parameters are kept).
fn url_with_database(server: &str, db: &str) -> String {
    let (scheme, authority, rest) = split_url(server);
    let query = rest.find('?').map(|i| &rest[i..]).unwrap_or("");
    format!("{scheme}{authority}/{db}{query}")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Throwaway cluster

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata("/proc/self") {
        return m.uid() == 0;
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Directory holding `initdb` and `pg_ctl`: PATH first, then the newest
/// /usr/lib/postgresql/<version>/bin.
fn pg_bin_dir() -> Option<PathBuf> {
    PG_BIN
        .get_or_init(|| {
            if let Some(initdb) = find_on_path("initdb") {
                let dir = initdb.parent().map(Path::to_path_buf)?;
                if dir.join("pg_ctl").is_file() {
                    return Some(dir);
                }
            }
            let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
                })
                .collect();
            versions.sort();
            versions.pop().map(|(_, bin)| bin)
        })
        .clone()
}

/// Per-process scratch directory (cluster data + cli() working dirs), removed by the watchdog
/// after the test process exits.
fn work_dir() -> &'static Path {
    WORK_DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix(&format!("migrate-tenants-test-{}-", std::process::id()))
            .tempdir()
            .unwrap_or_else(|e| panic!("could not create a temporary directory: {e}"));
        // Statics are never dropped: take the path out of the TempDir guard and let the
        // watchdog delete it.
        let path = dir.path().to_path_buf();
        std::mem::forget(dir);
        if is_root() {
            // The postgres OS user must be able to traverse into its data directory.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711))
                .unwrap_or_else(|e| panic!("could not chmod {}: {e}", path.display()));
        }
        spawn_watchdog(&path);
        path
    })
}

/// Detached shell that waits for this process to exit, then shuts down a cluster left in
/// `<dir>/pg/data` (SIGQUIT = `pg_ctl -m immediate stop`) and deletes `dir`.
fn spawn_watchdog(dir: &Path) {
    const SCRIPT: &str = r#"
pid=$1; dir=$2
while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
pmfile="$dir/pg/data/postmaster.pid"
if [ -f "$pmfile" ]; then
  pm=$(head -n 1 "$pmfile")
  if [ -n "$pm" ] && kill -QUIT "$pm" 2>/dev/null; then
    i=0
    while kill -0 "$pm" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  fi
fi
rm -rf "$dir"
"#;
    let mut cmd = match find_on_path("setsid") {
        // New session: a Ctrl-C sent to the test's process group does not reach the watchdog.
        Some(setsid) => {
            let mut c = Command::new(setsid);
            c.arg("sh");
            c
        }
        None => Command::new("sh"),
    };
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("migrate-tenants-test-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Deliberately not waited for.
    if let Err(e) = cmd.spawn() {
        eprintln!(
            "warning: could not spawn cleanup watchdog ({e}); {} will be left behind",
            dir.display()
        );
    }
}

/// A command run as the cluster's OS user (`runuser -u postgres --` when root).
fn as_pg(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_OS_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: could not run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("could not find a free TCP port: {e}"))
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("could not append to {}: {e}", path.display()));
}

/// initdb + start a cluster private to this test process; returns its server URL.
fn start_cluster() -> String {
    let cluster = Cluster::start("pg");
    let url = cluster.url.clone();
    // The shared cluster lives as long as the process; the watchdog stops it.
    std::mem::forget(cluster);
    url
}

/// A throwaway cluster of its own (for tests that stop or freeze the server); stopped
/// (immediate) and deleted on Drop.
pub struct Cluster {
    /// URL of its `postgres` database.
    pub url: String,
    data: PathBuf,
    bin: PathBuf,
    root: bool,
}

impl Cluster {
    /// initdb + start in `<work dir>/<name>`.
    pub fn start(name: &str) -> Cluster {
        Cluster::start_with(name, "")
    }

    /// Like [`Cluster::start`], with extra `postgresql.conf` lines.
    pub fn start_with(name: &str, conf: &str) -> Cluster {
        let bin = pg_bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH nor under \
                 /usr/lib/postgresql/*/bin, and TEST_DATABASE_URL is not set.\n\
                 Run the tests with scripts/test (it installs PostgreSQL when missing), or set \
                 TEST_DATABASE_URL=postgres://user@host:port/postgres"
            )
        });
        let root = is_root();
        let pg_dir = work_dir().join(name);
        let data = pg_dir.join("data");
        let log = pg_dir.join("postgres.log");
        std::fs::create_dir_all(&pg_dir).unwrap_or_else(|e| panic!("could not create {}: {e}", pg_dir.display()));
        if root {
            run_checked(
                Command::new("chown").arg(PG_OS_USER).arg(&pg_dir),
                "chown of the cluster directory",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        run_checked(
            as_pg(&bin.join("initdb"), root)
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"])
                .current_dir(&pg_dir),
            "initdb",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        append(
            &data.join("postgresql.conf"),
            &format!(
                "\n# --- migrate-tenants test cluster ---\n\
                 listen_addresses = '127.0.0.1'\n\
                 unix_socket_directories = '{}'\n\
                 max_connections = 200\n\
                 fsync = off\n\
                 synchronous_commit = off\n\
                 full_page_writes = off\n{conf}\n",
                data.display()
            ),
        );
        // The port is free when picked but may be taken before the server binds it: retry.
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            // A later `port` line overrides earlier ones.
            append(&data.join("postgresql.conf"), &format!("port = {port}\n"));
            let started = run_checked(
                as_pg(&bin.join("pg_ctl"), root)
                    .arg("-D")
                    .arg(&data)
                    .args(["-w", "-t", "60", "start", "-l"])
                    .arg(&log)
                    .current_dir(&pg_dir),
                "pg_ctl start",
            );
            match started {
                Ok(()) => {
                    return Cluster {
                        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                        data,
                        bin,
                        root,
                    }
                }
                Err(e) => {
                    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                    last_err = format!("{e}\n--- {} ---\n{log_text}", log.display());
                }
            }
        }
        panic!("could not start the test PostgreSQL cluster:\n{last_err}");
    }

    /// Starts the stopped cluster again (same port and data).
    pub fn start_again(&self) {
        let log = self.data.parent().unwrap_or(&self.data).join("postgres.log");
        run_checked(
            as_pg(&self.bin.join("pg_ctl"), self.root)
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-t", "60", "start", "-l"])
                .arg(&log)
                .current_dir("/"),
            "pg_ctl start",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `pg_ctl stop -m immediate` (a crash, as far as clients can tell).
    pub fn stop_immediate(&self) {
        let _ = run_checked(
            as_pg(&self.bin.join("pg_ctl"), self.root)
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .current_dir("/"),
            "pg_ctl stop",
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_immediate();
        let _ = std::fs::remove_dir_all(self.data.parent().unwrap_or(&self.data));
    }
}
