//! The pieces verify compares: a whole table, or a key range of one; what each side says
//! of a piece (its row count, or its rows' hash sum), and the queries of its rows.

use tokio_postgres::Client;

use super::tables::Table;
use super::{Mode, VerifyOptions};
use crate::error::{sql_error, Error};

/// A piece of a table: all of it, or a key range `[lo, hi)`.
#[derive(Clone)]
pub(super) struct Chunk {
    /// Index into the list of tables.
    pub(super) table: usize,
    pub(super) range: Option<(i64, i64)>,
}

impl Chunk {
    pub(super) fn filter(&self, t: &Table) -> String {
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

pub(super) async fn count(c: &Client, t: &Table, chunk: &Chunk, what: &str) -> Result<i64, Error> {
    c.query_one(
        &format!("SELECT count(*) FROM {} {}", t.name, chunk.filter(t)),
        &[],
    )
    .await
    .map(|r| r.get(0))
    .map_err(|e| sql_error(&format!("counting {} ({what})", t.name), e))
}

/// Rows and the sum of their 64-bit hashes, as text.
pub(super) async fn digest(
    c: &Client,
    t: &Table,
    chunk: &Chunk,
    what: &str,
) -> Result<(i64, String), Error> {
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
pub(super) fn row_hashes_sql(t: &Table, chunk: &Chunk, listed: bool, sorted: bool) -> String {
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
pub(super) async fn sorted_rows(
    c: &Client,
    t: &Table,
    chunk: &Chunk,
) -> Result<tokio_postgres::RowStream, tokio_postgres::Error> {
    let sql = row_hashes_sql(t, chunk, false, true);
    let none: [&str; 0] = [];
    c.query_raw(&sql, none).await
}

/// The chunks of a table: key ranges of about `chunk_rows` for a single integer key.
pub(super) async fn split(
    c: &Client,
    i: usize,
    t: &Table,
    o: &VerifyOptions,
) -> Result<Vec<Chunk>, Error> {
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

/// A chunk's rows and digest (empty in count mode).
pub(super) async fn summary(
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
