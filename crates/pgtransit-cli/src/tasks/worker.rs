//! The task worker: `pgtransit run NAME` in the foreground, `pgtransit start NAME` detached.
//! It takes the task's lock (one worker per task), runs the steps that are not complete yet
//! in kbcli's order — precheck, init-struct, init-data, cdc — records each step's state and
//! log lines in the task store, publishes metrics there (and on `--metrics-addr`), and
//! stops gracefully on SIGTERM: the open target transaction is rolled back, what is
//! committed is acknowledged, and the next `start` continues.

use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgtransit::check::Scope;
use pgtransit::error::Error;
use pgtransit::native;
use pgtransit::schema::{SchemaOptions, Section};
use pgtransit::snapshot::{CopyEvent, Events};
use pgtransit::state::{Store, STEPS};
use pgtransit::step::Session;
use pgtransit::task::{Engine, Task};

use super::metrics_http::{self, Status};
use crate::Failure;

/// What the steps share: the store, the task's name, the step running and the status the
/// metrics endpoint serves.
#[derive(Clone)]
pub struct Worker {
    store: Arc<Mutex<Store>>,
    name: String,
    step: Arc<Mutex<String>>,
    status: Arc<Mutex<Status>>,
    stop: Arc<AtomicBool>,
    /// Print JSON lines instead of text lines.
    json: bool,
}

impl Worker {
    fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        let s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        f(&s)
    }

    /// A log line: printed (the worker's own output), and kept in the store for `logs`.
    fn log(&self, line: &str) {
        let step = self.step.lock().map(|s| s.clone()).unwrap_or_default();
        if self.json {
            let v = serde_json::json!({"at": pgtransit::state::now(), "task": self.name, "step": step, "line": line});
            outln!("{v}");
        } else {
            outln!("{} [{step}] {line}", timestamp());
        }
        let _ = self.with_store(|s| s.log(&self.name, &step, line));
    }

    fn events(&self) -> Events {
        let w = self.clone();
        // Metrics arrive every 2 s; the log gets one line of them every 30 s.
        let last_line = Arc::new(Mutex::new(None::<std::time::Instant>));
        let last_warning = Arc::new(Mutex::new(None::<std::time::Instant>));
        let last_progress = Arc::new(Mutex::new(None::<std::time::Instant>));
        Arc::new(move |e: CopyEvent| {
            match &e {
                CopyEvent::Cdc(m) => {
                    let json = serde_json::to_value(m).unwrap_or_default();
                    let _ = w.with_store(|s| s.put_metrics(&w.name, &json));
                    metrics_http::record_cdc(m);
                    if let Ok(mut st) = w.status.lock() {
                        st.cdc = Some(json);
                    }
                    if m.lag_bytes > LAG_WARN_BYTES {
                        let mut warned = last_warning.lock().unwrap_or_else(|p| p.into_inner());
                        if !warned.is_some_and(|t| t.elapsed() < Duration::from_secs(600)) {
                            *warned = Some(std::time::Instant::now());
                            w.log(&format!(
                                "WARNING: the apply is {} behind; the slot keeps that much WAL on the source. \
                                 Set max_slot_wal_keep_size on the source so a stuck task cannot fill its disk",
                                pgtransit::catalog::pretty_bytes(m.lag_bytes as i64)
                            ));
                        }
                    }
                    let mut last = last_line.lock().unwrap_or_else(|p| p.into_inner());
                    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(30)) {
                        return;
                    }
                    *last = Some(std::time::Instant::now());
                    w.log(&current_position(&m.applied_lsn, m.last_commit_time));
                }
                CopyEvent::Progress { .. } => {
                    let json = serde_json::to_value(&e).unwrap_or_default();
                    metrics_http::record_copy(&e);
                    if let Ok(mut st) = w.status.lock() {
                        st.copy = Some(json.clone());
                    }
                    let _ = w.with_store(|s| s.put_metrics(&w.name, &json));
                    // Published every second (describe and the bars follow it); logged
                    // every five.
                    let mut last = last_progress.lock().unwrap_or_else(|p| p.into_inner());
                    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
                        return;
                    }
                    *last = Some(std::time::Instant::now());
                }
                _ => {}
            }
            w.log(&e.to_string());
        })
    }

    fn set_step(&self, step: &str, state: &str, reason: Option<&str>) {
        let _ = self.with_store(|s| s.set_step(&self.name, step, state, reason));
        metrics_http::record_step(step, state);
        if let Ok(mut st) = self.status.lock() {
            st.steps.insert(step.to_string(), state.to_string());
        }
    }
}

