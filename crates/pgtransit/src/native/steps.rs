//! create-pub, refresh, create-sub, copy-seq, drop-sub, drop-pub.

use super::sql::{self, Value};
use crate::conn::ConnSpec;
use crate::error::Error;
use crate::quote;
use crate::schema;
use crate::step::Session;
use crate::step::Side;
use crate::step::{Action, Plan};

/// Who made an object, from its comment.
enum Ownership {
    Missing,
    Ours,
    /// Made by another pgtransit task: the comment says which.
    OtherTask(String),
    /// No pgtransit comment (made by hand, by Pigsty's scripts, ...).
    Unmarked,
}

fn ownership(note: Option<String>, ours: &str) -> Ownership {
    match note {
        None => Ownership::Missing,
        Some(n) if n == ours => Ownership::Ours,
        Some(n) if n.starts_with("created by pgtransit") => Ownership::OtherTask(n),
        Some(_) => Ownership::Unmarked,
    }
}

async fn publication(s: &mut Session<'_>) -> Result<Ownership, Error> {
    let rows = s
        .rows(
            Side::Source,
            "looking for the publication",
            &sql::for_task(sql::PUBLICATION_STATE, s.task),
        )
        .await?;
    Ok(ownership(
        rows.first().map(|r| r.get(1)),
        &sql::owner_note(s.task),
    ))
}

async fn subscription(s: &mut Session<'_>) -> Result<(Ownership, Option<u32>), Error> {
    let rows = s
        .rows(
            Side::Target,
            "looking for the subscription",
            &sql::for_task(sql::SUBSCRIPTION_STATE, s.task),
        )
        .await?;
    let oid = rows.first().map(|r| r.get::<_, u32>(0));
    Ok((
        ownership(rows.first().map(|r| r.get(2)), &sql::owner_note(s.task)),
        oid,
    ))
}

pub fn plan_create_pub(task: &crate::task::Task) -> Plan {
    Plan {
        step: "create-pub",
        actions: vec![
            Action::Inspect {
                side: Side::Source,
                why: "does the publication exist, and whose is it".into(),
                sql: sql::for_task(sql::PUBLICATION_STATE, task),
            },
            Action::Inspect {
                side: Side::Target,
                why: "how the target partitions its tables (target_partitions)".into(),
                sql: sql::for_task(sql::TARGET_PARTITIONS, task),
            },
            Action::Generate {
                from: Side::Source,
                to: Side::Source,
                why:
                    "create the publication for the selected tables (partitioned ones leaf by leaf \
                      when the target partitions them the same way)"
                        .into(),
                sql: sql::for_task(sql::CREATE_PUB, task),
            },
        ],
    }
}

pub async fn create_pub(s: &mut Session<'_>) -> Result<(), Error> {
    let name = s.task.publication.clone();
    let who = match publication(s).await? {
        Ownership::Missing => None,
        Ownership::Ours => {
            s.say(&format!(
                "  publication {} already exists (created by this task): nothing to do; `refresh` adds new tables",
                quote::ident(&name)
            ));
            return Ok(());
        }
        Ownership::OtherTask(n) => Some(format!("it was {n}")),
        Ownership::Unmarked => Some("it was not created by pgtransit".to_string()),
    };
    if let Some(who) = who {
        return Err(Error::refused(format!(
            "publication {} already exists on the source and {who}. Two migrations of one source \
             must not share names: give this task its own publication (`options.publication`, or \
             `pub_name` in a Pigsty task file), or drop the old one if it is a leftover: DROP PUBLICATION {};",
            quote::ident(&name),
            quote::ident(&name)
        )));
    }
    refuse_without_identity(s).await?;
    let partitions = target_partitions(s).await?;
    let stmts = s
        .generate(
            Side::Source,
            "building CREATE PUBLICATION",
            &sql::for_task_with(
                sql::CREATE_PUB,
                s.task,
                &[("target_partitions", Value::Text(partitions))],
            ),
        )
        .await?;
    s.run_statements(Side::Source, &stmts, str::to_string).await
}

