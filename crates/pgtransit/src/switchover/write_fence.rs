//! The readonly fence for a migration role that is not a superuser (RDS, Cloud SQL, Azure).
//!
//! `CONNECTION LIMIT 0` admits superusers only, so it would lock such a role out of its own
//! database (the switchover's verify and a later `--undo` could not connect). What such a
//! role can do instead is what the publication already asks of it: it owns the replicated
//! tables. For the fenced window it takes every write privilege on them (and on the
//! partitions and parents through which they can be written) away from every other role,
//! ends its own role's other sessions, and waits until no transaction that wrote before the
//! revoke is still open (a SHARE lock conflicts with every writer). A privilege is checked
//! when each statement starts, so from then on no other role's write succeeds; sessions may
//! stay connected and read. Lifting the fence grants back exactly what was taken.
//!
//! It cannot hold when another login role writes through ownership (it owns a table, or
//! inherits its owner's privileges): such a role is named and the fence refused up front.
//! The migration role's own sessions are ended, but the role should not be the
//! application's: nothing but a superuser fence keeps a role out of tables it owns.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::error::{sql_error, Error};

/// A write privilege the fence took away, to be granted back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The relation, as `regclass` prints it (quoted, schema-qualified where needed).
    pub table: String,
    /// A quoted role name, or PUBLIC.
    pub grantee: String,
    /// INSERT, UPDATE, DELETE or TRUNCATE.
    pub privilege: String,
    pub grantable: bool,
}

impl Revoked {
    pub fn grant_sql(&self) -> String {
        format!(
            "GRANT {} ON TABLE {} TO {}{};",
            self.privilege,
            self.table,
            self.grantee,
            if self.grantable {
                " WITH GRANT OPTION"
            } else {
                ""
            }
        )
    }
}

/// The relations the fence covers: the publication's tables, their partitions (written
/// directly) and their parents (an INSERT into a parent is checked on the parent only).
const RELATIONS_SQL: &str = r#"
WITH RECURSIVE seed AS (
    SELECT c.oid FROM pg_publication_tables pt
    JOIN pg_namespace n ON n.nspname = pt.schemaname
    JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
    WHERE pt.pubname = $1
    UNION SELECT unnest($2::oid[])
), down AS (
    SELECT oid FROM seed
    UNION SELECT i.inhrelid FROM pg_inherits i JOIN down d ON i.inhparent = d.oid
), up AS (
    SELECT oid FROM seed
    UNION SELECT i.inhparent FROM pg_inherits i JOIN up u ON i.inhrelid = u.oid
)
SELECT oid FROM down UNION SELECT oid FROM up
"#;

