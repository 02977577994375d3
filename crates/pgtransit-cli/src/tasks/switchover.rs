//! `pgtransit switchover NAME` and `pgtransit rollback NAME`: fence, sequences, barrier,
//! verify, reverse replication, reroute; then the forward replication is removed and the
//! report kept with the task. Each phase is recorded in the task store: running the
//! command again continues a switchover that stopped halfway, `--undo` lifts its fence.

use std::time::Duration;

use pgtransit::conn::ConnSpec;
use pgtransit::pgbouncer::Bouncer;
use pgtransit::state::{secrets, Store, TaskRecord};
use pgtransit::step::Session;
use pgtransit::switchover::{self, Fence, Phase, Progress, Reopen, Reroute, SwitchoverOptions};
use pgtransit::task::{Engine, Task};

use super::{json_out, store, SwitchoverArgs, SwitchoverFlags};
use crate::Failure;

/// What the store keeps per switchover: the choices and how far it got.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    flags: SwitchoverFlags,
    progress: Progress,
}

fn load(st: &Store, name: &str) -> Result<Option<Saved>, Failure> {
    Ok(st
        .switchover(name)?
        .and_then(|j| serde_json::from_str(&j).ok()))
}

fn save(name: &str, flags: &SwitchoverFlags, p: &Progress) {
    let mut flags = flags.clone();
    flags.pgbouncer = flags
        .pgbouncer
        .as_deref()
        .map(pgtransit::task::strip_conn_string_password);
    let saved = Saved {
        flags,
        progress: p.clone(),
    };
    if let (Ok(st), Ok(json)) = (store(), serde_json::to_string(&saved)) {
        let _ = st.set_switchover(name, &json);
    }
}

fn fence(v: &str) -> Result<Fence, Failure> {
    match v {
        "readonly" => Ok(Fence::Readonly),
        "pgbouncer" => Ok(Fence::Pgbouncer),
        "pgbouncer+readonly" | "readonly+pgbouncer" => Ok(Fence::PgbouncerReadonly),
        "none" => Ok(Fence::None),
        h if h.starts_with("hook:") => Ok(Fence::Hook(h[5..].to_string())),
        other => Err(Failure::usage(format!(
            "--fence {other}: use readonly, pgbouncer, pgbouncer+readonly, none or hook:COMMAND"
        ))),
    }
}

fn reroute(v: &str) -> Result<Reroute, Failure> {
    match v {
        "pgbouncer" => Ok(Reroute::Pgbouncer),
        "none" => Ok(Reroute::None),
        h if h.starts_with("hook:") => Ok(Reroute::Hook(h[5..].to_string())),
        other => Err(Failure::usage(format!(
            "--reroute {other}: use pgbouncer, none or hook:COMMAND"
        ))),
    }
}

/// pgbouncer for the fence and reroute: its entry and config file from the admin console
/// unless given (`Bouncer::discover`), said on stdout.
async fn bouncer(
    f: &SwitchoverFlags,
    task: &Task,
    quiet: bool,
) -> Result<Option<Bouncer>, Failure> {
    let wanted = f.fence.contains("pgbouncer") || f.reroute == "pgbouncer";
    if !wanted {
        return Ok(None);
    }
    let Some(url) = &f.pgbouncer else {
        return Err(Failure::usage(
            "the pgbouncer fence and reroute need --pgbouncer ADMIN_URL (its admin console, as \
             a user in admin_users); the entry and the config file are found there",
        ));
    };
    let admin = ConnSpec::parse(url).map_err(|e| Failure::usage(format!("--pgbouncer: {e}")))?;
    let (b, said) = Bouncer::discover(
        admin,
        &task.source,
        f.pgbouncer_db.clone(),
        f.pgbouncer_config.clone(),
    )
    .await?;
    if !quiet {
        outln!("{said}");
    }
    Ok(Some(b))
}

