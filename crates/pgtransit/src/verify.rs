//! `pgtransit verify`: is the target's content the source's?
//!
//! * count: exact row counts on both sides.
//! * checksum: every row hashed, column by column with each type's own hash function (the
//!   hashes hash partitioning relies on, stable across servers; see `Table::hash`);
//!   summed per table
//!   on both sides in parallel, and for a table that differs per chunk of key range. A
//!   chunk that differs is compared row by row, by key, in both directions, and its keys
//!   are listed: missing on the target, only on the target, changed. While the task
//!   streams, a differing chunk is read again at a consistent point (the source in a
//!   snapshot, the target once it has applied past that snapshot) before it is reported.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;

use crate::error::{sql_error, Error};
use crate::quote;
use crate::task::Task;

crate::named::named! {
    pub enum Mode {
        /// Exact row counts on both sides.
        Count = "count",
        /// Every row's checksum, compared in key order.
        Checksum = "checksum",
    }
}

crate::named::named! {
    /// `--verify` of a switchover: a verify mode, or none.
    pub enum VerifyChoice {
        Count = "count",
        Checksum = "checksum",
        None = "none",
    }
}

impl VerifyChoice {
    pub fn mode(self) -> Option<Mode> {
        match self {
            VerifyChoice::Count => Some(Mode::Count),
            VerifyChoice::Checksum => Some(Mode::Checksum),
            VerifyChoice::None => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub mode: Mode,
    /// Only these tables (`schema.table`, as written or quoted); empty: every selected one.
    pub tables: Vec<String>,
    pub jobs: usize,
    /// Rows per checksum chunk (about).
    pub chunk_rows: i64,
    /// A differing chunk is checked this many more times, this far apart, before it counts.
    pub rechecks: u32,
    pub recheck_pause: Duration,
    /// Keys listed per table at most.
    pub max_keys: usize,
    /// Called as pieces of the work finish: (pieces done, pieces known so far, source rows
    /// compared so far). For progress bars.
    pub progress: Option<ProgressHook>,
}

/// A progress callback (see `VerifyOptions::progress`).
#[derive(Clone)]
pub struct ProgressHook(pub Arc<dyn Fn(usize, usize, i64) + Send + Sync>);

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            mode: Mode::Count,
            tables: vec![],
            jobs: 2,
            chunk_rows: 1_000_000,
            rechecks: 3,
            recheck_pause: Duration::from_secs(2),
            max_keys: 100,
            progress: None,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TableResult {
    pub table: String,
    pub source_rows: i64,
    pub target_rows: i64,
    pub chunks: usize,
    pub differing_chunks: usize,
    /// Keys (as row text) on the source but not on the target.
    pub missing_on_target: Vec<String>,
    /// Keys on the target but not on the source.
    pub only_on_target: Vec<String>,
    /// Keys on both sides with different content.
    pub changed: Vec<String>,
    pub pass: bool,
    pub note: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub mode: Mode,
    pub tables: Vec<TableResult>,
    pub rows_verified: i64,
    pub seconds: f64,
}

impl VerifyReport {
    pub fn failures(&self) -> usize {
        self.tables.iter().filter(|t| !t.pass).count()
    }
}

/// Settings under which a row's text form is the same on both servers.
const CANONICAL: &str = "SET datestyle = 'ISO, YMD'; SET intervalstyle = postgres; \
     SET extra_float_digits = 3; SET timezone = 'UTC'; SET bytea_output = hex; \
     SET default_transaction_read_only = on";

struct Table {
    name: String,
    /// Key columns, quoted; empty: the table has no key (compared whole).
    key: Vec<String>,
    /// A single integer key: chunks are ranges of it.
    int_key: bool,
    /// The row hash (PostgreSQL 11+): each column hashed by its type's own extended hash
    /// function (those hash partitioning relies on: no text conversion, stable across
    /// servers), seeded by the column's position and combined by xor; about twice as fast
    /// as `hash_record_extended` over the whole row, which builds a composite per row.
    /// Enums hash their value's oid, which differs between clusters, so enums (also in
    /// arrays, domains or composites), composites and types without a hash function are
    /// hashed by their text. A type whose hash function takes another type is cast to it
    /// where a cast exists (timestamptz to timestamp, under the fixed session time zone),
    /// else hashed by its text (date, boolean, bytea).
    /// Before 11: md5 of the row's text.
    hash: String,
}

async fn session(spec: &crate::conn::ConnSpec) -> Result<Client, Error> {
    let c = crate::conn::connect(spec).await?;
    c.batch_execute(CANONICAL)
        .await
        .map_err(|e| sql_error("preparing a verify session", e))?;
    Ok(c)
}

/// The task's tables on the source with their keys (primary key, else replica identity
/// index).
async fn tables(task: &Task, source: &Client, only: &[String]) -> Result<Vec<Table>, Error> {
    let rows = source
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, \
                 coalesce((SELECT array_agg(quote_ident(a.attname) ORDER BY k.ord) \
                   FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(att, ord) \
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att \
                   WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident) \
                   AND i.indexrelid = (SELECT i2.indexrelid FROM pg_index i2 WHERE i2.indrelid = c.oid \
                     AND (i2.indisprimary OR i2.indisreplident) ORDER BY i2.indisprimary DESC LIMIT 1)), '{{}}'), \
                 coalesce((SELECT count(*) = 1 AND bool_and(a.atttypid IN (20, 21, 23)) \
                   FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) k(att) \
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att \
                   WHERE i.indrelid = c.oid AND i.indisprimary), false), \
                 CASE WHEN current_setting('server_version_num')::int >= 110000 THEN ( \
                 SELECT coalesce(string_agg(format(CASE WHEN attnotnull THEN '%s(x.%I%s, %s)' \
                          ELSE 'coalesce(%s(x.%I%s, %s), %s)' END, \
                          CASE WHEN textual THEN 'hashtextextended' ELSE fn END, attname, \
                          CASE WHEN textual THEN '::text' ELSE f_cast END, ord, -ord), ' # ' ORDER BY ord), '0') \
                 FROM (SELECT a.attname, a.attnotnull, row_number() OVER (ORDER BY a.attnum) AS ord, f.fn, \
                         coalesce(f.arg_cast, '') AS f_cast, \
                         f.fn IS NULL \
                         OR ty.typtype IN ('e', 'c') OR el.typtype IN ('e', 'c') \
                         OR b.typtype IN ('e', 'c') OR bel.typtype IN ('e', 'c') \
                         OR (coalesce(el.oid, bel.oid) IS NOT NULL AND NOT EXISTS ( \
                           SELECT 1 FROM pg_opclass o JOIN pg_am am ON am.oid = o.opcmethod \
                           WHERE am.amname = 'hash' AND o.opcdefault \
                           AND o.opcintype = coalesce(el.oid, bel.oid))) AS textual \
                       FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid \
                       LEFT JOIN pg_type el ON el.oid = ty.typelem AND ty.typcategory = 'A' \
                       LEFT JOIN pg_type b ON b.oid = ty.typbasetype \
                       LEFT JOIN pg_type bel ON bel.oid = b.typelem AND b.typcategory = 'A' \
                       LEFT JOIN LATERAL ( \
                         SELECT p.amproc::regproc::text AS fn, \
                           CASE WHEN pr.proargtypes[0] = o.opcintype THEN '' \
                                ELSE '::' || format_type(pr.proargtypes[0], NULL) END AS arg_cast \
                         FROM pg_opclass o JOIN pg_am am ON am.oid = o.opcmethod \
                         JOIN pg_amproc p ON p.amprocfamily = o.opcfamily AND p.amprocnum = 2 \
                           AND p.amproclefttype = o.opcintype AND p.amprocrighttype = o.opcintype \
                         JOIN pg_proc pr ON pr.oid = p.amproc \
                         JOIN pg_type at ON at.oid = pr.proargtypes[0] \
                         WHERE (pr.proargtypes[0] = o.opcintype OR (at.typtype <> 'p' AND EXISTS ( \
                           SELECT 1 FROM pg_cast k WHERE k.castsource = o.opcintype \
                           AND k.casttarget = pr.proargtypes[0]))) \
                         AND am.amname = 'hash' AND o.opcdefault AND o.opcintype = CASE \
                           WHEN coalesce(b.typcategory, ty.typcategory) = 'A' THEN 'anyarray'::regtype::oid \
                           WHEN coalesce(b.typtype, ty.typtype) = 'r' THEN 'anyrange'::regtype::oid \
                           WHEN coalesce(b.typtype, ty.typtype) = 'm' THEN to_regtype('anymultirange')::oid \
                           ELSE coalesce(b.oid, ty.oid) END \
                         LIMIT 1) f ON true \
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) cols) END \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'r' AND c.relpersistence = 'p' \
                 AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') \
                 AND {} ORDER BY 1, 2",
                task.objects.sql_table_condition("n.nspname", "c.relname")
            ),
            &[],
        )
        .await
        .map_err(|e| sql_error("listing the tables to verify (on the source)", e))?;
    let wanted = |schema: &str, name: &str| {
        only.is_empty()
            || only.iter().any(|o| {
                let q = quote::qualified(schema, name);
                *o == q || *o == format!("{schema}.{name}") || (!o.contains('.') && o == name)
            })
    };
    Ok(rows
        .iter()
        .filter(|r| wanted(r.get(0), r.get(1)))
        .map(|r| {
            let key: Vec<String> = r.get(2);
            Table {
                name: quote::qualified(r.get(0), r.get(1)),
                int_key: r.get::<_, bool>(3) && key.len() == 1,
                key,
                hash: r.get::<_, Option<String>>(4).unwrap_or_else(|| {
                    "('x' || left(md5(x::text), 16))::bit(64)::bigint".to_string()
                }),
            }
        })
        .collect())
}

