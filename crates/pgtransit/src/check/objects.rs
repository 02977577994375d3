//! Objects that logical replication does not carry, or carries with care, and what
//! pgtransit does about each.

use tokio_postgres::Client;

use super::{Context, Finding, Severity, Side};
use crate::quote;
use crate::task::objects_is_internal_schema as is_internal;

const CHECK: &str = "objects";

fn f(code: &'static str, sev: Severity, obj: String, msg: &str) -> Finding {
    Finding::new(CHECK, code, sev, Side::Source, msg).object(obj)
}

/// Relations of a kind with a schema filter applied.
async fn relations(
    ctx: &Context<'_>,
    sql: &str,
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    Ok(ctx
        .source
        .query(sql, &[])
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|(s, n)| ctx.task.objects.includes_table(s, n))
        .collect())
}

pub async fn check(ctx: &Context<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let mut out = Vec::new();
    // A pattern that names nothing is most likely a typo: the migration would leave out
    // what the user meant to move, and say nothing.
    for p in &ctx.task.objects.include {
        if !ctx
            .tables
            .iter()
            .any(|t| p.matches(&t.schema, Some(&t.name)))
        {
            let pattern = String::from(p.clone());
            out.push(
                f(
                    "objects.no-match",
                    Severity::Error,
                    pattern.clone(),
                    &format!(
                        "the object filter {pattern} matches no table on the source: nothing of \
                         it would be moved"
                    ),
                )
                .fix(
                    "check its spelling (schema.table, globs allowed; `pgtransit check objects` \
                      lists the source's tables as info) or remove it",
                ),
            );
        }
    }
    let rel = |kind: &str| {
        format!(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = '{kind}' ORDER BY 1, 2"
        )
    };
    for (s, n) in relations(ctx, &rel("m")).await? {
        out.push(f(
            "objects.materialized-view",
            Severity::Warning,
            quote::qualified(&s, &n),
            "materialized view: not replicated; pgtransit creates it with the schema and \
             refreshes it on the target after the copy (REFRESH MATERIALIZED VIEW); refresh it \
             again at switchover if it must be current",
        ));
    }
    for (s, n) in relations(ctx, &rel("f")).await? {
        out.push(f(
            "objects.foreign-table",
            Severity::Warning,
            quote::qualified(&s, &n),
            "foreign table: not replicated (its data lives elsewhere); its definition is copied \
             with the schema, and the target needs the same foreign server, user mapping and \
             network access",
        ));
    }
    // How the target partitions its tables, when it is given and has them.
    let target_partitions = match ctx.target {
        Some(c) => Some(
            c.query_one(crate::native::sql::TARGET_PARTITIONS, &[])
                .await?
                .get::<_, Option<String>>(0)
                .unwrap_or_default(),
        ),
        None => None,
    };
    for t in ctx.selected() {
        let name = t.qualified();
        if t.persistence == 'u' {
            out.push(f(
                "objects.unlogged-table",
                Severity::Warning,
                name.clone(),
                "unlogged table: writes to it produce no WAL, so it cannot be published; \
                 pgtransit leaves it out of the publication and copies its rows once during \
                 init-data; later changes are not carried",
            ));
        }
        if t.kind == 'p' {
            let differs = match &target_partitions {
                Some(pairs) => partitioned_differently(ctx, t.oid, pairs).await?,
                None => false,
            };
            if differs && ctx.source_version < 130000 {
                // Before 13 there is no root publishing: the leaves' changes would find no
                // such leaves on the target.
                out.push(
                    f(
                        "objects.partitioned-differently",
                        Severity::Error,
                        name.clone(),
                        "partitioned table that the target partitions differently: a source \
                         before PostgreSQL 13 can only publish it leaf by leaf, and the target \
                         has other leaves",
                    )
                    .fix(
                        "partition the target the same way (let init-struct create it), or \
                         upgrade the source to 13 or later first",
                    ),
                );
            } else if differs {
                out.push(f(
                    "objects.partitioned-differently",
                    Severity::Warning,
                    name.clone(),
                    "partitioned table that the target partitions differently: its changes are \
                     published through its root (publish_via_partition_root) and applied to the \
                     target's partitioned table; a TRUNCATE of a single partition on the source is \
                     NOT replicated (truncate the same rows on the target by hand, or partition the \
                     target the same way)",
                ));
            } else {
                out.push(f(
                    "objects.partitioned-table",
                    Severity::Info,
                    name.clone(),
                    "partitioned table: published partition by partition when the target \
                     partitions it the same way (the normal case after init-struct or copy-schema), \
                     so a TRUNCATE of one partition is replicated too; through its root when the \
                     target partitions it differently",
                ));
            }
        }
        if t.inherits {
            out.push(f(
                "objects.inheritance",
                Severity::Warning,
                name.clone(),
                "inherits from another table: parent and child are published and copied each on \
                 its own (COPY ... ONLY), so no row is copied twice; the hierarchy is recreated \
                 with the schema",
            ));
        }
        if let Some(ext) = &t.extension {
            out.push(f(
                "objects.extension-table",
                Severity::Info,
                name.clone(),
                &format!(
                    "belongs to extension {ext}: the extension creates and fills it on the \
                     target, so its rows are not copied (rows added by users must be copied by hand)"
                ),
            ));
        }
    }
    generated_columns(ctx, &mut out).await?;
    sequences(ctx, &mut out).await?;
    large_objects(ctx.source, &mut out).await?;
    event_triggers(ctx.source, &mut out).await?;
    timescale(ctx, &mut out).await?;
    excluded(ctx, &mut out);
    Ok(out)
}

