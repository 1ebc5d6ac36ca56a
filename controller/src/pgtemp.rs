//! A throwaway PostgreSQL server from the machine's own server binaries, for
//! the demo, `drove bench` and tests: `initdb` into a temporary directory,
//! start on a free loopback port, and stop and delete everything on drop.
//! As root the server runs as the `postgres` user (initdb refuses root).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why a throwaway server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PgTempError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin; \
         install the OS package `postgresql` (e.g. `sudo apt-get install postgresql`) or pass --database-url"
    )]
    NotInstalled,
    #[error("running as root needs a `postgres` user to run the server (initdb refuses root): {0}")]
    NoPostgresUser(String),
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
}

/// Settings of a throwaway server.
#[derive(Debug, Clone)]
pub struct PgTempOptions {
    pub max_connections: u32,
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
}

impl Default for PgTempOptions {
    fn default() -> Self {
        PgTempOptions {
            max_connections: 300,
            settings: Vec::new(),
        }
    }
}

/// A running throwaway server; stopped and deleted when dropped.
pub struct PgTemp {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    as_postgres: bool,
    options: PgTempOptions,
}

/// The directory holding `initdb` and `pg_ctl`.
pub fn find_bindir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    });
    if on_path.is_some() {
        return on_path;
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    // Highest version last: "9.6" < "15" needs a numeric compare.
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.split('.').next())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> Result<u16, PgTempError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| PgTempError::Step {
        step: "finding a free port",
        detail: e.to_string(),
    })?;
    Ok(l.local_addr()
        .map_err(|e| PgTempError::Step {
            step: "finding a free port",
            detail: e.to_string(),
        })?
        .port())
}

fn run(step: &'static str, cmd: &mut Command) -> Result<(), PgTempError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| PgTempError::Step {
            step,
            detail: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if detail.is_empty() {
        detail = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Err(PgTempError::Step { step, detail })
}

impl PgTemp {
    /// initdb + start; blocks for a second or two.
    pub fn start(options: PgTempOptions) -> Result<PgTemp, PgTempError> {
        let bindir = find_bindir().ok_or(PgTempError::NotInstalled)?;
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!(
            "drove-pg-{}-{:08x}",
            std::process::id(),
            rand_u32()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| PgTempError::Step {
            step: "creating the data directory",
            detail: e.to_string(),
        })?;
        let pg = PgTemp {
            dir,
            bindir,
            port: free_port()?,
            as_postgres,
            options,
        };
        if as_postgres {
            run(
                "chown to postgres",
                Command::new("chown").arg("postgres").arg(&pg.dir),
            )
            .map_err(|e| PgTempError::NoPostgresUser(e.to_string()))?;
        }
        let data = pg.data_dir();
        run(
            "initdb",
            pg.command("initdb").arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
        )?;
        pg.pg_ctl_start()?;
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        let bin = self.bindir.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_ctl_start(&self) -> Result<(), PgTempError> {
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections={}",
            self.port,
            self.dir.display(),
            self.options.max_connections
        );
        for (k, v) in &self.options.settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        run(
            "starting PostgreSQL (pg_ctl start)",
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"]),
        )
        .map_err(|e| match e {
            PgTempError::Step { step, detail } => {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                PgTempError::Step {
                    step,
                    detail: format!("{detail}\n{log}"),
                }
            }
            other => other,
        })
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable`
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) -> Result<(), PgTempError> {
        run(
            "stopping PostgreSQL",
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "stop"]),
        )
    }

    /// Starts the server again after [`PgTemp::stop`], on the same port.
    pub fn restart(&self) -> Result<(), PgTempError> {
        self.pg_ctl_start()
    }
}

impl Drop for PgTemp {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(16)
}
