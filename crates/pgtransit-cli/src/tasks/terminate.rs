//! `pgtransit terminate NAME`: stop the worker, then drop the task's slot, publication,
//! subscription and origin, each idempotently and reported. An object that cannot be
//! dropped (a server unreachable, a missing grant, an origin in use) does not stop the
//! others: the task stays `terminating` with the exact SQL of what is left (exit 5); a
//! later terminate finishes, or `--force` forgets the task after saying what is left.

use std::time::{Duration, Instant};

use pgtransit::step::Session;
use pgtransit::task::Task;

use super::{alive, json_out, store, TerminateArgs};
use crate::Failure;

/// SIGTERM, then SIGKILL after `wait`; whether a worker was running.
pub async fn stop_worker(pid: Option<u32>, wait: Duration) -> bool {
    let Some(pid) = pid.filter(|_| alive(pid)) else {
        return false;
    };
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let t = Instant::now();
    while alive(Some(pid)) && t.elapsed() < wait {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if alive(Some(pid)) {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    true
}

pub async fn terminate(a: TerminateArgs) -> Result<u8, Failure> {
    let rec = {
        let store = store()?;
        store.existing(&a.name)?
    };
    let stopped = stop_worker(rec.pid, Duration::from_secs(a.wait)).await;
    if stopped && !a.json {
        outln!("stopped worker {}", rec.pid.unwrap_or(0));
    }
    {
        let store = store()?;
        let _ = store.set_status(&a.name, "terminating", None);
        let _ = store.set_worker(&a.name, None, None);
    }
    let task = Task::parse(&rec.spec, &rec.name)?;
    let quiet = a.json;
    let mut s = Session::new(&task, move |l| {
        if !quiet {
            outln!("{l}")
        }
    });
    let c = pgtransit::terminate::cleanup(&mut s).await?;
    drop(s);
    let store = store()?;
    if a.json {
        json_out(
            &serde_json::json!({"task": a.name, "dropped": c.dropped, "absent": c.absent, "kept": c.kept, "left": c.left,
            "forgotten": c.left.is_empty() || a.force}),
        )?;
    } else {
        for d in &c.dropped {
            outln!("dropped {d}");
        }
        for d in &c.absent {
            outln!("already gone: {d}");
        }
        for d in &c.kept {
            outln!("kept, not this task's: {d}");
        }
    }
    if c.left.is_empty() || a.force {
        if !c.left.is_empty() && !a.json {
            outln!(
                "forgetting task {} although these are left; run this SQL yourself:",
                a.name
            );
            for l in &c.left {
                outln!("  -- [{}] {}\n  {}", l.side, l.what, l.sql);
            }
        }
        store.delete_task(&a.name)?;
        if !a.json {
            if c.left.is_empty() {
                outln!(
                    "task {} terminated: nothing of it is left on either server",
                    a.name
                );
            } else {
                outln!(
                    "task {} forgotten (--force); the objects above are left",
                    a.name
                );
            }
        }
        // Forgotten or not, what is left is left: say so in the exit code too.
        return Ok(if c.left.is_empty() { 0 } else { 5 });
    }
    store.set_leftovers(&a.name, &c.left)?;
    let _ = store.set_status(
        &a.name,
        "terminating",
        Some("some objects could not be dropped (a server unreachable, or an error): see describe"),
    );
    if !a.json {
        outln!(
            "task {} is terminating; these are left (the task is kept):",
            a.name
        );
        for l in &c.left {
            outln!("  [{}] {}\n    {}", l.side, l.what, l.sql);
        }
        outln!(
            "run `pgtransit terminate {}` again once the server is back, or `--force` to forget the task",
            a.name
        );
    }
    Ok(5)
}
