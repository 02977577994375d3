//! `progress` (Pigsty's `copy-progress`): where the subscription stands, per table and in
//! total, from the catalogs of both sides — sync states instead of Pigsty's size ratio.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::sql;
use crate::error::Error;
use crate::step::Session;
use crate::step::Side;
use crate::step::{Action, Plan};

#[derive(Clone, Debug, Serialize)]
pub struct TableProgress {
    pub name: String,
    /// init, copying, copied, catching-up, streaming.
    pub state: String,
    pub source_bytes: Option<i64>,
    pub target_bytes: i64,
    /// Bytes the running initial COPY has read (PostgreSQL 14+).
    pub copy_bytes: i64,
    pub percent: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    pub subscription_exists: bool,
    pub enabled: bool,
    pub tables: Vec<TableProgress>,
    pub streaming: usize,
    pub total: usize,
    pub percent: f64,
    /// Every table is streaming.
    pub complete: bool,
    pub slot_active: Option<bool>,
    pub current_lsn: Option<String>,
    pub confirmed_lsn: Option<String>,
    pub lag_bytes: Option<i64>,
    pub lag_seconds: Option<f64>,
    /// apply + sync errors counted by pg_stat_subscription_stats (15+).
    pub errors: Option<i64>,
}

pub async fn progress(s: &mut Session<'_>) -> Result<Progress, Error> {
    let task = s.task;
    let sub = s
        .rows(
            Side::Target,
            "reading the subscription",
            &sql::for_task(sql::PROGRESS_SUBSCRIPTION, task),
        )
        .await?;
    let tables = s
        .rows(
            Side::Target,
            "reading table states",
            &sql::for_task(sql::PROGRESS_TARGET, task),
        )
        .await?;
    let sizes = s
        .rows(
            Side::Source,
            "reading source sizes",
            &sql::for_task(sql::PROGRESS_SOURCE, task),
        )
        .await?;
    let lag = s
        .rows(
            Side::Source,
            "reading the slot",
            &sql::for_task(sql::PROGRESS_LAG, task),
        )
        .await?;
    let source_bytes = |name: &str| {
        sizes
            .iter()
            .find(|r| r.get::<_, String>(0) == name)
            .map(|r| r.get::<_, i64>(1))
    };
    let tables: Vec<TableProgress> = tables
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            let state: String = r.get(1);
            let src = source_bytes(&name);
            let copy_bytes: i64 = r.get(3);
            let percent = match state.as_str() {
                "copied" | "catching-up" | "streaming" => 100.0,
                "copying" => match src {
                    Some(b) if b > 0 => (copy_bytes as f64 * 100.0 / b as f64).min(99.0),
                    _ => 0.0,
                },
                _ => 0.0,
            };
            TableProgress {
                name,
                state,
                source_bytes: src,
                target_bytes: r.get(2),
                copy_bytes,
                percent,
            }
        })
        .collect();
    let weight = |t: &TableProgress| t.source_bytes.unwrap_or(0).max(8192) as f64;
    let total_weight: f64 = tables.iter().map(weight).sum();
    let percent = if tables.is_empty() {
        if sub.is_empty() {
            0.0
        } else {
            100.0
        }
    } else {
        tables.iter().map(|t| t.percent * weight(t)).sum::<f64>() / total_weight
    };
    let streaming = tables.iter().filter(|t| t.state == "streaming").count();
    let l = lag.first();
    Ok(Progress {
        subscription_exists: !sub.is_empty(),
        enabled: sub.first().map(|r| r.get(0)).unwrap_or(false),
        complete: !sub.is_empty() && streaming == tables.len(),
        streaming,
        total: tables.len(),
        percent,
        tables,
        slot_active: l.map(|r| r.get(0)),
        current_lsn: l.map(|r| r.get(1)),
        confirmed_lsn: l.and_then(|r| r.get(2)),
        lag_bytes: l.and_then(|r| r.get(3)),
        lag_seconds: l.and_then(|r| r.get(4)),
        errors: sub.first().and_then(|r| r.get(3)),
    })
}

