//! Roles: attributes, memberships and settings of every role that matters to the source
//! database, and whether each exists on the target. Never reads a password hash.

use super::{Context, Finding, Severity, Side};
use crate::quote;

const CHECK: &str = "users";

const ROLES_SQL: &str = r#"
SELECT r.rolname, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolinherit,
       r.rolreplication, r.rolbypassrls, r.rolconnlimit,
       r.rolvaliduntil::text,
       ARRAY(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid
             WHERE m.member = r.oid ORDER BY 1) AS member_of,
       ARRAY(SELECT unnest(s.setconfig) FROM pg_db_role_setting s
             WHERE s.setrole = r.oid AND s.setdatabase IN (0, (SELECT oid FROM pg_database
                                                              WHERE datname = current_database()))
             ORDER BY 1) AS settings
FROM pg_roles r
WHERE r.rolname !~ '^pg_'
ORDER BY 1
"#;

struct Role {
    name: String,
    attrs: Vec<&'static str>,
    member_of: Vec<String>,
    settings: Vec<String>,
}

async fn roles(client: &tokio_postgres::Client) -> Result<Vec<Role>, tokio_postgres::Error> {
    Ok(client
        .query(ROLES_SQL, &[])
        .await?
        .iter()
        .map(|r| {
            let mut attrs = Vec::new();
            for (i, yes, no) in [
                (1, "LOGIN", "NOLOGIN"),
                (2, "SUPERUSER", ""),
                (3, "CREATEDB", ""),
                (4, "CREATEROLE", ""),
                (5, "", "NOINHERIT"),
                (6, "REPLICATION", ""),
                (7, "BYPASSRLS", ""),
            ] {
                let v: bool = r.get(i);
                let a = if v { yes } else { no };
                if !a.is_empty() {
                    attrs.push(a);
                }
            }
            Role {
                name: r.get(0),
                attrs,
                member_of: r.get(10),
                settings: r.get(11),
            }
        })
        .collect())
}

/// `CREATE ROLE` for a role missing on the target: attributes and memberships, no password
/// (set it on the target with \password, or let the role model of the platform do it).
fn create_role_sql(role: &Role) -> String {
    let mut sql = format!("CREATE ROLE {}", quote::ident(&role.name));
    if !role.attrs.is_empty() {
        sql.push_str(&format!(" {}", role.attrs.join(" ")));
    }
    sql.push(';');
    for group in &role.member_of {
        sql.push_str(&format!(
            "\nGRANT {} TO {};",
            quote::ident(group),
            quote::ident(&role.name)
        ));
    }
    for setting in &role.settings {
        if let Some((k, v)) = setting.split_once('=') {
            sql.push_str(&format!(
                "\nALTER ROLE {} SET {} = {};",
                quote::ident(&role.name),
                quote::ident(k),
                quote::literal(v)
            ));
        }
    }
    sql
}

pub async fn check(ctx: &Context<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let mut out = Vec::new();
    let source = roles(ctx.source).await?;
    let target = match ctx.target {
        Some(t) => Some(roles(t).await?),
        None => None,
    };
    for role in &source {
        let describe = format!(
            "{}{}{}",
            if role.attrs.is_empty() {
                "-".into()
            } else {
                role.attrs.join(" ")
            },
            if role.member_of.is_empty() {
                String::new()
            } else {
                format!("; member of {}", role.member_of.join(", "))
            },
            if role.settings.is_empty() {
                String::new()
            } else {
                format!("; settings {}", role.settings.join(", "))
            }
        );
        match target
            .as_ref()
            .map(|t| t.iter().find(|r| r.name == role.name))
        {
            None => out.push(
                Finding::new(CHECK, "users.role", Severity::Info, Side::Source, describe)
                    .object(quote::ident(&role.name)),
            ),
            Some(None) => out.push(
                Finding::new(
                    CHECK,
                    "users.missing-on-target",
                    Severity::Warning,
                    Side::Target,
                    format!(
                        "role missing on the target ({describe}): objects it owns and privileges \
                         granted to it cannot be recreated"
                    ),
                )
                .object(quote::ident(&role.name))
                .fix(create_role_sql(role)),
            ),
            Some(Some(t)) if t.attrs != role.attrs || t.member_of != role.member_of => out.push(
                Finding::new(
                    CHECK,
                    "users.differs",
                    Severity::Info,
                    Side::Target,
                    format!(
                        "exists on the target with other attributes or memberships: source \
                         [{describe}], target [{}; member of {}]",
                        t.attrs.join(" "),
                        t.member_of.join(", ")
                    ),
                )
                .object(quote::ident(&role.name)),
            ),
            Some(Some(_)) => {}
        }
    }
    Ok(out)
}
