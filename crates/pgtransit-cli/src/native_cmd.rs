//! The native engine's steps as commands: copy-schema, create-pub, create-sub, refresh,
//! progress, diff, copy-seq, drop-sub, drop-pub, and generate (the same steps as scripts).
//! Each prints its plan with `--dry-run`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use pgtransit::catalog::pretty_bytes;
use pgtransit::native;
use pgtransit::schema::{SchemaOptions, Section};
use pgtransit::step::{Plan, Session};
use pgtransit::task::Task;

use crate::{resolve_task, TaskArgs};
use pgtransit::Error;

#[derive(Args)]
pub struct StepArgs {
    #[command(flatten)]
    pub task: TaskArgs,
    /// Print the actions (side and SQL) without running anything
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args)]
pub struct CopySchemaArgs {
    #[command(flatten)]
    pub step: StepArgs,
    /// pre-data: tables, types, functions, sequences, primary keys and identity indexes
    /// (before the data); post-data: the other indexes, foreign keys, triggers (after the
    /// initial sync)
    #[arg(
        long,
        default_value = "pre-data",
        value_name = "pre-data|post-data|all"
    )]
    pub section: Section,
    /// Drop and recreate selected tables that already exist, empty, on the target
    #[arg(long)]
    pub clean: bool,
    /// With --clean: even when they hold rows (the rows are lost)
    #[arg(long, requires = "clean")]
    pub force: bool,
    /// Keep the dump and its lists in this folder (default: a temporary one)
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
}

#[derive(Args)]
pub struct ProgressArgs {
    #[command(flatten)]
    pub step: StepArgs,
    /// Print again every 2 seconds until interrupted (or, with --wait, until complete)
    #[arg(long)]
    pub watch: bool,
    /// Wait up to SECONDS for every table to be streaming; exit 1 if they are not
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub step: StepArgs,
    /// Seconds to wait for the subscription to catch up before counting
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub wait: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CopySeqArgs {
    #[command(flatten)]
    pub step: StepArgs,
    /// Move every sequence this much further in its own direction (down for descending ones)
    #[arg(default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub shift: i64,
}

pub(crate) fn say(line: &str) {
    outln!("{line}");
}

pub(crate) fn dry_run(plan: Plan) -> Result<u8, Error> {
    show_plan(plan, false)
}

/// A step's plan: text, or one JSON document.
pub(crate) fn show_plan(plan: Plan, json: bool) -> Result<u8, Error> {
    if json {
        crate::out::json(&plan)?;
    } else {
        out!("{plan}");
    }
    Ok(0)
}

pub(crate) fn session(task: &Task) -> Session<'_> {
    Session::new(task, say)
}

pub async fn copy_schema(a: CopySchemaArgs) -> Result<u8, Error> {
    schema_step(a, "copy-schema", None).await
}

/// copy-schema (native: keys before the data) or init-struct (stream: `Some(index_jobs)`).
pub(crate) async fn schema_step(
    a: CopySchemaArgs,
    step: &str,
    stream: Option<Option<usize>>,
) -> Result<u8, Error> {
    let task = resolve_task(&a.step.task)?;
    let o = SchemaOptions {
        section: a.section,
        clean: a.clean,
        force: a.force,
        workdir: a.workdir,
        stream: stream.is_some(),
        index_jobs: stream.flatten().unwrap_or(task.index_jobs as usize),
    };
    if a.step.dry_run {
        return dry_run(pgtransit::schema::plan_copy_schema(&task, &o));
    }
    say(&format!(
        "{step} ({}): {} -> {}",
        o.section.as_str(),
        task.source.display(),
        target_display(&task)
    ));
    pgtransit::schema::copy_schema(&mut session(&task), &o).await?;
    say(&format!("{step}: done"));
    Ok(0)
}

pub(crate) fn target_display(task: &Task) -> String {
    task.target
        .as_ref()
        .map(|t| t.display())
        .unwrap_or_else(|| "?".into())
}

pub async fn create_pub(a: StepArgs) -> Result<u8, Error> {
    let task = resolve_task(&a.task)?;
    if a.dry_run {
        return dry_run(native::plan_create_pub(&task));
    }
    say(&format!("create-pub on {}", task.source.display()));
    native::create_pub(&mut session(&task)).await?;
    Ok(0)
}

pub async fn create_sub(a: StepArgs) -> Result<u8, Error> {
    let task = resolve_task(&a.task)?;
    if a.dry_run {
        return dry_run(native::plan_create_sub(&task));
    }
    say(&format!("create-sub on {}", target_display(&task)));
    native::create_sub(&mut session(&task)).await?;
    Ok(0)
}

pub async fn refresh(a: StepArgs) -> Result<u8, Error> {
    let task = resolve_task(&a.task)?;
    if a.dry_run {
        return dry_run(native::plan_refresh(&task));
    }
    say("refresh: adding new source tables to the migration");
    native::refresh(&mut session(&task)).await?;
    Ok(0)
}

pub async fn copy_seq(a: CopySeqArgs) -> Result<u8, Error> {
    let task = resolve_task(&a.step.task)?;
    if a.step.dry_run {
        return dry_run(native::plan_copy_seq(&task, a.shift));
    }
    say(&format!("copy-seq (shift {}): source -> target", a.shift));
    let n = native::copy_seq(&mut session(&task), a.shift).await?;
    say(&format!("copy-seq: {n} sequence(s) set"));
    Ok(0)
}

