//! A stream copy killed with SIGKILL in the middle of a split table, of a split table
//! without a key, and of the index builds, while the source takes writes (inserts, updates,
//! key changes, deletes), resumes; after the change stream catches up every table is equal
//! to the source.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pgsandbox::{Builder, Cluster};

const SCHEMA: &str = "
CREATE TABLE big (id bigint PRIMARY KEY, k int NOT NULL, pad text NOT NULL);
INSERT INTO big SELECT g, g % 1000, repeat(md5(g::text), 4) FROM generate_series(1, 400000) g;
CREATE INDEX big_k ON big (k);
CREATE INDEX big_pad ON big (pad);
CREATE UNIQUE INDEX big_k_id ON big (k, id);
CREATE INDEX big_expr ON big (lower(pad)) WHERE k < 500;
CREATE TABLE keyless (a int, b text);
ALTER TABLE keyless REPLICA IDENTITY FULL;
INSERT INTO keyless SELECT g, repeat('x', 100) FROM generate_series(1, 150000) g;
CREATE TABLE child (id int PRIMARY KEY, big_id bigint REFERENCES big, note text);
INSERT INTO child SELECT g, g, 'c' FROM generate_series(1, 1000) g;
";

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pgtransit"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn scalar(c: &Cluster, sql: &str) -> i64 {
    c.psql(DB, sql).unwrap().trim().parse().unwrap_or(-1)
}

/// SIGKILL `child` as soon as `ready` holds; false if it finished first.
fn kill_when(mut child: Child, ready: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if ready() {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the run neither finished nor reached the kill point");
}

#[test]
fn a_killed_copy_and_index_build_resume_to_an_exact_copy() {
    let source = Builder::new().start().unwrap();
    let target = Builder::new().start().unwrap();
    source.create_database(DB).unwrap();
    target.create_database(DB).unwrap();
    source.psql(DB, SCHEMA).unwrap();
    let (src, dst) = (source.url(DB), target.url(DB));
    let base = ["--source", src.as_str(), "--target", dst.as_str()];
    let with = |extra: &[&str], first: &str| -> Vec<String> {
        let mut v = vec![first.to_string()];
        v.extend(base.iter().map(|s| s.to_string()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |v: &[String]| ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let start = |v: &[String]| spawn(&v.iter().map(String::as_str).collect::<Vec<_>>());

    run(&with(&[], "init-struct"));
    let dir = tempfile::tempdir().unwrap();
    let load = Workload::custom(
        &source,
        dir.path(),
        "\\set r random(1, 400000)\n\
         UPDATE big SET k = k + 1 WHERE id = :r;\n\
         UPDATE big SET id = id + 10000000 WHERE id = :r + 1 AND id < 10000000;\n\
         DELETE FROM big WHERE id = :r + 2;\n\
         INSERT INTO big VALUES (20000000 + :r, 1, 'new') ON CONFLICT DO NOTHING;\n\
         INSERT INTO keyless VALUES (:r, 'live');\n",
    );
    assert_eq!(
        scalar(
            &target,
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'big'"
        ),
        0,
        "no index before the load"
    );

    let copy = with(&["--table-jobs", "1", "--split-mb", "2"], "init-data");
    let done = |rel: &str| {
        format!("SELECT count(*) FILTER (WHERE done) || ' ' || count(*) FROM pgtransit.copy_progress WHERE relation = '{rel}'")
    };
    let partly = |rel: &str| {
        let q = done(rel);
        let target = &target;
        move || {
            let out = target.psql(DB, &q).unwrap_or_default();
            let v: Vec<i64> = out
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            v.len() == 2 && v[0] >= 2 && v[0] < v[1]
        }
    };
    assert!(
        kill_when(start(&copy), partly("public.big")),
        "killed inside the split table big"
    );
    assert!(
        kill_when(start(&copy), partly("public.keyless")),
        "killed inside the split keyless table"
    );
    let out = run(&copy);
    assert!(out.contains("resuming"), "{out}");
    load.stop();
    assert!(
        scalar(&source, "SELECT count(*) FROM keyless WHERE b = 'live'") > 0,
        "the load ran during the copy"
    );
    assert!(out.contains("public.keyless was partly copied"), "{out}");

    let post = with(
        &["--section", "post-data", "--index-jobs", "1"],
        "init-struct",
    );
    let some_indexes = || {
        let n = scalar(
            &target,
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'big'",
        );
        (1..5).contains(&n)
    };
    assert!(
        kill_when(start(&post), some_indexes),
        "killed during the index builds"
    );
    run(&post);
    // The changes made during the copy, applied by the change stream from the slot's
    // consistent point; each table skips what its own snapshot already holds.
    run(&with(&["--until", "now"], "cdc"));
    let shape = "SELECT string_agg(indexname || ':' || indexdef, E'\\n' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public'";
    assert_eq!(
        source.psql(DB, shape).unwrap(),
        target.psql(DB, shape).unwrap(),
        "every index, as on the source"
    );
    let cons = "SELECT string_agg(conname || ':' || contype::text || ':' || pg_get_constraintdef(oid), E'\\n' ORDER BY conname) FROM pg_constraint WHERE connamespace = 'public'::regnamespace";
    assert_eq!(
        source.psql(DB, cons).unwrap(),
        target.psql(DB, cons).unwrap(),
        "every constraint, as on the source"
    );
    for t in ["big", "keyless", "child"] {
        assert_eq!(
            content_hash(&source, t),
            content_hash(&target, t),
            "{t} at the end"
        );
    }
}
