//! `pgtransit list`, `describe`, `logs` and `templates`: `pgtransit::migration::status`,
//! rendered as tables and lines, or as JSON.

use std::time::Duration;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use pgtransit::catalog::pretty_bytes;
use pgtransit::migration::status::{self, utc};
use pgtransit::migration::{alive, Metrics, TEMPLATES};
use pgtransit::state::{self, Store, TaskStatus};

use super::{json_out, ListArgs, LogsArgs, NameArgs};
use pgtransit::Error;

fn age(since: f64) -> String {
    let s = (state::now() - since).max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header);
    t
}

pub fn list(a: ListArgs) -> Result<u8, Error> {
    let store = Store::open()?;
    let rows = status::list(&store)?;
    let cdc = |r: &status::ListRow| r.metrics.as_ref().and_then(Metrics::cdc).cloned();
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let t = &r.record;
                let m = cdc(r);
                serde_json::json!({
                    "name": t.name, "engine": t.engine, "source": t.source, "target": t.target,
                    "status": r.status, "step": r.step,
                    "lag_bytes": m.as_ref().map(|m| m.lag_bytes),
                    "lag_seconds": m.as_ref().map(|m| m.lag_seconds),
                    "created_at": t.created_at,
                })
            })
            .collect();
        json_out(&v)?;
        return Ok(0);
    }
    if rows.is_empty() {
        outln!(
            "no tasks in {} (create one with `pgtransit create NAME --source URL --target URL`)",
            store.home().display()
        );
        return Ok(0);
    }
    let mut out = table(&[
        "NAME",
        "ENGINE",
        "SOURCE -> TARGET",
        "STATUS",
        "STEP",
        "LAG",
        "AGE",
    ]);
    for r in &rows {
        let t = &r.record;
        let lag = match cdc(r) {
            Some(m) => format!(
                "{} / {:.1}s",
                pretty_bytes(m.lag_bytes as i64),
                m.lag_seconds
            ),
            None if r.lag_unknown => "unknown (no worker)".into(),
            None => "-".into(),
        };
        out.add_row([
            t.name.clone(),
            t.engine.to_string(),
            format!("{} -> {}", t.source, t.target),
            r.status.clone(),
            r.step.clone(),
            lag,
            age(t.created_at),
        ]);
    }
    outln!("{out}");
    Ok(0)
}

pub async fn describe(a: NameArgs) -> Result<u8, Error> {
    let d = status::describe(&a.name).await?;
    if a.json {
        json_out(&d.to_json())?;
        return Ok(0);
    }
    let t = &d.record;
    outln!("Name:     {}", t.name);
    outln!("Engine:   {}", t.engine);
    outln!(
        "Status:   {}{}",
        d.status,
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
            .filter(|_| d.worker_running)
            .map(|p| format!("; worker pid {p}"))
            .unwrap_or_default()
    );
    if let Some(addr) = &t.metrics_addr {
        outln!("Metrics:  http://{addr}/metrics");
    }
    if let Some(p) = &d.switchover {
        let r = &p.report;
        outln!(
            "Switchover: {} (fence {}, write downtime {:.2} s, barrier {}, {} sequence(s), {} rows verified)",
            p.phase,
            r.fence,
            r.downtime_seconds,
            if r.barrier_lsn.is_empty() { "-" } else { &r.barrier_lsn },
            r.sequences_set,
            r.rows_verified
        );
    }
    let mut steps = table(&["STEP", "STATUS", "STARTED", "FINISHED", "REASON"]);
    let ago = |x: Option<f64>| {
        x.map(|x| format!("{} ago", age(x)))
            .unwrap_or_else(|| "-".into())
    };
    for s in &d.steps {
        steps.add_row([
            s.step.to_string(),
            s.status.to_string(),
            ago(s.started_at),
            ago(s.finished_at),
            s.reason.clone().unwrap_or_default(),
        ]);
    }
    outln!("\nSteps:\n{steps}");
    if let Some((at, m)) = &d.metrics {
        print_metrics(*at, m, d.worker_running);
    }
    if d.lag_unknown {
        outln!(
            "  {:<20} unknown: no worker applies changes{}",
            "lag",
            d.live
                .source_lag_bytes
                .map(|b| format!(" ({} of WAL wait in the slot)", pretty_bytes(b)))
                .unwrap_or_default()
        );
    }
    if !d.live.tables.is_empty() {
        let mut copy = table(&["TABLE", "UNITS DONE", "ROWS COPIED"]);
        for r in &d.live.tables {
            copy.add_row([
                r.table.clone(),
                format!("{}/{}", r.done, r.units),
                r.rows.to_string(),
            ]);
        }
        outln!("\nCopy progress:\n{copy}");
    }
    if !d.leftovers.is_empty() {
        outln!("\nLeft behind by terminate:");
        for l in &d.leftovers {
            outln!("  [{}] {}\n    {}", l.side, l.what, l.sql);
        }
    }
    if !d.warnings.is_empty() {
        outln!("\nWarnings:");
        for w in &d.warnings {
            outln!("  ! {w}");
        }
    }
    outln!("\nNext: {}", d.next);
    Ok(0)
}

