//! The smaller guards a careful DBA expects: generate does not take over a folder it did
//! not make, init-struct leaves the sequences of unselected tables alone, an object filter
//! that matches nothing is an error, a wrong password's hint says where it came from, and
//! idle clients of the metrics endpoint cannot starve the worker.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn generate_refuses_a_folder_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g1.yml");
    std::fs::write(
        &file,
        "name: g1\nengine: native\nsource: postgresql://u@127.0.0.1:1/db\n\
         target: postgresql://u@127.0.0.1:2/db\n",
    )
    .unwrap();
    let ctx = dir.path().join("shared");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::set_permissions(&ctx, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(ctx.join("README.md"), "my notes\n").unwrap();
    let (f, c) = (file.to_str().unwrap(), ctx.to_str().unwrap());
    let o = pgtransit(&["generate", "-t", f, "--dir", c]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("README.md"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(ctx.join("README.md")).unwrap(),
        "my notes\n"
    );
    ok(&["generate", "-t", f, "--dir", c, "--force"]);
    let mode = std::fs::metadata(&ctx).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "the existing folder kept its mode");
    assert!(ctx.join("create-pub").exists());
    // A folder pgtransit generated is generated again without --force.
    ok(&["generate", "-t", f, "--dir", c]);
    // A new folder is private.
    let fresh = dir.path().join("fresh");
    ok(&["generate", "-t", f, "--dir", fresh.to_str().unwrap()]);
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn init_struct_leaves_the_sequences_of_unselected_tables() {
    let p = empty_pair(
        "CREATE TABLE a (id serial PRIMARY KEY); CREATE TABLE b (id serial PRIMARY KEY); \
         CREATE TABLE c (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY); \
         INSERT INTO a DEFAULT VALUES; INSERT INTO b DEFAULT VALUES; INSERT INTO c DEFAULT VALUES;",
    );
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for engine in ["stream", "native"] {
        let db = format!("into_{engine}");
        p.target.create_database(&db).unwrap();
        let name = format!("sq_{engine}");
        pt_ok(
            h,
            &[
                "create",
                &name,
                "--engine",
                engine,
                "--source",
                &p.source.url(DB),
                "--target",
                &p.target.url(&db),
                "--objects",
                "\"public.a\"",
            ],
        );
        wait_cdc_running(h, &name);
        let seqs = p
            .target
            .psql(
                &db,
                "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE relkind = 'S' AND nspname = 'public'",
            )
            .unwrap();
        assert_eq!(seqs.trim(), "a_id_seq", "{engine}");
        pt_ok(h, &["terminate", &name]);
    }
}

#[test]
fn an_object_filter_that_matches_nothing_is_an_error() {
    let p = empty_pair("CREATE TABLE orders (id int PRIMARY KEY)");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.yml");
    std::fs::write(
        &file,
        format!(
            "name: f\nsource: {}\ntarget: {}\nobjects:\n  include: [public.orders, public.order_itmes]\n",
            p.source.url(DB),
            p.target.url(DB)
        ),
    )
    .unwrap();
    let o = pgtransit(&["check", "objects", "-t", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("public.order_itmes matches no table"), "{out}");
    assert!(!out.contains("public.orders matches"), "{out}");
}

#[test]
fn a_wrong_password_hint_says_where_the_password_came_from() {
    let source = pgsandbox::Builder::new()
        .password("right-one")
        .start()
        .unwrap();
    let url = format!(
        "postgresql://postgres:Wr0ngPass@127.0.0.1:{}/postgres",
        source.port()
    );
    let o = pgtransit(&["check", "config", "--source", &url]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("password authentication failed")
            && out.contains("came from the connection string"),
        "{out}"
    );
    assert!(
        !out.contains("Wr0ngPass"),
        "the password was printed: {out}"
    );
}

#[test]
fn idle_clients_of_the_metrics_endpoint_cannot_starve_the_worker() {
    let p = empty_pair("CREATE TABLE t (id int PRIMARY KEY)");
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let addr = format!("127.0.0.1:{}", free_port());
    start_task_with(h, &p, "mx", "stream", &["--metrics-addr", &addr]);
    let pid = describe_json(h, "mx")["worker_pid"].as_i64().unwrap();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    // 300 clients that connect and send nothing.
    let idle: Vec<std::net::TcpStream> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() > 200, "could not open the idle connections");
    std::thread::sleep(Duration::from_millis(500));
    let during = fds();
    assert!(
        during < before + 40,
        "the worker holds {during} descriptors (it had {before}): idle clients are not capped"
    );
    // The apply goes on meanwhile.
    p.source.psql(DB, "INSERT INTO t VALUES (1)").unwrap();
    let t = Instant::now();
    while p.target.psql(DB, "SELECT count(*) FROM t").unwrap().trim() != "1" {
        assert!(t.elapsed() < Duration::from_secs(30), "the apply stalled");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Idle connections are closed after their time; scrapes are answered again.
    let t = Instant::now();
    loop {
        let body = std::panic::catch_unwind(|| scrape(&addr, "/metrics")).unwrap_or_default();
        if body.contains("pgtransit_lag_bytes") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the metrics endpoint stays unavailable"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(idle);
    pt_ok(h, &["terminate", "mx"]);
}

#[test]
fn a_read_only_target_is_named_as_such() {
    let p = empty_pair("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);");
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // Read-only before the task: check says so.
    p.target
        .psql(
            "postgres",
            &format!("ALTER DATABASE {DB} SET default_transaction_read_only = on"),
        )
        .unwrap();
    let o = pt(
        h,
        &[
            "check",
            "config",
            "--source",
            &p.source.url(DB),
            "--target",
            &p.target.url(DB),
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("read-only"), "{}", text(&o));
    p.target
        .psql(
            "postgres",
            &format!("ALTER DATABASE {DB} RESET default_transaction_read_only"),
        )
        .unwrap();
    // Read-only while the task streams: the apply names the cause, not 25P02.
    start_task(h, &p, "ro", "stream");
    p.target
        .psql(
            "postgres",
            "ALTER SYSTEM SET default_transaction_read_only = on",
        )
        .unwrap();
    p.target
        .psql("postgres", "SELECT pg_reload_conf()")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    p.source
        .psql(
            DB,
            "INSERT INTO t VALUES (2); UPDATE t SET id = 3 WHERE id = 1;",
        )
        .unwrap();
    let t = Instant::now();
    loop {
        let d = describe_json(h, "ro");
        if d["status"] == "failed" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{d:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = text(&pt(h, &["logs", "ro", "--step", "cdc"]));
    assert!(
        log.contains("read-only transaction") && !log.contains("25P02"),
        "{log}"
    );
    p.target
        .psql(
            "postgres",
            "ALTER SYSTEM RESET default_transaction_read_only",
        )
        .unwrap();
    p.target
        .psql("postgres", "SELECT pg_reload_conf()")
        .unwrap();
    pt_ok(h, &["terminate", "ro"]);
}
