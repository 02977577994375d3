//! Cleanup of everything a task created on the servers, for `pgtransit terminate`: the
//! slot, the publication, the subscription, the replication origin and the copy's
//! bookkeeping. Each drop is idempotent and reported; what cannot be reached is returned
//! with the exact SQL that drops it, so a later run (or the user) can finish.

use crate::check::Side;
use crate::error::Error;
use crate::marks::{self, Kind};
use crate::native::{self};
use crate::quote::{self, literal};
use crate::state::Leftover;
use crate::step::Session;
use crate::task::Engine;

#[derive(Debug, Default, serde::Serialize)]
pub struct Cleanup {
    /// What was dropped, one line each.
    pub dropped: Vec<String>,
    /// What was already gone.
    pub absent: Vec<String>,
    /// What could not be dropped now.
    pub left: Vec<Leftover>,
    /// What has the task's name but is not the task's (no mark, or another task's): kept.
    pub kept: Vec<String>,
}

/// Whether an object is the task's, from its mark.
enum Owned {
    Ours,
    /// Absent, or present without a mark: nothing says it is the task's.
    NotMarked,
    Other(String),
}

impl Owned {
    fn from_mark(mark: Option<String>, task: &str) -> Owned {
        match mark {
            Some(t) if t == task => Owned::Ours,
            Some(t) => Owned::Other(t),
            None => Owned::NotMarked,
        }
    }

    fn why_kept(&self) -> String {
        match self {
            Owned::Other(t) => format!("marked as task {t}'s"),
            _ => "not marked as this task's: made by hand or by another tool".into(),
        }
    }
}

/// The slot's owner from its mark; a slot the copy's bookkeeping records for the task is
/// the task's too (tasks created before slots were marked).
async fn slot_owner(s: &mut Session<'_>) -> Result<Owned, Error> {
    let (task, slot) = (s.task.name.clone(), s.task.slot.clone());
    let target = s.client(Side::Target).await?;
    let owned = Owned::from_mark(marks::owner(target, Kind::Slot, &slot).await?, &task);
    if !matches!(owned, Owned::NotMarked) {
        return Ok(owned);
    }
    let has_bookkeeping: bool = target
        .query_one(
            "SELECT to_regclass('pgtransit.copy_state') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| crate::error::sql_error("looking for the copy's bookkeeping", e))?
        .get(0);
    let recorded = has_bookkeeping
        && target
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pgtransit.copy_state WHERE task = $1 AND slot = $2)",
                &[&task, &slot],
            )
            .await
            .map_err(|e| crate::error::sql_error("reading the copy's bookkeeping", e))?
            .get::<_, bool>(0);
    Ok(if recorded {
        Owned::Ours
    } else {
        Owned::NotMarked
    })
}

/// `terminate --dry-run`: what `cleanup` does, per side, with its guards. Each object goes
/// only when it is the task's: marked as such on the target (slot, origin), or carrying the
/// task's comment (publication, subscription); anything else under the task's names is
/// kept and named.
pub fn plan(task: &crate::task::Task) -> crate::step::Plan {
    use crate::step::{Action, Plan};
    let origin = crate::stream::origin_name(task);
    let name = literal(&task.name);
    let mut actions = Vec::new();
    if task.engine == Engine::Native {
        // drop-sub's own plan: the guard, the subscription, its slots on the source.
        actions.extend(native::plan_drop_sub(task).actions);
    } else {
        actions.push(Action::Inspect {
            side: Side::Target,
            why: "whose the slot is: its mark, else the copy's bookkeeping naming it for this task"
                .into(),
            sql: format!(
                "{}\nSELECT EXISTS (SELECT 1 FROM pgtransit.copy_state WHERE task = {name} AND slot = {});",
                marks::owner_sql(Kind::Slot, &task.slot),
                literal(&task.slot)
            ),
        });
    }
    actions.extend([
        Action::Inspect {
            side: Side::Target,
            why: "whose the replication origin is (dropped only when marked as this task's)".into(),
            sql: marks::owner_sql(Kind::Origin, &origin),
        },
        Action::Execute {
            side: Side::Target,
            why: "the origin, and its mark".into(),
            sql: format!(
                "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = {0};\n\
                 DELETE FROM pgtransit.owned_objects WHERE kind = 'origin' AND name = {0};",
                literal(&origin)
            ),
        },
        Action::Execute {
            side: Side::Target,
            why: "the copy's bookkeeping of this task".into(),
            sql: format!(
                "DELETE FROM pgtransit.copy_progress WHERE task = {name};\nDELETE FROM pgtransit.copy_state WHERE task = {name};"
            ),
        },
    ]);
    if task.engine == Engine::Stream {
        actions.push(Action::Execute {
            side: Side::Source,
            why: "the slot, when it is this task's (after ending the walsender that holds it), and \
                  its mark on the target"
                .into(),
            sql: format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = {0} AND active_pid IS NOT NULL;\n\
                 SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {0};",
                literal(&task.slot)
            ),
        });
    }
    actions.push(Action::Inspect {
        side: Side::Source,
        why: "whose the publication is (dropped only with this task's comment)".into(),
        sql: crate::native::sql::for_task(crate::native::sql::PUBLICATION_STATE, task),
    });
    actions.push(Action::Execute {
        side: Side::Source,
        why: "the publication".into(),
        sql: format!(
            "DROP PUBLICATION IF EXISTS {};",
            quote::ident(&task.publication)
        ),
    });
    actions.push(Action::Execute {
        side: Side::Target,
        why: "the pgtransit schema, once no task's bookkeeping or mark is left in it".into(),
        sql: "DROP SCHEMA IF EXISTS pgtransit CASCADE;".into(),
    });
    Plan {
        step: "terminate",
        actions,
    }
}

