//! Tables: kind, persistence, keys, replica identity, size, and the unique indexes that
//! could serve as replica identity.

use tokio_postgres::Client;

#[derive(Clone, Debug, serde::Serialize)]
pub struct TableInfo {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `r` ordinary, `p` partitioned.
    pub kind: char,
    /// `p` permanent, `u` unlogged, `t` temporary.
    pub persistence: char,
    pub is_partition: bool,
    /// A partition's topmost partitioned ancestor (schema, name).
    pub partition_root: Option<(String, String)>,
    /// Under REPLICA IDENTITY FULL: the columns (`name type`) whose type has no equality
    /// operator (json, point, xml, ...). PostgreSQL's own subscriber cannot match rows with
    /// them; the stream engine compares those columns by their text.
    pub full_without_equality: Vec<String>,
    /// Under REPLICA IDENTITY FULL: the columns (`name type`) whose type has values equal
    /// but written differently (numeric 1.0 = 1.00, float -0 = 0, interval '1 day' =
    /// '24 hours', citext 'A' = 'a'), also inside arrays, ranges and domains. PostgreSQL's
    /// own subscriber changes the first equal row it finds, which need not be the one the
    /// source changed.
    pub full_inexact: Vec<String>,
    /// Has an inheritance parent that is not a partitioned table.
    pub inherits: bool,
    pub has_primary_key: bool,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: char,
    /// The index used under REPLICA IDENTITY USING INDEX.
    pub identity_index: Option<String>,
    /// Constraint types present (`p`, `u`, `f`, `c`, `x`, `t`).
    pub constraint_types: String,
    pub size_bytes: i64,
    pub size_pretty: String,
    /// Extension that owns the table (e.g. postgis for spatial_ref_sys).
    pub extension: Option<String>,
    /// Unique indexes that satisfy REPLICA IDENTITY USING INDEX, best first.
    pub candidates: Vec<IndexCandidate>,
    /// Unique indexes that do not qualify, with the reason.
    pub rejected: Vec<(String, String)>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct IndexCandidate {
    pub name: String,
    pub columns: Vec<String>,
}

impl TableInfo {
    pub fn qualified(&self) -> String {
        crate::quote::qualified(&self.schema, &self.name)
    }
}

const TABLES_SQL: &str = r#"
SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relpersistence::text, c.relispartition,
       EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
               WHERE i.inhrelid = c.oid AND p.relkind = 'r') AS inherits,
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p') AS has_pk,
       c.relreplident::text,
       (SELECT ic.relname FROM pg_index ix JOIN pg_class ic ON ic.oid = ix.indexrelid
         WHERE ix.indrelid = c.oid AND ix.indisreplident) AS identity_index,
       coalesce((SELECT string_agg(DISTINCT k.contype::text, '' ORDER BY k.contype::text)
                 FROM pg_constraint k WHERE k.conrelid = c.oid), '') AS constraint_types,
       CASE WHEN c.relkind = 'p' THEN 0 ELSE pg_total_relation_size(c.oid) END AS size,
       (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
           AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e') AS extension,
       CASE WHEN c.relispartition THEN
         (WITH RECURSIVE up(r, depth) AS (
            SELECT c.oid, 0 UNION ALL
            SELECT i.inhparent, up.depth + 1 FROM up JOIN pg_inherits i ON i.inhrelid = up.r)
          SELECT ARRAY[rn.nspname::text, rc.relname::text] FROM up
          JOIN pg_class rc ON rc.oid = up.r JOIN pg_namespace rn ON rn.oid = rc.relnamespace
          ORDER BY up.depth DESC LIMIT 1)
       END AS partition_root,
       coalesce(fc.without_equality, '{}') AS full_without_equality,
       coalesce(fc.inexact, '{}') AS full_inexact
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
-- Under REPLICA IDENTITY FULL, the columns (name and type) that a subscriber cannot
-- match, and those it cannot match exactly. A domain is taken by its base type, an array
-- by its element, a range by its subtype (for the second list).
LEFT JOIN LATERAL (
  SELECT array_agg(f.col ORDER BY f.attnum) FILTER (WHERE NOT f.has_equality) AS without_equality,
         array_agg(f.col ORDER BY f.attnum) FILTER (WHERE f.inexact) AS inexact
  FROM (
    SELECT a.attnum, quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod) AS col,
           coalesce(e.typtype, t.typtype) IN ('e', 'r', 'm', 'c') OR EXISTS (
             SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
             WHERE oc.opcdefault AND am.amname IN ('btree', 'hash')
               AND (oc.opcintype = coalesce(e.oid, t.oid)
                    OR EXISTS (SELECT 1 FROM pg_cast k WHERE k.castsource = coalesce(e.oid, t.oid)
                               AND k.casttarget = oc.opcintype AND k.castmethod = 'b'))) AS has_equality,
           b.typname IN ('numeric', 'float4', 'float8', 'interval', 'citext') AS inexact
    FROM pg_attribute a
    JOIN pg_type t0 ON t0.oid = a.atttypid
    JOIN pg_type t ON t.oid = CASE WHEN t0.typtype = 'd' THEN t0.typbasetype ELSE t0.oid END
    LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
    LEFT JOIN pg_range r ON r.rngtypid = coalesce(e.oid, t.oid)
    JOIN pg_type b ON b.oid = coalesce(r.rngsubtype, e.oid, t.oid)
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  ) f
) fc ON c.relreplident = 'f'
WHERE c.relkind IN ('r', 'p')
  AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_toast'