/// kbcli's heading once the change stream runs (the source position applied and its commit
/// time); the copy's totals before that. The lag only while a worker runs: otherwise it is
/// history.
fn print_metrics(at: f64, m: &Metrics, worker_running: bool) {
    let heading = match m {
        Metrics::Cdc(_) => "CDC Metrics",
        Metrics::Copy(_) => "Metrics",
    };
    outln!("\n{heading} ({:.0} s old):", (state::now() - at).max(0.0));
    let row = |label: &str, v: String| outln!("  {label:<20} {v}");
    match m {
        Metrics::Cdc(c) => {
            row("source LSN", c.source_lsn.clone());
            row("received LSN", c.received_lsn.clone());
            row("applied LSN", c.applied_lsn.clone());
            if worker_running {
                row("lag bytes", pretty_bytes(c.lag_bytes as i64));
                row("lag seconds", format!("{:.1}", c.lag_seconds));
            }
            if let Some(t) = c.last_commit_time {
                row("last source commit", format!("{} ({} ago)", utc(t), age(t)));
            }
            row(
                "transactions/s",
                format!("{:.1}", c.transactions_per_second),
            );
            row("rows/s", format!("{:.1}", c.rows_per_second));
            row("missing rows", c.missing_rows.to_string());
        }
        Metrics::Copy(p) => row("copy percent", format!("{:.1}", p.percent)),
    }
}

pub async fn logs(a: LogsArgs) -> Result<u8, Error> {
    let store = Store::open()?;
    store.existing(&a.name)?;
    let step = a.step.map(|s| s.as_str());
    let print = |l: &state::LogLine, json: bool| {
        if json {
            outln!("{}", serde_json::to_string(l).unwrap_or_default());
        } else {
            outln!("[{}] {}", l.step, l.line);
        }
    };
    let mut after = 0;
    loop {
        for l in store.logs(&a.name, step, after)? {
            after = l.id;
            print(&l, a.json);
        }
        if !a.follow {
            return Ok(0);
        }
        let running = store
            .task(&a.name)?
            .is_some_and(|t| t.status == TaskStatus::Running && alive(t.pid));
        if !running {
            // One last look, then stop following a worker that has ended.
            tokio::time::sleep(Duration::from_millis(300)).await;
            for l in store.logs(&a.name, step, after)? {
                print(&l, a.json);
            }
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn templates(a: ListArgs) -> Result<u8, Error> {
    // What each engine needs of the servers (see the README).
    let versions = "10 - 18";
    let tested: Vec<String> = pgtransit::task::TESTED_PAIRS
        .iter()
        .map(|(s, t)| format!("{s} -> {t}"))
        .collect();
    if a.json {
        let v: Vec<_> = TEMPLATES
            .iter()
            .map(|(name, e, n)| serde_json::json!({"template": name, "engine": e, "source_versions": versions, "target_versions": versions, "notes": n, "tested_pairs": pgtransit::task::TESTED_PAIRS}))
            .collect();
        json_out(&v)?;
        return Ok(0);
    }
    let mut out = table(&["TEMPLATE", "ENGINE", "SOURCE", "TARGET", "NOTES"]);
    for (name, e, n) in TEMPLATES {
        out.add_row([*name, e.as_str(), versions, versions, *n]);
    }
    outln!("{out}");
    outln!(
        "A source of 10 to 18 to a target of the same or a newer major; downgrades where the \
         schema uses nothing the target lacks (`check` warns).\nTested end to end on both \
         engines (create, cdc under load, switchover, verify, terminate): {}.",
        tested.join(", ")
    );
    Ok(0)
}
