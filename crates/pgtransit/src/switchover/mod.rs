//! Switchover: fence the source, wait until the target has applied everything written
//! before the fence (an LSN barrier), set the sequences, verify, reroute, and remove the
//! forward replication. The write downtime is measured from the fence to the moment the
//! target takes writes. A barrier that is not reached in time undoes the fence.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::check::Side;
use crate::error::{sql_error, Error};
use crate::native::{self};
use crate::pgbouncer::Bouncer;
use crate::quote;
use crate::state::now;
use crate::step::{Action, Plan, Session};
use crate::task::{Engine, Task};
use crate::verify;

pub mod write_fence;
pub use write_fence::Revoked;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Fence {
    /// No application role can write to the source, whatever it sets for itself. A
    /// superuser migration role closes the database: new connections from any role but
    /// superusers are refused (`CONNECTION LIMIT 0`) and the others are ended. Any other
    /// migration role would lock itself out that way; it takes the write privileges on the
    /// replicated tables away from every other role instead (`write_fence`).
    Readonly,
    /// PAUSE on pgbouncer's admin console: clients wait instead of failing.
    Pgbouncer,
    /// Both: clients of pgbouncer wait, and whatever connects to the source directly
    /// (a cron job, a second application) is locked out and cannot write to the old
    /// primary after the switch.
    PgbouncerReadonly,
    /// A command that stops the writers (a load balancer, an application switch).
    Hook(String),
    None,
}

impl Fence {
    fn pauses_pgbouncer(&self) -> bool {
        matches!(self, Fence::Pgbouncer | Fence::PgbouncerReadonly)
    }

    /// Whether the source database is closed to all but superusers.
    pub fn readonly(&self) -> bool {
        matches!(self, Fence::Readonly | Fence::PgbouncerReadonly)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Reroute {
    /// Point pgbouncer's database entry at the target, RELOAD, RECONNECT, RESUME.
    Pgbouncer,
    /// A command run with PGTRANSIT_TARGET (the target, no password) in its environment.
    Hook(String),
    None,
}

/// `hook:COMMAND` of `--fence` and `--reroute`.
const HOOK: &str = "hook:";

impl std::str::FromStr for Fence {
    type Err = Error;
    fn from_str(v: &str) -> Result<Fence, Error> {
        match v {
            "readonly" => Ok(Fence::Readonly),
            "pgbouncer" => Ok(Fence::Pgbouncer),
            "pgbouncer+readonly" | "readonly+pgbouncer" => Ok(Fence::PgbouncerReadonly),
            "none" => Ok(Fence::None),
            h if h.starts_with(HOOK) => Ok(Fence::Hook(h[HOOK.len()..].to_string())),
            other => Err(Error::usage(format!(
                "--fence {other}: use readonly, pgbouncer, pgbouncer+readonly, none or hook:COMMAND"
            ))),
        }
    }
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fence::Readonly => f.write_str("readonly"),
            Fence::Pgbouncer => f.write_str("pgbouncer"),
            Fence::PgbouncerReadonly => f.write_str("pgbouncer+readonly"),
            Fence::None => f.write_str("none"),
            Fence::Hook(c) => write!(f, "{HOOK}{c}"),
        }
    }
}

impl std::str::FromStr for Reroute {
    type Err = Error;
    fn from_str(v: &str) -> Result<Reroute, Error> {
        match v {
            "pgbouncer" => Ok(Reroute::Pgbouncer),
            "none" => Ok(Reroute::None),
            h if h.starts_with(HOOK) => Ok(Reroute::Hook(h[HOOK.len()..].to_string())),
            other => Err(Error::usage(format!(
                "--reroute {other}: use pgbouncer, none or hook:COMMAND"
            ))),
        }
    }
}

impl std::fmt::Display for Reroute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reroute::Pgbouncer => f.write_str("pgbouncer"),
            Reroute::None => f.write_str("none"),
            Reroute::Hook(c) => write!(f, "{HOOK}{c}"),
        }
    }
}