/// Drop the task's objects on both sides; never stops at an error (a server down, a
/// missing grant, an origin in use): what could not be dropped is returned with its SQL.
pub async fn cleanup(s: &mut Session<'_>) -> Result<Cleanup, Error> {
    let task = s.task;
    let mut c = Cleanup::default();
    let slot_sql = format!(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = {0} AND active_pid IS NOT NULL;\n\
         SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {0};",
        literal(&task.slot)
    );
    let pub_sql = format!(
        "DROP PUBLICATION IF EXISTS {};",
        quote::ident(&task.publication)
    );
    let sub_sql = format!(
        "ALTER SUBSCRIPTION {0} DISABLE; ALTER SUBSCRIPTION {0} SET (slot_name = NONE); DROP SUBSCRIPTION IF EXISTS {0};",
        quote::ident(&task.subscription)
    );
    let origin = crate::stream::origin_name(task);
    let origin_sql = format!(
        "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = {};",
        literal(&origin)
    );

    // Whose the slot is is read on the target before its bookkeeping goes.
    let slot_owned = if task.engine == Engine::Stream {
        Some(slot_owner(s).await)
    } else {
        None
    };

    // Target first: a subscription must let go of the slot before the slot can go.
    match s.client(Side::Target).await {
        Ok(_) => {
            if task.engine == Engine::Native {
                let mut failed = false;
                let out = match native::drop_sub(s).await {
                    Ok(out) => out,
                    // Not the task's (no mark, or another task's): kept, not a leftover.
                    Err(e) if e.kind == crate::error::ErrorKind::Refused => {
                        failed = true;
                        c.kept.push(format!(
                            "[target] subscription {} ({})",
                            task.subscription,
                            crate::step::first_line(&e.message)
                        ));
                        Default::default()
                    }
                    Err(e) => {
                        failed = true;
                        c.left.push(Leftover {
                            side: "target".into(),
                            what: format!(
                                "subscription {} ({})",
                                task.subscription,
                                crate::step::first_line(&e.message)
                            ),
                            sql: sub_sql.clone(),
                        });
                        Default::default()
                    }
                };
                if out.subscription_dropped {
                    c.dropped
                        .push(format!("[target] subscription {}", task.subscription));
                } else if !failed {
                    c.absent
                        .push(format!("[target] subscription {}", task.subscription));
                }
                for slot in &out.slots_dropped {
                    c.dropped.push(format!("[source] replication slot {slot}"));
                }
                if let Some((names, sql)) = out.left_on_source {
                    c.left.push(Leftover {
                        side: "source".into(),
                        what: format!("replication slot(s) {}", names.join(", ")),
                        sql,
                    });
                }
            }
            if let Err(e) = drop_origin(s, &origin, &mut c).await {
                c.left.push(Leftover {
                    side: "target".into(),
                    what: format!(
                        "replication origin {origin} ({})",
                        crate::step::first_line(&e.message)
                    ),
                    sql: origin_sql.clone(),
                });
            }
            if let Err(e) = drop_bookkeeping(s, &mut c).await {
                c.left.push(Leftover {
                    side: "target".into(),
                    what: format!(
                        "copy bookkeeping of task {} ({})",
                        task.name,
                        crate::step::first_line(&e.message)
                    ),
                    sql: format!(
                        "DELETE FROM pgtransit.copy_progress WHERE task = {0}; DELETE FROM pgtransit.copy_state WHERE task = {0};",
                        literal(&task.name)
                    ),
                });
            }
        }
        Err(e) => {
            let why = crate::step::first_line(&e.message).to_string();
            if task.engine == Engine::Native {
                c.left.push(Leftover {
                    side: "target".into(),
                    what: format!("subscription {} ({why})", task.subscription),
                    sql: sub_sql.clone(),
                });
            }
            c.left.push(Leftover {
                side: "target".into(),
                what: format!("replication origin {origin} ({why})"),
                sql: origin_sql,
            });
        }
    }

    match s.client(Side::Source).await {
        Ok(_) => {
            match slot_owned {
                Some(Ok(Owned::Ours)) => match drop_slot(s, &mut c).await {
                    Ok(()) => {
                        if let Ok(target) = s.client(Side::Target).await {
                            let _ = marks::release(target, Kind::Slot, &task.slot).await;
                        }
                    }
                    Err(e) => c.left.push(Leftover {
                        side: "source".into(),
                        what: format!(
                            "replication slot {} ({})",
                            task.slot,
                            crate::step::first_line(&e.message)
                        ),
                        sql: slot_sql.clone(),
                    }),
                },
                Some(Ok(other)) => keep_if_present(s, &mut c, &task.slot, &other).await,
                Some(Err(e)) => c.left.push(Leftover {
                    side: "source".into(),
                    what: format!(
                        "replication slot {} (whose it is could not be read on the target: {})",
                        task.slot,
                        crate::step::first_line(&e.message)
                    ),
                    sql: slot_sql.clone(),
                }),
                None => {}
            }
            if let Err(e) = drop_publication(s, &mut c).await {
                c.left.push(Leftover {
                    side: "source".into(),
                    what: format!(
                        "publication {} ({})",
                        task.publication,
                        crate::step::first_line(&e.message)
                    ),
                    sql: pub_sql.clone(),
                });
            }
        }
        Err(e) => {
            let why = crate::step::first_line(&e.message).to_string();
            if task.engine == Engine::Stream {
                c.left.push(Leftover {
                    side: "source".into(),
                    what: format!("replication slot {} ({why})", task.slot),
                    sql: slot_sql,
                });
            }
            c.left.push(Leftover {
                side: "source".into(),
                what: format!("publication {} ({why})", task.publication),
                sql: pub_sql,
            });
        }
    }
    // Last: the slot's mark was forgotten after the slot went.
    if let Err(e) = drop_schema_if_unused(s, &mut c).await {
        tracing::debug!("schema pgtransit kept: {}", e.message);
    }
    Ok(c)
}

