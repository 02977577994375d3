//! Applying decoded changes to the target: one session, source transactions kept whole
//! and in order, prepared statements per table, operation and column set. Only the columns
//! an UPDATE sent are written (an unchanged TOAST value never is); rows are found by their
//! identity key, or under REPLICA IDENTITY FULL by all old columns, NULL-safe, one row,
//! each compared with its type's own equality operator on the target (or, for the few
//! types without one, by the text the target renders of both values).
//!
//! An UPDATE or DELETE must find its row: each statement names the rows it had to touch
//! and the target tells which it found, so a row missing on the target is never silent
//! (the stream stops or counts it: `OnMissingRow`). UPDATE, DELETE and TRUNCATE name a
//! plain table with ONLY: its inheritance children get their own changes.
//!
//! Changes wait per table and go out as one statement per run: consecutive inserts as a
//! multi-row INSERT, key-unchanged updates as `UPDATE ... FROM (VALUES ...)`, deletes as
//! `DELETE ... IN (VALUES ...)`. In the apply session (replica role) no foreign key is
//! checked and only triggers enabled ALWAYS or REPLICA fire, so within one target
//! transaction the changes of different tables may overtake each other without changing
//! what the commit holds; the changes of one table always keep their order. Tables with
//! such triggers are not reordered at all. A REPLICA IDENTITY FULL table without a unique
//! index on the target is the exception: its rows are a multiset, and its changes go out
//! as one run of set statements (`full`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use pgoutput::{Delete, Insert, OldTuple, Relation, Truncate, Tuple, Update, Value};
use tokio_postgres::Statement;

use super::full::{self, FullRun};
use super::pipeline::{Expected, Pipeline, Sent};
use super::tables::Table;
use super::text::TextValue;
use crate::error::{sql_error, Error};
use crate::task::OnMissingRow;

/// Rows per statement (PostgreSQL allows 65535 parameters).
const BATCH_ROWS: usize = 500;
const MAX_PARAMS: usize = 60_000;
/// Rows waiting over all tables, which bounds memory however many tables a transaction
/// touches.
const MAX_WAITING_ROWS: usize = 5_000;

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Counts {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub truncates: u64,
    /// UPDATE or DELETE whose row was not on the target (outside a resumed copy's window),
    /// counted under `on_missing_row: log`.
    pub not_found: u64,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Insert {
        idempotent: bool,
    },
    /// Key-unchanged updates writing these columns.
    Update {
        set_cols: Vec<usize>,
    },
    Delete,
    /// Any change of a FULL-identity table whose run waits in `Applier::full`.
    Full,
}

/// A change joining a FULL-identity table's run.
enum FullChange {
    Insert(Vec<Value>),
    Update {
        old: Vec<Value>,
        new: Vec<Value>,
        write: Vec<bool>,
    },
    Delete(Vec<Value>),
}

type Key = Vec<Option<Bytes>>;

/// One table's changes waiting to be sent as one statement.
struct Waiting {
    oid: u32,
    kind: Kind,
    foldable: bool,
    /// Inserts: the row. Updates: the written values, then the key. Deletes: the key.
    rows: Vec<Vec<Value>>,
    /// The commit LSN of each row's source transaction.
    lsns: Vec<u64>,
    /// Updates and deletes: the row index of each key.
    keys: HashMap<Key, usize>,
    /// A long run of inserts: the rows go straight into an open COPY.
    copying: bool,
}

impl Waiting {
    fn has_room(&self, width: usize) -> bool {
        self.rows.len() < BATCH_ROWS && (self.rows.len() + 1) * width < MAX_PARAMS
    }
}

pub struct Applier {
    pub tables: HashMap<u32, Arc<Table>>,
    /// The description each table in `tables` was resolved from.
    described: HashMap<u32, Relation>,
    /// Relations the target cannot take, with why: an error only once a change for one
    /// comes. (Publishing through the root, PostgreSQL 13 to 15 also describe the
    /// partition a change was made in, which need not exist on the target.)
    unresolved: HashMap<u32, String>,
    statements: HashMap<(u32, String), Statement>,
    waiting: Vec<Waiting>,
    /// The runs of FULL-identity tables waiting (each also has its place in `waiting`).
    full: HashMap<u32, FullRun>,
    waiting_rows: usize,
    pub counts: Counts,
    /// Which target types have an equality operator (by type oid), for FULL identity.
    pub equality: HashMap<u32, bool>,
    /// What a row missing on the target does (see `checked`).
    pub on_missing: OnMissingRow,
}

fn text(v: &Value) -> TextValue {
    TextValue::from(v)
}

