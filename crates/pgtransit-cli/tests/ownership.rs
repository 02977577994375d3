//! Nothing is dropped that the task did not create. A slot, a publication, a subscription
//! and an origin made by hand under the task's names are kept by `terminate` (and by
//! `drop-pub`), and said to be kept; the task's own objects, marked when it created them,
//! go (the other end-to-end tests check that nothing of a task is left).

mod common;

use common::*;

fn one(c: &pgsandbox::Cluster, db: &str, sql: &str) -> String {
    c.psql(db, sql).unwrap().trim().to_string()
}

#[test]
fn terminate_keeps_what_the_task_did_not_create() {
    let p = empty_pair("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);");
    p.target
        .psql(DB, "CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (src, dst) = (p.source.url(DB), p.target.url(DB));
    for engine in ["stream", "native"] {
        let name = format!("own_{engine}");
        let base = format!("pgtransit_{name}");
        pt_ok(
            h,
            &[
                "create",
                &name,
                "--engine",
                engine,
                "--source",
                &src,
                "--target",
                &dst,
                "--no-start",
            ],
        );
        // Someone else's objects under the task's names.
        p.source
            .psql(DB, &format!("CREATE PUBLICATION {base} FOR TABLE t"))
            .unwrap();
        p.source
            .psql(
                DB,
                &format!("SELECT pg_create_logical_replication_slot('{base}', 'pgoutput')"),
            )
            .unwrap();
        if engine == "stream" {
            p.target
                .psql(
                    DB,
                    &format!("SELECT pg_replication_origin_create('{base}')"),
                )
                .unwrap();
        } else {
            p.target
                .psql(
                    DB,
                    &format!(
                        "CREATE SUBSCRIPTION {base} CONNECTION '{src}' PUBLICATION {base} \
                         WITH (connect = false)"
                    ),
                )
                .unwrap();
        }
        let out = pt_ok(h, &["terminate", &name]);
        assert!(
            out.contains(&format!(
                "kept, not this task's: [source] publication {base}"
            )),
            "{out}"
        );
        if engine == "stream" {
            assert!(
                out.contains(&format!(
                    "kept, not this task's: [source] replication slot {base}"
                )) && out.contains(&format!(
                    "kept, not this task's: [target] replication origin {base}"
                )),
                "{out}"
            );
        } else {
            assert!(
                out.contains(&format!(
                    "kept, not this task's: [target] subscription {base}"
                )),
                "{out}"
            );
        }
        // Everything is still there.
        assert_eq!(
            one(
                &p.source,
                DB,
                &format!(
                    "SELECT (SELECT count(*) FROM pg_publication WHERE pubname = '{base}') || ' ' || \
                            (SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{base}')"
                )
            ),
            "1 1",
            "{engine}: the source's objects are kept"
        );
        let target_kept = if engine == "stream" {
            format!("SELECT count(*) FROM pg_replication_origin WHERE roname = '{base}'")
        } else {
            format!("SELECT count(*) FROM pg_subscription WHERE subname = '{base}'")
        };
        assert_eq!(one(&p.target, DB, &target_kept), "1", "{engine}");
        // The generated native step refuses too.
        if engine == "native" {
            let file = task_file(&p, h, &format!("{name}_file"));
            let text_ = std::fs::read_to_string(&file)
                .unwrap()
                .replace("options:\n", &format!("options:\n  publication: {base}\n"));
            std::fs::write(&file, text_).unwrap();
            let o = pgtransit(&["drop-pub", "-t", file.to_str().unwrap()]);
            assert!(
                !o.status.success() && text(&o).contains("not created by pgtransit"),
                "{}",
                text(&o)
            );
            p.target
                .psql(
                    DB,
                    &format!(
                        "ALTER SUBSCRIPTION {base} SET (slot_name = NONE); DROP SUBSCRIPTION {base}"
                    ),
                )
                .unwrap();
        } else {
            p.target
                .psql(DB, &format!("SELECT pg_replication_origin_drop('{base}')"))
                .unwrap();
        }
        p.source
            .psql(DB, &format!("SELECT pg_drop_replication_slot('{base}')"))
            .unwrap();
        p.source
            .psql(DB, &format!("DROP PUBLICATION {base}"))
            .unwrap();
    }
}

/// A slot marked as another task's is neither read nor dropped by this one.
#[test]
fn a_slot_marked_by_another_task_is_not_consumed_nor_dropped() {
    let p = empty_pair("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);");
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    start_task(h, &p, "own_m", "stream");
    stop_worker(h, "own_m");
    p.target
        .psql(
            DB,
            "UPDATE pgtransit.owned_objects SET task = 'intruder' WHERE kind = 'slot'",
        )
        .unwrap();
    let _ = pt(h, &["start", "own_m"]);
    let t = std::time::Instant::now();
    loop {
        let d = describe_json(h, "own_m");
        if d["status"] == "failed" {
            break;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(30), "{d:#}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let log = text(&pt(h, &["logs", "own_m", "--step", "cdc"]));
    assert!(log.contains("belongs to task intruder"), "{log}");
    let out = pt_ok(h, &["terminate", "own_m"]);
    assert!(
        out.contains("kept, not this task's: [source] replication slot pgtransit_own_m (marked as task intruder's)"),
        "{out}"
    );
    assert_eq!(
        one(
            &p.source,
            DB,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgtransit_own_m'"
        ),
        "1"
    );
}

/// `pgtransit drop-sub` and the generated `drop-sub` script refuse the same subscriptions
/// with the same exit code: one marked as another task's, and one with no pgtransit mark.
#[test]
fn drop_sub_refuses_a_subscription_not_the_tasks_in_the_command_and_the_script() {
    let p = empty_pair("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);");
    p.target
        .psql(DB, "CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    p.source
        .psql(DB, "CREATE PUBLICATION someone_elses FOR TABLE t")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = task_file(&p, dir.path(), "guarded");
    let f = file.to_str().unwrap();
    ok(&["generate", "-t", f]);
    let ctx = dir.path().join("ctx").join("guarded");
    let bin = p.source.bindir().to_path_buf();
    let sub = "pgtransit_guarded";
    let count = || {
        one(
            &p.target,
            DB,
            &format!("SELECT count(*) FROM pg_subscription WHERE subname = '{sub}'"),
        )
    };
    for (comment, said) in [
        (
            Some("created by pgtransit for task other"),
            "was created by pgtransit for task other, not by this task",
        ),
        (None, "not created by pgtransit"),
    ] {
        p.target
            .psql(
                DB,
                &format!(
                    "CREATE SUBSCRIPTION {sub} CONNECTION '{}' PUBLICATION someone_elses \
                     WITH (connect = false)",
                    p.source.url(DB)
                ),
            )
            .unwrap();
        if let Some(c) = comment {
            p.target
                .psql(DB, &format!("COMMENT ON SUBSCRIPTION {sub} IS '{c}'"))
                .unwrap();
        }
        let o = pgtransit(&["drop-sub", "-t", f]);
        assert_eq!(o.status.code(), Some(4), "{}", text(&o));
        assert!(text(&o).contains(said), "{}", text(&o));
        let o = script(&ctx, &bin, "drop-sub", &["-y"]);
        assert_eq!(o.status.code(), Some(4), "{}", text(&o));
        assert!(text(&o).contains(said), "{}", text(&o));
        assert_eq!(count(), "1", "both kept the subscription ({comment:?})");
        p.target
            .psql(
                DB,
                &format!(
                    "ALTER SUBSCRIPTION {sub} SET (slot_name = NONE); DROP SUBSCRIPTION {sub}"
                ),
            )
            .unwrap();
    }
    // The task's own subscription goes, through the script as through the command.
    ok(&["create-pub", "-t", f]);
    ok(&["create-sub", "-t", f]);
    script_ok(&ctx, &bin, "drop-sub", &["-y"]);
    assert_eq!(count(), "0");
    assert_eq!(
        one(
            &p.source,
            DB,
            &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{sub}'")
        ),
        "0",
        "the task's slot is dropped with its subscription"
    );
    ok(&["drop-pub", "-t", f]);
}
