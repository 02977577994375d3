//! A migration task's lifecycle, kbcli's way on one machine: [`create`] records a task,
//! a worker process ([`worker`]) runs its steps, [`status`] says where it stands and what
//! comes next, [`switchover`] moves the writes (and `rollback` moves them back), and
//! [`terminate`] removes what the task made. The task store (`crate::state`) holds each
//! task's record, steps, logs, metrics and switchover progress between the processes.
//!
//! Nothing here prints: lines go to the store and to the caller's sink or `say` callback,
//! results come back as values the command line renders.

pub mod create;
pub mod endpoint;
pub mod metrics;
pub mod process;
pub mod status;
pub mod switchover;
pub mod terminate;
pub mod worker;

/// A recorded task, as its worker runs it.
pub fn task(name: &str) -> crate::Result<crate::task::Task> {
    let rec = crate::state::Store::open()?.existing(name)?;
    Ok(crate::task::Task::parse(&rec.spec, name)?)
}

pub use create::{create, CreateRequest, Created, TEMPLATES};
pub use metrics::Metrics;
pub use process::{alive, effective_status, spawn_worker, stop_worker, Started};
pub use switchover::{rollback, switchover, Outcome, SwitchoverChoices, SwitchoverRequest};
pub use terminate::{terminate, Terminated};
pub use worker::WorkerSink;
