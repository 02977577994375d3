//! pgtransit's own task file form:
//!
//! ```yaml
//! name: meta-to-test
//! source: postgres://dbuser_dba@10.10.10.10/meta
//! target: postgres://dbuser_dba@10.10.10.11/test
//! engine: stream                 # or native
//! objects:
//!   include: [public, app.orders, "app.order_*"]
//!   exclude: ["public.tmp_*"]
//! steps: { precheck: true, init-struct: true, init-data: true, cdc: true }
//! options:
//!   publication: pgtransit_meta_to_test
//!   slot: pgtransit_meta_to_test
//!   table_jobs: 4
//! ```
//!
//! Connection strings carry no password: it comes from `.pgpass` or PG* variables.

use serde::{Deserialize, Serialize};

use super::{
    expand_home, slot_safe, Engine, ObjectFilter, OnMissingRow, Steps, Task, TaskFileError,
    TaskSource,
};
use crate::conn::ConnSpec;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeFile {
    name: String,
    source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    engine: Option<Engine>,
    #[serde(default)]
    objects: ObjectFilter,
    #[serde(default)]
    steps: Steps,
    #[serde(default)]
    options: NativeOptions,
}

/// The `options:` section; every field has a default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// Connection string the target's subscription uses (native engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_conn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_jobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_jobs: Option<u32>,
    /// `stop` (the default) or `log`: see OnMissingRow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_missing_row: Option<OnMissingRow>,
}

pub fn parse(text: &str, file: &str) -> Result<Task, TaskFileError> {
    let f: NativeFile =
        serde_saphyr::from_str(text).map_err(|e| TaskFileError::from_yaml(file, &e))?;
    if f.name.trim().is_empty() {
        return Err(TaskFileError::new(file, "`name` must not be empty"));
    }
    let source = ConnSpec::parse(&f.source)
        .map_err(|e| TaskFileError::new(file, format!("`source`: {e}")))?;
    let target = f
        .target
        .as_deref()
        .map(ConnSpec::parse)
        .transpose()
        .map_err(|e| TaskFileError::new(file, format!("`target`: {e}")))?;
    if let Some(sc) = &f.options.sub_conn {
        ConnSpec::parse(sc)
            .map_err(|e| TaskFileError::new(file, format!("`options.sub_conn`: {e}")))?;
    }
    Ok(resolve_defaults(
        f.name,
        source,
        target,
        f.options,
        f.objects,
        f.steps,
        f.engine.unwrap_or(Engine::Stream),
    ))
}

pub fn resolve_defaults(
    name: String,
    source: ConnSpec,
    target: Option<ConnSpec>,
    o: NativeOptions,
    objects: ObjectFilter,
    steps: Steps,
    engine: Engine,
) -> Task {
    let base = format!("pgtransit_{}", slot_safe(&name));
    let replication_user = o.replication_user.clone().unwrap_or_else(|| source.user());
    // The subscription reaches the source as the replication user; the password comes from
    // the target server's own .pgpass, as with Pigsty.
    let sub_conn = o.sub_conn.clone().unwrap_or_else(|| {
        let s = source.with_user(&replication_user);
        let mut parts = vec![
            format!("host={}", s.host()),
            format!("port={}", s.port()),
            format!("dbname={}", s.dbname()),
            format!("user={replication_user}"),
        ];
        if let Some(mode) = s.sslmode {
            parts.push(format!("sslmode={}", mode.as_str()));
        }
        parts.join(" ")
    });
    let subscription = o.subscription.clone().unwrap_or_else(|| base.clone());
    Task {
        engine,
        source,
        target,
        sub_conn,
        replication_user,
        publication: o.publication.clone().unwrap_or_else(|| base.clone()),
        slot: o.slot.clone().unwrap_or_else(|| subscription.clone()),
        subscription,
        objects,
        steps,
        context_dir: expand_home(o.context_dir.as_deref().unwrap_or("~/migration")).join(&name),
        table_jobs: o.table_jobs.unwrap_or(4),
        index_jobs: o.index_jobs.unwrap_or(2),
        on_missing_row: o.on_missing_row.unwrap_or_default(),
        origin: TaskSource::Native,
        name,
    }
}

/// The task in native form, every resolved value written out, without any password.
pub fn to_native_yaml(task: &Task) -> String {
    let strip = |c: &ConnSpec| {
        let mut c = c.clone();
        c.password = None;
        c.masked()
    };
    let file = NativeFile {
        name: task.name.clone(),
        source: strip(&task.source),
        target: task.target.as_ref().map(strip),
        engine: Some(task.engine),
        objects: task.objects.clone(),
        steps: task.steps,
        options: NativeOptions {
            publication: Some(task.publication.clone()),
            subscription: Some(task.subscription.clone()),
            slot: Some(task.slot.clone()),
            sub_conn: Some(strip_conn_string_password(&task.sub_conn)),
            replication_user: Some(task.replication_user.clone()),
            context_dir: task.context_dir.parent().map(|p| p.display().to_string()),
            table_jobs: Some(task.table_jobs),
            index_jobs: Some(task.index_jobs),
            on_missing_row: Some(task.on_missing_row),
        },
    };
    serde_saphyr::to_string(&file).unwrap_or_default()
}

/// A connection string with its password removed (the password belongs in .pgpass).
pub fn strip_conn_string_password(raw: &str) -> String {
    match ConnSpec::parse(raw) {
        Ok(spec) if spec.password.is_some() => {
            let mut spec = spec;
            spec.password = None;
            if raw.contains("://") {
                spec.masked()
            } else {
                spec.masked_keyword_value()
            }
        }
        _ => raw.to_string(),
    }
}
