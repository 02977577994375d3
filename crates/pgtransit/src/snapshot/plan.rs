//! The units of the copy: a table, or a ctid range of a big one. Planned once, stored on
//! the target, and read back on resume so that chunk boundaries never move.

use tokio_postgres::Row;

use super::slot::Exported;
use super::CopyOptions;
use crate::check::Side;
use crate::error::Error;
use crate::native::{self};
use crate::quote;
use crate::step::Session;

pub(super) const COPY_UNITS: &str = include_str!("sql/copy-units.sql");
const BLOCK: i64 = 8192;

/// The unit that stands for every large object (logical replication does not carry them;
/// the copy does, in the same snapshot).
pub const LARGE_OBJECTS: &str = "pg_largeobject";

#[derive(Clone, Debug)]
pub struct Unit {
    /// Source table, quoted.
    pub relation: String,
    pub chunk: i32,
    pub chunks: i32,
    /// Target table, quoted (the partitioned root for a leaf of a selected root).
    pub target_name: String,
    /// Quoted column list without generated columns.
    pub columns: String,
    pub first_page: i64,
    /// None: to the end of the table.
    pub end_page: Option<i64>,
    pub bytes_planned: i64,
    pub binary: bool,
    pub has_key: bool,
    pub done: bool,
}

impl Unit {
    /// Copied whole, into itself: may be truncated and loaded with COPY FREEZE.
    pub fn whole_own_table(&self) -> bool {
        self.chunks == 1 && self.target_name == self.relation
    }

    /// The source side of the copy.
    pub fn copy_out_sql(&self) -> String {
        let format = if self.binary { "binary" } else { "text" };
        if self.chunks == 1 {
            return format!(
                "COPY {} ({}) TO STDOUT (FORMAT {format})",
                self.relation, self.columns
            );
        }
        let upper = match self.end_page {
            Some(e) => format!(" AND ctid < '({e},0)'::tid"),
            None => String::new(),
        };
        format!(
            "COPY (SELECT {} FROM ONLY {} WHERE ctid >= '({},0)'::tid{upper}) TO STDOUT (FORMAT {format})",
            self.columns, self.relation, self.first_page
        )
    }

    /// The target side.
    pub fn copy_in_sql(&self, freeze: bool) -> String {
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT {}{})",
            self.target_name,
            self.columns,
            if self.binary { "binary" } else { "text" },
            if freeze { ", FREEZE" } else { "" }
        )
    }

    pub fn is_large_objects(&self) -> bool {
        self.relation == LARGE_OBJECTS
    }

    pub fn label(&self) -> String {
        if self.chunks == 1 {
            self.relation.clone()
        } else {
            format!("{} [{}/{}]", self.relation, self.chunk + 1, self.chunks)
        }
    }
}

fn unit_from_row(r: &Row) -> Unit {
    Unit {
        relation: r.get("relation"),
        chunk: r.get("chunk"),
        chunks: r.get("chunks"),
        target_name: r.get("target_name"),
        columns: r.get("columns"),
        first_page: r.get("first_page"),
        end_page: r.get("end_page"),
        bytes_planned: r.get("bytes_planned"),
        binary: r.get("binary_copy"),
        has_key: r.get("has_key"),
        done: r.get("done"),
    }
}

/// The stored plan of the session's task (empty when the copy never started).
pub async fn load(s: &mut Session<'_>) -> Result<Vec<Unit>, Error> {
    let name = s.task.name.clone();
    let rows = s
        .client(Side::Target)
        .await?
        .query(
            "SELECT * FROM pgtransit.copy_progress WHERE task = $1 ORDER BY bytes_planned DESC, relation, chunk",
            &[&name],
        )
        .await
        .map_err(|e| crate::error::sql_error("reading pgtransit.copy_progress (on the target)", e))?;
    Ok(rows.iter().map(unit_from_row).collect())
}