/// Whatever the task's steps (a precheck turned off included): a table without a usable
/// replica identity is never published, because from then on every UPDATE and DELETE of
/// the application on it fails on the source. Nor, for the native engine, a FULL-identity
/// table its subscriber cannot match. The check's error findings say which and the fix.
async fn refuse_without_identity(s: &mut Session<'_>) -> Result<(), Error> {
    let task = s.task;
    let source = s.client(Side::Source).await?;
    let report = crate::check::run(task, source, None, &[crate::check::Scope::ReplicaIdentity])
        .await
        .map_err(|e| crate::error::sql_error("checking replica identities (on the source)", e))?;
    let errors: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.severity == crate::check::Severity::Error)
        .map(|f| {
            format!(
                "  {}: {}{}",
                f.object.as_deref().unwrap_or("?"),
                f.message,
                f.fix
                    .as_ref()
                    .map(|x| format!("\n    fix: {x}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    Err(Error::refused(format!(
        "not publishing: {} table(s) cannot be replicated as they are (their UPDATEs and DELETEs \
         would fail on the source once published, or could not be applied):\n{}\n\
         `pgtransit check replica-identity --fix --apply` applies the fixes",
        errors.len(),
        errors.join("\n")
    )))
}

/// The target's partitions as `parent>child` lines (none when the task has no target).
async fn target_partitions(s: &mut Session<'_>) -> Result<String, Error> {
    if s.task.target.is_none() {
        return Ok(String::new());
    }
    let rows = s
        .rows(
            Side::Target,
            "reading how the target partitions its tables",
            sql::TARGET_PARTITIONS,
        )
        .await?;
    Ok(rows
        .first()
        .and_then(|r| r.get::<_, Option<String>>(0))
        .unwrap_or_default())
}

pub fn plan_refresh(task: &crate::task::Task) -> Plan {
    Plan {
        step: "refresh",
        actions: vec![
            Action::Inspect {
                side: Side::Source,
                why: "selected tables (those missing on the target get their schema first)".into(),
                sql: sql::for_task(sql::SELECTED_TABLES, task),
            },
            Action::Program {
                why: "for tables missing on the target: pg_dump --schema-only --table=... | pg_restore (pre-data and keys)".into(),
                command: "pg_dump --schema-only --format=custom --table=<each missing table> ... ; pg_restore --use-list=pre-data.list ...".into(),
            },
            Action::Generate {
                from: Side::Source,
                to: Side::Source,
                why: "add the selected tables the publication lacks".into(),
                sql: sql::for_task(sql::REFRESH_PUB, task),
            },
            Action::Execute {
                side: Side::Target,
                why: "let the subscription pick them up (their initial copy starts)".into(),
                sql: sql::for_task(sql::REFRESH_SUB, task),
            },
        ],
    }
}

pub async fn refresh(s: &mut Session<'_>) -> Result<(), Error> {
    let rows = s
        .rows(
            Side::Source,
            "listing selected tables",
            &sql::for_task(sql::SELECTED_TABLES, s.task),
        )
        .await?;
    let mut missing = Vec::new();
    for r in &rows {
        let persistence: String = r.get("persistence");
        if persistence != "p" || r.get::<_, bool>("extension_member") {
            continue;
        }
        let name = quote::qualified(r.get("nspname"), r.get("relname"));
        let exists = s
            .client(Side::Target)
            .await?
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .await
            .map_err(|e| crate::error::sql_error("looking for a table on the target", e))?
            .get::<_, bool>(0);
        if !exists {
            missing.push((r.get::<_, String>("nspname"), r.get::<_, String>("relname")));
        }
    }
    if !missing.is_empty() {
        s.say(&format!(
            "  {} table(s) are new on the source; creating them on the target",
            missing.len()
        ));
        schema::copy_tables(s, &missing).await?;
    }
    let stmts = s
        .generate(
            Side::Source,
            "finding tables the publication lacks",
            &sql::for_task(sql::REFRESH_PUB, s.task),
        )
        .await?;
    if stmts.is_empty() {
        s.say("  the publication already has every selected table");
    }
    s.run_statements(Side::Source, &stmts, str::to_string)
        .await?;
    let refresh = vec![without_comments(&sql::for_task(sql::REFRESH_SUB, s.task))];
    s.run_statements(Side::Target, &refresh, str::to_string)
        .await
}

pub fn plan_create_sub(task: &crate::task::Task) -> Plan {
    plan_create_sub_with(task, true)
}

/// The plan of [`create_sub_without_copy`].
pub fn plan_create_sub_without_copy(task: &crate::task::Task) -> Plan {
    plan_create_sub_with(task, false)
}

fn create_sub_sql(task: &crate::task::Task, src_version: &str, copy_data: bool) -> String {
    sql::for_task_with(
        sql::CREATE_SUB,
        task,
        &[
            ("src_version", Value::Raw(src_version.into())),
            ("copy_data", Value::Raw(copy_data.to_string())),
        ],
    )
}

fn plan_create_sub_with(task: &crate::task::Task, copy_data: bool) -> Plan {
    Plan {
        step: "create-sub",
        actions: vec![
            Action::Inspect {
                side: Side::Target,
                why: "does the subscription exist, and whose is it".into(),
                sql: sql::for_task(sql::SUBSCRIPTION_STATE, task),
            },
            Action::Inspect {
                side: Side::Source,
                why:
                    "the publication must exist; the slot must not (another task's, or a leftover)"
                        .into(),
                sql: format!(
                    "{}\n;\n{}",
                    sql::for_task(sql::PUBLICATION_STATE, task).trim(),
                    sql::for_task(sql::SLOT_STATE, task).trim()
                ),
            },
            Action::Generate {
                from: Side::Target,
                to: Side::Target,
                why: "create the subscription (src_version = the source's server_version_num)"
                    .into(),
                sql: mask_sub_conn(
                    &create_sub_sql(task, ":src_version", copy_data),
                    &task.sub_conn,
                ),
            },
        ],
    }
}

/// `text` with the subscription's connection string shown without its password.
fn mask_sub_conn(text: &str, sub_conn: &str) -> String {
    let masked = ConnSpec::mask_string(sub_conn);
    if masked == sub_conn {
        return text.to_string();
    }
    text.replace(&quote::literal(sub_conn), &quote::literal(&masked))
        .replace(sub_conn, &masked)
}

pub async fn create_sub(s: &mut Session<'_>) -> Result<(), Error> {
    create_sub_with(s, true).await
}

/// The subscription without its initial copy: it streams from the slot's creation on. A
/// switchover's reverse replication starts so, in the fenced window where both sides are
/// equal.
pub async fn create_sub_without_copy(s: &mut Session<'_>) -> Result<(), Error> {
    create_sub_with(s, false).await
}

async fn create_sub_with(s: &mut Session<'_>, copy_data: bool) -> Result<(), Error> {
    let task = s.task;
    match subscription(s).await?.0 {
        Ownership::Ours => {
            s.say(&format!(
                "  subscription {} already exists (created by this task): nothing to do",
                quote::ident(&task.subscription)
            ));
            return Ok(());
        }
        Ownership::Missing => {}
        other => {
            let who = match other {
                Ownership::OtherTask(n) => format!("it was {n}"),
                _ => "it was not created by pgtransit".into(),
            };
            return Err(Error::refused(format!(
                "subscription {} already exists on the target and {who}; give this task its own \
                 name (`options.subscription`, or `sub_name` in a Pigsty task file) or drop it with drop-sub",
                quote::ident(&task.subscription)
            )));
        }
    }
    if matches!(publication(s).await?, Ownership::Missing) {
        return Err(Error::failed(format!(
            "publication {} does not exist on the source: run create-pub first",
            quote::ident(&task.publication)
        )));
    }
    let slot = s
        .rows(
            Side::Source,
            "looking for the slot",
            &sql::for_task(sql::SLOT_STATE, task),
        )
        .await?;
    if !slot.is_empty() {
        return Err(Error::refused(format!(
            "replication slot {} already exists on the source: another migration of this database \
             uses the same name, or an earlier run left it. If it is a leftover, drop it on the source: \
             SELECT pg_drop_replication_slot({}); otherwise give this task its own subscription and slot \
             names (`options.subscription` / `options.slot`, or `sub_name` in a Pigsty task file).",
            quote::ident(&task.slot),
            quote::literal(&task.slot)
        )));
    }
    // CREATE SUBSCRIPTION creates the slot: marked as this task's first.
    let target = s.client(Side::Target).await?;
    crate::marks::claim(target, crate::marks::Kind::Slot, &task.slot, &task.name).await?;
    let version = s.version(Side::Source).await?;
    let query = create_sub_sql(task, &version.to_string(), copy_data);
    let stmts = s
        .generate(Side::Target, "building CREATE SUBSCRIPTION", &query)
        .await?;
    let sub_conn = task.sub_conn.clone();
    s.run_statements(Side::Target, &stmts, |t| mask_sub_conn(t, &sub_conn))
        .await
        .map_err(|mut e| {
            // The target answers 08006 when *its* connection to the publisher fails; our
            // own session is fine, so this is a failure to report, not a lost connection.
            if e.code() == Some(&tokio_postgres::error::SqlState::CONNECTION_FAILURE) {
                e.kind = crate::error::ErrorKind::Failed;
                e.message.push_str(&format!(
                    "\n  the target server itself connects to the source with sub_conn ({}): the source's \
                     pg_hba.conf must accept the target's address for user {} (database and replication), \
                     and the password must be in the target server's ~postgres/.pgpass or in sub_conn.",
                    ConnSpec::mask_string(&sub_conn),
                    task.replication_user
                ));
            }
            e
        })
}

pub fn plan_copy_seq(task: &crate::task::Task, shift: i64) -> Plan {
    Plan {
        step: "copy-seq",
        actions: vec![Action::Generate {
            from: Side::Source,
            to: Side::Target,
            why: format!(
                "set every sequence to the source's value shifted by {shift} in its own direction"
            ),
            sql: sql::for_task_with(
                sql::COPY_SEQ,
                task,
                &[("shift", Value::Raw(shift.to_string()))],
            ),
        }],
    }
}

pub async fn copy_seq(s: &mut Session<'_>, shift: i64) -> Result<usize, Error> {
    let query = sql::for_task_with(
        sql::COPY_SEQ,
        s.task,
        &[("shift", Value::Raw(shift.to_string()))],
    );
    let stmts = s
        .generate(Side::Source, "reading the source sequences", &query)
        .await?;
    let n = stmts
        .iter()
        .filter(|l| l.starts_with("SELECT setval"))
        .count();
    s.run_statements(Side::Target, &stmts, str::to_string)
        .await?;
    Ok(n)
}

/// What drop-sub did, and what it had to leave.
#[derive(Debug, Default)]
pub struct DropSubOutcome {
    pub subscription_dropped: bool,
    pub slots_dropped: Vec<String>,
    /// When the source could not be reached: the slots left there and the SQL to drop them.
    pub left_on_source: Option<(Vec<String>, String)>,
}

pub fn plan_drop_sub(task: &crate::task::Task) -> Plan {
    Plan {
        step: "drop-sub",
        actions: vec![
            Action::Generate {
                from: Side::Target,
                to: Side::Target,
                why: "disable, detach from the slot and drop the subscription (needs no source)".into(),
                sql: sql::for_task(sql::DROP_SUB, task),
            },
            Action::Execute {
                side: Side::Source,
                why: "drop the slot and any table-sync slots (suboid = the subscription's oid); printed instead when the source is unreachable".into(),
                sql: sql::for_task(sql::DROP_SLOT, task),
            },
        ],
    }
}

pub async fn drop_sub(s: &mut Session<'_>) -> Result<DropSubOutcome, Error> {
    let task = s.task;
    let (owner, oid) = subscription(s).await?;
    match &owner {
        Ownership::OtherTask(n) => {
            return Err(Error::refused(format!(
                "subscription {} on the target was {n}, not by this task: not dropping it",
                quote::ident(&task.subscription)
            )))
        }
        Ownership::Unmarked => {
            return Err(Error::refused(format!(
                "subscription {0} on the target was not created by pgtransit (it has no pgtransit \
                 comment): not dropping it; if it is this migration's, drop it by hand: \
                 DROP SUBSCRIPTION {0};",
                quote::ident(&task.subscription)
            )))
        }
        Ownership::Ours | Ownership::Missing => {}
    }
    // The slot goes with the task's subscription; without one, only if its mark says it
    // is this task's (a slot of the same name may be someone else's).
    let slot_mark = {
        let target = s.client(Side::Target).await?;
        crate::marks::owner(target, crate::marks::Kind::Slot, &task.slot).await?
    };
    let slot_ours = matches!(owner, Ownership::Ours) || slot_mark.as_deref() == Some(&task.name);
    let stmts = s
        .generate(
            Side::Target,
            "building DROP SUBSCRIPTION",
            &sql::for_task(sql::DROP_SUB, task),
        )
        .await?;
    if stmts.is_empty() {
        s.say(&format!(
            "  subscription {} does not exist on the target",
            quote::ident(&task.subscription)
        ));
    }
    s.run_statements(Side::Target, &stmts, str::to_string)
        .await?;
    let suboid = oid.map(|o| o.to_string()).unwrap_or_default();
    let drop_slot = sql::for_task_with(
        sql::DROP_SLOT,
        task,
        &[("suboid", Value::Text(suboid.clone()))],
    );
    if !slot_ours {
        s.say(&format!(
            "  replication slot {} kept: it is not marked as this task's",
            quote::ident(&task.slot)
        ));
        return Ok(DropSubOutcome {
            subscription_dropped: false,
            slots_dropped: vec![],
            left_on_source: None,
        });
    }
    let pattern = format!("pg\\_{suboid}\\_sync\\_%");
    let slots_query = "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name = $1 OR slot_name LIKE $2 ORDER BY 1";
    let source = match s.client(Side::Source).await {
        Ok(c) => c,
        Err(e) => {
            let mut left = vec![task.slot.clone()];
            if !suboid.is_empty() {
                left.push(format!(
                    "pg_{suboid}_sync_* (table-sync slots, if a copy was running)"
                ));
            }
            s.say(&format!(
                "  the source cannot be reached ({})",
                crate::step::first_line(&e.message)
            ));
            return Ok(DropSubOutcome {
                subscription_dropped: oid.is_some(),
                slots_dropped: vec![],
                left_on_source: Some((left, drop_slot)),
            });
        }
    };
    let before: Vec<String> = source
        .query(slots_query, &[&task.slot, &pattern])
        .await
        .map_err(|e| crate::error::sql_error("listing slots on the source", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    s.execute(Side::Source, "dropping the slot", &drop_slot)
        .await?;
    if let Ok(target) = s.client(Side::Target).await {
        crate::marks::release(target, crate::marks::Kind::Slot, &task.slot).await?;
    }
    for slot in &before {
        s.say(&format!(
            "  [source] dropped replication slot {}",
            quote::ident(slot)
        ));
    }
    Ok(DropSubOutcome {
        subscription_dropped: oid.is_some(),
        slots_dropped: before,
        left_on_source: None,
    })
}

pub fn plan_drop_pub(task: &crate::task::Task) -> Plan {
    Plan {
        step: "drop-pub",
        actions: vec![Action::Execute {
            side: Side::Source,
            why: "drop the publication".into(),
            sql: sql::for_task(sql::DROP_PUB, task),
        }],
    }
}

pub async fn drop_pub(s: &mut Session<'_>) -> Result<bool, Error> {
    let task = s.task;
    match publication(s).await? {
        Ownership::Missing => {
            s.say(&format!(
                "  publication {} does not exist on the source",
                quote::ident(&task.publication)
            ));
            Ok(false)
        }
        Ownership::OtherTask(n) => Err(Error::refused(format!(
            "publication {} on the source was {n}, not by this task: not dropping it",
            quote::ident(&task.publication)
        ))),
        Ownership::Unmarked => Err(Error::refused(format!(
            "publication {0} on the source was not created by pgtransit (it has no pgtransit \
             comment): not dropping it; if it is this migration's, drop it by hand: \
             DROP PUBLICATION {0};",
            quote::ident(&task.publication)
        ))),
        Ownership::Ours => {
            let stmt = without_comments(&sql::for_task(sql::DROP_PUB, task));
            s.run_statements(Side::Source, &[stmt], str::to_string)
                .await?;
            Ok(true)
        }
    }
}

/// A fixed SQL file's statement without its comment lines (shown as the statement itself).
fn without_comments(sql: &str) -> String {
    sql.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}
