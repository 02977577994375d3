//! Precheck of server configuration and privileges on both sides, the target's tables
//! being empty, and the local pg_dump being able to dump the source.

use tokio_postgres::Client;

use super::{version_text, Context, Finding, Severity, Side};
use crate::task::Engine;
use crate::{catalog, quote, tools};

const CHECK: &str = "config";

async fn int_setting(c: &Client, name: &str) -> Result<i64, tokio_postgres::Error> {
    Ok(catalog::setting(c, name).await?.parse().unwrap_or(0))
}

fn restart_fix(name: &str, value: i64) -> String {
    format!("ALTER SYSTEM SET {name} = {value};  -- then restart PostgreSQL")
}

pub async fn check(ctx: &Context<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let mut out = Vec::new();
    let src = ctx.source;
    let native = ctx.task.engine == Engine::Native;

    // Versions.
    if ctx.source_version < 110000 {
        out.push(
            Finding::new(
                CHECK,
                "config.truncate-not-replicated",
                Severity::Warning,
                Side::Source,
                format!(
                    "PostgreSQL {} does not replicate TRUNCATE (11 and later do): a TRUNCATE of \
                     a migrated table during the migration leaves its rows on the target",
                    version_text(ctx.source_version)
                ),
            )
            .fix(
                "do not TRUNCATE migrated tables until the switchover (DELETE is replicated); \
                 the switchover's verify (--verify checksum) finds such a difference",
            ),
        );
    }
    if let Some(tv) = ctx.target_version {
        if tv / 10000 < ctx.source_version / 10000 {
            out.push(Finding::new(CHECK, "config.downgrade", Severity::Warning, Side::Target,
                format!("target PostgreSQL {} is older than the source's {}: the schema dump may use features the target lacks",
                    version_text(tv), version_text(ctx.source_version))));
        }
    }
    if ctx.source_version < 100000 {
        out.push(Finding::new(
            CHECK,
            "config.version",
            Severity::Error,
            Side::Source,
            format!(
                "PostgreSQL {} has no logical replication (10 or later needed)",
                version_text(ctx.source_version)
            ),
        ));
    }

    // wal_level and sender/slot headroom on the source.
    let wal_level = catalog::setting(src, "wal_level").await?;
    if wal_level != "logical" {
        out.push(
            Finding::new(
                CHECK,
                "config.wal-level",
                Severity::Error,
                Side::Source,
                format!("wal_level is {wal_level}: logical replication needs logical"),
            )
            .fix("ALTER SYSTEM SET wal_level = logical;  -- then restart PostgreSQL"),
        );
    }
    // The stream engine needs one slot and one sender; a subscription also opens one slot
    // and one sender per table being synchronised at once.
    let sync = if native { 2 } else { 0 };
    let slots_needed = 1 + sync;
    let max_slots = int_setting(src, "max_replication_slots").await?;
    let used_slots: i64 = src
        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
        .await?
        .get(0);
    if max_slots - used_slots < slots_needed {
        out.push(Finding::new(CHECK, "config.replication-slots", Severity::Error, Side::Source,
            format!("max_replication_slots = {max_slots} with {used_slots} in use: this task needs {slots_needed} free"))
            .fix(restart_fix("max_replication_slots", used_slots + slots_needed + 4)));
    }
    let max_senders = int_setting(src, "max_wal_senders").await?;
    let used_senders: i64 = src
        .query_one("SELECT count(*) FROM pg_stat_replication", &[])
        .await?
        .get(0);
    if max_senders - used_senders < slots_needed {
        out.push(Finding::new(CHECK, "config.wal-senders", Severity::Error, Side::Source,
            format!("max_wal_senders = {max_senders} with {used_senders} in use: this task needs {slots_needed} free"))
            .fix(restart_fix("max_wal_senders", used_senders + slots_needed + 4)));
    }
    let existing_slot: bool = src
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&ctx.task.slot],
        )
        .await?
        .get(0);
    if existing_slot {
        out.push(Finding::new(CHECK, "config.slot-exists", Severity::Warning, Side::Source,
            format!("a replication slot named {} already exists: pgtransit will not drop or reuse it unless told to", ctx.task.slot))
            .object(quote::ident(&ctx.task.slot)));
    }

    // Privileges on the source.
    let r = src
        .query_one(
            "SELECT rolcanlogin, rolreplication, rolsuper, \
                    has_database_privilege(current_database(), 'CREATE') \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    let (login, replication, superuser, create): (bool, bool, bool, bool) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    let me = quote::ident(&ctx.task.source.user());
    if !login {
        out.push(
            Finding::new(
                CHECK,
                "config.login",
                Severity::Error,
                Side::Source,
                format!("role {me} cannot log in"),
            )
            .fix(format!("ALTER ROLE {me} LOGIN;")),
        );
    }
    if !replication && !superuser && ctx.task.replication_user == ctx.task.source.user() {
        out.push(Finding::new(CHECK, "config.replication-privilege", Severity::Error, Side::Source,
            format!("role {me} has neither REPLICATION nor SUPERUSER: it cannot create or read a replication slot"))
            .fix(format!("ALTER ROLE {me} REPLICATION;")));
    }
    if !superuser && !create {
        out.push(
            Finding::new(
                CHECK,
                "config.create-publication",
                Severity::Error,
                Side::Source,
                format!("role {me} lacks CREATE on the database: it cannot create the publication"),
            )
            .fix(format!(
                "GRANT CREATE ON DATABASE {} TO {me};",
                quote::ident(&ctx.task.source.dbname())
            )),
        );
    }
    let mut unreadable = Vec::new();
    let mut not_owned = Vec::new();
    for t in ctx.selected() {
        let row = src
            .query_one(
                "SELECT has_table_privilege($1::oid, 'SELECT'), pg_has_role(c.relowner, 'USAGE') \
                 FROM pg_class c WHERE c.oid = $1::oid",
                &[&t.oid],
            )
            .await?;
        if !row.get::<_, bool>(0) {
            unreadable.push(t.qualified());
        }
        if !row.get::<_, bool>(1) && !superuser {
            not_owned.push(t.qualified());
        }
    }
    if !unreadable.is_empty() {
        out.push(
            Finding::new(
                CHECK,
                "config.select-privilege",
                Severity::Error,
                Side::Source,
                format!(
                    "role {me} cannot read {} table(s): {}",
                    unreadable.len(),
                    unreadable.join(", ")
                ),
            )
            .fix(
                unreadable
                    .iter()
                    .map(|t| format!("GRANT SELECT ON {t} TO {me};"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        );
    }
    if !not_owned.is_empty() {
        out.push(Finding::new(CHECK, "config.publication-ownership", Severity::Error, Side::Source,
            format!("adding a table to a publication needs its ownership or superuser; role {me} does not own: {}", not_owned.join(", ")))
            .fix(format!("run as the tables' owner or a superuser, or GRANT <owner> TO {me};")));
    }

    super::privileges::readonly_fence(ctx, superuser, &mut out).await?;

    if let Some(dst) = ctx.target {
        target_checks(ctx, dst, native, &mut out).await?;
    }
    pg_dump_check(ctx, &mut out).await;
    Ok(out)
}

async fn target_checks(
    ctx: &Context<'_>,
    dst: &Client,
    native: bool,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let tuser = ctx
        .task
        .target
        .as_ref()
        .map(|t| t.user())
        .unwrap_or_default();
    let me = quote::ident(&tuser);
    let db = quote::ident(
        &ctx.task
            .target
            .as_ref()
            .map(|t| t.dbname())
            .unwrap_or_default(),
    );
    let r = dst
        .query_one(
            "SELECT rolsuper, has_database_privilege(current_database(), 'CREATE'), \
                    current_setting('max_logical_replication_workers')::int, \
                    current_setting('max_worker_processes')::int \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    let (superuser, create, max_lrw, max_wp): (bool, bool, i32, i32) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    if !superuser && !create {
        out.push(
            Finding::new(
                CHECK,
                "config.target-create",
                Severity::Error,
                Side::Target,
                format!(
                    "role {me} lacks CREATE on the target database: the schema cannot be created"
                ),
            )
            .fix(format!("GRANT CREATE ON DATABASE {db} TO {me};")),
        );
    }
    // A standby, or sessions that start read-only (server, database or role setting; a
    // fence left up): nothing could be written, and the copy would fail at its first row.
    let r = dst
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'",
            &[],
        )
        .await?;
    let (standby, read_only): (bool, bool) = (r.get(0), r.get(1));
    if standby {
        out.push(
            Finding::new(
                CHECK,
                "config.target-read-only",
                Severity::Error,
                Side::Target,
                "the target is a standby (in recovery): it cannot take writes".to_string(),
            )
            .fix("point --target at a primary, or promote this server first"),
        );
    } else if read_only {
        out.push(
            Finding::new(
                CHECK,
                "config.target-read-only",
                Severity::Error,
                Side::Target,
                format!(
                    "sessions of {me} on the target start read-only \
                     (default_transaction_read_only = on): the copy and the apply cannot write"
                ),
            )
            .fix(format!(
                "find where it is set (SHOW default_transaction_read_only; \
                 SELECT * FROM pg_db_role_setting) and remove it there, e.g. \
                 ALTER DATABASE {db} RESET default_transaction_read_only; or \
                 ALTER ROLE {me} RESET default_transaction_read_only;"
            )),
        );
    }
    if !superuser {
        let version = ctx.target_version.unwrap_or(0);
        super::privileges::target(dst, &tuser, version, native, out).await?;
    }
    if native {
        // One apply worker plus the table synchronisation workers.
        if max_lrw < 2 {
            out.push(Finding::new(CHECK, "config.logical-workers", Severity::Error, Side::Target,
                format!("max_logical_replication_workers = {max_lrw}: the subscription needs at least 2 (apply + sync)"))
                .fix(restart_fix("max_logical_replication_workers", 8)));
        }
        if max_wp < max_lrw + 1 {
            out.push(Finding::new(CHECK, "config.worker-processes", Severity::Error, Side::Target,
                format!("max_worker_processes = {max_wp} leaves no room for {max_lrw} logical replication workers"))
                .fix(restart_fix("max_worker_processes", (max_lrw + 8) as i64)));
        }
    }
    // Target tables that already hold rows are never overwritten.
    for t in ctx.selected().filter(|t| t.kind == 'r') {
        let exists: Option<u32> = dst
            .query_one("SELECT to_regclass($1)::oid", &[&t.qualified()])
            .await?
            .get(0);
        if exists.is_none() {
            continue;
        }
        let nonempty: bool = dst
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM ONLY {})", t.qualified()),
                &[],
            )
            .await?
            .get(0);
        if nonempty {
            out.push(Finding::new(CHECK, "config.target-not-empty", Severity::Error, Side::Target,
                "the target table already holds rows: pgtransit never copies into or truncates a non-empty table unless told to")
                .object(t.qualified())
                .fix(format!("TRUNCATE {};  -- on the target, only if those rows are disposable", t.qualified())));
        }
    }
    Ok(())
}

