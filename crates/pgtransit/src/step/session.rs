//! The session a step runs in: connections to both sides, opened when first needed, the
//! server versions they report, and the statement runner with psql's semantics.

use tokio_postgres::{Client, Row};

use super::Side;
use crate::conn::{self, ConnSpec};
use crate::error::{sql_error, Error, ErrorKind};
use crate::task::Task;

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

    pub fn spec(&self, side: Side) -> Result<&'t ConnSpec, Error> {
        match side {
            Side::Target => self.task.target.as_ref().ok_or_else(|| {
                Error::new(
                    ErrorKind::Connect,
                    "this step needs the target: give --target URL or `target:` in the task file",
                )
            }),
            _ => Ok(&self.task.source),
        }
    }

    pub async fn client(&mut self, side: Side) -> Result<&Client, Error> {
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
    pub async fn both(&mut self) -> Result<(&Client, &Client), Error> {
        self.client(Side::Source).await?;
        self.client(Side::Target).await?;
        Ok((
            self.source.as_ref().expect("connected above"),
            self.target.as_ref().expect("connected above"),
        ))
    }

    /// The side's server_version_num.
    pub async fn version(&mut self, side: Side) -> Result<i32, Error> {
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
    async fn portable(&mut self, side: Side, sql: &str) -> Result<String, Error> {
        let v = self.version(side).await?;
        Ok(crate::catalog::compat::portable(sql, v).into_owned())
    }

    pub async fn rows(&mut self, side: Side, what: &str, sql: &str) -> Result<Vec<Row>, Error> {
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
    ) -> Result<Vec<String>, Error> {
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
    ) -> Result<(), Error> {
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
    pub async fn execute(&mut self, side: Side, what: &str, sql: &str) -> Result<(), Error> {
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