/// A piece of a table: all of it, or a key range `[lo, hi)`.
#[derive(Clone)]
struct Chunk {
    table: usize,
    range: Option<(i64, i64)>,
}

impl Chunk {
    fn filter(&self, t: &Table) -> String {
        let Some(k) = t.key.first() else {
            return String::new();
        };
        match self.range {
            Some((i64::MIN, hi)) => format!("WHERE {k} < {hi}"),
            Some((lo, i64::MAX)) => format!("WHERE {k} >= {lo}"),
            Some((lo, hi)) => format!("WHERE {k} >= {lo} AND {k} < {hi}"),
            None => String::new(),
        }
    }
}

async fn count(c: &Client, t: &Table, chunk: &Chunk, what: &str) -> Result<i64, Error> {
    c.query_one(
        &format!("SELECT count(*) FROM {} {}", t.name, chunk.filter(t)),
        &[],
    )
    .await
    .map(|r| r.get(0))
    .map_err(|e| sql_error(&format!("counting {} ({what})", t.name), e))
}

/// Rows and the sum of their 64-bit hashes, as text.
async fn digest(c: &Client, t: &Table, chunk: &Chunk, what: &str) -> Result<(i64, String), Error> {
    let sql = format!(
        "SELECT count(*), coalesce(sum({}), 0)::text FROM {} x {}",
        t.hash,
        t.name,
        chunk.filter(t)
    );
    c.query_one(&sql, &[])
        .await
        .map(|r| (r.get(0), r.get(1)))
        .map_err(|e| sql_error(&format!("hashing {} ({what})", t.name), e))
}

