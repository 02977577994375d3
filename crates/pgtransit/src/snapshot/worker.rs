//! Copy workers: each imports the exported snapshot once, then takes units (largest first)
//! and pipes the source's COPY output into the target's COPY input, chunk by chunk as the
//! bytes arrive. A unit's rows and its "done" mark commit together on the target.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{pin_mut, SinkExt, StreamExt};
use tokio_postgres::Client;

use super::plan::Unit;
use super::slot::Exported;
use super::{CopyEvent, Events};
use crate::check::Side;
use crate::conn::{self, ConnSpec};
use crate::error::{sql_error, Error};
use crate::quote;
use crate::step::Session;

pub struct Totals {
    pub units: usize,
    pub rows: u64,
    pub bytes: u64,
    pub snapshot_lsn: String,
}

#[derive(Default)]
struct Counters {
    units: AtomicUsize,
    rows: AtomicU64,
    bytes: AtomicU64,
    /// Planned bytes of the units done (for the percentage and the ETA).
    planned_done: AtomicU64,
    stop: AtomicBool,
}

pub async fn run(
    s: &mut Session<'_>,
    exported: Exported,
    units: Vec<Unit>,
    jobs: usize,
    events: Events,
) -> Result<Totals, Error> {
    let units_total = units.len();
    let source = s.spec(Side::Source)?.clone();
    let target = s.spec(Side::Target)?.clone();
    let task = s.task.name.clone();
    let planned: i64 = units.iter().map(|u| u.bytes_planned).sum();
    let jobs = jobs.min(units.len()).max(1);
    let queue = Arc::new(Mutex::new(units.into_iter().collect::<VecDeque<_>>()));
    let counters = Arc::new(Counters::default());
    let (imported_tx, mut imported_rx) = tokio::sync::mpsc::channel::<Result<(), Error>>(jobs);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..jobs {
        let w = Worker {
            source: source.clone(),
            target: target.clone(),
            snapshot: exported.snapshot.clone(),
            snapshot_lsn: exported.lsn.clone(),
            task: task.clone(),
            queue: queue.clone(),
            counters: counters.clone(),
            events: events.clone(),
            visible: String::new(),
        };
        let tx = imported_tx.clone();
        handles.push(tokio::spawn(async move { w.run(tx).await }));
    }
    drop(imported_tx);
    // The exporting session must stay until every worker imported the snapshot.
    let mut import_error = None;
    for _ in 0..jobs {
        match imported_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                import_error.get_or_insert(e);
            }
            None => break,
        }
    }
    let mut session = exported.session;
    session.abort();
    if let Some(e) = import_error {
        counters.stop.store(true, Ordering::SeqCst);
        for h in handles {
            let _ = h.await;
        }
        return Err(e);
    }
    // The totals once a second (progress bars follow them; the worker's log and plain
    // output show one line in five), and once more at the end.
    let progress = move |c: &Counters| {
        let bytes = c.bytes.load(Ordering::Relaxed);
        let done = c.planned_done.load(Ordering::Relaxed) as f64;
        let fraction = if planned > 0 {
            (done / planned as f64).min(1.0)
        } else {
            0.0
        };
        let elapsed = started.elapsed().as_secs_f64();
        CopyEvent::Progress(super::events::CopyProgress {
            units_done: c.units.load(Ordering::Relaxed),
            units_total,
            rows: c.rows.load(Ordering::Relaxed),
            bytes,
            percent: fraction * 100.0,
            bytes_per_second: bytes as f64 / elapsed.max(0.001),
            eta_seconds: (fraction > 0.0).then(|| elapsed * (1.0 - fraction) / fraction),
        })
    };
    let ticker = {
        let counters = counters.clone();
        let events = events.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                events(progress(&counters));
            }
        })
    };
    let mut first_error = None;
    for h in handles {
        match h.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(Error::failed(format!("a copy worker panicked: {e}")));
            }
        }
    }
    ticker.abort();
    if let Some(e) = first_error {
        return Err(e);
    }
    events(progress(&counters));
    Ok(Totals {
        units: counters.units.load(Ordering::SeqCst),
        rows: counters.rows.load(Ordering::SeqCst),
        bytes: counters.bytes.load(Ordering::SeqCst),
        snapshot_lsn: exported.lsn,
    })
}

struct Worker {
    source: ConnSpec,
    target: ConnSpec,
    snapshot: String,
    snapshot_lsn: String,
    task: String,
    queue: Arc<Mutex<VecDeque<Unit>>>,
    counters: Arc<Counters>,
    events: Events,
    /// The imported snapshot as text (xmin:xmax:xip), recorded with every unit.
    visible: String,
}