/// kbcli's CDC position line (`logs NAME --step cdc | grep current_position`): the source
/// LSN applied on the target and the source commit time of the last applied transaction.
fn current_position(lsn: &str, commit_time: Option<f64>) -> String {
    format!(
        "current_position: lsn={lsn} timestamp={}",
        commit_time
            .map(super::show::utc)
            .unwrap_or_else(|| "-".into())
    )
}

fn timestamp() -> String {
    let t = pgtransit::state::now();
    let secs = t as i64;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}Z")
}

/// Hold the task's lock file for the life of the process; another worker fails at once.
fn lock(store: &Store, name: &str) -> Result<std::fs::File, Failure> {
    let dir = store.workers_dir()?;
    let path = dir.join(format!("{name}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Failure::other(format!("cannot open {}: {e}", path.display())))?;
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = store
            .task(name)
            .ok()
            .flatten()
            .and_then(|t| t.pid)
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        return Err(Failure::refused(format!(
            "another worker is running task {name}{pid}: one worker per task. \
                 Stop it with `pgtransit terminate {name}` or wait for it"
        )));
    }
    Ok(f)
}

/// Warn in the log when the apply is this far behind (the slot retains at least that).
const LAG_WARN_BYTES: u64 = 1024 * 1024 * 1024;

/// `pgtransit run NAME`.
pub async fn run(name: &str, metrics_addr: Option<String>, json: bool) -> Result<u8, Failure> {
    let store = Store::open()?;
    let rec = store.existing(name)?;
    if rec.status == "terminating" {
        return Err(Failure::usage(format!(
            "task {name} is being terminated; finish with `pgtransit terminate {name}`"
        )));
    }
    let _lock = lock(&store, name)?;
    let task = Task::parse(&rec.spec, name)?;
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    let w = Worker {
        store: Arc::new(Mutex::new(store)),
        name: name.to_string(),
        step: Arc::new(Mutex::new("worker".into())),
        status: Arc::new(Mutex::new(Status::new(name, &rec.engine))),
        stop: stop.clone(),
        json,
    };
    let bound = match &metrics_addr {
        Some(addr) => Some(metrics_http::serve(addr, w.status.clone()).await?),
        None => None,
    };
    w.with_store(|s| {
        let _ = s.set_worker(name, Some(std::process::id()), bound.as_deref());
        let _ = s.set_status(name, "running", None);
    });
    w.log(&format!(
        "worker {} started for task {name} ({} engine){}",
        std::process::id(),
        rec.engine,
        bound
            .as_ref()
            .map(|a| format!(", metrics on http://{a}/metrics"))
            .unwrap_or_default()
    ));
    let result = run_steps(&w, &task).await;
    let (status, reason, code) = match &result {
        Ok(true) => ("complete", None, 0),
        Ok(false) => (
            "stopped",
            Some("stopped by a signal; `pgtransit start` continues".to_string()),
            0,
        ),
        Err(f) => ("failed", Some(f.message.clone()), f.code),
    };
    w.log(&format!(
        "worker {status}{}",
        reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    ));
    w.with_store(|s| {
        let _ = s.set_status(name, status, reason.as_deref());
        let _ = s.set_worker(name, None, None);
    });
    match result {
        Err(f) => Err(f),
        Ok(_) => Ok(code),
    }
}

fn watch_signals(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        stop.store(true, Ordering::SeqCst);
    });
}

