//! Replica identity: a published table without one makes every UPDATE and DELETE on the
//! source fail ("cannot update table ... because it does not have a replica identity and
//! publishes updates"). We list every selected table with its keys, identity and size, flag
//! those as errors, and compute the right fix:
//!
//! * `REPLICA IDENTITY USING INDEX` only for a valid, unique, non-partial, non-expression,
//!   non-deferrable index whose columns are all NOT NULL (PostgreSQL refuses anything else);
//! * otherwise `REPLICA IDENTITY FULL`, whose cost we spell out.

use serde::Serialize;
use tokio_postgres::Client;

use super::{Context, Finding, Severity, Side};
use crate::catalog::TableInfo;
use crate::quote;

const CHECK: &str = "replica-identity";

/// One line of the table listing.
#[derive(Clone, Debug, Serialize)]
pub struct TableRow {
    pub table: String,
    /// Constraint kinds: primary key, unique, foreign key...
    pub keys: String,
    pub identity: String,
    pub size: String,
    pub size_bytes: i64,
    /// ok, error, or what applies (partitioned, unlogged, extension).
    pub status: String,
}

fn identity_name(c: char) -> &'static str {
    match c {
        'd' => "default",
        'n' => "nothing",
        'f' => "full",
        'i' => "index",
        _ => "?",
    }
}

