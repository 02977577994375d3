//! `pgtransit list`, `describe`, `logs` and `templates`.

use std::time::Duration;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use pgtransit::catalog::pretty_bytes;
use pgtransit::state::{self, StepRecord, Store, TaskRecord};
use pgtransit::task::Task;

use super::{alive, effective_status, json_out, store, ListArgs, LogsArgs, NameArgs};
use crate::Failure;

/// Warn when the slot holds back more WAL than this.
const RETAINED_WAL_WARN: i64 = 1024 * 1024 * 1024;

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

fn age(since: f64) -> String {
    let s = (state::now() - since).max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The step to show: the running or failed one, else the last complete one.
fn current_step(steps: &[StepRecord]) -> String {
    steps
        .iter()
        .find(|s| s.status == "running" || s.status == "failed")
        .or_else(|| steps.iter().rev().find(|s| s.status == "complete"))
        .map(|s| format!("{} ({})", s.step, s.status))
        .unwrap_or_else(|| "-".into())
}

fn lag_text(m: Option<&serde_json::Value>) -> String {
    match m.and_then(|m| m.get("lag_bytes").and_then(|v| v.as_i64())) {
        Some(b) => format!(
            "{} / {:.1}s",
            pretty_bytes(b),
            m.and_then(|m| m.get("lag_seconds"))
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0)
        ),
        None => "-".into(),
    }
}

pub fn list(a: ListArgs) -> Result<u8, Failure> {
    let store = store()?;
    let tasks = store.tasks()?;
    let mut rows = Vec::new();
    for t in &tasks {
        let steps = store.steps(&t.name)?;
        let m = store.metrics(&t.name)?.map(|x| x.1);
        // A lag read from a worker that is gone is history, not the lag.
        let m = m.filter(|_| alive(t.pid));
        let lag = if alive(t.pid) || m.is_some() {
            lag_text(m.as_ref())
        } else if steps
            .iter()
            .any(|s| s.step == "cdc" && s.started_at.is_some())
        {
            "unknown (no worker)".into()
        } else {
            "-".into()
        };
        rows.push((t, current_step(&steps), lag, m));
    }
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(t, step, _, m)| {
                serde_json::json!({
                    "name": t.name, "engine": t.engine, "source": t.source, "target": t.target,
                    "status": effective_status(t), "step": step,
                    "lag_bytes": m.as_ref().and_then(|m| m.get("lag_bytes")).cloned(),
                    "lag_seconds": m.as_ref().and_then(|m| m.get("lag_seconds")).cloned(),
                    "created_at": t.created_at,
                })
            })
            .collect();
        json_out(&v)?;
        return Ok(0);
    }
    if tasks.is_empty() {
        outln!(
            "no tasks in {} (create one with `pgtransit create NAME --source URL --target URL`)",
            store.home().display()
        );
        return Ok(0);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "NAME",
        "ENGINE",
        "SOURCE -> TARGET",
        "STATUS",
        "STEP",
        "LAG",
        "AGE",
    ]);
    for (t, step, lag, _) in &rows {
        table.add_row([
            t.name.clone(),
            t.engine.clone(),
            format!("{} -> {}", t.source, t.target),
            effective_status(t),
            step.clone(),
            lag.clone(),
            age(t.created_at),
        ]);
    }
    outln!("{table}");
    Ok(0)
}

/// What the servers say right now, each query bounded so describe never hangs.
#[derive(Default, serde::Serialize)]
struct Live {
    tables: Vec<serde_json::Value>,
    retained_wal_bytes: Option<i64>,
    /// How far the slot's confirmed position is behind the source's current one: the lag
    /// as the source sees it, whether or not a worker runs.
    source_lag_bytes: Option<i64>,
    max_slot_wal_keep_size: Option<String>,
    /// PostgreSQL 13+: reserved, extended, unreserved (invalidated at the next checkpoint)
    /// or lost.
    wal_status: Option<String>,
    /// PostgreSQL 13+: WAL that can still be written before the slot is invalidated.
    safe_wal_size: Option<i64>,
    unreachable: Vec<String>,
}

