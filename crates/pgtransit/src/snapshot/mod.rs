//! The stream engine's initial copy (init-data): a logical slot created with an exported
//! snapshot, and parallel workers that import it and stream `COPY ... TO STDOUT` straight
//! into `COPY ... FROM STDIN` on the target — never a table, chunk or row set in memory.
//! Big tables are split into ctid ranges. Every unit is marked done on the target in the
//! same transaction as its rows, so a killed copy resumes where it stopped.

mod events;
mod plan;
mod slot;
mod worker;

pub(crate) use slot::drop_when_released;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::check::Side;
use crate::error::Error;
use crate::native::{self};
use crate::quote;
use crate::step::Session;

mod shown;

pub use events::{message, CopyEvent, CopyProgress, Events};
pub use plan::{copy_by_table, TableCopy, Unit};
pub use shown::plan_init_data;

const PROGRESS_TABLE: &str = include_str!("sql/progress-table.sql");

#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Parallel COPY workers.
    pub table_jobs: usize,
    /// Tables larger than this (heap bytes) are split into ctid ranges of about this size.
    pub split_bytes: i64,
    /// Copy even into target tables that already hold rows.
    pub force: bool,
}

/// What a run of init-data did.
#[derive(Clone, Debug, Serialize)]
pub struct CopyReport {
    /// The slot's consistent point: where the change stream starts.
    pub consistent_lsn: String,
    /// The snapshot this run copied in (the consistent point, or a fresh one on resume).
    pub snapshot_lsn: String,
    pub resumed: bool,
    pub units_copied: usize,
    pub units_skipped: usize,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
}

async fn publication_exists(s: &mut Session<'_>) -> Result<bool, Error> {
    let name = s.task.publication.clone();
    Ok(s.client(Side::Source)
        .await?
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
            &[&name],
        )
        .await
        .map_err(|e| crate::error::sql_error("looking for the publication (on the source)", e))?
        .get(0))
}

/// Drop the slot this run created (once its exporting session has let go of it) and the
/// publication, when this run created it too; what cannot be dropped is said.
async fn undo_setup(s: &mut Session<'_>, drop_publication: bool) {
    let (slot, publication) = (s.task.slot.clone(), s.task.publication.clone());
    let Ok(source) = s.client(Side::Source).await else {
        s.say(&format!(
            "  the source is unreachable: drop the slot by hand: SELECT pg_drop_replication_slot({});",
            quote::literal(&slot)
        ));
        return;
    };
    // The exporting session has just been dropped; it lets go of the slot a moment later.
    let dropped = drop_when_released(source, &slot, 40).await.is_ok();
    let mut said = if dropped {
        format!("  [source] slot {} dropped again", quote::ident(&slot))
    } else {
        format!(
            "  [source] could not drop slot {}: SELECT pg_drop_replication_slot({});",
            quote::ident(&slot),
            quote::literal(&slot)
        )
    };
    if drop_publication {
        let sql = format!("DROP PUBLICATION IF EXISTS {}", quote::ident(&publication));
        match source.batch_execute(&sql).await {
            Ok(()) => said.push_str(&format!(
                "; publication {} dropped again",
                quote::ident(&publication)
            )),
            Err(_) => said.push_str(&format!("; could not drop the publication: {sql};")),
        }
    }
    if dropped {
        if let Ok(target) = s.client(Side::Target).await {
            let _ = crate::marks::release(target, crate::marks::Kind::Slot, &slot).await;
        }
    }
    s.say(&said);
}

