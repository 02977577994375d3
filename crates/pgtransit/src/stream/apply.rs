//! Applying decoded changes to the target: one session, source transactions kept whole
//! and in order, prepared statements per table, operation and column set, consecutive
//! inserts into one table sent as multi-row statements. Only the columns an UPDATE sent
//! are written (an unchanged TOAST value never is); rows are found by their identity key,
//! or under REPLICA IDENTITY FULL by all old columns, NULL-safe, one row.

use std::collections::HashMap;

use pgoutput::{Delete, Insert, OldTuple, Truncate, Tuple, Update, Value};
use tokio_postgres::{Client, Statement};

use super::tables::Table;
use super::text::TextValue;
use crate::native::{sql_error, StepError};

/// Rows per multi-row INSERT (bounded by PostgreSQL's 65535 parameters).
const BATCH_ROWS: usize = 500;

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Counts {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub truncates: u64,
    /// UPDATE or DELETE whose row was not on the target (outside a resumed copy's window).
    pub not_found: u64,
}

/// Consecutive updates (key unchanged) or deletes on one table, sent as one statement.
/// A key seen twice ends the batch, so that changes to one row keep their order.
struct Batch {
    oid: u32,
    delete: bool,
    /// For updates: the columns written.
    set_cols: Vec<usize>,
    /// Per row: the written values (updates), then the key values.
    rows: Vec<Vec<Value>>,
    keys: std::collections::HashSet<Vec<Option<bytes::Bytes>>>,
}

pub struct Applier {
    pub tables: HashMap<u32, Table>,
    statements: HashMap<(u32, String), Statement>,
    pending: Option<(u32, Vec<Tuple>, bool)>,
    batch: Option<Batch>,
    pub counts: Counts,
}

fn text(v: &Value) -> TextValue<'_> {
    match v {
        Value::Text(b) | Value::Binary(b) => TextValue(Some(b)),
        Value::Null | Value::UnchangedToast => TextValue(None),
    }
}

fn values(t: &Tuple) -> Vec<TextValue<'_>> {
    t.0.iter().map(text).collect()
}

impl Default for Applier {
    fn default() -> Self {
        Applier::new()
    }
}

impl Applier {
    pub fn new() -> Applier {
        Applier {
            tables: HashMap::new(),
            statements: HashMap::new(),
            pending: None,
            batch: None,
            counts: Counts::default(),
        }
    }

    /// A new description of a table: its statements are built again.
    pub fn set_table(&mut self, oid: u32, t: Table) {
        self.statements.retain(|(o, _), _| *o != oid);
        self.tables.insert(oid, t);
    }

    fn table(&self, oid: u32) -> Result<&Table, StepError> {
        self.tables.get(&oid).ok_or_else(|| {
            StepError::failed(format!(
                "a change for relation {oid} came before its Relation message"
            ))
        })
    }

    async fn statement(
        &mut self,
        client: &Client,
        oid: u32,
        key: String,
        sql: impl FnOnce() -> String,
    ) -> Result<Statement, StepError> {
        if let Some(s) = self.statements.get(&(oid, key.clone())) {
            return Ok(s.clone());
        }
        let text = sql();
        let s = client.prepare(&text).await.map_err(|e| {
            sql_error(
                &format!("preparing `{}`", text.lines().next().unwrap_or("")),
                e,
            )
        })?;
        self.statements.insert((oid, key), s.clone());
        Ok(s)
    }

    /// Whether a change committed at `commit_lsn` is already in the table's copy, and
    /// whether it must be applied idempotently.
    fn skip(&self, oid: u32, commit_lsn: u64) -> Result<(bool, bool), StepError> {
        let t = self.table(oid)?;
        // The snapshot holds exactly the transactions whose commit record starts before
        // its position; one that starts right at it is not in the copy.
        let copied = t.copied_until.is_some_and(|l| commit_lsn < l);
        let idempotent = t.idempotent_until.is_some_and(|l| commit_lsn < l);
        Ok((copied, idempotent))
    }

