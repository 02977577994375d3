//! `pgtransit switchover`: the readonly fence keeps every application role out (also one
//! that turns read-only off for itself), the barrier waits for the target, sequences land
//! ahead, the forward replication goes; a barrier that is not reached undoes the fence.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A write on the source by the application role `app`, which turns read-only off for
/// itself.
fn app_write(p: &Pair) -> Result<String, String> {
    app_write_on(&p.source)
}

fn app_write_on(c: &pgsandbox::Cluster) -> Result<String, String> {
    let o = Command::new(c.client_program("psql"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args(["-p", &c.port().to_string(), "-U", "app", "-d", DB, "-c"])
        .arg("SET default_transaction_read_only = off; INSERT INTO orders (v) VALUES (42) RETURNING id")
        .output()
        .unwrap();
    if o.status.success() {
        // The id RETURNING gave (psql also prints the command tags).
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        Ok(out
            .lines()
            .find(|l| l.trim().parse::<i64>().is_ok())
            .unwrap_or_default()
            .trim()
            .to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).to_string())
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
    p.target.psql("postgres", "CREATE ROLE app LOGIN").unwrap();
    p
}

/// The whole switchover under load; `engine` is stream or native. With `reverse`, the
/// target's writes flow back and a rollback returns to the source.
fn readonly_switchover(engine: &str, reverse: bool) {
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

    let mut args = vec![
        "switchover",
        "s1",
        "--fence",
        "readonly",
        "--verify",
        "count",
        "--json",
    ];
    if reverse {
        args.push("--reverse");
    }
    // With --json, stdout is one JSON document and nothing else (verify's lines included).
    let o = pt(h, &args);
    assert!(o.status.success(), "{}", text(&o));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "switchover --json printed more than JSON ({e}):\n{}",
            text(&o)
        )
    });
    let downtime = out["report"]["downtime_seconds"].as_f64().unwrap();
    assert!(downtime < 2.0, "write downtime {downtime} s:\n{out:#}");
    assert!(
        out["report"]["rows_verified"].as_u64().unwrap() > 0,
        "{out:#}"
    );
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
    let d: serde_json::Value =
        serde_json::from_str(&pt_ok(h, &["describe", "s1", "--json"])).unwrap();
    assert_eq!(d["status"], "switched-over", "{d:#}");
    if reverse {
        // The application now writes on the target; the old source follows.
        p.target
            .psql(DB, "GRANT ALL ON orders, orders_id_seq TO app")
            .unwrap();
        let id = app_write_on(&p.target).expect("the application writes on the target");
        wait_for(
            &p.source,
            &format!("SELECT count(*) FROM orders WHERE id = {id}"),
            "1",
        );
        let out = pt_ok(
            h,
            &[
                "rollback", "s1", "--fence", "readonly", "--verify", "checksum",
            ],
        );
        assert!(out.contains("switched over: write downtime"), "{out}");
        assert!(
            app_write_on(&p.target).is_err(),
            "the target is fenced after the rollback"
        );
        let back = app_write(&p).expect("the source takes the application's writes again");
        assert!(
            back.parse::<i64>().unwrap() > new_id,
            "{back} after {new_id}"
        );
        assert_eq!(
            content_hash(&p.target, "public.pgbench_accounts"),
            content_hash(&p.source, "public.pgbench_accounts")
        );
        let d: serde_json::Value =
            serde_json::from_str(&pt_ok(h, &["describe", "s1", "--json"])).unwrap();
        assert_eq!(d["status"], "rolled-back", "{d:#}");
    }
    nothing_left(&p);
}