async fn generated_columns(
    ctx: &Context<'_>,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let sql = crate::catalog::compat::portable(
        "SELECT n.nspname, c.relname, a.attname FROM pg_attribute a \
         JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE a.attgenerated <> '' AND NOT a.attisdropped AND c.relkind IN ('r','p') \
         ORDER BY 1, 2, 3",
        ctx.source_version,
    );
    let rows = ctx.source.query(sql.as_ref(), &[]).await?;
    for r in rows {
        let (s, t, col): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        if ctx.task.objects.includes_table(&s, &t) {
            out.push(f(
                "objects.generated-column",
                Severity::Info,
                format!("{}.{}", quote::qualified(&s, &t), quote::ident(&col)),
                "generated column: never copied or replicated; the target computes it",
            ));
        }
    }
    Ok(())
}

async fn sequences(ctx: &Context<'_>, out: &mut Vec<Finding>) -> Result<(), tokio_postgres::Error> {
    let rows = ctx
        .source
        .query(
            "SELECT n.nspname, c.relname, \
                    (SELECT format('%s.%s', quote_ident(tn.nspname), quote_ident(tc.relname)) \
                       || '.' || quote_ident(a.attname) \
                     FROM pg_depend d JOIN pg_class tc ON tc.oid = d.refobjid \
                     JOIN pg_namespace tn ON tn.oid = tc.relnamespace \
                     JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
                     WHERE d.objid = c.oid AND d.classid = 'pg_class'::regclass \
                       AND d.deptype IN ('a', 'i') LIMIT 1) AS owner, \
                    EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid \
                            AND d.classid = 'pg_class'::regclass AND d.deptype = 'i') AS identity \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'S' ORDER BY 1, 2",
            &[],
        )
        .await?;
    for r in rows {
        let (s, n): (String, String) = (r.get(0), r.get(1));
        if !ctx.task.objects.includes_schema(&s) {
            continue;
        }
        let owner: Option<String> = r.get(2);
        let identity: bool = r.get(3);
        let what = match (&owner, identity) {
            (Some(col), true) => format!("identity column {col}"),
            (Some(col), false) => format!("sequence owned by {col}"),
            _ => "sequence".to_string(),
        };
        out.push(f(
            "objects.sequence",
            Severity::Info,
            quote::qualified(&s, &n),
            &format!(
                "{what}: values are not replicated; pgtransit reads them from the source at the \
                 switchover fence and sets them on the target (copy-seq)"
            ),
        ));
    }
    Ok(())
}

