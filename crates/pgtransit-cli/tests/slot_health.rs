//! A task whose worker is gone does not look healthy: `describe` and `list` say the lag is
//! unknown (and how much WAL waits in the slot), `describe` warns while the slot nears
//! `max_slot_wal_keep_size` and says so once the source has invalidated it.

mod common;

use common::*;
use pgsandbox::Builder;

#[test]
fn describe_tells_a_stopped_worker_and_a_slot_near_its_end() {
    let source = Builder::new()
        .setting("max_slot_wal_keep_size", "'48MB'")
        .setting("max_wal_size", "'64MB'")
        .setting("min_wal_size", "'32MB'")
        .start()
        .expect("source sandbox");
    let target = Builder::new().start().expect("target sandbox");
    for c in [&source, &target] {
        c.create_database(DB).unwrap();
    }
    source
        .psql(DB, "CREATE TABLE t (id bigserial PRIMARY KEY, v text)")
        .unwrap();
    let p = Pair { source, target };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    start_task(h, &p, "sh1", "stream");
    let d = describe_json(h, "sh1");
    assert_eq!(d["lag"]["worker_running"], true, "{d:#}");
    let out = pt_ok(h, &["describe", "sh1"]);
    assert!(
        out.contains("invalidated after another"),
        "no warning with safe_wal_size under 1 GB:\n{out}"
    );

    stop_worker(h, "sh1");
    p.source
        .psql(
            DB,
            "INSERT INTO t (v) SELECT repeat('x', 100) FROM generate_series(1, 1000)",
        )
        .unwrap();
    let out = pt_ok(h, &["describe", "sh1"]);
    assert!(
        out.contains("unknown: no worker applies changes ("),
        "describe shows a lag for a stopped worker:\n{out}"
    );
    let d = describe_json(h, "sh1");
    assert_eq!(d["lag"]["worker_running"], false, "{d:#}");
    assert!(d["lag"]["source_bytes"].as_i64().unwrap() > 0, "{d:#}");
    let list = pt_ok(h, &["list"]);
    assert!(list.contains("unknown (no worker)"), "{list}");

    // Past max_slot_wal_keep_size, a checkpoint invalidates the slot.
    for _ in 0..5 {
        p.source
            .psql(
                DB,
                "INSERT INTO t (v) SELECT repeat(md5(g::text), 30) FROM generate_series(1, 20000) g; \
                 SELECT pg_switch_wal(); CHECKPOINT;",
            )
            .unwrap();
    }
    let status = p
        .source
        .psql(
            DB,
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'pgtransit_sh1'",
        )
        .unwrap();
    assert_eq!(status.trim(), "lost", "the slot was not invalidated");
    let out = pt_ok(h, &["describe", "sh1"]);
    assert!(
        out.contains("is invalidated (wal_status lost") && out.contains("create a new one"),
        "{out}"
    );
    pt_ok(h, &["terminate", "sh1"]);
}