/// The relations of publication `publication` (absent: none) and of `oids`, with their
/// partitions and parents.
pub async fn relations(
    c: &Client,
    publication: &str,
    oids: &[u32],
) -> Result<Vec<u32>, tokio_postgres::Error> {
    Ok(c.query(RELATIONS_SQL, &[&publication, &oids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Why the write fence cannot hold on `rels`, one line per reason; empty when it can.
/// Roles that may write whatever is revoked: owners and members of owners (not superusers:
/// no fence keeps those out, the connection-limit one neither).
pub async fn refusals(c: &Client, rels: &[u32]) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut out = Vec::new();
    let not_owned: Vec<String> = c
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c WHERE c.oid = ANY($1) \
             AND NOT pg_has_role(current_user, c.relowner, 'USAGE') ORDER BY 1",
            &[&rels],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !not_owned.is_empty() {
        out.push(format!(
            "the migration role does not own {}: it cannot take the write privileges away",
            not_owned.join(", ")
        ));
    }
    let owners: Vec<String> = c
        .query(
            "SELECT DISTINCT quote_ident(r.rolname) || ' (' || c.oid::regclass::text || ')' \
             FROM pg_class c, pg_roles r \
             WHERE c.oid = ANY($1) AND r.rolcanlogin AND NOT r.rolsuper \
               AND r.rolname <> current_user AND pg_has_role(r.oid, c.relowner, 'USAGE') \
             ORDER BY 1",
            &[&rels],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !owners.is_empty() {
        out.push(format!(
            "login role(s) {} write through ownership of the table, which no grant takes away",
            owners.join(", ")
        ));
    }
    Ok(out)
}

/// Every explicit write privilege other roles hold on `rels`.
async fn write_grants(c: &Client, rels: &[u32]) -> Result<Vec<Revoked>, tokio_postgres::Error> {
    Ok(c.query(
        "SELECT c.oid::regclass::text, \
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, \
                    a.privilege_type, a.is_grantable \
             FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a \
             LEFT JOIN pg_roles r ON r.oid = a.grantee \
             WHERE c.oid = ANY($1) AND a.grantee <> c.relowner \
               AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE') \
             ORDER BY 1, 2, 3",
        &[&rels],
    )
    .await?
    .iter()
    .map(|r| Revoked {
        table: r.get(0),
        grantee: r.get(1),
        privilege: r.get(2),
        grantable: r.get(3),
    })
    .collect())
}

/// Login roles (not superusers, not this one) that can still write to one of `rels`.
async fn still_writing(c: &Client, rels: &[u32]) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(c.query(
        "SELECT DISTINCT quote_ident(r.rolname) || ' on ' || c.oid::regclass::text \
             FROM pg_class c, pg_roles r \
             WHERE c.oid = ANY($1) AND r.rolcanlogin AND NOT r.rolsuper \
               AND r.rolname <> current_user \
               AND has_table_privilege(r.oid, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') \
             ORDER BY 1",
        &[&rels],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// What the write fence will take away on `rels`, or why it cannot hold. Nothing changes
/// yet: the caller records the list first, so that a crash after the revoke leaves what to
/// grant back.
pub async fn prepare(c: &Client, rels: &[u32]) -> Result<Vec<Revoked>, Error> {
    let refused = refusals(c, rels)
        .await
        .map_err(|e| sql_error("checking the write fence (on the source)", e))?;
    if !refused.is_empty() {
        return Err(Error::refused(format!(
            "the readonly fence cannot hold for a migration role that is not a superuser: {}; \
             use --fence pgbouncer or a fence hook, or run the switchover as a superuser",
            refused.join("; ")
        )));
    }
    write_grants(c, rels)
        .await
        .map_err(|e| sql_error("reading the write privileges (on the source)", e))
}

/// Take `grants` away, end this role's other sessions, and wait (at most `timeout`) for the
/// transactions that wrote before. Idempotent (a resumed switchover runs it again); on a
/// failure the privileges are granted back before the error is returned.
pub async fn put_up(
    c: &Client,
    rels: &[u32],
    grants: &[Revoked],
    timeout: std::time::Duration,
) -> Result<(), Error> {
    let result = revoke_and_wait(c, rels, grants, timeout).await;
    if result.is_err() {
        let _ = lift(c, grants).await;
    }
    result
}

async fn revoke_and_wait(
    c: &Client,
    rels: &[u32],
    grants: &[Revoked],
    timeout: std::time::Duration,
) -> Result<(), Error> {
    // One transaction: the privileges go at once. CASCADE takes along what a grantee
    // granted onward with its grant option (those grants are in `grants` too and come back
    // granted by the owner).
    let mut sql = String::from("BEGIN;\n");
    for g in grants {
        sql.push_str(&format!(
            "REVOKE {} ON TABLE {} FROM {} CASCADE;\n",
            g.privilege, g.table, g.grantee
        ));
    }
    sql.push_str("COMMIT;");
    c.batch_execute(&sql)
        .await
        .map_err(|e| sql_error("revoking the write privileges (on the source)", e))?;
    let left = still_writing(c, rels)
        .await
        .map_err(|e| sql_error("checking the write fence (on the source)", e))?;
    if !left.is_empty() {
        return Err(Error::failed(format!(
            "the readonly fence did not hold: {} can still write; the privileges are granted back",
            left.join(", ")
        )));
    }
    c.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND backend_type = 'client backend' AND usename = current_user",
    )
    .await
    .map_err(|e| {
        sql_error(
            "ending the migration role's other sessions (on the source)",
            e,
        )
    })?;
    let tables: Vec<String> = c
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c WHERE c.oid = ANY($1) ORDER BY 1",
            &[&rels],
        )
        .await
        .map_err(|e| sql_error("naming the fenced tables (on the source)", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if tables.is_empty() {
        return Ok(());
    }
    let lock = c
        .batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = '{}ms'; LOCK TABLE {} IN SHARE MODE; COMMIT;",
            timeout.as_millis().max(1),
            tables.join(", ")
        ))
        .await;
    if let Err(e) = lock {
        // The failed LOCK leaves this session in an aborted transaction block.
        let _ = c.batch_execute("ROLLBACK").await;
        return Err(sql_error(
            "waiting for the transactions that wrote before the fence (on the source)",
            e,
        ));
    }
    Ok(())
}

/// Grant back what the fence took, and read back that each grantee holds it again.
pub async fn lift(c: &Client, revoked: &[Revoked]) -> Result<(), Error> {
    if revoked.is_empty() {
        return Ok(());
    }
    let sql = revoked
        .iter()
        .map(Revoked::grant_sql)
        .collect::<Vec<_>>()
        .join("\n");
    c.batch_execute(&format!("BEGIN;\n{sql}\nCOMMIT;"))
        .await
        .map_err(|e| sql_error("granting the write privileges back (on the source)", e))?;
    let back = write_grants_of(c, revoked).await?;
    let missing: Vec<&Revoked> = revoked.iter().filter(|r| !back.contains(r)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::failed(format!(
            "{} write privilege(s) are not back: {}",
            missing.len(),
            missing
                .iter()
                .map(|r| r.grant_sql())
                .collect::<Vec<_>>()
                .join(" ")
        )))
    }
}

/// The write grants now held on the tables `revoked` names.
async fn write_grants_of(c: &Client, revoked: &[Revoked]) -> Result<Vec<Revoked>, Error> {
    let mut names: Vec<&str> = revoked.iter().map(|r| r.table.as_str()).collect();
    names.dedup();
    let oids: Vec<u32> = c
        .query(
            "SELECT to_regclass(n)::oid FROM unnest($1::text[]) n WHERE to_regclass(n) IS NOT NULL",
            &[&names],
        )
        .await
        .map_err(|e| sql_error("reading the write privileges back (on the source)", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    write_grants(c, &oids)
        .await
        .map_err(|e| sql_error("reading the write privileges back (on the source)", e))
}

/// The statements the write fence runs, for --dry-run.
pub fn plan() -> Vec<String> {
    vec![
        "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON TABLE <each replicated table, its partitions \
         and parents> FROM <every other grantee> CASCADE;  -- recorded first; --undo and rollback grant them back"
            .into(),
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \
         current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' \
         AND usename = current_user;"
            .into(),
        "BEGIN; SET LOCAL lock_timeout = '<ms>'; LOCK TABLE <those tables> IN SHARE MODE; COMMIT;  \
         -- waits for the transactions that wrote before"
            .into(),
    ]
}
