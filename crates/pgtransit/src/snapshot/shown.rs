//! `init-data --dry-run`: the stream engine's copy as a plan, per side, with the SQL it
//! runs. The units (tables, or ctid ranges of big ones) are decided at run time from the
//! catalog inside the exported snapshot, so each unit's statements are shown once, with
//! the unit's place marked.

use super::plan::LARGE_OBJECTS;
use super::{CopyOptions, PROGRESS_TABLE};
use crate::native::{self, sql};
use crate::quote;
use crate::step::{Action, Plan, Side};
use crate::task::Task;

pub fn plan_init_data(task: &Task, o: &CopyOptions) -> Plan {
    let slot = quote::ident(&task.slot);
    let name = quote::literal(&task.name);
    let mut actions = vec![
        Action::Execute {
            side: Side::Target,
            why: "the copy's bookkeeping: one row per unit, marked done with its rows".into(),
            sql: PROGRESS_TABLE.into(),
        },
        Action::Inspect {
            side: Side::Target,
            why: "a copy already recorded for this task is resumed (its slot must still exist)"
                .into(),
            sql: format!(
                "SELECT relation, chunk, done FROM pgtransit.copy_progress WHERE task = {name};"
            ),
        },
        Action::Inspect {
            side: Side::Source,
            why: "the slot must not exist yet (refused: it would be another task's, or a leftover)"
                .into(),
            sql: sql::for_task(sql::SLOT_STATE, task),
        },
    ];
    // The publication exists before the slot: changes are filtered by the publication as
    // it was when they were written.
    actions.extend(native::plan_create_pub(task).actions);
    actions.extend([
        Action::Execute {
            side: Side::Target,
            why: "record the slot as this task's before it exists (terminate drops only marked slots)"
                .into(),
            sql: crate::marks::claim_sql(crate::marks::Kind::Slot, &task.slot, &task.name),
        },
        Action::Execute {
            side: Side::Source,
            why: "(replication connection) the slot, exporting the snapshot the copy reads; the \
                  change stream starts at its consistent point"
                .into(),
            sql: format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput EXPORT_SNAPSHOT"),
        },
        Action::Inspect {
            side: Side::Source,
            why: format!(
                "the units: every selected table, split into ctid ranges of about {} MB when larger",
                o.split_bytes / (1024 * 1024)
            ),
            sql: sql::for_task(super::plan::COPY_UNITS, task),
        },
        Action::Inspect {
            side: Side::Target,
            why: if o.force {
                "each target table's rows (--force: the source rows are added to them)".into()
            } else {
                "each target table must be empty (refused otherwise; --force adds to it)".into()
            },
            sql: "SELECT EXISTS (SELECT 1 FROM <target table>);".into(),
        },
        Action::Execute {
            side: Side::Target,
            why: "record the units and the slot's consistent point".into(),
            sql: format!(
                "INSERT INTO pgtransit.copy_progress (task, relation, chunk, chunks, target_name, columns, \
                 binary_copy, has_key, first_page, end_page, bytes_planned) VALUES ({name}, ...);  -- one row per unit\n\
                 INSERT INTO pgtransit.copy_state (task, slot, consistent_lsn) VALUES ({name}, {}, '<consistent point>');",
                quote::literal(&task.slot)
            ),
        },
        Action::Execute {
            side: Side::Source,
            why: format!(
                "in each of {} copy worker(s): the exported snapshot, read-only",
                o.table_jobs.max(1)
            ),
            sql: format!(
                "{};\nBEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSET TRANSACTION SNAPSHOT '<exported snapshot>';",
                crate::conn::PINNED_TEXT_SETTINGS
            ),
        },
        Action::Execute {
            side: Side::Source,
            why: "per unit: its rows (binary when every column allows it); a range of a split table \
                  reads its pages only"
                .into(),
            sql: "COPY <table> (<columns>) TO STDOUT (FORMAT binary);\n\
                  COPY (SELECT <columns> FROM ONLY <table> WHERE ctid >= '(<first page>,0)'::tid \
                  AND ctid < '(<end page>,0)'::tid) TO STDOUT (FORMAT binary);"
                .into(),
        },
        Action::Execute {
            side: Side::Target,
            why: "per unit, in one transaction: the rows (a whole table emptied first and loaded \
                  frozen), then the unit marked done, so a crash neither loses nor repeats it"
                .into(),
            sql: "BEGIN;\nTRUNCATE ONLY <table>;  -- a whole table into itself only\n\
                  COPY <table> (<columns>) FROM STDIN (FORMAT binary, FREEZE);\n\
                  UPDATE pgtransit.copy_progress SET done = true, snapshot_lsn = '<slot position>', \
                  snapshot = '<snapshot>', rows_copied = <rows>, copied_at = now() \
                  WHERE task = <task> AND relation = <table> AND chunk = <chunk>;\nCOMMIT;"
                .into(),
        },
        Action::Execute {
            side: Side::Target,
            why: format!(
                "large objects ({LARGE_OBJECTS}), when selected: in one target transaction, each \
                 created and written 1 MiB at a time from lo_get on the source (in the snapshot)"
            ),
            sql: "SELECT oid FROM pg_largeobject_metadata ORDER BY oid;  -- on the source\n\
                  SELECT lo_create(<oid>);\nSELECT lo_put(<oid>, <offset>, <piece>);"
                .into(),
        },
    ]);
    actions.extend(native::plan_copy_seq(task, 0).actions);
    actions.push(Action::Execute {
        side: Side::Target,
        why: "record the end of the copy".into(),
        sql: format!("UPDATE pgtransit.copy_state SET finished_at = now() WHERE task = {name};"),
    });
    Plan {
        step: "init-data",
        actions,
    }
}
