//! `pgtransit verify`: is the target's content the source's?
//!
//! * count: exact row counts on both sides.
//! * checksum: every row hashed, by its columns' own hash functions where every type has
//!   one (PostgreSQL 14+: the hashes hash partitioning relies on, stable across servers),
//!   else by md5 of the record's text form under fixed session settings; summed per chunk of key range on both sides in parallel. A
//!   chunk that differs is compared row by row, by key, in both directions, and its keys
//!   are listed: missing on the target, only on the target, changed. While the target is
//!   still catching up, a differing chunk is checked again after a pause before it is
//!   reported.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;

use crate::native::{sql_error, StepError};
use crate::quote;
use crate::task::Task;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Count,
    Checksum,
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
    /// The row hash: `hash_record_extended` (type hash functions, no text conversion; 14+)
    /// when every column's type can be hashed, else md5 of the row's text. An enum hashes
    /// its value's oid, which differs between clusters: tables with enums (also in arrays,
    /// domains or composites) take the text form.
    hash: &'static str,
}

async fn session(spec: &crate::conn::ConnSpec) -> Result<Client, StepError> {
    let c = crate::conn::connect(spec).await?;
    c.batch_execute(CANONICAL)
        .await
        .map_err(|e| sql_error("preparing a verify session", e))?;
    Ok(c)
}

