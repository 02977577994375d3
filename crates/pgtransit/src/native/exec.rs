//! Running plans: connections to both sides, opened when first needed, and the statement
//! runner with psql's semantics.

use std::fmt;

use tokio_postgres::{Client, Row};

use crate::check::Side;
use crate::conn::{self, ConnSpec, ConnectError};
use crate::task::Task;

/// Why a step stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepErrorKind {
    /// A side could not be reached (exit 2).
    Connect,
    /// A query or program failed (exit 1).
    Failed,
    /// Differences were found (`diff`, exit 3).
    Differences,
    /// The step refused to overwrite data or an object it does not own (exit 4).
    Refused,
    /// A connection broke in the middle (I/O error, closed session, SQLSTATE class 08,
    /// or the server shutting down: 57P01-57P03). The only kind the stream engine retries;
    /// elsewhere exit 1 like `Failed`.
    Lost,
}

#[derive(Debug)]
pub struct StepError {
    pub kind: StepErrorKind,
    pub message: String,
}

impl StepError {
    pub fn failed(message: impl Into<String>) -> StepError {
        StepError {
            kind: StepErrorKind::Failed,
            message: message.into(),
        }
    }
    pub fn refused(message: impl Into<String>) -> StepError {
        StepError {
            kind: StepErrorKind::Refused,
            message: message.into(),
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StepError {}

impl From<ConnectError> for StepError {
    fn from(e: ConnectError) -> Self {
        StepError {
            kind: StepErrorKind::Connect,
            message: e.to_string(),
        }
    }
}

/// A database error with the server's message and SQLSTATE, and what was being done.
pub fn sql_error(what: &str, e: tokio_postgres::Error) -> StepError {
    let detail = match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("\n  detail: {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("\n  hint: {h}"));
            }
            s
        }
        None => e.to_string(),
    };
    let kind = if connection_lost(&e) {
        StepErrorKind::Lost
    } else {
        StepErrorKind::Failed
    };
    StepError {
        kind,
        message: format!("{what}: {detail}"),
    }
}

/// Whether an error means the session is gone (so the work may be retried on a new one),
/// decided from the error's type and SQLSTATE, never from its text.
pub fn connection_lost(e: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        return sqlstate_lost(db.code().code());
    }
    // No server answer at all: the socket failed.
    e.source().is_some_and(|s| s.is::<std::io::Error>())
}

/// SQLSTATEs of a lost connection: class 08 (connection exception), admin or crash
/// shutdown and "cannot connect now" (57P01-57P03).
pub fn sqlstate_lost(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

type Say = Box<dyn Fn(&str) + Send + Sync>;

/// The task and its open connections.
pub struct Session<'t> {
    pub task: &'t Task,
    source: Option<Client>,
    target: Option<Client>,
    /// server_version_num of each side, read once per connection (catalog::compat).
    versions: [Option<i32>; 2],
    say: Say,
}

impl<'t> Session<'t> {
    /// A session that reports through `say` (one line or paragraph per call).
    pub fn new(task: &'t Task, say: impl Fn(&str) + Send + Sync + 'static) -> Session<'t> {
        Session {
            task,
            source: None,
            target: None,
            versions: [None, None],
            say: Box::new(say),
        }
    }

    pub fn say(&self, msg: &str) {
        (self.say)(msg)
    }

    pub fn spec(&self, side: Side) -> Result<&'t ConnSpec, StepError> {
        match side {
            Side::Target => self.task.target.as_ref().ok_or_else(|| StepError {
                kind: StepErrorKind::Connect,
                message:
                    "this step needs the target: give --target URL or `target:` in the task file"
                        .into(),
            }),
            _ => Ok(&self.task.source),
        }
    }

    pub async fn client(&mut self, side: Side) -> Result<&Client, StepError> {
        let spec = self.spec(side)?;
        let slot = match side {
            Side::Target => &mut self.target,
            _ => &mut self.source,
        };
        if slot.is_none() {
            *slot = Some(conn::connect(spec).await?);
        }
        Ok(slot.as_ref().expect("connected above"))
    }

    /// Both sides' clients at once (to run the same query on both concurrently).
    pub async fn both(&mut self) -> Result<(&Client, &Client), StepError> {
        self.client(Side::Source).await?;
        self.client(Side::Target).await?;
        Ok((
            self.source.as_ref().expect("connected above"),
            self.target.as_ref().expect("connected above"),
        ))
    }

    /// The side's server_version_num.
    pub async fn version(&mut self, side: Side) -> Result<i32, StepError> {
        let i = usize::from(side == Side::Target);
        if let Some(v) = self.versions[i] {
            return Ok(v);
        }
        let v = crate::catalog::server_version_num(self.client(side).await?)
            .await
            .map_err(|e| sql_error(&format!("reading the {} version", side.label()), e))?;
        self.versions[i] = Some(v);
        Ok(v)
    }

    /// `sql` as the side's server understands it (catalog::compat).
    async fn portable(&mut self, side: Side, sql: &str) -> Result<String, StepError> {
        let v = self.version(side).await?;
        Ok(crate::catalog::compat::portable(sql, v).into_owned())
    }

    pub async fn rows(&mut self, side: Side, what: &str, sql: &str) -> Result<Vec<Row>, StepError> {
        let sql = self.portable(side, sql).await?;
        self.client(side)
            .await?
            .query(&sql, &[])
            .await
            .map_err(|e| sql_error(&format!("{what} (on the {})", side.label()), e))
    }

    /// The first column of every row of a generator query: statements or comments.
    pub async fn generate(
        &mut self,
        side: Side,
        what: &str,
        sql: &str,
    ) -> Result<Vec<String>, StepError> {
        Ok(self
            .rows(side, what, sql)
            .await?
            .iter()
            .filter_map(|r| r.get::<_, Option<String>>(0))
            .collect())
    }

    /// Run statements one by one, as `psql -f` would; comment lines are reported, not run.
    /// `show` maps a statement to the text shown (to mask a password).
    pub async fn run_statements(
        &mut self,
        side: Side,
        statements: &[String],
        show: impl Fn(&str) -> String,
    ) -> Result<(), StepError> {
        for s in statements {
            if s.trim_start().starts_with("--") {
                self.say(&format!("  {}", s.trim()));
                continue;
            }
            self.say(&format!("  [{}] {}", side.label(), show(s)));
            let client = self.client(side).await?;
            client.batch_execute(s).await.map_err(|e| {
                sql_error(&format!("on the {}: {}", side.label(), first_line(s)), e)
            })?;
        }
        Ok(())
    }

    /// Run a fixed script (several statements) on `side`.
    pub async fn execute(&mut self, side: Side, what: &str, sql: &str) -> Result<(), StepError> {
        let sql = self.portable(side, sql).await?;
        self.client(side)
            .await?
            .batch_execute(&sql)
            .await
            .map_err(|e| sql_error(&format!("{what} (on the {})", side.label()), e))
    }

    /// Drop a side's connection (after the server was told to go away, or to reconnect).
    pub fn forget(&mut self, side: Side) {
        self.versions[usize::from(side == Side::Target)] = None;
        match side {
            Side::Target => self.target = None,
            _ => self.source = None,
        }
    }
}

pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}