/// The query of a chunk's rows as (key as row text, row hash); without a key, as (row
/// hash, how many rows have it). `listed`: only the keys in `$1`; `sorted`: in byte order
/// of the first column (`COLLATE "C"`).
fn row_hashes_sql(t: &Table, chunk: &Chunk, listed: bool, sorted: bool) -> String {
    let col = if t.key.is_empty() { "h" } else { "k" };
    let only = if listed {
        format!("WHERE {col} = ANY($1)")
    } else {
        String::new()
    };
    let order = if sorted {
        format!("ORDER BY {col} COLLATE \"C\"")
    } else {
        String::new()
    };
    if t.key.is_empty() {
        format!(
            "SELECT h, count(*)::text FROM (SELECT ({})::text AS h FROM {} x) s {only} GROUP BY h {order}",
            t.hash, t.name
        )
    } else {
        let keys: Vec<String> = t.key.iter().map(|k| format!("x.{k}")).collect();
        format!(
            "SELECT k, h FROM (SELECT ROW({})::text AS k, ({})::text AS h FROM {} x {}) s {only} {order}",
            keys.join(", "),
            t.hash,
            t.name,
            chunk.filter(t)
        )
    }
}

/// A chunk's rows as (key as row text, row hash), in byte order of the key text
/// (`COLLATE "C"`, the order Rust compares strings in); without a key, (row hash, how many
/// rows have it). Streamed: the comparison holds one row per side.
async fn sorted_rows(
    c: &Client,
    t: &Table,
    chunk: &Chunk,
) -> Result<tokio_postgres::RowStream, tokio_postgres::Error> {
    let sql = row_hashes_sql(t, chunk, false, true);
    let none: [&str; 0] = [];
    c.query_raw(&sql, none).await
}

