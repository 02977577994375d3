//! The task store: migration tasks created with `pgtransit create`, their steps, per-step
//! logs, the latest metrics a worker published, and what a failed `terminate` left behind.
//! One SQLite file under `$PGTRANSIT_HOME` (default `~/.pgtransit`), private to the user.
//! No password is ever stored here: a password given in a URL goes to a `.pgpass`-format
//! file under `secrets/`, which the task references (see [`secrets`]).

mod names;
pub mod secrets;

pub use names::{Step, StepState, TaskStatus};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::task::Engine;

/// A SQLite failure is a `Failed` error of the library; a task that does not exist is
/// `Usage`, a name taken `Refused`.
impl From<rusqlite::Error> for crate::Error {
    fn from(e: rusqlite::Error) -> Self {
        crate::Error::failed(format!("task store: {e}"))
    }
}

/// `$PGTRANSIT_HOME`, else `~/.pgtransit`.
pub fn home() -> PathBuf {
    match std::env::var_os("PGTRANSIT_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => crate::task::expand_home("~/.pgtransit"),
    }
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[derive(Clone, Debug, Serialize)]
pub struct TaskRecord {
    pub name: String,
    /// The task in native YAML form, without any password.
    pub spec: String,
    pub engine: Engine,
    /// Source and target as the user gave them, passwords masked.
    pub source: String,
    pub target: String,
    pub status: TaskStatus,
    pub reason: Option<String>,
    pub created_at: f64,
    pub updated_at: f64,
    /// The worker's process id while one runs.
    pub pid: Option<u32>,
    pub metrics_addr: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    pub step: Step,
    pub status: StepState,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LogLine {
    pub id: i64,
    pub at: f64,
    pub step: String,
    pub line: String,
}

/// One sample of the apply's lag, kept for history.
#[derive(Clone, Copy, Debug)]
pub struct LagSample {
    pub lag_bytes: i64,
    pub lag_seconds: f64,
    pub rows_per_second: f64,
}

/// Something `terminate` could not drop, and the SQL that drops it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Leftover {
    pub side: String,
    pub what: String,
    pub sql: String,
}

pub struct Store {
    conn: Connection,
    home: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    engine TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    pid INTEGER,
    metrics_addr TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    task TEXT NOT NULL,
    step TEXT NOT NULL,
    ord INTEGER NOT NULL,
    status TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    reason TEXT,
    PRIMARY KEY (task, step)
);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL,
    step TEXT NOT NULL,
    at REAL NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_task ON logs (task, id);
CREATE TABLE IF NOT EXISTS metrics (
    task TEXT PRIMARY KEY,
    at REAL NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metric_samples (
    task TEXT NOT NULL,
    at REAL NOT NULL,
    lag_bytes INTEGER,
    lag_seconds REAL,
    rows_per_second REAL
);
CREATE TABLE IF NOT EXISTS leftovers (
    task TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS switchovers (
    task TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
";

fn private_dir(p: &Path) -> crate::Result<()> {
    std::fs::create_dir_all(p)
        .map_err(|e| crate::Error::failed(format!("cannot create {}: {e}", p.display())))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| crate::Error::failed(format!("cannot make {} private: {e}", p.display())))
}

impl Store {
    /// Open (creating it the first time) the store under [`home`].
    pub fn open() -> crate::Result<Store> {
        Store::open_at(&home())
    }

    pub fn open_at(home: &Path) -> crate::Result<Store> {
        private_dir(home)?;
        let path = home.join("tasks.db");
        // The database and its journal files are created private.
        let old = unsafe { libc::umask(0o077) };
        let conn = Connection::open(&path);
        unsafe { libc::umask(old) };
        let conn = conn?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn,
            home: home.to_path_buf(),
        })
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Where a task's worker writes what it prints (stdout and stderr of `start`).
    pub fn worker_log(&self, name: &str) -> PathBuf {
        self.home.join("workers").join(format!("{name}.log"))
    }

    pub fn workers_dir(&self) -> crate::Result<PathBuf> {
        let d = self.home.join("workers");
        private_dir(&d)?;
        Ok(d)
    }

    /// Record a new task with every step pending (or skipped when disabled).
    pub fn create_task(&self, rec: &TaskRecord, enabled: &[(Step, bool)]) -> crate::Result<()> {
        if self.task(&rec.name)?.is_some() {
            return Err(crate::Error::refused(format!(
                "a task named {} already exists: pick another name, or `pgtransit terminate {}` first",
                rec.name, rec.name
            )));
        }
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO tasks (name, spec, engine, source, target, status, reason, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?7)",
            params![rec.name, rec.spec, rec.engine, rec.source, rec.target, rec.status, rec.created_at],
        )?;
        for (i, step) in Step::ALL.iter().enumerate() {
            let on = enabled.iter().find(|(s, _)| s == step).is_none_or(|e| e.1);
            tx.execute(
                "INSERT INTO steps (task, step, ord, status) VALUES (?1, ?2, ?3, ?4)",
                params![
                    rec.name,
                    step,
                    i as i64,
                    if on {
                        StepState::Pending
                    } else {
                        StepState::Skipped
                    }
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn task(&self, name: &str) -> crate::Result<Option<TaskRecord>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, spec, engine, source, target, status, reason, created_at, updated_at, pid, metrics_addr \
                 FROM tasks WHERE name = ?1",
                [name],
                task_row,
            )
            .optional()?)
    }

    /// The task, or an error naming the tasks there are.
    pub fn existing(&self, name: &str) -> crate::Result<TaskRecord> {
        match self.task(name)? {
            Some(t) => Ok(t),
            None => {
                let names: Vec<String> = self.tasks()?.into_iter().map(|t| t.name).collect();
                Err(crate::Error::usage(format!(
                    "no task named {name} in {} (tasks: {})",
                    self.home.display(),
                    if names.is_empty() {
                        "none; create one with `pgtransit create`".to_string()
                    } else {
                        names.join(", ")
                    }
                )))
            }
        }
    }

    pub fn tasks(&self) -> crate::Result<Vec<TaskRecord>> {
        let mut st = self.conn.prepare(
            "SELECT name, spec, engine, source, target, status, reason, created_at, updated_at, pid, metrics_addr \
             FROM tasks ORDER BY created_at",
        )?;
        let rows = st.query_map([], task_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_status(
        &self,
        name: &str,
        status: TaskStatus,
        reason: Option<&str>,
    ) -> crate::Result<()> {
        self.conn.execute(
            "UPDATE tasks SET status = ?2, reason = ?3, updated_at = ?4 WHERE name = ?1",
            params![name, status, reason, now()],
        )?;
        Ok(())
    }

    pub fn set_worker(
        &self,
        name: &str,
        pid: Option<u32>,
        metrics_addr: Option<&str>,
    ) -> crate::Result<()> {
        self.conn.execute(
            "UPDATE tasks SET pid = ?2, metrics_addr = ?3, updated_at = ?4 WHERE name = ?1",
            params![name, pid, metrics_addr, now()],
        )?;
        Ok(())
    }

    pub fn steps(&self, name: &str) -> crate::Result<Vec<StepRecord>> {
        let mut st = self.conn.prepare(
            "SELECT step, status, started_at, finished_at, reason FROM steps WHERE task = ?1 ORDER BY ord",
        )?;
        let rows = st.query_map([name], |r| {
            Ok(StepRecord {
                step: r.get(0)?,
                status: r.get(1)?,
                started_at: r.get(2)?,
                finished_at: r.get(3)?,
                reason: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Set a step's status; `running` stamps its start, `complete` and `failed` its end.
    pub fn set_step(
        &self,
        name: &str,
        step: Step,
        status: StepState,
        reason: Option<&str>,
    ) -> crate::Result<()> {
        let t = now();
        let sql = match status {
            StepState::Running => "UPDATE steps SET status = ?3, reason = ?4, started_at = ?5, finished_at = NULL WHERE task = ?1 AND step = ?2",
            StepState::Complete | StepState::Failed => "UPDATE steps SET status = ?3, reason = ?4, finished_at = ?5 WHERE task = ?1 AND step = ?2",
            StepState::Pending | StepState::Skipped => "UPDATE steps SET status = ?3, reason = ?4 WHERE task = ?1 AND step = ?2 AND ?5 IS NOT NULL",
        };
        self.conn
            .execute(sql, params![name, step, status, reason, t])?;
        Ok(())
    }

    pub fn log(&self, name: &str, step: &str, line: &str) -> crate::Result<()> {
        self.conn.execute(
            "INSERT INTO logs (task, step, at, line) VALUES (?1, ?2, ?3, ?4)",
            params![name, step, now(), line],
        )?;
        Ok(())
    }

    /// Log lines after `after` (an id), of one step or all.
    pub fn logs(&self, name: &str, step: Option<&str>, after: i64) -> crate::Result<Vec<LogLine>> {
        let mut st = self.conn.prepare(
            "SELECT id, at, step, line FROM logs WHERE task = ?1 AND id > ?2 AND (?3 IS NULL OR step = ?3) ORDER BY id",
        )?;
        let rows = st.query_map(params![name, after, step], |r| {
            Ok(LogLine {
                id: r.get(0)?,
                at: r.get(1)?,
                step: r.get(2)?,
                line: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The worker's latest metrics (`migration::Metrics`), and a sample of the lag for
    /// history.
    pub fn put_metrics<T: Serialize>(
        &self,
        name: &str,
        m: &T,
        lag: Option<LagSample>,
    ) -> crate::Result<()> {
        let t = now();
        let json = serde_json::to_string(m)
            .map_err(|e| crate::Error::failed(format!("task store: metrics: {e}")))?;
        self.conn.execute(
            "INSERT INTO metrics (task, at, json) VALUES (?1, ?2, ?3) \
             ON CONFLICT (task) DO UPDATE SET at = excluded.at, json = excluded.json",
            params![name, t, json],
        )?;
        if let Some(l) = lag {
            self.conn.execute(
                "INSERT INTO metric_samples (task, at, lag_bytes, lag_seconds, rows_per_second) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, t, l.lag_bytes, l.lag_seconds, l.rows_per_second],
            )?;
        }
        Ok(())
    }

    /// The latest metrics and when they were published; None also when they do not read
    /// as `T` (published by an older version).
    pub fn metrics<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> crate::Result<Option<(f64, T)>> {
        let row: Option<(f64, String)> = self
            .conn
            .query_row(
                "SELECT at, json FROM metrics WHERE task = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(at, j)| serde_json::from_str(&j).ok().map(|v| (at, v))))
    }

    pub fn set_leftovers(&self, name: &str, left: &[Leftover]) -> crate::Result<()> {
        let json = serde_json::to_string(left).unwrap_or_else(|_| "[]".into());
        self.conn.execute(
            "INSERT INTO leftovers (task, json) VALUES (?1, ?2) ON CONFLICT (task) DO UPDATE SET json = excluded.json",
            params![name, json],
        )?;
        Ok(())
    }

    pub fn leftovers(&self, name: &str) -> crate::Result<Vec<Leftover>> {
        let json: Option<String> = self
            .conn
            .query_row("SELECT json FROM leftovers WHERE task = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(json
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default())
    }

    /// A switchover's recorded progress (JSON), so that a crashed one is continued or undone.
    pub fn set_switchover(&self, name: &str, json: &str) -> crate::Result<()> {
        self.conn.execute(
            "INSERT INTO switchovers (task, json) VALUES (?1, ?2) ON CONFLICT (task) DO UPDATE SET json = excluded.json",
            params![name, json],
        )?;
        Ok(())
    }

    pub fn switchover(&self, name: &str) -> crate::Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT json FROM switchovers WHERE task = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Forget a task: its record, steps, logs, metrics and its secrets file.
    pub fn delete_task(&self, name: &str) -> crate::Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        for table in [
            "tasks",
            "steps",
            "logs",
            "metrics",
            "metric_samples",
            "leftovers",
            "switchovers",
        ] {
            let col = if table == "tasks" { "name" } else { "task" };
            tx.execute(&format!("DELETE FROM {table} WHERE {col} = ?1"), [name])?;
        }
        tx.commit()?;
        secrets::remove(&self.home, name);
        let _ = std::fs::remove_file(self.worker_log(name));
        Ok(())
    }
}

fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord> {
    Ok(TaskRecord {
        name: r.get(0)?,
        spec: r.get(1)?,
        engine: r.get(2)?,
        source: r.get(3)?,
        target: r.get(4)?,
        status: r.get(5)?,
        reason: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        pid: r.get(9)?,
        metrics_addr: r.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_steps_logs_and_metrics_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_at(dir.path()).unwrap();
        let rec = TaskRecord {
            name: "m1".into(),
            spec: "name: m1\n".into(),
            engine: Engine::Stream,
            source: "postgresql://a@h/db".into(),
            target: "postgresql://b@h/db".into(),
            status: TaskStatus::Created,
            reason: None,
            created_at: now(),
            updated_at: now(),
            pid: None,
            metrics_addr: None,
        };
        s.create_task(&rec, &[(Step::Precheck, false)]).unwrap();
        assert!(s.create_task(&rec, &[]).is_err(), "names are unique");
        let steps = s.steps("m1").unwrap();
        let states: Vec<(&str, &str)> = steps
            .iter()
            .map(|x| (x.step.as_str(), x.status.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("precheck", "skipped"),
                ("init-struct", "pending"),
                ("init-data", "pending"),
                ("cdc", "pending")
            ]
        );
        s.set_step("m1", Step::InitStruct, StepState::Running, None)
            .unwrap();
        s.set_step("m1", Step::InitStruct, StepState::Complete, None)
            .unwrap();
        let st = &s.steps("m1").unwrap()[1];
        assert_eq!(st.status, StepState::Complete);
        assert!(st.started_at.is_some() && st.finished_at.is_some());
        s.log("m1", "init-struct", "one").unwrap();
        s.log("m1", "cdc", "two").unwrap();
        assert_eq!(s.logs("m1", Some("cdc"), 0).unwrap()[0].line, "two");
        assert_eq!(s.logs("m1", None, 0).unwrap().len(), 2);
        s.put_metrics("m1", &serde_json::json!({"lag_bytes": 5}), None)
            .unwrap();
        let m: serde_json::Value = s.metrics("m1").unwrap().unwrap().1;
        assert_eq!(m["lag_bytes"], 5);
        let mode = std::fs::metadata(dir.path().join("tasks.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the store is private");
        s.delete_task("m1").unwrap();
        assert!(s.task("m1").unwrap().is_none());
    }
}
