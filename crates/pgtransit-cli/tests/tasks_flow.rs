//! Migration tasks driven through the CLI only, as kbcli users do: create under writes,
//! list, describe until CDC runs, logs per step, terminate; nothing of the task is left on
//! either server. Also: a password with every awkward character never shows, the metrics
//! endpoint is scraped, terminate survives an unreachable source, and a killed worker
//! resumes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use pgsandbox::Builder;

const PASSWORD: &str = "p@ss:w/o'rd x";

/// Source with pgbench tables (history with FULL identity), and an empty target.
fn pair(password: Option<&str>) -> Pair {
    let build = || match password {
        Some(p) => Builder::new().password(p).start().unwrap(),
        None => Builder::new().start().unwrap(),
    };
    let (source, target) = (build(), build());
    source.create_database(DB).unwrap();
    target.create_database(DB).unwrap();
    pgbench_init(&source, 2);
    source
        .psql(DB, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .unwrap();
    Pair { source, target }
}

const PGBENCH_TABLES: [&str; 4] = [
    "public.pgbench_accounts",
    "public.pgbench_branches",
    "public.pgbench_tellers",
    "public.pgbench_history",
];

fn step_status(d: &serde_json::Value, step: &str) -> String {
    d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == step)
        .map(|s| s["status"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Poll describe until `step` has `status`; fail with the worker's log otherwise.
fn wait_step(
    home: &Path,
    name: &str,
    step: &str,
    status: &str,
    limit: Duration,
) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let d = describe_json(home, name);
        if step_status(&d, step) == status {
            return d;
        }
        if t.elapsed() > limit || d["status"] == "failed" {
            let log = std::fs::read_to_string(home.join("workers").join(format!("{name}.log")))
                .unwrap_or_default();
            panic!("{step} never became {status}: {d:#}\nworker log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn wait_equal(p: &Pair) {
    let t = Instant::now();
    loop {
        let equal = PGBENCH_TABLES
            .iter()
            .all(|tb| content_hash(&p.source, tb) == content_hash(&p.target, tb));
        if equal {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "tables never became equal"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

#[test]
fn stream_task_flow_with_password_metrics_and_terminate_while_the_source_is_down() {
    let mut p = pair(Some(PASSWORD));
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let load = Workload::start_script(&p.source, h, "SELECT 1;\n");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let created = pt_ok(
        h,
        &[
            "create",
            "m1",
            "--source",
            &p.source.url(DB),
            "--sink",
            &p.target.url(DB),
            "--metrics-addr",
            &addr,
        ],
    );
    assert!(
        created.contains("created task m1 (stream engine)"),
        "{created}"
    );
    let listed = pt_ok(h, &["list"]);
    assert!(
        listed.contains("m1") && listed.contains("stream"),
        "{listed}"
    );

    wait_step(h, "m1", "cdc", "running", Duration::from_secs(180));
    for step in ["precheck", "init-struct", "init-data", "cdc"] {
        let logs = pt_ok(h, &["logs", "m1", "--step", step]);
        assert!(
            logs.contains(&format!("[{step}]")),
            "logs of {step}:\n{logs}"
        );
    }
    // Lag and rows move while the load runs; the endpoint shows the same.
    let mut seen = std::collections::HashSet::new();
    let mut lags = std::collections::HashSet::new();
    let t = Instant::now();
    while seen.len() < 2 && t.elapsed() < Duration::from_secs(60) {
        let d = describe_json(h, "m1");
        if let Some(v) = d["metrics"]["values"]["applied_lsn"].as_str() {
            assert!(
                d["metrics"]["age_seconds"].as_f64().unwrap() < 10.0,
                "metrics are fresh: {d:#}"
            );
            seen.insert(v.to_string());
            lags.insert(d["metrics"]["values"]["lag_bytes"].to_string());
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(
        seen.len() >= 2,
        "describe's applied position moves under load: {seen:?}"
    );
    let body = scrape(&addr, "/metrics");
    assert!(metric(&body, "pgtransit_lag_bytes").is_some(), "{body}");
    assert!(
        metric(&body, "pgtransit_applied_rows").unwrap_or(0.0) > 0.0,
        "{body}"
    );
    assert!(body.contains("pgtransit_step{"), "{body}");
    let status = scrape(&addr, "/status");
    assert!(status.contains("\"task\":\"m1\""), "{status}");

    load.stop();
    wait_equal(&p);
    let described = pt_ok(h, &["describe", "m1"]);
    assert!(
        described.contains("Next:") && described.contains("****") || !described.contains(PASSWORD),
        "{described}"
    );

    // Terminate with the source down: no hang, what is left is named, the task is kept.
    p.source.stop().unwrap();
    let t = Instant::now();
    let o = pt(h, &["terminate", "m1", "--wait", "10"]);
    assert!(t.elapsed() < Duration::from_secs(60), "terminate returns");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(5), "{out}");
    assert!(
        out.contains("replication slot") && out.contains("pg_drop_replication_slot"),
        "{out}"
    );
    assert!(pt_ok(h, &["list"]).contains("terminating"));
    p.source.restart().unwrap();
    let out = pt_ok(h, &["terminate", "m1"]);
    assert!(out.contains("terminated"), "{out}");
    nothing_left(&p);
    assert!(!pt_ok(h, &["list"]).contains("m1"));

    // The password appears nowhere: outputs above, the store, the worker's log.
    for (what, bytes) in walk(h) {
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains(PASSWORD), "the password is in {what}");
    }
    for o in [&created, &listed, &described] {
        assert!(!o.contains(PASSWORD));
    }
}

/// Every file under `dir` (the store, logs, secrets) with its contents.
fn walk(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if !p.to_string_lossy().contains("secrets") {
            out.push((
                p.display().to_string(),
                std::fs::read(&p).unwrap_or_default(),
            ));
        }
    }
    out
}

#[test]
fn native_task_flow_leaves_nothing_behind() {
    let p = pair(None);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let load = Workload::start_script(&p.source, h, "SELECT 1;\n");
    pt_ok(
        h,
        &[
            "create",
            "n1",
            "--engine",
            "native",
            "--source",
            &p.source.url(DB),
            "--target",
            &p.target.url(DB),
        ],
    );
    wait_step(h, "n1", "cdc", "running", Duration::from_secs(180));
    assert!(pt_ok(h, &["list"]).contains("native"));
    for step in ["precheck", "init-struct", "init-data", "cdc"] {
        let logs = pt_ok(h, &["logs", "n1", "--step", step]);
        assert!(
            logs.contains(&format!("[{step}] {step}: ")),
            "logs of {step}:\n{logs}"
        );
    }
    let d = describe_json(h, "n1");
    assert!(
        d["metrics"]["values"]["lag_bytes"].is_number(),
        "native lag published: {d:#}"
    );
    load.stop();
    wait_equal(&p);
    let out = pt_ok(h, &["terminate", "n1"]);
    assert!(
        out.contains("subscription") && out.contains("terminated"),
        "{out}"
    );
    nothing_left(&p);
}

fn worker_pid(home: &Path, name: &str) -> i32 {
    describe_json(home, name)["worker_pid"]
        .as_i64()
        .expect("a worker pid") as i32
}

#[test]
fn a_killed_worker_resumes_with_start_during_init_data_and_cdc() {
    let p = pair(None);
    // Enough rows that the copy takes a moment.
    p.source
        .psql(
            DB,
            "CREATE TABLE big (id bigint PRIMARY KEY, pad text); \
                   INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 1500000) g;",
        )
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let load = Workload::start_script(&p.source, h, "SELECT 1;\n");
    pt_ok(
        h,
        &[
            "create",
            "k1",
            "--steps",
            "precheck=false",
            "--source",
            &p.source.url(DB),
            "--target",
            &p.target.url(DB),
        ],
    );
    wait_step(h, "k1", "init-data", "running", Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(1500));
    unsafe { libc::kill(worker_pid(h, "k1"), libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(pt_ok(h, &["list"]).contains("worker gone"));
    pt_ok(h, &["start", "k1"]);
    wait_step(h, "k1", "cdc", "running", Duration::from_secs(240));
    std::thread::sleep(Duration::from_secs(2));
    unsafe { libc::kill(worker_pid(h, "k1"), libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(500));
    pt_ok(h, &["start", "k1"]);
    wait_step(h, "k1", "cdc", "running", Duration::from_secs(60));
    load.stop();
    wait_equal(&p);
    assert_eq!(
        content_hash(&p.source, "public.big"),
        content_hash(&p.target, "public.big")
    );
    pt_ok(h, &["terminate", "k1"]);
    nothing_left(&p);
}
