//! Reading a piece at a consistent point while the task streams: the source in a
//! snapshot, the target once it has applied past everything that snapshot sees. A first
//! difference under a live apply is usually the apply's delay; what still differs then is
//! real.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::Client;

use super::chunks::{row_hashes_sql, summary, Chunk};
use super::compare::Keys;
use super::tables::Table;
use super::VerifyOptions;
use crate::error::{sql_error, Error};
use crate::task::Task;

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
pub(super) async fn consistent_summaries(
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
pub(super) async fn recheck_keys(
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
