//! `pgtransit demo`: the whole migration on this machine, with the commands a user types.
//! Two sandbox clusters and a pgbouncer in front of the source; pgbench writes through
//! pgbouncer from start to end; `create` copies and streams, `switchover` pauses
//! pgbouncer, waits for the barrier, sets the sequences, verifies by checksum and points
//! pgbouncer at the target. The report gives the write downtime, the client transactions
//! that failed and the rows verified. Without pgbouncer installed, pgbench connects to
//! the source directly and the readonly fence ends its sessions.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgsandbox::{Builder, Cluster, Pgbouncer};

use pgtransit::state::{Step, StepState, TaskStatus};
use pgtransit::Error;

use super::{failure, WORKLOAD_SQL};
const DB: &str = "shop";
const TASK: &str = "demo";

/// pgbench, killed when the demo ends however it ends.
struct Load(Child);

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This binary with the demo's own task store.
fn pgtransit(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap_or_else(|_| "pgtransit".into()));
    c.args(args).env("PGTRANSIT_HOME", home);
    c
}

/// Show the command, run it with its output on the terminal.
fn run_shown(home: &Path, args: &[&str]) -> Result<(), Error> {
    outln!("\n$ pgtransit {}", args.join(" "));
    let t = Instant::now();
    let status = pgtransit(home, args)
        .status()
        .map_err(|e| Error::failed(format!("running pgtransit: {e}")))?;
    outln!("  ({:.1} s)", t.elapsed().as_secs_f64());
    if !status.success() {
        return Err(Error::failed(format!(
            "`pgtransit {}` failed ({status})",
            args.join(" ")
        )));
    }
    Ok(())
}

fn describe(home: &Path) -> Result<serde_json::Value, Error> {
    let o = pgtransit(home, &["describe", TASK, "--json"])
        .output()
        .map_err(|e| Error::failed(format!("running pgtransit describe: {e}")))?;
    serde_json::from_slice(&o.stdout).map_err(|e| {
        Error::failed(format!(
            "describe: {e}: {}",
            String::from_utf8_lossy(&o.stderr)
        ))
    })
}

/// Wait until the task streams, printing each step as it starts and the copy's progress.
fn wait_for_cdc(home: &Path) -> Result<(), Error> {
    let t = Instant::now();
    let mut seen = String::new();
    // On a terminal, the copy's totals as a bar (from describe's metrics), the step lines
    // above it.
    let bar = crate::progress::wanted(false)
        .then(|| crate::progress::CopyBar::new(crate::progress::target(false)));
    let result = wait_for_cdc_with(home, t, &mut seen, bar.as_ref());
    if let Some(b) = &bar {
        b.finish();
    }
    result
}