/// The task's replication origin on the target, if its mark says it is the task's.
async fn drop_origin(s: &mut Session<'_>, origin: &str, c: &mut Cleanup) -> Result<(), Error> {
    let task = s.task.name.clone();
    let target = s.client(Side::Target).await?;
    let owned = Owned::from_mark(marks::owner(target, Kind::Origin, origin).await?, &task);
    if !matches!(owned, Owned::Ours) {
        let exists: bool = target
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
                &[&origin],
            )
            .await
            .map_err(|e| {
                crate::error::sql_error("reading the replication origins (on the target)", e)
            })?
            .get(0);
        let line = format!("[target] replication origin {origin}");
        if exists {
            c.kept.push(format!("{line} ({})", owned.why_kept()));
        } else {
            c.absent.push(line);
        }
        return Ok(());
    }
    let n = target
        .execute(
            "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = $1",
            &[&origin],
        )
        .await
        .map_err(|e| crate::error::sql_error("dropping the replication origin (on the target)", e))?;
    marks::release(target, Kind::Origin, origin).await?;
    let line = format!("[target] replication origin {origin}");
    if n > 0 {
        c.dropped.push(line)
    } else {
        c.absent.push(line)
    }
    Ok(())
}

/// A slot with the task's name that is not the task's: kept, and said.
async fn keep_if_present(s: &mut Session<'_>, c: &mut Cleanup, slot: &str, owned: &Owned) {
    let exists = match s.client(Side::Source).await {
        Ok(source) => source
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&slot],
            )
            .await
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(true),
        Err(_) => true,
    };
    let line = format!("[source] replication slot {slot}");
    if exists {
        c.kept.push(format!("{line} ({})", owned.why_kept()));
    } else {
        c.absent.push(line);
    }
}

