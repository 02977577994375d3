//! `pgtransit terminate NAME`: `pgtransit::migration::terminate`, rendered. Exit 5 when
//! something could not be dropped (the task stays `terminating` unless `--force`).

use std::time::Duration;

use super::{json_out, TerminateArgs};
use pgtransit::Error;

pub async fn terminate(a: TerminateArgs) -> Result<u8, Error> {
    if a.dry_run {
        let plan = pgtransit::migration::terminate::plan(&a.name)?;
        if a.json {
            json_out(&plan)?;
        } else {
            out!("{plan}");
        }
        return Ok(0);
    }
    let quiet = a.json;
    let say = move |l: &str| {
        if !quiet {
            outln!("{l}")
        }
    };
    let t =
        pgtransit::migration::terminate(&a.name, a.force, Duration::from_secs(a.wait), say).await?;
    let c = &t.cleanup;
    let code = if c.left.is_empty() { 0 } else { 5 };
    if a.json {
        json_out(&t)?;
        return Ok(code);
    }
    if let Some(pid) = t.stopped_worker {
        outln!("stopped worker {pid}");
    }
    for d in &c.dropped {
        outln!("dropped {d}");
    }
    for d in &c.absent {
        outln!("already gone: {d}");
    }
    for d in &c.kept {
        outln!("kept, not this task's: {d}");
    }
    if !t.forgotten {
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
    } else if c.left.is_empty() {
        outln!(
            "task {} terminated: nothing of it is left on either server",
            a.name
        );
    } else {
        outln!(
            "forgetting task {} although these are left; run this SQL yourself:",
            a.name
        );
        for l in &c.left {
            outln!("  -- [{}] {}\n  {}", l.side, l.what, l.sql);
        }
        outln!(
            "task {} forgotten (--force); the objects above are left",
            a.name
        );
    }
    // Forgotten or not, what is left is left: the exit code says so too.
    Ok(code)
}
