//! `pgtransit run NAME` (the worker in the foreground; `start` runs it detached): the
//! library's worker (`pgtransit::migration::worker`, which also serves `--metrics-addr`)
//! with its lines printed — text, or JSON lines with `--json`. SIGTERM or Ctrl-C stops it
//! gracefully.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pgtransit::migration::{worker, WorkerSink};
use pgtransit::Error;

/// Prints the worker's lines.
struct Printer {
    name: String,
    json: bool,
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
    let sink = Arc::new(Printer {
        name: name.to_string(),
        json,
    });
    prepared.run(sink, stop, metrics_addr.as_deref()).await?;
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
