//! The `pgtransit` command line.
//!
//! Exit codes (documented in the README):
//! * 0 — success; for `check`, no error finding
//! * 2 — usage error, bad task file, or a connection that could not be opened
//! * 3 — `check` found at least one error finding
//! * 1 — any other failure (a query failed, a sandbox could not start)
//! * 3 — also `diff` found a difference
//! * 4 — a step refused to overwrite data or an object it does not own; a task name taken;
//!   a task that already has a worker
//! * 5 — `terminate` could not drop everything: the task stays `terminating`, with what is left
//! * 141 — stdout was closed by its reader (`| head`): the command ended quietly

#[macro_use]
mod out;

mod check_cmd;
mod demo;
mod native_cmd;
mod progress;
mod stream_cmd;
mod task_cmd;
mod tasks;
mod verify_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgtransit::{Error, ErrorKind};

#[derive(Parser)]
#[command(
    name = "pgtransit",
    version,
    about = "Move a live PostgreSQL database to another cluster with logical replication",
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage/task file/connection error, 3 check or diff found errors,\n\
                  4 refused (would overwrite data or an object this task does not own; name taken; worker running),\n\
                  5 terminate left objects behind (server unreachable; the task stays terminating).\n\
                  Passwords: from ~/.pgpass or PGPASSWORD; never printed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the task comes from: a task file, or URLs on the command line.
#[derive(clap::Args, Clone)]
pub struct TaskArgs {
    /// Task file (native YAML or a Pigsty migration task file)
    #[arg(short = 't', long = "task", value_name = "FILE")]
    pub task_file: Option<PathBuf>,
    /// Source database (libpq URL or key=value string; PG* variables fill the gaps)
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// Target database (libpq URL or key=value string)
    #[arg(long, value_name = "URL", alias = "sink")]
    pub target: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Assess the source (and target) before a migration
    Check(check_cmd::CheckArgs),
    /// Task files: show how one resolves
    #[command(subcommand)]
    Task(task_cmd::TaskCommand),
    /// Write the Pigsty-style context folder: scripts, SQL and the manual for this task
    Generate(native_cmd::GenerateArgs),
    /// Stream engine: schema without keys before the copy; after it, indexes built in parallel
    InitStruct(stream_cmd::InitStructArgs),
    /// Stream engine: the initial copy from the slot's exported snapshot (rerun to resume)
    InitData(stream_cmd::InitDataArgs),
    /// Stream engine: read the slot and apply the changes to the target (until --until or SIGTERM)
    Cdc(stream_cmd::CdcArgs),
    /// Native engine: load the source schema into the target (pre-data, post-data, all)
    CopySchema(native_cmd::CopySchemaArgs),
    /// Native engine: create the publication on the source
    CreatePub(native_cmd::StepArgs),
    /// Native engine: create the subscription on the target
    CreateSub(native_cmd::StepArgs),
    /// Native engine: add tables created on the source since create-pub
    Refresh(native_cmd::StepArgs),
    /// Native engine: per-table sync state, copy progress, lag and errors
    #[command(alias = "copy-progress")]
    Progress(native_cmd::ProgressArgs),
    /// Exact row counts and sequence values on both sides, PASS/FAIL per object
    #[command(alias = "copy-diff")]
    Diff(native_cmd::DiffArgs),
    /// Set the target's sequences from the source, shifted by N in each one's direction
    CopySeq(native_cmd::CopySeqArgs),
    /// Native engine: drop the subscription and its slot (works with the source down)
    DropSub(native_cmd::StepArgs),
    /// Native engine: drop the publication
    DropPub(native_cmd::StepArgs),
    /// Two local sandbox clusters with a sample database full of typical problems, checked
    Demo(demo::DemoArgs),
    /// Create a migration task (kbcli: create) and start its worker unless --no-start
    Create(tasks::CreateArgs),
    /// Start a task's worker in the background (resumes where it stopped)
    Start(tasks::WorkerArgs),
    /// Run a task's worker in the foreground (for systemd or a Kubernetes job)
    Run(tasks::WorkerArgs),
    /// The tasks: name, engine, source -> target, status, step, lag, age
    List(tasks::ListArgs),
    /// One task: steps, live metrics, copy progress, warnings, what to do next
    Describe(tasks::NameArgs),
    /// A task's log, of one step or all (--follow to keep reading)
    Logs(tasks::LogsArgs),
    /// Supported source -> target versions and engines
    Templates(tasks::ListArgs),
    /// Stop a task's worker and drop its slot, publication, subscription and origin
    Terminate(tasks::TerminateArgs),
    /// Compare the target's content with the source's: exact counts, or row checksums
    Verify(verify_cmd::VerifyArgs),
    /// Fence the source, wait for the barrier, set sequences, verify, reroute, clean up
    Switchover(tasks::SwitchoverArgs),
    /// Switch back to the old source after `switchover --reverse` (same steps, reversed)
    Rollback(tasks::SwitchoverArgs),
}