/// Plan the units from the source catalog.
pub async fn make(
    s: &mut Session<'_>,
    _snap: &Exported,
    o: &CopyOptions,
) -> Result<Vec<Unit>, Error> {
    let sql = native::sql::for_task(COPY_UNITS, s.task);
    let rows = s
        .rows(Side::Source, "listing the tables to copy", &sql)
        .await?;
    let mut units = Vec::new();
    for r in &rows {
        let relation: String = r.get("name");
        let target_name: String = r.get("target_name");
        let columns: Option<String> = r.get("columns");
        let Some(columns) = columns else { continue };
        let bytes: i64 = r.get("bytes");
        let pages: i64 = r.get("pages");
        let heap = pages * BLOCK;
        // Leaves copied into their root are not split: a unit must be all or nothing there.
        let chunks = if target_name == relation && o.split_bytes > 0 && heap >= 2 * o.split_bytes {
            (heap / o.split_bytes).clamp(2, 1024)
        } else {
            1
        };
        let per = (pages + chunks - 1) / chunks;
        for i in 0..chunks {
            units.push(Unit {
                relation: relation.clone(),
                chunk: i as i32,
                chunks: chunks as i32,
                target_name: target_name.clone(),
                columns: columns.clone(),
                first_page: i * per,
                end_page: (i + 1 < chunks).then_some((i + 1) * per),
                bytes_planned: bytes / chunks,
                binary: r.get("binary_safe"),
                has_key: r.get("has_key"),
                done: false,
            });
        }
    }
    let lo = s
        .rows(
            Side::Source,
            "counting large objects",
            "SELECT count(*), coalesce(sum(pg_column_size(data)), 0)::bigint FROM pg_largeobject_metadata m \
             LEFT JOIN LATERAL (SELECT data FROM pg_largeobject l WHERE l.loid = m.oid) d ON true",
        )
        .await;
    // Reading pg_largeobject needs superuser; without it, count the metadata only.
    let (count, bytes): (i64, i64) = match lo {
        Ok(rows) => (rows[0].get(0), rows[0].get(1)),
        Err(_) => {
            let rows = s
                .rows(
                    Side::Source,
                    "counting large objects",
                    "SELECT count(*), 0::bigint FROM pg_largeobject_metadata",
                )
                .await?;
            (rows[0].get(0), 0)
        }
    };
    if count > 0 {
        units.push(Unit {
            relation: LARGE_OBJECTS.into(),
            chunk: 0,
            chunks: 1,
            target_name: LARGE_OBJECTS.into(),
            columns: String::new(),
            first_page: 0,
            end_page: None,
            bytes_planned: bytes,
            binary: true,
            has_key: true,
            done: false,
        });
    }
    Ok(units)
}

/// Refuse to load into target tables that already hold rows, unless forced.
pub async fn guard_empty_targets(
    s: &mut Session<'_>,
    units: &[Unit],
    force: bool,
) -> Result<(), Error> {
    let mut targets: Vec<&String> = units.iter().map(|u| &u.target_name).collect();
    targets.sort();
    targets.dedup();
    let mut full = Vec::new();
    for t in targets {
        let from = if t == LARGE_OBJECTS {
            "pg_largeobject_metadata"
        } else {
            t.as_str()
        };
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {from})");
        let rows = s
            .rows(Side::Target, "looking for rows on the target", &sql)
            .await?;
        if rows.first().map(|r| r.get::<_, bool>(0)).unwrap_or(false) {
            full.push(t.clone());
        }
    }
    if !full.is_empty() && !force {
        return Err(Error::refused(format!(
            "the target already holds rows in {}: the copy never writes into a table with data unless \
             told to (--force adds the source rows to them)",
            full.join(", ")
        )));
    }
    Ok(())
}

