//! The SQL of the native steps. Every statement lives in `sql/*.sql`, written with psql's
//! variable syntax (`:'name'` a literal, `:"name"` an identifier, `:name` raw text) so that the
//! very same text is what the commands run and what the generated scripts run: the task's
//! values are bound here once; values known only when a step runs (a shift, the source's
//! version, a subscription oid) stay psql variables that the scripts pass with `-v`.

use std::collections::HashMap;

use crate::quote;
use crate::task::Task;

pub const SELECTED_TABLES: &str = include_str!("sql/selected-tables.sql");
pub const DUMP_ARGS: &str = include_str!("sql/dump-args.sql");
pub const CREATE_SCHEMAS: &str = include_str!("sql/create-schemas.sql");
pub const SCHEMA_KEYS: &str = include_str!("sql/schema-keys.sql");
pub const TARGET_TABLES: &str = include_str!("sql/target-tables.sql");
pub const PUBLICATION_STATE: &str = include_str!("sql/publication-state.sql");
pub const CREATE_PUB: &str = include_str!("sql/create-pub.sql");
pub const TARGET_PARTITIONS: &str = include_str!("sql/target-partitions.sql");
pub const REFRESH_PUB: &str = include_str!("sql/refresh-pub.sql");
pub const SUBSCRIPTION_STATE: &str = include_str!("sql/subscription-state.sql");
pub const SLOT_STATE: &str = include_str!("sql/slot-state.sql");
pub const CREATE_SUB: &str = include_str!("sql/create-sub.sql");
pub const PROGRESS_TARGET: &str = include_str!("sql/progress-target.sql");
pub const PROGRESS_SUBSCRIPTION: &str = include_str!("sql/progress-subscription.sql");
pub const PROGRESS_SOURCE: &str = include_str!("sql/progress-source.sql");
pub const PROGRESS_LAG: &str = include_str!("sql/progress-lag.sql");
pub const COUNT_QUERY: &str = include_str!("sql/count-query.sql");
pub const SEQUENCE_VALUES: &str = include_str!("sql/sequence-values.sql");
pub const COPY_SEQ: &str = include_str!("sql/copy-seq.sql");
pub const DROP_SUB: &str = include_str!("sql/drop-sub.sql");
pub const DROP_SLOT: &str = include_str!("sql/drop-slot.sql");
/// psql only (`\if`): the generated drop-sub's check of the slot's mark.
pub const SLOT_MARK: &str = include_str!("sql/slot-mark.sql");
pub const DROP_PUB: &str = include_str!("sql/drop-pub.sql");
pub const REFRESH_SUB: &str = include_str!("sql/refresh-sub.sql");

/// Every SQL file, by the name it has in a generated context folder's `sql/` directory.
pub const ALL: &[(&str, &str)] = &[
    ("selected-tables.sql", SELECTED_TABLES),
    ("dump-args.sql", DUMP_ARGS),
    ("create-schemas.sql", CREATE_SCHEMAS),
    ("schema-keys.sql", SCHEMA_KEYS),
    ("target-tables.sql", TARGET_TABLES),
    ("publication-state.sql", PUBLICATION_STATE),
    ("create-pub.sql", CREATE_PUB),
    ("target-partitions.sql", TARGET_PARTITIONS),
    ("refresh-pub.sql", REFRESH_PUB),
    ("subscription-state.sql", SUBSCRIPTION_STATE),
    ("slot-state.sql", SLOT_STATE),
    ("create-sub.sql", CREATE_SUB),
    ("progress-target.sql", PROGRESS_TARGET),
    ("progress-subscription.sql", PROGRESS_SUBSCRIPTION),
    ("progress-source.sql", PROGRESS_SOURCE),
    ("progress-lag.sql", PROGRESS_LAG),
    ("count-query.sql", COUNT_QUERY),
    ("sequence-values.sql", SEQUENCE_VALUES),
    ("copy-seq.sql", COPY_SEQ),
    ("drop-sub.sql", DROP_SUB),
    ("drop-slot.sql", DROP_SLOT),
    ("slot-mark.sql", SLOT_MARK),
    ("drop-pub.sql", DROP_PUB),
    ("refresh-sub.sql", REFRESH_SUB),
];

