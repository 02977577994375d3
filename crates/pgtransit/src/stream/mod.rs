//! The stream engine, part 2: change capture and apply. pgtransit reads its slot (pgoutput)
//! and applies every change to the target, in source order and transaction by transaction.
//! Each target transaction records its source position in a replication origin, atomically
//! with its rows; the slot is acknowledged only up to what the target has committed. A
//! crash anywhere loses nothing and applies nothing twice: a restart resumes from the
//! origin's position.

mod apply;
mod full;
mod pipeline;
mod shown;
mod tables;
mod text;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use pgoutput::{Decoder, Message};
use pgwire_replication::{Lsn, PgWireError, ReplicationClient, ReplicationEvent};
use pipeline::Pipeline;
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::check::Side;
use crate::conn;
use crate::error::{sql_error, sqlstate_lost, Error, ErrorKind};
use crate::snapshot::{message, CopyEvent, Events};
use crate::step::Session;
use crate::task::OnMissingRow;

pub use apply::Counts;
pub use shown::plan_cdc;

/// The walsender's side of conn::PINNED_TEXT_SETTINGS, which the apply session sets: the
/// text pgoutput renders is read back as the same value, whatever either server's defaults
/// (a target in another TimeZone, a DateStyle, bytea_output escape, fewer float digits).
const SESSION_SETTINGS: &str =
    "-c datestyle=ISO,MDY -c intervalstyle=postgres -c extra_float_digits=3 \
     -c timezone=UTC -c bytea_output=hex";

#[derive(Clone, Debug)]
pub enum Until {
    /// Run until stopped.
    Stopped,
    /// Stop once everything up to this source position is applied.
    Lsn(u64),
    /// Stop once caught up with the source's WAL insert position taken at start (the
    /// write position can lag behind commits made with synchronous_commit off).
    SourceNow,
}

#[derive(Clone)]
pub struct CdcOptions {
    pub until: Until,
    /// Set to stop gracefully (SIGTERM, Ctrl-C): the open transaction is rolled back and
    /// will come again; what is committed is acknowledged.
    pub stop: Arc<AtomicBool>,
}

/// Where the change stream stands, published every few seconds while it runs.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct CdcMetrics {
    /// The position of the last change received from the slot.
    pub received_lsn: String,
    /// Committed on the target (and acknowledged to the source).
    pub applied_lsn: String,
    /// The source's WAL end, as its walsender last reported it.
    pub source_lsn: String,
    pub lag_bytes: u64,
    /// How long ago the oldest change not yet applied was committed on the source (0 when
    /// caught up).
    pub lag_seconds: f64,
    /// Source commit time of the last applied transaction (Unix seconds).
    pub last_commit_time: Option<f64>,
    pub transactions: u64,
    pub rows: u64,
    pub transactions_per_second: f64,
    pub rows_per_second: f64,
    /// UPDATEs and DELETEs that found no row on the target, let pass by `on_missing_row:
    /// log` (under `stop` the apply stops at the first).
    pub missing_rows: u64,
    /// The native engine's subscription: tables streaming of all, and apply errors
    /// counted by pg_stat_subscription_stats (15+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables_streaming: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<i64>,
}

/// Unix seconds from PostgreSQL's microseconds since 2000-01-01.
fn pg_time(micros: i64) -> f64 {
    micros as f64 / 1e6 + 946_684_800.0
}

#[derive(Clone, Debug, Serialize)]
pub struct CdcReport {
    pub start_lsn: String,
    pub applied_lsn: String,
    pub transactions: u64,
    pub counts: Counts,
    pub seconds: f64,
}

fn lsn_text(l: u64) -> String {
    format!("{:X}/{:X}", l >> 32, l & 0xFFFF_FFFF)
}

fn parse_lsn(s: &str) -> Result<u64, Error> {
    Lsn::parse(s)
        .map(|l| l.0)
        .map_err(|_| Error::failed(format!("not an LSN: {s}")))
}

