//! `pgtransit-bench --lag [--load-secs N] [--runs N]`: the apply's lag while the source runs
//! pgbench at full speed (tpcb-like, -c4), for the native subscription and for pgtransit's
//! apply, each alone on a fresh pair of sandboxes. The lag is sampled every 100 ms from
//! outside, the same way for both: a heartbeat row on the source gets `clock_timestamp()`
//! every 100 ms, and every 100 ms one query on the target reads the heartbeat it has applied
//! and, through dblink, the source's current one. The lag is their difference: how far the
//! target's content is behind the source's, in source time, whatever the writer's own
//! delays (a starved heartbeat writer makes both sides old, not the apply late). The age of
//! the applied heartbeat (now minus it) is kept too: it adds the writer's delays. (The
//! worker's own metrics are published every 2 s, too coarse to sample at 100 ms.)
//! Sampling starts once the target holds a heartbeat of this writer, and the load once the
//! sampler samples: the first samples would otherwise measure the age of the heartbeat
//! written at setup (which made every earlier run's maximum about 2.6 s for both engines).
//! `--only stream|native` runs one engine; `--keep-samples DIR` keeps each run's samples.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgsandbox::Cluster;

use crate::drain::run_ok;
use crate::median;
use serde::Serialize;

const DB: &str = "lag";

#[derive(Serialize, Clone, Debug)]
pub struct LagRun {
    pub engine: String,
    pub run: usize,
    pub load_seconds: u64,
    /// pgbench transactions during the load.
    pub transactions: i64,
    pub samples: usize,
    /// The target's heartbeat behind the source's.
    pub p50_seconds: f64,
    pub p90_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
    /// The age of the target's heartbeat (the lag plus the heartbeat writer's delays).
    pub age_p99_seconds: f64,
    /// How long after the load the target had everything (heartbeat and content).
    pub catch_up_seconds: f64,
    /// Peak RSS of the pgtransit worker (pgtransit runs only), MiB.
    pub worker_peak_rss_mib: Option<f64>,
}

/// psql on `c` running `setup` once, then `sql` every 100 ms until killed; its output goes
/// to `out`.
fn every_100ms(c: &Cluster, db: &str, setup: &str, sql: &str, out: Stdio) -> Child {
    let mut child = Command::new(c.client_program("psql"))
        .args(["-X", "-q", "-At", "-h"])
        .arg(c.socket_dir())
        .args(["-p", &c.port().to_string(), "-U", "postgres", "-d", db])
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{setup}\n{sql} \\watch 0.1").unwrap();
    // psql reads its input to the end before it stops: keep stdin open (leaked) while it
    // repeats the query.
    std::mem::forget(stdin);
    child
}

/// VmHWM of a running process, MiB.
pub(crate) fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

const CONTENT: &str = "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || \
    (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT ts FROM hb)";