pub async fn drop_sub(a: StepArgs) -> Result<u8, Error> {
    let task = resolve_task(&a.task)?;
    if a.dry_run {
        return dry_run(native::plan_drop_sub(&task));
    }
    say(&format!("drop-sub on {}", target_display(&task)));
    let out = native::drop_sub(&mut session(&task)).await?;
    if let Some((left, sql)) = out.left_on_source {
        say(&format!(
            "\nWARNING: the subscription is gone, but the source could not be reached, so these remain on it \
             and keep WAL there until dropped:\n{}\nRun this on the source database ({}) once it is back:\n\n{}",
            left.iter().map(|l| format!("  - replication slot {l}")).collect::<Vec<_>>().join("\n"),
            task.source.display(),
            sql.trim()
        ));
    }
    Ok(0)
}

pub async fn drop_pub(a: StepArgs) -> Result<u8, Error> {
    let task = resolve_task(&a.task)?;
    if a.dry_run {
        return dry_run(native::plan_drop_pub(&task));
    }
    say(&format!("drop-pub on {}", task.source.display()));
    native::drop_pub(&mut session(&task)).await?;
    Ok(0)
}

pub async fn progress(a: ProgressArgs) -> Result<u8, Error> {
    let task = resolve_task(&a.step.task)?;
    if a.step.dry_run {
        return dry_run(native::plan_progress(&task));
    }
    let start = Instant::now();
    let mut s = Session::new(&task, |_| {});
    loop {
        let p = native::progress(&mut s).await?;
        if a.json {
            outln!(
                "{}",
                serde_json::to_string(&p).map_err(|e| Error::failed(e.to_string()))?
            );
        } else {
            out!("{}", render_progress(&p));
        }
        if !p.subscription_exists && a.wait.is_none() {
            return Err(Error::failed(format!(
                "subscription {} does not exist on the target: run create-sub first",
                task.subscription
            )));
        }
        if let Some(limit) = a.wait {
            if p.complete {
                return Ok(0);
            }
            if start.elapsed() >= Duration::from_secs(limit) {
                return Err(Error::failed(format!(
                    "not every table is streaming after {limit}s ({}/{} streaming)",
                    p.streaming, p.total
                )));
            }
        } else if !a.watch {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn render_progress(p: &native::Progress) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["table", "state", "copied", "source size", "%"]);
    for r in &p.tables {
        t.add_row(vec![
            r.name.clone(),
            r.state.clone(),
            if r.state == "copying" {
                pretty_bytes(r.copy_bytes)
            } else {
                pretty_bytes(r.target_bytes)
            },
            r.source_bytes
                .map(pretty_bytes)
                .unwrap_or_else(|| "-".into()),
            format!("{:.0}", r.percent),
        ]);
    }
    let lag = match (p.lag_bytes, p.lag_seconds) {
        (Some(b), Some(s)) => format!("{} ({s:.1} s)", pretty_bytes(b)),
        (Some(b), None) => pretty_bytes(b),
        _ => "no slot".into(),
    };
    let mut out = format!("{t}\n");
    out.push_str(&format!(
        "total: {}/{} tables streaming, {:.0}% copied; lag {lag}; apply errors {}{}\n",
        p.streaming,
        p.total,
        p.percent,
        p.errors
            .map(|e| e.to_string())
            .unwrap_or_else(|| "n/a".into()),
        if p.subscription_exists && !p.enabled {
            "; SUBSCRIPTION DISABLED (an apply error? see the target's log)"
        } else {
            ""
        }
    ));
    out
}

pub async fn diff(a: DiffArgs) -> Result<u8, Error> {
    let task = resolve_task(&a.step.task)?;
    if a.step.dry_run {
        return dry_run(native::plan_diff(&task));
    }
    let report = native::diff(&mut session(&task), Duration::from_secs(a.wait)).await?;
    if a.json {
        crate::out::json(&report)?;
    } else {
        print_diff_rows(&report, "");
        outln!(
            "diff: {} object(s), {} failed",
            report.rows.len(),
            report.failures()
        );
    }
    Ok(if report.failures() > 0 { 3 } else { 0 })
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Task file (native YAML or a Pigsty migration task file)
    #[arg(short = 't', long = "task", value_name = "FILE")]
    pub task_file: PathBuf,
    /// Write here instead of the task's context folder (<context_dir>/<src_cls>.<src_db>)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Write into a folder that exists and was not generated by pgtransit
    #[arg(long)]
    pub force: bool,
}

pub fn generate(a: GenerateArgs) -> Result<u8, Error> {
    let task = Task::load(&a.task_file)?;
    let dir = a
        .dir
        .unwrap_or_else(|| pgtransit::generate::default_dir(&task));
    let task_file = std::fs::canonicalize(&a.task_file).unwrap_or(a.task_file);
    if !a.force {
        pgtransit::generate::refuse_foreign_dir(&dir)?;
    }
    let out = pgtransit::generate::generate(&task, &task_file, &dir)?;
    say(&format!(
        "wrote the migration context {} ({} files, private to you):",
        out.dir.display(),
        out.files.len()
    ));
    let scripts: Vec<&str> = pgtransit::generate::SCRIPTS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    say(&format!("  scripts: {}", scripts.join(" ")));
    say("  manual:  README.md; SQL: sql/; outputs: data/");
    say(&format!(
        "next: . {}/activate && ./check-repl   (then follow README.md)",
        out.dir.display()
    ));
    Ok(0)
}

/// One PASS/FAIL line per object of a diff, each prefixed by `indent`.
pub fn print_diff_rows(report: &native::DiffReport, indent: &str) {
    for r in &report.rows {
        outln!(
            "{indent}[{}] {:<8} {}  source={} target={}{}",
            if r.pass { "PASS" } else { "FAIL" },
            r.kind,
            r.name,
            r.source.as_deref().unwrap_or("-"),
            r.target.as_deref().unwrap_or("-"),
            if r.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", r.note)
            }
        );
    }
}
