//! What the apply does when it cannot go on: a row missing on the target, a change the
//! target refuses, a server error on the replication stream, a replica identity changed on
//! the source, a source restart under the native engine. Never a silent difference, never
//! an endless retry shown as "running".

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const SCHEMA: &str = "
CREATE TABLE items (id int PRIMARY KEY, v text);
INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 100) g;
CREATE TABLE connection_closed (id int PRIMARY KEY, n int);
INSERT INTO connection_closed VALUES (1, 1);
CREATE TABLE ri (a int NOT NULL, b int NOT NULL);
CREATE UNIQUE INDEX ri_a ON ri (a);
CREATE UNIQUE INDEX ri_b ON ri (b);
ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_a;
INSERT INTO ri VALUES (1, 1), (2, 2);
";

fn describe(home: &Path, name: &str) -> serde_json::Value {
    describe_json(home, name)
}

/// Create a task with extra `create` options and wait until its cdc step runs.
fn start(home: &Path, p: &Pair, name: &str, engine: &str, extra: &[&str]) {
    start_task_with(home, p, name, engine, extra);
}

/// Wait until the task is failed; its describe.
fn wait_failed(home: &Path, name: &str, limit: Duration) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let d = describe(home, name);
        if d["status"] == "failed" {
            return d;
        }
        assert!(
            t.elapsed() < limit,
            "the task is not failed after {limit:?}: {d:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Wait until `sql` returns `want` on the target.
fn wait_target(p: &Pair, sql: &str, want: &str) {
    let t = Instant::now();
    loop {
        let got = p.target.psql(DB, sql).unwrap();
        if got.trim() == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{sql}: {got:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A change the target refuses: a CHECK constraint on the target only, then a source
/// UPDATE that violates it.
fn refuse_a_change(p: &Pair) {
    p.target
        .psql(
            DB,
            "ALTER TABLE connection_closed ADD CONSTRAINT small CHECK (n < 10)",
        )
        .unwrap();
    p.source
        .psql(DB, "UPDATE connection_closed SET n = 50 WHERE id = 1")
        .unwrap();
}

fn reason(d: &serde_json::Value) -> String {
    d["reason"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_row_missing_on_the_target_stops_the_apply_and_names_table_key_and_lsn() {
    let p = empty_pair(SCHEMA);
    let home = tempfile::tempdir().unwrap();
    start(home.path(), &p, "miss", "stream", &[]);
    p.target
        .psql(DB, "DELETE FROM items WHERE id IN (5, 6)")
        .unwrap();
    p.source
        .psql(
            DB,
            "BEGIN; UPDATE items SET v = 'changed' WHERE id BETWEEN 1 AND 10; INSERT INTO items VALUES (1000, 'new'); COMMIT",
        )
        .unwrap();
    let d = wait_failed(home.path(), "miss", Duration::from_secs(30));
    let why = reason(&d);
    assert!(
        why.contains("the target differs from the source")
            && why.contains("updating \"public\".\"items\" found no row (\"id\")=('5')")
            && why.contains("2 rows of that statement are missing")
            && regex_lsn(&why),
        "{why}"
    );
    // Nothing of that transaction was committed: the other rows are unchanged and the
    // insert is not there.
    assert_eq!(
        p.target
            .psql(
                DB,
                "SELECT count(*) FILTER (WHERE v = 'changed') || ' ' || count(*) FILTER (WHERE id = 1000) FROM items"
            )
            .unwrap()
            .trim(),
        "0 0"
    );
    // Repaired by hand, the task goes on from where it stopped.
    p.target
        .psql(DB, "INSERT INTO items VALUES (5, 'v5'), (6, 'v6')")
        .unwrap();
    pt_ok(home.path(), &["start", "miss"]);
    wait_target(
        &p,
        "SELECT count(*) FROM items WHERE v = 'changed' OR id = 1000",
        "11",
    );
    assert_eq!(
        content_hash(&p.source, "items"),
        content_hash(&p.target, "items")
    );
    pt_ok(home.path(), &["terminate", "miss", "--force"]);
}

/// A keyless REPLICA IDENTITY FULL table is changed by set statements: two deletes of two
/// equal rows must find two rows, and one of them gone on the target stops the apply,
/// naming the row, with nothing of the transaction committed.
#[test]
fn an_equal_row_missing_from_a_full_identity_table_stops_the_apply() {
    let p = empty_pair(
        "CREATE TABLE bag (a int, b text); ALTER TABLE bag REPLICA IDENTITY FULL; \
         INSERT INTO bag VALUES (1, 'x'), (1, 'x'), (2, 'y');",
    );
    let home = tempfile::tempdir().unwrap();
    start(home.path(), &p, "bag", "stream", &[]);
    p.target
        .psql(
            DB,
            "DELETE FROM bag WHERE ctid = (SELECT ctid FROM bag WHERE a = 1 LIMIT 1)",
        )
        .unwrap();
    p.source
        .psql(
            DB,
            "BEGIN; UPDATE bag SET b = 'z' WHERE a = 2; DELETE FROM bag WHERE a = 1; COMMIT",
        )
        .unwrap();
    let d = wait_failed(home.path(), "bag", Duration::from_secs(30));
    let why = reason(&d);
    assert!(
        why.contains("the target differs from the source")
            && why.contains(
                "deleting from \"public\".\"bag\" found no row (\"a\", \"b\")=('1', 'x')"
            )
            && !why.contains("rows of that statement are missing")
            && regex_lsn(&why),
        "{why}"
    );
    assert_eq!(
        p.target
            .psql(DB, "SELECT string_agg(a || b, ',' ORDER BY a) FROM bag")
            .unwrap()
            .trim(),
        "1x,2y",
        "nothing of the transaction committed"
    );
    pt_ok(home.path(), &["terminate", "bag", "--force"]);
}

/// `... committing at 0/1A2B3C4)`.
fn regex_lsn(s: &str) -> bool {
    s.split("committing at ").nth(1).is_some_and(|rest| {
        let lsn = rest.split(')').next().unwrap_or("");
        let (hi, lo) = lsn.split_once('/').unwrap_or(("", ""));
        !hi.is_empty()
            && !lo.is_empty()
            && hi.chars().chain(lo.chars()).all(|c| c.is_ascii_hexdigit())
    })
}

#[test]
fn on_missing_row_log_counts_them_in_describe_and_the_metrics() {
    let p = empty_pair(SCHEMA);
    let home = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    start(
        home.path(),
        &p,
        "misslog",
        "stream",
        &["--on-missing-row", "log", "--metrics-addr", &addr],
    );
    p.target
        .psql(DB, "DELETE FROM items WHERE id IN (7, 8)")
        .unwrap();
    p.source
        .psql(
            DB,
            "UPDATE items SET v = 'changed' WHERE id = 7; DELETE FROM items WHERE id = 8; \
             INSERT INTO items VALUES (2000, 'after')",
        )
        .unwrap();
    wait_target(&p, "SELECT count(*) FROM items WHERE id = 2000", "1");
    let t = Instant::now();
    loop {
        let d = describe(home.path(), "misslog");
        assert_ne!(d["status"], "failed", "{d:#}");
        if d["metrics"]["values"]["missing_rows"] == 2 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{d:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let body = scrape(&addr, "/metrics");
    assert!(
        body.lines().any(|l| l == "pgtransit_missing_rows 2"),
        "{body}"
    );
    let logs = pt_ok(home.path(), &["logs", "misslog", "--step", "cdc"]);
    assert!(
        logs.contains("missing row (on_missing_row: log): updating \"public\".\"items\" found no row (\"id\")=('7')"),
        "{logs}"
    );
    pt_ok(home.path(), &["terminate", "misslog", "--force"]);
}

#[test]
fn a_change_the_target_refuses_fails_the_task_at_once_whatever_the_table_is_called() {
    // The table's name holds words ("connection", "closed") that the old retry rule took
    // for a lost connection: it retried for ever while describe said "running".
    let p = empty_pair(SCHEMA);
    let home = tempfile::tempdir().unwrap();
    start(home.path(), &p, "refuse", "stream", &[]);
    refuse_a_change(&p);
    let d = wait_failed(home.path(), "refuse", Duration::from_secs(15));
    let why = reason(&d);
    assert!(
        why.contains("violates check constraint \"small\"") && why.contains("23514"),
        "{why}"
    );
    pt_ok(home.path(), &["terminate", "refuse", "--force"]);
}

#[test]
fn a_server_error_on_the_replication_stream_fails_the_task() {
    let p = empty_pair(SCHEMA);
    let home = tempfile::tempdir().unwrap();
    start(home.path(), &p, "nopub", "stream", &[]);
    p.source
        .psql(DB, "DROP PUBLICATION pgtransit_nopub")
        .unwrap();
    p.source
        .psql(DB, "INSERT INTO items VALUES (3000, 'x')")
        .unwrap();
    let d = wait_failed(home.path(), "nopub", Duration::from_secs(20));
    let why = reason(&d);
    assert!(
        why.contains("publication \"pgtransit_nopub\" does not exist"),
        "{why}"
    );
    pt_ok(home.path(), &["terminate", "nopub", "--force"]);
}

/// PostgreSQL's 100_bugs: the source's replica identity moves to another unique index,
/// which the target does not follow.
fn replica_identity_changed(engine: &str) {
    let p = empty_pair(SCHEMA);
    let home = tempfile::tempdir().unwrap();
    start(home.path(), &p, "ri", engine, &[]);
    p.source
        .psql(
            DB,
            "ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_b; UPDATE ri SET a = 10 WHERE b = 1; \
             DELETE FROM ri WHERE b = 2",
        )
        .unwrap();
    let d = wait_failed(home.path(), "ri", Duration::from_secs(60));
    let why = reason(&d);
    if engine == "stream" {
        assert!(
            why.contains("replica identity changed on the source: \"public\".\"ri\" is now identified by (\"b\")")
                && why.contains("ALTER TABLE \"public\".\"ri\" REPLICA IDENTITY USING INDEX ri_b;"),
            "{why}"
        );
    } else {
        assert!(
            why.contains("failed 3 times within a minute") || why.contains("times within a minute"),
            "{why}"
        );
    }
    // Done as the message says, the task goes on and ends equal.
    p.target
        .psql(DB, "ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_b")
        .unwrap();
    pt_ok(home.path(), &["start", "ri"]);
    wait_target(
        &p,
        "SELECT string_agg(a || ':' || b, ',' ORDER BY a) FROM ri",
        "10:1",
    );
    pt_ok(home.path(), &["terminate", "ri", "--force"]);
}

#[test]
fn a_replica_identity_changed_on_the_source_stops_the_stream_engine_with_the_fix() {
    replica_identity_changed("stream");
}

#[test]
fn a_replica_identity_changed_on_the_source_fails_the_native_task() {
    replica_identity_changed("native");
}

#[test]
fn native_survives_a_source_restart_and_fails_on_a_refused_change() {
    let mut p = empty_pair(SCHEMA);
    let home = tempfile::tempdir().unwrap();
    start(home.path(), &p, "nat", "native", &[]);
    p.source.restart().unwrap();
    p.source
        .psql(
            DB,
            "INSERT INTO items SELECT g, 'after restart' FROM generate_series(101, 5000) g",
        )
        .unwrap();
    wait_target(&p, "SELECT count(*) FROM items", "5000");
    let d = describe(home.path(), "nat");
    assert_eq!(d["status"], "running", "{d:#}");
    // describe of a native task reads nothing of pgtransit's on the target (which has no
    // pgtransit schema): no ERROR lands in the target's log.
    let log = std::fs::read_to_string(p.target.log_file()).unwrap_or_default();
    assert!(!log.contains("copy_progress"), "{log}");
    // A change the target refuses: the subscription retries for ever, the task fails.
    refuse_a_change(&p);
    let d = wait_failed(home.path(), "nat", Duration::from_secs(60));
    let why = reason(&d);
    assert!(
        why.contains("times within a minute") && why.contains("pgtransit_nat"),
        "{why}"
    );
    pt_ok(home.path(), &["terminate", "nat", "--force"]);
    nothing_left(&p);
}

#[test]
fn a_server_error_at_start_replication_fails_the_task_instead_of_retrying() {
    let p = empty_pair(SCHEMA);
    let home = tempfile::tempdir().unwrap();
    start(home.path(), &p, "noslot", "stream", &[]);
    p.source
        .psql(DB, "INSERT INTO items VALUES (4000, 'applied')")
        .unwrap();
    wait_target(&p, "SELECT count(*) FROM items WHERE id = 4000", "1");
    // Stop the worker gracefully, lose the slot behind its back, start it again.
    stop_worker(home.path(), "noslot");
    p.source
        .psql(DB, "SELECT pg_drop_replication_slot('pgtransit_noslot')")
        .unwrap();
    // The worker fails at once, and `start` says so.
    let o = pt(home.path(), &["start", "noslot"]);
    assert!(
        !o.status.success() && text(&o).contains("does not exist (SQLSTATE 42704)"),
        "{}",
        text(&o)
    );
    let d = wait_failed(home.path(), "noslot", Duration::from_secs(20));
    let why = reason(&d);
    assert!(
        why.contains("replication slot \"pgtransit_noslot\" does not exist"),
        "{why}"
    );
    pt_ok(home.path(), &["terminate", "noslot", "--force"]);
}

#[test]
fn terminate_goes_on_past_an_error_and_says_what_is_left() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let p = empty_pair(SCHEMA);
    let home = tempfile::tempdir().unwrap();
    start(home.path(), &p, "term", "stream", &[]);
    // Stop the worker, then hold the task's replication origin in another session on
    // the target: dropping it fails ("is already active").
    stop_worker(home.path(), "term");
    let mut holder = Command::new(p.target.client_program("psql"))
        .args(["-X", "-q", "-h"])
        .arg(p.target.socket_dir())
        .args([
            "-p",
            &p.target.port().to_string(),
            "-U",
            "postgres",
            "-d",
            DB,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    writeln!(
        stdin,
        "SELECT pg_replication_origin_session_setup('pgtransit_term');"
    )
    .unwrap();
    stdin.flush().unwrap();
    // psql runs it at once; give it a moment.
    std::thread::sleep(Duration::from_secs(1));
    let o = pt(home.path(), &["terminate", "term"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(5), "{out}");
    // The rest went: the slot and the publication on the source.
    assert!(
        out.contains("dropped [source] replication slot pgtransit_term"),
        "{out}"
    );
    assert!(
        out.contains("dropped [source] publication pgtransit_term"),
        "{out}"
    );
    assert!(
        out.contains("replication origin pgtransit_term")
            && out.contains("pg_replication_origin_drop"),
        "{out}"
    );
    assert_eq!(leftovers(&p.source), "0 0 0");
    assert_eq!(describe(home.path(), "term")["status"], "terminating");
    // Released, a second terminate finishes.
    drop(stdin);
    let _ = holder.wait();
    let out = pt_ok(home.path(), &["terminate", "term"]);
    assert!(out.contains("terminated"), "{out}");
    nothing_left(&p);
}

#[test]
fn a_table_without_replica_identity_is_never_published_even_without_precheck() {
    let p = empty_pair(
        "CREATE TABLE nokey (a int, b text); INSERT INTO nokey VALUES (1, 'x');
         CREATE TABLE keyed (id int PRIMARY KEY);",
    );
    let home = tempfile::tempdir().unwrap();
    let (src, dst) = (p.source.url(DB), p.target.url(DB));
    pt_ok(
        home.path(),
        &[
            "create",
            "noid",
            "--source",
            &src,
            "--target",
            &dst,
            "--steps",
            "precheck=false,init-struct=true,init-data=true,cdc=true",
        ],
    );
    let d = wait_failed(home.path(), "noid", Duration::from_secs(30));
    let why = reason(&d);
    assert!(
        why.contains("not publishing")
            && why.contains("\"public\".\"nokey\"")
            && why.contains("REPLICA IDENTITY FULL"),
        "{why}"
    );
    // The application's writes on the source still work: nothing was published.
    p.source
        .psql(DB, "UPDATE nokey SET b = 'y'; DELETE FROM nokey")
        .unwrap();
    assert_eq!(leftovers(&p.source), "0 0 0");
    pt_ok(home.path(), &["terminate", "noid", "--force"]);
}
