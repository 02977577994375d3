//! `switchover NAME` and `rollback NAME` as a task's lifecycle: the choices and each phase
//! are recorded in the task store, so running it again continues a switchover that stopped
//! halfway and `--undo` lifts its fence; at the end the forward replication is removed, the
//! reverse task (with `--reverse`) gets its worker, and the report stays with the task.
//! The phases themselves are `crate::switchover`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::create::record;
use super::metrics::Metrics;
use super::process;
use crate::conn::ConnSpec;
use crate::pgbouncer::Bouncer;
use crate::state::{secrets, Step, Store, TaskStatus};
use crate::step::Session;
use crate::switchover::{
    self as phases, Fence, Phase, Progress, Reopen, Reroute, SwitchoverOptions, SwitchoverReport,
};
use crate::task::{Engine, Task};
use crate::terminate::Cleanup;
use crate::verify::VerifyChoice;
use crate::{Error, Result};

/// The switchover's choices; recorded with its progress (without passwords) so that a
/// switchover that stopped halfway continues with the choices it started with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwitchoverChoices {
    pub fence: Fence,
    pub reroute: Reroute,
    /// pgbouncer's admin console (its password from .pgpass or PGPASSWORD; never recorded).
    pub pgbouncer: Option<String>,
    /// pgbouncer's database entry the application uses (found on the console unless given).
    pub pgbouncer_db: Option<String>,
    /// The file with that entry (found on the console unless given).
    pub pgbouncer_config: Option<PathBuf>,
    /// Refuse to start when the target is further behind than this many bytes.
    pub max_lag: i64,
    /// Seconds to wait for the barrier (and pgbouncer's PAUSE); then the fence is undone.
    pub barrier_timeout: u64,
    /// Added to each sequence in its own direction.
    pub seq_shift: i64,
    pub verify: VerifyChoice,
    /// Replicate from the new primary back to the old one (task NAME-reverse).
    pub reverse: bool,
}

/// What to do with the switchover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Run,
    /// Say what it would do, change nothing.
    DryRun,
    /// Lift the fence of a switchover that stopped halfway.
    Undo,
}

pub struct SwitchoverRequest {
    pub name: String,
    pub choices: SwitchoverChoices,
    pub mode: Mode,
    /// The `pgtransit` program, to start the reverse task's worker.
    pub exe: PathBuf,
}

/// Where the progress lines go.
pub type Say = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Debug, Serialize)]
pub struct Done {
    pub report: SwitchoverReport,
    pub cleanup: Cleanup,
    pub reverse_worker_pid: Option<u32>,
    /// One line: the downtime, the barrier, what was verified.
    #[serde(skip)]
    pub summary: String,
    /// With a readonly fence: how the old source stays closed and how to reopen it.
    #[serde(skip)]
    pub fenced_source: Option<String>,
}

#[derive(Debug)]
pub enum Outcome {
    /// `DryRun`: the actions, per side, with their SQL.
    Planned(crate::step::Plan),
    /// `Undo`: what lifting the fence did.
    Undone(String),
    Done(Box<Done>),
}

/// What the store keeps per switchover: the choices and how far it got.
#[derive(Serialize, Deserialize)]
pub(crate) struct Saved {
    /// `flags` in the store since the first version.
    #[serde(rename = "flags")]
    pub(crate) choices: SwitchoverChoices,
    pub(crate) progress: Progress,
}

pub(crate) fn load(st: &Store, name: &str) -> Result<Option<Saved>> {
    Ok(st
        .switchover(name)?
        .and_then(|j| serde_json::from_str(&j).ok()))
}

fn save(name: &str, choices: &SwitchoverChoices, p: &Progress) {
    let mut choices = choices.clone();
    choices.pgbouncer = choices
        .pgbouncer
        .as_deref()
        .map(crate::task::strip_conn_string_password);
    let saved = Saved {
        choices,
        progress: p.clone(),
    };
    if let (Ok(st), Ok(json)) = (Store::open(), serde_json::to_string(&saved)) {
        let _ = st.set_switchover(name, &json);
    }
}

/// The switchover of a task that has not switched over.
pub async fn switchover(req: SwitchoverRequest, say: Say) -> Result<Outcome> {
    Store::open()?.existing(&req.name)?;
    move_writes(req, None, say).await
}

