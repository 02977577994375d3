//! Migration tasks, the kbcli way on one machine: `create`, `start` / `run`, `list`,
//! `describe`, `logs`, `templates`, `terminate`. Tasks live in the task store under
//! `$PGTRANSIT_HOME`; a worker process runs each one.

mod create;
mod show;
mod switchover;
mod terminate;
mod worker;

use std::path::PathBuf;

use clap::Args;
use pgtransit::state::Step;
use pgtransit::switchover::{Fence, Reroute};
use pgtransit::task::{Engine, OnMissingRow};
use pgtransit::verify::VerifyChoice;

use pgtransit::Error;

use crate::out::json as json_out;
pub use create::create;
pub use show::{describe, list, logs, templates};
pub use switchover::{rollback, run as switchover};
pub use terminate::terminate;
pub use worker::stop_on_signals;

#[derive(Args)]
pub struct CreateArgs {
    /// The task's name (letters, digits, `-` and `_`)
    pub name: String,
    /// Take source, target, objects and options from a task file (native or Pigsty)
    #[arg(short = 't', long = "task", value_name = "FILE")]
    pub task_file: Option<PathBuf>,
    /// Source database (libpq URL or key=value string)
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// Target database (libpq URL or key=value string); kbcli's --sink is accepted
    #[arg(long, value_name = "URL", alias = "sink")]
    pub target: Option<String>,
    /// Schemas or tables to move, e.g. '"public.t1","s2"' or public.t1,s2 (everything else is
    /// left out); kbcli's --migration-object is accepted
    #[arg(long, value_name = "LIST", alias = "migration-object")]
    pub objects: Option<String>,
    /// Steps to run, e.g. precheck=true,init-struct=false,init-data=true,cdc=true
    #[arg(long, value_name = "LIST")]
    pub steps: Option<String>,
    #[arg(long, value_name = "stream|native")]
    pub engine: Option<Engine>,
    /// A template from `pgtransit templates` (kbcli's apecloud-pg2pg is the stream engine)
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,
    /// Stream engine: an UPDATE or DELETE whose row is not on the target stops the apply
    /// (`stop`, the default) or is counted and logged (`log`)
    #[arg(long, value_name = "stop|log", value_parser = OnMissingRow::parse)]
    pub on_missing_row: Option<OnMissingRow>,
    /// Record the task without starting its worker
    #[arg(long)]
    pub no_start: bool,
    /// The worker serves Prometheus metrics and a JSON status here (HOST:PORT)
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct WorkerArgs {
    pub name: String,
    /// Serve Prometheus metrics on /metrics and the status as JSON on /status (HOST:PORT)
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct NameArgs {
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct LogsArgs {
    pub name: String,
    #[arg(long, value_name = "precheck|init-struct|init-data|cdc")]
    pub step: Option<Step>,
    /// Keep printing new lines as the worker writes them
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct TerminateArgs {
    pub name: String,
    /// Forget the task even if something could not be dropped (the SQL is printed)
    #[arg(long)]
    pub force: bool,
    /// Seconds to wait for the worker to stop after SIGTERM before SIGKILL
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
    /// Print every action (side and SQL, with its guard) without running anything
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SwitchoverArgs {
    pub name: String,
    #[command(flatten)]
    pub flags: SwitchoverFlags,
    /// Lift the fence of a switchover that stopped halfway (before the reroute) instead of
    /// continuing it
    #[arg(long)]
    pub undo: bool,
    /// Print every action (side and SQL) without running anything
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

/// The switchover's choices (`pgtransit::migration::SwitchoverChoices`).
#[derive(Args, Clone, Debug)]
pub struct SwitchoverFlags {
    /// readonly (no new session but superusers', the others ended), pgbouncer (PAUSE:
    /// clients wait), pgbouncer+readonly (both), none, or hook:COMMAND
    #[arg(long, default_value = "readonly")]
    pub fence: Fence,
    /// pgbouncer (the database entry points at the target, RELOAD, RESUME), none, or
    /// hook:COMMAND (run with PGTRANSIT_TARGET set to the target, no password)
    #[arg(long, default_value = "none")]
    pub reroute: Reroute,
    /// pgbouncer's admin console, e.g. postgres://pgbouncer@10.0.0.5:6432/pgbouncer (the
    /// password from .pgpass or PGPASSWORD)
    #[arg(long, value_name = "URL")]
    pub pgbouncer: Option<String>,
    /// pgbouncer's database entry the application uses (default: the entry that SHOW
    /// DATABASES shows pointing at the source's host, port and database)
    #[arg(long, value_name = "NAME")]
    pub pgbouncer_db: Option<String>,
    /// The file with that entry in its [databases] section, rewritten by --reroute
    /// pgbouncer (default: SHOW CONFIG's conffile, or the file it %includes that has it)
    #[arg(long, value_name = "FILE")]
    pub pgbouncer_config: Option<PathBuf>,
    /// Refuse to start when the target is further behind than this many bytes
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_lag: i64,
    /// Seconds to wait for the target to reach the barrier (and for pgbouncer's PAUSE);
    /// then the fence is undone
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub barrier_timeout: u64,
    /// Added to each sequence in its own direction
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub seq_shift: i64,
    /// count, checksum or none
    #[arg(long, default_value = "count", value_name = "count|checksum|none")]
    pub verify: VerifyChoice,
    /// Replicate from the new primary back to the old one (task NAME-reverse), so that
    /// `pgtransit rollback NAME` can switch back
    #[arg(long)]
    pub reverse: bool,
}

/// `pgtransit run NAME`: the worker in the foreground.
pub async fn run(a: WorkerArgs) -> Result<u8, Error> {
    worker::run(&a.name, a.metrics_addr, a.json).await
}

/// `pgtransit start NAME`: the worker detached.
pub async fn start(a: WorkerArgs) -> Result<u8, Error> {
    create::start_worker(&a.name, a.metrics_addr.as_deref(), a.json).await
}
