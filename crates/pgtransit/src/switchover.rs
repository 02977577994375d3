//! Switchover: fence the source, wait until the target has applied everything written
//! before the fence (an LSN barrier), set the sequences, verify, reroute, and remove the
//! forward replication. The write downtime is measured from the fence to the moment the
//! target takes writes. A barrier that is not reached in time undoes the fence.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use crate::check::Side;
use crate::native::{self, sql_error, Session, StepError};
use crate::quote;
use crate::task::Engine;
use crate::verify;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fence {
    /// No session but the migration's own on the source database: new connections from any
    /// role but superusers are refused (`CONNECTION LIMIT 0`) and the others are ended, so
    /// no application role can write, whatever it sets for itself.
    Readonly,
    /// A command that stops the writers (a load balancer, an application switch).
    Hook(String),
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reroute {
    /// A command run with PGTRANSIT_TARGET (the target, no password) in its environment.
    Hook(String),
    None,
}

#[derive(Clone, Debug)]
pub struct SwitchoverOptions {
    pub fence: Fence,
    pub reroute: Reroute,
    /// Refuse to start when the apply is further behind than this.
    pub max_lag_bytes: i64,
    pub barrier_timeout: Duration,
    pub seq_shift: i64,
    pub verify: Option<verify::Mode>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SwitchoverReport {
    pub lag_at_start_bytes: i64,
    pub barrier_lsn: String,
    pub barrier_seconds: f64,
    pub sequences_set: usize,
    pub rows_verified: i64,
    /// From the fence until the target took writes (sequences set, verified, rerouted).
    pub downtime_seconds: f64,
    pub fence: String,
    pub rerouted: bool,
}

fn lit(s: &str) -> String {
    quote::literal(s)
}

/// How far the target's apply is behind the source's current WAL, in bytes.
async fn lag(s: &mut Session<'_>) -> Result<(i64, Option<String>), StepError> {
    let task = s.task;
    let applied: Option<String> = match task.engine {
        Engine::Stream => {
            let origin = crate::stream::origin_name(task);
            s.client(Side::Target)
                .await?
                .query_one(
                    "SELECT pg_replication_origin_progress($1, true)::text",
                    &[&origin],
                )
                .await
                .map_err(|e| sql_error("reading the apply position (on the target)", e))?
                .get(0)
        }
        Engine::Native => s
            .client(Side::Source)
            .await?
            .query_opt(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&task.slot],
            )
            .await
            .map_err(|e| sql_error("reading the slot (on the source)", e))?
            .and_then(|r| r.get(0)),
    };
    let Some(applied) = applied else {
        return Ok((i64::MAX, None));
    };
    let lag: i64 = s
        .client(Side::Source)
        .await?
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn)::bigint",
            &[&applied],
        )
        .await
        .map_err(|e| sql_error("measuring the lag (on the source)", e))?
        .get(0);
    Ok((lag, Some(applied)))
}