/// Poll `sql` on `c` until it returns `want` (10 s at most).
fn wait_for(c: &pgsandbox::Cluster, sql: &str, want: &str) {
    let t = Instant::now();
    loop {
        let got = c.psql(DB, sql).unwrap();
        if got.trim() == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{sql}: {got} (want {want})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn readonly_switchover_with_the_native_engine_and_rollback() {
    readonly_switchover("native", true);
}

#[test]
fn readonly_switchover_with_the_stream_engine() {
    readonly_switchover("stream", false);
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

/// pgbench through pgbouncer for the whole migration: init-data, streaming, a switchover
/// that PAUSEs pgbouncer and points it at the target, writes on the target flowing back,
/// and a rollback the same way. No client transaction fails.
#[test]
fn pgbouncer_switchover_and_rollback_under_pgbench_without_a_failed_transaction() {
    if pgsandbox::find_pgbouncer().is_none() {
        eprintln!("SKIPPED: pgbouncer is not installed (apt-get install pgbouncer)");
        return;
    }
    let p = pair_with_app();
    // A second entry, pointing elsewhere: the switchover must find the application's.
    let bouncer = pgsandbox::Pgbouncer::start(
        &[(DB, &p.source, DB), ("reports", &p.target, "postgres")],
        &["postgres", "app"],
    )
    .expect("pgbouncer");
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let script = h.join("orders.sql");
    std::fs::write(&script, "INSERT INTO orders (v) VALUES (1);\n").unwrap();
    let errors = h.join("pgbench.err");
    let mut pgbench = Command::new(p.source.client_program("pgbench"))
        .args(["-n", "-c", "4", "-T", "600", "-b", "tpcb-like@4", "-f"])
        .arg(format!("{}@1", script.display()))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &bouncer.port().to_string(),
            "-U",
            "postgres",
            DB,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .unwrap();
    start_task(h, &p, "pb", "stream");
    let admin = bouncer.admin_url();
    let config = bouncer.config().display().to_string();
    // The switchover finds the entry and the file on the admin console; the rollback gives
    // the file (the flags stay as overrides).
    let bouncer_args = |cmd: &'static str, fence: &'static str| -> Vec<String> {
        let mut v: Vec<String> = [
            cmd,
            "pb",
            "--fence",
            fence,
            "--reroute",
            "pgbouncer",
            "--pgbouncer",
            &admin,
            "--verify",
            "checksum",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if cmd == "rollback" {
            v.extend(["--pgbouncer-config".to_string(), config.clone()]);
        }
        v
    };
    let mut args = bouncer_args("switchover", "pgbouncer+readonly");
    args.push("--dry-run".into());
    let dry = pt_ok(h, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        dry.contains("PAUSE shop") && dry.contains("RESUME shop"),
        "{dry}"
    );
    assert!(
        dry.contains(&format!(
            "pgbouncer entry shop -> 127.0.0.1:{}/shop (the entry pointing at the source), in {config} (pgbouncer's conffile (SHOW CONFIG))",
            p.source.port()
        )),
        "{dry}"
    );
    // Clients of pgbouncer wait; whatever connects to the source directly is locked out.
    let mut args = bouncer_args("switchover", "pgbouncer+readonly");
    args.push("--reverse".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pt_ok(h, &args);
    let downtime = |out: &str| -> f64 {
        out.split("write downtime ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{out}"))
    };
    eprintln!("{out}");
    assert!(downtime(&out) < 2.0, "{out}");
    assert!(
        out.contains("rows verified") && out.contains("pb-reverse"),
        "{out}"
    );
    assert!(
        app_write(&p).is_err(),
        "a direct writer is locked out of the old primary"
    );
    // pgbench now writes on the target, and the old source follows.
    let on_target = |c: &pgsandbox::Cluster| -> i64 {
        c.psql(DB, "SELECT count(*) FROM orders")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let t0 = on_target(&p.target);
    let t = Instant::now();
    while on_target(&p.target) < t0 + 100 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "pgbench does not write on the target"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The sequences moved ahead by the shift before the target took writes.
    let gap = p
        .target
        .psql(
            DB,
            "SELECT max(id - prev) FROM (SELECT id, lag(id) OVER (ORDER BY id) prev FROM orders) s",
        )
        .unwrap();
    assert!(
        gap.trim().parse::<i64>().unwrap() >= 1000,
        "largest id gap {gap}"
    );
    let t1 = on_target(&p.target);
    let t = Instant::now();
    while on_target(&p.source) < t1 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the reverse replication does not follow"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let args = bouncer_args("rollback", "pgbouncer");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pt_ok(h, &args);
    eprintln!("{out}");
    assert!(downtime(&out) < 2.0, "{out}");
    // pgbench is back on the source; the target no longer changes.
    let s0 = on_target(&p.source);
    let t = Instant::now();
    while on_target(&p.source) < s0 + 100 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "pgbench does not write on the source again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    app_write(&p).expect("the source takes direct writers again after the rollback");
    let _ = pgbench.kill();
    let _ = pgbench.wait();
    let err = std::fs::read_to_string(&errors).unwrap();
    assert!(
        !err.contains("error") && !err.contains("abort"),
        "pgbench clients failed:\n{err}\npgbouncer log:\n{}",
        bouncer.log()
    );
    let d: serde_json::Value =
        serde_json::from_str(&pt_ok(h, &["describe", "pb", "--json"])).unwrap();
    assert_eq!(d["status"], "rolled-back", "{d:#}");
    nothing_left(&p);
}

/// A switchover that dies halfway leaves the source fenced and says so; `--undo` lifts the
/// fence, and after a second crash a plain rerun continues from the recorded phase.
#[test]
fn a_crashed_switchover_is_undone_or_continued() {
    let mut p = pair_with_app();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    start_task(h, &p, "s3", "stream");
    let crash = |phase: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_pgtransit"))
            .args(["switchover", "s3", "--fence", "readonly"])
            .env("PGTRANSIT_HOME", h)
            .env("FAILPOINTS", format!("switchover-crash=return({phase})"))
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(9),
            "{}\nworker log:\n{}",
            text(&o),
            text(&pt(h, &["logs", "s3", "--step", "cdc"]))
        );
    };
    crash("barrier");
    assert!(
        app_write(&p).is_err(),
        "the source stays fenced after a crash"
    );
    let d: serde_json::Value =
        serde_json::from_str(&pt_ok(h, &["describe", "s3", "--json"])).unwrap();
    assert_eq!(d["switchover"]["phase"], "barrier", "{d:#}");
    assert!(d["next"].as_str().unwrap().contains("--undo"), "{d:#}");
    // An --undo that cannot lift the fence (the source is down) says so, fails, and keeps
    // the switchover in flight for the next --undo.
    p.source.stop().unwrap();
    let o = pt(h, &["switchover", "s3", "--undo"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("UNFENCING FAILED") && text(&o).contains("stays in flight"),
        "{}",
        text(&o)
    );
    p.source.restart().unwrap();
    let d: serde_json::Value =
        serde_json::from_str(&pt_ok(h, &["describe", "s3", "--json"])).unwrap();
    assert_eq!(d["switchover"]["phase"], "barrier", "{d:#}");
    assert!(app_write(&p).is_err(), "still fenced");
    let out = pt_ok(h, &["switchover", "s3", "--undo"]);
    assert!(out.contains("undone") && out.contains("unfenced"), "{out}");
    app_write(&p).expect("the source takes writes after --undo");

    crash("verified");
    assert!(app_write(&p).is_err(), "fenced again");
    let out = pt_ok(h, &["switchover", "s3"]);
    eprintln!("{out}");
    assert!(
        out.contains("continuing") && out.contains("switched over"),
        "{out}"
    );
    let d: serde_json::Value =
        serde_json::from_str(&pt_ok(h, &["describe", "s3", "--json"])).unwrap();
    assert_eq!(d["status"], "switched-over", "{d:#}");
    assert_eq!(d["switchover"]["report"]["resumed"], true, "{d:#}");
    assert_eq!(
        content_hash(&p.source, "public.orders"),
        content_hash(&p.target, "public.orders")
    );
    nothing_left(&p);
}

/// A switchover that dies right after recording its fence, before it ended the other
/// sessions, leaves an application session on the old primary; the rerun ends it before it
/// goes on, so nothing writes to the old primary after "switched over".
#[test]
fn a_switchover_resumed_after_the_fence_ends_the_sessions_left_behind() {
    use std::io::Write;
    let p = pair_with_app();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    start_task(h, &p, "s4", "stream");
    // An application session that stays connected.
    let mut app = Command::new(p.source.client_program("psql"))
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &p.source.port().to_string(),
        ])
        .args(["-U", "app", "-d", DB])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut app_in = app.stdin.take().unwrap();
    writeln!(app_in, "SELECT 1;").unwrap();
    let sessions = || {
        p.source
            .psql(
                DB,
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
            )
            .unwrap()
            .trim()
            .to_string()
    };
    let t = Instant::now();
    while sessions() != "1" {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the app session never connected"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_pgtransit"))
        .args(["switchover", "s4", "--fence", "readonly"])
        .env("PGTRANSIT_HOME", h)
        .env("FAILPOINTS", "switchover-crash=return(fencing)")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(9), "{}", text(&o));
    assert_eq!(
        sessions(),
        "1",
        "the crash came before the sessions were ended"
    );
    let out = pt_ok(h, &["switchover", "s4"]);
    assert!(
        out.contains("continuing") && out.contains("switched over"),
        "{out}"
    );
    assert_eq!(sessions(), "0", "the session left behind was ended");
    drop(app_in);
    let _ = app.wait();
}
