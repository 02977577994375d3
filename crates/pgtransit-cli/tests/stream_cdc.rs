//! The stream engine end to end: copy from the slot's snapshot, then stream and apply the
//! changes of a mixed workload that ran all along; every table ends equal by content hash.

mod common;

use std::process::{Command, Stdio};

use std::time::Duration;

use common::*;

const EXTRA: &str = "
CREATE TABLE keyed (id int PRIMARY KEY, v text, n int);
INSERT INTO keyed SELECT g, 'k' || g, g FROM generate_series(1, 5000) g;
CREATE TABLE wiped (id int PRIMARY KEY, v text);
INSERT INTO wiped SELECT g, 'w' FROM generate_series(1, 1000) g;
";

/// Changes beyond the pgbench workload: key updates, a truncate, a large transaction,
/// updates that leave a TOASTed column unchanged, deletes on a FULL-identity table; the
/// large transaction inserts one million rows.
const MIXED: &str = "
BEGIN;
UPDATE keyed SET id = id + 100000 WHERE id % 7 = 0;
UPDATE keyed SET v = NULL, n = n * 2 WHERE id % 5 = 0;
DELETE FROM keyed WHERE id % 11 = 0;
COMMIT;
TRUNCATE wiped;
INSERT INTO wiped SELECT g, 'after truncate' FROM generate_series(1, 300) g;
INSERT INTO keyed SELECT g, repeat('x', 50), g FROM generate_series(200001, 1200000) g;
UPDATE \"My Schema\".\"Ünïcødé Tàble\" SET amount = amount + 1000 WHERE big IS NOT NULL;
DELETE FROM _app.nokey WHERE b IS NULL AND a % 2 = 0;
UPDATE _app.nokey SET b = 'was null' WHERE b IS NULL;
";

/// Each table's content is the same on both sides.
fn assert_equal_tables(p: &Pair, tables: &[&str]) {
    for table in tables {
        assert_eq!(
            content_hash(&p.source, table),
            content_hash(&p.target, table),
            "content of {table}"
        );
    }
}

#[test]
fn copy_then_stream_a_mixed_workload_to_equal_tables() {
    let p = hard_pair();
    p.source.psql(DB, EXTRA).unwrap();
    // pgbench_history has no key: give it FULL identity as `check --fix` would.
    p.source
        .psql(DB, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("t.yml");
    std::fs::write(
        &task,
        format!(
            "name: cdc\nsource: {}\ntarget: {}\n",
            p.source.url(DB),
            p.target.url(DB)
        ),
    )
    .unwrap();
    let t = task.to_str().unwrap();

    ok(&["init-struct", "-t", t]);
    let load = Workload::start(&p.source, dir.path());
    std::thread::sleep(Duration::from_millis(500));
    ok(&["init-data", "-t", t, "--table-jobs", "2"]);
    ok(&["init-struct", "-t", t, "--section", "post-data"]);

    // Apply in the background while the workload and the mixed changes run; stop it with
    // SIGTERM once, restart, and finish.
    let log = dir.path().join("cdc.log");
    let mut cdc = Command::new(env!("CARGO_BIN_EXE_pgtransit"))
        .args(["cdc", "-t", t])
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("cdc.err")).unwrap(),
        ))
        .spawn()
        .unwrap();
    p.source.psql(DB, MIXED).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    unsafe { libc::kill(cdc.id() as i32, libc::SIGTERM) };
    let status = cdc.wait().unwrap();
    assert!(
        status.success(),
        "cdc stops cleanly on SIGTERM ({status}):\n{}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string(dir.path().join("cdc.err")).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_secs(1));
    load.stop();
    let out = ok(&["cdc", "-t", t, "--until", "now"]);
    assert!(out.contains("cdc: applied"), "{out}");

    let mut tables: Vec<&str> = TABLES.to_vec();
    tables.extend(["public.keyed", "public.wiped"]);
    assert_equal_tables(&p, &tables);
    assert_eq!(
        p.target
            .psql(DB, "SELECT count(*) FROM wiped")
            .unwrap()
            .trim(),
        "300"
    );
}