/// Run init-data for the session's task.
pub async fn init_data(
    s: &mut Session<'_>,
    o: &CopyOptions,
    events: Events,
) -> Result<CopyReport, Error> {
    let say = |t: &str| events(message(t));
    let started = Instant::now();
    let task = s.task;
    s.execute(
        Side::Target,
        "creating pgtransit.copy_progress",
        PROGRESS_TABLE,
    )
    .await?;
    let mut units = plan::load(s).await?;
    let slot_exists = !s
        .rows(
            Side::Source,
            "looking for the slot",
            &native::sql::for_task(native::sql::SLOT_STATE, task),
        )
        .await?
        .is_empty();
    let resumed = !units.is_empty();
    let (snapshot, consistent_lsn) = if units.is_empty() {
        if slot_exists {
            return Err(Error::refused(format!(
                "replication slot {} already exists on the source, but the target records no copy \
                 for task {}: another task uses the name, or an earlier run left it. Drop it if it \
                 is a leftover (SELECT pg_drop_replication_slot({})) or give this task another slot name.",
                quote::ident(&task.slot),
                task.name,
                quote::literal(&task.slot)
            )));
        }
        // The publication must exist before the slot: changes are filtered by the
        // publication as it was when they were written.
        let had_publication = publication_exists(s).await?;
        native::create_pub(s).await?;
        // Marked before it exists: a crash right after its creation still leaves it known
        // as this task's.
        let target = s.client(Side::Target).await?;
        crate::marks::claim(target, crate::marks::Kind::Slot, &task.slot, &task.name).await?;
        let exported = slot::create(s, &task.slot, false).await?;
        say(&format!(
            "  [source] slot {} created at {} (snapshot {})",
            quote::ident(&task.slot),
            exported.lsn,
            exported.snapshot
        ));
        let planned = async {
            let units = plan::make(s, &exported, o).await?;
            plan::guard_empty_targets(s, &units, o.force).await?;
            plan::store(s, &units, &exported.lsn).await?;
            Ok::<_, Error>(units)
        }
        .await;
        match planned {
            Ok(u) => units = u,
            Err(e) => {
                // Refused (rows on the target) or failed before anything was recorded:
                // what this run created goes, so that the slot holds no WAL and a rerun
                // starts clean.
                drop(exported);
                undo_setup(s, !had_publication).await;
                return Err(e);
            }
        }
        let lsn = exported.lsn.clone();
        (exported, lsn)
    } else {
        if !slot_exists {
            return Err(Error::refused(format!(
                "the target records a copy for task {} but the slot {} is gone from the source, so the \
                 changes since that copy are lost: start the task over (drop the copied tables' rows \
                 and pgtransit.copy_progress on the target)",
                task.name,
                quote::ident(&task.slot)
            )));
        }
        let consistent = plan::consistent_lsn(s).await?;
        if units.iter().all(|u| u.done) {
            say("  every table is already copied");
            return Ok(CopyReport {
                snapshot_lsn: consistent.clone(),
                consistent_lsn: consistent,
                resumed: true,
                units_copied: 0,
                units_skipped: units.len(),
                rows: 0,
                bytes: 0,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        // The first snapshot died with the crash: the rest is copied from a fresh one, whose
        // position is recorded per unit for the change stream.
        let temp = format!("{}_resume_{}", task.slot, std::process::id());
        let exported = slot::create(s, &temp, true).await?;
        say(&format!(
            "  resuming: {} of {} unit(s) already copied; the rest from a fresh snapshot at {}",
            units.iter().filter(|u| u.done).count(),
            units.len(),
            exported.lsn
        ));
        plan::restart_partial_tables(s, &mut units, &events).await?;
        (exported, consistent)
    };
    let pending: Vec<Unit> = units.iter().filter(|u| !u.done).cloned().collect();
    let skipped = units.len() - pending.len();
    let totals = worker::run(s, snapshot, pending, o.table_jobs.max(1), events.clone()).await?;
    let seqs = native::copy_seq(s, 0).await?;
    say(&format!(
        "  [target] {seqs} sequence(s) set from the source"
    ));
    s.execute(
        Side::Target,
        "recording the end of the copy",
        &format!(
            "UPDATE pgtransit.copy_state SET finished_at = now() WHERE task = {}",
            quote::literal(&task.name)
        ),
    )
    .await?;
    Ok(CopyReport {
        consistent_lsn,
        snapshot_lsn: totals.snapshot_lsn,
        resumed,
        units_copied: totals.units,
        units_skipped: skipped,
        rows: totals.rows,
        bytes: totals.bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Bytes per second as text.
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    format!(
        "{}/s",
        crate::catalog::pretty_bytes((bytes as f64 / secs) as i64)
    )
}