// The serde forms are the command line's (`try_from`/`into` String above): a recorded
// switchover reads back as it was given.
impl TryFrom<String> for Fence {
    type Error = Error;
    fn try_from(s: String) -> Result<Fence, Error> {
        s.parse()
    }
}
impl From<Fence> for String {
    fn from(f: Fence) -> String {
        f.to_string()
    }
}
impl TryFrom<String> for Reroute {
    type Error = Error;
    fn try_from(s: String) -> Result<Reroute, Error> {
        s.parse()
    }
}
impl From<Reroute> for String {
    fn from(r: Reroute) -> String {
        r.to_string()
    }
}

impl Fence {
    /// Whether it needs pgbouncer's admin console.
    pub fn uses_pgbouncer(&self) -> bool {
        self.pauses_pgbouncer()
    }
}

#[derive(Clone, Debug)]
pub struct SwitchoverOptions {
    pub fence: Fence,
    pub reroute: Reroute,
    /// Needed by the pgbouncer fence and reroute.
    pub bouncer: Option<Bouncer>,
    /// Refuse to start when the apply is further behind than this.
    pub max_lag_bytes: i64,
    /// Bounds the barrier wait, and pgbouncer's PAUSE.
    pub barrier_timeout: Duration,
    pub seq_shift: i64,
    pub verify: Option<verify::Mode>,
    /// Replication back from the target, started in the fenced window (`--reverse`).
    pub reverse: Option<Task>,
    /// What the target database gets back before it takes writes: a rollback's target is
    /// the old source, fenced readonly by the switchover.
    pub unfence_target: Option<Reopen>,
}

/// How to reopen a database the readonly fence closed.
#[derive(Clone, Debug)]
pub enum Reopen {
    /// Its connection limit before the fence.
    ConnectionLimit(i32),
    /// The write privileges the fence took away.
    Grants(Vec<Revoked>),
}

impl Reopen {
    /// How a switchover's progress says to reopen its source, if it fenced it.
    pub fn from_progress(p: &Progress) -> Option<Reopen> {
        match (&p.revoked, p.old_limit) {
            (Some(r), _) => Some(Reopen::Grants(r.clone())),
            (None, Some(l)) => Some(Reopen::ConnectionLimit(l)),
            (None, None) => None,
        }
    }

    async fn apply(&self, c: &Client, side: &str) -> Result<(), Error> {
        match self {
            Reopen::ConnectionLimit(l) => set_connection_limit(c, *l, side).await.map(|_| ()),
            Reopen::Grants(g) => write_fence::lift(c, g).await,
        }
    }

