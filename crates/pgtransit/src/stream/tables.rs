//! What the apply knows of each replicated table: its columns as the source described them
//! in the last Relation message, checked against the target table, and the part of the
//! change stream its initial copy already contains.

use std::collections::HashMap;

use pgoutput::Relation;
use tokio_postgres::Client;

use crate::catalog::compat::portable;
use crate::error::{sql_error, Error};
use crate::quote;

#[derive(Clone, Debug)]
pub struct Table {
    /// Target table, quoted.
    pub name: String,
    /// How UPDATE, DELETE and TRUNCATE name it: `ONLY name` for a plain table, so that a
    /// change to an inheritance parent never reaches its children (the source sends the
    /// children's changes on their own); a partitioned table by its name.
    pub only_name: String,
    /// The target table is partitioned: a ctid is unique only together with the tableoid.
    pub partitioned: bool,
    pub columns: Vec<String>,
    /// Identity key columns (all of them under REPLICA IDENTITY FULL).
    pub key: Vec<bool>,
    pub full_identity: bool,
    /// Each column's type has an equality operator on the target (a default btree or hash
    /// operator class, as PostgreSQL's own apply requires): FULL rows are matched with it;
    /// the others by their text, both sides rendered by the target.
    pub equality: Vec<bool>,
    /// GENERATED ALWAYS AS IDENTITY on the target: inserted with OVERRIDING SYSTEM VALUE,
    /// never SET (the source cannot change it either).
    pub always_identity: Vec<bool>,
    /// Each column's type on the target (format_type), for the casts of batched statements.
    pub types: Vec<String>,
    /// Changes committed at or before this LSN are in the table's copy: skipped.
    pub copied_until: Option<u64>,
    /// Up to this LSN, the copy may already hold a change (a split table resumed from a
    /// second snapshot): inserts go in with ON CONFLICT DO NOTHING, and an UPDATE or
    /// DELETE that finds nothing is expected.
    pub idempotent_until: Option<u64>,
    /// No trigger or rule of the target table fires in the apply session (replica role):
    /// its changes may be sent in batches that other tables' changes overtake, and several
    /// updates of one row may be folded into the last. Triggers that do fire see the
    /// changes one by one, in source order.
    pub foldable: bool,
    /// Key-unchanged updates may go out as one multi-row statement. Not when a unique index
    /// or exclusion constraint covers a non-key column: values swapped through a temporary
    /// one (valid row by row on the source) would collide inside one statement, so such
    /// tables get their updates one by one, in source order.
    pub batch_updates: bool,
    /// REPLICA IDENTITY FULL, a plain table, no trigger firing and no unique index or
    /// exclusion constraint at all on the target: its changes may go out as set statements
    /// of a run (`full`), rows found by one scan per statement instead of one per row.
    pub batch_full: bool,
}

impl Table {
    /// The names of the key columns, for messages.
    pub fn key_names(&self) -> Vec<String> {
        (0..self.columns.len())
            .filter(|&i| self.key[i])
            .map(|i| self.columns[i].clone())
            .collect()
    }
}