async fn live(task: &Task) -> Live {
    let mut l = Live::default();
    let bound = Duration::from_secs(5);
    match tokio::time::timeout(bound, pgtransit::conn::connect(&task.source)).await {
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
            pgtransit::step::first_line(&e.to_string())
        )),
        Err(_) => l.unreachable.push("source: no answer in 5 s".into()),
    }
    // Only the stream engine keeps copy bookkeeping on the target; a native target has no
    // pgtransit schema, and a query of it would log an ERROR there on every describe.
    let stream_target = task
        .target
        .as_ref()
        .filter(|_| task.engine == pgtransit::task::Engine::Stream);
    if let Some(t) = stream_target {
        match tokio::time::timeout(bound, pgtransit::conn::connect(t)).await {
            Ok(Ok(c)) => {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&task.name];
                let q = c.query(
                    "SELECT target_name, count(*)::int, count(*) FILTER (WHERE done)::int, \
                     coalesce(sum(rows_copied) FILTER (WHERE done), 0)::bigint \
                     FROM pgtransit.copy_progress WHERE task = $1 GROUP BY 1 ORDER BY 1",
                    &params,
                );
                let exists = c.query_one(
                    "SELECT to_regclass('pgtransit.copy_progress') IS NOT NULL",
                    &[],
                );
                let exists = matches!(
                    tokio::time::timeout(bound, exists).await,
                    Ok(Ok(r)) if r.get::<_, bool>(0)
                );
                if !exists {
                    // Nothing copied yet.
                } else if let Ok(Ok(rows)) = tokio::time::timeout(bound, q).await {
                    for r in rows {
                        let (name, units, done, n): (String, i32, i32, i64) =
                            (r.get(0), r.get(1), r.get(2), r.get(3));
                        l.tables.push(serde_json::json!({"table": name, "units": units, "done": done, "rows": n}));
                    }
                }
            }
            Ok(Err(e)) => l.unreachable.push(format!(
                "target: {}",
                pgtransit::step::first_line(&e.to_string())
            )),
            Err(_) => l.unreachable.push("target: no answer in 5 s".into()),
        }
    }
    l
}

/// Below this much WAL before the slot is invalidated, describe warns.
const SAFE_WAL_WARN: i64 = 1024 * 1024 * 1024;