/// The origin that records, on the target, how far this task's changes are applied.
pub fn origin_name(task: &crate::task::Task) -> String {
    let mut n = format!("pgtransit_{}", crate::task::slot_safe(&task.name));
    n.truncate(63);
    n
}

fn exec_first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The target session (kept across a source reconnect, opened again after a target
/// restart), the copy's positions, where to start streaming and the source's
/// server_version_num (read again on each connection: a restart may have upgraded it).
async fn prepare(
    s: &mut Session<'_>,
    target_spec: &conn::ConnSpec,
    origin: &str,
    kept: &mut Option<Arc<Client>>,
) -> Result<(Arc<Client>, HashMap<u32, (u64, u64)>, u64, i32), Error> {
    let client = match kept.take() {
        Some(c) if !c.is_closed() => c,
        _ => Arc::new(target_session(target_spec, origin, &s.task.name).await?),
    };
    // A slot another task has marked is not this task's to read: its changes would be
    // consumed for the other.
    let slot = s.task.slot.clone();
    if let Some(owner) = crate::marks::owner(&client, crate::marks::Kind::Slot, &slot).await? {
        if owner != s.task.name {
            return Err(Error::refused(format!(
                "replication slot {} belongs to task {owner} (pgtransit.owned_objects on the \
                 target): this task must not consume its changes; give it its own slot name",
                crate::quote::ident(&slot)
            )));
        }
    }
    let applied = origin_progress(&client, origin).await?;
    let copies = copy_positions(&client, &s.task.name).await?;
    let start = start_position(s, &client, applied).await?;
    // Cached with the session's source connection, and forgotten with it on a reconnect.
    let version = s.version(Side::Source).await?;
    Ok((client, copies, start, version))
}

async fn origin_progress(c: &Client, origin: &str) -> Result<u64, Error> {
    let progress: Option<String> = c
        .query_one(
            "SELECT pg_replication_origin_progress($1, true)::text",
            &[&origin],
        )
        .await
        .map_err(|e| sql_error("reading the replication origin (on the target)", e))?
        .get(0);
    match progress {
        Some(p) => parse_lsn(&p),
        None => Ok(0),
    }
}

async fn target_session(spec: &conn::ConnSpec, origin: &str, task: &str) -> Result<Client, Error> {
    let c = conn::connect(spec).await?;
    let fail = |what: &'static str| move |e| sql_error(what, e);
    c.batch_execute(&format!(
        "SET session_replication_role = replica; SET plan_cache_mode = force_generic_plan; {}; {}",
        conn::PINNED_TEXT_SETTINGS,
        pipeline::EXPECT_ROWS_FUNCTION
    ))
    .await
    .map_err(fail(
        "preparing the apply session on the target (a role that is not a superuser needs \
         GRANT SET ON PARAMETER session_replication_role; `pgtransit check` prints every grant)",
    ))?;
    // Marked as this task's before it exists, so that terminate knows it may drop it. An
    // origin of this name without a mark is adopted: its name carries this task's, and a
    // task created before marks existed has one.
    crate::marks::claim(&c, crate::marks::Kind::Origin, origin, task).await?;
    c.execute(
        "SELECT pg_replication_origin_create($1) WHERE NOT EXISTS \
         (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
        &[&origin],
    )
    .await
    .map_err(fail(
        "creating the replication origin on the target (a role that is not a superuser needs \
         EXECUTE on the pg_replication_origin_* functions; `pgtransit check` prints the grants)",
    ))?;
    // A session of ours that just died may hold the origin for a moment longer.
    let mut tries = 0;
    loop {
        match c
            .execute("SELECT pg_replication_origin_session_setup($1)", &[&origin])
            .await
        {
            Ok(_) => break,
            // Busy is worth waiting for; a missing privilege is not.
            Err(e) if tries < 20 && e.code() != Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                tries += 1;
                tracing::debug!("origin busy: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                let mut err = sql_error("taking the replication origin (on the target)", e);
                err.message.push_str(
                    "\n  is another pgtransit already applying this task? one worker per task",
                );
                return Err(err);
            }
        }
    }
    Ok(c)
}

/// Per target table (by its oid on the target, and for a partitioned one each of its
/// partitions): the lowest and highest snapshot position of its copy.
async fn copy_positions(c: &Client, task: &str) -> Result<HashMap<u32, (u64, u64)>, Error> {
    let exists: bool = c
        .query_one(
            "SELECT to_regclass('pgtransit.copy_progress') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| sql_error("looking for the copy's bookkeeping", e))?
        .get(0);
    if !exists {
        return Ok(HashMap::new());
    }
    // A partitioned table copied as a whole is published leaf by leaf when the target
    // partitions it the same way: its partitions share its positions.
    let rows = c
        .query(
            "WITH RECURSIVE t AS ( \
               SELECT to_regclass(target_name)::oid AS r, min(snapshot_lsn) AS a, max(snapshot_lsn) AS b \
               FROM pgtransit.copy_progress WHERE task = $1 AND done AND to_regclass(target_name) IS NOT NULL \
               GROUP BY 1), \
             d(root, r) AS ( \
               SELECT r, r FROM t \
               UNION ALL \
               SELECT d.root, i.inhrelid FROM d JOIN pg_class c ON c.oid = d.r AND c.relkind = 'p' \
               JOIN pg_inherits i ON i.inhparent = d.r) \
             SELECT DISTINCT ON (d.r) d.r, t.a::text, t.b::text FROM d JOIN t ON t.r = d.root \
             ORDER BY d.r, d.r = d.root DESC",
            &[&task],
        )
        .await
        .map_err(|e| sql_error("reading the copy's positions", e))?;
    let mut m = HashMap::new();
    for r in rows {
        let (name, a, b): (u32, Option<String>, Option<String>) = (r.get(0), r.get(1), r.get(2));
        if let (Some(a), Some(b)) = (a, b) {
            m.insert(name, (parse_lsn(&a)?, parse_lsn(&b)?));
        }
    }
    Ok(m)
}

/// Where streaming starts: after what the origin says is applied, else the copy's
/// consistent point, else the slot's confirmed position.
async fn start_position(s: &mut Session<'_>, target: &Client, applied: u64) -> Result<u64, Error> {
    if applied > 0 {
        return Ok(applied);
    }
    let task = s.task.name.clone();
    let copied: Option<String> = target
        .query_opt(
            "SELECT consistent_lsn::text FROM pgtransit.copy_state WHERE task = $1",
            &[&task],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0));
    if let Some(l) = copied {
        return parse_lsn(&l);
    }
    let slot = s.task.slot.clone();
    let rows = s
        .client(Side::Source)
        .await?
        .query(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| sql_error("reading the slot", e))?;
    match rows.first().and_then(|r| r.get::<_, Option<String>>(0)) {
        Some(l) => parse_lsn(&l),
        None => Err(Error::failed(format!(
            "slot {} does not exist on the source: run init-data first",
            s.task.slot
        ))),
    }
}

/// Stream and apply until `o.until` or `o.stop`. Network errors and server restarts are
/// retried with backoff; a change the target refuses (a schema difference) stops the apply
/// with the reason, keeping the slot and the origin so that a rerun continues.
pub async fn cdc(s: &mut Session<'_>, o: &CdcOptions, events: Events) -> Result<CdcReport, Error> {
    let started = Instant::now();
    let task = s.task;
    let origin = origin_name(task);
    let source = s.spec(Side::Source)?.clone();
    let target_spec = s.spec(Side::Target)?.clone();
    let until = match o.until {
        Until::Stopped => None,
        Until::Lsn(l) => Some(l),
        Until::SourceNow => {
            let l: String = s
                .client(Side::Source)
                .await?
                .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await
                .map_err(|e| sql_error("reading the source position", e))?
                .get(0);
            Some(parse_lsn(&l)?)
        }
    };
    let mut backoff = Duration::from_millis(500);
    let mut run = Run::default();
    run.applier.on_missing = task.on_missing_row;
    let mut first_start = None;
    let mut target: Option<Arc<Client>> = None;
    loop {
        // Once streaming has worked, a failure to reconnect is a server restarting or a
        // network blip: wait and try again. Before that, it is a setup error: report it.
        let setup = prepare(s, &target_spec, &origin, &mut target).await;
        let (client, copies, start, source_version) = match setup {
            Ok(x) => x,
            Err(e)
                if first_start.is_none()
                    || o.stop.load(Ordering::SeqCst)
                    || !matches!(e.kind, ErrorKind::Lost | ErrorKind::Connect) =>
            {
                return Err(e)
            }
            Err(e) => {
                events(message(format!(
                    "  cannot resume yet ({}); retrying in {:.1} s",
                    exec_first_line(&e.message),
                    backoff.as_secs_f64()
                )));
                s.forget(Side::Source);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        first_start.get_or_insert(start);
        run.applied = run.applied.max(start);
        events(message(format!(
            "  streaming slot {} from {} (origin {origin})",
            task.slot,
            lsn_text(start)
        )));
        // pgoutput's `messages` option exists from 14 on (older servers refuse the stream
        // with it); the switchover's barrier is then an empty transaction, which pgoutput
        // before 15 sends as BEGIN/COMMIT all the same.
        let cfg = conn::replication_config(&source, &task.slot, &task.publication)
            .with_start_lsn(Lsn(start))
            .with_messages(source_version >= 140000)
            .with_options(SESSION_SETTINGS);
        let result = match ReplicationClient::connect(cfg).await {
            Ok(mut repl) => {
                // Streaming again: the next blip starts the waits over.
                backoff = Duration::from_millis(500);
                let mut p = Pipeline::new(client.clone());
                let r = stream(&mut repl, &mut p, &copies, until, o, &events, &mut run).await;
                repl.stop();
                r
            }
            Err(e) => Err(replication_interrupted(
                &e,
                conn::replication_error(&source, e.to_string()).to_string(),
            )),
        };
        match result {
            Ok(()) => break,
            Err(Interrupted::Fatal(e)) => return Err(e),
            Err(Interrupted::Network(why)) => {
                if o.stop.load(Ordering::SeqCst) {
                    break;
                }
                if client.is_closed() {
                    target = None;
                } else {
                    target = Some(client);
                }
                events(message(format!(
                    "  connection lost ({}); reconnecting in {:.1} s",
                    exec_first_line(&why),
                    backoff.as_secs_f64()
                )));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        }
    }
    Ok(CdcReport {
        start_lsn: lsn_text(first_start.unwrap_or(0)),
        applied_lsn: lsn_text(run.applied),
        transactions: run.transactions,
        counts: run.applier.counts,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[derive(Default)]
struct Run {
    applied: u64,
    transactions: u64,
    applier: apply::Applier,
    received: u64,
    source_end: u64,
    /// Source commit time of the last applied transaction (Unix seconds).
    last_commit: Option<f64>,
    /// Commit time of the first transaction received but not yet applied.
    oldest_pending: Option<f64>,
    /// Transactions and rows at the last metrics event, and when.
    last_sample: Option<(Instant, u64, u64)>,
    /// Lines for the log, sent with the next event.
    notes: Vec<String>,
}

impl Run {
    fn rows(&self) -> u64 {
        let c = &self.applier.counts;
        c.inserts + c.updates + c.deletes
    }

    fn metrics(&mut self) -> CdcMetrics {
        let now = Instant::now();
        let (rows, txns) = (self.rows(), self.transactions);
        let (tps, rps) = match self.last_sample {
            Some((at, t0, r0)) => {
                let dt = now.duration_since(at).as_secs_f64().max(0.001);
                ((txns - t0) as f64 / dt, (rows - r0) as f64 / dt)
            }
            None => (0.0, 0.0),
        };
        self.last_sample = Some((now, txns, rows));
        let source = self.source_end.max(self.received).max(self.applied);
        let lag_bytes = source.saturating_sub(self.applied);
        let lag_seconds = match self.oldest_pending {
            Some(t) if lag_bytes > 0 => (crate::state::now() - t).max(0.0),
            _ => 0.0,
        };
        CdcMetrics {
            received_lsn: lsn_text(self.received),
            applied_lsn: lsn_text(self.applied),
            source_lsn: lsn_text(source),
            lag_bytes,
            lag_seconds,
            last_commit_time: self.last_commit,
            transactions: txns,
            rows,
            transactions_per_second: tps,
            rows_per_second: rps,
            missing_rows: self.applier.counts.not_found,
            ..Default::default()
        }
    }
}

enum Interrupted {
    /// A connection broke: reconnect and resume from the origin.
    Network(String),
    Fatal(Error),
}

/// Only a lost connection is retried; everything else (a change the target refuses, a
/// missing row) stops the apply. Decided by the error's kind, which comes from the
/// driver's error type and SQLSTATE, never from words in its message.
fn classify(e: Error) -> Interrupted {
    match e.kind {
        ErrorKind::Lost | ErrorKind::Connect => Interrupted::Network(e.message),
        _ => Interrupted::Fatal(e),
    }
}

/// An error of the replication stream: I/O and a worker that died are a lost connection;
/// so is a server error whose SQLSTATE says the server went away, or that the slot is
/// still held by the walsender of our own connection that just broke (55006). Any other
/// server error (a pgoutput option the server does not know, a slot that is gone or
/// invalidated, missing privileges) is fatal: retrying cannot help.
fn replication_interrupted(e: &PgWireError, message: String) -> Interrupted {
    let lost = match e {
        PgWireError::Io(_) | PgWireError::Task(_) => true,
        PgWireError::Server(m) => {
            server_sqlstate(m).is_some_and(|c| sqlstate_lost(c) || c == "55006")
        }
        _ => false,
    };
    if lost {
        Interrupted::Network(message)
    } else {
        Interrupted::Fatal(Error::failed(format!(
            "the source refused the replication stream: {message}"
        )))
    }
}

/// The SQLSTATE pgwire-replication appends to a server error, `... (SQLSTATE 55006)`.
fn server_sqlstate(m: &str) -> Option<&str> {
    let code = m
        .trim_end()
        .strip_suffix(')')?
        .rsplit("(SQLSTATE ")
        .next()?;
    (code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(code)
}

async fn stream(
    repl: &mut ReplicationClient,
    p: &mut Pipeline,
    copies: &HashMap<u32, (u64, u64)>,
    until: Option<u64>,
    o: &CdcOptions,
    events: &Events,
    run: &mut Run,
) -> Result<(), Interrupted> {
    let mut decoder = Decoder::new(1);
    // A new session: nothing of an interrupted transaction is kept, and the statements
    // are prepared again as the Relation messages come.
    run.applier.reset();
    // The open source transaction: its commit LSN, or None.
    let mut open: Option<u64> = None;
    let mut skipping = false;
    // Source transactions applied in the open target transaction but not committed yet.
    let mut group: Option<Group> = None;
    // An event read ahead to see whether more are waiting.
    let mut peeked = None;
    let mut last_report = Instant::now();
    let fatal = classify;
    loop {
        acknowledge(p, repl, run);
        for note in std::mem::take(&mut run.notes) {
            events(message(note));
        }
        // Published also while the stream is idle, so that what `describe` shows is fresh.
        if last_report.elapsed() > METRICS_EVERY {
            last_report = Instant::now();
            events(CopyEvent::Cdc(run.metrics()));
        }
        if o.stop.load(Ordering::SeqCst) {
            if (open.is_some() && !skipping) || group.is_some() {
                rollback(p).await;
            } else {
                let _ = p.drain().await;
                acknowledge(p, repl, run);
            }
            return Ok(());
        }
        // What is already there is taken without arming a timer.
        let received = match peeked.take().or_else(|| repl.recv().now_or_never()) {
            Some(r) => r,
            None => {
                // Nothing is waiting: finish what is in flight (a group's COMMIT) before
                // blocking, so that the target takes it now and the source hears of it,
                // instead of at the next keepalive, up to wal_sender_timeout / 2 later.
                if open.is_none() && group.is_none() && !p.is_idle() {
                    p.drain().await.map_err(classify)?;
                    acknowledge(p, repl, run);
                }
                match tokio::time::timeout(Duration::from_millis(500), repl.recv()).await {
                    Err(_) => continue,
                    Ok(r) => r,
                }
            }
        };
        let event = match received {
            Err(e) => {
                if (open.is_some() && !skipping) || group.is_some() {
                    rollback(p).await;
                }
                return Err(replication_interrupted(&e, e.to_string()));
            }
            Ok(None) => return Err(Interrupted::Network("the replication stream ended".into())),
            Ok(Some(ev)) => ev,
        };
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                commit_time_micros,
                ..
            } => {
                let commit = final_lsn.0;
                run.oldest_pending
                    .get_or_insert(pg_time(commit_time_micros));
                skipping = commit < run.applied;
                if skipping && group.is_some() {
                    commit_group(p, repl, &mut group, run, true).await?;
                }
                if !skipping && group.is_none() {
                    p.simple("BEGIN".into(), "starting a target transaction".into())
                        .await
                        .map_err(classify)?;
                }
                open = Some(commit);
            }
            ReplicationEvent::XLogData {
                data,
                wal_start,
                wal_end,
                ..
            } => {
                run.received = run.received.max(wal_start.0);
                run.source_end = run.source_end.max(wal_end.0);
                let Some(commit) = open else {
                    // Relation messages can arrive outside a transaction only with
                    // streaming, which protocol 1 does not use; decode to keep state.
                    let _ = decoder.decode(data);
                    continue;
                };
                let msg = decoder.decode(data).map_err(|e| {
                    Interrupted::Fatal(Error::failed(format!("decoding pgoutput: {e}")))
                })?;
                apply_message(msg, commit, skipping, p, copies, run)
                    .await
                    .map_err(fatal)?;
            }
            ReplicationEvent::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                let was_skipping = skipping;
                open = None;
                skipping = false;
                if was_skipping {
                    run.applied = run.applied.max(end_lsn.0);
                    repl.update_applied_lsn(end_lsn);
                } else {
                    // What waits is sent with the group's commit: the group's source
                    // transactions share one target transaction, so batches span them.
                    let g = Group::join(group, end_lsn.0, commit_time_micros);
                    group = Some(g);
                    let reached = until.is_some_and(|u| end_lsn.0 >= u);
                    if g.may_wait(reached) {
                        // Let the reader take in what the socket holds first (the apply
                        // runs on one thread), then look without waiting.
                        tokio::task::yield_now().await;
                        peeked = repl.recv().now_or_never();
                    }
                    if g.commit_now(reached, peeked.is_some()) {
                        commit_group(p, repl, &mut group, run, reached).await?;
                    }
                }
                if until.is_some_and(|u| run.applied >= u) && group.is_none() {
                    return Ok(());
                }
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                run.source_end = run.source_end.max(wal_end.0);
                // The source has sent all it has for now: a group waiting for more commits
                // now. A worker that runs until stopped does not await the answer here:
                // under load the source says so many times a second, and waiting each time
                // for the target to finish all that is in flight would stop the reading as
                // often (the answers are taken as they come, and all of them before the
                // stream blocks for more). Running until a position, the answers are
                // awaited, so that a position reached only by this message (WAL that
                // publishes nothing) ends the run now, not at the next one.
                let wait = until.is_some();
                if group.is_some() {
                    commit_group(p, repl, &mut group, run, wait).await?;
                } else if open.is_none() && wait {
                    p.drain().await.map_err(classify)?;
                    acknowledge(p, repl, run);
                }
                if open.is_none() && p.is_idle() && wal_end.0 > run.applied {
                    // Everything sent before this point is applied and committed.
                    run.applied = wal_end.0;
                    repl.update_applied_lsn(wal_end);
                }
                if open.is_none() && until.is_some_and(|u| run.applied >= u) {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
}

/// Give up the open target transaction: what was sent is answered first, so that the
/// ROLLBACK is the session's next statement.
async fn rollback(p: &mut Pipeline) {
    let _ = p.drain().await;
    if let Ok(c) = p.direct().await {
        let _ = c.batch_execute("ROLLBACK").await;
    }
}

/// How often the stream's metrics are published.
const METRICS_EVERY: Duration = Duration::from_secs(2);

/// Source transactions that share one target commit at most.
const GROUP_MAX: u64 = 200;
/// A group stops waiting for more once it has been open this long: in a backlog, groups
/// fill in milliseconds; when the apply is slowed (a busy target, a starved CPU), a full
/// group would hold its first transactions back for as long as the group takes.
const GROUP_MAX_AGE: Duration = Duration::from_millis(100);

/// Source transactions applied in the open target transaction and not committed yet:
/// small consecutive transactions share one target commit, which records the last one's
/// position in the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Group {
    /// The end of the last source transaction in it.
    end: u64,
    /// Its source commit time (PostgreSQL microseconds).
    commit_time: i64,
    count: u64,
    /// When its first transaction was taken.
    opened: Instant,
}

impl Group {
    /// The group with one more source transaction (ending at `end`).
    fn join(group: Option<Group>, end: u64, commit_time: i64) -> Group {
        Group {
            end,
            commit_time,
            count: group.map_or(0, |g| g.count) + 1,
            opened: group.map_or_else(Instant::now, |g| g.opened),
        }
    }

    /// Whether the group may wait for more: not full, not open for long, and the caller's
    /// stop point not reached.
    fn may_wait(&self, reached: bool) -> bool {
        self.count < GROUP_MAX && self.opened.elapsed() < GROUP_MAX_AGE && !reached
    }

    /// Commit now when full, when the stop point is reached, or when nothing else is
    /// waiting: a commit is never held back for changes that are not there.
    fn commit_now(&self, reached: bool, more_waiting: bool) -> bool {
        !self.may_wait(reached) || !more_waiting
    }
}

/// Commit the open target transaction holding the grouped source transactions, recording
/// the last one's position in the origin; only once the target confirms it may the source
/// forget them. With `wait`, the confirmation is awaited; otherwise the next statements go
/// out while the commit completes.
async fn commit_group(
    p: &mut Pipeline,
    repl: &ReplicationClient,
    group: &mut Option<Group>,
    run: &mut Run,
    wait: bool,
) -> Result<(), Interrupted> {
    let Some(Group {
        end,
        commit_time,
        count,
        ..
    }) = group.take()
    else {
        return Ok(());
    };
    run.applier.flush(p).await.map_err(classify)?;
    let ts = pg_time(commit_time);
    // Both are our own numbers, so they go into the text as literals. The origin moves
    // with the commit record, which a transaction without a transaction id does not
    // write: txid_current() gives a group that changed nothing (a source transaction of
    // only a logical message, such as the switchover's barrier) one, so its position is
    // recorded too.
    let sql = format!(
        "SELECT txid_current(), pg_replication_origin_xact_setup('{}', to_timestamp({ts})); COMMIT",
        lsn_text(end)
    );
    p.commit(sql, end).await.map_err(classify)?;
    run.transactions += count;
    run.last_commit = Some(pg_time(commit_time));
    // Everything received so far is in this commit.
    run.oldest_pending = None;
    if wait {
        p.drain().await.map_err(classify)?;
    }
    acknowledge(p, repl, run);
    Ok(())
}

/// Rows missing on the target that the `log` policy lets pass are logged, this many at
/// most, and counted all.
const MISSING_LOGGED: u64 = 1000;

/// Tell the source how far the target has committed, from the answers already in.
fn acknowledge(p: &mut Pipeline, repl: &ReplicationClient, run: &mut Run) {
    p.collect_ready();
    if run.applier.on_missing == OnMissingRow::Log {
        for m in std::mem::take(&mut p.missing) {
            run.applier.counts.not_found += 1;
            if run.applier.counts.not_found <= MISSING_LOGGED {
                run.notes.push(format!(
                    "  missing row (on_missing_row: log): {} found no row {} (source transaction \
                     committing at {})",
                    m.what,
                    m.key,
                    lsn_text(m.lsn)
                ));
            }
        }
    }
    if p.committed > run.applied {
        run.applied = p.committed;
        repl.update_applied_lsn(Lsn(p.committed));
    }
}

async fn apply_message(
    msg: Message,
    commit: u64,
    skipping: bool,
    p: &mut Pipeline,
    copies: &HashMap<u32, (u64, u64)>,
    run: &mut Run,
) -> Result<(), Error> {
    match msg {
        Message::Relation(r) if run.applier.unchanged(&r) => {}
        Message::Relation(r) => {
            // What is pending was built for the table as it was described before.
            run.applier.flush(p).await?;
            let mut cache = std::mem::take(&mut run.applier.equality);
            let t = tables::resolve(p.direct().await?, &r, copies, &mut cache).await;
            run.applier.equality = cache;
            let t = match t {
                Err(e) if e.kind != ErrorKind::Lost => Err(p.explain(e).await),
                t => t,
            };
            match t {
                Ok(t) => run.applier.set_table(r, t),
                // A lost connection is retried; a table the target cannot take is an error
                // when (and only when) a change for it comes.
                Err(e) if e.kind == ErrorKind::Lost => return Err(e),
                Err(e) => run.applier.set_unresolved(r.oid, e.message),
            }
        }
        _ if skipping => {}
        Message::Insert(m) => run.applier.insert(p, m, commit).await?,
        Message::Update(m) => run.applier.update(p, m, commit).await?,
        Message::Delete(m) => run.applier.delete(p, m, commit).await?,
        Message::Truncate(m) => run.applier.truncate(p, m, commit).await?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_commits_when_full_at_the_stop_point_or_when_nothing_waits() {
        let mut g = None;
        for i in 1..=3u64 {
            g = Some(Group::join(g, 100 * i, i as i64));
        }
        let g = g.unwrap();
        assert_eq!((g.end, g.commit_time, g.count), (300, 3, 3));
        // More transactions waiting, room left: it waits for them.
        assert!(g.may_wait(false) && !g.commit_now(false, true));
        // Nothing else waiting: committed at once, never held back.
        assert!(g.commit_now(false, false));
        // The caller's stop point: committed, and no wait.
        assert!(!g.may_wait(true) && g.commit_now(true, true));
        let full = Group {
            count: GROUP_MAX,
            ..g
        };
        assert!(!full.may_wait(false) && full.commit_now(false, true));
        // Open too long: committed although more are waiting.
        let old = Group {
            opened: Instant::now() - GROUP_MAX_AGE,
            ..g
        };
        assert!(!old.may_wait(false) && old.commit_now(false, true));
    }

    #[test]
    fn only_a_lost_connection_is_retried() {
        let lost = |e: PgWireError| {
            matches!(
                replication_interrupted(&e, String::new()),
                Interrupted::Network(_)
            )
        };
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(lost(PgWireError::from(io)));
        assert!(lost(PgWireError::Server(
            "terminating connection due to administrator command (SQLSTATE 57P01)".into()
        )));
        assert!(lost(PgWireError::Server(
            "replication slot \"s\" is active for PID 42 (SQLSTATE 55006)".into()
        )));
        // Words that sound like a lost connection do not make one.
        assert!(!lost(PgWireError::Server(
            "unrecognized pgoutput option: messages: connection closed (SQLSTATE 42601)".into()
        )));
        assert!(!lost(PgWireError::Server(
            "replication slot \"s\" does not exist (SQLSTATE 42704)".into()
        )));
        assert!(!lost(PgWireError::Server("no code at all".into())));
        let refused = Error::failed("updating \"connection_closed\": violates check constraint");
        assert!(matches!(classify(refused), Interrupted::Fatal(_)));
    }
}