/// `rollback NAME`: the switchover of NAME's reverse task, which gives the old source its
/// connection limit or write privileges back if the switchover fenced it readonly.
pub async fn rollback(req: SwitchoverRequest, say: Say) -> Result<Outcome> {
    if req.choices.reverse {
        return Err(Error::usage(
            "rollback --reverse: a rollback does not replicate forward again; create a new task",
        ));
    }
    let st = Store::open()?;
    st.existing(&req.name)?;
    let saved = load(&st, &req.name)?.filter(|s| s.progress.phase == Phase::Done);
    let Some(saved) = saved else {
        return Err(Error::usage(format!(
            "task {} has not switched over: nothing to roll back",
            req.name
        )));
    };
    let Some(rev) = saved.progress.report.reverse.clone() else {
        return Err(Error::usage(format!(
            "task {} switched over without --reverse: nothing replicates back to the old source, \
             so it may have missed writes; rollback needs `switchover --reverse`",
            req.name
        )));
    };
    let unfence = if saved.choices.fence.readonly() {
        Reopen::from_progress(&saved.progress)
    } else {
        None
    };
    drop(st);
    let forward = req.name.clone();
    let moved = req.mode == Mode::Run;
    let out = move_writes(SwitchoverRequest { name: rev, ..req }, unfence, say).await?;
    if moved {
        let _ = Store::open()?.set_status(
            &forward,
            TaskStatus::RolledBack,
            Some("the writes went back to the source (see the -reverse task)"),
        );
    }
    Ok(out)
}

/// pgbouncer for the fence and reroute: its entry and config file from the admin console
/// unless given (`Bouncer::discover`), said through `say`.
async fn bouncer(c: &SwitchoverChoices, task: &Task, say: &Say) -> Result<Option<Bouncer>> {
    if !c.fence.uses_pgbouncer() && c.reroute != Reroute::Pgbouncer {
        return Ok(None);
    }
    let Some(url) = &c.pgbouncer else {
        return Err(Error::usage(
            "the pgbouncer fence and reroute need --pgbouncer ADMIN_URL (its admin console, as \
             a user in admin_users); the entry and the config file are found there",
        ));
    };
    let admin = ConnSpec::parse(url).map_err(|e| e.context("--pgbouncer"))?;
    let (b, said) = Bouncer::discover(
        admin,
        &task.source,
        c.pgbouncer_db.clone(),
        c.pgbouncer_config.clone(),
    )
    .await?;
    say(&said);
    Ok(Some(b))
}

async fn options(
    c: &SwitchoverChoices,
    task: &Task,
    reverse: Option<Task>,
    unfence_target: Option<Reopen>,
    say: &Say,
) -> Result<SwitchoverOptions> {
    Ok(SwitchoverOptions {
        fence: c.fence.clone(),
        reroute: c.reroute.clone(),
        bouncer: bouncer(c, task, say).await?,
        max_lag_bytes: c.max_lag,
        barrier_timeout: Duration::from_secs(c.barrier_timeout),
        seq_shift: c.seq_shift,
        verify: c.verify.mode(),
        reverse,
        unfence_target,
    })
}

/// The reverse task's record (created once, before its replication exists, so that an
/// undo or terminate finds it), with its own copy of the task's password file.
fn reverse_task(st: &Store, task: &Task) -> Result<Task> {
    let mut rev = task
        .reversed()
        .ok_or_else(|| Error::usage("--reverse needs the task's target"))?;
    if let Some(rec) = st.task(&rev.name)? {
        return Ok(Task::parse(&rec.spec, &rec.name)?);
    }
    {
        let mut specs: Vec<&mut ConnSpec> = vec![&mut rev.source];
        if let Some(t) = rev.target.as_mut() {
            specs.push(t);
        }
        secrets::share(st.home(), &task.name, &rev.name, &mut specs).map_err(|e| {
            Error::failed(format!(
                "cannot write the reverse task's password file: {e}"
            ))
        })?;
    }
    let rec = record(
        &rev,
        Some(format!("replicates back to {}'s source", task.name)),
    );
    let only_cdc = Step::ALL
        .iter()
        .map(|s| (*s, *s == Step::Cdc))
        .collect::<Vec<_>>();
    st.create_task(&rec, &only_cdc)?;
    Ok(rev)
}

