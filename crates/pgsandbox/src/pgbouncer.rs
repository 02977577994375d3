//! A throwaway pgbouncer in front of sandbox clusters: transaction pooling on a free
//! loopback port, trust authentication for the users named, an admin console for
//! `postgres`, its configuration in a temporary folder. Stopped when dropped.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, Error};
use crate::{port, user};

pub struct Pgbouncer {
    child: Child,
    port: u16,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

/// The pgbouncer binary: PGBOUNCER, else the PATH, else Debian's /usr/sbin.
pub fn find_pgbouncer() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PGBOUNCER").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.is_file())
}

impl Pgbouncer {
    /// Start pgbouncer with one `[databases]` entry per `(entry, cluster, dbname)`; `users`
    /// may connect (trust).
    pub fn start(databases: &[(&str, &Cluster, &str)], users: &[&str]) -> Result<Pgbouncer, Error> {
        let bin = find_pgbouncer().ok_or_else(|| {
            Error("pgbouncer is not installed (apt-get install pgbouncer, or set PGBOUNCER)".into())
        })?;
        let err =
            |what: &'static str| move |e: std::io::Error| Error(format!("pgbouncer {what}: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("pgbouncer-")
            .tempdir()
            .map_err(err("temp folder"))?;
        let port = port::free_port();
        let mut entries = String::new();
        for (name, c, db) in databases {
            entries.push_str(&format!(
                "{name} = host={} port={} dbname={db}\n",
                c.host(),
                c.port()
            ));
        }
        let d = dir.path();
        let userlist: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        std::fs::write(d.join("userlist.txt"), userlist).map_err(err("userlist"))?;
        let config = d.join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n{entries}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {}\nadmin_users = postgres\n\
                 pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 20\n\
                 ignore_startup_parameters = extra_float_digits,options\nserver_reset_query =\n\
                 logfile = {}\npidfile = {}\n",
                d.join("userlist.txt").display(),
                d.join("pgbouncer.log").display(),
                d.join("pgbouncer.pid").display()
            ),
        )
        .map_err(err("configuration"))?;
        let mut cmd = Command::new(bin);
        cmd.arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // pgbouncer refuses to run as root, like PostgreSQL.
        if let Some(who) = user::run_as().map_err(Error)? {
            for f in ["", "userlist.txt", "pgbouncer.ini"] {
                user::chown(&d.join(f), who).map_err(err("chown"))?;
            }
            cmd.uid(who.uid).gid(who.gid);
        }
        let child = cmd.spawn().map_err(err("start"))?;
        let mut b = Pgbouncer {
            child,
            port,
            config,
            _dir: dir,
        };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = b.child.try_wait() {
                let log = std::fs::read_to_string(b._dir.path().join("pgbouncer.log"))
                    .unwrap_or_default();
                return Err(Error(format!("pgbouncer exited ({status}): {log}")));
            }
            if t.elapsed() > Duration::from_secs(10) {
                return Err(Error("pgbouncer did not listen within 10 s".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(b)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The configuration file (its `[databases]` section is what a reroute rewrites).
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The admin console, as `postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/pgbouncer", self.port)
    }

    /// A client URL for database entry `db` as `user`.
    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