    pub async fn insert(
        &mut self,
        client: &Client,
        m: Insert,
        commit_lsn: u64,
    ) -> Result<(), StepError> {
        let (copied, idempotent) = self.skip(m.relation, commit_lsn)?;
        if copied {
            return Ok(());
        }
        self.flush_batch(client).await?;
        if let Some((oid, rows, idem)) = &mut self.pending {
            if *oid == m.relation && *idem == idempotent && rows.len() < BATCH_ROWS {
                rows.push(m.new);
                return Ok(());
            }
        }
        self.flush_inserts(client).await?;
        self.pending = Some((m.relation, vec![m.new], idempotent));
        Ok(())
    }

    /// Send what is pending: inserts, or a batch of updates or deletes.
    pub async fn flush(&mut self, client: &Client) -> Result<(), StepError> {
        self.flush_batch(client).await?;
        self.flush_inserts(client).await
    }

    /// Send the pending inserts as one multi-row INSERT.
    async fn flush_inserts(&mut self, client: &Client) -> Result<(), StepError> {
        let Some((oid, rows, idempotent)) = self.pending.take() else {
            return Ok(());
        };
        let t = self.table(oid)?.clone();
        let per_row = t.columns.len();
        let n = rows.len();
        let key = format!("I{n}{}", if idempotent { "i" } else { "" });
        let st = self
            .statement(client, oid, key, || {
                let tuples: Vec<String> = (0..n)
                    .map(|r| {
                        let ps: Vec<String> = (1..=per_row)
                            .map(|c| format!("${}", r * per_row + c))
                            .collect();
                        format!("({})", ps.join(", "))
                    })
                    .collect();
                format!(
                    "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES {}{}",
                    t.name,
                    t.columns.join(", "),
                    tuples.join(", "),
                    if idempotent {
                        " ON CONFLICT DO NOTHING"
                    } else {
                        ""
                    }
                )
            })
            .await?;
        let mut params: Vec<TextValue> = Vec::with_capacity(n * per_row);
        for r in &rows {
            if r.0.len() != per_row {
                return Err(StepError::failed(format!(
                    "an insert into {} has {} values for {per_row} columns",
                    t.name,
                    r.0.len()
                )));
            }
            params.extend(values(r));
        }
        execute_text(client, &st, &params, &format!("inserting into {}", t.name)).await?;
        self.counts.inserts += n as u64;
        Ok(())
    }