/// Compare a chunk row by row in both directions, merging the two sorted streams.
async fn merge_compare(
    s: &Client,
    d: &Client,
    t: &Table,
    chunk: &Chunk,
    out: &mut Keys,
    max_keys: usize,
) -> Result<(), Error> {
    use futures_util::StreamExt;
    let fail = |what: &'static str| {
        let name = t.name.clone();
        move |e| sql_error(&format!("reading {name} row by row ({what})"), e)
    };
    let (a, b) = tokio::join!(sorted_rows(s, t, chunk), sorted_rows(d, t, chunk));
    let (mut a, mut b) = (
        Box::pin(a.map_err(fail("source"))?),
        Box::pin(b.map_err(fail("target"))?),
    );
    let next = |r: Option<Result<tokio_postgres::Row, tokio_postgres::Error>>, what| {
        r.transpose()
            .map(|r| r.map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))))
            .map_err(fail(what))
    };
    let mut x = next(a.next().await, "source")?;
    let mut y = next(b.next().await, "target")?;
    while out.len() < max_keys {
        match (&x, &y) {
            (None, None) => break,
            (Some((k, _)), None) => {
                out.missing.push(k.clone());
                x = next(a.next().await, "source")?;
            }
            (None, Some((k, _))) => {
                out.extra.push(k.clone());
                y = next(b.next().await, "target")?;
            }
            (Some((k1, h1)), Some((k2, h2))) => match k1.as_bytes().cmp(k2.as_bytes()) {
                std::cmp::Ordering::Less => {
                    out.missing.push(k1.clone());
                    x = next(a.next().await, "source")?;
                }
                std::cmp::Ordering::Greater => {
                    out.extra.push(k2.clone());
                    y = next(b.next().await, "target")?;
                }
                std::cmp::Ordering::Equal => {
                    if h1 != h2 {
                        out.changed.push(k1.clone());
                    }
                    x = next(a.next().await, "source")?;
                    y = next(b.next().await, "target")?;
                }
            },
        }
    }
    Ok(())
}

/// The chunks of a table: key ranges of about `chunk_rows` for a single integer key.
async fn plan(c: &Client, i: usize, t: &Table, o: &VerifyOptions) -> Result<Vec<Chunk>, Error> {
    if !t.int_key || o.mode == Mode::Count {
        return Ok(vec![Chunk {
            table: i,
            range: None,
        }]);
    }
    let r = c
        .query_one(
            &format!(
                "SELECT min({k})::bigint, max({k})::bigint, \
                 (SELECT reltuples::bigint FROM pg_class WHERE oid = '{n}'::regclass) FROM {n}",
                k = t.key[0],
                n = t.name.replace('\'', "''")
            ),
            &[],
        )
        .await
        .map_err(|e| sql_error(&format!("planning chunks of {}", t.name), e))?;
    let (lo, hi, est): (Option<i64>, Option<i64>, i64) = (r.get(0), r.get(1), r.get(2));
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(vec![Chunk {
            table: i,
            range: None,
        }]);
    };
    let n = (est.max(1) / o.chunk_rows.max(1) + 1).clamp(1, 10_000);
    let width = ((hi - lo) / n).max(1) + 1;
    // Keys outside the source's range are looked at too: rows only on the target.
    let mut chunks = vec![Chunk {
        table: i,
        range: Some((i64::MIN, lo)),
    }];
    let mut a = lo;
    while a <= hi {
        let b = a.saturating_add(width);
        chunks.push(Chunk {
            table: i,
            range: Some((a, b)),
        });
        a = b;
    }
    chunks.push(Chunk {
        table: i,
        range: Some((a, i64::MAX)),
    });
    Ok(chunks)
}

