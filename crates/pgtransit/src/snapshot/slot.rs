//! The slot and its exported snapshot, over a replication connection that stays open (and
//! idle) until every copy worker has imported the snapshot.

use pgwire_replication::ReplicationClient;

use crate::check::Side;
use crate::conn;
use crate::error::Error;
use crate::quote;
use crate::step::Session;

/// A snapshot exported by the creation of a logical slot.
pub struct Exported {
    /// The slot's consistent point: the snapshot sees exactly what committed before it.
    pub lsn: String,
    /// The name workers pass to SET TRANSACTION SNAPSHOT.
    pub snapshot: String,
    /// The exporting session; the snapshot lives as long as it does.
    pub session: ReplicationClient,
}

/// Create the logical slot `name` (pgoutput), exporting its snapshot. A temporary slot
/// disappears with the session: used to get a fresh snapshot with a known position.
pub async fn create(s: &mut Session<'_>, name: &str, temporary: bool) -> Result<Exported, Error> {
    let spec = s.spec(Side::Source)?.clone();
    let mut session = conn::replication_session(&spec).await?;
    // The pre-15 spelling (EXPORT_SNAPSHOT) is still accepted by 15 and later.
    let sql = format!(
        "CREATE_REPLICATION_SLOT {}{} LOGICAL pgoutput EXPORT_SNAPSHOT",
        quote::ident(name),
        if temporary { " TEMPORARY" } else { "" }
    );
    let rows = session.simple_query(&sql).await.map_err(|e| {
        Error::failed(format!(
            "creating the replication slot {} on the source: {e}\n  check max_replication_slots \
             and max_wal_senders on the source (`pgtransit check config`)",
            quote::ident(name)
        ))
    })?;
    let row = rows
        .first()
        .ok_or_else(|| Error::failed("CREATE_REPLICATION_SLOT returned no row"))?;
    let field = |i: usize| -> Result<String, Error> {
        row.get(i)
            .and_then(|v| v.as_ref())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .ok_or_else(|| Error::failed(format!("CREATE_REPLICATION_SLOT returned no column {i}")))
    };
    Ok(Exported {
        lsn: field(1)?,
        snapshot: field(2)?,
        session,
    })
}

/// Drop the logical slot `name` once its walsender or exporting session has let go of it
/// (a moment after that session ended): tried every 250 ms, `tries` times more at most.
/// How many slots were dropped (0: there was none).
pub(crate) async fn drop_when_released(
    c: &tokio_postgres::Client,
    name: &str,
    tries: u32,
) -> Result<u64, tokio_postgres::Error> {
    let mut left = tries;
    loop {
        match c
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
        {
            Ok(n) => return Ok(n),
            Err(_) if left > 0 => {
                left -= 1;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
