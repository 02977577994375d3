//! The worker's metrics endpoint (`--metrics-addr HOST:PORT`): Prometheus text on
//! `/metrics` (lag, rows, copy progress, step states) and the task's status as JSON on
//! `/status`, for whatever scrapes the worker process. Values are set as the worker
//! publishes them (a [`WorkerSink`]), every two seconds at most.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::{routing::get, Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

use super::{Metrics, WorkerSink};
use crate::snapshot::CopyProgress;
use crate::state::{Step, StepState};
use crate::stream::CdcMetrics;
use crate::task::Engine;
use crate::Error;

/// The task's state as `/status` serves it.
#[derive(Clone, Serialize)]
struct Status {
    pub task: String,
    pub engine: Engine,
    pub pid: u32,
    pub steps: BTreeMap<Step, StepState>,
    pub cdc: Option<CdcMetrics>,
    pub copy: Option<CopyProgress>,
}

impl Status {
    fn new(task: &str, engine: Engine) -> Status {
        Status {
            task: task.into(),
            engine,
            pid: std::process::id(),
            steps: BTreeMap::new(),
            cdc: None,
            copy: None,
        }
    }

    /// Keep what a worker published, and set the gauges.
    fn record(&mut self, m: &Metrics) {
        match m {
            Metrics::Cdc(c) => {
                record_cdc(c);
                self.cdc = Some(c.clone());
            }
            Metrics::Copy(p) => {
                record_copy(p);
                self.copy = Some(p.clone());
            }
        }
    }

    fn record_step(&mut self, step: Step, state: StepState) {
        record_step(step, state);
        self.steps.insert(step, state);
    }
}

/// A served endpoint: the address bound, and the status it serves.
pub struct Endpoint {
    pub addr: String,
    status: Arc<Mutex<Status>>,
}

impl Endpoint {
    /// Bind `addr` (port 0 picks a free one) and serve the task's status.
    pub async fn serve(addr: &str, task: &str, engine: Engine) -> Result<Endpoint, Error> {
        let status = Arc::new(Mutex::new(Status::new(task, engine)));
        let bound = serve(addr, status.clone()).await?;
        Ok(Endpoint {
            addr: bound,
            status,
        })
    }
}

impl WorkerSink for Endpoint {
    fn line(&self, _step: &str, _line: &str) {}

    fn step(&self, step: Step, state: StepState) {
        if let Ok(mut st) = self.status.lock() {
            st.record_step(step, state);
        }
    }

    fn metrics(&self, m: &Metrics) {
        if let Ok(mut st) = self.status.lock() {
            st.record(m);
        }
    }
}

/// Bind `addr` and serve; the address actually bound.
async fn serve(addr: &str, status: Arc<Mutex<Status>>) -> Result<String, Error> {
    let handle: PrometheusHandle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| Error::failed(format!("cannot set up the metrics recorder: {e}")))?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::usage(format!(
            "--metrics-addr {addr}: cannot listen there ({e}); give a free HOST:PORT"
        ))
    })?;
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| addr.to_string());
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route(
            "/status",
            get(move || {
                let s = status.lock().map(|s| s.clone()).ok();
                std::future::ready(Json(s))
            }),
        );
    tokio::spawn(accept_loop(listener, app));
    Ok(bound)
}

/// At most this many scrapes at once; more are closed at once. The endpoint shares the
/// worker's file descriptors: sockets left open by clients must not starve the apply.
const MAX_CONNECTIONS: usize = 16;
/// A connection is closed after this long, answered or not (a client that connects and
/// sends nothing, or reads slowly).
const CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serve each connection with one request (no keep-alive), at most `MAX_CONNECTIONS` at
/// once, each for at most `CONNECTION_TIMEOUT`. (axum::serve has neither bound.)
async fn accept_loop(listener: tokio::net::TcpListener, app: Router) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors or a reset before accept: wait a little, go on.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

fn record_cdc(m: &CdcMetrics) {
    metrics::gauge!("pgtransit_lag_bytes").set(m.lag_bytes as f64);
    metrics::gauge!("pgtransit_lag_seconds").set(m.lag_seconds);
    metrics::gauge!("pgtransit_applied_rows").set(m.rows as f64);
    metrics::gauge!("pgtransit_applied_transactions").set(m.transactions as f64);
    metrics::gauge!("pgtransit_rows_per_second").set(m.rows_per_second);
    metrics::gauge!("pgtransit_transactions_per_second").set(m.transactions_per_second);
    metrics::gauge!("pgtransit_missing_rows").set(m.missing_rows as f64);
    if let Some(t) = m.last_commit_time {
        metrics::gauge!("pgtransit_last_source_commit_timestamp_seconds").set(t);
    }
}

fn record_copy(p: &CopyProgress) {
    metrics::gauge!("pgtransit_copy_units_done").set(p.units_done as f64);
    metrics::gauge!("pgtransit_copy_units_total").set(p.units_total as f64);
    metrics::gauge!("pgtransit_copy_rows").set(p.rows as f64);
    metrics::gauge!("pgtransit_copy_bytes").set(p.bytes as f64);
    metrics::gauge!("pgtransit_copy_percent").set(p.percent);
}

/// One gauge per step and state, 1 for the step's current state.
fn record_step(step: Step, state: StepState) {
    for s in StepState::ALL {
        metrics::gauge!("pgtransit_step", "step" => step.as_str(), "state" => s.as_str())
            .set(if *s == state { 1.0 } else { 0.0 });
    }
}
