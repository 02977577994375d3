//! `pgtransit switchover NAME`: fence, barrier, sequences, verify, reroute, then the
//! forward replication is removed and the report kept with the task.

use std::time::Duration;

use pgtransit::native::Session;
use pgtransit::switchover::{self, Fence, Reroute, SwitchoverOptions};
use pgtransit::task::Task;

use super::{json_out, store, SwitchoverArgs};
use crate::Failure;

fn fence(v: &str) -> Result<Fence, Failure> {
    match v {
        "readonly" => Ok(Fence::Readonly),
        "none" => Ok(Fence::None),
        h if h.starts_with("hook:") => Ok(Fence::Hook(h[5..].to_string())),
        other => Err(Failure::usage(format!(
            "--fence {other}: use readonly, none or hook:COMMAND"
        ))),
    }
}

fn reroute(v: &str) -> Result<Reroute, Failure> {
    match v {
        "none" => Ok(Reroute::None),
        h if h.starts_with("hook:") => Ok(Reroute::Hook(h[5..].to_string())),
        other => Err(Failure::usage(format!(
            "--reroute {other}: use none or hook:COMMAND"
        ))),
    }
}

pub async fn run(a: SwitchoverArgs) -> Result<u8, Failure> {
    let rec = store()?
        .existing(&a.name)
        .map_err(|e| Failure::usage(e.0))?;
    let task = Task::parse(&rec.spec, &rec.name)?;
    let o = SwitchoverOptions {
        fence: fence(&a.fence)?,
        reroute: reroute(&a.reroute)?,
        max_lag_bytes: a.max_lag,
        barrier_timeout: Duration::from_secs(a.barrier_timeout),
        seq_shift: a.seq_shift,
        verify: match a.verify.as_str() {
            "count" => Some(pgtransit::verify::Mode::Count),
            "checksum" => Some(pgtransit::verify::Mode::Checksum),
            "none" => None,
            other => {
                return Err(Failure::usage(format!(
                    "--verify {other}: use count, checksum or none"
                )))
            }
        },
    };
    if a.dry_run {
        for line in switchover::plan(&task, &o) {
            println!("{line}");
        }
        return Ok(0);
    }
    let log = |line: &str| {
        if let Ok(s) = store() {
            let _ = s.log(&a.name, "switchover", line);
        }
    };
    log("switchover: started");
    let quiet = a.json;
    let mut s = Session::new(&task, move |l| {
        if !quiet {
            println!("{l}")
        }
    });
    let report = match switchover::switchover(&mut s, &o).await {
        Ok(r) => r,
        Err(e) => {
            log(&format!("switchover: failed: {}", e.message));
            return Err(e.into());
        }
    };
    drop(s);
    // The target takes the writes now: the forward replication goes.
    let rec = store()?
        .existing(&a.name)
        .map_err(|e| Failure::other(e.0))?;
    super::terminate::stop_worker(rec.pid, Duration::from_secs(30)).await;
    let mut s = Session::new(&task, |_| {});
    let cleanup = pgtransit::terminate::cleanup(&mut s).await?;
    let summary = format!(
        "switched over: write downtime {:.2} s (fence {}), barrier {} reached in {:.2} s, {} sequence(s) set, \
         {} rows verified{}",
        report.downtime_seconds,
        report.fence,
        report.barrier_lsn,
        report.barrier_seconds,
        report.sequences_set,
        report.rows_verified,
        if report.rerouted { ", rerouted" } else { "" }
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
    if a.json {
        json_out(&serde_json::json!({"report": report, "cleanup": cleanup}))?;
    } else {
        for d in &cleanup.dropped {
            println!("dropped {d}");
        }
        for l in &cleanup.left {
            println!("left: [{}] {}\n  {}", l.side, l.what, l.sql);
        }
        println!("{summary}");
        if o.fence == Fence::Readonly {
            println!(
                "the source database stays fenced (superusers only); to reopen it: ALTER DATABASE {} WITH CONNECTION LIMIT -1;",
                pgtransit::quote::ident(&task.source.dbname())
            );
        }
    }
    Ok(0)
}
