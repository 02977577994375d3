//! Where a task stands: its record, steps, the metrics its worker last published, what the
//! servers say right now (each query bounded, so `describe` never hangs), warnings, and
//! what the user should do next.

use std::time::Duration;

use serde::Serialize;

use super::metrics::Metrics;
use super::process::{alive, effective_status};
use crate::catalog::pretty_bytes;
use crate::state::{self, Leftover, Step, StepRecord, StepState, Store, TaskRecord, TaskStatus};
use crate::switchover::Progress;
use crate::task::{Engine, Task};
use crate::Result;

/// Warn when the slot holds back more WAL than this.
const RETAINED_WAL_WARN: i64 = 1024 * 1024 * 1024;
/// Below this much WAL before the slot is invalidated, describe warns.
const SAFE_WAL_WARN: i64 = 1024 * 1024 * 1024;

/// `2026-11-22 04:12:39 UTC`, from Unix seconds.
pub fn utc(t: f64) -> String {
    let secs = t as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        (rest / 60) % 60,
        rest % 60
    )
}

/// The step to show: the running or failed one, else the last complete one.
pub fn current_step(steps: &[StepRecord]) -> String {
    steps
        .iter()
        .find(|s| matches!(s.status, StepState::Running | StepState::Failed))
        .or_else(|| steps.iter().rev().find(|s| s.status == StepState::Complete))
        .map(|s| format!("{} ({})", s.step, s.status))
        .unwrap_or_else(|| "-".into())
}

/// Whether the change stream has ever started (so a missing worker means an unknown lag).
fn cdc_started(steps: &[StepRecord]) -> bool {
    steps
        .iter()
        .any(|s| s.step == Step::Cdc && s.started_at.is_some())
}

/// One row of `list`.
#[derive(Debug)]
pub struct ListRow {
    pub record: TaskRecord,
    pub status: String,
    pub step: String,
    /// The worker's latest metrics; None when no worker runs (a lag read from a worker
    /// that is gone is history, not the lag).
    pub metrics: Option<Metrics>,
    /// The change stream ran, and no worker applies it now: the lag is unknown.
    pub lag_unknown: bool,
}

pub fn list(store: &Store) -> Result<Vec<ListRow>> {
    let mut rows = Vec::new();
    for t in store.tasks()? {
        let steps = store.steps(&t.name)?;
        let running = alive(t.pid);
        let metrics = store
            .metrics::<Metrics>(&t.name)?
            .map(|x| x.1)
            .filter(|_| running);
        rows.push(ListRow {
            status: effective_status(&t),
            step: current_step(&steps),
            lag_unknown: !running && cdc_started(&steps),
            metrics,
            record: t,
        });
    }
    Ok(rows)
}

/// What the servers say right now.
#[derive(Debug, Default, Serialize)]
pub struct Live {
    /// The stream engine's copy bookkeeping on the target, per table.
    pub tables: Vec<crate::snapshot::TableCopy>,
    pub retained_wal_bytes: Option<i64>,
    /// How far the slot's confirmed position is behind the source's current one: the lag
    /// as the source sees it, whether or not a worker runs.
    pub source_lag_bytes: Option<i64>,
    pub max_slot_wal_keep_size: Option<String>,
    /// PostgreSQL 13+: reserved, extended, unreserved (invalidated at the next checkpoint)
    /// or lost.
    pub wal_status: Option<String>,
    /// PostgreSQL 13+: WAL that can still be written before the slot is invalidated.
    pub safe_wal_size: Option<i64>,
    pub unreachable: Vec<String>,
}