/// Run every step not complete or skipped; Ok(false) when stopped by a signal.
async fn run_steps(w: &Worker, task: &Task) -> Result<bool, Failure> {
    let steps = w.with_store(|s| s.steps(&w.name))?;
    for step in STEPS {
        let state = steps
            .iter()
            .find(|s| s.step == step)
            .map(|s| s.status.clone())
            .unwrap_or_else(|| "pending".into());
        if state == "complete" || state == "skipped" {
            w.set_step(step, &state, None);
            continue;
        }
        if w.stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        *w.step.lock().unwrap_or_else(|p| p.into_inner()) = step.to_string();
        w.set_step(step, "running", None);
        w.log(&format!("{step}: started"));
        match run_step(w, task, step).await {
            Ok(true) => {
                w.set_step(step, "complete", None);
                w.log(&format!("{step}: complete"));
            }
            Ok(false) => {
                // Stopped in the middle: the step continues where it was.
                w.set_step(
                    step,
                    "pending",
                    Some("stopped; continues on the next start"),
                );
                return Ok(false);
            }
            Err(e) => {
                w.set_step(step, "failed", Some(&e.message));
                w.log(&format!("{step}: failed: {}", e.message));
                return Err(e.into());
            }
        }
    }
    Ok(true)
}

/// One step; Ok(false) when a signal stopped it before its end.
async fn run_step(w: &Worker, task: &Task, step: &str) -> Result<bool, Error> {
    let wl = w.clone();
    let mut s = Session::new(task, move |l| wl.log(l));
    let stream = task.engine == Engine::Stream;
    let schema = |section| SchemaOptions {
        section,
        clean: false,
        force: false,
        workdir: None,
        stream,
        index_jobs: task.index_jobs as usize,
    };
    match step {
        "precheck" => {
            let report = crate::check_cmd::run_checks(task, &Scope::ALL, false, false, true)
                .await
                .map_err(|f| Error::failed(f.message))?;
            for line in pgtransit::check::render_text(&report, false).lines() {
                w.log(line);
            }
            if report.has_errors() {
                return Err(Error::failed(format!(
                    "precheck found {} error(s) (see `pgtransit logs {} --step precheck`); fix them \
                     (`pgtransit check --fix`), then `pgtransit start {}`",
                    report.summary.errors, task.name, task.name
                )));
            }
            Ok(true)
        }
        "init-struct" => {
            pgtransit::schema::copy_schema(&mut s, &schema(Section::PreData)).await?;
            Ok(true)
        }
        "init-data" if stream => {
            let o = pgtransit::snapshot::CopyOptions {
                table_jobs: task.table_jobs as usize,
                split_bytes: 512 * 1024 * 1024,
                force: false,
            };
            let r = pgtransit::snapshot::init_data(&mut s, &o, w.events()).await?;
            w.log(&format!(
                "copied {} rows in {} unit(s) ({} already done); the change stream starts at {}",
                r.rows, r.units_copied, r.units_skipped, r.consistent_lsn
            ));
            pgtransit::schema::copy_schema(&mut s, &schema(Section::PostData)).await?;
            Ok(true)
        }
        "init-data" => {
            native::create_pub(&mut s).await?;
            native::create_sub(&mut s).await?;
            // The initial sync runs on the target; wait until every table streams.
            let mut watch = native::ErrorWatch::default();
            loop {
                let p = native::progress(&mut s).await?;
                publish_native(w, &p);
                if p.complete {
                    break;
                }
                native_health(&mut s, &p, &mut watch).await?;
                if w.stop.load(Ordering::SeqCst) {
                    return Ok(false);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            pgtransit::schema::copy_schema(&mut s, &schema(Section::PostData)).await?;
            Ok(true)
        }
        "cdc" if stream => {
            let o = pgtransit::stream::CdcOptions {
                until: pgtransit::stream::Until::Stopped,
                stop: w.stop.clone(),
            };
            // The apply runs on a one-thread runtime of its own, as the `cdc` command does:
            // its reader, applier and target connection hand work over without waking
            // threads (measured in bench --apply). This runtime keeps serving signals and
            // the metrics endpoint.
            let events = w.events();
            let r = tokio::task::block_in_place(|| {
                std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            let rt = tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .map_err(|e| {
                                    Error::failed(format!("cannot start the apply runtime: {e}"))
                                })?;
                            rt.block_on(pgtransit::stream::cdc(&mut s, &o, events))
                        })
                        .join()
                        .map_err(|_| Error::failed("the apply thread panicked".to_string()))?
                })
            })?;
            w.log(&format!(
                "applied {} transaction(s) up to {} in this run",
                r.transactions, r.applied_lsn
            ));
            Ok(false)
        }
        "cdc" => {
            // The subscription applies on the target: watch it and publish its lag; an apply
            // that keeps failing, or a disabled subscription, fails the task.
            let mut last = std::time::Instant::now() - Duration::from_secs(60);
            let mut last_position = last;
            let mut watch = native::ErrorWatch::default();
            while !w.stop.load(Ordering::SeqCst) {
                if last.elapsed() >= Duration::from_secs(2) {
                    last = std::time::Instant::now();
                    match native::progress(&mut s).await {
                        Ok(p) => {
                            publish_native(w, &p);
                            if last_position.elapsed() >= Duration::from_secs(30) {
                                last_position = std::time::Instant::now();
                                w.log(&current_position(
                                    p.confirmed_lsn.as_deref().unwrap_or("-"),
                                    None,
                                ));
                            }
                            native_health(&mut s, &p, &mut watch).await?;
                        }
                        Err(e) => {
                            // Errors counted while a side is away are no evidence.
                            watch = native::ErrorWatch::default();
                            w.log(&format!(
                                "cannot read the subscription's state: {}",
                                e.message
                            ));
                            s.forget(pgtransit::check::Side::Source);
                            s.forget(pgtransit::check::Side::Target);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(false)
        }
        other => Err(Error::failed(format!("unknown step {other}"))),
    }
}

/// A native subscription that was disabled, or whose workers keep failing, fails the step.
async fn native_health(
    s: &mut Session<'_>,
    p: &native::Progress,
    watch: &mut native::ErrorWatch,
) -> Result<(), Error> {
    if !p.subscription_exists {
        return Err(Error::failed(format!(
            "the subscription {} is gone from the target: the task cannot go on; recreate it",
            s.task.subscription
        )));
    }
    if !p.enabled {
        return Err(native::apply_failure(s, "is disabled, so nothing is applied").await);
    }
    if let Some(n) = watch.observe(p.errors) {
        let what = format!("failed {n} times within a minute (pg_stat_subscription_stats) and is retrying without end");
        return Err(native::apply_failure(s, &what).await);
    }
    Ok(())
}

/// The native subscription's state as metrics.
fn publish_native(w: &Worker, p: &native::Progress) {
    let m = pgtransit::stream::CdcMetrics {
        applied_lsn: p.confirmed_lsn.clone().unwrap_or_default(),
        source_lsn: p.current_lsn.clone().unwrap_or_default(),
        received_lsn: p.confirmed_lsn.clone().unwrap_or_default(),
        lag_bytes: p.lag_bytes.unwrap_or(0).max(0) as u64,
        lag_seconds: p.lag_seconds.unwrap_or(0.0),
        ..Default::default()
    };
    let json = serde_json::json!({
        "received_lsn": m.received_lsn, "applied_lsn": m.applied_lsn, "source_lsn": m.source_lsn,
        "lag_bytes": m.lag_bytes, "lag_seconds": m.lag_seconds,
        "tables_streaming": p.streaming, "tables": p.total, "errors": p.errors,
    });
    let _ = w.with_store(|s| s.put_metrics(&w.name, &json));
    metrics_http::record_cdc(&m);
    if let Ok(mut st) = w.status.lock() {
        st.cdc = Some(json);
    }
}