fn keys_text(t: &TableInfo) -> String {
    let mut parts = Vec::new();
    for (c, name) in [('p', "pk"), ('u', "unique"), ('f', "fk")] {
        if t.constraint_types.contains(c) {
            parts.push(name);
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

/// Whether UPDATE/DELETE on this table would fail once published.
fn lacks_identity(t: &TableInfo) -> bool {
    match t.replica_identity {
        'n' => true,
        'd' => !t.has_primary_key,
        'i' => t.identity_index.is_none(),
        _ => false,
    }
}

/// Published tables: ordinary, permanent ones (partition leaves included). Partitioned
/// parents carry no rows; unlogged tables cannot be published.
fn is_published(t: &TableInfo) -> bool {
    t.kind == 'r' && t.persistence == 'p'
}

/// The statement that gives `t` a replica identity, with a comment that explains the choice.
fn fix_statement(t: &TableInfo) -> String {
    let table = t.qualified();
    if t.has_primary_key {
        return format!("ALTER TABLE {table} REPLICA IDENTITY DEFAULT;  -- use the primary key");
    }
    match t.candidates.first() {
        Some(idx) => format!(
            "ALTER TABLE {table} REPLICA IDENTITY USING INDEX {};  -- unique index on ({}), all NOT NULL",
            quote::ident(&idx.name),
            idx.columns.join(", ")
        ),
        None => {
            let why = if t.rejected.is_empty() {
                "no unique index".to_string()
            } else {
                t.rejected
                    .iter()
                    .map(|(n, r)| format!("{} {r}", quote::ident(n)))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            format!(
                "ALTER TABLE {table} REPLICA IDENTITY FULL;  -- {}: {why}. FULL logs the whole old \
                 row for every UPDATE/DELETE and the target must find it by comparing all columns \
                 (a scan per change without a matching index); better: add a primary key",
                t.size_pretty
            )
        }
    }
}

/// `f` with `use_index_fix` as its fix, when the table has a candidate index.
fn with_index_fix(f: Finding, t: &TableInfo) -> Finding {
    match use_index_fix(t) {
        Some(fix) => f.fix(fix),
        None => f,
    }
}

/// `REPLICA IDENTITY USING INDEX` the best candidate index, when the table has one.
fn use_index_fix(t: &TableInfo) -> Option<String> {
    t.candidates.first().map(|idx| {
        format!(
            "ALTER TABLE {} REPLICA IDENTITY USING INDEX {};",
            t.qualified(),
            quote::ident(&idx.name)
        )
    })
}

pub fn check(ctx: &Context<'_>) -> (Vec<Finding>, Vec<TableRow>) {
    let mut findings = Vec::new();
    let mut rows = Vec::new();
    // A partitioned table's partitions carry its rows: each needs an identity of its own,
    // whether or not the object filter names it.
    for t in ctx.selected_with_partitions() {
        let status = if t.kind == 'p' {
            "partitioned (rows live in its partitions)".to_string()
        } else if t.persistence == 'u' {
            "unlogged (not published)".to_string()
        } else if lacks_identity(t) {
            "ERROR".to_string()
        } else if t.replica_identity == 'f' {
            "full (slow apply)".to_string()
        } else {
            "ok".to_string()
        };
        rows.push(TableRow {
            table: t.qualified(),
            keys: keys_text(t),
            identity: identity_name(t.replica_identity).to_string(),
            size: t.size_pretty.clone(),
            size_bytes: t.size_bytes,
            status,
        });
        if !is_published(t) {
            continue;
        }
        if lacks_identity(t) {
            let what = if t.replica_identity == 'n' {
                "replica identity NOTHING"
            } else {
                "no primary key and replica identity DEFAULT"
            };
            findings.push(
                Finding::new(
                    CHECK,
                    "replica-identity.missing",
                    Severity::Error,
                    Side::Source,
                    format!(
                        "{what}: once published, every UPDATE and DELETE on it fails on the source"
                    ),
                )
                .object(t.qualified())
                .fix(fix_statement(t)),
            );
        } else if t.replica_identity == 'f'
            && ctx.task.engine == crate::task::Engine::Native
            && !t.full_without_equality.is_empty()
        {
            let f = Finding::new(
                CHECK,
                "replica-identity.full-without-equality",
                Severity::Error,
                Side::Source,
                format!(
                    "REPLICA IDENTITY FULL with column(s) whose type has no equality operator ({}): \
                     PostgreSQL's subscriber (the native engine) cannot find the rows of an UPDATE or \
                     DELETE and stops (\"could not identify an equality operator\"). Give the table a \
                     primary key or a replica identity index, or use the stream engine, which compares \
                     such columns by their text",
                    t.full_without_equality.join(", ")
                ),
            )
            .object(t.qualified());
            findings.push(with_index_fix(f, t));
        } else if t.replica_identity == 'f' {
            if ctx.task.engine == crate::task::Engine::Native && !t.full_inexact.is_empty() {
                let f = Finding::new(
                    CHECK,
                    "replica-identity.full-inexact",
                    Severity::Warning,
                    Side::Source,
                    format!(
                        "REPLICA IDENTITY FULL with column(s) whose equal values can be written \
                         differently ({}; numeric 1.0 = 1.00, float -0 = 0, interval '1 day' = \
                         '24 hours'): where the table holds such equal rows, PostgreSQL's subscriber \
                         (the native engine) may update or delete another one than the source did, and \
                         the target then differs without an error. Give the table a primary key or a \
                         replica identity index, or use the stream engine, which takes the row written \
                         like the source's",
                        t.full_inexact.join(", ")
                    ),
                )
                .object(t.qualified());
                findings.push(with_index_fix(f, t));
            }
            let f = Finding::new(
                CHECK,
                "replica-identity.full",
                Severity::Warning,
                Side::Source,
                format!(
                    "REPLICA IDENTITY FULL ({}): every UPDATE/DELETE logs the whole old row and is \
                     matched on all columns on the target",
                    t.size_pretty
                ),
            )
            .object(t.qualified());
            findings.push(with_index_fix(f, t));
        }
    }
    (findings, rows)
}

/// Run the fixes on the source, each in its own transaction with a short lock timeout so
/// that a busy table is reported instead of blocking the application behind our lock.
pub async fn apply_fixes(
    source: &Client,
    statements: &[String],
) -> Result<(), tokio_postgres::Error> {
    source.batch_execute("SET lock_timeout = '5s'").await?;
    for sql in statements {
        source.batch_execute(sql).await?;
    }
    source.batch_execute("RESET lock_timeout").await
}