/// One engine under the load, on a fresh pair.
fn once(
    bin: &Path,
    make: &impl Fn() -> (Cluster, Cluster),
    engine: &str,
    load_secs: u64,
    run: usize,
) -> LagRun {
    let (source, target) = make();
    let dir = tempfile::tempdir().unwrap();
    source.create_database(DB).unwrap();
    run_ok(
        Command::new(source.client_program("pgbench"))
            .args(["-i", "-q", "-s", "10", "-h"])
            .arg(source.socket_dir())
            .args(["-p", &source.port().to_string(), "-U", "postgres", DB]),
        "pgbench -i",
    );
    source
        .psql(
            DB,
            "ALTER TABLE pgbench_history REPLICA IDENTITY FULL; \
             CREATE TABLE hb (id int PRIMARY KEY, ts timestamptz NOT NULL); \
             INSERT INTO hb VALUES (1, clock_timestamp());",
        )
        .unwrap();
    target.create_database(DB).unwrap();
    let file = dir.path().join("lag.yml");
    std::fs::write(
        &file,
        format!(
            "name: lag\nengine: {engine}\nsource: {}\ntarget: {}\n",
            source.url(DB),
            target.url(DB)
        ),
    )
    .unwrap();
    let f = file.display().to_string();
    let pgtransit =
        |args: &[&str]| run_ok(Command::new(bin).args(args), &format!("pgtransit {args:?}"));
    let mut worker = None;
    if engine == "native" {
        for step in ["copy-schema", "create-pub", "create-sub"] {
            pgtransit(&[step, "-t", &f]);
        }
        pgtransit(&["progress", "-t", &f, "--wait", "600"]);
    } else {
        pgtransit(&["init-struct", "-t", &f]);
        pgtransit(&["init-data", "-t", &f]);
        pgtransit(&["init-struct", "-t", &f, "--section", "post-data"]);
        worker = Some(
            Command::new(bin)
                .args(["cdc", "-t", &f])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("pgtransit cdc"),
        );
    }
    let equal = |limit: Duration| {
        let want = source.psql(DB, CONTENT).unwrap();
        let t = Instant::now();
        loop {
            if target.psql(DB, CONTENT).ok().as_deref() == Some(want.as_str()) {
                return t.elapsed().as_secs_f64();
            }
            assert!(t.elapsed() < limit, "{engine}: the target never caught up");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    equal(Duration::from_secs(120));

    let samples_file = dir.path().join("samples.txt");
    let mut heartbeat = every_100ms(
        &source,
        DB,
        "",
        "UPDATE hb SET ts = clock_timestamp() WHERE id = 1",
        Stdio::null(),
    );
    // The heartbeat the target holds was written at setup, seconds ago: until the first
    // one of this writer arrives, a sample would measure the setup's age, not the lag.
    // Sampling starts once the target has one (on an idle system, milliseconds).
    let writer_started = source.psql(DB, "SELECT clock_timestamp()").unwrap();
    let t = Instant::now();
    while target
        .psql(
            DB,
            &format!("SELECT ts > '{}' FROM hb", writer_started.trim()),
        )
        .map(|v| v.trim() != "t")
        .unwrap_or(true)
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{engine}: no heartbeat arrives"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut sampler = every_100ms(
        &target,
        DB,
        &format!(
            "CREATE EXTENSION IF NOT EXISTS dblink; SELECT dblink_connect('src', '{}');",
            source.url(DB)
        ),
        "SELECT extract(epoch FROM s.ts - hb.ts) || ' ' || extract(epoch FROM clock_timestamp() - hb.ts) \
         FROM hb, dblink('src', 'SELECT ts FROM hb') AS s(ts timestamptz)",
        Stdio::from(std::fs::File::create(&samples_file).unwrap()),
    );
    // The load starts once the sampler samples (its dblink connection takes a moment).
    let t = Instant::now();
    while !std::fs::read_to_string(&samples_file)
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_once(' ').is_some())
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{engine}: the sampler does not sample"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run_ok(
        Command::new(source.client_program("pgbench"))
            .args([
                "-n",
                "-c",
                "4",
                "-j",
                "2",
                "-T",
                &load_secs.to_string(),
                "-h",
            ])
            .arg(source.socket_dir())
            .args(["-p", &source.port().to_string(), "-U", "postgres", DB]),
        "pgbench load",
    );
    let _ = sampler.kill();
    let _ = sampler.wait();
    let _ = heartbeat.kill();
    let _ = heartbeat.wait();
    let catch_up_seconds = equal(Duration::from_secs(600));
    let worker_peak_rss_mib = worker.as_ref().and_then(|w| peak_rss_mib(w.id()));
    if let Some(mut w) = worker {
        unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
        let _ = w.wait();
    }
    let transactions = out
        .lines()
        .find(|l| l.contains("number of transactions actually processed"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if let Some(keep) = crate::arg_text("--keep-samples") {
        let _ = std::fs::copy(&samples_file, format!("{keep}/lag-{engine}-{run}.txt"));
    }
    // Each sample line: the lag, then the heartbeat's age.
    let (mut lags, mut ages): (Vec<f64>, Vec<f64>) = std::fs::read_to_string(&samples_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (a, b) = l.trim().split_once(' ')?;
            Some((a.parse::<f64>().ok()?.max(0.0), b.parse::<f64>().ok()?))
        })
        .unzip();
    lags.sort_by(|a, b| a.total_cmp(b));
    ages.sort_by(|a, b| a.total_cmp(b));
    let r = LagRun {
        engine: engine.into(),
        run,
        load_seconds: load_secs,
        transactions,
        samples: lags.len(),
        p50_seconds: percentile(&lags, 0.50),
        p90_seconds: percentile(&lags, 0.90),
        p99_seconds: percentile(&lags, 0.99),
        max_seconds: lags.last().copied().unwrap_or(f64::NAN),
        age_p99_seconds: percentile(&ages, 0.99),
        catch_up_seconds,
        worker_peak_rss_mib,
    };
    eprintln!(
        "   {engine} run {run}: {} transactions in {load_secs} s, {} samples: lag p50 {:.3} s, p90 {:.3} s, p99 {:.3} s, \
         max {:.3} s (heartbeat age p99 {:.3} s); caught up {:.2} s after the load",
        r.transactions,
        r.samples,
        r.p50_seconds,
        r.p90_seconds,
        r.p99_seconds,
        r.max_seconds,
        r.age_p99_seconds,
        r.catch_up_seconds
    );
    r
}

