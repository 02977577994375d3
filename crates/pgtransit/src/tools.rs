//! The PostgreSQL client programs of the trade (pg_dump, psql, pg_restore): finding the
//! right one and running it without ever putting a password on its command line.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::conn::ConnSpec;

/// Every copy of `program` we can find: PGTRANSIT_PG_BINDIR, PATH, /usr/lib/postgresql/*/bin.
fn candidates(program: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("PGTRANSIT_PG_BINDIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        dirs.extend(entries.filter_map(|e| e.ok()).map(|e| e.path().join("bin")));
    }
    dirs.into_iter()
        .map(|d| d.join(program))
        .filter(|p| p.is_file())
        .collect()
}

/// Major version printed by `program --version` ("pg_dump (PostgreSQL) 15.18 (...)").
pub fn client_major(path: &Path) -> Option<u32> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2)?;
    version.split('.').next()?.parse().ok()
}

/// The newest copy of `program`, with its major version.
pub fn newest_client(program: &str) -> Option<(PathBuf, u32)> {
    candidates(program)
        .into_iter()
        .filter_map(|p| client_major(&p).map(|m| (p, m)))
        .max_by_key(|(_, m)| *m)
}

/// Why no pg_dump fits a pair of servers, with the fix.
#[derive(Debug)]
pub struct NoClient {
    pub problem: String,
    pub fix: String,
}

/// The pg_dump (with its major) for a source of major `source` and a target of major
/// `target`. `PGTRANSIT_PG_BINDIR` pins it: that one or an error. Otherwise pg_dump must be
/// at least the source's major (it refuses newer servers); among those, the newest that is
/// not newer than the target (its output needs no filtering), else the oldest newer one
/// (the restore then filters out what the target does not understand, see
/// `restore_filter`).
pub fn pg_dump_for(source: u32, target: Option<u32>) -> Result<(PathBuf, u32), NoClient> {
    if let Some(dir) = std::env::var_os("PGTRANSIT_PG_BINDIR") {
        let path = PathBuf::from(&dir).join("pg_dump");
        let major = client_major(&path).ok_or_else(|| NoClient {
            problem: format!(
                "PGTRANSIT_PG_BINDIR={} holds no working pg_dump",
                path.parent().unwrap_or(&path).display()
            ),
            fix: "point PGTRANSIT_PG_BINDIR at the bin folder of a PostgreSQL client, or unset it"
                .into(),
        })?;
        if major < source {
            return Err(NoClient {
                problem: format!(
                    "{} (pinned by PGTRANSIT_PG_BINDIR) is version {major}; it cannot dump a \
                     PostgreSQL {source} server",
                    path.display()
                ),
                fix: format!(
                    "point PGTRANSIT_PG_BINDIR at a PostgreSQL {source} (or newer) client, or unset it"
                ),
            });
        }
        return Ok((path, major));
    }
    let mut all: Vec<(PathBuf, u32)> = candidates("pg_dump")
        .into_iter()
        .filter_map(|p| client_major(&p).map(|m| (p, m)))
        .filter(|(_, m)| *m >= source)
        .collect();
    all.sort_by_key(|(_, m)| *m);
    let fits = |m: u32| target.is_none_or(|t| m <= t);
    let chosen = all
        .iter()
        .rev()
        .find(|(_, m)| fits(*m))
        .or_else(|| all.first())
        .cloned();
    chosen.ok_or_else(|| {
        let newest = newest_client("pg_dump");
        NoClient {
            problem: match newest {
                Some((p, m)) => format!(
                    "the newest pg_dump here, {} (version {m}), cannot dump a PostgreSQL {source} \
                     server: pg_dump must be at least the source's version",
                    p.display()
                ),
                None => "no pg_dump found: the schema copy needs one at least as new as the source"
                    .into(),
            },
            fix: format!(
                "install postgresql-client-{source} (or newer; Debian/Ubuntu from apt.postgresql.org), \
                 or set PGTRANSIT_PG_BINDIR to its bin folder"
            ),
        }
    })
}

/// What a restore must leave out for a target older than the client: settings pg_dump /
/// pg_restore emit that the target's server does not know. (`SET transaction_timeout` from
/// 17 on; a target before 17 rejects it and the restore would stop at its first line.)
pub fn restore_filter(client: u32, target: u32) -> Vec<&'static str> {
    const NEWER_SETTINGS: &[(&str, u32)] = &[("SET transaction_timeout ", 17)];
    if client <= target {
        return Vec::new();
    }
    NEWER_SETTINGS
        .iter()
        .filter(|(_, since)| target < *since)
        .map(|(line, _)| *line)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_client_filters_only_what_the_target_lacks() {
        assert!(restore_filter(15, 15).is_empty());
        assert!(restore_filter(18, 17).is_empty());
        assert_eq!(restore_filter(18, 16), vec!["SET transaction_timeout "]);
        assert_eq!(restore_filter(17, 14), vec!["SET transaction_timeout "]);
    }
}

/// Environment for a child that connects as `spec`: the password, when we have one, goes
/// here and nowhere else.
pub fn child_env(spec: &ConnSpec) -> Vec<(&'static str, String)> {
    let mut env = Vec::new();
    if let Some(pw) = spec.resolve_password() {
        env.push(("PGPASSWORD", pw.expose().to_string()));
    }
    env
}

/// Dump the source schema to nowhere: proves pg_dump can read every selected object.
pub async fn pg_dump_probe(pg_dump: &Path, spec: &ConnSpec) -> crate::Result<()> {
    let out = tokio::process::Command::new(pg_dump)
        .args([
            "--schema-only",
            "--no-owner",
            "--file",
            "/dev/null",
            "--dbname",
        ])
        .arg(spec.conninfo_without_password())
        .envs(child_env(spec))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| crate::Error::failed(format!("cannot run {}: {e}", pg_dump.display())))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(crate::Error::failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