/// Tables without triggers that fire in the apply session get batched, reordered against
/// other tables and have repeated updates of one row folded into the last; a table whose
/// trigger is enabled ALWAYS on the target sees every change, one by one, in source order.
#[test]
fn triggers_that_fire_in_the_apply_see_every_change_in_order() {
    let p = empty_pair(
        "CREATE TABLE audited (id int PRIMARY KEY, v int); \
         CREATE TABLE plain (id int PRIMARY KEY, v int); \
         INSERT INTO audited VALUES (1, 0); INSERT INTO plain SELECT g, 0 FROM generate_series(1, 10) g;",
    );
    let dir = tempfile::tempdir().unwrap();
    let task = stream_task_file(&p, dir.path(), "order");
    let t = task.to_str().unwrap();
    stream_copy(t);
    // Only on the target: a log the trigger writes, in the order the changes arrive.
    p.target
        .psql(
            DB,
            "CREATE TABLE seen (seq bigserial, v int); \
             CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS \
             $$BEGIN INSERT INTO seen (v) VALUES (NEW.v); RETURN NEW; END$$; \
             CREATE TRIGGER note AFTER UPDATE ON audited FOR EACH ROW EXECUTE FUNCTION note(); \
             ALTER TABLE audited ENABLE ALWAYS TRIGGER note;",
        )
        .unwrap();
    // One transaction and many small ones, each touching both tables, the same rows again
    // and again.
    let mut sql = String::from("BEGIN;\n");
    for i in 1..=50 {
        sql.push_str(&format!(
            "UPDATE audited SET v = {i}; UPDATE plain SET v = {i} WHERE id = {};\n",
            i % 10 + 1
        ));
    }
    sql.push_str("COMMIT;\n");
    for i in 51..=100 {
        sql.push_str(&format!(
            "UPDATE audited SET v = {i}; UPDATE plain SET v = v + {i};\n"
        ));
    }
    p.source.psql(DB, &sql).unwrap();
    ok(&["cdc", "-t", t, "--until", "now"]);

    let order = p
        .target
        .psql(DB, "SELECT string_agg(v::text, ',' ORDER BY seq) FROM seen")
        .unwrap();
    let want: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    assert_eq!(
        order.trim(),
        want.join(","),
        "the trigger saw every update in order"
    );
    assert_equal_tables(&p, &["public.audited", "public.plain"]);
}

/// Long runs of inserts go through COPY: values with the characters COPY treats specially,
/// NULLs, arrays and JSON arrive intact, also when a change to another table that must go
/// out at once ends the COPY in the middle of the run, and when the run is idempotent.
#[test]
fn long_insert_runs_arrive_intact_through_copy() {
    let p = empty_pair(
        "CREATE TABLE bulk (id int PRIMARY KEY, t text, a text[], j jsonb, b bytea); \
         CREATE TABLE other (id int PRIMARY KEY, v int); INSERT INTO other VALUES (1, 0);",
    );
    let dir = tempfile::tempdir().unwrap();
    let task = stream_task_file(&p, dir.path(), "bulk");
    let t = task.to_str().unwrap();
    stream_copy(t);
    let rows = |from: i32, to: i32| {
        format!(
            "INSERT INTO bulk SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE \
             E'tab\\there\\nnew line\\\\back\\rcr ' || g END, \
             ARRAY['a\\b', NULL, E'c\\td', '\"q\"'], \
             jsonb_build_object('k', E'v\\n\\\\', 'n', g), \
             decode('00ff5c0a09', 'hex') FROM generate_series({from}, {to}) g;"
        )
    };
    p.source
        .psql(
            DB,
            &format!(
                "BEGIN; {} UPDATE other SET id = 2; {} COMMIT; {}",
                rows(1, 3000),
                rows(3001, 6000),
                rows(6001, 7000)
            ),
        )
        .unwrap();
    ok(&["cdc", "-t", t, "--until", "now"]);
    assert_equal_tables(&p, &["public.bulk", "public.other"]);
    assert_eq!(
        p.target
            .psql(DB, "SELECT count(*), count(t) FROM bulk")
            .unwrap()
            .trim(),
        "7000|6000"
    );
}