/// The `pgtransit` schema on the target, once no task's bookkeeping or mark is in it.
async fn drop_schema_if_unused(s: &mut Session<'_>, c: &mut Cleanup) -> Result<(), Error> {
    let target = s.client(Side::Target).await?;
    let copy_tables: bool = target
        .query_one(
            "SELECT to_regclass('pgtransit.copy_progress') IS NOT NULL \
                AND to_regclass('pgtransit.copy_state') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| crate::error::sql_error("looking for the copy's bookkeeping", e))?
        .get(0);
    let copies_left = copy_tables
        && target
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pgtransit.copy_progress) \
                 OR EXISTS (SELECT 1 FROM pgtransit.copy_state)",
                &[],
            )
            .await
            .map_err(|e| crate::error::sql_error("reading the copy's bookkeeping", e))?
            .get::<_, bool>(0);
    let schema: bool = target
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgtransit')",
            &[],
        )
        .await
        .map_err(|e| crate::error::sql_error("looking for schema pgtransit", e))?
        .get(0);
    if !schema || copies_left || marks::any(target).await? {
        return Ok(());
    }
    target
        .batch_execute("DROP SCHEMA IF EXISTS pgtransit CASCADE")
        .await
        .map_err(|e| crate::error::sql_error("dropping schema pgtransit (on the target)", e))?;
    c.dropped
        .push("[target] schema pgtransit (no task uses it any more)".into());
    Ok(())
}

/// The task's rows in the copy's bookkeeping on the target, and the `pgtransit` schema
/// with the last task that used it.
async fn drop_bookkeeping(s: &mut Session<'_>, c: &mut Cleanup) -> Result<(), Error> {
    let task = s.task;
    let target = s.client(Side::Target).await?;
    let has_bookkeeping: bool = target
        .query_one(
            "SELECT to_regclass('pgtransit.copy_progress') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| crate::error::sql_error("looking for the copy's bookkeeping", e))?
        .get(0);
    if !has_bookkeeping {
        return Ok(());
    }
    let n = target
        .execute(
            "DELETE FROM pgtransit.copy_progress WHERE task = $1",
            &[&task.name],
        )
        .await
        .map_err(|e| crate::error::sql_error("forgetting the copy's progress", e))?;
    target
        .execute(
            "DELETE FROM pgtransit.copy_state WHERE task = $1",
            &[&task.name],
        )
        .await
        .map_err(|e| crate::error::sql_error("forgetting the copy's state", e))?;
    if n > 0 {
        c.dropped.push(format!(
            "[target] copy bookkeeping of task {} ({n} rows)",
            task.name
        ));
    }
    Ok(())
}

/// The stream engine's slot on the source, after ending the walsender that holds it.
async fn drop_slot(s: &mut Session<'_>, c: &mut Cleanup) -> Result<(), Error> {
    let slot = s.task.slot.clone();
    let source = s.client(Side::Source).await?;
    let active: Vec<i32> = source
        .query(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
            &[&slot],
        )
        .await
        .map_err(|e| crate::error::sql_error("reading the slot (on the source)", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for pid in active {
        let _ = source
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await;
    }
    // A terminated walsender releases the slot a moment later.
    let n = crate::snapshot::drop_when_released(source, &slot, 20)
        .await
        .map_err(|e| crate::error::sql_error("dropping the slot (on the source)", e))?;
    let line = format!("[source] replication slot {slot}");
    if n > 0 {
        c.dropped.push(line)
    } else {
        c.absent.push(line)
    }
    Ok(())
}

/// The task's publication on the source.
async fn drop_publication(s: &mut Session<'_>, c: &mut Cleanup) -> Result<(), Error> {
    let publication = s.task.publication.clone();
    let ours = native::sql::owner_note(s.task);
    let source = s.client(Side::Source).await?;
    let note: Option<String> = source
        .query_opt(
            "SELECT coalesce(obj_description(oid, 'pg_publication'), '') FROM pg_publication \
             WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| crate::error::sql_error("reading publications (on the source)", e))?
        .map(|r| r.get(0));
    let existed = note.is_some();
    if let Some(note) = note.filter(|n| *n != ours) {
        let why = if note.starts_with("created by pgtransit") {
            note
        } else {
            "not marked as this task's: made by hand or by another tool".into()
        };
        c.kept
            .push(format!("[source] publication {publication} ({why})"));
        return Ok(());
    }
    source
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote::ident(&publication)
        ))
        .await
        .map_err(|e| crate::error::sql_error("dropping the publication (on the source)", e))?;
    let line = format!("[source] publication {publication}");
    if existed {
        c.dropped.push(line)
    } else {
        c.absent.push(line)
    }
    Ok(())
}
