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
pub async fn pg_dump_probe(pg_dump: &Path, spec: &ConnSpec) -> Result<(), String> {
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
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
