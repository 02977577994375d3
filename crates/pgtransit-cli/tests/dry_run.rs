//! `--dry-run` prints the SQL a step will run, per side, and changes nothing: init-data,
//! cdc, switchover and terminate (the native steps' plans are checked in native_flow).

mod common;

use common::*;

fn one(c: &pgsandbox::Cluster, sql: &str) -> String {
    c.psql(DB, sql).unwrap().trim().to_string()
}

/// Every line `-- N. [side] ...` of a printed plan, with the SQL under it.
fn sides(plan: &str) -> Vec<&str> {
    plan.lines()
        .filter_map(|l| l.strip_prefix("-- ").and_then(|r| r.split_once(". [")))
        .map(|(_, rest)| rest.split(']').next().unwrap_or(""))
        .collect()
}

#[test]
fn dry_runs_print_each_sides_sql_and_change_nothing() {
    let p =
        empty_pair("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');");
    p.target
        .psql(DB, "CREATE TABLE t (id int PRIMARY KEY, v text)")
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (src, dst) = (p.source.url(DB), p.target.url(DB));
    pt_ok(
        h,
        &[
            "create",
            "dry",
            "--source",
            &src,
            "--target",
            &dst,
            "--no-start",
        ],
    );
    let nothing = || {
        (
            one(
                &p.source,
                "SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication)",
            ),
            one(
                &p.target,
                "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgtransit') + \
                 (SELECT count(*) FROM pg_replication_origin)",
            ),
        )
    };
    assert_eq!(nothing(), ("0".into(), "0".into()));

    let copy = ok(&["init-data", "--source", &src, "--target", &dst, "--dry-run"]);
    for want in [
        "CREATE_REPLICATION_SLOT",
        "EXPORT_SNAPSHOT",
        "SET TRANSACTION SNAPSHOT",
        "COPY <table> (<columns>) TO STDOUT",
        "CREATE TABLE IF NOT EXISTS pgtransit.copy_progress",
        "INSERT INTO pgtransit.owned_objects",
        "CREATE PUBLICATION",
        "setval",
    ] {
        assert!(
            copy.contains(want),
            "init-data --dry-run lacks {want}:\n{copy}"
        );
    }
    let s = sides(&copy);
    assert!(
        s.contains(&"source") && s.contains(&"target"),
        "{s:?}\n{copy}"
    );

    let cdc = ok(&["cdc", "--source", &src, "--target", &dst, "--dry-run"]);
    for want in [
        "START_REPLICATION SLOT pgtransit_adhoc",
        "pg_replication_origin_create",
        "pg_replication_origin_xact_setup",
        "session_replication_role = replica",
    ] {
        assert!(cdc.contains(want), "cdc --dry-run lacks {want}:\n{cdc}");
    }

    let sw = pt_ok(
        h,
        &["switchover", "dry", "--dry-run", "--verify", "checksum"],
    );
    for want in [
        "ALTER DATABASE",
        "CONNECTION LIMIT 0",
        "REVOKE INSERT, UPDATE, DELETE, TRUNCATE",
        "pg_logical_emit_message(true, 'pgtransit', 'barrier')",
        "pg_replication_origin_progress('pgtransit_dry', true)",
        "md5(",
        "pg_drop_replication_slot",
        "DROP PUBLICATION IF EXISTS \"pgtransit_dry\"",
    ] {
        assert!(
            sw.contains(want),
            "switchover --dry-run lacks {want}:\n{sw}"
        );
    }
    let s = sides(&sw);
    assert!(
        s.contains(&"source") && s.contains(&"target") && s.contains(&"local"),
        "{s:?}\n{sw}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&pt_ok(h, &["switchover", "dry", "--dry-run", "--json"])).unwrap();
    assert_eq!(json["step"], "switchover", "{json:#}");
    assert!(json["actions"].as_array().unwrap().len() > 5, "{json:#}");

    let term = pt_ok(h, &["terminate", "dry", "--dry-run"]);
    for want in [
        "SELECT task FROM pgtransit.owned_objects WHERE kind = 'slot'",
        "pg_drop_replication_slot",
        "pg_replication_origin_drop",
        "DROP PUBLICATION IF EXISTS \"pgtransit_dry\"",
        "DELETE FROM pgtransit.copy_progress WHERE task = 'dry'",
    ] {
        assert!(
            term.contains(want),
            "terminate --dry-run lacks {want}:\n{term}"
        );
    }
    // Nothing ran: no slot, publication, schema or origin, and the task is still there.
    assert_eq!(nothing(), ("0".into(), "0".into()));
    let d = describe_json(h, "dry");
    assert_eq!(d["status"], "created", "{d:#}");
    pt_ok(h, &["terminate", "dry"]);
}