/// Run a hook command; its failure is an error.
async fn hook(cmd: &str, what: &str, target: &str) -> Result<(), StepError> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PGTRANSIT_TARGET", target)
        .output()
        .await
        .map_err(|e| StepError::failed(format!("{what} hook `{cmd}`: {e}")))?;
    if !out.status.success() {
        return Err(StepError::failed(format!(
            "{what} hook `{cmd}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The readonly fence: the database takes no new connection from any role but superusers
/// (`CONNECTION LIMIT 0`; the migration's own role is one), and every other client session
/// is ended, so no application role can write, whatever it sets for itself. `undo` puts
/// the previous limit back.
async fn fence_readonly(c: &Client, db: &str, undo: Option<i32>) -> Result<i32, StepError> {
    let before: i32 = c
        .query_one(
            "SELECT datconnlimit FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .map_err(|e| sql_error("reading the source database's connection limit", e))?
        .get(0);
    let limit = undo.unwrap_or(0);
    c.batch_execute(&format!(
        "ALTER DATABASE {} WITH CONNECTION LIMIT {limit}",
        quote::ident(db)
    ))
    .await
    .map_err(|e| sql_error("fencing the source database", e))?;
    if undo.is_none() {
        // Sessions already open could still write: end them (walsenders are not client
        // backends, and this session is the migration's).
        c.batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .await
        .map_err(|e| sql_error("ending the source's other sessions", e))?;
    }
    Ok(before)
}

/// The barrier is reached when the target has applied a marker written after the fence.
async fn wait_barrier(
    s: &mut Session<'_>,
    marker: &str,
    timeout: Duration,
) -> Result<bool, StepError> {
    let started = Instant::now();
    loop {
        let (_, applied) = lag(s).await?;
        if let Some(a) = applied {
            let reached: bool = s
                .client(Side::Source)
                .await?
                .query_one(
                    // Past the marker's start: an idle slot can be confirmed exactly up to
                    // where the marker was then written.
                    "SELECT $1::text::pg_lsn > $2::text::pg_lsn",
                    &[&a, &marker],
                )
                .await
                .map_err(|e| sql_error("comparing positions", e))?
                .get(0);
            if reached {
                return Ok(true);
            }
        }
        if started.elapsed() >= timeout {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fence, barrier, sequences, verify, reroute. The forward replication is removed by the
/// caller afterwards (it owns the worker).
pub async fn switchover(
    s: &mut Session<'_>,
    o: &SwitchoverOptions,
) -> Result<SwitchoverReport, StepError> {
    let task = s.task;
    let target_conninfo = s.spec(Side::Target)?.conninfo_without_password();
    let db = task.source.dbname();
    let mut r = SwitchoverReport {
        fence: match &o.fence {
            Fence::Readonly => "readonly".into(),
            Fence::Hook(c) => format!("hook: {c}"),
            Fence::None => "none".into(),
        },
        ..Default::default()
    };
    let (lag0, _) = lag(s).await?;
    r.lag_at_start_bytes = lag0;
    if lag0 > o.max_lag_bytes {
        return Err(StepError::refused(format!(
            "the target is {} behind the source (more than --max-lag {}): wait for it to catch up, \
             then run switchover again",
            crate::catalog::pretty_bytes(lag0),
            crate::catalog::pretty_bytes(o.max_lag_bytes)
        )));
    }
    if task.engine == Engine::Native {
        let p = native::progress(s).await?;
        if !p.complete {
            return Err(StepError::refused(format!(
                "{} of {} tables are streaming: wait until all are",
                p.streaming, p.total
            )));
        }
    }

    s.say(&format!("  fence ({})", r.fence));
    let fenced_at = Instant::now();
    let mut old_limit = -1;
    match &o.fence {
        Fence::Readonly => {
            old_limit = fence_readonly(s.client(Side::Source).await?, &db, None).await?
        }
        Fence::Hook(cmd) => hook(cmd, "fence", &target_conninfo).await?,
        Fence::None => {}
    }
    // A transactional message after the fence: applied means all before it is applied.
    let marker: String = s
        .client(Side::Source)
        .await?
        .query_one(
            "SELECT pg_logical_emit_message(true, 'pgtransit', 'barrier')::text",
            &[],
        )
        .await
        .map_err(|e| sql_error("writing the barrier (on the source)", e))?
        .get(0);
    r.barrier_lsn = marker.clone();
    s.say(&format!("  barrier at {marker}: waiting for the target"));
    let reached = wait_barrier(s, &marker, o.barrier_timeout).await?;
    r.barrier_seconds = fenced_at.elapsed().as_secs_f64();
    if !reached {
        let undo = match &o.fence {
            Fence::Readonly => fence_readonly(s.client(Side::Source).await?, &db, Some(old_limit))
                .await
                .map(|_| "the source is unfenced and takes writes again".to_string())
                .unwrap_or_else(|e| format!("UNFENCING FAILED ({}): run ALTER DATABASE {} WITH CONNECTION LIMIT {old_limit}", e.message, quote::ident(&db))),
            Fence::Hook(_) => "undo your fence hook's effect".into(),
            Fence::None => "nothing was fenced".into(),
        };
        return Err(StepError::failed(format!(
            "the target did not reach the barrier {marker} within {:.0} s: switchover aborted; {undo}; \
             the task keeps streaming",
            o.barrier_timeout.as_secs_f64()
        )));
    }
    s.say("  sequences from the source");
    r.sequences_set = native::copy_seq(s, o.seq_shift).await?;
    if let Some(mode) = o.verify {
        s.say("  verify");
        let vo = verify::VerifyOptions {
            mode,
            rechecks: 0,
            ..Default::default()
        };
        let say = |l: &str| println!("{l}");
        let v = verify::verify(task, &vo, &say).await?;
        r.rows_verified = v.rows_verified;
        if v.failures() > 0 {
            if o.fence == Fence::Readonly {
                let _ = fence_readonly(s.client(Side::Source).await?, &db, Some(old_limit)).await;
            }
            return Err(StepError {
                kind: crate::native::StepErrorKind::Differences,
                message: format!(
                    "verify found {} differing table(s) after the barrier: switchover aborted, the source is \
                     unfenced; see `pgtransit verify {} --mode checksum`",
                    v.failures(),
                    task.name
                ),
            });
        }
    }
    if let Reroute::Hook(cmd) = &o.reroute {
        s.say("  reroute");
        hook(cmd, "reroute", &target_conninfo).await?;
        r.rerouted = true;
    }
    r.downtime_seconds = fenced_at.elapsed().as_secs_f64();
    Ok(r)
}

/// What the switchover would do, for --dry-run.
pub fn plan(task: &crate::task::Task, o: &SwitchoverOptions) -> Vec<String> {
    let db = task.source.dbname();
    let mut v = vec![format!(
        "[source] check the lag is under {} and (native) every table streams",
        o.max_lag_bytes
    )];
    match &o.fence {
        Fence::Readonly => {
            v.push(format!(
                "[source] ALTER DATABASE {} WITH CONNECTION LIMIT 0;  -- superusers only",
                quote::ident(&db)
            ));
            v.push("[source] SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend';".into());
        }
        Fence::Hook(c) => v.push(format!("[local] sh -c {}", lit(c))),
        Fence::None => v.push("[source] no fence".into()),
    }
    v.push("[source] SELECT pg_logical_emit_message(true, 'pgtransit', 'barrier');".into());
    v.push(format!(
        "[target] wait until the apply has passed that position (at most {:.0} s; else unfence and stop)",
        o.barrier_timeout.as_secs_f64()
    ));
    v.push(format!(
        "[target] set every sequence from the source, shifted by {}",
        o.seq_shift
    ));
    if let Some(m) = o.verify {
        v.push(format!("[both] verify --mode {m:?}").to_lowercase());
    }
    if let Reroute::Hook(c) = &o.reroute {
        v.push(format!("[local] sh -c {} (PGTRANSIT_TARGET set)", lit(c)));
    }
    v.push(
        "[both] stop the worker; drop the subscription or slot, the publication and the origin"
            .into(),
    );
    v
}
