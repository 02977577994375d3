//! The native engine end to end: the Pigsty flow through pgtransit's commands on two
//! sandbox clusters under a live pgbench workload, then the same through the generated
//! scripts, and drop-sub with the source down.

mod common;

use common::*;

#[test]
fn native_flow_through_the_commands() {
    let p = hard_pair();
    let dir = tempfile::tempdir().unwrap();
    let task = task_file(&p, dir.path(), "hard");
    let t = task.to_str().unwrap();
    let load = Workload::start(&p.source, dir.path());

    let out = ok(&["copy-schema", "-t", t]);
    assert!(out.contains("pre-data"), "{out}");
    // Secondary indexes and foreign keys wait for post-data; the keys the apply needs do not.
    let idx = p.target.psql(DB, "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog')").unwrap();
    assert!(
        idx.contains("pgbench_accounts_pkey")
            && !idx.contains("doc index")
            && !idx.contains("events_payload"),
        "{idx}"
    );
    assert_eq!(
        p.target
            .psql(DB, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'")
            .unwrap()
            .trim(),
        "0"
    );

    let out = ok(&["create-pub", "-t", t]);
    assert!(
        out.contains("left out: public.scratch_cache is unlogged"),
        "{out}"
    );
    let out = ok(&["create-sub", "-t", t]);
    assert!(out.contains("CREATE SUBSCRIPTION"), "{out}");
    // binary is off: the hard table has an array of a user enum.
    assert!(
        !out.contains("binary = true") && out.contains("streaming = on"),
        "{out}"
    );
    ok(&["progress", "-t", t, "--wait", "120"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    load.stop();

    ok(&["copy-seq", "-t", t, "1000"]);
    let out = ok(&["diff", "-t", t]);
    assert!(
        !out.contains("[FAIL]") && out.contains("[PASS] table"),
        "{out}"
    );
    ok(&["copy-schema", "-t", t, "--section", "post-data"]);
    let idx = p
        .target
        .psql(
            DB,
            "SELECT count(*) FROM pg_indexes WHERE indexname IN ('doc index', 'events_payload')",
        )
        .unwrap();
    assert_eq!(idx.trim(), "2");
    ok(&["drop-sub", "-t", t]);
    ok(&["drop-pub", "-t", t]);
    assert_migrated(&p);
}