/// The table a Relation message describes, after checking that the target can take its
/// rows: the table exists and has every source column (not generated there), and its
/// replica identity is the one the source now uses.
pub async fn resolve(
    target: &Client,
    r: &Relation,
    copies: &HashMap<u32, (u64, u64)>,
    equality_cache: &mut HashMap<u32, bool>,
) -> Result<Table, Error> {
    let name = quote::qualified(&r.namespace, &r.name);
    // The target may be older than the source (a downgrade, a rollback's reverse task):
    // its catalog is read as it is (catalog::compat). Once per Relation message.
    let version = crate::catalog::server_version_num(target)
        .await
        .map_err(|e| sql_error("reading the target version", e))?;
    let rows = target
        .query(
            portable(
                "SELECT a.attname::text, a.attgenerated <> '', a.attidentity = 'a', a.attrelid, \
                 format_type(a.atttypid, a.atttypmod), a.atttypid, c.relkind::text \
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                version,
            )
            .as_ref(),
            &[&name],
        )
        .await
        .map_err(|e| sql_error("reading a target table's columns", e))?;
    if rows.is_empty() {
        return Err(Error::failed(format!(
            "the source sends changes for {name}, which does not exist on the target: create it there \
             (pgtransit init-struct, or refresh) and run again; the slot keeps the changes"
        )));
    }
    let mut target_cols = Vec::new();
    for c in &r.columns {
        match rows.iter().find(|row| row.get::<_, String>(0) == c.name) {
            None => {
                return Err(Error::failed(format!(
                    "schema change on the source: {name} has a column {} that the target table lacks. \
                     Apply stopped here and the slot keeps every change: add the column on the target \
                     (ALTER TABLE {name} ADD COLUMN {} ...), then run again.",
                    quote::ident(&c.name),
                    quote::ident(&c.name)
                )))
            }
            Some(row) if row.get::<_, bool>(1) => {
                return Err(Error::failed(format!(
                    "{name}.{} is a generated column on the target but a plain one on the source: make \
                     them the same, then run again",
                    quote::ident(&c.name)
                )))
            }
            Some(row) => target_cols.push(row),
        }
    }
    let relid: u32 = rows[0].get(3);
    let relkind: String = rows[0].get(6);
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
    let source_key: Vec<&str> = r
        .columns
        .iter()
        .filter(|c| c.is_key())
        .map(|c| c.name.as_str())
        .collect();
    let full_identity = r.replica_identity == b'f';
    if !full_identity {
        check_identity(target, version, relid, &name, &source_key).await?;
    }
    // Under FULL identity every column is the key: there, any unique index or exclusion
    // constraint counts (and keyed batches of updates are not used).
    let key: &[&str] = if full_identity { &[] } else { &source_key };
    let unique_beyond = unique_beyond_key(target, version, relid, key).await?;
    let mut equality = Vec::with_capacity(target_cols.len());
    for row in &target_cols {
        equality.push(has_equality(target, row.get(5), equality_cache).await?);
    }
    let (copied_until, idempotent_until) = match copies.get(&relid).copied() {
        Some((min, max)) => (Some(min), (max > min).then_some(max)),
        None => (None, None),
    };
    let partitioned = relkind == "p";
    let batch_full = full_identity && !fires && !partitioned && !unique_beyond;
    Ok(Table {
        only_name: if partitioned {
            name.clone()
        } else {
            format!("ONLY {name}")
        },
        name,
        partitioned,
        columns: r.columns.iter().map(|c| quote::ident(&c.name)).collect(),
        key: r.columns.iter().map(|c| c.is_key()).collect(),
        full_identity,
        equality,
        types: target_cols
            .iter()
            .map(|row| row.get::<_, String>(4))
            .collect(),
        always_identity: target_cols
            .iter()
            .map(|row| row.get::<_, bool>(2))
            .collect(),
        copied_until,
        idempotent_until,
        foldable: !fires,
        batch_updates: !unique_beyond,
        batch_full,
    })
}

/// The columns of the target table's replica identity (its REPLICA IDENTITY index, or its
/// primary key under DEFAULT), sorted; empty when it has none.
async fn target_identity(c: &Client, version: i32, relid: u32) -> Result<Vec<String>, Error> {
    let row = c
        .query_one(
            portable(
                "SELECT coalesce((SELECT array_agg(a.attname::text ORDER BY a.attname) \
               FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey[0:i.indnkeyatts - 1]) \
               WHERE i.indrelid = r.oid AND CASE r.relreplident WHEN 'i' THEN i.indisreplident \
                                                 WHEN 'd' THEN i.indisprimary ELSE false END), '{}') \
             FROM pg_class r WHERE r.oid = $1",
                version,
            )
            .as_ref(),
            &[&relid],
        )
        .await
        .map_err(|e| sql_error("reading a target table's replica identity", e))?;
    Ok(row.get(0))
}

