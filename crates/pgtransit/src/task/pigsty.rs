//! Pigsty task files (`files/migration/*.yml`, and the older variables block of
//! `pgsql-migration.yml`), resolved exactly as Pigsty's `roles/pg_migration` does:
//!
//! * context folder `{{ context_dir }}/{{ src_cls }}.{{ src_db }}` (`context_dir` default
//!   `~/migration`; the older name is `migration_context_dir`);
//! * `src_pg` / `dst_pg` default `postgres://{{ pg_admin_username }}@{{ ip }}/{{ db }}`;
//! * `sub_conn` default `host={{ src_ip }} dbname={{ src_db }} user={{ pg_replication_username }}`
//!   (the older misspelling `pg_replicatoin_username` is accepted);
//! * publication `pub_<src_cls>_<src_db>` and subscription (and slot) `sub_<src_cls>_<src_db>`
//!   with `-` replaced by `_`.
//!
//! Pigsty never puts a password into what it builds (it relies on `.pgpass`), nor do we.

use serde::{Deserialize, Serialize};

use super::{expand_home, Engine, ObjectFilter, Steps, Task, TaskFileError, TaskSource};
use crate::conn::ConnSpec;

/// Every variable a Pigsty migration task file may hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PigstyVars {
    pub context_dir: Option<String>,
    pub migration_context_dir: Option<String>,
    pub src_cls: Option<String>,
    pub src_db: Option<String>,
    pub src_ip: Option<String>,
    pub src_list: Option<Vec<Option<String>>>,
    pub src_dns: Option<String>,
    pub src_vip: Option<String>,
    pub src_pg: Option<String>,
    pub sub_conn: Option<String>,
    pub dst_cls: Option<String>,
    pub dst_db: Option<String>,
    pub dst_ip: Option<String>,
    pub dst_list: Option<Vec<Option<String>>>,
    pub dst_dns: Option<String>,
    pub dst_vip: Option<String>,
    pub dst_user: Option<String>,
    pub dst_pg: Option<String>,
    pub pg_dbsu: Option<String>,
    pub pg_replication_username: Option<String>,
    pub pg_replicatoin_username: Option<String>,
    pub pg_replication_password: Option<String>,
    pub pg_admin_username: Option<String>,
    pub pg_admin_password: Option<String>,
    pub pg_monitor_username: Option<String>,
    pub pg_monitor_password: Option<String>,
    /// Pigsty derives these in a set_fact; as extra vars (`-e@file`) they override it there
    /// too. Two tasks on one source database need them to avoid colliding.
    pub pub_name: Option<String>,
    pub sub_name: Option<String>,
}

/// Keys only a Pigsty file has.
const MARKERS: &[&str] = &["src_cls:", "src_db:", "dst_cls:", "src_ip:", "dst_ip:"];

pub fn looks_like_pigsty(text: &str) -> bool {
    text.lines()
        .any(|l| MARKERS.iter().any(|m| l.trim_start().starts_with(m)))
}

pub fn parse(text: &str, file: &str) -> Result<Task, TaskFileError> {
    let vars: PigstyVars =
        serde_saphyr::from_str(text).map_err(|e| TaskFileError::from_yaml(file, &e))?;
    resolve(vars, file)
}

fn required<'a>(
    v: &'a Option<String>,
    key: &str,
    what: &str,
    file: &str,
) -> Result<&'a str, TaskFileError> {
    match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(TaskFileError {
            file: file.to_string(),
            line: None,
            message: format!("`{key}` is required: {what}"),
            hint: Some(format!("add a line `{key}: ...`")),
        }),
    }
}

fn conn(raw: &str, key: &str, file: &str) -> Result<ConnSpec, TaskFileError> {
    ConnSpec::parse(raw).map_err(|e| TaskFileError::new(file, format!("`{key}`: {e}")))
}

pub fn resolve(vars: PigstyVars, file: &str) -> Result<Task, TaskFileError> {
    let src_cls = required(&vars.src_cls, "src_cls", "the source cluster name", file)?;
    let src_db = required(&vars.src_db, "src_db", "the source database name", file)?;
    let src_ip = required(
        &vars.src_ip,
        "src_ip",
        "the source primary's IP address",
        file,
    )?;
    required(&vars.dst_cls, "dst_cls", "the target cluster name", file)?;
    let dst_db = required(&vars.dst_db, "dst_db", "the target database name", file)?;
    let dst_ip = required(
        &vars.dst_ip,
        "dst_ip",
        "the target primary's IP address",
        file,
    )?;

    let admin = vars.pg_admin_username.as_deref().unwrap_or("dbuser_dba");
    let repl = vars
        .pg_replication_username
        .as_deref()
        .or(vars.pg_replicatoin_username.as_deref())
        .unwrap_or("replicator");
    let context_dir = vars
        .context_dir
        .as_deref()
        .or(vars.migration_context_dir.as_deref())
        .unwrap_or("~/migration");

    let src_pg = vars
        .src_pg
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| format!("postgres://{admin}@{src_ip}/{src_db}"));
    let dst_pg = vars
        .dst_pg
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| format!("postgres://{admin}@{dst_ip}/{dst_db}"));
    let sub_conn = vars
        .sub_conn
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| format!("host={src_ip} dbname={src_db} user={repl}"));
    // Validate sub_conn now: the subscription would fail much later otherwise.
    conn(&sub_conn, "sub_conn", file)?;

    let suffix = format!("{}_{}", src_cls.replace('-', "_"), src_db.replace('-', "_"));
    let subscription = vars
        .sub_name
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| format!("sub_{suffix}"));
    let publication = vars
        .pub_name
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| format!("pub_{suffix}"));
    Ok(Task {
        name: format!("{src_cls}.{src_db}"),
        engine: Engine::Native,
        source: conn(&src_pg, "src_pg", file)?,
        target: Some(conn(&dst_pg, "dst_pg", file)?),
        sub_conn,
        replication_user: repl.to_string(),
        publication,
        slot: subscription.clone(),
        subscription,
        objects: ObjectFilter::pigsty(),
        steps: Steps::default(),
        context_dir: expand_home(context_dir).join(format!("{src_cls}.{src_db}")),
        table_jobs: 4,
        index_jobs: 2,
        on_missing_row: Default::default(),
        origin: TaskSource::Pigsty(Box::new(vars)),
    })
}