/// Warnings about the slot's survival: invalidated, about to be, or close to it
/// (`max_slot_wal_keep_size`).
fn slot_warnings(slot: &str, live: &Live) -> Vec<String> {
    let mut w = Vec::new();
    match live.wal_status.as_deref() {
        Some("lost") => w.push(format!(
            "slot {slot} is invalidated (wal_status lost, max_slot_wal_keep_size {}): the changes \
             since it fell behind are gone from the source; the target can no longer follow it: \
             terminate this task and create a new one (its copy starts over)",
            live.max_slot_wal_keep_size.as_deref().unwrap_or("?")
        )),
        Some("unreserved") => w.push(format!(
            "slot {slot} will be invalidated at the next checkpoint (wal_status unreserved): its \
             WAL is past max_slot_wal_keep_size ({}); start the worker now, or raise the setting \
             (ALTER SYSTEM SET max_slot_wal_keep_size = ...; SELECT pg_reload_conf())",
            live.max_slot_wal_keep_size.as_deref().unwrap_or("?")
        )),
        _ => {
            if let Some(safe) = live.safe_wal_size.filter(|s| *s < SAFE_WAL_WARN) {
                w.push(format!(
                    "slot {slot} is invalidated after another {} of WAL (safe_wal_size; \
                     max_slot_wal_keep_size {}): keep the worker running, or raise the setting",
                    pretty_bytes(safe.max(0)),
                    live.max_slot_wal_keep_size.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    w
}

/// What the user should do next, from the task's state.
fn next_action(t: &TaskRecord, steps: &[StepRecord], sw: Option<&serde_json::Value>) -> String {
    let name = &t.name;
    let status = effective_status(t);
    let phase = sw
        .and_then(|v| v["progress"]["phase"].as_str())
        .unwrap_or("");
    if !matches!(phase, "" | "started" | "done" | "undone") {
        return format!(
            "a switchover stopped after its `{phase}` phase, with the source fenced: `pgtransit switchover \
             {name}` continues it, `pgtransit switchover {name} --undo` lifts the fence"
        );
    }
    if status == "switched-over" {
        return match sw.and_then(|v| v["progress"]["report"]["reverse"].as_str()) {
            Some(rev) => format!(
                "switched over; {rev} replicates the target's writes back: `pgtransit rollback {name}` \
                 switches back, `pgtransit terminate {rev}` ends the way back"
            ),
            None => "switched over: the target takes the writes; nothing is left to do".into(),
        };
    }
    if status == "terminating" {
        return format!("the source or target was unreachable during terminate: bring it back, then `pgtransit terminate {name}` (or `--force` to forget the task)");
    }
    if let Some(f) = steps.iter().find(|s| s.status == "failed") {
        return format!(
            "step {} failed: fix the cause above, then `pgtransit start {name}` continues from it",
            f.step
        );
    }
    if status.starts_with("stopped") || status == "created" {
        return format!("`pgtransit start {name}` runs the remaining steps");
    }
    if steps
        .iter()
        .any(|s| s.step == "cdc" && s.status == "running")
    {
        return format!("streaming: when the lag is small, `pgtransit switchover {name} --dry-run` shows the switchover; `pgtransit terminate {name}` stops and cleans up");
    }
    format!("the worker is running; follow it with `pgtransit logs {name} --follow`")
}

pub async fn describe(a: NameArgs) -> Result<u8, Failure> {
    let (t, steps, metrics) = {
        let store: Store = store()?;
        let t = store.existing(&a.name)?;
        let steps = store.steps(&a.name)?;
        let metrics = store.metrics(&a.name)?;
        let left = store.leftovers(&a.name)?;
        let sw: Option<serde_json::Value> = store
            .switchover(&a.name)?
            .and_then(|j| serde_json::from_str(&j).ok());
        (t, steps, (metrics, left, sw))
    };
    let (metrics, left, sw) = metrics;
    let task = Task::parse(&t.spec, &t.name)?;
    let live = live(&task).await;
    let mut warnings = Vec::new();
    if let Some(r) = live.retained_wal_bytes {
        if r > RETAINED_WAL_WARN {
            warnings.push(format!(
                "slot {} retains {} of WAL on the source (max_slot_wal_keep_size = {}): if the task is \
                 abandoned, terminate it; otherwise consider ALTER SYSTEM SET max_slot_wal_keep_size = '50GB' \
                 so a stuck slot cannot fill the disk",
                task.slot,
                pretty_bytes(r),
                live.max_slot_wal_keep_size.as_deref().unwrap_or("?")
            ));
        }
    }
    warnings.extend(slot_warnings(&task.slot, &live));
    if steps
        .iter()
        .any(|s| s.step == "cdc" && s.status == "failed")
    {
        warnings.push("apply stopped: the cdc step failed (the slot keeps every change)".into());
    }
    if t.status == "running" && !alive(t.pid) {
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
    if a.json {
        json_out(&serde_json::json!({
            "name": t.name, "engine": t.engine, "status": effective_status(&t), "reason": t.reason,
            "source": t.source, "target": t.target, "created_at": t.created_at, "worker_pid": t.pid,
            "metrics_addr": t.metrics_addr, "steps": steps,
            "metrics": metrics.as_ref().map(|(at, m)| serde_json::json!({"at": at, "age_seconds": state::now() - at, "values": m})),
            "tables": live.tables, "retained_wal_bytes": live.retained_wal_bytes,
            "lag": {"source_bytes": live.source_lag_bytes, "worker_running": alive(t.pid),
                    "wal_status": live.wal_status, "safe_wal_size": live.safe_wal_size},
            "leftovers": left, "warnings": warnings, "next": next,
            "switchover": sw.as_ref().map(|v| serde_json::json!({"phase": v["progress"]["phase"], "report": v["progress"]["report"]})),
        }))?;
        return Ok(0);
    }
    outln!("Name:     {}", t.name);
    outln!("Engine:   {}", t.engine);
    outln!(
        "Status:   {}{}",
        effective_status(&t),
        t.reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    outln!("Source:   {}", t.source);
    outln!("Target:   {}", t.target);
    outln!(
        "Created:  {} ago{}",
        age(t.created_at),
        t.pid
            .filter(|_| alive(t.pid))
            .map(|p| format!("; worker pid {p}"))
            .unwrap_or_default()
    );
    if let Some(addr) = &t.metrics_addr {
        outln!("Metrics:  http://{addr}/metrics");
    }
    if let Some(v) = &sw {
        let r = &v["progress"]["report"];
        outln!(
            "Switchover: {} (fence {}, write downtime {:.2} s, barrier {}, {} sequence(s), {} rows verified)",
            v["progress"]["phase"].as_str().unwrap_or("?"),
            r["fence"].as_str().unwrap_or("?"),
            r["downtime_seconds"].as_f64().unwrap_or(0.0),
            r["barrier_lsn"].as_str().unwrap_or("-"),
            r["sequences_set"],
            r["rows_verified"]
        );
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["STEP", "STATUS", "STARTED", "FINISHED", "REASON"]);
    for s in &steps {
        table.add_row([
            s.step.clone(),
            s.status.clone(),
            s.started_at
                .map(|x| format!("{} ago", age(x)))
                .unwrap_or_else(|| "-".into()),
            s.finished_at
                .map(|x| format!("{} ago", age(x)))
                .unwrap_or_else(|| "-".into()),
            s.reason.clone().unwrap_or_default(),
        ]);
    }
    outln!("\nSteps:\n{table}");
    if let Some((at, m)) = &metrics {
        // kbcli's heading once the change stream runs (the source position applied and
        // its commit time); the copy's metrics before that.
        let heading = if m.get("applied_lsn").is_some() {
            "CDC Metrics"
        } else {
            "Metrics"
        };
        outln!("\n{heading} ({:.0} s old):", (state::now() - at).max(0.0));
        let get = |k: &str| {
            m.get(k)
                .filter(|v| !v.is_null())
                .map(|v| match (k, v.as_f64()) {
                    ("last_commit_time", Some(t)) => {
                        format!("{} ({} ago)", utc(t), age(t))
                    }
                    ("lag_bytes", Some(b)) => pretty_bytes(b as i64),
                    (_, Some(x)) if v.is_f64() => format!("{x:.1}"),
                    _ => v.to_string().trim_matches('"').to_string(),
                })
        };
        let worker = alive(t.pid);
        for (label, key) in [
            ("source LSN", "source_lsn"),
            ("received LSN", "received_lsn"),
            ("applied LSN", "applied_lsn"),
            ("lag bytes", "lag_bytes"),
            ("lag seconds", "lag_seconds"),
            ("last source commit", "last_commit_time"),
            ("transactions/s", "transactions_per_second"),
            ("rows/s", "rows_per_second"),
            ("missing rows", "missing_rows"),
            ("copy percent", "percent"),
        ] {
            if !worker && key.starts_with("lag_") {
                continue;
            }
            if let Some(v) = get(key) {
                outln!("  {label:<20} {v}");
            }
        }
    }
    if !alive(t.pid)
        && steps
            .iter()
            .any(|s| s.step == "cdc" && s.started_at.is_some())
    {
        outln!(
            "  {:<20} unknown: no worker applies changes{}",
            "lag",
            live.source_lag_bytes
                .map(|b| format!(" ({} of WAL wait in the slot)", pretty_bytes(b)))
                .unwrap_or_default()
        );
    }
    if !live.tables.is_empty() {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        table.set_header(["TABLE", "UNITS DONE", "ROWS COPIED"]);
        for r in &live.tables {
            table.add_row([
                r["table"].as_str().unwrap_or("").to_string(),
                format!("{}/{}", r["done"], r["units"]),
                r["rows"].to_string(),
            ]);
        }
        outln!("\nCopy progress:\n{table}");
    }
    if !left.is_empty() {
        outln!("\nLeft behind by terminate:");
        for l in &left {
            outln!("  [{}] {}\n    {}", l.side, l.what, l.sql);
        }
    }
    if !warnings.is_empty() {
        outln!("\nWarnings:");
        for w in &warnings {
            outln!("  ! {w}");
        }
    }
    outln!("\nNext: {next}");
    Ok(0)
}

pub async fn logs(a: LogsArgs) -> Result<u8, Failure> {
    let store = store()?;
    store.existing(&a.name)?;
    let step = a.step.map(|s| s.name());
    let mut after = 0;
    loop {
        for l in store.logs(&a.name, step, after)? {
            after = l.id;
            if a.json {
                outln!("{}", serde_json::to_string(&l).unwrap_or_default());
            } else {
                outln!("[{}] {}", l.step, l.line);
            }
        }
        if !a.follow {
            return Ok(0);
        }
        let running = store
            .task(&a.name)?
            .is_some_and(|t| t.status == "running" && alive(t.pid));
        if !running {
            // One last look, then stop following a worker that has ended.
            tokio::time::sleep(Duration::from_millis(300)).await;
            for l in store.logs(&a.name, step, after)? {
                outln!("[{}] {}", l.step, l.line);
            }
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The task templates `create --template NAME` takes: (name, engine, what it does).
/// kbcli's `apecloud-pg2pg` is the stream engine (ape-dts also reads the slot itself).
pub const TEMPLATES: &[(&str, &str, &str)] = &[
    ("apecloud-pg2pg", "stream", "kbcli's name for PostgreSQL to PostgreSQL: the stream engine"),
    ("pg2pg-stream", "stream", "pgtransit holds the slot: parallel snapshot copy, own apply; the target need not reach the source"),
    ("pg2pg-native", "native", "PUBLICATION/SUBSCRIPTION; binary and streaming from 14; the target must reach the source"),
];

pub fn templates(a: ListArgs) -> Result<u8, Failure> {
    // What each engine needs of the servers (see DESIGN.md and the README).
    let rows: Vec<(&str, &str, &str, &str, &str)> = TEMPLATES
        .iter()
        .map(|(name, engine, notes)| (*name, *engine, "10 - 18", "10 - 18", *notes))
        .collect();
    let tested: Vec<String> = pgtransit::task::TESTED_PAIRS
        .iter()
        .map(|(s, t)| format!("{s} -> {t}"))
        .collect();
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(name, e, s, t, n)| serde_json::json!({"template": name, "engine": e, "source_versions": s, "target_versions": t, "notes": n, "tested_pairs": pgtransit::task::TESTED_PAIRS}))
            .collect();
        json_out(&v)?;
        return Ok(0);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["TEMPLATE", "ENGINE", "SOURCE", "TARGET", "NOTES"]);
    for (name, e, s, t, n) in rows {
        table.add_row([name, e, s, t, n]);
    }
    outln!("{table}");
    outln!(
        "A source of 10 to 18 to a target of the same or a newer major; downgrades where the \
         schema uses nothing the target lacks (`check` warns).\nTested end to end on both \
         engines (create, cdc under load, switchover, verify, terminate): {}.",
        tested.join(", ")
    );
    Ok(0)
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