    /// The statements that reopen it, for messages and --dry-run.
    pub fn sql(&self, db: &str) -> String {
        match self {
            Reopen::ConnectionLimit(l) => format!(
                "ALTER DATABASE {} WITH CONNECTION LIMIT {l};",
                quote::ident(db)
            ),
            Reopen::Grants(g) if g.is_empty() => {
                "nothing (no other role held a write privilege)".into()
            }
            Reopen::Grants(g) => g
                .iter()
                .map(Revoked::grant_sql)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SwitchoverReport {
    /// How far the target was behind right after the fence.
    pub lag_at_fence_bytes: i64,
    pub barrier_lsn: String,
    pub barrier_seconds: f64,
    pub sequences_set: usize,
    pub rows_verified: i64,
    /// From the fence until the target took writes (sequences set, verified, rerouted).
    pub downtime_seconds: f64,
    pub fence: String,
    pub rerouted: bool,
    /// The task replicating back to the old source, with `--reverse`.
    pub reverse: Option<String>,
    /// The switchover continued one that had stopped halfway.
    pub resumed: bool,
    /// UPDATEs and DELETEs the stream apply let pass without finding their row
    /// (`on_missing_row: log`): the target differed from the source in that many rows.
    #[serde(default)]
    pub missing_rows: u64,
}

crate::named::named! {
    /// How far a switchover got, recorded after each phase: running the command again
    /// continues after the last one (or `--undo` undoes the fence).
    #[derive(Default)]
    pub enum Phase {
        #[default]
        Started = "started",
        /// The fence is going up: what lifting it needs (the old connection limit, the
        /// revoked privileges) is recorded, the fence may not hold yet. A rerun puts it up
        /// again.
        Fencing = "fencing",
        /// No other role can write to the source any more.
        Fenced = "fenced",
        Sequences = "sequences",
        Barrier = "barrier",
        Verified = "verified",
        Reversed = "reversed",
        Rerouted = "rerouted",
        /// The forward replication is removed: the switchover is over.
        Done = "done",
        /// Aborted and unfenced: the next switchover starts from the beginning.
        Undone = "undone",
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    /// Unix time of the fence: the downtime counts from it, also across a crash.
    pub fenced_at: f64,
    /// The source database's connection limit before the readonly fence (superuser).
    pub old_limit: Option<i32>,
    /// The write privileges the readonly fence took away (migration role not a superuser).
    #[serde(default)]
    pub revoked: Option<Vec<Revoked>>,
    pub report: SwitchoverReport,
}

impl Progress {
    /// A switchover that stopped after fencing and before its end.
    pub fn in_flight(&self) -> bool {
        self.phase > Phase::Started && self.phase < Phase::Done
    }
}

fn lit(s: &str) -> String {
    quote::literal(s)
}

/// How far the target's apply is behind the source's current WAL, in bytes, and the
/// position it has applied.
async fn lag(s: &mut Session<'_>) -> Result<(i64, Option<String>), Error> {
    let task = s.task;
    let (source, target) = s.both().await?;
    let applied = crate::applied::position(task, source, target).await?;
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
async fn hook(cmd: &str, what: &str, target: &str) -> Result<(), Error> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PGTRANSIT_TARGET", target)
        .output()
        .await
        .map_err(|e| Error::failed(format!("{what} hook `{cmd}`: {e}")))?;
    if !out.status.success() {
        return Err(Error::failed(format!(
            "{what} hook `{cmd}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The database's connection limit, set to `limit`; returns the previous one. The readonly
/// fence sets 0: no new connection from any role but superusers (the migration's own role
/// is one), so no application role can write, whatever it sets for itself.
async fn set_connection_limit(c: &Client, limit: i32, side: &str) -> Result<i32, Error> {
    let (db, before): (String, i32) = c
        .query_one(
            "SELECT datname::text, datconnlimit FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .map_err(|e| sql_error(&format!("reading the {side} database's connection limit"), e))?;
    c.batch_execute(&format!(
        "ALTER DATABASE {} WITH CONNECTION LIMIT {limit}",
        quote::ident(&db)
    ))
    .await
    .map_err(|e| {
        sql_error(
            &format!("setting the {side} database's connection limit"),
            e,
        )
    })?;
    Ok(before)
}

/// Whether the migration role on this connection is a superuser.
async fn is_superuser(c: &Client) -> Result<bool, Error> {
    c.query_one(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
        &[],
    )
    .await
    .map(|r| r.get(0))
    .map_err(|e| sql_error("reading the migration role's attributes (on the source)", e))
}

/// The relations the write fence covers: the task's publication's, with partitions and
/// parents.
async fn fenced_relations(s: &mut Session<'_>) -> Result<Vec<u32>, Error> {
    let publication = s.task.publication.clone();
    write_fence::relations(s.client(Side::Source).await?, &publication, &[])
        .await
        .map_err(|e| sql_error("listing the replicated tables (on the source)", e))
}

/// Sessions already open could still write: end them (walsenders are not client backends,
/// and this session is the migration's).
async fn end_sessions(c: &Client) -> Result<(), Error> {
    c.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )
    .await
    .map_err(|e| sql_error("ending the source's other sessions", e))
}

fn bouncer(o: &SwitchoverOptions) -> Result<&Bouncer, Error> {
    o.bouncer.as_ref().ok_or_else(|| {
        Error::refused(
            "the pgbouncer fence and reroute need --pgbouncer ADMIN_URL and --pgbouncer-config FILE",
        )
    })
}

/// What lifting the fence did: what to say, and whether the source is really unfenced.
struct Unfenced {
    said: String,
    lifted: bool,
}

/// Lift the fence the switchover put up, and check it: says what happened, never that the
/// source takes writes when it does not.
async fn unfence(s: &mut Session<'_>, o: &SwitchoverOptions, p: &Progress) -> Unfenced {
    let mut said = Vec::new();
    let mut lifted = true;
    if let (true, Some(grants)) = (o.fence.readonly(), &p.revoked) {
        let r = match s.client(Side::Source).await {
            Ok(c) => write_fence::lift(c, grants).await,
            Err(e) => Err(e),
        };
        said.push(match r {
            Ok(()) => format!(
                "the source is unfenced and takes writes again ({} write privilege(s) granted back)",
                grants.len()
            ),
            Err(e) => {
                lifted = false;
                format!(
                    "UNFENCING FAILED ({}): run {}",
                    e.message,
                    Reopen::Grants(grants.clone()).sql("")
                )
            }
        });
    } else if o.fence.readonly() {
        let limit = p.old_limit.unwrap_or(-1);
        let db = quote::ident(&s.task.source.dbname());
        let r = match s.client(Side::Source).await {
            Ok(c) => match set_connection_limit(c, limit, "source").await {
                // Read back what the server now has.
                Ok(_) => c
                    .query_one(
                        "SELECT datconnlimit FROM pg_database WHERE datname = current_database()",
                        &[],
                    )
                    .await
                    .map(|r| r.get::<_, i32>(0))
                    .map_err(|e| sql_error("reading the connection limit back", e)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        said.push(match r {
            Ok(now) if now == limit && limit != 0 => {
                "the source is unfenced and takes writes again".to_string()
            }
            Ok(0) if limit == 0 => format!(
                "the source's connection limit is back to 0, as it was before the switchover: \
                 only superusers can connect to it (ALTER DATABASE {db} WITH CONNECTION LIMIT -1 \
                 opens it)"
            ),
            Ok(now) => {
                lifted = false;
                format!(
                    "UNFENCING FAILED: the source's connection limit is {now}, not {limit}: run \
                     ALTER DATABASE {db} WITH CONNECTION LIMIT {limit}"
                )
            }
            Err(e) => {
                lifted = false;
                format!(
                    "UNFENCING FAILED ({}): run ALTER DATABASE {db} WITH CONNECTION LIMIT {limit}",
                    e.message
                )
            }
        });
    }
    if o.fence.pauses_pgbouncer() {
        said.push(match bouncer(o) {
            Ok(b) => match b.resume().await {
                Ok(()) => "pgbouncer resumed: the source is unfenced and takes writes again".into(),
                Err(e) => {
                    lifted = false;
                    format!(
                        "RESUMING PGBOUNCER FAILED ({}): run RESUME {} on its admin console",
                        e.message, b.database
                    )
                }
            },
            Err(e) => {
                lifted = false;
                e.message
            }
        });
    }
    match &o.fence {
        Fence::Hook(_) => said.push("undo your fence hook's effect".into()),
        Fence::None => said.push("nothing was fenced".into()),
        _ => {}
    }
    Unfenced {
        said: said.join("; "),
        lifted,
    }
}

/// `switchover --undo`: lift the fence of a switchover that stopped before the reroute.
pub async fn undo(
    s: &mut Session<'_>,
    o: &SwitchoverOptions,
    p: &mut Progress,
) -> Result<String, Error> {
    if p.phase >= Phase::Rerouted && p.phase != Phase::Undone {
        return Err(Error::refused(
            "the switchover already rerouted the writes to the target: it cannot be undone; \
             `pgtransit rollback` switches back when it ran with --reverse",
        ));
    }
    let u = unfence(s, o, p).await;
    if !u.lifted {
        // The switchover stays in flight: a second --undo tries again.
        return Err(Error::failed(format!(
            "the fence could not be lifted: {}; the switchover stays in flight, run \
             `switchover {} --undo` again once that is done",
            u.said, s.task.name
        )));
    }
    p.phase = Phase::Undone;
    Ok(u.said)
}

/// Start the replication back to the old source in the fenced window: both sides are equal
/// and nothing writes, so it needs no copy. Idempotent, for a resumed switchover.
async fn start_reverse(rev: &Task) -> Result<(), Error> {
    let mut rs = Session::new(rev, |_| {});
    native::create_pub(&mut rs).await?;
    // The reverse slot is marked on the reverse task's target (the old source), as every
    // slot a task creates.
    let target = rs.client(Side::Target).await?;
    crate::marks::claim(target, crate::marks::Kind::Slot, &rev.slot, &rev.name).await?;
    match rev.engine {
        Engine::Native => native::create_sub_without_copy(&mut rs).await,
        Engine::Stream => rs
            .client(Side::Source)
            .await?
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput') \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&rev.slot],
            )
            .await
            .map(|_| ())
            .map_err(|e| sql_error("creating the reverse slot (on the target)", e)),
    }
}

fn fence_label(f: &Fence) -> String {
    match f {
        Fence::Readonly => "readonly".into(),
        Fence::Pgbouncer => "pgbouncer".into(),
        Fence::PgbouncerReadonly => "pgbouncer+readonly".into(),
        Fence::Hook(c) => format!("hook: {c}"),
        Fence::None => "none".into(),
    }
}

/// Fence, sequences, barrier, verify, reverse replication, reroute; `record` is called
/// after each phase with the progress so far, and a progress in flight is continued
/// after its last phase. The forward replication is removed by the caller afterwards (it
/// owns the worker).
pub async fn switchover(
    s: &mut Session<'_>,
    o: &SwitchoverOptions,
    p: &mut Progress,
    record: &mut dyn FnMut(&Progress),
) -> Result<SwitchoverReport, Error> {
    let task = s.task;
    let target_spec = s.spec(Side::Target)?.clone();
    let target_conninfo = target_spec.conninfo_without_password();
    if p.in_flight() {
        p.report.resumed = true;
        s.say(&format!(
            "  continuing the switchover stopped after {} (fenced {:.1} s ago)",
            p.phase,
            now() - p.fenced_at
        ));
        // What lifting the fence needs is recorded before the fence goes up (Fencing), so
        // a switchover may have died before it ended the other sessions or revoked the
        // privileges. Putting the fence up again is harmless and closes that window.
        if o.fence.readonly() && p.phase < Phase::Rerouted {
            match p.revoked.clone() {
                Some(grants) => {
                    let rels = fenced_relations(s).await?;
                    let c = s.client(Side::Source).await?;
                    write_fence::put_up(c, &rels, &grants, o.barrier_timeout).await?;
                }
                None => end_sessions(s.client(Side::Source).await?).await?,
            }
        }
    } else {
        *p = Progress::default();
        p.report.fence = fence_label(&o.fence);
        preconditions(s, o).await?;
        s.say(&format!("  fence ({})", p.report.fence));
        p.fenced_at = now();
        // pgbouncer first: its clients' running transactions finish and new ones wait;
        // then the database closes to everything else.
        if o.fence.pauses_pgbouncer() {
            bouncer(o)?.pause(o.barrier_timeout).await?;
            p.phase = Phase::Fencing;
            record(p);
        }
        if o.fence.readonly() {
            if is_superuser(s.client(Side::Source).await?).await? {
                let c = s.client(Side::Source).await?;
                p.old_limit = Some(set_connection_limit(c, 0, "source").await?);
                p.phase = Phase::Fencing;
                record(p);
                end_sessions(s.client(Side::Source).await?).await?;
            } else {
                // What is revoked is recorded first: a crash after the REVOKE must leave
                // what --undo grants back.
                let rels = fenced_relations(s).await?;
                let c = s.client(Side::Source).await?;
                let grants = write_fence::prepare(c, &rels).await?;
                p.revoked = Some(grants.clone());
                p.phase = Phase::Fencing;
                record(p);
                let c = s.client(Side::Source).await?;
                if let Err(e) = write_fence::put_up(c, &rels, &grants, o.barrier_timeout).await {
                    // put_up granted everything back.
                    p.phase = Phase::Undone;
                    record(p);
                    return Err(e);
                }
            }
        }
        if let Fence::Hook(cmd) = &o.fence {
            hook(cmd, "fence", &target_conninfo).await?;
        }
        p.phase = Phase::Fenced;
        record(p);
    }
    if p.phase < Phase::Sequences {
        // Nothing takes a sequence value any more: read them now.
        s.say("  sequences from the source, at the fence");
        p.report.sequences_set = native::copy_seq(s, o.seq_shift).await?;
        p.phase = Phase::Sequences;
        record(p);
    }
    if p.phase < Phase::Barrier {
        p.report.lag_at_fence_bytes = lag(s).await?.0;
        // A transactional message after the fence: applied means all before it is applied.
        // Its commit is flushed at once (the walsender sends only flushed WAL), also where
        // synchronous_commit is off.
        let marker = s
            .client(Side::Source)
            .await?
            .simple_query(
                "BEGIN; SET LOCAL synchronous_commit = on; \
                 SELECT pg_logical_emit_message(true, 'pgtransit', 'barrier')::text; COMMIT",
            )
            .await
            .map_err(|e| sql_error("writing the barrier (on the source)", e))?
            .into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .ok_or_else(|| Error::failed("the barrier message returned no position"))?;
        p.report.barrier_lsn = marker.clone();
        s.say(&format!("  barrier at {marker}: waiting for the target"));
        let waited = Instant::now();
        let (source, target) = s.both().await?;
        let reached =
            crate::applied::wait_past(task, source, target, &marker, o.barrier_timeout).await?;
        p.report.barrier_seconds = waited.elapsed().as_secs_f64();
        if !reached {
            let undo = unfence(s, o, p).await;
            if undo.lifted {
                p.phase = Phase::Undone;
                record(p);
            }
            return Err(Error::failed(format!(
                "the target did not reach the barrier {marker} within {:.0} s: switchover aborted; {}; \
                 the task keeps streaming",
                o.barrier_timeout.as_secs_f64(),
                undo.said
            )));
        }
        p.phase = Phase::Barrier;
        record(p);
    }
    if p.phase < Phase::Verified {
        if let Some(mode) = o.verify {
            s.say("  verify");
            let vo = verify::VerifyOptions {
                mode,
                rechecks: 0,
                ..Default::default()
            };
            // Verify's lines go where the session's go: the caller decides (text on a
            // terminal, nothing under --json).
            let say = |l: &str| s.say(&format!("    {}", l.trim_start()));
            let v = verify::verify(task, &vo, &say).await?;
            p.report.rows_verified = v.rows_verified;
            if v.failures() > 0 {
                let undo = unfence(s, o, p).await;
                if undo.lifted {
                    p.phase = Phase::Undone;
                    record(p);
                }
                return Err(Error::new(
                    crate::error::ErrorKind::Differences,
                    format!(
                        "verify found {} differing table(s) after the barrier: switchover aborted; {}; \
                         see `pgtransit verify {} --mode checksum`",
                        v.failures(),
                        undo.said,
                        task.name
                    ),
                ));
            }
        }
        p.phase = Phase::Verified;
        record(p);
    }
    if p.phase < Phase::Reversed {
        if let Some(rev) = &o.reverse {
            s.say(&format!(
                "  reverse replication {} (target -> source) from here on",
                rev.name
            ));
            start_reverse(rev).await?;
            p.report.reverse = Some(rev.name.clone());
        }
        p.phase = Phase::Reversed;
        record(p);
    }
    if p.phase < Phase::Rerouted {
        if let Some(reopen) = &o.unfence_target {
            s.say("  the target database takes writes again");
            reopen
                .apply(s.client(Side::Target).await?, "target")
                .await?;
        }
        match &o.reroute {
            Reroute::Pgbouncer => {
                let b = bouncer(o)?;
                s.say(&format!(
                    "  reroute: pgbouncer database {} -> {}",
                    b.database,
                    target_spec.display()
                ));
                b.reroute(&target_spec).await?;
                p.report.rerouted = true;
            }
            Reroute::Hook(cmd) => {
                s.say("  reroute");
                hook(cmd, "reroute", &target_conninfo).await?;
                p.report.rerouted = true;
            }
            Reroute::None => {}
        }
        p.report.downtime_seconds = now() - p.fenced_at;
        p.phase = Phase::Rerouted;
        record(p);
    }
    Ok(p.report.clone())
}

/// The lag is small enough and, for the native engine, every table streams.
async fn preconditions(s: &mut Session<'_>, o: &SwitchoverOptions) -> Result<(), Error> {
    let (lag0, _) = lag(s).await?;
    if lag0 > o.max_lag_bytes {
        return Err(Error::refused(format!(
            "the target is {} behind the source (more than --max-lag {}): wait for it to catch up, \
             then run switchover again",
            crate::catalog::pretty_bytes(lag0),
            crate::catalog::pretty_bytes(o.max_lag_bytes)
        )));
    }
    if s.task.engine == Engine::Native {
        let p = native::progress(s).await?;
        if !p.complete {
            return Err(Error::refused(format!(
                "{} of {} tables are streaming: wait until all are",
                p.streaming, p.total
            )));
        }
    }
    Ok(())
}

/// What the switchover will do, for --dry-run: every phase's actions per side, with the
/// SQL (pgbouncer's console and hooks as the commands they are).
pub fn plan(task: &Task, o: &SwitchoverOptions) -> Plan {
    let db = task.source.dbname();
    let target = task
        .target
        .as_ref()
        .map(|t| t.display())
        .unwrap_or_default();
    let mut v = vec![Action::Inspect {
        side: Side::Source,
        why: format!(
            "the lag must be under {} (the applied position read on the target: the origin, \
             else the slot); the native engine also needs every table streaming",
            crate::catalog::pretty_bytes(o.max_lag_bytes)
        ),
        sql: "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '<applied position>'::pg_lsn);"
            .into(),
    }];
    let console = |what: &str| match &o.bouncer {
        Some(b) => format!(
            "psql {} -c {}",
            quote::literal(&b.admin.with_dbname("pgbouncer").display()),
            quote::literal(&what.replace("{db}", &b.database))
        ),
        None => format!("psql <pgbouncer admin console> -c {}", quote::literal(what)),
    };
    if o.fence.pauses_pgbouncer() {
        v.push(Action::Program {
            why: format!(
                "pgbouncer: running transactions finish, new ones wait (at most {:.0} s)",
                o.barrier_timeout.as_secs_f64()
            ),
            command: console("PAUSE {db}"),
        });
    }
    if o.fence.readonly() {
        v.push(Action::Execute {
            side: Side::Source,
            why: "readonly fence, migration role a superuser: superusers only, the old limit recorded"
                .into(),
            sql: format!(
                "ALTER DATABASE {} WITH CONNECTION LIMIT 0;\n\
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid() AND backend_type = 'client backend';",
                quote::ident(&db)
            ),
        });
        v.push(Action::Execute {
            side: Side::Source,
            why: "readonly fence, migration role not a superuser: the write privileges on the \
                  replicated tables (their partitions and parents) taken from every other \
                  grantee, recorded first; open writers waited out"
                .into(),
            sql: write_fence::plan().join("\n"),
        });
    }
    match &o.fence {
        Fence::Hook(c) => v.push(Action::Program {
            why: "the fence hook".into(),
            command: format!("sh -c {}", lit(c)),
        }),
        Fence::None => v.push(Action::Program {
            why: "no fence: the application must have stopped writing".into(),
            command: "true".into(),
        }),
        _ => {}
    }
    v.extend(native::plan_copy_seq(task, o.seq_shift).actions);
    v.push(Action::Execute {
        side: Side::Source,
        why: "the barrier: a transactional message after the last write".into(),
        sql: "BEGIN; SELECT pg_logical_emit_message(true, 'pgtransit', 'barrier'); COMMIT;".into(),
    });
    v.push(Action::Inspect {
        side: Side::Target,
        why: format!(
            "every 50 ms, at most {:.0} s (else the fence is lifted and the switchover stops): \
             the applied position must pass the barrier",
            o.barrier_timeout.as_secs_f64()
        ),
        sql: match task.engine {
            Engine::Stream => format!(
                "SELECT pg_replication_origin_progress({}, true);",
                lit(&crate::stream::origin_name(task))
            ),
            Engine::Native => format!(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = {};  -- on the source",
                lit(&task.slot)
            ),
        },
    });
    if let Some(m) = o.verify {
        let sql = match m {
            verify::Mode::Count => "SELECT count(*) FROM ONLY <table>;  -- every selected table, both sides at once",
            verify::Mode::Checksum => "SELECT <key>, md5(<row as text>) FROM ONLY <table> ORDER BY <key>;  -- every selected table, both sides at once, merged in key order",
        };
        for side in [Side::Source, Side::Target] {
            v.push(Action::Inspect {
                side,
                why: format!("verify ({m}): a difference aborts and lifts the fence"),
                sql: sql.into(),
            });
        }
    }
    if let Some(rev) = &o.reverse {
        v.extend(
            native::plan_create_pub(rev)
                .actions
                .into_iter()
                .map(|a| a.swap_sides()),
        );
        match rev.engine {
            Engine::Native => v.extend(
                native::plan_create_sub(rev)
                    .actions
                    .into_iter()
                    .map(|a| a.swap_sides()),
            ),
            Engine::Stream => v.push(Action::Execute {
                side: Side::Target,
                why: format!(
                    "(replication connection) the reverse task {}'s slot: the new primary's writes \
                     from here on, no copy (both sides are equal)",
                    rev.name
                ),
                sql: format!(
                    "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput;",
                    quote::ident(&rev.slot)
                ),
            }),
        }
    }
    if let Some(reopen) = &o.unfence_target {
        let db = task.target.as_ref().map(|t| t.dbname()).unwrap_or_default();
        v.push(Action::Execute {
            side: Side::Target,
            why: "the old source, fenced by the switchover, takes the writes again".into(),
            sql: reopen.sql(&db),
        });
    }
    match &o.reroute {
        Reroute::Pgbouncer => {
            v.push(Action::Program {
                why: format!(
                    "pgbouncer: point the entry at {target} in {}, then",
                    o.bouncer
                        .as_ref()
                        .map(|b| b.config.display().to_string())
                        .unwrap_or_else(|| "its config file".into())
                ),
                command: console("RELOAD; RECONNECT {db}; RESUME {db};"),
            });
        }
        Reroute::Hook(c) => v.push(Action::Program {
            why: "the reroute hook (PGTRANSIT_TARGET set to the target, no password)".into(),
            command: format!("sh -c {}", lit(c)),
        }),
        Reroute::None => v.push(Action::Program {
            why: "no reroute: point the application at the target".into(),
            command: "true".into(),
        }),
    }
    v.push(Action::Program {
        why: "stop the task's worker".into(),
        command: format!("kill -TERM <worker of {}>", task.name),
    });
    v.extend(crate::terminate::plan(task).actions);
    if let Some(rev) = &o.reverse {
        v.push(Action::Program {
            why: "start the reverse task's worker".into(),
            command: format!("pgtransit start {}", rev.name),
        });
    }
    Plan {
        step: "switchover",
        actions: v,
    }
}