/// The source now identifies rows of `name` by `source_key`; a target whose own identity
/// is other columns would replicate differently after the switch (and PostgreSQL's own
/// subscriber stops on it): stop with what to run on the target.
async fn check_identity(
    c: &Client,
    version: i32,
    relid: u32,
    name: &str,
    source_key: &[&str],
) -> Result<(), Error> {
    if source_key.is_empty() {
        return Ok(());
    }
    let target = target_identity(c, version, relid).await?;
    let mut source: Vec<String> = source_key.iter().map(|s| s.to_string()).collect();
    source.sort();
    if target.is_empty() || target == source {
        return Ok(());
    }
    let cols = |v: &[String]| {
        v.iter()
            .map(|c| quote::ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let index: Option<String> = c
        .query_opt(
            portable(
                "SELECT quote_ident(ic.relname) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
             WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL \
               AND NOT i.indisreplident \
               AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a \
                    WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey[0:i.indnkeyatts - 1])) = $2::text[] \
             LIMIT 1",
                version,
            )
            .as_ref(),
            &[&relid, &source],
        )
        .await
        .map_err(|e| sql_error("looking for a matching unique index on the target", e))?
        .map(|r| r.get(0));
    let fix = match index {
        Some(ix) => format!("ALTER TABLE {name} REPLICA IDENTITY USING INDEX {ix};"),
        None => format!(
            "create the source's unique index on ({}) on the target, then \
             ALTER TABLE {name} REPLICA IDENTITY USING INDEX <that index>;",
            cols(&source)
        ),
    };
    Err(Error::failed(format!(
        "replica identity changed on the source: {name} is now identified by ({}) there but by ({}) \
         on the target. Apply stopped here and the slot keeps every change: run on the target\n  {fix}\n\
         then start the task again",
        cols(&source),
        cols(&target)
    )))
}

/// Whether a unique index or exclusion constraint of the target table (or of its
/// partitions) covers a column outside `key` (or an expression).
async fn unique_beyond_key(
    c: &Client,
    version: i32,
    relid: u32,
    key: &[&str],
) -> Result<bool, Error> {
    let key: Vec<String> = key.iter().map(|s| s.to_string()).collect();
    let row = c
        .query_one(
            portable(
                "WITH RECURSIVE parts(r) AS (SELECT $1::oid UNION ALL \
               SELECT i.inhrelid FROM pg_inherits i JOIN parts p ON i.inhparent = p.r) \
             SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid IN (SELECT r FROM parts) \
               AND (i.indisunique OR EXISTS (SELECT 1 FROM pg_constraint k \
                                             WHERE k.conindid = i.indexrelid AND k.contype = 'x')) \
               AND (i.indexprs IS NOT NULL OR EXISTS (SELECT 1 FROM pg_attribute a \
                    WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey[0:i.indnkeyatts - 1]) \
                      AND NOT a.attname::text = ANY ($2::text[]))))",
                version,
            )
            .as_ref(),
            &[&relid, &key],
        )
        .await
        .map_err(|e| sql_error("reading a target table's unique indexes", e))?;
    Ok(row.get(0))
}

/// Whether `col = value` parses for a type on the target: a default btree or hash operator
/// class for the type, or for one it turns into implicitly without a conversion (varchar
/// to text, cidr to inet; not xml, whose binary cast to text is explicit only); arrays and
/// composites when their elements have one; domains by their base type; enums and ranges
/// always.
async fn has_equality(c: &Client, typ: u32, cache: &mut HashMap<u32, bool>) -> Result<bool, Error> {
    if let Some(&b) = cache.get(&typ) {
        return Ok(b);
    }
    // Recursion guard: a type that reaches itself is taken as lacking one.
    cache.insert(typ, false);
    let row = c
        .query_one(
            "SELECT t.typtype::text, t.typbasetype, \
                    CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE 0::oid END, t.typrelid, \
                    EXISTS (SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod \
                            WHERE oc.opcdefault AND am.amname IN ('btree', 'hash') \
                              AND (oc.opcintype = t.oid OR EXISTS (SELECT 1 FROM pg_cast k \
                                   WHERE k.castsource = t.oid AND k.casttarget = oc.opcintype \
                                     AND k.castmethod = 'b' AND k.castcontext = 'i'))) \
             FROM pg_type t WHERE t.oid = $1",
            &[&typ],
        )
        .await
        .map_err(|e| sql_error("reading a column type on the target", e))?;
    let (kind, base, elem, relid, opclass): (String, u32, u32, u32, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let eq = if opclass || matches!(kind.as_str(), "e" | "r" | "m") {
        true
    } else if kind == "d" {
        Box::pin(has_equality(c, base, cache)).await?
    } else if elem != 0 {
        Box::pin(has_equality(c, elem, cache)).await?
    } else if kind == "c" {
        let attrs = c
            .query(
                "SELECT atttypid FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
                &[&relid],
            )
            .await
            .map_err(|e| sql_error("reading a composite type on the target", e))?;
        let mut all = true;
        for a in attrs {
            all &= Box::pin(has_equality(c, a.get(0), cache)).await?;
        }
        all
    } else {
        false
    };
    cache.insert(typ, eq);
    Ok(eq)
}
