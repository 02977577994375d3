//! Where the target's apply stands, as a source WAL position: what the switchover's barrier
//! and verify's consistent re-checks wait for.

use std::time::{Duration, Instant};

use tokio_postgres::types::PgLsn;
use tokio_postgres::Client;

use crate::error::{sql_error, Error};
use crate::task::{Engine, Task};

/// The source position up to which the target has applied, or None when the task has
/// no replication (no slot).
///
/// The stream engine's replication origin on the target is exact; before its first
/// transaction (a quiet source) it has no position, and the slot's confirmed position,
/// which the stream engine moves only past what it applied, stands in. The native
/// subscription confirms what it applied on the slot.
pub async fn position(
    task: &Task,
    source: &Client,
    target: &Client,
) -> Result<Option<String>, Error> {
    if task.engine == Engine::Stream {
        let origin = crate::stream::origin_name(task);
        let applied: Option<String> = target
            .query_one(
                "SELECT pg_replication_origin_progress($1, true)::text",
                &[&origin],
            )
            .await
            .map_err(|e| sql_error("reading the apply position (on the target)", e))?
            .get(0);
        if applied.is_some() {
            return Ok(applied);
        }
    }
    Ok(source
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&task.slot],
        )
        .await
        .map_err(|e| sql_error("reading the slot (on the source)", e))?
        .and_then(|r| r.get(0)))
}

/// Whether position `a` is past `b`; positions as the server writes them (`16/B374D848`).
pub fn past(a: &str, b: &str) -> Result<bool, Error> {
    let lsn = |x: &str| {
        x.parse::<PgLsn>()
            .map_err(|_| Error::failed(format!("not a WAL position: {x:?}")))
    };
    Ok(lsn(a)? > lsn(b)?)
}

/// Whether something is applying the task's changes now: its slot exists and a walsender
/// streams from it.
pub async fn streaming(task: &Task, source: &Client) -> Result<bool, Error> {
    Ok(source
        .query_opt(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
            &[&task.slot],
        )
        .await
        .map_err(|e| sql_error("reading the slot (on the source)", e))?
        .is_some_and(|r| r.get::<_, bool>(0)))
}

/// Wait until the target has applied past `lsn`, polling every 50 ms for at most `limit`;
/// whether it did. Strictly past: an idle slot can be confirmed exactly up to where a
/// marker is then written.
pub async fn wait_past(
    task: &Task,
    source: &Client,
    target: &Client,
    lsn: &str,
    limit: Duration,
) -> Result<bool, Error> {
    let started = Instant::now();
    loop {
        if let Some(applied) = position(task, source, target).await? {
            if past(&applied, lsn)? {
                return Ok(true);
            }
        }
        if started.elapsed() >= limit {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn positions_compare_as_numbers() {
        assert!(super::past("16/B374D848", "16/B374D847").unwrap());
        assert!(super::past("10/0", "F/FFFFFFFF").unwrap());
        assert!(!super::past("0/10", "0/10").unwrap());
        assert!(super::past("x", "0/1").is_err());
    }
}
