//! `pgtransit switchover`: the readonly fence keeps every application role out (also one
//! that turns read-only off for itself), the barrier waits for the target, sequences land
//! ahead, the forward replication goes; a barrier that is not reached undoes the fence.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A write by the application role `app`, which turns read-only off for itself.
fn app_write(p: &Pair) -> Result<String, String> {
    let o = Command::new(p.source.client_program("psql"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args(["-p", &p.source.port().to_string(), "-U", "app", "-d", DB, "-c"])
        .arg("SET default_transaction_read_only = off; INSERT INTO orders (v) VALUES (42) RETURNING id")
        .output()
        .unwrap();
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).to_string())
    }
}

fn start_task(home: &Path, p: &Pair, name: &str, engine: &str) {
    pt_ok(
        home,
        &[
            "create",
            name,
            "--engine",
            engine,
            "--source",
            &p.source.url(DB),
            "--target",
            &p.target.url(DB),
        ],
    );
    let t = Instant::now();
    loop {
        let d: serde_json::Value =
            serde_json::from_str(&pt_ok(home, &["describe", name, "--json"])).unwrap();
        let cdc = d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "cdc" && s["status"] == "running");
        if cdc {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120) && d["status"] != "failed",
            "{d:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn pair_with_app() -> Pair {
    let p = empty_pair(
        "CREATE TABLE orders (id serial PRIMARY KEY, v int); \
         INSERT INTO orders (v) SELECT g FROM generate_series(1, 1000) g; \
         CREATE ROLE app LOGIN; GRANT ALL ON orders, orders_id_seq TO app;",
    );
    pgbench_init(&p.source, 1);
    p.source
        .psql(DB, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .unwrap();
    p
}

/// The whole switchover under load; `engine` is stream or native.
fn readonly_switchover(engine: &str) {
    let p = pair_with_app();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let load = Workload::start_script(&p.source, h, "INSERT INTO orders (v) VALUES (1);\n");
    start_task(h, &p, "s1", engine);
    assert!(
        app_write(&p).is_ok(),
        "the application writes before the fence"
    );
    let dry = pt_ok(h, &["switchover", "s1", "--dry-run"]);
    assert!(
        dry.contains("CONNECTION LIMIT 0") && dry.contains("pg_logical_emit_message"),
        "{dry}"
    );

    let out = pt_ok(
        h,
        &[
            "switchover",
            "s1",
            "--fence",
            "readonly",
            "--verify",
            "count",
        ],
    );
    assert!(out.contains("switched over: write downtime"), "{out}");
    let downtime: f64 = out
        .split("write downtime ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(downtime < 2.0, "write downtime {downtime} s:\n{out}");
    // The application is locked out of the source, whatever it sets for itself.
    let refused = app_write(&p).expect_err("no write on the source after the fence");
    assert!(refused.contains("connection"), "{refused}");
    drop(load);
    for t in [
        "public.orders",
        "public.pgbench_accounts",
        "public.pgbench_history",
    ] {
        assert_eq!(
            content_hash(&p.source, t),
            content_hash(&p.target, t),
            "{t}"
        );
    }
    // New rows on the target take ids the source never used.
    let max_src: i64 = p
        .source
        .psql(DB, "SELECT max(id) FROM orders")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let new_id: i64 = p
        .target
        .psql(DB, "INSERT INTO orders (v) VALUES (7) RETURNING id")
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        new_id > max_src + 900,
        "target id {new_id} after source max {max_src}"
    );
    nothing_left(&p);
    let d: serde_json::Value =
        serde_json::from_str(&pt_ok(h, &["describe", "s1", "--json"])).unwrap();
    assert_eq!(d["status"], "switched-over", "{d:#}");
}

#[test]
fn readonly_switchover_with_the_native_engine() {
    readonly_switchover("native");
}

#[test]
fn readonly_switchover_with_the_stream_engine() {
    readonly_switchover("stream");
}

#[test]
fn a_barrier_timeout_unfences_the_source_and_keeps_streaming() {
    let p = pair_with_app();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    start_task(h, &p, "s2", "native");
    // The target stops applying: the barrier cannot be reached.
    p.target
        .psql(DB, "ALTER SUBSCRIPTION pgtransit_s2 DISABLE")
        .unwrap();
    let t = Instant::now();
    while p
        .target
        .psql(
            DB,
            "SELECT count(pid) FROM pg_stat_subscription WHERE subname = 'pgtransit_s2'",
        )
        .unwrap()
        .trim()
        != "0"
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the apply worker never stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = pt(
        h,
        &[
            "switchover",
            "s2",
            "--barrier-timeout",
            "2",
            "--max-lag",
            "1000000000",
        ],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("did not reach the barrier") && out.contains("unfenced"),
        "{out}"
    );
    assert!(app_write(&p).is_ok(), "the source takes writes again");
    let d: serde_json::Value =
        serde_json::from_str(&pt_ok(h, &["describe", "s2", "--json"])).unwrap();
    assert_eq!(d["status"], "running", "{d:#}");
    p.target
        .psql(DB, "ALTER SUBSCRIPTION pgtransit_s2 ENABLE")
        .unwrap();
    pt_ok(h, &["terminate", "s2"]);
}