/// The task's tables on the source with their keys (primary key, else replica identity
/// index).
async fn tables(task: &Task, source: &Client, only: &[String]) -> Result<Vec<Table>, StepError> {
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
                 current_setting('server_version_num')::int >= 140000 AND NOT EXISTS ( \
                   SELECT 1 FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid \
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                   AND NOT EXISTS (SELECT 1 FROM pg_opclass o JOIN pg_am am ON am.oid = o.opcmethod \
                     WHERE am.amname = 'hash' AND o.opcdefault AND o.opcintype = CASE \
                       WHEN ty.typcategory = 'A' THEN 'anyarray'::regtype::oid \
                       WHEN ty.typtype = 'e' THEN 'anyenum'::regtype::oid \
                       WHEN ty.typtype IN ('r', 'm') THEN 'anyrange'::regtype::oid \
                       WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END)) \
                 AND NOT EXISTS ( \
                   SELECT 1 FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid \
                   LEFT JOIN pg_type el ON el.oid = ty.typelem AND ty.typcategory = 'A' \
                   LEFT JOIN pg_type b ON b.oid = ty.typbasetype \
                   LEFT JOIN pg_type bel ON bel.oid = b.typelem AND b.typcategory = 'A' \
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                   AND (ty.typtype IN ('e', 'c') OR el.typtype IN ('e', 'c') \
                        OR b.typtype IN ('e', 'c') OR bel.typtype IN ('e', 'c'))) \
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
                hash: if r.get::<_, bool>(4) {
                    "hash_record_extended(x, 0)"
                } else {
                    "('x' || left(md5(x::text), 16))::bit(64)::bigint"
                },
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

async fn count(c: &Client, t: &Table, chunk: &Chunk, what: &str) -> Result<i64, StepError> {
    c.query_one(
        &format!("SELECT count(*) FROM {} {}", t.name, chunk.filter(t)),
        &[],
    )
    .await
    .map(|r| r.get(0))
    .map_err(|e| sql_error(&format!("counting {} ({what})", t.name), e))
}

/// Rows and the sum of their 64-bit hashes, as text.
async fn digest(
    c: &Client,
    t: &Table,
    chunk: &Chunk,
    what: &str,
) -> Result<(i64, String), StepError> {
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

/// Key (as row text) to row hash; without a key, row hash to how many times it occurs.
async fn rows(
    c: &Client,
    t: &Table,
    chunk: &Chunk,
    what: &str,
) -> Result<BTreeMap<String, String>, StepError> {
    let sql = if t.key.is_empty() {
        format!(
            "SELECT ({})::text, count(*)::text FROM {} x GROUP BY 1",
            t.hash, t.name
        )
    } else {
        format!(
            "SELECT ROW({})::text, ({})::text FROM {} x {}",
            t.key
                .iter()
                .map(|k| format!("x.{k}"))
                .collect::<Vec<_>>()
                .join(", "),
            t.hash,
            t.name,
            chunk.filter(t)
        )
    };
    Ok(c.query(&sql, &[])
        .await
        .map_err(|e| sql_error(&format!("reading {} row by row ({what})", t.name), e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The chunks of a table: key ranges of about `chunk_rows` for a single integer key.
async fn plan(c: &Client, i: usize, t: &Table, o: &VerifyOptions) -> Result<Vec<Chunk>, StepError> {
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
) -> Result<VerifyReport, StepError> {
    let started = std::time::Instant::now();
    let target_spec = task
        .target
        .as_ref()
        .ok_or_else(|| StepError::failed("the task has no target".to_string()))?;
    let source = session(&task.source).await?;
    let target = session(target_spec).await?;
    let list = tables(task, &source, &o.tables).await?;
    if list.is_empty() {
        return Err(StepError::failed(
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
    for (i, t) in list.iter().enumerate() {
        let chunks = plan(&source, i, t, o).await?;
        results[i].chunks = chunks.len();
        queue.extend(chunks);
    }
    drop((source, target));
    let list = Arc::new(list);
    let queue = Arc::new(Mutex::new(queue));
    let results = Arc::new(Mutex::new(results));
    let mut workers = Vec::new();
    for _ in 0..o.jobs.max(1) {
        let (list, queue, results, o) = (list.clone(), queue.clone(), results.clone(), o.clone());
        let (src, dst) = (task.source.clone(), target_spec.clone());
        workers.push(tokio::spawn(async move {
            let (s, d) = (session(&src).await?, session(&dst).await?);
            loop {
                let Some(chunk) = queue
                    .lock()
                    .map_err(|_| StepError::failed("a verify worker panicked".to_string()))?
                    .pop_front()
                else {
                    return Ok::<(), StepError>(());
                };
                check_chunk(&s, &d, &list, &chunk, &o, &results).await?;
            }
        }));
    }
    for w in workers {
        w.await
            .map_err(|e| StepError::failed(format!("a verify worker failed: {e}")))??;
    }
    let mut tables = Arc::try_unwrap(results)
        .map_err(|_| StepError::failed("verify workers still running".to_string()))?
        .into_inner()
        .map_err(|_| StepError::failed("a verify worker panicked".to_string()))?;
    for t in &mut tables {
        t.pass = t.source_rows == t.target_rows && t.differing_chunks == 0;
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

async fn check_chunk(
    s: &Client,
    d: &Client,
    list: &[Table],
    chunk: &Chunk,
    o: &VerifyOptions,
    results: &Mutex<Vec<TableResult>>,
) -> Result<(), StepError> {
    let t = &list[chunk.table];
    let mut tries = 0;
    let (src_rows, dst_rows, same) = loop {
        let ((sr, sh), (dr, dh)) = if o.mode == Mode::Count {
            let (a, b) = tokio::join!(count(s, t, chunk, "source"), count(d, t, chunk, "target"));
            ((a?, String::new()), (b?, String::new()))
        } else {
            let (a, b) = tokio::join!(digest(s, t, chunk, "source"), digest(d, t, chunk, "target"));
            (a?, b?)
        };
        let same = sr == dr && sh == dh;
        // The target may still be applying: look again before calling it a difference.
        if same || tries >= o.rechecks {
            break (sr, dr, same);
        }
        tries += 1;
        tokio::time::sleep(o.recheck_pause).await;
    };
    let mut diff = Keys::default();
    if !same && o.mode == Mode::Checksum {
        locate(s, d, t, chunk, &mut diff, o.max_keys).await?;
    }
    let mut r = results
        .lock()
        .map_err(|_| StepError::failed("a verify worker panicked".to_string()))?;
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
    Ok(())
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
/// and only the parts whose digests differ are looked into, so memory stays bounded
/// however large the chunk; then rows are compared by key in both directions.
async fn locate(
    s: &Client,
    d: &Client,
    t: &Table,
    chunk: &Chunk,
    out: &mut Keys,
    max_keys: usize,
) -> Result<(), StepError> {
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
    let (a, b) = tokio::join!(rows(s, t, chunk, "source"), rows(d, t, chunk, "target"));
    let (a, b) = (a?, b?);
    for (k, h) in &a {
        match b.get(k) {
            None => out.missing.push(k.clone()),
            Some(h2) if h2 != h => out.changed.push(k.clone()),
            _ => {}
        }
    }
    out.extra
        .extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
    Ok(())
}