    /// WHERE clause and its values: the identity key (from the old key tuple when the key
    /// changed), or every old column NULL-safe under FULL identity (compared as text, which
    /// is what the source sent), as a ctid subquery so only one row is touched.
    fn locate<'a>(
        t: &Table,
        old: Option<&'a OldTuple>,
        new: Option<&'a Tuple>,
        first: usize,
    ) -> (String, String, Vec<TextValue<'a>>) {
        let tuple = old
            .map(|o| o.tuple())
            .or(new)
            .expect("a tuple to locate the row");
        let mut conds = Vec::new();
        let mut mask = String::new();
        let mut params = Vec::new();
        for (i, v) in tuple.0.iter().enumerate() {
            let used =
                t.key.get(i).copied().unwrap_or(false) && !matches!(v, Value::UnchangedToast);
            mask.push(if used { '1' } else { '0' });
            if !used {
                continue;
            }
            let p = first + params.len();
            if t.full_identity {
                conds.push(format!(
                    "{}::text IS NOT DISTINCT FROM ${p}::text",
                    t.columns[i]
                ));
            } else {
                conds.push(format!("{} = ${p}", t.columns[i]));
            }
            params.push(text(v));
        }
        let cond = if conds.is_empty() {
            "false".to_string()
        } else {
            conds.join(" AND ")
        };
        let clause = if t.full_identity {
            format!("ctid = (SELECT ctid FROM {} WHERE {cond} LIMIT 1)", t.name)
        } else {
            cond
        };
        (clause, mask, params)
    }

    pub async fn update(
        &mut self,
        client: &Client,
        m: Update,
        commit_lsn: u64,
    ) -> Result<(), StepError> {
        self.flush_inserts(client).await?;
        let (copied, _) = self.skip(m.relation, commit_lsn)?;
        if copied {
            return Ok(());
        }
        let t = self.table(m.relation)?.clone();
        if !t.full_identity && m.old.is_none() {
            let set_cols: Vec<usize> = (0..m.new.0.len())
                .filter(|&i| {
                    !matches!(m.new.0[i], Value::UnchangedToast)
                        && !t.key.get(i).copied().unwrap_or(false)
                        && !t.always_identity.get(i).copied().unwrap_or(false)
                })
                .collect();
            if set_cols.is_empty() {
                return Ok(());
            }
            let mut row: Vec<Value> = set_cols.iter().map(|&i| m.new.0[i].clone()).collect();
            row.extend(key_values(&t, &m.new));
            return self
                .add_to_batch(client, m.relation, false, set_cols, row)
                .await;
        }
        self.flush_batch(client).await?;
        let mut sets = Vec::new();
        let mut set_mask = String::new();
        let mut params: Vec<TextValue> = Vec::new();
        for (i, v) in m.new.0.iter().enumerate() {
            // Unchanged TOAST values are not sent; key columns are sent but unchanged
            // unless an old key came along (setting them would defeat HOT updates); an
            // ALWAYS identity column cannot be set.
            let key_unchanged =
                m.old.is_none() && t.key.get(i).copied().unwrap_or(false) && !t.full_identity;
            let write = !matches!(v, Value::UnchangedToast)
                && !key_unchanged
                && !t.always_identity.get(i).copied().unwrap_or(false);
            set_mask.push(if write { '1' } else { '0' });
            if write {
                params.push(text(v));
                sets.push(format!("{} = ${}", t.columns[i], params.len()));
            }
        }
        if sets.is_empty() {
            return Ok(());
        }
        let (clause, where_mask, wparams) =
            Self::locate(&t, m.old.as_ref(), Some(&m.new), params.len() + 1);
        params.extend(wparams);
        let key = format!("U{set_mask}:{where_mask}");
        let st = self
            .statement(client, m.relation, key, || {
                format!("UPDATE {} SET {} WHERE {clause}", t.name, sets.join(", "))
            })
            .await?;
        let n = execute_text(client, &st, &params, &format!("updating {}", t.name)).await?;
        self.counts.updates += 1;
        if n == 0 {
            self.counts.not_found += 1;
        }
        Ok(())
    }

    pub async fn delete(
        &mut self,
        client: &Client,
        m: Delete,
        commit_lsn: u64,
    ) -> Result<(), StepError> {
        self.flush_inserts(client).await?;
        let (copied, _) = self.skip(m.relation, commit_lsn)?;
        if copied {
            return Ok(());
        }
        let t = self.table(m.relation)?.clone();
        if !t.full_identity {
            let row = key_values(&t, m.old.tuple());
            return self
                .add_to_batch(client, m.relation, true, vec![], row)
                .await;
        }
        self.flush_batch(client).await?;
        let (clause, mask, params) = Self::locate(&t, Some(&m.old), None, 1);
        let st = self
            .statement(client, m.relation, format!("D{mask}"), || {
                format!("DELETE FROM {} WHERE {clause}", t.name)
            })
            .await?;
        let n = execute_text(client, &st, &params, &format!("deleting from {}", t.name)).await?;
        self.counts.deletes += 1;
        if n == 0 {
            self.counts.not_found += 1;
        }
        Ok(())
    }

    pub async fn truncate(
        &mut self,
        client: &Client,
        m: Truncate,
        commit_lsn: u64,
    ) -> Result<(), StepError> {
        self.flush(client).await?;
        let mut names = Vec::new();
        for oid in &m.relations {
            if !self.skip(*oid, commit_lsn)?.0 {
                names.push(self.table(*oid)?.name.clone());
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "TRUNCATE {}{}{}",
            names.join(", "),
            if m.restart_identity() {
                " RESTART IDENTITY"
            } else {
                ""
            },
            if m.cascade() { " CASCADE" } else { "" }
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| sql_error(&format!("`{sql}`"), e))?;
        self.counts.truncates += 1;
        Ok(())
    }
}

/// The identity key's values of a tuple, in column order.
fn key_values(t: &Table, tuple: &Tuple) -> Vec<Value> {
    tuple
        .0
        .iter()
        .enumerate()
        .filter(|(i, _)| t.key.get(*i).copied().unwrap_or(false))
        .map(|(_, v)| v.clone())
        .collect()
}