/// Verify the task's tables.
pub async fn verify(
    task: &Task,
    o: &VerifyOptions,
    say: &(dyn Fn(&str) + Sync),
) -> Result<VerifyReport, Error> {
    let started = std::time::Instant::now();
    let target_spec = task
        .target
        .as_ref()
        .ok_or_else(|| Error::failed("the task has no target".to_string()))?;
    let source = session(&task.source).await?;
    let target = session(target_spec).await?;
    let list = tables(task, &source, &o.tables).await?;
    if list.is_empty() {
        return Err(Error::failed(
            "no table to verify: check the task's objects and --tables".to_string(),
        ));
    }
    let mut queue = VecDeque::new();
    let mut results: Vec<TableResult> = list
        .iter()
        .map(|t| TableResult {
            table: t.name.clone(),
            pass: true,
            note: if o.mode == Mode::Checksum && t.key.is_empty() {
                "no key: compared as a whole, rows named by hash".into()
            } else {
                String::new()
            },
            ..Default::default()
        })
        .collect();
    // Each table is first compared whole (one sequential scan a side, which PostgreSQL may
    // run in parallel); only a table that differs is cut into key ranges.
    for (i, r) in results.iter_mut().enumerate() {
        r.chunks = 1;
        queue.push_back(Chunk {
            table: i,
            range: None,
        });
    }
    drop((source, target));
    let list = Arc::new(list);
    let queue = Arc::new(Mutex::new(queue));
    let results = Arc::new(Mutex::new(results));
    let busy = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..o.jobs.max(1) {
        let (list, queue, results, o) = (list.clone(), queue.clone(), results.clone(), o.clone());
        let (src, dst) = (task.source.clone(), target_spec.clone());
        let task = task.clone();
        let (busy, done) = (busy.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let (s, d) = (session(&src).await?, session(&dst).await?);
            let lost = || Error::failed("a verify worker panicked".to_string());
            loop {
                // Taken and counted as busy at once: a worker only leaves when the queue
                // is empty and no other one may still add the pieces of a table to it.
                let chunk = {
                    let mut q = queue.lock().map_err(|_| lost())?;
                    let c = q.pop_front();
                    if c.is_some() {
                        busy.fetch_add(1, Ordering::SeqCst);
                    }
                    c
                };
                let Some(chunk) = chunk else {
                    if busy.load(Ordering::SeqCst) == 0 {
                        return Ok::<(), Error>(());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let split = check_chunk(&task, &s, &d, &list, &chunk, &o, &results).await;
                if let Ok(Some(pieces)) = &split {
                    results.lock().map_err(|_| lost())?[chunk.table].chunks = pieces.len();
                    queue
                        .lock()
                        .map_err(|_| lost())?
                        .extend(pieces.iter().cloned());
                }
                busy.fetch_sub(1, Ordering::SeqCst);
                split?;
                if let Some(hook) = &o.progress {
                    let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                    let (known, rows) = {
                        let r = results.lock().map_err(|_| lost())?;
                        // A split table's whole-table look is one piece more than its chunks.
                        let known: usize =
                            r.iter().map(|t| t.chunks + usize::from(t.chunks > 1)).sum();
                        (known, r.iter().map(|t| t.source_rows).sum::<i64>())
                    };
                    (hook.0)(finished, known.max(finished), rows);
                }
            }
        }));
    }
    for w in workers {
        w.await
            .map_err(|e| Error::failed(format!("a verify worker failed: {e}")))??;
    }
    let mut tables = Arc::try_unwrap(results)
        .map_err(|_| Error::failed("verify workers still running".to_string()))?
        .into_inner()
        .map_err(|_| Error::failed("a verify worker panicked".to_string()))?;
    for t in &mut tables {
        // Under a live apply the row counts of the two sides are read at slightly
        // different moments; what decides is whether a chunk still differed when
        // re-read at a consistent point.
        t.pass = t.differing_chunks == 0;
        say(&format!(
            "  [{}] {}  source={} target={}{}",
            if t.pass { "PASS" } else { "FAIL" },
            t.table,
            t.source_rows,
            t.target_rows,
            if t.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", t.note)
            }
        ));
    }
    Ok(VerifyReport {
        mode: o.mode,
        rows_verified: tables.iter().map(|t| t.source_rows).sum(),
        tables,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A chunk's rows and digest (empty in count mode).
async fn summary(
    c: &Client,
    t: &Table,
    chunk: &Chunk,
    mode: Mode,
    what: &str,
) -> Result<(i64, String), Error> {
    match mode {
        Mode::Count => Ok((count(c, t, chunk, what).await?, String::new())),
        Mode::Checksum => digest(c, t, chunk, what).await,
    }
}

/// Start reading the source in a snapshot (see [`snapshot_end`]).
async fn snapshot_begin(s: &Client) -> Result<(), Error> {
    s.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| sql_error("taking a snapshot of the source", e))
}

/// End the snapshot; returns a source position that every row version the snapshot saw
/// was written before (it is read after the snapshot was taken).
async fn snapshot_end(s: &Client) -> Result<String, Error> {
    let lsn: String = s
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .map_err(|e| sql_error("reading the source position", e))?
        .get(0);
    s.batch_execute("COMMIT")
        .await
        .map_err(|e| sql_error("ending the source snapshot", e))?;
    Ok(lsn)
}

/// Wait until the target has applied past `lsn`, when the task streams (else at once),
/// for at most `limit`.
async fn wait_applied(
    task: &Task,
    s: &Client,
    d: &Client,
    lsn: &str,
    limit: Duration,
) -> Result<(), Error> {
    if crate::applied::streaming(task, s).await? {
        // Not reached in time: the re-read then shows what differs still.
        crate::applied::wait_past(task, s, d, lsn, limit).await?;
    }
    Ok(())
}

/// The chunk's summary at a consistent point: the source in a snapshot, the target once
/// it has applied everything that snapshot sees.
async fn consistent_summaries(
    task: &Task,
    s: &Client,
    d: &Client,
    t: &Table,
    chunk: &Chunk,
    o: &VerifyOptions,
) -> Result<((i64, String), (i64, String)), Error> {
    snapshot_begin(s).await?;
    let src = summary(s, t, chunk, o.mode, "source").await?;
    let lsn = snapshot_end(s).await?;
    wait_applied(task, s, d, &lsn, o.recheck_pause * 5).await?;
    Ok((src, summary(d, t, chunk, o.mode, "target").await?))
}

/// Row hashes (without a key: row counts) of `keys` in a chunk.
async fn key_hashes(
    c: &Client,
    t: &Table,
    chunk: &Chunk,
    keys: &[String],
    what: &str,
) -> Result<HashMap<String, String>, Error> {
    let sql = row_hashes_sql(t, chunk, true, false);
    Ok(c.query(&sql, &[&keys])
        .await
        .map_err(|e| sql_error(&format!("re-reading keys of {} ({what})", t.name), e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The keys that still differ when read again at a consistent point.
async fn recheck_keys(
    task: &Task,
    s: &Client,
    d: &Client,
    t: &Table,
    chunk: &Chunk,
    found: Keys,
    o: &VerifyOptions,
) -> Result<Keys, Error> {
    let keys: Vec<String> = [&found.missing, &found.extra, &found.changed]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    snapshot_begin(s).await?;
    let src = key_hashes(s, t, chunk, &keys, "source").await?;
    let lsn = snapshot_end(s).await?;
    wait_applied(task, s, d, &lsn, o.recheck_pause * 5).await?;
    let dst = key_hashes(d, t, chunk, &keys, "target").await?;
    let mut still = Keys::default();
    for k in keys {
        match (src.get(&k), dst.get(&k)) {
            (Some(_), None) => still.missing.push(k),
            (None, Some(_)) => still.extra.push(k),
            (Some(a), Some(b)) if a != b => still.changed.push(k),
            _ => {}
        }
    }
    Ok(still)
}

/// Differing keys of one chunk followed through re-checks at most (bounds memory; a
/// chunk with more is reported with the first ones).
const RECHECK_KEYS_MAX: usize = 10_000;

/// Compare one chunk. Both sides are read at once. A chunk that differs is read again at
/// a consistent point before it counts (while the task streams, a first difference is
/// usually the apply's delay). In checksum mode, the keys it still differs on are then
/// re-read at consistent points, each round only those that still differ, so that rows
/// that merely changed while being read drop out and real differences remain.
async fn check_chunk(
    task: &Task,
    s: &Client,
    d: &Client,
    list: &[Table],
    chunk: &Chunk,
    o: &VerifyOptions,
    results: &Mutex<Vec<TableResult>>,
) -> Result<Option<Vec<Chunk>>, Error> {
    let t = &list[chunk.table];
    let (a, b) = tokio::join!(
        summary(s, t, chunk, o.mode, "source"),
        summary(d, t, chunk, o.mode, "target")
    );
    let ((mut sr, mut sh), (mut dr, mut dh)) = (a?, b?);
    let mut same = sr == dr && sh == dh;
    if !same && chunk.range.is_none() && t.int_key && o.mode == Mode::Checksum {
        // A whole table that differs: compare it again by key ranges.
        return Ok(Some(plan(s, chunk.table, t, o).await?));
    }
    // Keys still differing, and whether they are all the chunk's differing keys.
    let mut pending: Option<(Keys, bool)> = None;
    for round in 0..o.rechecks {
        if same {
            break;
        }
        let (keys, complete) = match pending.take() {
            Some((keys, true)) => (keys, true),
            _ => {
                if round > 0 {
                    tokio::time::sleep(o.recheck_pause).await;
                }
                ((sr, sh), (dr, dh)) = consistent_summaries(task, s, d, t, chunk, o).await?;
                same = sr == dr && sh == dh;
                if same || o.mode == Mode::Count {
                    continue;
                }
                let mut found = Keys::default();
                locate(s, d, t, chunk, &mut found, RECHECK_KEYS_MAX).await?;
                let complete = found.len() < RECHECK_KEYS_MAX;
                (found, complete)
            }
        };
        let still = recheck_keys(task, s, d, t, chunk, keys, o).await?;
        same = complete && still.len() == 0;
        pending = Some((still, complete));
    }
    let mut diff = pending.map(|p| p.0).unwrap_or_default();
    if !same && o.mode == Mode::Checksum && diff.len() == 0 {
        locate(s, d, t, chunk, &mut diff, o.max_keys).await?;
    }
    let (src_rows, dst_rows) = (sr, dr);
    let mut r = results
        .lock()
        .map_err(|_| Error::failed("a verify worker panicked".to_string()))?;
    let r = &mut r[chunk.table];
    r.source_rows += src_rows;
    r.target_rows += dst_rows;
    if !same {
        r.differing_chunks += 1;
        for (into, from) in [
            (&mut r.missing_on_target, diff.missing),
            (&mut r.only_on_target, diff.extra),
            (&mut r.changed, diff.changed),
        ] {
            let room = o.max_keys.saturating_sub(into.len());
            into.extend(from.into_iter().take(room));
        }
    }
    Ok(None)
}

/// The keys a differing chunk disagrees on.
#[derive(Default)]
struct Keys {
    missing: Vec<String>,
    extra: Vec<String>,
    changed: Vec<String>,
}

impl Keys {
    fn len(&self) -> usize {
        self.missing.len() + self.extra.len() + self.changed.len()
    }
}

/// Rows compared one by one at most (a differing range larger than this is split).
const ROW_COMPARE_MAX: i64 = 20_000;

/// Narrow a differing chunk down: a key range wider than `ROW_COMPARE_MAX` is split in ten
/// and only the parts whose digests differ are looked into (fewer rows to sort and send);
/// then rows are compared by key in both directions, streamed.
async fn locate(
    s: &Client,
    d: &Client,
    t: &Table,
    chunk: &Chunk,
    out: &mut Keys,
    max_keys: usize,
) -> Result<(), Error> {
    if out.len() >= max_keys {
        return Ok(());
    }
    if let Some((lo, hi)) = chunk.range {
        // The open ends (below and above the source's keys) are compared as they are.
        let open = lo == i64::MIN || hi == i64::MAX;
        if !open && hi - lo > ROW_COMPARE_MAX {
            let step = ((hi - lo) / 10).max(1);
            let mut a = lo;
            while a < hi {
                let part = Chunk {
                    table: chunk.table,
                    range: Some((a, (a + step).min(hi))),
                };
                let (x, y) =
                    tokio::join!(digest(s, t, &part, "source"), digest(d, t, &part, "target"));
                if x? != y? {
                    Box::pin(locate(s, d, t, &part, out, max_keys)).await?;
                }
                a += step;
            }
            return Ok(());
        }
    }
    merge_compare(s, d, t, chunk, out, max_keys).await
}
