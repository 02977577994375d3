//! `cdc --dry-run`: how the stream engine sets up its apply and what each source
//! transaction becomes on the target, per side, with the SQL. The statements per table
//! are built from the Relation messages as they arrive, so they are shown in their forms.

use super::{origin_name, SESSION_SETTINGS};
use crate::marks::{self, Kind};
use crate::quote;
use crate::step::{Action, Plan, Side};
use crate::task::Task;

pub fn plan_cdc(task: &Task) -> Plan {
    let origin = origin_name(task);
    let origin_lit = quote::literal(&origin);
    let name = quote::literal(&task.name);
    let actions = vec![
        Action::Inspect {
            side: Side::Target,
            why: "the slot must be this task's (refused when marked as another task's)".into(),
            sql: marks::owner_sql(Kind::Slot, &task.slot),
        },
        Action::Execute {
            side: Side::Target,
            why: "the apply session: replica role (no foreign key checked, only ALWAYS/REPLICA \
                  triggers fire), generic plans, the text settings the decoder expects"
                .into(),
            sql: format!(
                "SET session_replication_role = replica; SET plan_cache_mode = force_generic_plan; {};",
                crate::conn::PINNED_TEXT_SETTINGS
            ),
        },
        Action::Execute {
            side: Side::Target,
            why: "the replication origin, marked as this task's, then taken by the session: it \
                  records how far the source is applied, in the same commit as the rows"
                .into(),
            sql: format!(
                "{}\nSELECT pg_replication_origin_create({origin_lit}) WHERE NOT EXISTS \
                 (SELECT 1 FROM pg_replication_origin WHERE roname = {origin_lit});\n\
                 SELECT pg_replication_origin_session_setup({origin_lit});",
                marks::claim_sql(Kind::Origin, &origin, &task.name)
            ),
        },
        Action::Inspect {
            side: Side::Target,
            why: "where to start: what the origin has applied, else the copy's consistent point, \
                  else the slot's confirmed position (on the source)"
                .into(),
            sql: format!(
                "SELECT pg_replication_origin_progress({origin_lit}, true);\n\
                 SELECT consistent_lsn FROM pgtransit.copy_state WHERE task = {name};\n\
                 SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = {};  -- on the source",
                quote::literal(&task.slot)
            ),
        },
        Action::Execute {
            side: Side::Source,
            why: format!(
                "(replication connection, options {SESSION_SETTINGS}) stream the slot from there; \
                 `messages` from PostgreSQL 14 on, for the switchover's barrier"
            ),
            sql: format!(
                "START_REPLICATION SLOT {} LOGICAL <start> (proto_version '1', publication_names {}, messages 'true');",
                task.slot,
                quote::literal(&task.publication)
            ),
        },
        Action::Execute {
            side: Side::Target,
            why: "per source transaction, kept whole and in order (consecutive ones grouped while a \
                  backlog exists): each table's changes as set statements that must find their \
                  rows; the origin advanced in the same commit"
                .into(),
            sql: "BEGIN;\n\
                  INSERT INTO <table> (<columns>) VALUES (...), (...);\n\
                  UPDATE ONLY <table> AS t SET <columns sent> FROM (VALUES (...), (...)) AS v(...) WHERE t.<key> = v.<key>;\n\
                  DELETE FROM ONLY <table> WHERE (<key>) IN (VALUES (...), (...));\n\
                  TRUNCATE ONLY <tables>;\n\
                  SELECT txid_current(), pg_replication_origin_xact_setup('<end of the source transaction>', to_timestamp(<its commit time>));\n\
                  COMMIT;"
                .into(),
        },
        Action::Execute {
            side: Side::Source,
            why: "(replication connection) acknowledge what is committed on the target, so the \
                  slot can let go of that WAL"
                .into(),
            sql: "Standby status update: flush = <the origin's position>".into(),
        },
    ];
    Plan {
        step: "cdc",
        actions,
    }
}
