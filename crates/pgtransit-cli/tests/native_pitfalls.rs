//! Each pitfall of Pigsty's migration scripts (research/pigsty.md §2 and §4) that the native
//! steps must not have, on real sandbox clusters. Covered elsewhere: unquoted names,
//! `_`-prefixed schemas, descending sequences, currval() in copy-diff, unlogged tables and
//! interactive-only scripts (native_flow.rs).

mod common;

use std::path::Path;

use common::*;
use pgsandbox::{Builder, Cluster};

const SMALL: &str = "CREATE TABLE items (id serial PRIMARY KEY, v text);
INSERT INTO items (v) SELECT 'v' || g FROM generate_series(1, 100) g;";

fn small_pair(target: Builder) -> Pair {
    let source = Builder::new().start().expect("source sandbox");
    let target = target.start().expect("target sandbox");
    source.create_database(DB).unwrap();
    target.create_database(DB).unwrap();
    source.psql(DB, SMALL).unwrap();
    Pair { source, target }
}

fn pigsty_file(dir: &Path, name: &str, src: &Cluster, dst: &Cluster) -> String {
    let file = dir.join(format!("{name}.yml"));
    std::fs::write(
        &file,
        format!(
            "context_dir: {ctx}\nsrc_cls: pg-meta\nsrc_db: {DB}\nsrc_ip: 127.0.0.1\nsrc_pg: {}\n\
             sub_conn: host=127.0.0.1 port={} dbname={DB} user=postgres\n\
             dst_cls: {name}\ndst_db: {DB}\ndst_ip: 127.0.0.1\ndst_pg: {}\n",
            src.url(DB),
            src.port(),
            dst.url(DB),
            ctx = dir.join("ctx").display()
        ),
    )
    .unwrap();
    file.display().to_string()
}