/// The newest local pg_dump must be at least the source's major and must actually dump it.
async fn pg_dump_check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let source_major = (ctx.source_version / 10000) as u32;
    let target_major = ctx.target_version.map(|v| (v / 10000) as u32);
    let (path, major) = match tools::pg_dump_for(source_major, target_major) {
        Ok(found) => found,
        Err(e) => {
            let code = if tools::newest_client("pg_dump").is_some() {
                "config.pg-dump-too-old"
            } else {
                "config.pg-dump-missing"
            };
            out.push(Finding::new(CHECK, code, Severity::Error, Side::Local, e.problem).fix(e.fix));
            return;
        }
    };
    if let Some(t) = target_major {
        let left_out = tools::restore_filter(major, t);
        if !left_out.is_empty() {
            out.push(Finding::new(
                CHECK,
                "config.pg-dump-newer-than-target",
                Severity::Info,
                Side::Local,
                format!(
                    "{} (version {major}) is newer than the target (PostgreSQL {t}): the schema \
                     is restored through psql, leaving out {} (the target does not know it)",
                    path.display(),
                    left_out
                        .iter()
                        .map(|l| l.trim())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    match tools::pg_dump_probe(&path, &ctx.task.source).await {
        Ok(()) => out.push(Finding::new(
            CHECK,
            "config.pg-dump-ok",
            Severity::Info,
            Side::Local,
            format!(
                "{} (version {major}) can dump the source schema",
                path.display()
            ),
        )),
        Err(e) => out.push(
            Finding::new(
                CHECK,
                "config.pg-dump-failed",
                Severity::Error,
                Side::Local,
                format!("{} cannot dump the source schema: {e}", path.display()),
            )
            .fix(
                "grant the source user read access to every object (or use a superuser) and retry",
            ),
        ),
    }
}
