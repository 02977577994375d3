//! The tables verify compares: each selected table on the source with its key (primary
//! key, else replica identity index) and its row hash, and the session settings under
//! which both servers write a row's text the same way.

use tokio_postgres::Client;

use crate::error::{sql_error, Error};
use crate::quote;
use crate::task::Task;

/// Settings under which a row's text form is the same on both servers.
pub(super) const CANONICAL: &str = "SET datestyle = 'ISO, YMD'; SET intervalstyle = postgres; \
     SET extra_float_digits = 3; SET timezone = 'UTC'; SET bytea_output = hex; \
     SET default_transaction_read_only = on";

pub(super) struct Table {
    pub(super) name: String,
    /// Key columns, quoted; empty: the table has no key (compared whole).
    pub(super) key: Vec<String>,
    /// A single integer key: chunks are ranges of it.
    pub(super) int_key: bool,
    /// The row hash (PostgreSQL 11+): each column hashed by its type's own extended hash
    /// function (those hash partitioning relies on: no text conversion, stable across
    /// servers), seeded by the column's position and combined by xor; about twice as fast
    /// as `hash_record_extended` over the whole row, which builds a composite per row.
    /// Enums hash their value's oid, which differs between clusters, so enums (also in
    /// arrays, domains or composites), composites and types without a hash function are
    /// hashed by their text. A type whose hash function takes another type is cast to it
    /// where a cast exists (timestamptz to timestamp, under the fixed session time zone),
    /// else hashed by its text (date, boolean, bytea).
    /// Before 11: md5 of the row's text.
    pub(super) hash: String,
}

pub(super) async fn session(spec: &crate::conn::ConnSpec) -> Result<Client, Error> {
    let c = crate::conn::connect(spec).await?;
    c.batch_execute(CANONICAL)
        .await
        .map_err(|e| sql_error("preparing a verify session", e))?;
    Ok(c)
}

/// The task's tables on the source with their keys (primary key, else replica identity
/// index).
pub(super) async fn tables(
    task: &Task,
    source: &Client,
    only: &[String],
) -> Result<Vec<Table>, Error> {
    let rows = source
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, \
                 coalesce((SELECT array_agg(quote_ident(a.attname) ORDER BY k.ord) \
                   FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(att, ord) \
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att \
                   WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident) \
                   AND i.indexrelid = (SELECT i2.indexrelid FROM pg_index i2 WHERE i2.indrelid = c.oid \
                     AND (i2.indisprimary OR i2.indisreplident) ORDER BY i2.indisprimary DESC LIMIT 1)), '{{}}'), \
                 coalesce((SELECT count(*) = 1 AND bool_and(a.atttypid IN (20, 21, 23)) \
                   FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) k(att) \
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att \
                   WHERE i.indrelid = c.oid AND i.indisprimary), false), \
                 CASE WHEN current_setting('server_version_num')::int >= 110000 THEN ( \
                 SELECT coalesce(string_agg(format(CASE WHEN attnotnull THEN '%s(x.%I%s, %s)' \
                          ELSE 'coalesce(%s(x.%I%s, %s), %s)' END, \
                          CASE WHEN textual THEN 'hashtextextended' ELSE fn END, attname, \
                          CASE WHEN textual THEN '::text' ELSE f_cast END, ord, -ord), ' # ' ORDER BY ord), '0') \
                 FROM (SELECT a.attname, a.attnotnull, row_number() OVER (ORDER BY a.attnum) AS ord, f.fn, \
                         coalesce(f.arg_cast, '') AS f_cast, \
                         f.fn IS NULL \
                         OR ty.typtype IN ('e', 'c') OR el.typtype IN ('e', 'c') \
                         OR b.typtype IN ('e', 'c') OR bel.typtype IN ('e', 'c') \
                         OR (coalesce(el.oid, bel.oid) IS NOT NULL AND NOT EXISTS ( \
                           SELECT 1 FROM pg_opclass o JOIN pg_am am ON am.oid = o.opcmethod \
                           WHERE am.amname = 'hash' AND o.opcdefault \
                           AND o.opcintype = coalesce(el.oid, bel.oid))) AS textual \
                       FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid \
                       LEFT JOIN pg_type el ON el.oid = ty.typelem AND ty.typcategory = 'A' \
                       LEFT JOIN pg_type b ON b.oid = ty.typbasetype \
                       LEFT JOIN pg_type bel ON bel.oid = b.typelem AND b.typcategory = 'A' \
                       LEFT JOIN LATERAL ( \
                         SELECT p.amproc::regproc::text AS fn, \
                           CASE WHEN pr.proargtypes[0] = o.opcintype THEN '' \
                                ELSE '::' || format_type(pr.proargtypes[0], NULL) END AS arg_cast \
                         FROM pg_opclass o JOIN pg_am am ON am.oid = o.opcmethod \
                         JOIN pg_amproc p ON p.amprocfamily = o.opcfamily AND p.amprocnum = 2 \
                           AND p.amproclefttype = o.opcintype AND p.amprocrighttype = o.opcintype \
                         JOIN pg_proc pr ON pr.oid = p.amproc \
                         JOIN pg_type at ON at.oid = pr.proargtypes[0] \
                         WHERE (pr.proargtypes[0] = o.opcintype OR (at.typtype <> 'p' AND EXISTS ( \
                           SELECT 1 FROM pg_cast k WHERE k.castsource = o.opcintype \
                           AND k.casttarget = pr.proargtypes[0]))) \
                         AND am.amname = 'hash' AND o.opcdefault AND o.opcintype = CASE \
                           WHEN coalesce(b.typcategory, ty.typcategory) = 'A' THEN 'anyarray'::regtype::oid \
                           WHEN coalesce(b.typtype, ty.typtype) = 'r' THEN 'anyrange'::regtype::oid \
                           WHEN coalesce(b.typtype, ty.typtype) = 'm' THEN to_regtype('anymultirange')::oid \
                           ELSE coalesce(b.oid, ty.oid) END \
                         LIMIT 1) f ON true \
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) cols) END \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'r' AND c.relpersistence = 'p' \
                 AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') \
                 AND {} ORDER BY 1, 2",
                task.objects.sql_table_condition("n.nspname", "c.relname")
            ),
            &[],
        )
        .await
        .map_err(|e| sql_error("listing the tables to verify (on the source)", e))?;
    let wanted = |schema: &str, name: &str| {
        only.is_empty()
            || only.iter().any(|o| {
                let q = quote::qualified(schema, name);
                *o == q || *o == format!("{schema}.{name}") || (!o.contains('.') && o == name)
            })
    };
    Ok(rows
        .iter()
        .filter(|r| wanted(r.get(0), r.get(1)))
        .map(|r| {
            let key: Vec<String> = r.get(2);
            Table {
                name: quote::qualified(r.get(0), r.get(1)),
                int_key: r.get::<_, bool>(3) && key.len() == 1,
                key,
                hash: r.get::<_, Option<String>>(4).unwrap_or_else(|| {
                    "('x' || left(md5(x::text), 16))::bit(64)::bigint".to_string()
                }),
            }
        })
        .collect())
}