impl Worker {
    async fn run(
        mut self,
        imported: tokio::sync::mpsc::Sender<Result<(), Error>>,
    ) -> Result<(), Error> {
        let src = match self.import().await {
            Ok((c, visible)) => {
                self.visible = visible;
                let _ = imported.send(Ok(())).await;
                c
            }
            Err(e) => {
                let _ = imported.send(Err(Error::failed(e.to_string()))).await;
                return Err(e);
            }
        };
        drop(imported);
        let mut dst = conn::connect(&self.target).await?;
        dst.batch_execute(conn::PINNED_TEXT_SETTINGS)
            .await
            .map_err(|e| sql_error("pinning the text formats (on the target)", e))?;
        loop {
            if self.counters.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let unit = self.queue.lock().expect("queue lock").pop_front();
            let Some(unit) = unit else { return Ok(()) };
            if let Err(e) = self.copy(&src, &mut dst, &unit).await {
                self.counters.stop.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
    }

    /// A source session inside the exported snapshot, and the snapshot as text.
    async fn import(&self) -> Result<(Client, String), Error> {
        let src = conn::connect(&self.source).await?;
        src.batch_execute(&format!(
            "{}; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            conn::PINNED_TEXT_SETTINGS,
            quote::literal(&self.snapshot)
        ))
        .await
        .map_err(|e| sql_error("importing the exported snapshot (on the source)", e))?;
        let visible: String = src
            .query_one("SELECT txid_current_snapshot()::text", &[])
            .await
            .map_err(|e| sql_error("reading the snapshot (on the source)", e))?
            .get(0);
        Ok((src, visible))
    }

    async fn copy(&self, src: &Client, dst: &mut Client, unit: &Unit) -> Result<(), Error> {
        if unit.is_large_objects() {
            return self.copy_large_objects(src, dst, unit).await;
        }
        let started = Instant::now();
        let label = unit.label();
        let fail = |what: &str| {
            let what = format!("{what} {label}");
            move |e| sql_error(&what, e)
        };
        let tx = dst
            .transaction()
            .await
            .map_err(fail("starting the copy of"))?;
        // A table emptied in this transaction can be loaded frozen: no second write of every
        // page by VACUUM later.
        let freeze = unit.whole_own_table();
        if freeze {
            tx.batch_execute(&format!("TRUNCATE ONLY {}", unit.target_name))
                .await
                .map_err(fail("emptying"))?;
        }
        let sink = tx
            .copy_in(unit.copy_in_sql(freeze).as_str())
            .await
            .map_err(fail("COPY FROM STDIN into the target for"))?;
        let stream = src
            .copy_out(unit.copy_out_sql().as_str())
            .await
            .map_err(fail("COPY TO STDOUT on the source for"))?;
        pin_mut!(sink);
        pin_mut!(stream);
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(fail("reading the source rows of"))?;
            bytes += chunk.len() as u64;
            self.counters
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            sink.feed(chunk)
                .await
                .map_err(fail("writing the target rows of"))?;
        }
        let rows = sink.finish().await.map_err(fail("finishing the copy of"))?;
        self.mark_done(&tx, unit, rows).await?;
        tx.commit().await.map_err(fail("committing the copy of"))?;
        self.finish(unit, rows, bytes, started, freeze);
        Ok(())
    }

    fn finish(&self, unit: &Unit, rows: u64, bytes: u64, started: Instant, frozen: bool) {
        self.counters.units.fetch_add(1, Ordering::Relaxed);
        self.counters.rows.fetch_add(rows, Ordering::Relaxed);
        self.counters
            .planned_done
            .fetch_add(unit.bytes_planned.max(0) as u64, Ordering::Relaxed);
        (self.events)(CopyEvent::UnitDone {
            relation: unit.relation.clone(),
            chunk: unit.chunk + 1,
            chunks: unit.chunks,
            rows,
            bytes,
            seconds: started.elapsed().as_secs_f64(),
            binary: unit.binary,
            frozen,
        });
    }

    /// Mark `unit` done inside the target transaction that holds its rows.
    async fn mark_done(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        unit: &Unit,
        rows: u64,
    ) -> Result<(), Error> {
        tx.execute(
            "UPDATE pgtransit.copy_progress SET done = true, snapshot_lsn = $1::text::pg_lsn, \
             snapshot = $6, rows_copied = $2, copied_at = now() \
             WHERE task = $3 AND relation = $4 AND chunk = $5",
            &[
                &self.snapshot_lsn,
                &(rows as i64),
                &self.task,
                &unit.relation,
                &unit.chunk,
                &self.visible,
            ],
        )
        .await
        .map_err(|e| sql_error(&format!("recording the copy of {}", unit.label()), e))?;
        Ok(())
    }

    /// Every large object of the snapshot, in one target transaction, 1 MiB at a time.
    async fn copy_large_objects(
        &self,
        src: &Client,
        dst: &mut Client,
        unit: &Unit,
    ) -> Result<(), Error> {
        const PIECE: i32 = 1 << 20;
        let started = Instant::now();
        let fail = |what: &'static str| move |e| sql_error(what, e);
        let oids: Vec<u32> = src
            .query("SELECT oid FROM pg_largeobject_metadata ORDER BY oid", &[])
            .await
            .map_err(fail("listing large objects (on the source)"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let tx = dst
            .transaction()
            .await
            .map_err(fail("starting the large object copy"))?;
        let read = src
            .prepare("SELECT lo_get($1, $2, $3)")
            .await
            .map_err(fail("reading large objects (on the source)"))?;
        let write = tx
            .prepare("SELECT lo_put($1, $2, $3)")
            .await
            .map_err(fail("writing large objects (on the target)"))?;
        let mut bytes = 0u64;
        for oid in &oids {
            tx.execute("SELECT lo_create($1)", &[oid])
                .await
                .map_err(fail("creating a large object (on the target)"))?;
            let mut offset: i64 = 0;
            loop {
                let piece: Vec<u8> = src
                    .query_one(&read, &[oid, &offset, &PIECE])
                    .await
                    .map_err(fail("reading a large object (on the source)"))?
                    .get(0);
                if !piece.is_empty() {
                    tx.execute(&write, &[oid, &offset, &piece])
                        .await
                        .map_err(fail("writing a large object (on the target)"))?;
                }
                offset += piece.len() as i64;
                bytes += piece.len() as u64;
                self.counters
                    .bytes
                    .fetch_add(piece.len() as u64, Ordering::Relaxed);
                if piece.len() < PIECE as usize {
                    break;
                }
            }
        }
        self.mark_done(&tx, unit, oids.len() as u64).await?;
        tx.commit()
            .await
            .map_err(fail("committing the large objects"))?;
        self.finish(unit, oids.len() as u64, bytes, started, false);
        Ok(())
    }
}