/// Remove a reverse task whose switchover was undone: its replication and its record.
async fn drop_reverse(st: &Store, name: &str) -> Result<()> {
    let Some(rec) = st.task(name)? else {
        return Ok(());
    };
    let rev = Task::parse(&rec.spec, &rec.name)?;
    let mut s = Session::new(&rev, |_| {});
    crate::terminate::cleanup(&mut s).await?;
    st.delete_task(name)
}

/// Switch the writes of task `req.name` over to its target. `unfence` (rollback): how to
/// reopen the target, which the forward switchover's readonly fence closed.
async fn move_writes(req: SwitchoverRequest, unfence: Option<Reopen>, say: Say) -> Result<Outcome> {
    let name = req.name.clone();
    let st = Store::open()?;
    let rec = st.existing(&name)?;
    let task = Task::parse(&rec.spec, &rec.name)?;
    let saved = load(&st, &name)?;
    let in_flight = saved.as_ref().is_some_and(|s| s.progress.in_flight());
    if saved
        .as_ref()
        .is_some_and(|s| s.progress.phase == Phase::Done)
    {
        return Err(Error::usage(format!(
            "task {name} has already switched over"
        )));
    }
    let choices =
        match (&saved, in_flight) {
            (Some(s), true) => {
                say(&format!(
                "a switchover of {name} stopped after {}: {} it with the options it started with",
                s.progress.phase,
                if req.mode == Mode::Undo { "undoing" } else { "continuing" }
            ));
                // The recorded URL has no password; the one given now may.
                let mut c = s.choices.clone();
                if req.choices.pgbouncer.is_some() {
                    c.pgbouncer = req.choices.pgbouncer.clone();
                }
                c
            }
            _ => req.choices.clone(),
        };
    if task.engine == Engine::Stream
        && !in_flight
        && req.mode == Mode::Run
        && !process::alive(rec.pid)
    {
        return Err(Error::usage(format!(
            "task {name} has no running worker: nothing applies its changes, so the target would never \
             reach the barrier. Start it with `pgtransit start {name}` and wait until describe shows cdc running"
        )));
    }
    let mut progress = saved.map(|s| s.progress).unwrap_or_default();
    let session_say = {
        let say = say.clone();
        move |l: &str| say(l)
    };

    if req.mode == Mode::Undo {
        if !in_flight {
            return Err(Error::usage(format!(
                "task {name} has no switchover in flight: nothing to undo"
            )));
        }
        let o = options(&choices, &task, None, None, &say).await?;
        let mut s = Session::new(&task, session_say);
        let said = phases::undo(&mut s, &o, &mut progress).await?;
        if let Some(rev) = &progress.report.reverse {
            drop_reverse(&st, rev).await?;
        }
        save(&name, &choices, &progress);
        let _ = st.log(&name, "switchover", &format!("switchover undone: {said}"));
        return Ok(Outcome::Undone(said));
    }

    let reverse = match (choices.reverse, req.mode) {
        (false, _) => None,
        (true, Mode::DryRun) => task.reversed(),
        (true, _) => Some(reverse_task(&st, &task)?),
    };
    let o = options(&choices, &task, reverse, unfence, &say).await?;
    // What was found on pgbouncer's console is recorded: a resumed switchover, or --undo,
    // acts on the same entry and file.
    let mut choices = choices;
    if let Some(b) = &o.bouncer {
        choices.pgbouncer_db = Some(b.database.clone());
        choices.pgbouncer_config = Some(b.config.clone());
    }
    if req.mode == Mode::DryRun {
        return Ok(Outcome::Planned(phases::plan(&task, &o)));
    }
    drop(st);
    let log = |line: &str| {
        if let Ok(s) = Store::open() {
            let _ = s.log(&name, "switchover", line);
        }
    };
    log("switchover: started");
    let mut s = Session::new(&task, session_say);
    let mut record = |p: &Progress| {
        save(&name, &choices, p);
        crash_point(p.phase);
    };
    let result = phases::switchover(&mut s, &o, &mut progress, &mut record).await;
    drop(s);
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            log(&format!("switchover: failed: {}", e.message));
            if progress.phase == Phase::Undone {
                if let Some(rev) = &o.reverse {
                    drop_reverse(&Store::open()?, &rev.name).await?;
                }
            } else if progress.in_flight() {
                log("switchover: stopped halfway; run it again to continue, or with --undo");
                return Err(Error {
                    message: format!(
                        "{}\nthe switchover stopped after {} and the source is still fenced: run \
                         `pgtransit switchover {name}` again to continue, or with --undo to lift the fence",
                        e.message, progress.phase
                    ),
                    ..e
                });
            }
            return Err(e);
        }
    };
    // The target takes the writes now: the forward replication goes.
    let rec = Store::open()?.existing(&name)?;
    process::stop_worker(rec.pid, Duration::from_secs(30)).await;
    // The worker's last metrics hold the rows its apply let pass (on_missing_row: log).
    report.missing_rows = Store::open()?
        .metrics::<Metrics>(&name)
        .ok()
        .flatten()
        .and_then(|(_, m)| m.cdc().map(|c| c.missing_rows))
        .unwrap_or(0);
    let mut s = Session::new(&task, |_| {});
    let cleanup = crate::terminate::cleanup(&mut s).await?;
    drop(s);
    progress.phase = Phase::Done;
    save(&name, &choices, &progress);
    let summary = summary(&report);
    let st = Store::open()?;
    let _ = st.log(
        &name,
        "switchover",
        &serde_json::to_string(&report).unwrap_or_default(),
    );
    let _ = st.log(&name, "switchover", &summary);
    let _ = st.set_worker(&name, None, None);
    let _ = st.set_status(&name, TaskStatus::SwitchedOver, Some(&summary));
    drop(st);
    let reverse_worker_pid = match &report.reverse {
        Some(rev) => Some(process::spawn_worker(&req.exe, rev, None).await?.pid),
        None => None,
    };
    let fenced_source = o
        .fence
        .readonly()
        .then(|| fenced_source(&task, &progress, report.reverse.is_some()));
    Ok(Outcome::Done(Box::new(Done {
        report,
        cleanup,
        reverse_worker_pid,
        summary,
        fenced_source,
    })))
}

