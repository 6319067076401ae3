/*!
`verify --ephemeral`: a throwaway PostgreSQL cluster of its own, started from the server
binaries installed on this machine (on PATH, else the newest `/usr/lib/postgresql/<version>/bin`),
reachable only through a Unix socket in a new private (0700) temporary directory, and stopped
and deleted when dropped (or by the signal handler's hard exit). As root, the server runs as
the `postgres` OS user (initdb refuses root).
*/

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running throwaway cluster.
pub(crate) struct Ephemeral {
    /// URL of its `postgres` database.
    pub(crate) url: String,
    dir: tempfile_dir::Dir,
    bin: PathBuf,
    root: bool,
}

impl Ephemeral {
    /// initdb + start; the error says what is missing or what failed.
    pub(crate) fn start() -> Result<Ephemeral, String> {
        let bin = server_bin().ok_or(
            "--ephemeral needs PostgreSQL's server programs (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin \
             (Debian: apt-get install postgresql)",
        )?;
        let root = is_root();
        let dir = tempfile_dir::Dir::new(root)?;
        let data = dir.path().join("data");
        run(
            as_server(&bin.join("initdb"), root).arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]),
            "initdb",
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        // No TCP at all: a Unix socket in a directory only the server's user (and root) may
        // enter, so no other local user reaches this trust-authenticated superuser.
        let options = format!(
            "-c port={port} -c listen_addresses='' -c unix_socket_directories={} -c fsync=off",
            dir.path().display()
        );
        run(
            as_server(&bin.join("pg_ctl"), root)
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", "60", "-o", &options, "-l"])
                .arg(dir.path().join("server.log"))
                .arg("start"),
            "pg_ctl start",
        )?;
        *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some((bin.clone(), data.clone(), root));
        Ok(Ephemeral {
            url: format!(
                "host={} port={port} user=postgres dbname=postgres",
                dir.path().display()
            ),
            dir,
            bin,
            root,
        })
    }
}

/// The running cluster, so that a second Ctrl-C (which exits at once) still stops it.
static RUNNING: std::sync::Mutex<Option<(PathBuf, PathBuf, bool)>> = std::sync::Mutex::new(None);

/// Stops the throwaway cluster if one is running (the hard-exit path of the signal handler).
pub(crate) fn stop_running() {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((bin, data, root)) = running {
        let _ = run(
            as_server(&bin.join("pg_ctl"), root)
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"]),
            "pg_ctl stop",
        );
        let _ = std::fs::remove_dir_all(data.parent().unwrap_or(&data));
    }
}

impl Drop for Ephemeral {
    fn drop(&mut self) {
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = run(
            as_server(&self.bin.join("pg_ctl"), self.root)
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "immediate", "-w", "stop"]),
            "pg_ctl stop",
        );
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn as_server(program: &Path, root: bool) -> Command {
    let mut command = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.current_dir("/").stdin(Stdio::null());
    command
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// initdb and pg_ctl: PATH first, then the newest /usr/lib/postgresql/<version>/bin.
fn server_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

/// A private temporary directory the server's OS user can use, deleted on drop.
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub(crate) struct Dir(PathBuf);

    impl Dir {
        pub(crate) fn new(root: bool) -> Result<Dir, String> {
            let base = std::env::temp_dir();
            for attempt in 0..100u32 {
                let path = base.join(format!("migrate-tenants-verify-{}-{attempt}", std::process::id()));
                if std::fs::create_dir(&path).is_ok() {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
                    if root {
                        let status = std::process::Command::new("chown")
                            .arg("postgres")
                            .arg(&path)
                            .status()
                            .map_err(|e| format!("chown: {e}"))?;
                        if !status.success() {
                            return Err("chown postgres failed (is there a postgres OS user?)".into());
                        }
                    }
                    return Ok(Dir(path));
                }
            }
            Err(format!("cannot create a directory in {}", base.display()))
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
