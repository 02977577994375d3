//! The database itself: encoding, collation, ctype, settings, and its extensions with
//! versions, each checked for being installable on the target.

use super::{Context, Finding, Severity, Side};
use crate::quote;

const CHECK: &str = "databases";

const DB_SQL: &str = "SELECT pg_encoding_to_char(encoding), datcollate::text, datctype::text, \
    ARRAY(SELECT unnest(s.setconfig) FROM pg_db_role_setting s \
          WHERE s.setdatabase = d.oid AND s.setrole = 0 ORDER BY 1) \
    FROM pg_database d WHERE datname = current_database()";

pub async fn check(ctx: &Context<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let mut out = Vec::new();
    let src = ctx.source.query_one(DB_SQL, &[]).await?;
    let (enc, coll, ctype, settings): (String, String, String, Vec<String>) =
        (src.get(0), src.get(1), src.get(2), src.get(3));
    let db = quote::ident(&ctx.task.source.dbname());
    out.push(
        Finding::new(
            CHECK,
            "databases.properties",
            Severity::Info,
            Side::Source,
            format!(
                "encoding {enc}, collation {coll}, ctype {ctype}, settings [{}]",
                settings.join(", ")
            ),
        )
        .object(db.clone()),
    );
    if let Some(target) = ctx.target {
        let dst = target.query_one(DB_SQL, &[]).await?;
        let (tenc, tcoll, tctype, tsettings): (String, String, String, Vec<String>) =
            (dst.get(0), dst.get(1), dst.get(2), dst.get(3));
        let tdb = quote::ident(
            &ctx.task
                .target
                .as_ref()
                .map(|t| t.dbname())
                .unwrap_or_default(),
        );
        if tenc != enc {
            out.push(
                Finding::new(
                    CHECK,
                    "databases.encoding",
                    Severity::Error,
                    Side::Target,
                    format!("encoding {tenc} differs from the source's {enc}: text that does not convert fails the copy"),
                )
                .object(tdb.clone())
                .fix(format!("create the target database with ENCODING '{enc}' (createdb -E {enc} -T template0)")),
            );
        }
        if tcoll != coll || tctype != ctype {
            out.push(
                Finding::new(
                    CHECK,
                    "databases.collation",
                    Severity::Warning,
                    Side::Target,
                    format!(
                        "collation/ctype {tcoll}/{tctype} differ from the source's {coll}/{ctype}: \
                         ORDER BY results and unique indexes on text may behave differently"
                    ),
                )
                .object(tdb.clone())
                .fix(format!(
                    "create the target database with LC_COLLATE '{coll}' LC_CTYPE '{ctype}' TEMPLATE template0"
                )),
            );
        }
        let missing: Vec<&String> = settings.iter().filter(|s| !tsettings.contains(s)).collect();
        if !missing.is_empty() {
            let sql = missing
                .iter()
                .filter_map(|s| s.split_once('='))
                .map(|(k, v)| {
                    format!(
                        "ALTER DATABASE {tdb} SET {} = {};",
                        quote::ident(k),
                        quote::literal(v)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            out.push(
                Finding::new(
                    CHECK,
                    "databases.settings",
                    Severity::Warning,
                    Side::Target,
                    format!(
                        "database settings of the source missing on the target: {}",
                        missing
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .object(tdb.clone())
                .fix(sql),
            );
        }
    }
    extensions(ctx, &mut out).await?;
    Ok(out)
}

async fn extensions(
    ctx: &Context<'_>,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let rows = ctx
        .source
        .query(
            "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql' ORDER BY 1",
            &[],
        )
        .await?;
    for r in rows {
        let (name, version, schema): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let obj = quote::ident(&name);
        let Some(target) = ctx.target else {
            out.push(
                Finding::new(
                    CHECK,
                    "databases.extension",
                    Severity::Info,
                    Side::Source,
                    format!("extension {name} {version} in schema {schema}"),
                )
                .object(obj),
            );
            continue;
        };
        let avail = target
            .query(
                "SELECT a.default_version, a.installed_version, \
                        EXISTS (SELECT 1 FROM pg_available_extension_versions v \
                                WHERE v.name = a.name AND v.version = $2) \
                 FROM pg_available_extensions a WHERE a.name = $1",
                &[&name, &version],
            )
            .await?;
        match avail.first() {
            None => out.push(
                Finding::new(
                    CHECK,
                    "databases.extension-missing",
                    Severity::Error,
                    Side::Target,
                    format!(
                        "extension {name} {version} is used on the source but is not installable \
                         on the target: the schema copy fails on CREATE EXTENSION"
                    ),
                )
                .object(obj)
                .fix(format!(
                    "install the extension's package on the target server (Debian: \
                     postgresql-<major>-{name} or the contrib package), and add it to \
                     shared_preload_libraries if it needs that"
                )),
            ),
            Some(a) => {
                let default: String = a.get(0);
                let installed: Option<String> = a.get(1);
                let exact: bool = a.get(2);
                let (sev, msg) = match (&installed, exact) {
                    (Some(v), _) => (Severity::Info, format!("extension {name}: {version} on the source, {v} installed on the target")),
                    (None, true) => (Severity::Info, format!("extension {name} {version}: installable on the target (default {default})")),
                    (None, false) => (Severity::Warning, format!(
                        "extension {name} {version} on the source; the target offers {default} only: \
                         objects from the source's version may differ")),
                };
                out.push(
                    Finding::new(CHECK, "databases.extension", sev, Side::Target, msg).object(obj),
                );
            }
        }
    }
    Ok(())
}
