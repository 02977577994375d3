//! `pgtransit run NAME` (the worker in the foreground; `start` runs it detached): the
//! library's worker (`pgtransit::migration::worker`) with its output printed — a line per
//! event, or JSON lines with `--json` — and served on `--metrics-addr`. SIGTERM or Ctrl-C
//! stops it gracefully.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pgtransit::migration::{worker, Metrics, WorkerSink};
use pgtransit::state::{Step, StepState};

use super::metrics_http::{self, Status};
use pgtransit::Error;

/// Prints the worker's lines and keeps the metrics endpoint's status.
struct Printer {
    name: String,
    json: bool,
    status: Arc<Mutex<Status>>,
}

impl WorkerSink for Printer {
    fn line(&self, step: &str, line: &str) {
        if self.json {
            let v = serde_json::json!({"at": pgtransit::state::now(), "task": self.name, "step": step, "line": line});
            outln!("{v}");
        } else {
            outln!("{} [{step}] {line}", timestamp());
        }
    }

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

fn timestamp() -> String {
    let t = pgtransit::state::now();
    let secs = t as i64;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}Z")
}

/// `pgtransit run NAME`.
pub async fn run(name: &str, metrics_addr: Option<String>, json: bool) -> Result<u8, Error> {
    let prepared = worker::prepare(name)?;
    let stop = stop_on_signals();
    let status = Arc::new(Mutex::new(Status::new(name, prepared.record().engine)));
    let bound = match &metrics_addr {
        Some(addr) => Some(metrics_http::serve(addr, status.clone()).await?),
        None => None,
    };
    let sink = Arc::new(Printer {
        name: name.to_string(),
        json,
        status,
    });
    prepared.run(sink, stop, bound).await?;
    Ok(0)
}

/// A flag set by SIGTERM or SIGINT (Ctrl-C): the worker and `cdc` stop gracefully on it.
pub fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
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
        flag.store(true, Ordering::SeqCst);
    });
    stop
}
