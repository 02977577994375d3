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

pub struct Applier {
    pub tables: HashMap<u32, Table>,
    statements: HashMap<(u32, String), Statement>,
    pending: Option<(u32, Vec<Tuple>, bool)>,
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
        if let Some((oid, rows, idem)) = &mut self.pending {
            if *oid == m.relation && *idem == idempotent && rows.len() < BATCH_ROWS {
                rows.push(m.new);
                return Ok(());
            }
        }
        self.flush(client).await?;
        self.pending = Some((m.relation, vec![m.new], idempotent));
        Ok(())
    }

    /// Send the pending inserts as one multi-row INSERT.
    pub async fn flush(&mut self, client: &Client) -> Result<(), StepError> {
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
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as _).collect();
        client
            .execute(&st, &refs)
            .await
            .map_err(|e| sql_error(&format!("inserting into {}", t.name), e))?;
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
        self.flush(client).await?;
        let (copied, _) = self.skip(m.relation, commit_lsn)?;
        if copied {
            return Ok(());
        }
        let t = self.table(m.relation)?.clone();
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
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as _).collect();
        let n = client
            .execute(&st, &refs)
            .await
            .map_err(|e| sql_error(&format!("updating {}", t.name), e))?;
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
        self.flush(client).await?;
        let (copied, _) = self.skip(m.relation, commit_lsn)?;
        if copied {
            return Ok(());
        }
        let t = self.table(m.relation)?.clone();
        let (clause, mask, params) = Self::locate(&t, Some(&m.old), None, 1);
        let st = self
            .statement(client, m.relation, format!("D{mask}"), || {
                format!("DELETE FROM {} WHERE {clause}", t.name)
            })
            .await?;
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as _).collect();
        let n = client
            .execute(&st, &refs)
            .await
            .map_err(|e| sql_error(&format!("deleting from {}", t.name), e))?;
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
