//! `pgtransit verify`: counts and checksums in both directions, differing keys named.

mod common;

use common::*;

#[test]
fn checksum_names_rows_changed_deleted_and_added_on_the_target() {
    let p = empty_pair("");
    pgbench_init(&p.source, 3);
    p.source
        .psql(
            DB,
            "ALTER TABLE pgbench_history REPLICA IDENTITY FULL; \
             INSERT INTO pgbench_history SELECT 1, 1, g, 5, now() FROM generate_series(1, 10) g; \
             CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); \
             CREATE TABLE pairs (a text, b int, v jsonb, t timestamptz, m mood, ms mood[], PRIMARY KEY (a, b)); \
             INSERT INTO pairs SELECT 'k' || g, g % 3, jsonb_build_object('g', g), '2024-01-01'::timestamptz + g * interval '1 h', \
             'ok', '{sad,happy}' FROM generate_series(1, 500) g; \
             CREATE DOMAIN positive AS int CHECK (VALUE > 0); \
             CREATE TYPE pair AS (a int, b text); \
             CREATE TABLE types (id int PRIMARY KEY, d date, b bool, by bytea, tz timestamptz, ts timestamp, \
               n numeric, j json, jb jsonb, u uuid, ip inet, ia int[], ta text[], r int4range, m money, \
               iv interval, p positive, c pair, vc varchar(10), ch char(5), f float8, x xml, pt point); \
             INSERT INTO types SELECT g, '2024-02-29'::date + g, g % 2 = 0, decode('00ff', 'hex'), \
               '2024-01-01 12:00+05'::timestamptz + g * interval '1 min', '2024-01-01'::timestamp, g / 3.0, \
               '{\"a\": 1}', '{\"b\": [1, 2]}', md5(g::text)::uuid, '10.0.0.1', ARRAY[g, NULL], ARRAY['x', NULL], \
               int4range(g, g + 10), g, g * interval '1 h', g, ROW(g * 1, 't')::pair, 'v', 'c', g / 7.0, '<a/>', point(g, g) \
             FROM generate_series(1, 300) g; \
             INSERT INTO types (id) VALUES (1000);",
        )
        .unwrap();
    // The enum's values get other oids on the target: the checksum must not hash oids.
    p.target
        .psql(DB, "CREATE TYPE filler AS ENUM ('a', 'b', 'c', 'd', 'e')")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let task = stream_task_file(&p, dir.path(), "v");
    let t = task.to_str().unwrap();
    stream_copy(t);

    let out = ok(&["verify", "-t", t]);
    assert!(
        out.contains("[PASS] \"public\".\"pgbench_accounts\"  source=300000 target=300000"),
        "{out}"
    );
    let out = ok(&[
        "verify",
        "-t",
        t,
        "--mode",
        "checksum",
        "--chunk-rows",
        "50000",
    ]);
    assert!(out.contains("0 differ"), "{out}");

    p.target
        .psql(
            DB,
            "UPDATE pgbench_accounts SET abalance = 7 WHERE aid = 150001; \
             DELETE FROM pgbench_accounts WHERE aid = 3; \
             INSERT INTO pgbench_accounts VALUES (300001, 1, 0, 'extra'); \
             UPDATE pairs SET v = '{\"g\": 0}' WHERE a = 'k10' AND b = 1; \
             UPDATE types SET tz = tz + interval '1 s' WHERE id = 7; \
             UPDATE types SET b = NOT b WHERE id = 8; \
             DELETE FROM pgbench_history WHERE ctid = (SELECT min(ctid) FROM pgbench_history);",
        )
        .unwrap();
    let o = pgtransit(&[
        "verify",
        "-t",
        t,
        "--mode",
        "checksum",
        "--chunk-rows",
        "50000",
        "--rechecks",
        "0",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("\"public\".\"pgbench_accounts\" missing on the target: (3)"),
        "{out}"
    );
    assert!(
        out.contains("\"public\".\"pgbench_accounts\" only on the target: (300001)"),
        "{out}"
    );
    assert!(
        out.contains("\"public\".\"pgbench_accounts\" different: (150001)"),
        "{out}"
    );
    assert!(
        out.contains("\"public\".\"pairs\" different: (k10,1)"),
        "{out}"
    );
    assert!(
        out.contains("\"public\".\"types\" different: (7) (8)"),
        "{out}"
    );
    assert!(
        out.contains("[FAIL] \"public\".\"pgbench_history\"  source=10 target=9"),
        "{out}"
    );
    assert!(
        out.contains("[PASS] \"public\".\"pgbench_branches\""),
        "{out}"
    );
    // With one large chunk per table the differing range is narrowed down in steps.
    let o = pgtransit(&["verify", "-t", t, "--mode", "checksum", "--rechecks", "0"]);
    let big = text(&o);
    for key in [
        "missing on the target: (3)",
        "only on the target: (300001)",
        "different: (150001)",
    ] {
        assert!(big.contains(key), "{big}");
    }
    // Count mode sees the history row and not the changed values.
    let o = pgtransit(&["verify", "-t", t, "--json", "--rechecks", "0"]);
    assert_eq!(o.status.code(), Some(3));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let failed: Vec<&str> = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["pass"] == false)
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["\"public\".\"pgbench_history\""]);
}

/// While the task streams under a write load, checksum verify reports exactly the rows
/// changed behind the apply's back: rows the load changes while they are read are re-read
/// at a consistent point instead of being reported.
#[test]
fn checksum_while_streaming_reports_only_real_differences() {
    let p = empty_pair(
        "CREATE TABLE orders (id serial PRIMARY KEY, v int); \
         INSERT INTO orders (v) SELECT g FROM generate_series(1, 1000) g;",
    );
    pgbench_init(&p.source, 1);
    p.source
        .psql(DB, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let load = Workload::custom(
        &p.source,
        h,
        "\\set aid random(1, 100000)\n\
         UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n\
         INSERT INTO orders (v) VALUES (:aid);\n",
    );
    start_task(h, &p, "live", "stream");
    let passed = pt(
        h,
        &[
            "verify",
            "live",
            "--mode",
            "checksum",
            "--chunk-rows",
            "20000",
        ],
    );
    assert_eq!(passed.status.code(), Some(0), "{}", text(&passed));
    // Behind the apply's back: orders the load never touches again.
    p.target
        .psql(
            DB,
            "UPDATE orders SET v = -1 WHERE id = 5; DELETE FROM orders WHERE id = 6",
        )
        .unwrap();
    let o = pt(
        h,
        &[
            "verify",
            "live",
            "--mode",
            "checksum",
            "--chunk-rows",
            "20000",
        ],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("\"public\".\"orders\" different: (5)\n"),
        "{out}"
    );
    assert!(
        out.contains("\"public\".\"orders\" missing on the target: (6)\n"),
        "{out}"
    );
    assert!(
        out.contains("[PASS] \"public\".\"pgbench_accounts\""),
        "{out}"
    );
    assert!(!out.contains("only on the target"), "{out}");
    load.stop();
    pt_ok(h, &["terminate", "live"]);
}
