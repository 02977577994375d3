//! The stream engine's steps as commands: init-struct, init-data and cdc, with their output
//! (lines, JSON lines with `--json`, progress bars on a terminal).

use std::time::{Duration, Instant};

use clap::Args;
use pgtransit::step::Session;
use pgtransit::task::OnMissingRow;
use pgtransit::Error;

use crate::native_cmd::{schema_step, show_plan, target_display, CopySchemaArgs};
use crate::{resolve_task, TaskArgs};

#[derive(Args)]
pub struct InitStructArgs {
    #[command(flatten)]
    pub schema: CopySchemaArgs,
    /// Indexes built at once in post-data (default: the task's index_jobs)
    #[arg(long, value_name = "N")]
    pub index_jobs: Option<usize>,
}

/// Stream engine: the schema without keys before the copy; after it, every index built
/// by pgtransit in parallel (keys attached from unique indexes), resumable.
pub async fn init_struct(a: InitStructArgs) -> Result<u8, Error> {
    let jobs = a.index_jobs;
    schema_step(a.schema, "init-struct", Some(jobs)).await
}

#[derive(Args)]
pub struct InitDataArgs {
    #[command(flatten)]
    pub task: TaskArgs,
    /// Parallel COPY workers (default: the task's table_jobs)
    #[arg(long, value_name = "N")]
    pub table_jobs: Option<usize>,
    /// Split tables with more heap than this into ctid ranges of about this size
    #[arg(long, value_name = "MB", default_value_t = 512)]
    pub split_mb: i64,
    /// Copy even into target tables that already hold rows
    #[arg(long)]
    pub force: bool,
    /// Print the actions (side and SQL) without running anything
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

/// Stream engine: the initial copy from the slot's exported snapshot; rerun to resume.
pub async fn init_data(a: InitDataArgs) -> Result<u8, Error> {
    let task = resolve_task(&a.task)?;
    let o = pgtransit::snapshot::CopyOptions {
        table_jobs: a.table_jobs.unwrap_or(task.table_jobs as usize),
        split_bytes: a.split_mb * 1024 * 1024,
        force: a.force,
    };
    if a.dry_run {
        return show_plan(pgtransit::snapshot::plan_init_data(&task, &o), a.json);
    }
    let json = a.json;
    let events = event_printer(json);
    let sink = events.clone();
    let mut s = Session::new(&task, move |l| sink(pgtransit::snapshot::message(l)));
    events(pgtransit::snapshot::message(format!(
        "init-data: {} -> {} with {} worker(s)",
        task.source.display(),
        target_display(&task),
        o.table_jobs
    )));
    let r = pgtransit::snapshot::init_data(&mut s, &o, events.clone()).await?;
    if json {
        print_done(&r)?;
    } else {
        outln!(
            "init-data: {} unit(s) copied{}, {} rows, {} in {:.1} s; the change stream starts at {}",
            r.units_copied,
            if r.units_skipped > 0 { format!(" ({} already done)", r.units_skipped) } else { String::new() },
            r.rows,
            pgtransit::catalog::pretty_bytes(r.bytes as i64),
            r.seconds,
            r.consistent_lsn
        );
    }
    Ok(0)
}

#[derive(Args)]
pub struct CdcArgs {
    #[command(flatten)]
    pub task: TaskArgs,
    /// Stop once the source's changes up to this LSN are applied; `now`: the source's
    /// position when the command starts. Without it: until SIGTERM or Ctrl-C.
    #[arg(long, value_name = "LSN|now")]
    pub until: Option<String>,
    /// An UPDATE or DELETE whose row is not on the target stops the apply (`stop`, the
    /// default) or is counted and logged (`log`); default: the task's `on_missing_row`
    #[arg(long, value_name = "stop|log", value_parser = OnMissingRow::parse)]
    pub on_missing_row: Option<OnMissingRow>,
    /// Print the actions (side and SQL) without running anything
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

/// Stream engine: read the slot and apply the changes to the target.
pub async fn cdc(a: CdcArgs) -> Result<u8, Error> {
    use pgtransit::stream::{CdcOptions, Until};
    let mut task = resolve_task(&a.task)?;
    if let Some(m) = a.on_missing_row {
        task.on_missing_row = m;
    }
    if a.dry_run {
        return show_plan(pgtransit::stream::plan_cdc(&task), a.json);
    }
    let until = match a.until.as_deref() {
        None => Until::Stopped,
        Some("now") => Until::SourceNow,
        Some(l) => Until::Lsn(
            l.parse::<tokio_postgres::types::PgLsn>()
                .map(u64::from)
                .map_err(|_| Error::usage(format!("--until: not an LSN: {l}")))?,
        ),
    };
    let stop = crate::tasks::stop_on_signals();
    let json = a.json;
    let events = event_printer(json);
    let sink = events.clone();
    let mut s = Session::new(&task, move |l| sink(pgtransit::snapshot::message(l)));
    let r = pgtransit::stream::cdc(&mut s, &CdcOptions { until, stop }, events).await?;
    if json {
        print_done(&r)?;
    } else {
        outln!(
            "cdc: applied {} transaction(s) ({} inserts, {} updates, {} deletes, {} truncates) up to {} in {:.1} s",
            r.transactions, r.counts.inserts, r.counts.updates, r.counts.deletes, r.counts.truncates, r.applied_lsn, r.seconds
        );
        if r.counts.not_found > 0 {
            outln!(
                "cdc: {} UPDATE/DELETE found no row on the target (on_missing_row: log): the target differs; run `pgtransit verify --mode checksum`",
                r.counts.not_found
            );
        }
    }
    Ok(0)
}

/// The last JSON line of a step run with --json: its report.
fn print_done(report: &impl serde::Serialize) -> Result<(), Error> {
    let done = serde_json::json!({ "event": "done", "report": report });
    outln!(
        "{}",
        serde_json::to_string(&done).map_err(|e| Error::failed(e.to_string()))?
    );
    Ok(())
}

/// JSON lines on stdout with --json (one event each), readable lines otherwise; on a
/// terminal, the copy's totals and a catch-up's lag as progress bars (`progress`), the other
/// lines printed above them.
fn event_printer(json: bool) -> pgtransit::snapshot::Events {
    use pgtransit::snapshot::CopyEvent;
    // The stream's metrics come every 2 s; a line of them every 10 s is enough to read.
    let last = std::sync::Mutex::new(None::<Instant>);
    let last_progress = std::sync::Mutex::new(None::<Instant>);
    let bars = crate::progress::wanted(json);
    let copy = std::sync::Mutex::new(None::<crate::progress::CopyBar>);
    // The catch-up bar and the lag it started from.
    let catch_up = std::sync::Mutex::new(None::<(indicatif::ProgressBar, u64)>);
    std::sync::Arc::new(move |e: CopyEvent| {
        if json {
            outln!("{}", serde_json::to_string(&e).unwrap_or_default());
            return;
        }
        if bars {
            let mut copy = copy.lock().unwrap_or_else(|p| p.into_inner());
            match &e {
                CopyEvent::Progress(p) => {
                    copy.get_or_insert_with(|| {
                        crate::progress::CopyBar::new(crate::progress::target(json))
                    })
                    .update(p);
                    return;
                }
                CopyEvent::Cdc(m) => {
                    let mut c = catch_up.lock().unwrap_or_else(|p| p.into_inner());
                    let lag = m.lag_bytes;
                    let (bar, from) = c.get_or_insert_with(|| {
                        (
                            crate::progress::catch_up_bar(crate::progress::target(json), lag),
                            lag.max(1),
                        )
                    });
                    bar.set_position(from.saturating_sub(lag));
                    return;
                }
                _ => {
                    if let Some(bar) = copy.as_ref() {
                        bar.println(&e.to_string());
                        return;
                    }
                    let c = catch_up.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some((bar, _)) = c.as_ref() {
                        bar.println(e.to_string());
                        return;
                    }
                }
            }
        }
        // Plain lines: the metrics every 10 s, the copy's totals every 5 s.
        let every = match e {
            CopyEvent::Cdc(_) => Some((&last, 10)),
            CopyEvent::Progress(_) => Some((&last_progress, 5)),
            _ => None,
        };
        if let Some((last, secs)) = every {
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(secs)) {
                return;
            }
            *last = Some(Instant::now());
        }
        outln!("{e}")
    })
}