/// A value for a psql-style variable.
#[derive(Clone, Debug)]
pub enum Value {
    /// Text, bound as `:'x'` (a literal) or `:"x"` (an identifier).
    Text(String),
    /// SQL text pasted as is by `:x` (a condition pgtransit built itself).
    Raw(String),
}

/// The comment pgtransit puts on what it creates, to recognise its own objects later.
pub fn owner_note(task: &Task) -> String {
    format!("created by pgtransit for task {}", task.name)
}

/// The variables every native step knows from the task. `sub_conn` is bound as written
/// (it may hold a password the user put there); callers that show SQL mask it.
pub fn task_vars(task: &Task) -> HashMap<&'static str, Value> {
    let mut v = HashMap::new();
    v.insert("pub", Value::Text(task.publication.clone()));
    v.insert("sub", Value::Text(task.subscription.clone()));
    v.insert("slot", Value::Text(task.slot.clone()));
    v.insert("sub_conn", Value::Text(task.sub_conn.clone()));
    v.insert("owner_note", Value::Text(owner_note(task)));
    // create-sub: the subscription's initial copy (off only for a reverse replication).
    v.insert("copy_data", Value::Raw("true".into()));
    v.insert(
        "selected",
        Value::Raw(task.objects.sql_table_condition("n.nspname", "c.relname")),
    );
    v.insert(
        "selected_schema",
        Value::Raw(task.objects.sql_schema_condition("n.nspname")),
    );
    v
}

/// Replace the variables of `vars` in `sql` the way psql does; variables not in `vars` are
/// left for psql (`-v`). `::` casts are not variables.
pub fn bind(sql: &str, vars: &HashMap<&str, Value>) -> String {
    let mut out = String::with_capacity(sql.len());
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < sql.len() {
        let c = bytes[i];
        if c == b':' && bytes.get(i + 1) == Some(&b':') {
            out.push_str("::");
            i += 2;
            continue;
        }
        if c == b':' {
            if let Some((len, text)) = variable_at(&sql[i + 1..], vars) {
                out.push_str(&text);
                i += 1 + len;
                continue;
            }
        }
        let ch = sql[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The variable reference right after a `:`, if it names a bound variable: its length and
/// replacement text.
fn variable_at(rest: &str, vars: &HashMap<&str, Value>) -> Option<(usize, String)> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let quoted = |q: char| -> Option<(usize, &str)> {
        let body = rest.strip_prefix(q)?;
        let end = body.find(q)?;
        let name = &body[..end];
        (!name.is_empty() && name.chars().all(is_name)).then_some((end + 2, name))
    };
    if let Some((len, name)) = quoted('\'') {
        return match vars.get(name)? {
            Value::Text(t) => Some((len, quote::literal(t))),
            Value::Raw(r) => Some((len, quote::literal(r))),
        };
    }
    if let Some((len, name)) = quoted('"') {
        return match vars.get(name)? {
            Value::Text(t) | Value::Raw(t) => Some((len, quote::ident(t))),
        };
    }
    let len = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
    if len == 0 {
        return None;
    }
    match vars.get(&rest[..len])? {
        Value::Raw(r) | Value::Text(r) => Some((len, r.clone())),
    }
}

/// `sql` with the task's variables bound.
pub fn for_task(sql: &str, task: &Task) -> String {
    bind(sql, &task_vars(task))
}

/// `sql` for a generated script: the task's variables bound except `sub_conn`, which the
/// script passes at run time (`-v sub_conn="$SUBCONN"`) so that no password is written.
pub fn for_script(sql: &str, task: &Task) -> String {
    let mut vars = task_vars(task);
    vars.remove("sub_conn");
    bind(sql, &vars)
}

/// `sql` with the task's variables and `extra` bound.
pub fn for_task_with(sql: &str, task: &Task, extra: &[(&'static str, Value)]) -> String {
    let mut vars = task_vars(task);
    vars.extend(extra.iter().cloned());
    bind(sql, &vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_like_psql() {
        let mut v = HashMap::new();
        v.insert("pub", Value::Text("it's \"mine\"".into()));
        v.insert("cond", Value::Raw("x > 1".into()));
        let sql = "SELECT :'pub', :\"pub\", 1::int WHERE (:cond) AND :'other' = :shift";
        assert_eq!(
            bind(sql, &v),
            "SELECT 'it''s \"mine\"', \"it's \"\"mine\"\"\", 1::int WHERE (x > 1) AND :'other' = :shift"
        );
    }
}