fn key_of(row: &[Value], set: usize) -> Vec<Option<bytes::Bytes>> {
    row[set..]
        .iter()
        .map(|v| match v {
            Value::Text(b) | Value::Binary(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

impl Applier {
    async fn add_to_batch(
        &mut self,
        client: &Client,
        oid: u32,
        delete: bool,
        set_cols: Vec<usize>,
        row: Vec<Value>,
    ) -> Result<(), StepError> {
        let key = key_of(&row, set_cols.len());
        let fits = |b: &Batch| {
            b.oid == oid
                && b.delete == delete
                && b.set_cols == set_cols
                && !b.keys.contains(&key)
                && (b.rows.len() + 1) * row.len() < 60_000
                && b.rows.len() < BATCH_ROWS
        };
        if !self.batch.as_ref().is_some_and(fits) {
            self.flush_batch(client).await?;
            self.batch = Some(Batch {
                oid,
                delete,
                set_cols,
                rows: Vec::new(),
                keys: Default::default(),
            });
        }
        let b = self.batch.as_mut().expect("a batch");
        b.keys.insert(key);
        b.rows.push(row);
        Ok(())
    }

    /// `UPDATE t SET ... FROM (VALUES ...)` or `DELETE FROM t WHERE (key) IN (VALUES ...)`,
    /// each value cast to its column's type.
    async fn flush_batch(&mut self, client: &Client) -> Result<(), StepError> {
        let Some(b) = self.batch.take() else {
            return Ok(());
        };
        if b.rows.is_empty() {
            return Ok(());
        }
        let t = self.table(b.oid)?.clone();
        let keys: Vec<usize> = (0..t.columns.len()).filter(|&i| t.key[i]).collect();
        let cols: Vec<usize> = b
            .set_cols
            .iter()
            .copied()
            .chain(keys.iter().copied())
            .collect();
        let n = b.rows.len();
        let width = cols.len();
        let tuples: Vec<String> = (0..n)
            .map(|r| {
                let ps: Vec<String> = cols
                    .iter()
                    .enumerate()
                    .map(|(j, &c)| format!("${}::{}", r * width + j + 1, t.types[c]))
                    .collect();
                format!("({})", ps.join(", "))
            })
            .collect();
        let sql = if b.delete {
            let names: Vec<&str> = keys.iter().map(|&i| t.columns[i].as_str()).collect();
            format!(
                "DELETE FROM {} WHERE ({}) IN (VALUES {})",
                t.name,
                names.join(", "),
                tuples.join(", ")
            )
        } else {
            let alias: Vec<String> = (0..width).map(|j| format!("c{j}")).collect();
            let sets: Vec<String> = b
                .set_cols
                .iter()
                .enumerate()
                .map(|(j, &c)| format!("{} = v.c{j}", t.columns[c]))
                .collect();
            let on: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(j, &c)| format!("x.{} = v.c{}", t.columns[c], b.set_cols.len() + j))
                .collect();
            format!(
                "UPDATE {} AS x SET {} FROM (VALUES {}) AS v({}) WHERE {}",
                t.name,
                sets.join(", "),
                tuples.join(", "),
                alias.join(", "),
                on.join(" AND ")
            )
        };
        let mask: String = b.set_cols.iter().map(|c| format!("{c},")).collect();
        let key = format!("{}{n}:{mask}", if b.delete { "DB" } else { "UB" });
        let st = self.statement(client, b.oid, key, || sql).await?;
        let params: Vec<TextValue> = b.rows.iter().flat_map(|r| r.iter().map(text)).collect();
        let what = if b.delete {
            format!("deleting from {}", t.name)
        } else {
            format!("updating {}", t.name)
        };
        let affected = execute_text(client, &st, &params, &what).await?;
        if b.delete {
            self.counts.deletes += n as u64;
        } else {
            self.counts.updates += n as u64;
        }
        self.counts.not_found += (n as u64).saturating_sub(affected);
        Ok(())
    }
}

/// Run a prepared statement with text parameters; the rows it affected.
async fn execute_text(
    client: &Client,
    st: &Statement,
    params: &[TextValue<'_>],
    what: &str,
) -> Result<u64, StepError> {
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p as _).collect();
    client
        .execute(st, &refs)
        .await
        .map_err(|e| sql_error(what, e))
}
