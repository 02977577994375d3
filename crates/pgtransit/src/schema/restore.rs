//! Running pg_restore into the target. A client of the target's major or older restores
//! straight into it (`pg_restore --dbname`). A newer client may emit settings the target
//! does not know (`SET transaction_timeout = 0` from 17 on, which a 16 or older server
//! rejects, stopping the restore at its first line): then pg_restore writes the SQL, the
//! lines `tools::restore_filter` names are left out, and psql of the same client runs the
//! rest (it also understands the newer clients' `\restrict` lines). That route is serial,
//! so `--jobs` is dropped on it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::conn::ConnSpec;
use crate::error::Error;
use crate::tools;

/// pg_restore with what a restore into this target needs.
pub struct Restorer {
    pub pg_restore: PathBuf,
    /// psql beside pg_restore, for the filtered route.
    psql: PathBuf,
    /// Line prefixes to leave out; empty: restore straight into the target.
    filter: Vec<&'static str>,
}

impl Restorer {
    /// For a client of major `client` (whose pg_restore is beside `pg_dump`) and a target of
    /// major `target`.
    pub fn new(pg_dump: &Path, client: u32, target: u32) -> Restorer {
        Restorer {
            pg_restore: pg_dump.with_file_name("pg_restore"),
            psql: pg_dump.with_file_name("psql"),
            filter: tools::restore_filter(client, target),
        }
    }

    /// Whether the restore goes through the filter (then it is serial).
    pub fn filtered(&self) -> bool {
        !self.filter.is_empty()
    }

    /// Run pg_restore with `args` (the archive last) into `target`.
    pub async fn run(&self, args: &[String], target: &ConnSpec) -> Result<(), Error> {
        if !self.filtered() {
            return super::copy::run_program(&self.pg_restore, args, target)
                .await
                .map(|_| ());
        }
        let args: Vec<&String> = args.iter().filter(|a| !a.starts_with("--jobs")).collect();
        let mut restore = tokio::process::Command::new(&self.pg_restore)
            .args(&args)
            .arg("--file=-")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::failed(format!("running {}: {e}", self.pg_restore.display())))?;
        let mut psql = tokio::process::Command::new(&self.psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .arg(format!("--dbname={}", target.conninfo_without_password()))
            .envs(tools::child_env(target))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::failed(format!("running {}: {e}", self.psql.display())))?;
        let (Some(out), Some(mut into)) = (restore.stdout.take(), psql.stdin.take()) else {
            return Err(Error::failed("pg_restore | psql: no pipe"));
        };
        let mut lines = BufReader::new(out).lines();
        let mut left_out = 0usize;
        // A psql that stopped at an error closes its input: the copy ends, and psql's own
        // message says why.
        while let Ok(Some(line)) = lines.next_line().await {
            if self.filter.iter().any(|p| line.starts_with(p)) {
                left_out += 1;
                continue;
            }
            if into.write_all(line.as_bytes()).await.is_err()
                || into.write_all(b"\n").await.is_err()
            {
                break;
            }
        }
        drop(into);
        let restored = restore
            .wait_with_output()
            .await
            .map_err(|e| Error::failed(format!("pg_restore: {e}")))?;
        let applied = psql
            .wait_with_output()
            .await
            .map_err(|e| Error::failed(format!("psql: {e}")))?;
        if !applied.status.success() {
            return Err(Error::failed(format!(
                "psql (restoring the pg_restore output) failed: {}",
                String::from_utf8_lossy(&applied.stderr).trim()
            )));
        }
        if !restored.status.success() {
            return Err(Error::failed(format!(
                "pg_restore failed: {}",
                String::from_utf8_lossy(&restored.stderr).trim()
            )));
        }
        tracing::debug!("restore: {left_out} line(s) the target does not understand left out");
        Ok(())
    }
}