/// Record the plan and the slot's consistent point on the target.
pub async fn store(s: &mut Session<'_>, units: &[Unit], lsn: &str) -> Result<(), Error> {
    let task = s.task;
    let client = s.client(Side::Target).await?;
    let err = |e| crate::error::sql_error("recording the copy plan (on the target)", e);
    client.batch_execute("BEGIN").await.map_err(err)?;
    client
        .execute(
            "INSERT INTO pgtransit.copy_state (task, slot, consistent_lsn) VALUES ($1, $2, $3::text::pg_lsn)",
            &[&task.name, &task.slot, &lsn],
        )
        .await
        .map_err(err)?;
    let insert = client
        .prepare(
            "INSERT INTO pgtransit.copy_progress (task, relation, chunk, chunks, target_name, columns, \
             binary_copy, has_key, first_page, end_page, bytes_planned) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .await
        .map_err(err)?;
    for u in units {
        client
            .execute(
                &insert,
                &[
                    &task.name,
                    &u.relation,
                    &u.chunk,
                    &u.chunks,
                    &u.target_name,
                    &u.columns,
                    &u.binary,
                    &u.has_key,
                    &u.first_page,
                    &u.end_page,
                    &u.bytes_planned,
                ],
            )
            .await
            .map_err(err)?;
    }
    client.batch_execute("COMMIT").await.map_err(err)
}

/// The slot's consistent point recorded when the copy started.
pub async fn consistent_lsn(s: &mut Session<'_>) -> Result<String, Error> {
    let name = s.task.name.clone();
    let row = s
        .client(Side::Target)
        .await?
        .query_opt(
            "SELECT consistent_lsn::text FROM pgtransit.copy_state WHERE task = $1",
            &[&name],
        )
        .await
        .map_err(|e| crate::error::sql_error("reading pgtransit.copy_state (on the target)", e))?;
    row.map(|r| r.get(0))
        .ok_or_else(|| Error::failed("pgtransit.copy_state has no row for this task"))
}

/// A split table whose chunks were only partly copied is copied again, whole, from the
/// fresh snapshot: chunks of two snapshots cannot be mixed. A row updated between them has
/// its old version in an early chunk and its new one (on another page) in a late chunk, so
/// the target would hold both. Finished tables are kept.
pub async fn restart_partial_tables(
    s: &mut Session<'_>,
    units: &mut [Unit],
    events: &super::Events,
) -> Result<(), Error> {
    let mut restart: Vec<String> = units
        .iter()
        .filter(|u| u.done && u.chunks > 1)
        .filter(|u| units.iter().any(|v| v.relation == u.relation && !v.done))
        .map(|u| u.relation.clone())
        .collect();
    restart.sort();
    restart.dedup();
    for rel in restart {
        events(super::message(format!(
            "  {rel} was partly copied: copying it again, whole, from the new snapshot"
        )));
        let sql = format!(
            "BEGIN; TRUNCATE ONLY {rel}; UPDATE pgtransit.copy_progress SET done = false, snapshot_lsn = NULL, \
             rows_copied = NULL, copied_at = NULL WHERE task = {} AND relation = {}; COMMIT;",
            quote::literal(&s.task.name),
            quote::literal(&rel)
        );
        s.execute(Side::Target, "restarting a partly copied table", &sql)
            .await?;
        for u in units.iter_mut().filter(|u| u.relation == rel) {
            u.done = false;
        }
    }
    Ok(())
}

/// One table's copy as the bookkeeping on the target records it (`describe`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TableCopy {
    pub table: String,
    pub units: i32,
    pub done: i32,
    pub rows: i64,
}

/// The copy's units per target table: how many, how many done, the rows they copied;
/// nothing before the first copy made the bookkeeping table.
pub async fn copy_by_table(
    target: &tokio_postgres::Client,
    task: &str,
) -> Result<Vec<TableCopy>, tokio_postgres::Error> {
    let exists: bool = target
        .query_one(
            "SELECT to_regclass('pgtransit.copy_progress') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = target
        .query(
            "SELECT target_name, count(*)::int, count(*) FILTER (WHERE done)::int, \
             coalesce(sum(rows_copied) FILTER (WHERE done), 0)::bigint \
             FROM pgtransit.copy_progress WHERE task = $1 GROUP BY 1 ORDER BY 1",
            &[&task],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TableCopy {
            table: r.get(0),
            units: r.get(1),
            done: r.get(2),
            rows: r.get(3),
        })
        .collect())
}
