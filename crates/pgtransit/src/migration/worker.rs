//! The task worker (`pgtransit run NAME`, or `start` detached). It takes the task's lock (one
//! worker per task), runs the steps that are not complete yet in kbcli's order — precheck,
//! init-struct, init-data, cdc — records each step's state and log lines in the task store,
//! publishes metrics there, and stops gracefully when `stop` is set: the open target
//! transaction is rolled back, what is committed is acknowledged, and the next `start`
//! continues. Everything it says goes to the store and to a [`WorkerSink`]; it prints
//! nothing itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::metrics::{self, Metrics};
use super::process;
use crate::check::Scope;
use crate::native;
use crate::schema::{self, SchemaOptions, Section};
use crate::snapshot::{CopyEvent, Events};
use crate::state::{Step, StepState, Store, TaskRecord, TaskStatus};
use crate::step::{Session, Side};
use crate::task::{Engine, Task};
use crate::{Error, Result};

/// Where a worker's output goes besides the store: the terminal or log file, the metrics
/// endpoint.
pub trait WorkerSink: Send + Sync {
    /// A line of the worker's log (`step` is a step's name, or `worker`).
    fn line(&self, step: &str, line: &str);
    /// A step changed state.
    fn step(&self, _step: Step, _state: StepState) {}
    /// New metrics (about every second during the copy, every two during cdc).
    fn metrics(&self, _m: &Metrics) {}
}

/// Two sinks fed the same (the caller's, and the metrics endpoint).
struct Both<A, B>(A, B);

impl<A: WorkerSink, B: WorkerSink> WorkerSink for Both<A, B> {
    fn line(&self, step: &str, line: &str) {
        self.0.line(step, line);
        self.1.line(step, line);
    }
    fn step(&self, step: Step, state: StepState) {
        self.0.step(step, state);
        self.1.step(step, state);
    }
    fn metrics(&self, m: &Metrics) {
        self.0.metrics(m);
        self.1.metrics(m);
    }
}

impl<S: WorkerSink + ?Sized> WorkerSink for Arc<S> {
    fn line(&self, step: &str, line: &str) {
        (**self).line(step, line)
    }
    fn step(&self, step: Step, state: StepState) {
        (**self).step(step, state)
    }
    fn metrics(&self, m: &Metrics) {
        (**self).metrics(m)
    }
}

/// Warn in the log when the apply is this far behind (the slot retains at least that).
const LAG_WARN_BYTES: u64 = 1024 * 1024 * 1024;

/// A worker that holds its task's lock and has not started the steps yet.
pub struct Prepared {
    store: Store,
    record: TaskRecord,
    task: Task,
    _lock: std::fs::File,
}

/// Check that the task can run and take its lock.
pub fn prepare(name: &str) -> Result<Prepared> {
    let store = Store::open()?;
    let record = store.existing(name)?;
    if record.status == TaskStatus::Terminating {
        return Err(Error::usage(format!(
            "task {name} is being terminated; finish with `pgtransit terminate {name}`"
        )));
    }
    let lock = process::lock(&store, name)?;
    let task = Task::parse(&record.spec, name)?;
    Ok(Prepared {
        store,
        record,
        task,
        _lock: lock,
    })
}

impl Prepared {
    pub fn record(&self) -> &TaskRecord {
        &self.record
    }

