//! `pgtransit verify [NAME] [--mode count|checksum]`: is the target's content the source's?

use clap::Args;
use pgtransit::verify::{self, Mode, VerifyOptions};

use crate::{resolve_task, TaskArgs};
use pgtransit::Error;

#[derive(Args)]
pub struct VerifyArgs {
    /// A task from the task store (or give -t FILE / --source --target)
    pub name: Option<String>,
    #[command(flatten)]
    pub task: TaskArgs,
    /// count: exact row counts; checksum: every row hashed, differing keys listed
    #[arg(long, default_value = "count", value_name = "count|checksum")]
    pub mode: Mode,
    /// Only these tables (comma-separated, schema.table)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Chunks compared at once (each with a session on both sides)
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Rows per checksum chunk, about (tables with one integer key)
    #[arg(long, default_value_t = 1_000_000)]
    pub chunk_rows: i64,
    /// A differing chunk is compared again this many times, 2 s apart, before it counts
    /// (the target may still be applying changes)
    #[arg(long, default_value_t = 3)]
    pub rechecks: u32,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(a: VerifyArgs) -> Result<u8, Error> {
    let task = match &a.name {
        Some(name) => pgtransit::migration::task(name)?,
        None => resolve_task(&a.task)?,
    };
    let o = VerifyOptions {
        mode: a.mode,
        tables: a.tables.clone(),
        jobs: a.jobs,
        chunk_rows: a.chunk_rows,
        rechecks: a.rechecks,
        ..Default::default()
    };
    let json = a.json;
    let say = move |l: &str| {
        if !json {
            outln!("{l}")
        }
    };
    if !json {
        outln!(
            "verify ({}): {} -> {}",
            o.mode,
            task.source.display(),
            task.target
                .as_ref()
                .map(|t| t.display())
                .unwrap_or_default()
        );
    }
    // On a terminal: a bar over the pieces compared (a table first whole, then its chunks
    // if it differs), with the rows compared so far.
    let bar = crate::progress::wanted(json)
        .then(|| crate::progress::count_bar(crate::progress::target(json), "verify", 0));
    let mut o = o;
    if let Some(b) = &bar {
        let b = b.clone();
        o.progress = Some(verify::ProgressHook(std::sync::Arc::new(
            move |done, known, rows| {
                b.set_length(known as u64);
                b.set_position(done as u64);
                b.set_message(format!("pieces, {rows} source rows"));
            },
        )));
    }
    let r = verify::verify(&task, &o, &say).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let r = r?;
    if json {
        crate::out::json(&r)?;
    } else {
        for t in r.tables.iter().filter(|t| !t.pass) {
            for (label, keys) in [
                ("missing on the target", &t.missing_on_target),
                ("only on the target", &t.only_on_target),
                ("different", &t.changed),
            ] {
                if !keys.is_empty() {
                    outln!("    {} {label}: {}", t.table, keys.join(" "));
                }
            }
        }
        outln!(
            "verify: {} table(s), {} rows, {} differ, in {:.1} s",
            r.tables.len(),
            r.rows_verified,
            r.failures(),
            r.seconds
        );
    }
    Ok(if r.failures() > 0 { 3 } else { 0 })
}
