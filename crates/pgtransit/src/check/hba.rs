//! Client authentication: the source's pg_hba rules where readable, and a real replication
//! connection as the replication user, which is what the migration will need.

use super::{Context, Finding, Severity, Side};
use crate::conn;

const CHECK: &str = "hba";

pub async fn check(ctx: &Context<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let mut out = Vec::new();
    match ctx
        .source
        .query(
            "SELECT line_number, type, array_to_string(database, ','), \
                    array_to_string(user_name, ','), coalesce(address, ''), \
                    coalesce(netmask, ''), coalesce(auth_method, ''), error \
             FROM pg_hba_file_rules ORDER BY line_number",
            &[],
        )
        .await
    {
        Ok(rows) => {
            let mut lines = Vec::new();
            for r in &rows {
                let line: Option<i32> = r.get(0);
                let error: Option<String> = r.get(7);
                let text = format!(
                    "{:>3}: {} {} {} {} {} {}",
                    line.unwrap_or(0),
                    r.get::<_, Option<String>>(1).unwrap_or_default(),
                    r.get::<_, Option<String>>(2).unwrap_or_default(),
                    r.get::<_, Option<String>>(3).unwrap_or_default(),
                    r.get::<_, String>(4),
                    r.get::<_, String>(5),
                    r.get::<_, String>(6)
                );
                if let Some(e) = error {
                    out.push(
                        Finding::new(
                            CHECK,
                            "hba.rule-error",
                            Severity::Warning,
                            Side::Source,
                            format!("pg_hba.conf line {}: {e}", line.unwrap_or(0)),
                        )
                        .fix("correct the line and reload (SELECT pg_reload_conf())"),
                    );
                }
                lines.push(text);
            }
            out.push(Finding::new(
                CHECK,
                "hba.rules",
                Severity::Info,
                Side::Source,
                format!("{} pg_hba.conf rule(s):\n{}", rows.len(), lines.join("\n")),
            ));
        }
        Err(e) => out.push(Finding::new(
            CHECK,
            "hba.unreadable",
            Severity::Info,
            Side::Source,
            format!(
                "pg_hba_file_rules is not readable by {} ({}): rules not shown",
                ctx.task.source.user(),
                e.as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string())
            ),
        )),
    }

    // The replication user connects to the source with the admin connection's address.
    let repl = ctx.task.source.with_user(&ctx.task.replication_user);
    let repl = if ctx.task.replication_user == ctx.task.source.user() {
        ctx.task.source.clone()
    } else {
        repl
    };
    match conn::connect_replication(&repl).await {
        Ok((system_id, timeline, lsn)) => out.push(Finding::new(
            CHECK,
            "hba.replication-ok",
            Severity::Info,
            Side::Source,
            format!(
                "replication connection as {} works (system {system_id}, timeline {timeline}, WAL at {lsn})",
                repl.display()
            ),
        )),
        Err(e) => out.push(
            Finding::new(
                CHECK,
                "hba.replication-refused",
                Severity::Error,
                Side::Source,
                format!("replication connection as {} failed: {}", repl.display(), e.problem),
            )
            .fix(e.fix),
        ),
    }
    Ok(out)
}