/// A statement touching rows it must find.
fn sent_rows(what: String, expected: Vec<Expected>, key_names: Vec<String>) -> Sent {
    Sent {
        expected,
        key_names,
        ..Sent::plain(what)
    }
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
            described: HashMap::new(),
            unresolved: HashMap::new(),
            statements: HashMap::new(),
            waiting: Vec::new(),
            full: HashMap::new(),
            waiting_rows: 0,
            counts: Counts::default(),
            equality: HashMap::new(),
            on_missing: OnMissingRow::Stop,
        }
    }

    /// A new target session: statements are prepared again, and nothing waiting of an
    /// interrupted transaction survives into the next one.
    pub fn reset(&mut self) {
        self.statements.clear();
        self.waiting.clear();
        self.full.clear();
        self.waiting_rows = 0;
    }

    /// Whether `r` describes a table exactly as the description it was resolved from.
    /// The source sends a table's description again after any invalidation of its cache
    /// entry, which an ANALYZE or a VACUUM of the table is enough for (every few seconds
    /// under load). Resolving it again would hold the apply for a round of catalog queries
    /// on the target each time, a stall PostgreSQL's own apply does not have: the same
    /// description keeps the table and its prepared statements.
    pub fn unchanged(&self, r: &Relation) -> bool {
        self.tables.contains_key(&r.oid) && self.described.get(&r.oid) == Some(r)
    }

    /// A new description of a table: its statements are built again.
    pub fn set_table(&mut self, r: Relation, t: Table) {
        let oid = r.oid;
        self.statements.retain(|(o, _), _| *o != oid);
        self.unresolved.remove(&oid);
        self.tables.insert(oid, Arc::new(t));
        self.described.insert(oid, r);
    }

    /// A relation the target cannot take (`why`), until it is described again.
    pub fn set_unresolved(&mut self, oid: u32, why: String) {
        self.statements.retain(|(o, _), _| *o != oid);
        self.tables.remove(&oid);
        self.described.remove(&oid);
        self.unresolved.insert(oid, why);
    }

    fn table(&self, oid: u32) -> Result<&Arc<Table>, Error> {
        self.tables.get(&oid).ok_or_else(|| {
            Error::failed(match self.unresolved.get(&oid) {
                Some(why) => why.clone(),
                None => format!("a change for relation {oid} came before its Relation message"),
            })
        })
    }

    async fn statement(
        &mut self,
        p: &mut Pipeline,
        oid: u32,
        key: String,
        sql: impl FnOnce() -> String,
    ) -> Result<Statement, Error> {
        if let Some(s) = self.statements.get(&(oid, key.clone())) {
            return Ok(s.clone());
        }
        let text = sql();
        let prepared = p.direct().await?.prepare(&text).await;
        let s = match prepared {
            Ok(s) => s,
            Err(e) => {
                let e = sql_error(
                    &format!("preparing `{}`", text.lines().next().unwrap_or("")),
                    e,
                );
                return Err(p.explain(e).await);
            }
        };
        self.statements.insert((oid, key), s.clone());
        Ok(s)
    }

    /// Whether a change committed at `commit_lsn` is already in the table's copy, and
    /// whether it must be applied idempotently.
    fn skip(&self, oid: u32, commit_lsn: u64) -> Result<(bool, bool), Error> {
        let t = self.table(oid)?;
        // The snapshot holds exactly the transactions whose commit record starts before
        // its position; one that starts right at it is not in the copy.
        let copied = t.copied_until.is_some_and(|l| commit_lsn < l);
        let idempotent = t.idempotent_until.is_some_and(|l| commit_lsn < l);
        Ok((copied, idempotent))
    }

    /// Whether a change of `t` committed at `lsn` must find its row: not inside a resumed
    /// copy's window, where the copy may already contain it.
    fn strict(t: &Table, lsn: u64) -> bool {
        t.idempotent_until.is_none_or(|l| lsn >= l)
    }

    /// The old row of a change that joins its table's FULL run: a table that may batch
    /// them, a whole old row with every value sent, and a change outside a resumed copy's
    /// window (where a row may be missing, or there twice).
    fn full_old(t: &Table, old: Option<&OldTuple>, lsn: u64) -> Option<Vec<Value>> {
        match old {
            Some(OldTuple::Full(row))
                if t.batch_full
                    && Self::strict(t, lsn)
                    && row.0.len() == t.columns.len()
                    && !row.0.iter().any(|v| matches!(v, Value::UnchangedToast)) =>
            {
                Some(row.0.clone())
            }
            _ => None,
        }
    }

    /// A change that cannot be matched: the source sent no key for it.
    fn no_key(t: &Table, what: &str, lsn: u64) -> Error {
        Error::failed(format!(
            "cannot apply {what} {}: the source sent no key for it (replica identity NOTHING, or \
             DEFAULT without a primary key; for a partitioned table, its partitions' identity) in \
             the source transaction committing at {}. Nothing of it was committed and the slot \
             keeps every change: give the table a replica identity on the source (pgtransit check \
             replica-identity --fix) and recreate the task, or exclude the table",
            t.name,
            super::lsn_text(lsn)
        ))
    }

    pub async fn insert(
        &mut self,
        p: &mut Pipeline,
        m: Insert,
        commit_lsn: u64,
    ) -> Result<(), Error> {
        let (copied, idempotent) = self.skip(m.relation, commit_lsn)?;
        if copied {
            return Ok(());
        }
        let width = self.table(m.relation)?.columns.len();
        if m.new.0.len() != width {
            return Err(Error::failed(format!(
                "an insert into {} has {} values for {width} columns",
                self.table(m.relation)?.name,
                m.new.0.len()
            )));
        }
        if !idempotent && self.full.contains_key(&m.relation) {
            let change = FullChange::Insert(m.new.0);
            return self.wait_full(p, m.relation, change, commit_lsn).await;
        }
        self.wait(
            p,
            m.relation,
            Kind::Insert { idempotent },
            m.new.0,
            None,
            commit_lsn,
        )
        .await
    }

    pub async fn update(
        &mut self,
        p: &mut Pipeline,
        m: Update,
        commit_lsn: u64,
    ) -> Result<(), Error> {
        let (copied, _) = self.skip(m.relation, commit_lsn)?;
        if copied {
            return Ok(());
        }
        let t = Arc::clone(self.table(m.relation)?);
        if !t.full_identity && !t.key.iter().any(|&k| k) {
            return Err(Self::no_key(&t, "an UPDATE of", commit_lsn));
        }
        if let Some(old) = Self::full_old(&t, m.old.as_ref(), commit_lsn) {
            if m.new.0.len() == old.len() {
                // Every new value, an unchanged TOAST one taken from the old row (which
                // FULL sends whole), so that a later change can be matched against it.
                let write: Vec<bool> = (0..old.len())
                    .map(|i| !matches!(m.new.0[i], Value::UnchangedToast) && !t.always_identity[i])
                    .collect();
                if !write.contains(&true) {
                    return Ok(());
                }
                let new = (m.new.0.into_iter().zip(&old))
                    .map(|(v, o)| match v {
                        Value::UnchangedToast => o.clone(),
                        v => v,
                    })
                    .collect();
                let change = FullChange::Update { old, new, write };
                return self.wait_full(p, m.relation, change, commit_lsn).await;
            }
        }
        if !t.full_identity && m.old.is_none() && t.batch_updates {
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
            let key = key_values(&t, &m.new);
            let mut row: Vec<Value> = set_cols.iter().map(|&i| m.new.0[i].clone()).collect();
            row.extend(key.iter().cloned());
            let kind = Kind::Update { set_cols };
            return self
                .wait(p, m.relation, kind, row, Some(key_of(&key)), commit_lsn)
                .await;
        }
        self.send_own_turn(p, m.relation).await?;
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
        let at = locate(&t, m.old.as_ref(), Some(&m.new), params.len() + 1);
        params.extend(at.params);
        let key = format!("U{set_mask}:{}", at.mask);
        let sql = format!(
            "UPDATE {} SET {} WHERE {} RETURNING 1 AS o",
            t.only_name,
            sets.join(", "),
            at.clause
        );
        let expected = vec![Expected {
            key: at.values,
            lsn: commit_lsn,
            strict: Self::strict(&t, commit_lsn),
        }];
        let sent = sent_rows(format!("updating {}", t.name), expected, at.names);
        self.checked(p, m.relation, key, sql, params, sent).await?;
        self.counts.updates += 1;
        Ok(())
    }

    pub async fn delete(
        &mut self,
        p: &mut Pipeline,
        m: Delete,
        commit_lsn: u64,
    ) -> Result<(), Error> {
        let (copied, _) = self.skip(m.relation, commit_lsn)?;
        if copied {
            return Ok(());
        }
        let t = Arc::clone(self.table(m.relation)?);
        if let Some(old) = Self::full_old(&t, Some(&m.old), commit_lsn) {
            let change = FullChange::Delete(old);
            return self.wait_full(p, m.relation, change, commit_lsn).await;
        }
        if !t.full_identity {
            if !t.key.iter().any(|&k| k) {
                return Err(Self::no_key(&t, "a DELETE from", commit_lsn));
            }
            let key = key_values(&t, m.old.tuple());
            let k = key_of(&key);
            return self
                .wait(p, m.relation, Kind::Delete, key, Some(k), commit_lsn)
                .await;
        }
        self.send_own_turn(p, m.relation).await?;
        let at = locate(&t, Some(&m.old), None, 1);
        let sql = format!(
            "DELETE FROM {} WHERE {} RETURNING 1 AS o",
            t.only_name, at.clause
        );
        let expected = vec![Expected {
            key: at.values,
            lsn: commit_lsn,
            strict: Self::strict(&t, commit_lsn),
        }];
        let sent = sent_rows(format!("deleting from {}", t.name), expected, at.names);
        self.checked(p, m.relation, format!("D{}", at.mask), sql, at.params, sent)
            .await?;
        self.counts.deletes += 1;
        Ok(())
    }

    pub async fn truncate(
        &mut self,
        p: &mut Pipeline,
        m: Truncate,
        commit_lsn: u64,
    ) -> Result<(), Error> {
        // CASCADE reaches other tables: everything before it goes first.
        self.flush(p).await?;
        let mut names = Vec::new();
        for oid in &m.relations {
            if !self.skip(*oid, commit_lsn)?.0 {
                names.push(self.table(*oid)?.only_name.clone());
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
        p.simple(sql.clone(), format!("`{sql}`")).await?;
        self.counts.truncates += 1;
        Ok(())
    }

    /// Send an UPDATE or DELETE that returns the ordinal `o` of each row it found, so that
    /// a row missing on the target is never silent. Under `stop`, the target itself checks
    /// that every row it had to find was found (pg_temp.pgtransit_expect_rows, made by the
    /// apply session) and aborts the transaction otherwise: its COMMIT never happens, and
    /// the statements keep flowing without waiting for their answers. Under `log`, the
    /// ordinals come back and the missing rows are counted.
    async fn checked(
        &mut self,
        p: &mut Pipeline,
        oid: u32,
        key: String,
        sql: String,
        mut params: Vec<TextValue>,
        mut sent: Sent,
    ) -> Result<(), Error> {
        if self.on_missing == OnMissingRow::Log {
            let st = self.statement(p, oid, key, || sql).await?;
            return p.execute_returning(&st, params, sent).await;
        }
        // NULL when every row must be found (the usual case).
        let n = sent.expected.len();
        let required = (!sent.expected.iter().all(|e| e.strict)).then(|| {
            let r: Vec<String> = (1..=n)
                .filter(|&i| sent.expected[i - 1].strict)
                .map(|i| i.to_string())
                .collect();
            Bytes::from(format!("{{{}}}", r.join(",")))
        });
        let k = params.len() + 1;
        params.push(TextValue(Some(Bytes::from(n.to_string()))));
        params.push(TextValue(required));
        let st = self
            .statement(p, oid, format!("S{key}"), || {
                format!(
                    "WITH pgtransit_changed AS ({sql}) SELECT pg_temp.pgtransit_expect_rows(array_agg(o), \
                     ${k}::int, ${}::int[]) FROM pgtransit_changed",
                    k + 1
                )
            })
            .await?;
        sent.server_checked = true;
        p.execute(&st, params, sent).await
    }

    /// Send everything waiting, table by table.
    pub async fn flush(&mut self, p: &mut Pipeline) -> Result<(), Error> {
        for w in std::mem::take(&mut self.waiting) {
            self.send(p, w).await?;
        }
        Ok(())
    }

    /// Before a change of `oid` that is sent at once: what waits for that table goes
    /// first, and so does everything else when the order matters for it or for them.
    async fn send_own_turn(&mut self, p: &mut Pipeline, oid: u32) -> Result<(), Error> {
        let foldable = self.table(oid)?.foldable;
        let mut i = 0;
        while i < self.waiting.len() {
            let w = &self.waiting[i];
            if w.oid == oid || !foldable || !w.foldable {
                let w = self.waiting.remove(i);
                self.send(p, w).await?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Add a change to its table's waiting statement, sending that first when the change
    /// does not fit in it. A key already waiting in an update run takes the later values
    /// (the source sent whole new values for the same columns); in any other run it ends
    /// the run, so that changes to one row keep their order.
    async fn wait(
        &mut self,
        p: &mut Pipeline,
        oid: u32,
        kind: Kind,
        row: Vec<Value>,
        key: Option<Key>,
        lsn: u64,
    ) -> Result<(), Error> {
        let foldable = self.table(oid)?.foldable;
        if self
            .waiting
            .iter()
            .any(|w| w.oid != oid && (!foldable || !w.foldable))
        {
            self.flush(p).await?;
        }
        let width = row.len();
        if let Some(i) = self.waiting.iter().position(|w| w.oid == oid) {
            let w = &mut self.waiting[i];
            let seen = key.as_ref().and_then(|k| w.keys.get(k).copied());
            let same = w.kind == kind;
            if let Some(at) = seen.filter(|_| same && foldable) {
                if matches!(kind, Kind::Update { .. }) {
                    w.rows[at] = row;
                    w.lsns[at] = lsn;
                    self.counts.updates += 1;
                    return Ok(());
                }
            }
            if same && w.copying {
                if p.copying() == Some(oid) {
                    self.counts.inserts += 1;
                    return p.copy_row(&row).await;
                }
                // Another statement had to go out and ended the COPY.
                w.copying = false;
            }
            if same && seen.is_none() && w.has_room(width) {
                if let Some(k) = key {
                    w.keys.insert(k, w.rows.len());
                }
                w.rows.push(row);
                w.lsns.push(lsn);
                self.waiting_rows += 1;
                return self.bound_memory(p).await;
            }
            let w = self.waiting.remove(i);
            if same && kind == (Kind::Insert { idempotent: false }) {
                return self.start_copy(p, w, row).await;
            }
            self.send(p, w).await?;
        }
        let mut keys = HashMap::new();
        if let Some(k) = key {
            keys.insert(k, 0);
        }
        self.waiting.push(Waiting {
            oid,
            kind,
            foldable,
            rows: vec![row],
            lsns: vec![lsn],
            keys,
            copying: false,
        });
        self.waiting_rows += 1;
        self.bound_memory(p).await
    }

    /// Add a change to its FULL table's run, which starts with the inserts already waiting
    /// for the table (any other waiting statement of it goes first).
    async fn wait_full(
        &mut self,
        p: &mut Pipeline,
        oid: u32,
        change: FullChange,
        lsn: u64,
    ) -> Result<(), Error> {
        if self.waiting.iter().any(|w| w.oid != oid && !w.foldable) {
            self.flush(p).await?;
        }
        if !self.full.contains_key(&oid) {
            let mut run = FullRun::default();
            if let Some(i) = self.waiting.iter().position(|w| w.oid == oid) {
                let w = self.waiting.remove(i);
                if w.kind == (Kind::Insert { idempotent: false }) && !w.copying {
                    self.waiting_rows -= w.rows.len();
                    self.counts.inserts += w.rows.len() as u64;
                    for row in w.rows {
                        run.insert(row);
                    }
                } else {
                    self.send(p, w).await?;
                }
            }
            self.waiting_rows += run.rows();
            self.full.insert(oid, run);
            self.waiting.push(Waiting {
                oid,
                kind: Kind::Full,
                foldable: true,
                rows: Vec::new(),
                lsns: Vec::new(),
                keys: HashMap::new(),
                copying: false,
            });
        }
        let run = self.full.get_mut(&oid).expect("the table's run");
        let before = run.rows();
        match change {
            FullChange::Insert(row) => {
                run.insert(row);
                self.counts.inserts += 1;
            }
            FullChange::Update { old, new, write } => {
                run.update(old, new, write, lsn);
                self.counts.updates += 1;
            }
            FullChange::Delete(old) => {
                run.delete(old, lsn);
                self.counts.deletes += 1;
            }
        }
        self.waiting_rows = self.waiting_rows - before + run.rows();
        self.bound_memory(p).await
    }

    /// A FULL table's run: its removals of rows that were there before it, then its
    /// inserts, each kind in statements of many rows (the inserts of a long run as a COPY).
    async fn send_full(&mut self, p: &mut Pipeline, oid: u32, run: FullRun) -> Result<(), Error> {
        let t = Arc::clone(self.table(oid)?);
        let width = t.columns.len();
        let parts = run.into_parts();
        // Per row: the old values, group and number, and for an update the new values.
        let removals = [
            (parts.deletes, false, width + 2, "deleting from"),
            (parts.updates, true, 2 * width + 2, "updating"),
        ];
        for (changes, updates, params_per_row, what) in removals {
            for chunk in changes.chunks(rows_per_statement(params_per_row)) {
                let set = updates.then(|| full::written(&t, chunk));
                let s = full::removal(&t, chunk, set.as_deref());
                let expected = chunk
                    .iter()
                    .map(|c| Expected {
                        key: c.old.clone(),
                        lsn: c.lsn,
                        strict: true,
                    })
                    .collect();
                let sent = sent_rows(format!("{what} {}", t.name), expected, t.key_names());
                let params = s.params.iter().map(text).collect();
                self.checked(p, oid, s.key, s.sql, params, sent).await?;
            }
        }
        if parts.inserts.len() > BATCH_ROWS {
            let st = self.copy_statement(p, &t, oid).await?;
            p.copy_begin(&st, oid, format!("copying into {}", t.name))
                .await?;
            for row in &parts.inserts {
                p.copy_row(row).await?;
            }
            return p.copy_end().await;
        }
        for chunk in parts.inserts.chunks(rows_per_statement(width)) {
            let n = chunk.len();
            let st = self
                .statement(p, oid, format!("I{n}"), || insert_sql(&t, n, false))
                .await?;
            let params = chunk.iter().flat_map(|r| r.iter().map(text)).collect();
            let sent = Sent::plain(format!("inserting into {}", t.name));
            p.execute(&st, params, sent).await?;
        }
        Ok(())
    }

    async fn bound_memory(&mut self, p: &mut Pipeline) -> Result<(), Error> {
        if self.waiting_rows > MAX_WAITING_ROWS {
            self.flush(p).await?;
        }
        Ok(())
    }

    /// A run of inserts longer than one statement continues as a COPY: the rows waiting,
    /// this one and every further insert into the table until another change ends it.
    async fn start_copy(
        &mut self,
        p: &mut Pipeline,
        w: Waiting,
        row: Vec<Value>,
    ) -> Result<(), Error> {
        let t = Arc::clone(self.table(w.oid)?);
        let st = self.copy_statement(p, &t, w.oid).await?;
        p.copy_begin(&st, w.oid, format!("copying into {}", t.name))
            .await?;
        self.waiting_rows -= w.rows.len();
        self.counts.inserts += w.rows.len() as u64 + 1;
        for r in w.rows.iter().chain(std::iter::once(&row)) {
            p.copy_row(r).await?;
        }
        self.waiting.push(Waiting {
            rows: Vec::new(),
            lsns: Vec::new(),
            keys: HashMap::new(),
            copying: true,
            ..w
        });
        Ok(())
    }

    async fn copy_statement(
        &mut self,
        p: &mut Pipeline,
        t: &Table,
        oid: u32,
    ) -> Result<Statement, Error> {
        self.statement(p, oid, "C".into(), || {
            format!("COPY {} ({}) FROM STDIN", t.name, t.columns.join(", "))
        })
        .await
    }

    /// One table's waiting changes as one statement, each value cast to its column's type
    /// where it is joined against.
    async fn send(&mut self, p: &mut Pipeline, w: Waiting) -> Result<(), Error> {
        if w.kind == Kind::Full {
            let run = self.full.remove(&w.oid).unwrap_or_default();
            self.waiting_rows -= run.rows();
            return self.send_full(p, w.oid, run).await;
        }
        if w.copying {
            if p.copying() == Some(w.oid) {
                p.copy_end().await?;
            }
            return Ok(());
        }
        let n = w.rows.len();
        self.waiting_rows -= n;
        if n == 0 {
            return Ok(());
        }
        let t = Arc::clone(self.table(w.oid)?);
        let params: Vec<TextValue> = w.rows.iter().flat_map(|r| r.iter().map(text)).collect();
        // Updates and deletes return the ordinal of each row they found; the key of each
        // row is the tail of its values.
        let expected = |from: usize| -> Vec<Expected> {
            w.rows
                .iter()
                .zip(&w.lsns)
                .map(|(r, &lsn)| Expected {
                    key: r[from..].to_vec(),
                    lsn,
                    strict: Self::strict(&t, lsn),
                })
                .collect()
        };
        match &w.kind {
            Kind::Insert { idempotent } => {
                let key = format!("I{n}{}", if *idempotent { "i" } else { "" });
                let st = self
                    .statement(p, w.oid, key, || insert_sql(&t, n, *idempotent))
                    .await?;
                p.execute(
                    &st,
                    params,
                    Sent::plain(format!("inserting into {}", t.name)),
                )
                .await?;
            }
            Kind::Update { set_cols } => {
                let key = format!("UB{n}:{set_cols:?}");
                let sent = sent_rows(
                    format!("updating {}", t.name),
                    expected(set_cols.len()),
                    t.key_names(),
                );
                let sql = update_sql(&t, n, set_cols);
                self.checked(p, w.oid, key, sql, params, sent).await?;
            }
            Kind::Delete => {
                let sent = sent_rows(
                    format!("deleting from {}", t.name),
                    expected(0),
                    t.key_names(),
                );
                let sql = delete_sql(&t, n);
                self.checked(p, w.oid, format!("DB{n}"), sql, params, sent)
                    .await?;
            }
            Kind::Full => unreachable!("a FULL run is sent by send_full"),
        }
        match w.kind {
            Kind::Insert { .. } => self.counts.inserts += n as u64,
            Kind::Update { .. } => self.counts.updates += n as u64,
            Kind::Delete => self.counts.deletes += n as u64,
            Kind::Full => {}
        }
        Ok(())
    }
}

/// How many rows of `params_per_row` parameters one statement takes.
fn rows_per_statement(params_per_row: usize) -> usize {
    BATCH_ROWS.min(MAX_PARAMS / params_per_row.max(1)).max(1)
}

/// `$first, $first+1, ...` as one VALUES tuple per row, cast where the types are given;
/// with `ordinal`, each tuple ends with its 1-based row number (for RETURNING).
fn tuples(n: usize, width: usize, casts: Option<&[&str]>, ordinal: bool) -> String {
    (0..n)
        .map(|r| {
            let mut ps: Vec<String> = (0..width)
                .map(|j| match casts {
                    Some(c) => format!("${}::{}", r * width + j + 1, c[j]),
                    None => format!("${}", r * width + j + 1),
                })
                .collect();
            if ordinal {
                ps.push(format!("{}", r + 1));
            }
            format!("({})", ps.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn insert_sql(t: &Table, n: usize, idempotent: bool) -> String {
    format!(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES {}{}",
        t.name,
        t.columns.join(", "),
        tuples(n, t.columns.len(), None, false),
        if idempotent {
            " ON CONFLICT DO NOTHING"
        } else {
            ""
        }
    )
}

fn key_columns(t: &Table) -> Vec<usize> {
    (0..t.columns.len()).filter(|&i| t.key[i]).collect()
}

fn update_sql(t: &Table, n: usize, set_cols: &[usize]) -> String {
    let keys = key_columns(t);
    let cols: Vec<usize> = set_cols.iter().chain(keys.iter()).copied().collect();
    let casts: Vec<&str> = cols.iter().map(|&c| t.types[c].as_str()).collect();
    let mut alias: Vec<String> = (0..cols.len()).map(|j| format!("c{j}")).collect();
    alias.push("o".into());
    let sets: Vec<String> = set_cols
        .iter()
        .enumerate()
        .map(|(j, &c)| format!("{} = v.c{j}", t.columns[c]))
        .collect();
    let on: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(j, &c)| format!("x.{} = v.c{}", t.columns[c], set_cols.len() + j))
        .collect();
    format!(
        "UPDATE {} AS x SET {} FROM (VALUES {}) AS v({}) WHERE {} RETURNING v.o",
        t.only_name,
        sets.join(", "),
        tuples(n, cols.len(), Some(&casts), true),
        alias.join(", "),
        on.join(" AND ")
    )
}

fn delete_sql(t: &Table, n: usize) -> String {
    let keys = key_columns(t);
    let casts: Vec<&str> = keys.iter().map(|&c| t.types[c].as_str()).collect();
    let mut alias: Vec<String> = (0..keys.len()).map(|j| format!("c{j}")).collect();
    alias.push("o".into());
    let on: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(j, &c)| format!("x.{} = v.c{j}", t.columns[c]))
        .collect();
    format!(
        "DELETE FROM {} AS x USING (VALUES {}) AS v({}) WHERE {} RETURNING v.o",
        t.only_name,
        tuples(n, keys.len(), Some(&casts), true),
        alias.join(", "),
        on.join(" AND ")
    )
}

/// How a statement of one row finds it: the WHERE clause, a mask of the columns used
/// (part of the prepared statement's identity), the parameters, and the values and names
/// of those columns (to name the row if it is missing).
struct Locate {
    clause: String,
    mask: String,
    params: Vec<TextValue>,
    values: Vec<Value>,
    names: Vec<String>,
}

/// The row by its identity key (from the old key tuple when the key changed), or under
/// FULL identity by every old column, NULL-safe, through a ctid subquery so that exactly
/// one row is touched. Each column is compared with its type's equality operator, its
/// value parsed by the target as the column's type; a type without one is compared by the
/// text the target renders of both sides (never by the source's text against the
/// target's). On a partitioned target a ctid is only unique with its tableoid.
fn locate(t: &Table, old: Option<&OldTuple>, new: Option<&Tuple>, first: usize) -> Locate {
    let tuple = old
        .map(|o| o.tuple())
        .or(new)
        .expect("a tuple to locate the row");
    let mut conds = Vec::new();
    // FULL: of the rows equal to the old ones, those that are also written the same way.
    let mut exact = Vec::new();
    let mut at = Locate {
        clause: String::new(),
        mask: String::new(),
        params: Vec::new(),
        values: Vec::new(),
        names: Vec::new(),
    };
    for (i, v) in tuple.0.iter().enumerate() {
        let used = t.key.get(i).copied().unwrap_or(false) && !matches!(v, Value::UnchangedToast);
        at.mask.push(if used { '1' } else { '0' });
        if !used {
            continue;
        }
        let p = first + at.params.len();
        let (col, typ) = (&t.columns[i], &t.types[i]);
        if !t.full_identity {
            conds.push(format!("{col} = ${p}"));
        } else if t.equality[i] {
            conds.push(format!("{col} IS NOT DISTINCT FROM ${p}::{typ}"));
            exact.push(format!(
                "{col}::text IS NOT DISTINCT FROM ${p}::{typ}::text"
            ));
        } else {
            conds.push(format!(
                "{col}::text IS NOT DISTINCT FROM ${p}::{typ}::text"
            ));
        }
        at.params.push(text(v));
        at.values.push(v.clone());
        at.names.push(col.clone());
    }
    // Callers refuse a table without key columns. A FULL row whose every column is an
    // unchanged TOAST value cannot be told apart: it matches nothing, which is reported.
    let cond = if conds.is_empty() {
        "false".to_string()
    } else {
        conds.join(" AND ")
    };
    // Equal is not always the same: numeric 1.0 = 1.00, float -0 = 0, a case-insensitive
    // type's 'A' = 'a'. Of several equal rows, the one written as the source's old row was
    // is the one the source changed; taking any other would leave both sides equal by the
    // operator but different in content.
    let order = if exact.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY ({}) DESC", exact.join(" AND "))
    };
    at.clause = if !t.full_identity {
        cond
    } else if t.partitioned {
        format!(
            "(tableoid, ctid) = (SELECT tableoid, ctid FROM {} WHERE {cond}{order} LIMIT 1)",
            t.name
        )
    } else {
        format!(
            "ctid = (SELECT ctid FROM {} WHERE {cond}{order} LIMIT 1)",
            t.only_name
        )
    };
    at
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

fn key_of(key: &[Value]) -> Key {
    key.iter()
        .map(|v| match v {
            Value::Text(b) | Value::Binary(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            name: "\"public\".\"t\"".into(),
            only_name: "ONLY \"public\".\"t\"".into(),
            partitioned: false,
            columns: vec!["\"id\"".into(), "\"v\"".into(), "\"w\"".into()],
            key: vec![true, false, false],
            full_identity: false,
            equality: vec![true, true, true],
            always_identity: vec![false, false, false],
            types: vec!["integer".into(), "text".into(), "jsonb".into()],
            copied_until: None,
            idempotent_until: None,
            foldable: true,
            batch_updates: true,
            batch_full: false,
        }
    }

    #[test]
    fn a_run_of_changes_is_one_set_statement_with_one_parameter_per_value() {
        let t = table();
        assert_eq!(
            insert_sql(&t, 2, false),
            "INSERT INTO \"public\".\"t\" (\"id\", \"v\", \"w\") OVERRIDING SYSTEM VALUE \
             VALUES ($1, $2, $3), ($4, $5, $6)"
        );
        assert!(insert_sql(&t, 1, true).ends_with(" ON CONFLICT DO NOTHING"));
        // Only the columns an UPDATE sent are written; rows are found by the key, each
        // tuple numbered so that RETURNING names the rows found.
        assert_eq!(
            update_sql(&t, 2, &[2]),
            "UPDATE ONLY \"public\".\"t\" AS x SET \"w\" = v.c0 FROM (VALUES ($1::jsonb, $2::integer, 1), \
             ($3::jsonb, $4::integer, 2)) AS v(c0, c1, o) WHERE x.\"id\" = v.c1 RETURNING v.o"
        );
        assert_eq!(
            delete_sql(&t, 3),
            "DELETE FROM ONLY \"public\".\"t\" AS x USING (VALUES ($1::integer, 1), ($2::integer, 2), \
             ($3::integer, 3)) AS v(c0, o) WHERE x.\"id\" = v.c0 RETURNING v.o"
        );
    }

    #[test]
    fn the_same_description_again_keeps_the_table_another_resolves_it_again() {
        let r = Relation {
            xid: None,
            oid: 7,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: b'd',
            columns: vec![pgoutput::Column {
                flags: 1,
                name: "id".into(),
                type_oid: 23,
                type_modifier: -1,
            }],
        };
        let mut a = Applier::new();
        assert!(!a.unchanged(&r), "never resolved");
        a.set_table(r.clone(), table());
        assert!(a.unchanged(&r));
        let full = Relation {
            replica_identity: b'f',
            ..r.clone()
        };
        assert!(!a.unchanged(&full), "the identity changed");
        a.set_unresolved(7, "gone".into());
        assert!(!a.unchanged(&r), "unresolved: resolved again");
    }

    #[test]
    fn a_batch_stays_under_the_row_and_parameter_limits() {
        let w = |rows: usize| Waiting {
            oid: 1,
            kind: Kind::Delete,
            foldable: true,
            rows: vec![Vec::new(); rows],
            lsns: Vec::new(),
            keys: HashMap::new(),
            copying: false,
        };
        assert!(w(0).has_room(3) && w(BATCH_ROWS - 1).has_room(3));
        assert!(!w(BATCH_ROWS).has_room(3));
        // A wide table is bounded by PostgreSQL's 65535 parameters first.
        let width = 200;
        let most = MAX_PARAMS / width;
        assert!(w(most - 2).has_room(width) && !w(most).has_room(width));
        assert!(most * width <= 65_535);
    }
}