async fn live(task: &Task) -> Live {
    let mut l = Live::default();
    let bound = Duration::from_secs(5);
    match tokio::time::timeout(bound, crate::conn::connect(&task.source)).await {
        Ok(Ok(c)) => {
            // wal_status, safe_wal_size and max_slot_wal_keep_size exist from 13 on.
            let slot_sql = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, \
                 pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, \
                 CASE WHEN current_setting('server_version_num')::int >= 130000 \
                      THEN current_setting('max_slot_wal_keep_size') END \
                 FROM pg_replication_slots WHERE slot_name = $1";
            if let Ok(Ok(Some(r))) =
                tokio::time::timeout(bound, c.query_opt(slot_sql, &[&task.slot])).await
            {
                l.retained_wal_bytes = r.get(0);
                l.source_lag_bytes = r.get(1);
                l.max_slot_wal_keep_size = r.get(2);
            }
            if l.max_slot_wal_keep_size.is_some() {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&task.slot];
                let q = c.query_opt(
                    "SELECT wal_status, safe_wal_size FROM pg_replication_slots WHERE slot_name = $1",
                    &params,
                );
                if let Ok(Ok(Some(r))) = tokio::time::timeout(bound, q).await {
                    l.wal_status = r.get(0);
                    l.safe_wal_size = r.get(1);
                }
            }
        }
        Ok(Err(e)) => l.unreachable.push(format!(
            "source: {}",
            crate::step::first_line(&e.to_string())
        )),
        Err(_) => l.unreachable.push("source: no answer in 5 s".into()),
    }
    // Only the stream engine keeps copy bookkeeping on the target; a native target has no
    // pgtransit schema, and a query of it would log an ERROR there on every describe.
    let stream_target = task
        .target
        .as_ref()
        .filter(|_| task.engine == Engine::Stream);
    if let Some(t) = stream_target {
        match tokio::time::timeout(bound, crate::conn::connect(t)).await {
            Ok(Ok(c)) => {
                if let Ok(Ok(tables)) =
                    tokio::time::timeout(bound, crate::snapshot::copy_by_table(&c, &task.name))
                        .await
                {
                    l.tables = tables;
                }
            }
            Ok(Err(e)) => l.unreachable.push(format!(
                "target: {}",
                crate::step::first_line(&e.to_string())
            )),
            Err(_) => l.unreachable.push("target: no answer in 5 s".into()),
        }
    }
    l
}

/// Warnings about the slot's survival: invalidated, about to be, or close to it
/// (`max_slot_wal_keep_size`).
fn slot_warnings(slot: &str, live: &Live) -> Vec<String> {
    let keep = live.max_slot_wal_keep_size.as_deref().unwrap_or("?");
    let mut w = Vec::new();
    match live.wal_status.as_deref() {
        Some("lost") => w.push(format!(
            "slot {slot} is invalidated (wal_status lost, max_slot_wal_keep_size {keep}): the changes \
             since it fell behind are gone from the source; the target can no longer follow it: \
             terminate this task and create a new one (its copy starts over)"
        )),
        Some("unreserved") => w.push(format!(
            "slot {slot} will be invalidated at the next checkpoint (wal_status unreserved): its \
             WAL is past max_slot_wal_keep_size ({keep}); start the worker now, or raise the setting \
             (ALTER SYSTEM SET max_slot_wal_keep_size = ...; SELECT pg_reload_conf())"
        )),
        _ => {
            if let Some(safe) = live.safe_wal_size.filter(|s| *s < SAFE_WAL_WARN) {
                w.push(format!(
                    "slot {slot} is invalidated after another {} of WAL (safe_wal_size; \
                     max_slot_wal_keep_size {keep}): keep the worker running, or raise the setting",
                    pretty_bytes(safe.max(0))
                ));
            }
        }
    }
    w
}

/// What the user should do next, from the task's state.
pub fn next_action(t: &TaskRecord, steps: &[StepRecord], sw: Option<&Progress>) -> String {
    let name = &t.name;
    let running = t.status == TaskStatus::Running && alive(t.pid);
    if let Some(p) = sw.filter(|p| p.in_flight()) {
        let phase = p.phase;
        return format!(
            "a switchover stopped after its `{phase}` phase, with the source fenced: `pgtransit switchover \
             {name}` continues it, `pgtransit switchover {name} --undo` lifts the fence"
        );
    }
    match t.status {
        TaskStatus::SwitchedOver => {
            return match sw.and_then(|p| p.report.reverse.as_deref()) {
                Some(rev) => format!(
                    "switched over; {rev} replicates the target's writes back: `pgtransit rollback {name}` \
                     switches back, `pgtransit terminate {rev}` ends the way back"
                ),
                None => "switched over: the target takes the writes; nothing is left to do".into(),
            }
        }
        TaskStatus::Terminating => {
            return format!("the source or target was unreachable during terminate: bring it back, then `pgtransit terminate {name}` (or `--force` to forget the task)")
        }
        _ => {}
    }
    if let Some(f) = steps.iter().find(|s| s.status == StepState::Failed) {
        return format!(
            "step {} failed: fix the cause above, then `pgtransit start {name}` continues from it",
            f.step
        );
    }
    if !running
        && matches!(
            t.status,
            TaskStatus::Stopped | TaskStatus::Created | TaskStatus::Running
        )
    {
        return format!("`pgtransit start {name}` runs the remaining steps");
    }
    if steps
        .iter()
        .any(|s| s.step == Step::Cdc && s.status == StepState::Running)
    {
        return format!("streaming: when the lag is small, `pgtransit switchover {name} --dry-run` shows the switchover; `pgtransit terminate {name}` stops and cleans up");
    }
    format!("the worker is running; follow it with `pgtransit logs {name} --follow`")
}