async fn options(
    f: &SwitchoverFlags,
    task: &Task,
    reverse: Option<Task>,
    unfence_target: Option<Reopen>,
    quiet: bool,
) -> Result<SwitchoverOptions, Failure> {
    Ok(SwitchoverOptions {
        fence: fence(&f.fence)?,
        reroute: reroute(&f.reroute)?,
        bouncer: bouncer(f, task, quiet).await?,
        max_lag_bytes: f.max_lag,
        barrier_timeout: Duration::from_secs(f.barrier_timeout),
        seq_shift: f.seq_shift,
        verify: match f.verify.as_str() {
            "count" => Some(pgtransit::verify::Mode::Count),
            "checksum" => Some(pgtransit::verify::Mode::Checksum),
            "none" => None,
            other => {
                return Err(Failure::usage(format!(
                    "--verify {other}: use count, checksum or none"
                )))
            }
        },
        reverse,
        unfence_target,
    })
}

/// The reverse task's record (created once, before its replication exists, so that an
/// undo or terminate finds it), with its own copy of the task's password file.
fn reverse_task(st: &Store, task: &Task) -> Result<Task, Failure> {
    let mut rev = task
        .reversed()
        .ok_or_else(|| Failure::usage("--reverse needs the task's target"))?;
    if let Some(rec) = st.task(&rev.name)? {
        return Ok(Task::parse(&rec.spec, &rec.name)?);
    }
    {
        let mut specs: Vec<&mut ConnSpec> = vec![&mut rev.source];
        if let Some(t) = rev.target.as_mut() {
            specs.push(t);
        }
        secrets::share(st.home(), &task.name, &rev.name, &mut specs).map_err(|e| {
            Failure::other(format!(
                "cannot write the reverse task's password file: {e}"
            ))
        })?;
    }
    let now = pgtransit::state::now();
    let rec = TaskRecord {
        name: rev.name.clone(),
        spec: pgtransit::task::to_native_yaml(&rev),
        engine: match rev.engine {
            Engine::Stream => "stream".into(),
            Engine::Native => "native".into(),
        },
        source: rev.source.masked(),
        target: rev.target.as_ref().map(|t| t.masked()).unwrap_or_default(),
        status: "created".into(),
        reason: Some(format!("replicates back to {}'s source", task.name)),
        created_at: now,
        updated_at: now,
        pid: None,
        metrics_addr: None,
    };
    let enabled = [
        ("precheck", false),
        ("init-struct", false),
        ("init-data", false),
        ("cdc", true),
    ];
    st.create_task(&rec, &enabled)?;
    Ok(rev)
}

/// Remove a reverse task whose switchover was undone: its replication and its record.
async fn drop_reverse(st: &Store, name: &str) -> Result<(), Failure> {
    let Some(rec) = st.task(name)? else {
        return Ok(());
    };
    let rev = Task::parse(&rec.spec, &rec.name)?;
    let mut s = Session::new(&rev, |_| {});
    pgtransit::terminate::cleanup(&mut s).await?;
    st.delete_task(name).map_err(Failure::from)
}

pub async fn run(a: SwitchoverArgs) -> Result<u8, Failure> {
    let st = store()?;
    st.existing(&a.name)?;
    drop(st);
    move_writes(a, None).await
}

/// `pgtransit rollback NAME`: the switchover of NAME's reverse task, which gives the old
/// source its connection limit back if the switchover fenced it readonly.
pub async fn rollback(a: SwitchoverArgs) -> Result<u8, Failure> {
    if a.flags.reverse {
        return Err(Failure::usage(
            "rollback --reverse: a rollback does not replicate forward again; create a new task",
        ));
    }
    let st = store()?;
    st.existing(&a.name)?;
    let saved = load(&st, &a.name)?.filter(|s| s.progress.phase == Phase::Done);
    let Some(saved) = saved else {
        return Err(Failure::usage(format!(
            "task {} has not switched over: nothing to roll back",
            a.name
        )));
    };
    let Some(rev) = saved.progress.report.reverse.clone() else {
        return Err(Failure::usage(format!(
            "task {} switched over without --reverse: nothing replicates back to the old source, \
             so it may have missed writes; rollback needs `switchover --reverse`",
            a.name
        )));
    };
    let unfence = if fence(&saved.flags.fence)?.readonly() {
        Reopen::from_progress(&saved.progress)
    } else {
        None
    };
    drop(st);
    let forward = a.name.clone();
    let moved = !a.dry_run && !a.undo;
    let code = move_writes(SwitchoverArgs { name: rev, ..a }, unfence).await?;
    if moved {
        let _ = store()?.set_status(
            &forward,
            "rolled-back",
            Some("the writes went back to the source (see the -reverse task)"),
        );
    }
    Ok(code)
}