ORDER BY n.nspname, c.relname
"#;

/// Unique indexes with what disqualifies each from REPLICA IDENTITY USING INDEX.
const UNIQUE_INDEXES_SQL: &str = r#"
SELECT ix.indrelid, ic.relname,
       ix.indisvalid, ix.indpred IS NOT NULL AS partial, ix.indexprs IS NOT NULL AS expression,
       NOT ix.indimmediate AS deferrable,
       ARRAY(SELECT a.attname FROM unnest(ix.indkey[0:ix.indnkeyatts - 1]) k(attnum)
             JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum) AS columns,
       (SELECT bool_and(a.attnotnull) FROM unnest(ix.indkey[0:ix.indnkeyatts - 1]) k(attnum)
             JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum) AS all_not_null
FROM pg_index ix JOIN pg_class ic ON ic.oid = ix.indexrelid
JOIN pg_class c ON c.oid = ix.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE ix.indisunique AND NOT ix.indisprimary
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY ix.indrelid, ix.indnkeyatts, ic.relname
"#;

/// Every ordinary and partitioned table outside the system schemas, with its unique-index
/// candidates for replica identity.
pub async fn list_tables(client: &Client) -> Result<Vec<TableInfo>, tokio_postgres::Error> {
    let version = super::server_version_num(client).await?;
    let portable = |sql| super::compat::portable(sql, version);
    let mut tables: Vec<TableInfo> = client
        .query(portable(TABLES_SQL).as_ref(), &[])
        .await?
        .iter()
        .map(|r| {
            let size: i64 = r.get("size");
            TableInfo {
                oid: r.get(0),
                schema: r.get(1),
                name: r.get(2),
                kind: first_char(r.get(3)),
                persistence: first_char(r.get(4)),
                is_partition: r.get(5),
                inherits: r.get(6),
                has_primary_key: r.get(7),
                replica_identity: first_char(r.get(8)),
                identity_index: r.get(9),
                constraint_types: r.get(10),
                size_bytes: size,
                size_pretty: pretty_bytes(size),
                extension: r.get(12),
                partition_root: r
                    .get::<_, Option<Vec<String>>>(13)
                    .and_then(|v| Some((v.first()?.clone(), v.get(1)?.clone()))),
                full_without_equality: r.get(14),
                full_inexact: r.get(15),
                candidates: vec![],
                rejected: vec![],
            }
        })
        .collect();
    for r in client
        .query(portable(UNIQUE_INDEXES_SQL).as_ref(), &[])
        .await?
    {
        let relid: u32 = r.get(0);
        let Some(t) = tables.iter_mut().find(|t| t.oid == relid) else {
            continue;
        };
        let name: String = r.get(1);
        let columns: Vec<String> = r.get(6);
        let all_not_null: Option<bool> = r.get(7);
        let reason = if !r.get::<_, bool>(2) {
            Some("is not valid")
        } else if r.get(3) {
            Some("is partial (has a WHERE clause)")
        } else if r.get(4) {
            Some("is on an expression")
        } else if r.get(5) {
            Some("is deferrable")
        } else if !all_not_null.unwrap_or(false) {
            Some("has a nullable column")
        } else {
            None
        };
        match reason {
            Some(why) => t.rejected.push((name, why.to_string())),
            None => t.candidates.push(IndexCandidate { name, columns }),
        }
    }
    Ok(tables)
}

fn first_char(s: String) -> char {
    s.chars().next().unwrap_or('?')
}

/// Sizes as pg_size_pretty writes them.
pub fn pretty_bytes(n: i64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 10240.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{} {}", v.round() as i64, units[u])
}