#[test]
fn a_second_task_on_the_same_source_cannot_take_over_the_slot() {
    let p = small_pair(Builder::new());
    let other = Builder::new().start().expect("second target");
    other.create_database(DB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Pigsty names the subscription and slot after the source only: both tasks get
    // sub_pg_meta_shop.
    let a = pigsty_file(dir.path(), "pg-a", &p.source, &p.target);
    let b = pigsty_file(dir.path(), "pg-b", &p.source, &other);
    for step in ["copy-schema", "create-pub", "create-sub"] {
        ok(&[step, "-t", &a]);
    }
    ok(&["copy-schema", "-t", &b]);
    let o = pgtransit(&["create-sub", "-t", &b]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("replication slot \"sub_pg_meta_shop\" already exists"),
        "{}",
        text(&o)
    );
    // Task a's replication is untouched.
    ok(&["progress", "-t", &a, "--wait", "60"]);
    assert_eq!(
        other
            .psql(DB, "SELECT count(*) FROM pg_subscription")
            .unwrap()
            .trim(),
        "0"
    );
    // A native task of another name gets its own publication, subscription and slot.
    let native = dir.path().join("n.yml");
    std::fs::write(
        &native,
        format!(
            "name: fan-out\nsource: {}\ntarget: {}\n",
            p.source.url(DB),
            other.url(DB)
        ),
    )
    .unwrap();
    let n = native.to_str().unwrap();
    ok(&["create-pub", "-t", n]);
    ok(&["create-sub", "-t", n]);
    ok(&["progress", "-t", n, "--wait", "60"]);
    assert_eq!(
        content_hash(&p.source, "items"),
        content_hash(&other, "items")
    );
    for t in [&a, n] {
        ok(&["drop-sub", "-t", t]);
        ok(&["drop-pub", "-t", t]);
    }
    assert_eq!(leftovers(&p.source), "0 0 0");
}

#[test]
fn zero_selected_tables_still_make_valid_sql() {
    let p = small_pair(Builder::new());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.yml");
    std::fs::write(
        &file,
        format!(
            "name: empty\nsource: {}\ntarget: {}\nobjects:\n  include: [nothing_here]\n",
            p.source.url(DB),
            p.target.url(DB)
        ),
    )
    .unwrap();
    let t = file.to_str().unwrap();
    let o = pgtransit(&["copy-schema", "-t", t]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nothing to copy"), "{}", text(&o));
    ok(&["create-pub", "-t", t]);
    assert_eq!(
        p.source
            .psql(DB, "SELECT count(*) FROM pg_publication_tables")
            .unwrap()
            .trim(),
        "0"
    );
    ok(&["create-sub", "-t", t]);
    ok(&["progress", "-t", t, "--wait", "30"]);
    let out = ok(&["diff", "-t", t]);
    assert!(out.contains("diff: 0 object(s), 0 failed"), "{out}");
    ok(&["drop-sub", "-t", t]);
    ok(&["drop-pub", "-t", t]);
    assert_eq!(leftovers(&p.source), "0 0 0");
}

#[test]
fn schema_load_stops_at_the_first_error_and_never_overwrites_rows() {
    // The target lacks pg_trgm, which the source uses: the load must fail as a whole.
    let p = small_pair(Builder::new().hide_extensions(&["pg_trgm"]));
    p.source
        .psql(
            DB,
            "CREATE EXTENSION pg_trgm; CREATE TABLE docs (id int PRIMARY KEY, body text);",
        )
        .unwrap();
    let src = p.source.url(DB);
    let dst = p.target.url(DB);
    let o = pgtransit(&["copy-schema", "--source", &src, "--target", &dst]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("pg_trgm"), "{}", text(&o));
    assert_eq!(
        p.target
            .psql(
                DB,
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
            .unwrap()
            .trim(),
        "0",
        "one transaction: nothing half-loaded"
    );

    // Without the extension, the schema loads; a rerun refuses, --clean recreates empty
    // tables, and rows on the target are only ever dropped with --clean --force.
    p.source.psql(DB, "DROP EXTENSION pg_trgm").unwrap();
    ok(&["copy-schema", "--source", &src, "--target", &dst]);
    let o = pgtransit(&["copy-schema", "--source", &src, "--target", &dst]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("already exist on the target (empty)"),
        "{}",
        text(&o)
    );
    ok(&["copy-schema", "--source", &src, "--target", &dst, "--clean"]);
    p.target
        .psql(DB, "INSERT INTO items (v) VALUES ('precious')")
        .unwrap();
    let o = pgtransit(&["copy-schema", "--source", &src, "--target", &dst, "--clean"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("holds rows in 1 selected table(s): public.items"),
        "{}",
        text(&o)
    );
    assert_eq!(
        p.target.psql(DB, "SELECT v FROM items").unwrap().trim(),
        "precious"
    );
    ok(&[
        "copy-schema",
        "--source",
        &src,
        "--target",
        &dst,
        "--clean",
        "--force",
    ]);
    assert_eq!(
        p.target
            .psql(DB, "SELECT count(*) FROM items")
            .unwrap()
            .trim(),
        "0"
    );
}

#[test]
fn drop_sub_with_the_source_down_names_what_is_left() {
    let mut p = small_pair(Builder::new());
    let (src, dst) = (p.source.url(DB), p.target.url(DB));
    for step in ["copy-schema", "create-pub", "create-sub"] {
        ok(&[step, "--source", &src, "--target", &dst]);
    }
    ok(&[
        "progress", "--source", &src, "--target", &dst, "--wait", "60",
    ]);
    p.source.stop().unwrap();
    let out = ok(&["drop-sub", "--source", &src, "--target", &dst]);
    assert!(out.contains("the source could not be reached"), "{out}");
    assert!(out.contains("replication slot pgtransit_adhoc"), "{out}");
    assert!(out.contains("pg_drop_replication_slot"), "{out}");
    assert_eq!(
        leftovers(&p.target),
        "0 0 0",
        "the subscription is gone from the target"
    );
}

#[test]
fn refresh_adds_tables_created_after_create_pub() {
    let p = small_pair(Builder::new());
    let (src, dst) = (p.source.url(DB), p.target.url(DB));
    for step in ["copy-schema", "create-pub", "create-sub"] {
        ok(&[step, "--source", &src, "--target", &dst]);
    }
    p.source
        .psql(DB, "CREATE SCHEMA \"Late Comers\"; CREATE TABLE \"Late Comers\".\"New Table\" (id int PRIMARY KEY, v text); \
                   INSERT INTO \"Late Comers\".\"New Table\" SELECT g, 'n' FROM generate_series(1, 50) g;")
        .unwrap();
    ok(&["refresh", "--source", &src, "--target", &dst]);
    ok(&[
        "progress", "--source", &src, "--target", &dst, "--wait", "60",
    ]);
    p.source
        .psql(
            DB,
            "INSERT INTO \"Late Comers\".\"New Table\" VALUES (51, 'live')",
        )
        .unwrap();
    let o = pgtransit(&["diff", "--source", &src, "--target", &dst]);
    let out = text(&o);
    // No copy-seq yet: the sequence fails, the tables pass.
    assert!(
        out.contains("[PASS] table    \"Late Comers\".\"New Table\"  source=51 target=51"),
        "{out}"
    );
    assert!(out.contains("[FAIL] sequence public.items_id_seq"), "{out}");
    ok(&["drop-sub", "--source", &src, "--target", &dst]);
    ok(&["drop-pub", "--source", &src, "--target", &dst]);
}
