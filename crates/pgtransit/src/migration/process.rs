//! The worker process of a task: whether it is alive, its lock (one worker per task),
//! starting it detached and stopping it.

use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::state::{Store, TaskRecord, TaskStatus};
use crate::{Error, ErrorKind, Result};

/// Whether a process with this id is alive. A killed worker whose parent is gone can
/// linger as a zombie until reaped; that is not alive.
pub fn alive(pid: Option<u32>) -> bool {
    let Some(p) = pid.filter(|p| *p > 0) else {
        return false;
    };
    match std::fs::read_to_string(format!("/proc/{p}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => unsafe { libc::kill(p as i32, 0) == 0 },
    }
}

/// The task's status as the user should see it: a worker that died is not running.
pub fn effective_status(t: &TaskRecord) -> String {
    if t.status == TaskStatus::Running && !alive(t.pid) {
        "stopped (worker gone)".into()
    } else {
        t.status.to_string()
    }
}

/// SIGTERM, then SIGKILL after `wait`; whether a worker was running.
pub async fn stop_worker(pid: Option<u32>, wait: Duration) -> bool {
    let Some(pid) = pid.filter(|_| alive(pid)) else {
        return false;
    };
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let t = Instant::now();
    while alive(Some(pid)) && t.elapsed() < wait {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if alive(Some(pid)) {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    true
}

/// The task's lock file, held for the life of the worker process; another worker fails at
/// once.
pub fn lock(store: &Store, name: &str) -> Result<std::fs::File> {
    let dir = store.workers_dir()?;
    let path = dir.join(format!("{name}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::failed(format!("cannot open {}: {e}", path.display())))?;
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = store
            .task(name)
            .ok()
            .flatten()
            .and_then(|t| t.pid)
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        return Err(Error::refused(format!(
            "another worker is running task {name}{pid}: one worker per task. \
             Stop it with `pgtransit terminate {name}` or wait for it"
        )));
    }
    Ok(f)
}

/// A worker started by [`spawn_worker`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct Started {
    pub pid: u32,
    pub log: PathBuf,
    pub metrics_addr: Option<String>,
}

/// Start `EXE run NAME` (the worker of the `pgtransit` binary `exe`) detached, its output
/// appended to the task's worker log; returns once the worker has registered.
pub async fn spawn_worker(exe: &Path, name: &str, metrics_addr: Option<&str>) -> Result<Started> {
    let store = Store::open()?;
    let rec = store.existing(name)?;
    if rec.status == TaskStatus::Running && alive(rec.pid) {
        return Err(Error::refused(format!(
            "task {name} already has a worker (pid {}): one worker per task",
            rec.pid.unwrap_or(0)
        )));
    }
    store.workers_dir()?;
    let log_path = store.worker_log(name);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::failed(format!("cannot open {}: {e}", log_path.display())))?;
    let mut cmd = Command::new(exe);
    cmd.arg("run").arg(name);
    if let Some(addr) = metrics_addr {
        cmd.arg("--metrics-addr").arg(addr);
    }
    use std::os::unix::process::CommandExt;
    let stdout = log
        .try_clone()
        .map_err(|e| Error::failed(format!("cannot open {}: {e}", log_path.display())))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(log))
        // Its own process group: a Ctrl-C in this terminal does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| Error::failed(format!("cannot start the worker: {e}")))?;
    let pid = child.id();
    // Wait until the worker has registered (or died at once, e.g. a held lock).
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last: Vec<&str> = tail.lines().rev().take(3).collect();
            // Its exit code says why (4: it refused, 2: a connection or usage problem);
            // `create` and `start` pass it on.
            let kind = match status.code() {
                Some(4) => ErrorKind::Refused,
                Some(2) => ErrorKind::Usage,
                _ => ErrorKind::Failed,
            };
            return Err(Error::new(
                kind,
                format!(
                    "the worker for {name} exited at once ({status}): {}",
                    last.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ),
            ));
        }
        let rec = store.existing(name)?;
        if rec.pid == Some(pid) || started.elapsed() > Duration::from_secs(5) {
            return Ok(Started {
                pid,
                log: log_path,
                metrics_addr: rec.metrics_addr,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