/// Everything `describe` shows.
#[derive(Debug)]
pub struct Description {
    pub record: TaskRecord,
    pub status: String,
    pub steps: Vec<StepRecord>,
    /// The latest metrics and when they were published.
    pub metrics: Option<(f64, Metrics)>,
    pub worker_running: bool,
    /// The change stream ran, and no worker applies it now.
    pub lag_unknown: bool,
    pub leftovers: Vec<Leftover>,
    pub switchover: Option<Progress>,
    pub live: Live,
    pub warnings: Vec<String>,
    pub next: String,
}

pub async fn describe(name: &str) -> Result<Description> {
    let (t, steps, metrics, leftovers, sw) = {
        let store = Store::open()?;
        let t = store.existing(name)?;
        let steps = store.steps(name)?;
        let metrics = store.metrics::<Metrics>(name)?;
        let left = store.leftovers(name)?;
        let sw = super::switchover::load(&store, name)?.map(|s| s.progress);
        (t, steps, metrics, left, sw)
    };
    let task = Task::parse(&t.spec, &t.name)?;
    let live = live(&task).await;
    let mut warnings = Vec::new();
    if let Some(r) = live.retained_wal_bytes.filter(|r| *r > RETAINED_WAL_WARN) {
        warnings.push(format!(
            "slot {} retains {} of WAL on the source (max_slot_wal_keep_size = {}): if the task is \
             abandoned, terminate it; otherwise consider ALTER SYSTEM SET max_slot_wal_keep_size = '50GB' \
             so a stuck slot cannot fill the disk",
            task.slot,
            pretty_bytes(r),
            live.max_slot_wal_keep_size.as_deref().unwrap_or("?")
        ));
    }
    warnings.extend(slot_warnings(&task.slot, &live));
    if steps
        .iter()
        .any(|s| s.step == Step::Cdc && s.status == StepState::Failed)
    {
        warnings.push("apply stopped: the cdc step failed (the slot keeps every change)".into());
    }
    let worker_running = alive(t.pid);
    if t.status == TaskStatus::Running && !worker_running {
        warnings.push(format!(
            "the worker (pid {}) is gone: `pgtransit start {}` resumes",
            t.pid.unwrap_or(0),
            t.name
        ));
    }
    for u in &live.unreachable {
        warnings.push(format!("cannot reach the {u}"));
    }
    let next = next_action(&t, &steps, sw.as_ref());
    Ok(Description {
        status: effective_status(&t),
        lag_unknown: !worker_running && cdc_started(&steps),
        record: t,
        steps,
        metrics,
        worker_running,
        leftovers,
        switchover: sw,
        live,
        warnings,
        next,
    })
}

impl Description {
    /// `describe --json`.
    pub fn to_json(&self) -> serde_json::Value {
        let t = &self.record;
        serde_json::json!({
            "name": t.name, "engine": t.engine, "status": self.status, "reason": t.reason,
            "source": t.source, "target": t.target, "created_at": t.created_at, "worker_pid": t.pid,
            "metrics_addr": t.metrics_addr, "steps": self.steps,
            "metrics": self.metrics.as_ref().map(|(at, m)| serde_json::json!({"at": at, "age_seconds": state::now() - at, "values": m})),
            "tables": self.live.tables, "retained_wal_bytes": self.live.retained_wal_bytes,
            "lag": {"source_bytes": self.live.source_lag_bytes, "worker_running": self.worker_running,
                    "wal_status": self.live.wal_status, "safe_wal_size": self.live.safe_wal_size},
            "leftovers": self.leftovers, "warnings": self.warnings, "next": self.next,
            "switchover": self.switchover.as_ref().map(|p| serde_json::json!({"phase": p.phase, "report": p.report})),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1_795_320_773.5), "2026-11-22 04:12:53 UTC");
        assert_eq!(super::utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
    }
}
