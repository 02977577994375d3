//! What a migration role that is not a superuser needs, each with the exact GRANT: on the
//! target, the stream engine's apply (`session_replication_role`, the replication origin
//! functions) and the native engine's subscription; on the source, which readonly fence
//! the role can put up. (The source's REPLICATION, CREATE and table ownership are checked
//! in `config`.)

use tokio_postgres::Client;

use super::{Context, Finding, Severity, Side};
use crate::quote;
use crate::switchover::write_fence;

const CHECK: &str = "config";

/// The origin functions the stream engine's apply calls, by signature.
const ORIGIN_FUNCTIONS: &[&str] = &[
    "pg_replication_origin_create(text)",
    "pg_replication_origin_drop(text)",
    "pg_replication_origin_session_setup(text)",
    "pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)",
    "pg_replication_origin_progress(text, boolean)",
];

/// Target checks for a role that is not a superuser; `version` is the target's
/// server_version_num.
pub async fn target(
    dst: &Client,
    me: &str,
    version: i32,
    native: bool,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let who = quote::ident(me);
    if native {
        if version < 160000 {
            out.push(
                Finding::new(
                    CHECK,
                    "config.target-subscription",
                    Severity::Error,
                    Side::Target,
                    format!(
                        "role {who} is not a superuser: before PostgreSQL 16 only a superuser \
                         can CREATE SUBSCRIPTION"
                    ),
                )
                .fix(format!(
                    "use --engine stream (it needs only the grants it names), or ALTER ROLE \
                     {who} SUPERUSER for the migration's duration"
                )),
            );
            return Ok(());
        }
        let member: bool = dst
            .query_one(
                "SELECT pg_has_role(current_user, 'pg_create_subscription', 'USAGE')",
                &[],
            )
            .await?
            .get(0);
        if !member {
            out.push(
                Finding::new(
                    CHECK,
                    "config.target-subscription",
                    Severity::Error,
                    Side::Target,
                    format!("role {who} cannot create the subscription"),
                )
                .fix(format!("GRANT pg_create_subscription TO {who};")),
            );
        }
        out.push(Finding::new(
            CHECK,
            "config.target-subscription-password",
            Severity::Info,
            Side::Target,
            format!(
                "the subscription will belong to {who}, not a superuser: PostgreSQL requires it \
                 to authenticate to the source with a password (password_required)"
            ),
        ));
        return Ok(());
    }
    if version < 150000 {
        out.push(
            Finding::new(
                CHECK,
                "config.target-replication-role",
                Severity::Error,
                Side::Target,
                format!(
                    "role {who} is not a superuser: before PostgreSQL 15 only a superuser can \
                     SET session_replication_role = replica, which the apply needs so that \
                     triggers and foreign keys do not fire twice on replicated rows"
                ),
            )
            .fix(format!(
                "ALTER ROLE {who} SUPERUSER;  -- for the migration's duration"
            )),
        );
    } else {
        let can_set: bool = dst
            .query_one(
                "SELECT has_parameter_privilege('session_replication_role', 'SET')",
                &[],
            )
            .await?
            .get(0);
        if !can_set {
            out.push(
                Finding::new(
                    CHECK,
                    "config.target-replication-role",
                    Severity::Error,
                    Side::Target,
                    format!(
                        "role {who} cannot SET session_replication_role = replica: the apply \
                         needs it so that triggers and foreign keys do not fire twice on \
                         replicated rows"
                    ),
                )
                .fix(format!(
                    "GRANT SET ON PARAMETER session_replication_role TO {who};"
                )),
            );
        }
    }
    let mut missing = Vec::new();
    for f in ORIGIN_FUNCTIONS {
        let ok: bool = dst
            .query_one("SELECT has_function_privilege($1, 'EXECUTE')", &[f])
            .await?
            .get(0);
        if !ok {
            missing.push(*f);
        }
    }
    if !missing.is_empty() {
        out.push(
            Finding::new(
                CHECK,
                "config.target-origin-functions",
                Severity::Error,
                Side::Target,
                format!(
                    "role {who} cannot execute {}: the apply records its position in a \
                     replication origin, in the same transaction as the rows (exactly once)",
                    missing.join(", ")
                ),
            )
            .fix(
                missing
                    .iter()
                    .map(|f| format!("GRANT EXECUTE ON FUNCTION {f} TO {who};"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        );
    }
    Ok(())
}

/// Which readonly fence the source role allows: the connection limit (superuser), the write
/// privileges on the replicated tables (their owner), or none (with why).
pub async fn readonly_fence(
    ctx: &Context<'_>,
    superuser: bool,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let me = quote::ident(&ctx.task.source.user());
    if superuser {
        out.push(Finding::new(
            CHECK,
            "config.readonly-fence",
            Severity::Info,
            Side::Source,
            format!(
                "switchover --fence readonly: {me} is a superuser, so the fence closes the \
                 database to every other role (CONNECTION LIMIT 0) and ends their sessions"
            ),
        ));
        return Ok(());
    }
    let oids: Vec<u32> = ctx.selected_with_partitions().map(|t| t.oid).collect();
    let rels = write_fence::relations(ctx.source, "", &oids).await?;
    let refused = write_fence::refusals(ctx.source, &rels).await?;
    if refused.is_empty() {
        out.push(Finding::new(
            CHECK,
            "config.readonly-fence",
            Severity::Info,
            Side::Source,
            format!(
                "switchover --fence readonly: {me} is not a superuser, so the fence takes the \
                 write privileges on the {} replicated table(s) away from every other role \
                 for the fenced window (CONNECTION LIMIT 0 would lock {me} out too)",
                rels.len()
            ),
        ));
    } else {
        out.push(
            Finding::new(
                CHECK,
                "config.readonly-fence",
                Severity::Warning,
                Side::Source,
                format!(
                    "switchover --fence readonly cannot hold with role {me}: {}",
                    refused.join("; ")
                ),
            )
            .fix(
                "fence with pgbouncer (--fence pgbouncer) or a hook that stops the writers, \
                 or run the switchover as a superuser",
            ),
        );
    }
    Ok(())
}
