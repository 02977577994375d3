//! `terminate`: stop the worker, then drop the task's slot, publication, subscription and
//! origin, each idempotently and reported. An object that cannot be dropped (a server
//! unreachable, a missing grant, an origin in use) does not stop the others: the task stays
//! `terminating` with the exact SQL of what is left; a later terminate finishes, or `force`
//! forgets the task after saying what is left.

use std::time::Duration;

use super::process;
use crate::state::{Store, TaskStatus};
use crate::step::Session;
use crate::task::Task;
use crate::terminate::Cleanup;
use crate::Result;

/// What `terminate` did.
#[derive(Debug, serde::Serialize)]
pub struct Terminated {
    pub task: String,
    /// The worker it stopped.
    pub stopped_worker: Option<u32>,
    #[serde(flatten)]
    pub cleanup: Cleanup,
    /// The task is gone from the store (nothing left, or `force`).
    pub forgotten: bool,
}

/// What `terminate` would do (`--dry-run`): the worker stopped, then each drop with its
/// guard, per side.
pub fn plan(name: &str) -> Result<crate::step::Plan> {
    let rec = Store::open()?.existing(name)?;
    let mut plan = crate::terminate::plan(&super::task(name)?);
    plan.actions.insert(
        0,
        crate::step::Action::Program {
            why: match rec.pid.filter(|_| process::alive(rec.pid)) {
                Some(_) => "stop the worker (SIGKILL after --wait seconds)".into(),
                None => "no worker runs".into(),
            },
            command: match rec.pid.filter(|_| process::alive(rec.pid)) {
                Some(pid) => format!("kill -TERM {pid}"),
                None => "true".into(),
            },
        },
    );
    Ok(plan)
}

/// Stop the worker (SIGTERM, SIGKILL after `wait`), drop what is the task's (each action
/// said through `say`), and forget the task unless something is left and not `force`.
pub async fn terminate(
    name: &str,
    force: bool,
    wait: Duration,
    say: impl Fn(&str) + Send + Sync + 'static,
) -> Result<Terminated> {
    let rec = Store::open()?.existing(name)?;
    let stopped = process::stop_worker(rec.pid, wait).await;
    {
        let store = Store::open()?;
        let _ = store.set_status(name, TaskStatus::Terminating, None);
        let _ = store.set_worker(name, None, None);
    }
    let task = Task::parse(&rec.spec, &rec.name)?;
    let mut s = Session::new(&task, say);
    let cleanup = crate::terminate::cleanup(&mut s).await?;
    drop(s);
    let store = Store::open()?;
    let forgotten = cleanup.left.is_empty() || force;
    if forgotten {
        store.delete_task(name)?;
    } else {
        store.set_leftovers(name, &cleanup.left)?;
        let _ = store.set_status(
            name,
            TaskStatus::Terminating,
            Some("some objects could not be dropped (a server unreachable, or an error): see describe"),
        );
    }
    Ok(Terminated {
        task: name.to_string(),
        stopped_worker: stopped.then_some(rec.pid).flatten(),
        cleanup,
        forgotten,
    })
}
