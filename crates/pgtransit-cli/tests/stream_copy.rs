//! The stream engine's initial copy on sandbox clusters: exactly the slot's snapshot under
//! concurrent writes, split tables, and every type the anchors get wrong.

mod common;

use std::process::{Command, Stdio};

use common::*;
use pgsandbox::Builder;

fn pair_with(sql: &str) -> Pair {
    let source = Builder::new().start().expect("source sandbox");
    let target = Builder::new().start().expect("target sandbox");
    source.create_database(DB).unwrap();
    target.create_database(DB).unwrap();
    source.psql(DB, sql).unwrap();
    Pair { source, target }
}

#[test]
fn the_copy_is_exactly_the_slots_snapshot_under_writes() {
    let p = pair_with(
        "CREATE TABLE w (id bigserial PRIMARY KEY, pad text NOT NULL);
         INSERT INTO w (pad) SELECT repeat(md5(g::text), 8) FROM generate_series(1, 150000) g;
         CREATE TABLE small (id int PRIMARY KEY, v text);
         INSERT INTO small SELECT g, 'v' FROM generate_series(1, 1000) g;",
    );
    let (src, dst) = (p.source.url(DB), p.target.url(DB));
    ok(&["copy-schema", "--source", &src, "--target", &dst]);
    // Inserts keep arriving while the slot is created and the copy runs.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ins.sql");
    std::fs::write(&script, "INSERT INTO w (pad) VALUES ('live');\nINSERT INTO small VALUES (1000 + (random() * 1e9)::int, 'live') ON CONFLICT DO NOTHING;\n").unwrap();
    let mut writer = Command::new(p.source.client_program("pgbench"))
        .args(["-n", "-c", "2", "-T", "120", "-f"])
        .arg(&script)
        .arg("-h")
        .arg(p.source.socket_dir())
        .args(["-p", &p.source.port().to_string(), "-U", "postgres", DB])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = ok(&[
        "init-data",
        "--source",
        &src,
        "--target",
        &dst,
        "--table-jobs",
        "3",
        "--split-mb",
        "4",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = writer.kill();
    let _ = writer.wait();
    assert!(out.contains("public.w [1/"), "w was split: {out}");
    assert!(
        out.contains("frozen"),
        "whole tables are loaded with COPY FREEZE: {out}"
    );

    // Every unit was copied in one snapshot: the one exported with the slot.
    let snaps = p
        .target
        .psql(DB, "SELECT count(DISTINCT snapshot) || ' ' || count(DISTINCT snapshot_lsn) || ' ' || bool_and(done) FROM pgtransit.copy_progress")
        .unwrap();
    assert_eq!(snaps.trim(), "1 1 true");
    let snapshot = p
        .target
        .psql(DB, "SELECT min(snapshot) FROM pgtransit.copy_progress")
        .unwrap();
    let consistent = p
        .target
        .psql(DB, "SELECT consistent_lsn FROM pgtransit.copy_state")
        .unwrap();
    let slot = p.source.psql(DB, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pgtransit_adhoc'").unwrap();
    assert_eq!(
        consistent.trim(),
        slot.trim(),
        "the copy starts where the slot does"
    );
    for table in ["w", "small"] {
        // On the source: the rows whose inserting transaction the snapshot sees.
        let expected = p
            .source
            .psql(
                DB,
                &format!(
                    "SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t.id)) FROM {table} t \
                     WHERE pg_visible_in_snapshot(t.xmin::text::xid8, '{}'::pg_snapshot)",
                    snapshot.trim()
                ),
            )
            .unwrap();
        let got = p
            .target
            .psql(DB, &format!("SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t.id)) FROM {table} t"))
            .unwrap();
        assert_eq!(
            expected.trim(),
            got.trim(),
            "{table}: exactly the snapshot's rows"
        );
        let all: i64 = p
            .source
            .psql(DB, &format!("SELECT count(*) FROM {table}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let copied: i64 = got.trim().split(':').next().unwrap().parse().unwrap();
        assert!(all > copied, "{table}: rows committed after the snapshot exist on the source ({all}) and are not copied ({copied})");
    }
    // A rerun finds nothing to do.
    let again = ok(&["init-data", "--source", &src, "--target", &dst]);
    assert!(again.contains("every table is already copied"), "{again}");
}