/// A REPLICA IDENTITY FULL table without a unique index is a multiset of rows, and its
/// changes go out as set statements: equal rows each changed once (never all of them, never
/// one twice), rows the same transaction added and then changed (chains through new
/// values, swaps), NULLs, a column without an equality operator (json), unchanged TOASTed
/// values, runs of inserts long enough for COPY. A FULL table with a unique index takes
/// the row-by-row path. Both end equal to the source, and the batched table is scanned
/// once per statement, not once per changed row.
#[test]
fn full_identity_tables_change_as_multisets() {
    let big =
        "(SELECT string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 200) g)";
    let p = empty_pair(&format!(
        "CREATE TABLE bag (a int, b text, j json, t text); \
         ALTER TABLE bag REPLICA IDENTITY FULL; \
         INSERT INTO bag SELECT g % 50, CASE WHEN g % 9 = 0 THEN NULL ELSE 'x' END, \
           json_build_object('g', g % 50), NULL FROM generate_series(1, 2000) g; \
         INSERT INTO bag SELECT 1000 + g, 'toasted', NULL, {big} FROM generate_series(1, 3) g; \
         CREATE TABLE uniq (a int, b text); CREATE UNIQUE INDEX ON uniq (a); \
         ALTER TABLE uniq REPLICA IDENTITY FULL; \
         INSERT INTO uniq SELECT g, 'u' FROM generate_series(1, 100) g;"
    ));
    let dir = tempfile::tempdir().unwrap();
    let task = stream_task_file(&p, dir.path(), "bag");
    let t = task.to_str().unwrap();
    stream_copy(t);
    // The rows of one value, physically one of the duplicates.
    let one = |cond: &str| format!("ctid = (SELECT ctid FROM bag WHERE {cond} LIMIT 1)");
    let mut sql = format!(
        "BEGIN;\n\
         UPDATE bag SET b = 'one of forty' WHERE {};\n\
         DELETE FROM bag WHERE {};\n\
         DELETE FROM bag WHERE {};\n\
         INSERT INTO bag VALUES (500, 'chain', NULL, NULL), (500, 'chain', NULL, NULL);\n\
         UPDATE bag SET b = 'chain 2' WHERE {};\n\
         UPDATE bag SET b = 'chain 3' WHERE b = 'chain 2';\n\
         DELETE FROM bag WHERE {};\n\
         INSERT INTO bag VALUES (600, 's', NULL, NULL), (601, 's', NULL, NULL);\n\
         UPDATE bag SET a = CASE a WHEN 600 THEN 601 ELSE 600 END WHERE a IN (600, 601);\n\
         UPDATE bag SET b = 'was null' WHERE b IS NULL AND a % 2 = 0;\n\
         UPDATE bag SET j = json_build_object('changed', a) WHERE a = 7;\n\
         UPDATE bag SET a = a + 1 WHERE b = 'toasted';\n\
         UPDATE bag SET b = 'toasted twice' WHERE a = 1002;\n\
         DELETE FROM bag WHERE a = 1004;\n\
         COMMIT;\n",
        one("a = 3 AND b = 'x'"),
        one("a = 4 AND b = 'x'"),
        one("a = 4 AND b = 'x'"),
        one("a = 500"),
        one("a = 500 AND b = 'chain'"),
    );
    // Many small transactions changing the same rows again and again, FULL and unique.
    for i in 0..300 {
        sql.push_str(&format!(
            "UPDATE bag SET b = b || 'y' WHERE a = {} AND b LIKE 'x%'; \
             INSERT INTO bag VALUES ({}, 'x', NULL, NULL); \
             UPDATE uniq SET b = b || 'v' WHERE a = {};\n",
            i % 50,
            i % 50,
            i % 100 + 1
        ));
    }
    // A run of inserts beyond one statement inside a run of changes: COPY.
    sql.push_str(
        "BEGIN; DELETE FROM bag WHERE a = 49; \
         INSERT INTO bag SELECT g % 50, E'copy\\t' || g, NULL, NULL FROM generate_series(1, 3000) g; \
         UPDATE bag SET b = 'after copy' WHERE b = E'copy\\t7'; COMMIT;\n",
    );
    p.source.psql(DB, &sql).unwrap();
    ok(&["cdc", "-t", t, "--until", "now"]);
    assert_equal_tables(&p, &["public.bag", "public.uniq"]);
    assert_eq!(
        p.target
            .psql(DB, "SELECT count(*) FILTER (WHERE b = 'one of forty'), count(*) FILTER (WHERE a = 4 AND b = 'x') FROM bag")
            .unwrap()
            .trim(),
        p.source
            .psql(DB, "SELECT 1, count(*) FILTER (WHERE a = 4 AND b = 'x') FROM bag")
            .unwrap()
            .trim(),
        "one of the equal rows updated, two deleted"
    );
    // Over 900 changed rows of bag found by far fewer scans (the apply session's
    // statistics reach the shared ones when it ends).
    let scans: i64 = p
        .target
        .psql(
            DB,
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'bag'",
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("bag scanned {scans} times");
    assert!(scans < 100, "bag scanned {scans} times");
}

/// Equal is not always the same: numeric 1.0 = 1.00 and float -0 = 0. Under FULL identity
/// the row the source changed is the one written like its old values, on the batched path
/// and on the row-by-row one (here: a table with a trigger that fires in the apply).
#[test]
fn equal_but_differently_written_rows_change_the_one_the_source_changed() {
    let rows = "INSERT INTO {t} VALUES (1.0, 0), (1.00, 0), (1.000, '-0'), (1.0000, 0);";
    let p = empty_pair(&format!(
        "CREATE TABLE num (x numeric, f float8); ALTER TABLE num REPLICA IDENTITY FULL; {} \
         CREATE TABLE numt (x numeric, f float8); ALTER TABLE numt REPLICA IDENTITY FULL; {}",
        rows.replace("{t}", "num"),
        rows.replace("{t}", "numt")
    ));
    let dir = tempfile::tempdir().unwrap();
    let task = stream_task_file(&p, dir.path(), "num");
    let t = task.to_str().unwrap();
    stream_copy(t);
    p.target
        .psql(
            DB,
            "CREATE FUNCTION pass() RETURNS trigger LANGUAGE plpgsql AS \
             $$BEGIN RETURN coalesce(NEW, OLD); END$$; \
             CREATE TRIGGER pass BEFORE UPDATE OR DELETE ON numt FOR EACH ROW EXECUTE FUNCTION pass(); \
             ALTER TABLE numt ENABLE ALWAYS TRIGGER pass;",
        )
        .unwrap();
    let mut sql = String::new();
    for table in ["num", "numt"] {
        sql.push_str(&format!(
            "DELETE FROM {table} WHERE x::text = '1.00'; \
             BEGIN; UPDATE {table} SET f = 6 WHERE f::text = '-0'; \
             DELETE FROM {table} WHERE x::text = '1.0000'; COMMIT; \
             UPDATE {table} SET f = 5 WHERE x::text = '1.0';\n"
        ));
    }
    p.source.psql(DB, &sql).unwrap();
    ok(&["cdc", "-t", t, "--until", "now"]);
    assert_equal_tables(&p, &["public.num", "public.numt"]);
    assert_eq!(
        p.target
            .psql(
                DB,
                "SELECT string_agg(x || ':' || f, ',' ORDER BY x::text) FROM num"
            )
            .unwrap()
            .trim(),
        "1.0:5,1.000:6",
    );
}
