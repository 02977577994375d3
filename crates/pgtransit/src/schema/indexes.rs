//! Post-data for the stream engine: the indexes of the loaded tables built by pgtransit,
//! `index_jobs` at a time (several on one table at once: CREATE INDEX only takes a SHARE
//! lock), primary keys and unique constraints as a unique index first and then attached.
//! Resumable: what exists on the target is skipped, and the orphaned builds of a killed run
//! are ended first.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_postgres::Client;

use crate::conn::{self, ConnSpec};
use crate::error::{sql_error, Error};
use crate::native::sql;
use crate::step::Session;
use crate::step::Side;

pub(crate) const INDEX_BUILDS: &str = include_str!("sql/index-builds.sql");

#[derive(Clone, Debug)]
struct Build {
    index_key: String,
    constraint_key: String,
    table: String,
    index: String,
    constraint: Option<String>,
    create: String,
    attach: Option<String>,
    identity: Option<String>,
}

/// The application_name of this task's index builders, to find a killed run's orphans.
fn builder_name(task: &str) -> String {
    let mut n = format!("pgtransit index {task}");
    n.truncate(63);
    n
}

/// Build the indexes pgtransit handles itself; returns the TOC keys they covered, which the
/// caller removes from the list it gives pg_restore.
pub async fn build(s: &mut Session<'_>, jobs: usize) -> Result<HashSet<String>, Error> {
    let task = s.task;
    let rows = s
        .rows(
            Side::Source,
            "listing indexes",
            &sql::for_task(INDEX_BUILDS, task),
        )
        .await?;
    let builds: Vec<Build> = rows
        .iter()
        .map(|r| Build {
            index_key: r.get("index_key"),
            constraint_key: r.get("constraint_key"),
            table: r.get("table_name"),
            index: r.get("index_name"),
            constraint: r.get("constraint_name"),
            create: r.get("create_index"),
            attach: r.get("attach"),
            identity: r.get("identity"),
        })
        .collect();
    let mut covered = HashSet::new();
    for b in &builds {
        covered.insert(b.index_key.clone());
        if !b.constraint_key.is_empty() {
            covered.insert(b.constraint_key.clone());
        }
    }
    let name = builder_name(&task.name);
    let target = s.client(Side::Target).await?;
    // A killed run's CREATE INDEX may still be running for nobody: end it so that its lock
    // and its half-built index go away before we build again.
    target
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await
        .map_err(|e| sql_error("ending orphaned index builds (on the target)", e))?;
    for _ in 0..100 {
        let left: i64 = target
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .await
            .map_err(|e| sql_error("waiting for orphaned index builds (on the target)", e))?
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if builds.is_empty() {
        return Ok(covered);
    }
    s.say(&format!(
        "  [target] building {} index(es), {} at a time",
        builds.len(),
        jobs.max(1)
    ));
    let spec = s.spec(Side::Target)?.clone();
    let queue = Arc::new(Mutex::new(builds.into_iter().collect::<VecDeque<_>>()));
    let mut handles = Vec::new();
    for _ in 0..jobs.max(1) {
        let (queue, spec, name) = (queue.clone(), spec.clone(), name.clone());
        handles.push(tokio::spawn(
            async move { builder(spec, name, queue).await },
        ));
    }
    let mut lines = Vec::new();
    let mut first_error = None;
    for h in handles {
        match h.await {
            Ok(Ok(mut l)) => lines.append(&mut l),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(Error::failed(format!("an index builder panicked: {e}")));
            }
        }
    }
    for l in lines {
        s.say(&l);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(covered),
    }
}

async fn builder(
    spec: ConnSpec,
    name: String,
    queue: Arc<Mutex<VecDeque<Build>>>,
) -> Result<Vec<String>, Error> {
    let client = conn::connect(&spec).await?;
    client
        .execute("SELECT set_config('application_name', $1, false)", &[&name])
        .await
        .map_err(|e| sql_error("naming the index builder", e))?;
    let mut lines = Vec::new();
    loop {
        let next = queue.lock().expect("queue lock").pop_front();
        let Some(b) = next else { return Ok(lines) };
        if let Some(l) = build_one(&client, &b).await? {
            lines.push(l);
        }
    }
}

async fn exists(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<bool, Error> {
    Ok(client
        .query_one(sql, params)
        .await
        .map_err(|e| sql_error("looking for an index (on the target)", e))?
        .get(0))
}

/// Build one index (and attach it as its constraint), skipping what exists.
async fn build_one(client: &Client, b: &Build) -> Result<Option<String>, Error> {
    let constraint_exists = match &b.constraint {
        Some(c) => {
            exists(
                client,
                "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)",
                &[&b.table, c],
            )
            .await?
        }
        None => false,
    };
    if constraint_exists {
        return Ok(None);
    }
    let index_exists = exists(client, "SELECT to_regclass($1) IS NOT NULL", &[&b.index]).await?;
    if index_exists && b.attach.is_none() {
        return Ok(None);
    }
    let started = Instant::now();
    if !index_exists {
        client
            .batch_execute(&b.create)
            .await
            .map_err(|e| sql_error(&format!("building {}", b.index), e))?;
    }
    if let Some(attach) = &b.attach {
        client
            .batch_execute(attach)
            .await
            .map_err(|e| sql_error(&format!("attaching {} as its constraint", b.index), e))?;
    }
    if let Some(identity) = &b.identity {
        client
            .batch_execute(identity)
            .await
            .map_err(|e| sql_error(&format!("making {} the replica identity", b.index), e))?;
    }
    Ok(Some(format!(
        "  [target] built {}{} in {:.1} s",
        b.index,
        if b.attach.is_some() {
            " (attached as its constraint)"
        } else {
            ""
        },
        started.elapsed().as_secs_f64()
    )))
}

/// Whether the object of a post-data TOC entry (by its source "classid objid") already exists
/// on the target: constraints, triggers and indexes, found by name. Other entries are
/// always restored.
pub async fn exists_on_target(s: &mut Session<'_>, key: &str) -> Result<bool, Error> {
    let mut parts = key.split(' ');
    let (Some(class), Some(oid)) = (parts.next(), parts.next()) else {
        return Ok(false);
    };
    let Ok(oid) = oid.parse::<u32>() else {
        return Ok(false);
    };
    let lookup = match class {
        "2606" => "SELECT format('%I.%I', n.nspname, c.relname), k.conname::text FROM pg_constraint k \
                   JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE k.oid = $1",
        "2620" => "SELECT format('%I.%I', n.nspname, c.relname), t.tgname::text FROM pg_trigger t \
                   JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.oid = $1",
        "1259" => "SELECT format('%I.%I', n.nspname, c.relname), ''::text FROM pg_class c \
                   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        _ => return Ok(false),
    };
    let found = s
        .client(Side::Source)
        .await?
        .query_opt(lookup, &[&oid])
        .await
        .map_err(|e| sql_error("identifying a post-data object (on the source)", e))?;
    let Some(row) = found else { return Ok(false) };
    let (rel, name): (String, String) = (row.get(0), row.get(1));
    let check = match class {
        "2606" => "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)",
        "2620" => "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2)",
        _ => "SELECT to_regclass($1) IS NOT NULL AND $2 = ''",
    };
    let target = s.client(Side::Target).await?;
    exists(target, check, &[&rel, &name]).await
}