/// Crash tests end the process right after a phase is recorded (the `failpoints` feature
/// only; `FAILPOINTS=switchover-crash=return(PHASE)`).
fn crash_point(phase: Phase) {
    // Without the feature the fail point is empty and `phase` unused.
    let _ = phase;
    fail::fail_point!("switchover-crash", |arg: Option<String>| {
        if arg.as_deref() == Some(phase.as_str()) {
            std::process::exit(9);
        }
    });
}

fn summary(report: &SwitchoverReport) -> String {
    format!(
        "switched over: write downtime {:.2} s (fence {}), lag at the fence {}, barrier {} reached in {:.2} s, \
         {} sequence(s) set, {} rows verified{}{}{}",
        report.downtime_seconds,
        report.fence,
        crate::catalog::pretty_bytes(report.lag_at_fence_bytes),
        report.barrier_lsn,
        report.barrier_seconds,
        report.sequences_set,
        report.rows_verified,
        if report.rerouted { ", rerouted" } else { "" },
        if report.missing_rows > 0 {
            format!(
                "; {} UPDATE/DELETE found no row on the target during the migration (on_missing_row: log)",
                report.missing_rows
            )
        } else {
            String::new()
        },
        report
            .reverse
            .as_ref()
            .map(|r| format!(", replicating back with task {r}"))
            .unwrap_or_default()
    )
}

/// How the readonly fence leaves the old source, and how to reopen it by hand.
fn fenced_source(task: &Task, progress: &Progress, reverse: bool) -> String {
    let rollback = if reverse {
        ", `pgtransit rollback` reopens it"
    } else {
        ""
    };
    match Reopen::from_progress(progress) {
        Some(Reopen::Grants(g)) => format!(
            "the source's replicated tables stay closed to writes by other roles ({} write \
             privilege(s) revoked){rollback}; to reopen them by hand: {}",
            g.len(),
            Reopen::Grants(g.clone()).sql("")
        ),
        reopen => format!(
            "the source database stays fenced (superusers only){rollback}; to reopen it by hand: {}",
            reopen
                .unwrap_or(Reopen::ConnectionLimit(-1))
                .sql(&task.source.dbname())
        ),
    }
}
