//! `pgtransit verify`: is the target's content the source's?
//!
//! * count: exact row counts on both sides.
//! * checksum: every row hashed, column by column with each type's own hash function (the
//!   hashes hash partitioning relies on, stable across servers; see `Table::hash`);
//!   summed per table
//!   on both sides in parallel, and for a table that differs per chunk of key range. A
//!   chunk that differs is compared row by row, by key, in both directions, and its keys
//!   are listed: missing on the target, only on the target, changed. While the task
//!   streams, a differing chunk is read again at a consistent point (the source in a
//!   snapshot, the target once it has applied past that snapshot) before it is reported.

mod chunks;
mod compare;
mod consistent;
mod tables;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::task::Task;
use chunks::Chunk;
use compare::check_chunk;
use tables::{session, tables};

crate::named::named! {
    pub enum Mode {
        /// Exact row counts on both sides.
        Count = "count",
        /// Every row's checksum, compared in key order.
        Checksum = "checksum",
    }
}

crate::named::named! {
    /// `--verify` of a switchover: a verify mode, or none.
    pub enum VerifyChoice {
        Count = "count",
        Checksum = "checksum",
        None = "none",
    }
}

impl VerifyChoice {
    pub fn mode(self) -> Option<Mode> {
        match self {
            VerifyChoice::Count => Some(Mode::Count),
            VerifyChoice::Checksum => Some(Mode::Checksum),
            VerifyChoice::None => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub mode: Mode,
    /// Only these tables (`schema.table`, as written or quoted); empty: every selected one.
    pub tables: Vec<String>,
    pub jobs: usize,
    /// Rows per checksum chunk (about).
    pub chunk_rows: i64,
    /// A differing chunk is checked this many more times, this far apart, before it counts.
    pub rechecks: u32,
    pub recheck_pause: Duration,
    /// Keys listed per table at most.
    pub max_keys: usize,
    /// Called as pieces of the work finish: (pieces done, pieces known so far, source rows
    /// compared so far). For progress bars.
    pub progress: Option<ProgressHook>,
}

/// A progress callback (see `VerifyOptions::progress`).
#[derive(Clone)]
pub struct ProgressHook(pub Arc<dyn Fn(usize, usize, i64) + Send + Sync>);

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            mode: Mode::Count,
            tables: vec![],
            jobs: 2,
            chunk_rows: 1_000_000,
            rechecks: 3,
            recheck_pause: Duration::from_secs(2),
            max_keys: 100,
            progress: None,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TableResult {
    pub table: String,
    pub source_rows: i64,
    pub target_rows: i64,
    pub chunks: usize,
    pub differing_chunks: usize,
    /// Keys (as row text) on the source but not on the target.
    pub missing_on_target: Vec<String>,
    /// Keys on the target but not on the source.
    pub only_on_target: Vec<String>,
    /// Keys on both sides with different content.
    pub changed: Vec<String>,
    pub pass: bool,
    pub note: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub mode: Mode,
    pub tables: Vec<TableResult>,
    pub rows_verified: i64,
    pub seconds: f64,
}

impl VerifyReport {
    pub fn failures(&self) -> usize {
        self.tables.iter().filter(|t| !t.pass).count()
    }
}

/// Verify the task's tables.
pub async fn verify(
    task: &Task,
    o: &VerifyOptions,
    say: &(dyn Fn(&str) + Sync),
) -> Result<VerifyReport, Error> {
    let started = std::time::Instant::now();
    let target_spec = task
        .target
        .as_ref()
        .ok_or_else(|| Error::failed("the task has no target".to_string()))?;
    let source = session(&task.source).await?;
    let target = session(target_spec).await?;
    let list = tables(task, &source, &o.tables).await?;
    if list.is_empty() {
        return Err(Error::failed(
            "no table to verify: check the task's objects and --tables".to_string(),
        ));
    }
    let results: Vec<TableResult> = list
        .iter()
        .map(|t| TableResult {
            table: t.name.clone(),
            pass: true,
            // Each table is first compared whole (one sequential scan a side, which
            // PostgreSQL may run in parallel); only a table that differs is cut into key
            // ranges.
            chunks: 1,
            note: if o.mode == Mode::Checksum && t.key.is_empty() {
                "no key: compared as a whole, rows named by hash".into()
            } else {
                String::new()
            },
            ..Default::default()
        })
        .collect();
    drop((source, target));
    let queue = Queue::new((0..list.len()).map(|table| Chunk { table, range: None }));
    let list = Arc::new(list);
    let results = Arc::new(Mutex::new(results));
    let done = Arc::new(AtomicUsize::new(0));
    let lost = || Error::failed("a verify worker panicked");
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..o.jobs.max(1) {
        let (list, queue, results, o) = (list.clone(), queue.clone(), results.clone(), o.clone());
        let (src, dst) = (task.source.clone(), target_spec.clone());
        let task = task.clone();
        let done = done.clone();
        workers.spawn(async move {
            let sessions = tokio::try_join!(session(&src), session(&dst));
            let (s, d) = match sessions {
                Ok(sd) => sd,
                Err(e) => {
                    queue.close();
                    return Err(e);
                }
            };
            while let Some(chunk) = queue.next().await {
                let split = check_chunk(&task, &s, &d, &list, &chunk, &o, &results).await;
                let pieces = match split {
                    Ok(p) => p.unwrap_or_default(),
                    Err(e) => {
                        queue.close();
                        return Err(e);
                    }
                };
                if !pieces.is_empty() {
                    results.lock().map_err(|_| lost())?[chunk.table].chunks = pieces.len();
                }
                queue.finish(pieces);
                if let Some(hook) = &o.progress {
                    let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                    let (known, rows) = {
                        let r = results.lock().map_err(|_| lost())?;
                        // A split table's whole-table look is one piece more than its chunks.
                        let known: usize =
                            r.iter().map(|t| t.chunks + usize::from(t.chunks > 1)).sum();
                        (known, r.iter().map(|t| t.source_rows).sum::<i64>())
                    };
                    (hook.0)(finished, known.max(finished), rows);
                }
            }
            Ok::<(), Error>(())
        });
    }
    while let Some(w) = workers.join_next().await {
        w.map_err(|e| Error::failed(format!("a verify worker failed: {e}")))??;
    }
    let mut tables = Arc::try_unwrap(results)
        .map_err(|_| Error::failed("verify workers still running"))?
        .into_inner()
        .map_err(|_| lost())?;
    for t in &mut tables {
        // Under a live apply the row counts of the two sides are read at slightly
        // different moments; what decides is whether a chunk still differed when
        // re-read at a consistent point.
        t.pass = t.differing_chunks == 0;
        say(&format!(
            "  [{}] {}  source={} target={}{}",
            if t.pass { "PASS" } else { "FAIL" },
            t.table,
            t.source_rows,
            t.target_rows,
            if t.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", t.note)
            }
        ));
    }
    Ok(VerifyReport {
        mode: o.mode,
        rows_verified: tables.iter().map(|t| t.source_rows).sum(),
        tables,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The pieces still to compare: the whole tables first, then the key ranges of those that
/// differ. Workers wait on it without polling; it closes once every piece taken is
/// finished and nothing is left (or a worker failed).
#[derive(Clone)]
struct Queue {
    sender: Arc<Mutex<Option<mpsc::UnboundedSender<Chunk>>>>,
    receiver: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Chunk>>>,
    /// Pieces queued or being compared.
    open: Arc<AtomicUsize>,
}

impl Queue {
    fn new(first: impl Iterator<Item = Chunk>) -> Queue {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut n = 0;
        for c in first {
            let _ = tx.send(c);
            n += 1;
        }
        let q = Queue {
            sender: Arc::new(Mutex::new(Some(tx))),
            receiver: Arc::new(tokio::sync::Mutex::new(rx)),
            open: Arc::new(AtomicUsize::new(n)),
        };
        if n == 0 {
            q.close();
        }
        q
    }

    /// The next piece; None once the queue is closed and empty.
    async fn next(&self) -> Option<Chunk> {
        self.receiver.lock().await.recv().await
    }

    /// A piece is compared; `pieces` are what it was cut into (to compare next).
    fn finish(&self, pieces: Vec<Chunk>) {
        self.open.fetch_add(pieces.len(), Ordering::SeqCst);
        if let Some(tx) = self
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            for p in pieces {
                let _ = tx.send(p);
            }
        }
        if self.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.close();
        }
    }

    /// No more pieces: the workers end once the queued ones are taken.
    fn close(&self) {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