async fn large_objects(
    source: &Client,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let n: i64 = source
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await?
        .get(0);
    if n > 0 {
        out.push(
            Finding::new(
                CHECK,
                "objects.large-object",
                Severity::Warning,
                Side::Source,
                format!(
                    "{n} large object(s): logical replication does not carry large objects; \
                     pgtransit copies them during init-data, and changes after that are not \
                     carried: stop writing large objects before switchover, or move them to bytea"
                ),
            )
            .object("pg_largeobject"),
        );
    }
    Ok(())
}

async fn event_triggers(
    source: &Client,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    for r in source
        .query(
            "SELECT evtname, evtevent FROM pg_event_trigger ORDER BY 1",
            &[],
        )
        .await?
    {
        let (name, event): (String, String) = (r.get(0), r.get(1));
        out.push(f(
            "objects.event-trigger",
            Severity::Warning,
            quote::ident(&name),
            &format!(
                "event trigger on {event}: copied with the schema only by a superuser; it does not \
                 fire for replicated changes, and DDL it guards is not replicated"
            ),
        ));
    }
    Ok(())
}

async fn timescale(ctx: &Context<'_>, out: &mut Vec<Finding>) -> Result<(), tokio_postgres::Error> {
    let present: bool = ctx
        .source
        .query_one(
            "SELECT to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !present {
        return Ok(());
    }
    for r in ctx
        .source
        .query(
            "SELECT schema_name::text, table_name::text FROM _timescaledb_catalog.hypertable ORDER BY 1, 2",
            &[],
        )
        .await?
    {
        let (s, n): (String, String) = (r.get(0), r.get(1));
        if is_internal(&s) {
            continue;
        }
        out.push(f(
            "objects.hypertable",
            Severity::Warning,
            quote::qualified(&s, &n),
            "TimescaleDB hypertable: its rows live in chunk tables in _timescaledb_internal, \
             which are not published as the hypertable; create it on the target with \
             create_hypertable() and copy it with the stream engine (which reads the chunks)",
        ));
    }
    Ok(())
}

/// Tables left out by the task's object filter, grouped by schema so a forgotten schema
/// stands out.
fn excluded(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut by_schema: std::collections::BTreeMap<&str, (usize, i64)> = Default::default();
    for t in &ctx.tables {
        if is_internal(&t.schema) || ctx.task.objects.includes_table(&t.schema, &t.name) {
            continue;
        }
        let e = by_schema.entry(&t.schema).or_default();
        e.0 += 1;
        e.1 += t.size_bytes;
    }
    for (schema, (count, bytes)) in by_schema {
        out.push(f(
            "objects.excluded",
            Severity::Info,
            quote::ident(schema),
            &format!(
                "{count} table(s), {} excluded by the task's objects filter: not moved",
                crate::catalog::pretty_bytes(bytes)
            ),
        ));
    }
}

/// Whether the target has the partitioned table `oid` but not every one of the source's
/// partitions under the same parent (`pairs`: the target's `parent>child` lines).
async fn partitioned_differently(
    ctx: &Context<'_>,
    oid: u32,
    pairs: &str,
) -> Result<bool, tokio_postgres::Error> {
    // Written as format('%I.%I') writes it, like the target's pairs.
    let name: String = ctx
        .source
        .query_one(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[&oid],
        )
        .await?
        .get(0);
    let on_target = pairs
        .lines()
        .any(|l| l.split_once('>').is_some_and(|(parent, _)| parent == name));
    if !on_target {
        // Not there yet: init-struct or copy-schema creates it as on the source.
        return Ok(false);
    }
    let source_pairs: Vec<String> = ctx
        .source
        .query(
            "WITH RECURSIVE tree(r) AS (SELECT $1::oid UNION ALL \
               SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.r) \
             SELECT format('%I.%I>%I.%I', pn.nspname, p.relname, cn.nspname, c.relname) \
             FROM tree JOIN pg_inherits i ON i.inhrelid = tree.r \
             JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace \
             JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(source_pairs
        .iter()
        .any(|sp| !pairs.lines().any(|l| l == sp)))
}