/// Switch the writes of task `a.name` over to its target. `unfence` (rollback): the
/// connection limit the target had before the forward switchover's readonly fence.
async fn move_writes(a: SwitchoverArgs, unfence: Option<Reopen>) -> Result<u8, Failure> {
    let st = store()?;
    let rec = st.existing(&a.name)?;
    let task = Task::parse(&rec.spec, &rec.name)?;
    let saved = load(&st, &a.name)?;
    let in_flight = saved.as_ref().is_some_and(|s| s.progress.in_flight());
    if saved
        .as_ref()
        .is_some_and(|s| s.progress.phase == Phase::Done)
    {
        return Err(Failure::usage(format!(
            "task {} has already switched over",
            a.name
        )));
    }
    let flags = match (&saved, in_flight) {
        (Some(s), true) => {
            if !a.json {
                outln!(
                    "a switchover of {} stopped after {:?}: {} it with the options it started with",
                    a.name,
                    s.progress.phase,
                    if a.undo { "undoing" } else { "continuing" }
                );
            }
            // The recorded URL has no password; the one given now may.
            let mut f = s.flags.clone();
            if a.flags.pgbouncer.is_some() {
                f.pgbouncer = a.flags.pgbouncer.clone();
            }
            f
        }
        _ => a.flags.clone(),
    };
    if task.engine == Engine::Stream
        && !in_flight
        && !a.dry_run
        && !a.undo
        && !super::alive(rec.pid)
    {
        return Err(Failure::usage(format!(
            "task {} has no running worker: nothing applies its changes, so the target would never \
             reach the barrier. Start it with `pgtransit start {}` and wait until describe shows cdc running",
            a.name, a.name
        )));
    }
    let mut progress = saved.map(|s| s.progress).unwrap_or_default();
    let quiet = a.json;
    let say = move |l: &str| {
        if !quiet {
            outln!("{l}")
        }
    };

    if a.undo {
        if !in_flight {
            return Err(Failure::usage(format!(
                "task {} has no switchover in flight: nothing to undo",
                a.name
            )));
        }
        let o = options(&flags, &task, None, None, quiet).await?;
        let mut s = Session::new(&task, say);
        let said = switchover::undo(&mut s, &o, &mut progress).await?;
        if let Some(rev) = &progress.report.reverse {
            drop_reverse(&st, rev).await?;
        }
        save(&a.name, &flags, &progress);
        let _ = st.log(&a.name, "switchover", &format!("switchover undone: {said}"));
        outln!("switchover undone: {said}; the task keeps streaming");
        return Ok(0);
    }

    let reverse = if flags.reverse {
        if a.dry_run {
            task.reversed()
        } else {
            Some(reverse_task(&st, &task)?)
        }
    } else {
        None
    };
    let o = options(&flags, &task, reverse, unfence, quiet).await?;
    // What was found on pgbouncer's console is recorded: a resumed switchover, or --undo,
    // acts on the same entry and file.
    let mut flags = flags;
    if let Some(b) = &o.bouncer {
        flags.pgbouncer_db = Some(b.database.clone());
        flags.pgbouncer_config = Some(b.config.clone());
    }
    if a.dry_run {
        for line in switchover::plan(&task, &o) {
            outln!("{line}");
        }
        return Ok(0);
    }
    drop(st);
    let log = |line: &str| {
        if let Ok(s) = store() {
            let _ = s.log(&a.name, "switchover", line);
        }
    };
    log("switchover: started");
    let mut s = Session::new(&task, say);
    // For crash tests: end the process right after recording this phase.
    let crash_after = std::env::var("PGTRANSIT_CRASH_AFTER").ok();
    let mut record = |p: &Progress| {
        save(&a.name, &flags, p);
        let phase = serde_json::to_value(p.phase).unwrap_or_default();
        if crash_after.is_some() && phase.as_str() == crash_after.as_deref() {
            eprintln!("PGTRANSIT_CRASH_AFTER: exiting after {phase}");
            std::process::exit(9);
        }
    };
    let result = switchover::switchover(&mut s, &o, &mut progress, &mut record).await;
    drop(s);
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            log(&format!("switchover: failed: {}", e.message));
            if progress.phase == Phase::Undone {
                if let Some(rev) = &o.reverse {
                    drop_reverse(&store()?, &rev.name).await?;
                }
            } else if progress.in_flight() {
                log("switchover: stopped halfway; run it again to continue, or with --undo");
                eprintln!(
                    "the switchover stopped after {:?} and the source is still fenced: run `pgtransit \
                     switchover {}` again to continue, or with --undo to lift the fence",
                    progress.phase, a.name
                );
            }
            return Err(e.into());
        }
    };
    // The target takes the writes now: the forward replication goes.
    let rec = store()?.existing(&a.name)?;
    super::terminate::stop_worker(rec.pid, Duration::from_secs(30)).await;
    // The worker's last metrics hold the rows its apply let pass (on_missing_row: log).
    report.missing_rows = store()?
        .metrics(&a.name)
        .ok()
        .flatten()
        .and_then(|(_, m)| m["missing_rows"].as_u64())
        .unwrap_or(0);
    let mut s = Session::new(&task, |_| {});
    let cleanup = pgtransit::terminate::cleanup(&mut s).await?;
    drop(s);
    progress.phase = Phase::Done;
    save(&a.name, &flags, &progress);
    let summary = format!(
        "switched over: write downtime {:.2} s (fence {}), lag at the fence {}, barrier {} reached in {:.2} s, \
         {} sequence(s) set, {} rows verified{}{}{}",
        report.downtime_seconds,
        report.fence,
        pgtransit::catalog::pretty_bytes(report.lag_at_fence_bytes),
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
    );
    let st = store()?;
    let _ = st.log(
        &a.name,
        "switchover",
        &serde_json::to_string(&report).unwrap_or_default(),
    );
    let _ = st.log(&a.name, "switchover", &summary);
    let _ = st.set_worker(&a.name, None, None);
    let _ = st.set_status(&a.name, "switched-over", Some(&summary));
    drop(st);
    let reverse_worker = match &report.reverse {
        Some(rev) => Some(super::create::spawn_worker(rev, None).await?.pid),
        None => None,
    };
    if a.json {
        json_out(
            &serde_json::json!({"report": report, "cleanup": cleanup, "reverse_worker_pid": reverse_worker}),
        )?;
    } else {
        if let (Some(rev), Some(pid)) = (&report.reverse, reverse_worker) {
            outln!("started worker {pid} for the reverse task {rev}");
        }
        for d in &cleanup.dropped {
            outln!("dropped {d}");
        }
        for l in &cleanup.left {
            outln!("left: [{}] {}\n  {}", l.side, l.what, l.sql);
        }
        outln!("{summary}");
        if o.fence.readonly() {
            let rollback = if report.reverse.is_some() {
                ", `pgtransit rollback` reopens it"
            } else {
                ""
            };
            match Reopen::from_progress(&progress) {
                Some(Reopen::Grants(g)) => outln!(
                    "the source's replicated tables stay closed to writes by other roles ({} \
                     write privilege(s) revoked){rollback}; to reopen them by hand: {}",
                    g.len(),
                    Reopen::Grants(g.clone()).sql("")
                ),
                reopen => outln!(
                    "the source database stays fenced (superusers only){rollback}; to reopen it \
                     by hand: {}",
                    reopen
                        .unwrap_or(Reopen::ConnectionLimit(-1))
                        .sql(&task.source.dbname())
                ),
            }
        }
    }
    Ok(0)
}