/// The one place where the library's kinds of failure become exit codes (README: Exit
/// codes).
fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Usage | ErrorKind::Connect => 2,
        ErrorKind::Failed | ErrorKind::Lost => 1,
        ErrorKind::Differences => 3,
        ErrorKind::Refused => 4,
    }
}

fn main() -> ExitCode {
    // tokio-postgres logs every statement's text at debug level, and a statement can carry a
    // secret (CREATE SUBSCRIPTION ... CONNECTION '... password=...'): keep it at info
    // whatever PGTRANSIT_LOG asks for.
    // Server NOTICEs (logged by tokio-postgres at info) only when logging was asked for.
    let (wanted, notices) = match std::env::var("PGTRANSIT_LOG") {
        Ok(w) => (w, "info"),
        Err(_) => ("warn".to_string(), "warn"),
    };
    let filter =
        tracing_subscriber::EnvFilter::try_new(format!("{wanted},tokio_postgres={notices}"))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,tokio_postgres=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    pgtransit::arm_fail_points();
    let cli = Cli::parse();
    // The change apply is one stream through one session: on one thread, the hand-offs
    // between the replication reader, the applier and the target connection cost no
    // thread wake-ups. Everything else (parallel copies, index builds) gets every core.
    let runtime = if matches!(cli.command, Command::Cdc(_)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Check(args) => check_cmd::run(args).await,
            Command::Task(cmd) => task_cmd::run(cmd),
            Command::Demo(args) => demo::run(args).await,
            Command::Generate(a) => native_cmd::generate(a),
            Command::InitStruct(a) => stream_cmd::init_struct(a).await,
            Command::InitData(a) => stream_cmd::init_data(a).await,
            Command::Cdc(a) => stream_cmd::cdc(a).await,
            Command::CopySchema(a) => native_cmd::copy_schema(a).await,
            Command::CreatePub(a) => native_cmd::create_pub(a).await,
            Command::CreateSub(a) => native_cmd::create_sub(a).await,
            Command::Refresh(a) => native_cmd::refresh(a).await,
            Command::Progress(a) => native_cmd::progress(a).await,
            Command::Diff(a) => native_cmd::diff(a).await,
            Command::CopySeq(a) => native_cmd::copy_seq(a).await,
            Command::DropSub(a) => native_cmd::drop_sub(a).await,
            Command::DropPub(a) => native_cmd::drop_pub(a).await,
            Command::Create(a) => tasks::create(a).await,
            Command::Start(a) => tasks::start(a).await,
            Command::Run(a) => tasks::run(a).await,
            Command::List(a) => tasks::list(a),
            Command::Describe(a) => tasks::describe(a).await,
            Command::Logs(a) => tasks::logs(a).await,
            Command::Templates(a) => tasks::templates(a),
            Command::Terminate(a) => tasks::terminate(a).await,
            Command::Verify(a) => verify_cmd::run(a).await,
            Command::Switchover(a) => tasks::switchover(a).await,
            Command::Rollback(a) => tasks::rollback(a).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(exit_code(e.kind))
        }
    }
}

/// Resolve the task from `-t FILE` or `--source/--target`.
pub fn resolve_task(args: &TaskArgs) -> Result<pgtransit::task::Task, Error> {
    pgtransit::task::Task::resolve(
        args.task_file.as_deref(),
        args.source.as_deref(),
        args.target.as_deref(),
    )
}
