//! `pgtransit-bench --apply`: the change apply of the native subscription against
//! pgtransit's `cdc`, on the same two sandboxes: one transaction inserting 1M rows, one
//! updating them, one deleting them (time from the source commit until the target has it),
//! and pgbench at full speed (lag at the end, time to catch up). Each engine gets a fresh
//! pair of sandboxes; `--runs N` repeats the whole and the table shows the medians.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgsandbox::Cluster;
use serde::Serialize;

use crate::median;

const DB: &str = "apply";

#[derive(Serialize, Clone)]
pub struct ApplyRun {
    pub run: usize,
    pub engine: String,
    pub case: String,
    pub seconds: f64,
    pub rows_per_second: Option<f64>,
    /// pgbench: transactions the target did not have yet when the load stopped.
    pub behind: Option<i64>,
    /// pgtransit: the worker's peak resident set (VmHWM) over the whole run, MiB.
    pub worker_peak_rss_mib: Option<f64>,
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
    run: usize,
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
            run,
            engine: engine.into(),
            case: name.into(),
            seconds: s,
            rows_per_second: Some(rows as f64 / s.max(0.001)),
            behind: None,
            worker_peak_rss_mib: None,
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
    run: usize,
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
        run,
        engine: engine.into(),
        case: format!("pgbench {secs} s at full speed: catch-up after it stops"),
        seconds: catch_up,
        rows_per_second: Some(txns / secs as f64),
        behind: Some(behind),
        worker_peak_rss_mib: None,
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

/// Both engines, `runs` times; every case of every run, and the markdown table of the
/// medians.
pub fn run(
    bin: &std::path::Path,
    make: impl Fn() -> (Cluster, Cluster),
    rows: u64,
    load_secs: u64,
    runs: usize,
) -> (Vec<ApplyRun>, String) {
    let mut all = Vec::new();
    for run in 1..=runs {
        eprintln!("== apply run {run} of {runs}");
        once(bin, &make, rows, load_secs, run, &mut all);
    }
    let md = table(&all, load_secs, runs);
    (all, md)
}

/// Each case's median per engine, the ratio of the medians and each run's ratio.
fn table(all: &[ApplyRun], load_secs: u64, runs: usize) -> String {
    let mut md = format!(
        "Change apply, same machine and sandboxes ({} cores), median of {runs} runs, each engine on a \
         fresh pair. Time from the source commit until the target shows the transaction; for pgbench, \
         time to catch up once a {load_secs} s full-speed load stops (the rate column is then \
         pgbench's transactions/s, and the transactions the target lacked when the load stopped). \
         Ratio = native / pgtransit, of the medians (each run's in brackets).\n\n\
         | case | native subscription | pgtransit cdc | ratio |\n|---|---:|---:|---:|\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let mut cases: Vec<&str> = Vec::new();
    for r in all {
        if !cases.contains(&r.case.as_str()) {
            cases.push(&r.case);
        }
    }
    let of = |engine: &str, case: &str| -> Vec<&ApplyRun> {
        all.iter()
            .filter(|r| r.engine.starts_with(engine) && r.case == case)
            .collect()
    };
    let cell = |rs: &[&ApplyRun]| -> String {
        let m = |f: fn(&ApplyRun) -> Option<f64>| {
            let v: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
            (!v.is_empty()).then(|| median(v))
        };
        let seconds = m(|r| Some(r.seconds)).unwrap_or(0.0);
        match (m(|r| r.rows_per_second), m(|r| r.behind.map(|b| b as f64))) {
            (Some(rate), Some(behind)) => {
                format!("{seconds:.2} s ({rate:.0}/s, {behind:.0} behind)")
            }
            (Some(rate), None) => format!("{seconds:.1} s ({rate:.0}/s)"),
            _ => format!("{seconds:.1} s"),
        }
    };
    for case in cases {
        let (n, p) = (of("native", case), of("pgtransit", case));
        if n.is_empty() || p.is_empty() {
            continue;
        }
        let med = |rs: &[&ApplyRun]| median(rs.iter().map(|r| r.seconds).collect());
        let each: Vec<String> = n
            .iter()
            .filter_map(|a| {
                let b = p.iter().find(|b| b.run == a.run)?;
                Some(format!("{:.2}", a.seconds / b.seconds.max(0.001)))
            })
            .collect();
        md.push_str(&format!(
            "| {case} | {} | {} | {:.2}x [{}] |\n",
            cell(&n),
            cell(&p),
            med(&n) / med(&p).max(0.001),
            each.join(", ")
        ));
    }
    let rss = all
        .iter()
        .filter_map(|r| r.worker_peak_rss_mib)
        .fold(0.0, f64::max);
    md.push_str(&format!(
        "\nPeak RSS of the pgtransit cdc worker over all runs (VmHWM): {rss:.0} MiB.\n"
    ));
    md
}

/// One run of both engines, each on a fresh pair of sandboxes.
fn once(
    bin: &std::path::Path,
    make: &impl Fn() -> (Cluster, Cluster),
    rows: u64,
    load_secs: u64,
    run: usize,
    out: &mut Vec<ApplyRun>,
) {
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
        big_transactions(run, engine, &source, &target, rows, out);
        pgbench_load(run, engine, &source, &target, load_secs, out);
        if let Some(mut w) = worker {
            let rss = crate::lag::peak_rss_mib(w.id());
            if let Some(last) = out.last_mut() {
                last.worker_peak_rss_mib = rss;
            }
            // SIGTERM: the worker stops gracefully.
            unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
            let _ = w.wait();
        }
    }
}
