//! Who created a replication slot or origin. PostgreSQL has no comment for either (the
//! publication and subscription carry one, see `native::sql::owner_note`), so the task that
//! creates one records it first in `pgtransit.owned_objects` on its target, and nothing is
//! dropped that this record does not give to the task: not a hand-made slot of the same
//! name, not another task's.

use tokio_postgres::Client;

use crate::error::{sql_error, Error};
use crate::quote;

const TABLE_SQL: &str = "CREATE SCHEMA IF NOT EXISTS pgtransit; \
    CREATE TABLE IF NOT EXISTS pgtransit.owned_objects ( \
        kind       text        NOT NULL, \
        name       text        NOT NULL, \
        task       text        NOT NULL, \
        created_at timestamptz NOT NULL DEFAULT now(), \
        PRIMARY KEY (kind, name))";

/// What kind of object a mark names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A logical replication slot on the source.
    Slot,
    /// A replication origin on the target.
    Origin,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Slot => "slot",
            Kind::Origin => "origin",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Slot => "replication slot",
            Kind::Origin => "replication origin",
        }
    }
}

/// The statements of [`claim`], for plans and `--dry-run`.
pub fn claim_sql(kind: Kind, name: &str, task: &str) -> String {
    format!(
        "{TABLE_SQL};\nINSERT INTO pgtransit.owned_objects (kind, name, task) VALUES ({}, {}, {}) \
         ON CONFLICT (kind, name) DO NOTHING;  -- refused when it names another task",
        quote::literal(kind.as_str()),
        quote::literal(name),
        quote::literal(task)
    )
}

/// The query of [`owner`], for plans and `--dry-run`.
pub fn owner_sql(kind: Kind, name: &str) -> String {
    format!(
        "SELECT task FROM pgtransit.owned_objects WHERE kind = {} AND name = {};",
        quote::literal(kind.as_str()),
        quote::literal(name)
    )
}

/// Record, before creating it, that `name` is task `task`'s. A mark of another task refuses.
pub async fn claim(target: &Client, kind: Kind, name: &str, task: &str) -> Result<(), Error> {
    target
        .batch_execute(TABLE_SQL)
        .await
        .map_err(|e| sql_error("creating pgtransit.owned_objects (on the target)", e))?;
    let owner: String = target
        .query_one(
            "WITH ins AS (INSERT INTO pgtransit.owned_objects (kind, name, task) \
                          VALUES ($1, $2, $3) ON CONFLICT (kind, name) DO NOTHING RETURNING task) \
             SELECT task FROM ins UNION ALL \
             SELECT task FROM pgtransit.owned_objects WHERE kind = $1 AND name = $2",
            &[&kind.as_str(), &name, &task],
        )
        .await
        .map_err(|e| sql_error("recording what the task creates (on the target)", e))?
        .get(0);
    if owner != task {
        return Err(Error::refused(format!(
            "{} {} belongs to task {owner} (pgtransit.owned_objects on the target): two tasks \
             must not share it; give this task other names",
            kind.label(),
            quote::ident(name)
        )));
    }
    Ok(())
}

/// The task a mark gives `name` to; None when there is no mark (or no table of marks).
pub async fn owner(target: &Client, kind: Kind, name: &str) -> Result<Option<String>, Error> {
    if !table_exists(target).await? {
        return Ok(None);
    }
    Ok(target
        .query_opt(
            "SELECT task FROM pgtransit.owned_objects WHERE kind = $1 AND name = $2",
            &[&kind.as_str(), &name],
        )
        .await
        .map_err(|e| sql_error("reading pgtransit.owned_objects (on the target)", e))?
        .map(|r| r.get(0)))
}

/// Forget the mark once the object is dropped.
pub async fn release(target: &Client, kind: Kind, name: &str) -> Result<(), Error> {
    if owner(target, kind, name).await?.is_none() {
        return Ok(());
    }
    target
        .execute(
            "DELETE FROM pgtransit.owned_objects WHERE kind = $1 AND name = $2",
            &[&kind.as_str(), &name],
        )
        .await
        .map(|_| ())
        .map_err(|e| sql_error("forgetting a mark in pgtransit.owned_objects", e))
}

/// Whether any mark is left (the `pgtransit` schema goes with the last one).
pub async fn any(target: &Client) -> Result<bool, Error> {
    if !table_exists(target).await? {
        return Ok(false);
    }
    target
        .query_one("SELECT EXISTS (SELECT 1 FROM pgtransit.owned_objects)", &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| sql_error("reading pgtransit.owned_objects (on the target)", e))
}

/// Whether the target has the table of marks (no task marked anything there yet: no).
async fn table_exists(target: &Client) -> Result<bool, Error> {
    target
        .query_one(
            "SELECT to_regclass('pgtransit.owned_objects') IS NOT NULL",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .map_err(|e| sql_error("looking for pgtransit.owned_objects (on the target)", e))
}