    /// Run the steps left; Ok when they are done or `stop` ended them (the task is then
    /// `stopped` and `start` continues), the step's error when one failed. With
    /// `metrics_addr`, the worker serves its metrics there (`endpoint`).
    pub async fn run(
        self,
        sink: Arc<dyn WorkerSink>,
        stop: Arc<AtomicBool>,
        metrics_addr: Option<&str>,
    ) -> Result<TaskStatus> {
        let name = self.record.name.clone();
        let (sink, metrics_addr) = match metrics_addr {
            Some(addr) => {
                let e = super::endpoint::Endpoint::serve(addr, &name, self.record.engine).await?;
                let bound = e.addr.clone();
                let both: Arc<dyn WorkerSink> = Arc::new(Both(sink, e));
                (both, Some(bound))
            }
            None => (sink, None),
        };
        let w = Worker {
            store: Arc::new(Mutex::new(self.store)),
            name: name.clone(),
            step: Arc::new(Mutex::new("worker".into())),
            stop,
            sink,
        };
        w.with_store(|s| {
            let _ = s.set_worker(&name, Some(std::process::id()), metrics_addr.as_deref());
            let _ = s.set_status(&name, TaskStatus::Running, None);
        });
        w.log(&format!(
            "worker {} started for task {name} ({} engine){}",
            std::process::id(),
            self.record.engine,
            metrics_addr
                .as_ref()
                .map(|a| format!(", metrics on http://{a}/metrics"))
                .unwrap_or_default()
        ));
        let result = run_steps(&w, &self.task).await;
        let (status, reason) = match &result {
            Ok(true) => (TaskStatus::Complete, None),
            Ok(false) => (
                TaskStatus::Stopped,
                Some("stopped by a signal; `pgtransit start` continues".to_string()),
            ),
            Err(e) => (TaskStatus::Failed, Some(e.message.clone())),
        };
        w.log(&format!(
            "worker {status}{}",
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
        w.with_store(|s| {
            let _ = s.set_status(&name, status, reason.as_deref());
            let _ = s.set_worker(&name, None, None);
        });
        result.map(|_| status)
    }
}

/// What the steps share.
#[derive(Clone)]
struct Worker {
    store: Arc<Mutex<Store>>,
    name: String,
    /// The step running, for the log lines.
    step: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    sink: Arc<dyn WorkerSink>,
}

impl Worker {
    fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        let s = self.store.lock().unwrap_or_else(|p| p.into_inner());
        f(&s)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// A log line: kept in the store for `logs`, and given to the sink.
    fn log(&self, line: &str) {
        let step = self.step.lock().map(|s| s.clone()).unwrap_or_default();
        self.sink.line(&step, line);
        let _ = self.with_store(|s| s.log(&self.name, &step, line));
    }

    fn set_step(&self, step: Step, state: StepState, reason: Option<&str>) {
        let _ = self.with_store(|s| s.set_step(&self.name, step, state, reason));
        self.sink.step(step, state);
    }

    fn publish(&self, m: Metrics) {
        let _ = self.with_store(|s| s.put_metrics(&self.name, &m, m.lag_sample()));
        self.sink.metrics(&m);
    }

    /// The copy's and the apply's events: metrics published, lines logged (the metrics
    /// every 30 s, the copy's totals every 5 s).
    fn events(&self) -> Events {
        let w = self.clone();
        let last_line = Arc::new(Mutex::new(None::<Instant>));
        let last_warning = Arc::new(Mutex::new(None::<Instant>));
        let last_progress = Arc::new(Mutex::new(None::<Instant>));
        let due = |last: &Mutex<Option<Instant>>, every: u64| {
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(every)) {
                return false;
            }
            *last = Some(Instant::now());
            true
        };
        Arc::new(move |e: CopyEvent| match e {
            CopyEvent::Cdc(m) => {
                if m.lag_bytes > LAG_WARN_BYTES && due(&last_warning, 600) {
                    w.log(&format!(
                        "WARNING: the apply is {} behind; the slot keeps that much WAL on the source. \
                         Set max_slot_wal_keep_size on the source so a stuck task cannot fill its disk",
                        crate::catalog::pretty_bytes(m.lag_bytes as i64)
                    ));
                }
                let line = due(&last_line, 30)
                    .then(|| current_position(&m.applied_lsn, m.last_commit_time));
                w.publish(Metrics::Cdc(m));
                if let Some(line) = line {
                    w.log(&line);
                }
            }
            CopyEvent::Progress(p) => {
                let line =
                    due(&last_progress, 5).then(|| CopyEvent::Progress(p.clone()).to_string());
                w.publish(Metrics::Copy(p));
                if let Some(line) = line {
                    w.log(&line);
                }
            }
            other => w.log(&other.to_string()),
        })
    }
}

/// kbcli's CDC position line (`logs NAME --step cdc | grep current_position`): the source
/// LSN applied on the target and the source commit time of the last applied transaction.
fn current_position(lsn: &str, commit_time: Option<f64>) -> String {
    format!(
        "current_position: lsn={lsn} timestamp={}",
        commit_time
            .map(super::status::utc)
            .unwrap_or_else(|| "-".into())
    )
}

/// Run every step not complete or skipped; Ok(false) when stopped.
async fn run_steps(w: &Worker, task: &Task) -> Result<bool> {
    let steps = w.with_store(|s| s.steps(&w.name))?;
    for &step in Step::ALL {
        let state = steps
            .iter()
            .find(|s| s.step == step)
            .map(|s| s.status)
            .unwrap_or(StepState::Pending);
        if state.settled() {
            w.set_step(step, state, None);
            continue;
        }
        if w.stopped() {
            return Ok(false);
        }
        *w.step.lock().unwrap_or_else(|p| p.into_inner()) = step.to_string();
        w.set_step(step, StepState::Running, None);
        w.log(&format!("{step}: started"));
        match run_step(w, task, step).await {
            Ok(true) => {
                w.set_step(step, StepState::Complete, None);
                w.log(&format!("{step}: complete"));
            }
            Ok(false) => {
                // Stopped in the middle: the step continues where it was.
                w.set_step(
                    step,
                    StepState::Pending,
                    Some("stopped; continues on the next start"),
                );
                return Ok(false);
            }
            Err(e) => {
                w.set_step(step, StepState::Failed, Some(&e.message));
                w.log(&format!("{step}: failed: {}", e.message));
                return Err(e);
            }
        }
    }
    Ok(true)
}

/// One step; Ok(false) when stopped before its end.
async fn run_step(w: &Worker, task: &Task, step: Step) -> Result<bool> {
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
        Step::Precheck => {
            let wl = w.clone();
            let say = move |l: &str| wl.log(l);
            let report = crate::check::run_and_fix(task, &Scope::ALL, false, false, &say).await?;
            for line in crate::check::render_text(&report, false).lines() {
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
        Step::InitStruct => {
            schema::copy_schema(&mut s, &schema(Section::PreData)).await?;
            Ok(true)
        }
        Step::InitData if stream => {
            let o = crate::snapshot::CopyOptions {
                table_jobs: task.table_jobs as usize,
                split_bytes: 512 * 1024 * 1024,
                force: false,
            };
            let r = crate::snapshot::init_data(&mut s, &o, w.events()).await?;
            w.log(&format!(
                "copied {} rows in {} unit(s) ({} already done); the change stream starts at {}",
                r.rows, r.units_copied, r.units_skipped, r.consistent_lsn
            ));
            schema::copy_schema(&mut s, &schema(Section::PostData)).await?;
            Ok(true)
        }
        Step::InitData => {
            native::create_pub(&mut s).await?;
            native::create_sub(&mut s).await?;
            // The initial sync runs on the target; wait until every table streams.
            let mut watch = native::ErrorWatch::default();
            loop {
                let p = native::progress(&mut s).await?;
                w.publish(Metrics::Cdc(metrics::from_native(&p)));
                if p.complete {
                    break;
                }
                native_health(&mut s, &p, &mut watch).await?;
                if w.stopped() {
                    return Ok(false);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            schema::copy_schema(&mut s, &schema(Section::PostData)).await?;
            Ok(true)
        }
        Step::Cdc if stream => {
            let o = crate::stream::CdcOptions {
                until: crate::stream::Until::Stopped,
                stop: w.stop.clone(),
            };
            // The apply runs on a one-thread runtime of its own, as the `cdc` command does:
            // its reader, applier and target connection hand work over without waking
            // threads (measured in bench --apply). The caller's runtime keeps serving
            // signals and the metrics endpoint.
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
                            rt.block_on(crate::stream::cdc(&mut s, &o, events))
                        })
                        .join()
                        .map_err(|_| Error::failed("the apply thread panicked"))?
                })
            })?;
            w.log(&format!(
                "applied {} transaction(s) up to {} in this run",
                r.transactions, r.applied_lsn
            ));
            Ok(false)
        }
        Step::Cdc => {
            // The subscription applies on the target: watch it and publish its lag; an apply
            // that keeps failing, or a disabled subscription, fails the task.
            let mut last = Instant::now() - Duration::from_secs(60);
            let mut last_position = last;
            let mut watch = native::ErrorWatch::default();
            while !w.stopped() {
                if last.elapsed() >= Duration::from_secs(2) {
                    last = Instant::now();
                    match native::progress(&mut s).await {
                        Ok(p) => {
                            w.publish(Metrics::Cdc(metrics::from_native(&p)));
                            if last_position.elapsed() >= Duration::from_secs(30) {
                                last_position = Instant::now();
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
                            s.forget(Side::Source);
                            s.forget(Side::Target);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(false)
        }
    }
}

/// A native subscription that was disabled, or whose workers keep failing, fails the step.
async fn native_health(
    s: &mut Session<'_>,
    p: &native::Progress,
    watch: &mut native::ErrorWatch,
) -> Result<()> {
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
        let what = format!(
            "failed {n} times within a minute (pg_stat_subscription_stats) and is retrying without end"
        );
        return Err(native::apply_failure(s, &what).await);
    }
    Ok(())
}
