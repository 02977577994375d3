//! `pgtransit switchover NAME` and `pgtransit rollback NAME`: the flags mapped to
//! `pgtransit::migration::SwitchoverChoices`, the outcome rendered (text, or one JSON
//! document with `--json`).

use std::sync::Arc;

use pgtransit::migration::switchover::{Mode, Say};
use pgtransit::migration::{self, Outcome, SwitchoverChoices, SwitchoverRequest};

use super::{json_out, SwitchoverArgs};
use pgtransit::Error;

fn request(a: &SwitchoverArgs) -> Result<SwitchoverRequest, Error> {
    let f = a.flags.clone();
    Ok(SwitchoverRequest {
        name: a.name.clone(),
        choices: SwitchoverChoices {
            fence: f.fence,
            reroute: f.reroute,
            pgbouncer: f.pgbouncer,
            pgbouncer_db: f.pgbouncer_db,
            pgbouncer_config: f.pgbouncer_config,
            max_lag: f.max_lag,
            barrier_timeout: f.barrier_timeout,
            seq_shift: f.seq_shift,
            verify: f.verify,
            reverse: f.reverse,
        },
        mode: match (a.dry_run, a.undo) {
            (true, _) => Mode::DryRun,
            (false, true) => Mode::Undo,
            (false, false) => Mode::Run,
        },
        exe: std::env::current_exe().map_err(|e| Error::failed(e.to_string()))?,
    })
}

/// Progress lines on stdout; none under `--json`, whose stdout is the report alone.
fn say(json: bool) -> Say {
    Arc::new(move |l: &str| {
        if !json {
            outln!("{l}")
        }
    })
}

pub async fn run(a: SwitchoverArgs) -> Result<u8, Error> {
    let out = migration::switchover(request(&a)?, say(a.json)).await?;
    render(out, a.json)
}

pub async fn rollback(a: SwitchoverArgs) -> Result<u8, Error> {
    let out = migration::rollback(request(&a)?, say(a.json)).await?;
    render(out, a.json)
}

fn render(out: Outcome, json: bool) -> Result<u8, Error> {
    match out {
        Outcome::Planned(plan) if json => json_out(&plan)?,
        Outcome::Planned(plan) => out!("{plan}"),
        Outcome::Undone(said) => {
            if json {
                json_out(&serde_json::json!({ "undone": said }))?;
            } else {
                outln!("switchover undone: {said}; the task keeps streaming");
            }
        }
        Outcome::Done(d) if json => json_out(&d)?,
        Outcome::Done(d) => {
            if let (Some(rev), Some(pid)) = (&d.report.reverse, d.reverse_worker_pid) {
                outln!("started worker {pid} for the reverse task {rev}");
            }
            for x in &d.cleanup.dropped {
                outln!("dropped {x}");
            }
            for l in &d.cleanup.left {
                outln!("left: [{}] {}\n  {}", l.side, l.what, l.sql);
            }
            outln!("{}", d.summary);
            if let Some(f) = &d.fenced_source {
                outln!("{f}");
            }
        }
    }
    Ok(0)
}
