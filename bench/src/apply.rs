//! `pgtransit-bench --apply`: the change apply of the native subscription against
//! pgtransit's `cdc`, on the same two sandboxes: one transaction inserting 1M rows, one
//! updating them, one deleting them (time from the source commit until the target has it),
//! and pgbench at full speed (lag at the end, time to catch up).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgsandbox::Cluster;
use serde::Serialize;

const DB: &str = "apply";

#[derive(Serialize, Clone)]
pub struct ApplyRun {
    pub engine: String,
    pub case: String,
    pub seconds: f64,
    pub rows_per_second: Option<f64>,
    /// pgbench: transactions the target did not have yet when the load stopped.
    pub behind: Option<i64>,
}

fn wait_until(target: &Cluster, sql: &str, want: &str, limit: Duration) -> f64 {
    let t = Instant::now();
    loop {
        if target
            .psql(DB, sql)
            .map(|v| v.trim() == want)
            .unwrap_or(false)
        {
            return t.elapsed().as_secs_f64();
        }
        assert!(t.elapsed() < limit, "{sql} never returned {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The three 1M-row transactions, each timed from its commit until the target shows it.
fn big_transactions(
    engine: &str,
    source: &Cluster,
    target: &Cluster,
    rows: u64,
    out: &mut Vec<ApplyRun>,
) {
    let limit = Duration::from_secs(1200);
    let mut case = |name: &str, sql: &str, check: &str, want: String| {
        source.psql(DB, sql).expect("source transaction");
        let s = wait_until(target, check, &want, limit);
        eprintln!("   {engine}: {name}: {s:.1} s after commit");
        out.push(ApplyRun {
            engine: engine.into(),
            case: name.into(),
            seconds: s,
            rows_per_second: Some(rows as f64 / s.max(0.001)),
            behind: None,
        });
    };
    case(
        &format!("insert {rows} rows in one transaction"),
        &format!("INSERT INTO t SELECT g, 0, md5(g::text) FROM generate_series(1, {rows}) g"),
        "SELECT count(*) FROM t",
        rows.to_string(),
    );
    case(
        &format!("update {rows} rows in one transaction"),
        "UPDATE t SET v = 1",
        "SELECT count(*) FROM t WHERE v = 1",
        rows.to_string(),
    );
    case(
        &format!("delete {rows} rows in one transaction"),
        "DELETE FROM t",
        "SELECT count(*) FROM t",
        "0".into(),
    );
}

/// pgbench at full speed for `secs`; then the lag and the time to catch up.
fn pgbench_load(
    engine: &str,
    source: &Cluster,
    target: &Cluster,
    secs: u64,
    out: &mut Vec<ApplyRun>,
) {
    let st = Command::new(source.client_program("pgbench"))
        .args(["-n", "-c", "4", "-j", "2", "-T", &secs.to_string(), "-h"])
        .arg(source.socket_dir())
        .args(["-p", &source.port().to_string(), "-U", "postgres", DB])
        .output()
        .expect("pgbench");
    assert!(
        st.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let txns = String::from_utf8_lossy(&st.stdout)
        .lines()
        .find(|l| l.contains("number of transactions actually processed"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    // The lag at the end, in transactions: pgbench inserts one history row per transaction.
    let history = |c: &Cluster| -> i64 {
        c.psql(DB, "SELECT count(*) FROM pgbench_history")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let (on_source, on_target) = (history(source), history(target));
    let behind = on_source - on_target;
    let want = source
        .psql(DB, "SELECT sum(abalance) FROM pgbench_accounts")
        .unwrap();
    let catch_up = wait_until(
        target,
        "SELECT sum(abalance) FROM pgbench_accounts",
        want.trim(),
        Duration::from_secs(1800),
    );
    eprintln!("   {engine}: pgbench {secs} s ({txns:.0} transactions): {behind} behind at the end, caught up {catch_up:.2} s after the load stopped");
    out.push(ApplyRun {
        engine: engine.into(),
        case: format!("pgbench {secs} s at full speed: catch-up after it stops"),
        seconds: catch_up,
        rows_per_second: Some(txns / secs as f64),
        behind: Some(behind),
    });
}

fn pgtransit(bin: &std::path::Path, args: &[String]) {
    let o = Command::new(bin).args(args).output().expect("pgtransit");
    assert!(
        o.status.success(),
        "pgtransit {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Run both engines; returns the runs.
pub fn run(
    bin: &std::path::Path,
    make: impl Fn() -> (Cluster, Cluster),
    rows: u64,
    load_secs: u64,
) -> Vec<ApplyRun> {
    let mut out = Vec::new();
    for engine in ["native subscription", "pgtransit cdc"] {
        eprintln!("-- apply: {engine}");
        let (source, target) = make();
        for c in [&source, &target] {
            c.create_database(DB).unwrap();
        }
        let init = Command::new(source.client_program("pgbench"))
            .args(["-i", "-q", "-s", "10", "-h"])
            .arg(source.socket_dir())
            .args(["-p", &source.port().to_string(), "-U", "postgres", DB])
            .output()
            .unwrap();
        assert!(init.status.success());
        source
            .psql(DB, "CREATE TABLE t (id bigint PRIMARY KEY, v int, pad text); ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
            .unwrap();
        let (src, dst) = (source.url(DB), target.url(DB));
        let base = ["--source", src.as_str(), "--target", dst.as_str()];
        let with = |step: &str, extra: &[&str]| -> Vec<String> {
            let mut v = vec![step.to_string()];
            v.extend(base.iter().map(|s| s.to_string()));
            v.extend(extra.iter().map(|s| s.to_string()));
            v
        };
        let mut worker: Option<Child> = None;
        if engine.starts_with("native") {
            for step in ["copy-schema", "create-pub", "create-sub"] {
                pgtransit(bin, &with(step, &[]));
            }
            pgtransit(bin, &with("progress", &["--wait", "600"]));
        } else {
            pgtransit(bin, &with("init-struct", &[]));
            pgtransit(bin, &with("init-data", &[]));
            pgtransit(bin, &with("init-struct", &["--section", "post-data"]));
            worker = Some(
                Command::new(bin)
                    .args(with("cdc", &[]))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
        }
        big_transactions(engine, &source, &target, rows, &mut out);
        pgbench_load(engine, &source, &target, load_secs, &mut out);
        if let Some(mut w) = worker {
            // SIGTERM: the worker stops gracefully.
            unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
            let _ = w.wait();
        }
    }
    out
}
