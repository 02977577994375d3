//! What the apply knows of each replicated table: its columns as the source described them
//! in the last Relation message, checked against the target table, and the part of the
//! change stream its initial copy already contains.

use pgoutput::Relation;
use tokio_postgres::Client;

use crate::native::{sql_error, StepError};
use crate::quote;

#[derive(Clone, Debug)]
pub struct Table {
    /// Target table, quoted.
    pub name: String,
    pub columns: Vec<String>,
    /// Identity key columns (all of them under REPLICA IDENTITY FULL).
    pub key: Vec<bool>,
    pub full_identity: bool,
    /// GENERATED ALWAYS AS IDENTITY on the target: inserted with OVERRIDING SYSTEM VALUE,
    /// never SET (the source cannot change it either).
    pub always_identity: Vec<bool>,
    /// Each column's type on the target (format_type), for the casts of batched statements.
    pub types: Vec<String>,
    /// Changes committed at or before this LSN are in the table's copy: skipped.
    pub copied_until: Option<u64>,
    /// Up to this LSN, the copy may already hold a change (a split table resumed from a
    /// second snapshot): inserts go in with ON CONFLICT DO NOTHING.
    pub idempotent_until: Option<u64>,
    /// No trigger or rule of the target table fires in the apply session (replica role):
    /// its changes may be sent in batches that other tables' changes overtake, and several
    /// updates of one row may be folded into the last. Triggers that do fire see the
    /// changes one by one, in source order.
    pub foldable: bool,
}

/// The table a Relation message describes, after checking that the target can take its
/// rows: the table exists and has every source column (not generated there).
pub async fn resolve(
    target: &Client,
    r: &Relation,
    copies: &std::collections::HashMap<u32, (u64, u64)>,
) -> Result<Table, StepError> {
    let name = quote::qualified(&r.namespace, &r.name);
    let rows = target
        .query(
            "SELECT a.attname::text, a.attgenerated <> '', a.attidentity = 'a', a.attrelid, \
             format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&name],
        )
        .await
        .map_err(|e| sql_error("reading a target table's columns", e))?;
    if rows.is_empty() {
        return Err(StepError::failed(format!(
            "the source sends changes for {name}, which does not exist on the target: create it there \
             (pgtransit init-struct, or refresh) and run again; the slot keeps the changes"
        )));
    }
    for c in &r.columns {
        match rows.iter().find(|row| row.get::<_, String>(0) == c.name) {
            None => {
                return Err(StepError::failed(format!(
                    "schema change on the source: {name} has a column {} that the target table lacks. \
                     Apply stopped here and the slot keeps every change: add the column on the target \
                     (ALTER TABLE {name} ADD COLUMN {} ...), then run again.",
                    quote::ident(&c.name),
                    quote::ident(&c.name)
                )))
            }
            Some(row) if row.get::<_, bool>(1) => {
                return Err(StepError::failed(format!(
                    "{name}.{} is a generated column on the target but a plain one on the source: make \
                     them the same, then run again",
                    quote::ident(&c.name)
                )))
            }
            Some(_) => {}
        }
    }
    let relid: u32 = rows[0].get(3);
    let fires: bool = target
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal \
             AND tgenabled IN ('A', 'R')) OR EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class = $1 \
             AND rulename <> '_RETURN' AND ev_enabled IN ('A', 'R'))",
            &[&relid],
        )
        .await
        .map_err(|e| sql_error("reading a target table's triggers", e))?
        .get(0);
    let (copied_until, idempotent_until) = match copies.get(&relid).copied() {
        Some((min, max)) => (Some(min), (max > min).then_some(max)),
        None => (None, None),
    };
    Ok(Table {
        name,
        columns: r.columns.iter().map(|c| quote::ident(&c.name)).collect(),
        key: r.columns.iter().map(|c| c.is_key()).collect(),
        full_identity: r.replica_identity == b'f',
        types: r
            .columns
            .iter()
            .map(|c| {
                rows.iter()
                    .find(|row| row.get::<_, String>(0) == c.name)
                    .map(|row| row.get::<_, String>(4))
                    .unwrap_or_else(|| "text".into())
            })
            .collect(),
        always_identity: r
            .columns
            .iter()
            .map(|c| {
                rows.iter()
                    .any(|row| row.get::<_, String>(0) == c.name && row.get::<_, bool>(2))
            })
            .collect(),
        copied_until,
        idempotent_until,
        foldable: !fires,
    })
}
