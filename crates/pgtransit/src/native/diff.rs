//! `diff` (Pigsty's `copy-diff`): exact row counts of every replicated table on both sides,
//! and sequences from pg_sequences (Pigsty compared currval(), which fails in a new session
//! and so always passed). A target sequence passes when it is at or beyond the source's in
//! the sequence's own direction: it will not hand out a value the source has used.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::sql;
use crate::error::{sql_error, Error};
use crate::step::Session;
use crate::step::Side;
use crate::step::{Action, Plan};

#[derive(Clone, Debug, Serialize)]
pub struct DiffRow {
    /// table or sequence.
    pub kind: &'static str,
    pub name: String,
    pub source: Option<String>,
    pub target: Option<String>,
    pub pass: bool,
    pub note: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DiffReport {
    /// Whether the subscription had confirmed the source's WAL position before counting.
    pub caught_up: Option<bool>,
    pub rows: Vec<DiffRow>,
}

impl DiffReport {
    pub fn failures(&self) -> usize {
        self.rows.iter().filter(|r| !r.pass).count()
    }
}

/// Wait up to `wait` for the slot to confirm the source's current WAL position (when the
/// slot exists), then compare.
pub async fn diff(s: &mut Session<'_>, wait: Duration) -> Result<DiffReport, Error> {
    let task = s.task;
    let started = Instant::now();
    let caught_up = wait_for_catch_up(s, wait).await?;
    let count_query: Option<String> = s
        .generate(
            Side::Source,
            "building the count query",
            &sql::for_task(sql::COUNT_QUERY, task),
        )
        .await?
        .into_iter()
        .next();
    let mut rows = Vec::new();
    if let Some(q) = count_query {
        let (src, tgt) = s.both().await?;
        let (a, b) = tokio::join!(src.query(q.as_str(), &[]), tgt.query(q.as_str(), &[]));
        let a = a.map_err(|e| sql_error("counting rows (on the source)", e))?;
        let b = b.map_err(|e| sql_error("counting rows (on the target)", e))?;
        let target: BTreeMap<String, i64> = b.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut counts: Vec<(String, i64, Option<i64>)> = a
            .iter()
            .map(|r| {
                let name: String = r.get(0);
                let t = target.get(&name).copied();
                (name, r.get(1), t)
            })
            .collect();
        recheck_differences(s, &mut counts, started, wait).await?;
        for (name, n, t) in counts {
            rows.push(DiffRow {
                kind: "table",
                pass: t == Some(n),
                note: match t {
                    Some(t) if t == n => String::new(),
                    Some(t) => format!("target has {:+} row(s)", t - n),
                    None => "missing on the target".into(),
                },
                source: Some(n.to_string()),
                target: t.map(|t| t.to_string()),
                name,
            });
        }
    }
    let seq_sql = sql::for_task(sql::SEQUENCE_VALUES, task);
    let (src, tgt) = s.both().await?;
    let (a, b) = tokio::join!(
        src.query(seq_sql.as_str(), &[]),
        tgt.query(seq_sql.as_str(), &[])
    );
    let a = a.map_err(|e| sql_error("reading sequences (on the source)", e))?;
    let b = b.map_err(|e| sql_error("reading sequences (on the target)", e))?;
    let target: BTreeMap<String, Option<i64>> = b.iter().map(|r| (r.get(0), r.get(1))).collect();
    for r in &a {
        let name: String = r.get(0);
        let sv: Option<i64> = r.get(1);
        let ascending: bool = r.get(2);
        let (pass, note, tv) = match target.get(&name) {
            None => (false, "missing on the target".to_string(), None),
            Some(tv) => {
                let tv = *tv;
                match (sv, tv) {
                    (None, _) => (true, "never used on the source".into(), tv),
                    (Some(_), None) => (false, "not set on the target: run copy-seq".into(), tv),
                    (Some(a), Some(b)) => {
                        let ahead = if ascending { b - a } else { a - b };
                        if ahead >= 0 {
                            (
                                true,
                                if ahead > 0 {
                                    format!("target ahead by {ahead}")
                                } else {
                                    String::new()
                                },
                                tv,
                            )
                        } else {
                            (
                                false,
                                format!("target behind by {}: run copy-seq", -ahead),
                                tv,
                            )
                        }
                    }
                }
            }
        };
        rows.push(DiffRow {
            kind: "sequence",
            name,
            source: sv.map(|v| v.to_string()),
            target: tv.map(|v| v.to_string()),
            pass,
            note,
        });
    }
    Ok(DiffReport { caught_up, rows })
}

async fn wait_for_catch_up(s: &mut Session<'_>, wait: Duration) -> Result<Option<bool>, Error> {
    let lag_sql = sql::for_task(sql::PROGRESS_LAG, s.task);
    let start = Instant::now();
    let first = s.rows(Side::Source, "reading the slot", &lag_sql).await?;
    let Some(row) = first.first() else {
        return Ok(None);
    };
    let goal: String = row.get(1);
    loop {
        let rows = s.rows(Side::Source, "reading the slot", &lag_sql).await?;
        let behind: bool = s
            .client(Side::Source)
            .await?
            .query_one(
                "SELECT coalesce(pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn) > 0, true)",
                &[
                    &goal,
                    &rows.first().and_then(|r| r.get::<_, Option<String>>(2)),
                ],
            )
            .await
            .map_err(|e| sql_error("comparing positions", e))?
            .get(0);
        if !behind {
            return Ok(Some(true));
        }
        if start.elapsed() >= wait {
            s.say(&format!(
                "  WARNING: the subscription has not confirmed the source position {goal} after {}s; counts may differ while changes are in flight",
                wait.as_secs()
            ));
            return Ok(Some(false));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A table whose counts differ is counted again, on both sides, until they agree or the
/// wait is over: while writes still run on the source (diff is also used before the
/// fence), a count taken right after the barrier can miss what committed since; only a
/// difference that persists is reported.
async fn recheck_differences(
    s: &mut Session<'_>,
    counts: &mut [(String, i64, Option<i64>)],
    started: Instant,
    wait: Duration,
) -> Result<(), Error> {
    let deadline = started + wait.max(Duration::from_secs(5));
    while counts.iter().any(|(_, n, t)| *t != Some(*n)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (name, n, t) in counts.iter_mut().filter(|(_, n, t)| *t != Some(*n)) {
            // `name` was quoted by the source's format('%I.%I').
            let q = format!("SELECT count(*) FROM {name}");
            let (src, tgt) = s.both().await?;
            let (a, b) = tokio::join!(
                src.query_one(q.as_str(), &[]),
                tgt.query_one(q.as_str(), &[])
            );
            *n = a
                .map_err(|e| sql_error("counting rows (on the source)", e))?
                .get(0);
            *t = b.ok().map(|r| r.get(0));
        }
    }
    Ok(())
}

/// What `diff` reads, on which side.
pub fn plan_diff(task: &crate::task::Task) -> Plan {
    let inspect = |why: &str, q| Action::Inspect {
        side: Side::Source,
        why: why.into(),
        sql: sql::for_task(q, task),
    };
    Plan {
        step: "diff",
        actions: vec![
            inspect(
                "wait until the slot confirms the current WAL position",
                sql::PROGRESS_LAG,
            ),
            inspect(
                "build the count query, then run it on both sides",
                sql::COUNT_QUERY,
            ),
            inspect("sequence values, read on both sides", sql::SEQUENCE_VALUES),
        ],
    }
}
