//! KubeBlocks' `kbcli migration` document (seeds/004), its commands copied as written with
//! only hosts and ports changed: create with `--template apecloud-pg2pg`, kbcli's
//! `user:password@host:port/db` connections and `--migration-object`; then list, describe,
//! `logs --step cdc | grep current_position`, terminate. The password is in no output and
//! no file but the task's private password file.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use pgsandbox::{Builder, Cluster};

const KB_DB: &str = "db_test";

fn prepare(c: &Cluster, with_rows: bool) {
    c.create_database(KB_DB).unwrap();
    c.psql(
        KB_DB,
        "CREATE ROLE \"user\" LOGIN SUPERUSER REPLICATION PASSWORD '123456'",
    )
    .unwrap();
    if with_rows {
        c.psql(
            KB_DB,
            "CREATE TABLE table_test_1 (id int PRIMARY KEY, v text);
             CREATE TABLE table_test_2 (id int PRIMARY KEY, v text);
             CREATE TABLE table_test_3 (id int PRIMARY KEY, v text);
             INSERT INTO table_test_1 SELECT g, 'a' FROM generate_series(1, 100) g;
             INSERT INTO table_test_2 SELECT g, 'b' FROM generate_series(1, 50) g;
             INSERT INTO table_test_3 SELECT g, 'c' FROM generate_series(1, 10) g;",
        )
        .unwrap();
    }
}

/// Every file under `dir`, but the task's password file.
fn files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_none_or(|x| x != "pgpass") {
            out.push((
                p.display().to_string(),
                std::fs::read(&p).unwrap_or_default(),
            ));
        }
    }
}

#[test]
fn the_kbcli_documents_commands_work_as_written() {
    let source = Builder::new().start().unwrap();
    let target = Builder::new().start().unwrap();
    prepare(&source, true);
    prepare(&target, false);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let src = format!("user:123456@127.0.0.1:{}/db_test", source.port());
    let sink = format!("user:123456@127.0.0.1:{}/db_test", target.port());
    // As in the document: kbcli migration create mytask --template apecloud-pg2pg
    //   --source user:123456@127.0.0.1:5432/db_test --sink user:123456@127.0.0.2:5432/db_test
    //   --migration-object '"public.table_test_1","public.table_test_2"'
    let mut outputs = vec![pt_ok(
        h,
        &[
            "create",
            "mytask",
            "--template",
            "apecloud-pg2pg",
            "--source",
            &src,
            "--sink",
            &sink,
            "--migration-object",
            "\"public.table_test_1\",\"public.table_test_2\"",
        ],
    )];
    wait_cdc_running(h, "mytask");
    assert_eq!(describe_json(h, "mytask")["engine"], "stream");
    source
        .psql(KB_DB, "INSERT INTO table_test_1 VALUES (1000, 'streamed'); INSERT INTO table_test_3 VALUES (1000, 'not moved')")
        .unwrap();
    let t = Instant::now();
    while target
        .psql(KB_DB, "SELECT count(*) FROM table_test_1 WHERE id = 1000")
        .unwrap()
        .trim()
        != "1"
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the insert never arrived"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The two named tables, equal; the third one not migrated.
    for tb in ["table_test_1", "table_test_2"] {
        let q = format!(
            "SELECT count(*) || ':' || md5(string_agg(id || v, ',' ORDER BY id)) FROM {tb}"
        );
        assert_eq!(
            source.psql(KB_DB, &q).unwrap(),
            target.psql(KB_DB, &q).unwrap(),
            "{tb}"
        );
    }
    assert_eq!(
        target
            .psql(KB_DB, "SELECT to_regclass('public.table_test_3') IS NULL")
            .unwrap()
            .trim(),
        "t"
    );
    outputs.push(pt_ok(h, &["list"]));
    // The metrics are published every 2 s once cdc runs.
    let t = Instant::now();
    let describe = loop {
        let d = pt_ok(h, &["describe", "mytask"]);
        if d.contains("CDC Metrics") {
            break d;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{d}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(describe.contains("applied LSN"), "{describe}");
    outputs.push(describe);
    // kbcli migration logs mytask --step cdc | grep current_position
    let t = Instant::now();
    loop {
        let logs = pt_ok(h, &["logs", "mytask", "--step", "cdc"]);
        let line = logs.lines().find(|l| l.contains("current_position"));
        if let Some(l) = line {
            assert!(l.contains("lsn=") && l.contains("timestamp="), "{l}");
            outputs.push(logs);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no current_position: {logs}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    outputs.push(pt_ok(h, &["terminate", "mytask"]));
    for o in &outputs {
        assert!(!o.contains("123456"), "the password was printed: {o}");
    }
    let mut all = Vec::new();
    files(h, &mut all);
    for (name, bytes) in all {
        assert!(
            !String::from_utf8_lossy(&bytes).contains("123456"),
            "the password is in {name}"
        );
    }
}

#[test]
fn kbcli_connections_parse_and_nothing_else_becomes_a_database_name() {
    let home = tempfile::tempdir().unwrap();
    let o = pt(
        home.path(),
        &[
            "create",
            "bad",
            "--no-start",
            "--source",
            "10.0.0.1:5432/db",
            "--sink",
            "db2",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("neither a URL"), "{}", text(&o));
    let o = pt(
        home.path(),
        &[
            "create",
            "bad",
            "--no-start",
            "--template",
            "nope",
            "--source",
            "a@h/db",
            "--sink",
            "b@h/db",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("apecloud-pg2pg"), "{}", text(&o));
}

#[test]
fn tasks_that_could_never_work_or_would_share_objects_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec!["create", name, "--no-start"];
        args.extend_from_slice(extra);
        pt(h, &args)
    };
    let (a, b) = (
        "postgresql://u@127.0.0.1:5601/a",
        "postgresql://u@127.0.0.1:5602/b",
    );
    assert!(create("dup1", &["--source", a, "--sink", b])
        .status
        .success());
    // `Dup1` and `dup-1`... would share dup1's slot, publication and origin names.
    for name in ["Dup1", "DUP1"] {
        let o = create(name, &["--source", a, "--sink", b]);
        assert_eq!(o.status.code(), Some(4), "{name}: {}", text(&o));
        assert!(text(&o).contains("task dup1 already uses"), "{}", text(&o));
    }
    let refused: &[(&[&str], &str)] = &[
        (&["--source", "", "--sink", b], "--source is empty"),
        (
            &["--source", "postgresql://u@127.0.0.1:0/a", "--sink", b],
            "port 0",
        ),
        (&["--source", a, "--sink", a], "the same database"),
        (
            &[
                "--source",
                a,
                "--sink",
                b,
                "--steps",
                "precheck=false,init-struct=false,init-data=false,cdc=false",
            ],
            "every step off",
        ),
    ];
    for (i, (args, why)) in refused.iter().enumerate() {
        let o = create(&format!("bad{i}"), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(why), "{args:?}: {}", text(&o));
    }
}