fn wait_for_cdc_with(
    home: &Path,
    t: Instant,
    seen: &mut String,
    bar: Option<&crate::progress::CopyBar>,
) -> Result<(), Error> {
    loop {
        let d = describe(home)?;
        if let Some(b) = bar {
            // The copy's totals, as the worker published them.
            let copy = serde_json::from_value::<pgtransit::snapshot::CopyProgress>(
                d["metrics"]["values"].clone(),
            );
            if let Ok(p) = copy {
                b.update(&p);
            }
        }
        let steps = d["steps"].as_array().cloned().unwrap_or_default();
        let now: Vec<String> = steps
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s["step"].as_str().unwrap_or("?"),
                    s["status"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let line = now.join(", ");
        if line != *seen {
            let shown = format!("  [{:>5.1} s] {line}", t.elapsed().as_secs_f64());
            match bar {
                Some(b) => b.println(&shown),
                None => outln!("{shown}"),
            }
            *seen = line;
        }
        if steps
            .iter()
            .any(|s| s["step"] == Step::Cdc.as_str() && s["status"] == StepState::Running.as_str())
        {
            return Ok(());
        }
        if d["status"] == TaskStatus::Failed.as_str() || t.elapsed() > Duration::from_secs(120) {
            return Err(Error::failed(format!(
                "the task did not reach cdc: {}",
                d["reason"].as_str().unwrap_or("(no reason)")
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn count(c: &Cluster, sql: &str) -> i64 {
    c.psql(DB, sql)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

/// What pgbench reported on stderr: per-second throughput (`-P 1`) and its errors.
struct ClientLog {
    slowest_tps: Option<f64>,
    errors: Vec<String>,
}

fn client_log(path: &Path) -> ClientLog {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut slowest: Option<f64> = None;
    let mut errors = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("progress: ") {
            let tps = rest
                .split(", ")
                .nth(1)
                .and_then(|f| f.strip_suffix(" tps"))
                .and_then(|v| v.parse::<f64>().ok());
            if let Some(tps) = tps {
                slowest = Some(slowest.map_or(tps, |s| s.min(tps)));
            }
        } else if line.contains("error") || line.contains("abort") {
            errors.push(line.to_string());
        }
    }
    ClientLog {
        slowest_tps: slowest,
        errors,
    }
}

pub async fn run(engine: &str) -> Result<u8, Error> {
    let started = Instant::now();
    outln!(
        "pgtransit demo ({engine} engine): two PostgreSQL sandboxes, a pgbouncer in front of the source, pgbench\n\
         writing through it the whole time, and the whole migration: create (copy, stream), switchover, report."
    );
    let source = Builder::new()
        .start()
        .map_err(failure("starting the source sandbox"))?;
    let target = Builder::new()
        .start()
        .map_err(failure("starting the target sandbox"))?;
    for c in [&source, &target] {
        c.create_database(DB)
            .map_err(failure("creating the database"))?;
    }
    super::load_source(&source, DB, 5)?;
    let bouncer = match pgsandbox::find_pgbouncer() {
        Some(_) => Some(
            Pgbouncer::start(&[(DB, &source, DB)], &["postgres"])
                .map_err(failure("starting pgbouncer"))?,
        ),
        None => None,
    };
    outln!(
        "  source 127.0.0.1:{}, target 127.0.0.1:{}, database \"{DB}\": pgbench scale 5 (500k accounts) plus quoted,\n  \
         unicode, partitioned, keyless, enum, array, jsonb, TOAST, generated and identity tables",
        source.port(),
        target.port()
    );
    match &bouncer {
        Some(b) => outln!(
            "  pgbouncer 127.0.0.1:{} (transaction pooling) -> source",
            b.port()
        ),
        None => outln!(
            "  pgbouncer is not installed (apt-get install pgbouncer): pgbench connects to the source directly,\n  \
             and the switchover uses the readonly fence, which ends its sessions"
        ),
    }

    let home = tempfile::tempdir().map_err(|e| Error::failed(e.to_string()))?;
    let h = home.path();
    let script = h.join("workload.sql");
    std::fs::write(&script, WORKLOAD_SQL).map_err(|e| Error::failed(e.to_string()))?;
    let client_errors = h.join("pgbench.log");
    let (host, port) = match &bouncer {
        Some(b) => ("127.0.0.1".to_string(), b.port()),
        None => ("127.0.0.1".to_string(), source.port()),
    };
    let load = Load(
        Command::new(source.client_program("pgbench"))
            .args([
                "-n",
                "-c",
                "4",
                "-T",
                "600",
                "-P",
                "1",
                "-b",
                "tpcb-like@4",
                "-f",
            ])
            .arg(format!("{}@1", script.display()))
            .args(["-h", &host, "-p", &port.to_string(), "-U", "postgres", DB])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&client_errors).map_err(|e| Error::failed(e.to_string()))?,
            )
            .spawn()
            .map_err(|e| Error::failed(format!("starting pgbench: {e}")))?,
    );
    outln!(
        "  pgbench: 4 clients, tpcb-like plus inserts, updates and deletes on the hard tables\n"
    );

    let src_url = source.url(DB);
    let tgt_url = target.url(DB);
    run_shown(
        h,
        &[
            "check",
            "replica-identity",
            "--fix",
            "--apply",
            "--source",
            &src_url,
        ],
    )?;
    run_shown(
        h,
        &[
            "create", TASK, "--engine", engine, "--source", &src_url, "--sink", &tgt_url,
        ],
    )?;
    wait_for_cdc(h)?;
    std::thread::sleep(Duration::from_secs(3));
    run_shown(h, &["describe", TASK])?;

    let admin = bouncer.as_ref().map(|b| b.admin_url()).unwrap_or_default();
    let config = bouncer
        .as_ref()
        .map(|b| b.config().display().to_string())
        .unwrap_or_default();
    let mut args = vec!["switchover", TASK, "--verify", "checksum"];
    if bouncer.is_some() {
        args.extend([
            "--fence",
            "pgbouncer+readonly",
            "--reroute",
            "pgbouncer",
            "--pgbouncer",
            &admin,
            "--pgbouncer-config",
            &config,
        ]);
    } else {
        args.extend(["--fence", "readonly"]);
    }
    run_shown(h, &args)?;

    // pgbench keeps going, now on the target.
    let before = count(&target, "SELECT count(*) FROM pgbench_history");
    std::thread::sleep(Duration::from_secs(3));
    let after = count(&target, "SELECT count(*) FROM pgbench_history");
    drop(load);
    let log = client_log(&client_errors);
    let d = describe(h)?;
    let r = &d["switchover"]["report"];
    let total = count(&target, "SELECT count(*) FROM pgbench_history");
    outln!("\nreport");
    outln!(
        "  write downtime            {:.2} s (fence {} -> target writable)",
        r["downtime_seconds"].as_f64().unwrap_or(f64::NAN),
        r["fence"].as_str().unwrap_or("?")
    );
    outln!(
        "  barrier                   {} reached in {:.2} s (lag at the fence {} bytes)",
        r["barrier_lsn"].as_str().unwrap_or("?"),
        r["barrier_seconds"].as_f64().unwrap_or(f64::NAN),
        r["lag_at_fence_bytes"]
    );
    outln!(
        "  rows verified (checksum)  {}",
        r["rows_verified"].as_i64().unwrap_or(0)
    );
    outln!("  sequences set             {}", r["sequences_set"]);
    outln!(
        "  client transactions       {total} tpcb-like committed, {} after the switchover in 3 s (on the target)",
        after - before
    );
    outln!(
        "  failed client transactions {}{}",
        log.errors.len(),
        log.slowest_tps
            .map(|t| format!(" (slowest second: {t:.0} tps)"))
            .unwrap_or_default()
    );
    for e in log.errors.iter().take(5) {
        outln!("    {e}");
    }
    outln!(
        "  total demo time           {:.0} s",
        started.elapsed().as_secs_f64()
    );
    outln!("The demo clusters and pgbouncer are stopped and removed now.");
    drop(bouncer);
    Ok(0)
}