/// Both engines under the same load, `runs` times each, and the markdown table of the
/// medians.
pub fn run(
    bin: &Path,
    make: impl Fn() -> (Cluster, Cluster),
    load_secs: u64,
    runs: usize,
) -> (Vec<LagRun>, String) {
    let mut all = Vec::new();
    for run in 1..=runs {
        for engine in ["native", "stream"] {
            // `--only stream` (or native): one engine, to try a change quickly.
            if crate::arg_text("--only").is_some_and(|only| only != engine) {
                continue;
            }
            all.push(once(bin, &make, engine, load_secs, run));
        }
    }
    let mut md = format!(
        "Lag under a sustained full-speed load, same machine and sandboxes ({} cores): {load_secs} s of \
         pgbench -c4 -j2 (tpcb-like) on the source while the engine streams, each engine alone on a \
         fresh pair. Every 100 ms: how far the heartbeat row the target has applied is behind the \
         source's (a heartbeat written every 100 ms; see bench/src/lag.rs), and the applied \
         heartbeat's age, from once the target holds a heartbeat of this run. Median of {runs} runs (the p99 of each run in brackets).\n\n| engine | \
         transactions | samples | lag p50 | lag p90 | lag p99 | lag max | heartbeat age p99 | caught \
         up after the load | worker peak RSS |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    for engine in ["native", "stream"] {
        let rs: Vec<&LagRun> = all.iter().filter(|r| r.engine == engine).collect();
        if rs.is_empty() {
            continue;
        }
        let m = |f: fn(&LagRun) -> f64| median(rs.iter().map(|r| f(r)).collect());
        let each: Vec<String> = rs.iter().map(|r| format!("{:.2}", r.p99_seconds)).collect();
        let rss: Vec<f64> = rs.iter().filter_map(|r| r.worker_peak_rss_mib).collect();
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.3} s | {:.3} s | {:.3} s [{}] | {:.3} s | {:.3} s | {:.2} s | {} |\n",
            if engine == "stream" {
                "pgtransit cdc"
            } else {
                "native subscription"
            },
            m(|r| r.transactions as f64),
            m(|r| r.samples as f64),
            m(|r| r.p50_seconds),
            m(|r| r.p90_seconds),
            m(|r| r.p99_seconds),
            each.join(", "),
            m(|r| r.max_seconds),
            m(|r| r.age_p99_seconds),
            m(|r| r.catch_up_seconds),
            if rss.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0} MiB", rss.iter().copied().fold(0.0, f64::max))
            }
        ));
    }
    (all, md)
}