/// What `progress` reads, on which side.
pub fn plan_progress(task: &crate::task::Task) -> Plan {
    let inspect = |side, why: &str, q| Action::Inspect {
        side,
        why: why.into(),
        sql: sql::for_task(q, task),
    };
    Plan {
        step: "progress",
        actions: vec![
            inspect(Side::Target, "the subscription", sql::PROGRESS_SUBSCRIPTION),
            inspect(Side::Target, "per-table sync state", sql::PROGRESS_TARGET),
            inspect(Side::Source, "per-table source size", sql::PROGRESS_SOURCE),
            inspect(Side::Source, "lag of the slot", sql::PROGRESS_LAG),
        ],
    }
}

/// Watches the subscription's error counters (pg_stat_subscription_stats, target 15+).
/// PostgreSQL counts every failure of its apply and sync workers: a lost connection to the
/// source as much as a change the target refuses. A lost connection stops failing once the
/// source is back; a refused change fails again at every retry
/// (wal_retrieve_retry_interval, 5 s by default) for ever, and the subscription stands
/// still. So errors that keep coming while the source answers (new errors at
/// ERRORS_REPEATED readings within a minute; a burst counted while the source was away is
/// one reading) are a failed apply. (The
/// subscription is created without disable_on_error: with it, a source restart disabled
/// it for good.)
#[derive(Default)]
pub struct ErrorWatch {
    samples: VecDeque<(Instant, i64)>,
}

/// Readings with new errors within this window that make a failed apply.
const ERRORS_REPEATED: i64 = 3;
const ERRORS_WINDOW: Duration = Duration::from_secs(60);

impl ErrorWatch {
    /// Take a reading of the error counter (read while the source answered); the number
    /// of errors in the window when they make a failed apply.
    pub fn observe(&mut self, errors: Option<i64>) -> Option<i64> {
        let errors = errors?;
        let now = Instant::now();
        self.samples.push_back((now, errors));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > ERRORS_WINDOW)
        {
            self.samples.pop_front();
        }
        let rising = self
            .samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .filter(|(a, b)| b.1 > a.1)
            .count() as i64;
        let first = self.samples.front()?.1;
        (rising >= ERRORS_REPEATED).then_some(errors - first)
    }
}

/// The task fails: the subscription keeps failing, or was disabled. The target's last
/// logical replication error is quoted when its log can be read through SQL (a superuser
/// and logging_collector); otherwise the message says where to look.
pub async fn apply_failure(s: &mut Session<'_>, what: &str) -> Error {
    let last = match s.client(Side::Target).await {
        Ok(c) => c
            .query_opt(
                "SELECT pg_read_file(f, greatest(0, (pg_stat_file(f)).size - 262144), 262144) \
                 FROM pg_current_logfile() f WHERE f IS NOT NULL",
                &[],
            )
            .await
            .ok()
            .flatten()
            .and_then(|r| r.get::<_, Option<String>>(0))
            .and_then(|log| {
                log.lines()
                    .rev()
                    .find(|l| l.contains("ERROR:") && l.contains("logical replication"))
                    .map(str::to_string)
            }),
        Err(_) => None,
    };
    let why = match last {
        Some(l) => format!("the target's log says: {}", l.trim()),
        None => "the reason is in the target server's log (lines with \"logical replication\" \
                 and ERROR)"
            .to_string(),
    };
    Error::failed(format!(
        "the subscription {} on the target {what}; {why}. Fix the cause on the target (or the \
         source), then `pgtransit start {}`: the subscription resumes where it stopped",
        crate::quote::ident(&s.task.subscription),
        s.task.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_keep_coming_make_a_failed_apply_a_burst_does_not() {
        let mut w = ErrorWatch::default();
        // A burst counted while the source was away: one reading with new errors.
        assert_eq!(w.observe(Some(0)), None);
        assert_eq!(w.observe(Some(6)), None);
        assert_eq!(w.observe(Some(6)), None);
        // Then new errors at two more readings: a refused change retried for ever.
        assert_eq!(w.observe(Some(7)), None);
        assert_eq!(w.observe(Some(8)), Some(8));
        // Without statistics (target before 15) nothing is concluded.
        assert_eq!(ErrorWatch::default().observe(None), None);
    }
}
