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

/// Types that trip peers: every value must arrive exactly (compared as text, row by row).
const TYPES_SQL: &str = r#"
CREATE TYPE color AS ENUM ('red', 'green', 'blue');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE DOMAIN tags AS text[];
CREATE TYPE pair AS (a int, b text);
CREATE TABLE typed (
    id int PRIMARY KEY,
    ints int[], texts text[], nums numeric[], grid int[][], stamps timestamptz[],
    jsons jsonb[], colors color[], pairs pair[], doms posint[], tagged tags,
    c color, d posint, p pair,
    r int4range, tr tstzrange, mr int4multirange,
    j jsonb, js json,
    n numeric, f float8, r4 real,
    ts timestamp, tstz timestamptz, dt date, iv interval, tm time, tmtz timetz,
    b bytea, m money, bits bit(8), vbits varbit,
    u uuid, ip inet, net cidr, mac macaddr, x xml, tv tsvector, pt point, bx box
);
INSERT INTO typed VALUES
 (1, '{1,NULL,3}', '{"a b","c,d",NULL,"é\"q"}', '{1.5,NaN,-0}', '{{1,2},{3,4}}',
  '{"2024-01-01 00:00+00",infinity,-infinity}', ARRAY['{"k": [1, 2]}'::jsonb, 'null'], '{red,blue}',
  ARRAY[ROW(1, 'x')::pair, ROW(NULL, 'y, "z"')::pair], '{1,2}', '{a,b}',
  'green', 7, ROW(2, 'two'), '[1,10)', '[2024-01-01,infinity)', '{[1,3),[5,8)}',
  '{"a": {"b": [1, 2.50, "x"]}, "u": "\u00e9"}', '{"keep": "as written",  "dup": 1, "dup": 2}',
  'NaN', 'Infinity', '-Infinity',
  'infinity', '-infinity', '-infinity', '-178000000 years 3 mons 4 days 05:06:07.123456', '24:00:00', '23:59:59.999999+14',
  '\x00ff10', '-92233720368547758.08', B'10100101', B'1',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2001:db8::1/64', '10.0.0.0/8', '08:00:2b:01:02:03',
  '<a b="c">é</a>', 'fat:2 cat:1', '(1.5,-2)', '((0,0),(1,1))'),
 (2, '{}', '{}', '{123456789012345678901234567890.123456789}', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, 'empty', NULL, '{}', '[]', '[]', '-Infinity', 'NaN', '1e-30',
  '2000-02-29 12:00:00.000001', '1999-12-31 23:59:59.999999+05:30', '4713-01-01 BC', '0', '00:00', '00:00+00',
  '', '0', B'00000000', B'', NULL, '0.0.0.0', '::/0', 'ff:ff:ff:ff:ff:ff', '<x/>', '', '(0,0)', '((0,0),(0,0))');
INSERT INTO typed (id, n, f, b) SELECT 2 + g, g / 7.0, g / 3.0, decode(repeat(md5(g::text), 200), 'hex') FROM generate_series(1, 2000) g;
-- Only built-in types: copied in binary format.
CREATE TABLE plain AS SELECT id, ints, texts, nums, grid, stamps, jsons, r, tr, mr, j, js, n, f, r4, ts, tstz,
    dt, iv, tm, tmtz, b, m, bits, vbits, u, ip, net, mac, x, tv, pt, bx FROM typed;
ALTER TABLE plain ADD PRIMARY KEY (id);
-- Large objects: logical replication never carries them; the copy must.
SELECT lo_from_bytea(0, decode(repeat('0123456789abcdef', 300000), 'hex'));
SELECT lo_from_bytea(0, 'small');
SELECT lo_from_bytea(0, '');
"#;

#[test]
fn types_the_anchors_fail_on_copy_exactly() {
    let p = pair_with(TYPES_SQL);
    let (src, dst) = (p.source.url(DB), p.target.url(DB));
    ok(&["copy-schema", "--source", &src, "--target", &dst]);
    // --json: one event per line, ending with the report.
    let out = ok(&["init-data", "--source", &src, "--target", &dst, "--json"]);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let done: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "unit-done")
        .collect();
    assert_eq!(done.len(), 3, "{out}");
    assert!(done
        .iter()
        .any(|e| e["relation"] == "public.plain" && e["binary"] == true && e["rows"] == 2002));
    assert_eq!(events.last().unwrap()["event"], "done");
    assert_eq!(
        events.last().unwrap()["report"]["rows"],
        4004 + 3,
        "rows and large objects"
    );
    let lo = "SELECT count(*) || ':' || string_agg(oid || '=' || md5(lo_get(oid)), ',' ORDER BY oid) FROM pg_largeobject_metadata";
    assert_eq!(
        p.source.psql(DB, lo).unwrap(),
        p.target.psql(DB, lo).unwrap(),
        "large objects"
    );
    for table in ["typed", "plain"] {
        let q = format!(
            "SELECT count(*) || ':' || md5(string_agg(t::text, E'\\n' ORDER BY id)) FROM {table} t"
        );
        assert_eq!(
            p.source.psql(DB, &q).unwrap(),
            p.target.psql(DB, &q).unwrap(),
            "{table}"
        );
    }
    let formats = p
        .target
        .psql(DB, "SELECT string_agg(relation || '=' || binary_copy, ',' ORDER BY relation) FROM pgtransit.copy_progress WHERE relation <> 'pg_largeobject'")
        .unwrap();
    assert_eq!(
        formats.trim(),
        "public.plain=true,public.typed=false",
        "user-type arrays and composites go as text"
    );
    // Spot checks that text equality did not hide a lossy round trip.
    let row1 =
        "SELECT n::text, f::text, ts::text, m::text, mr::text, pairs::text FROM typed WHERE id = 1";
    assert_eq!(
        p.source.psql(DB, row1).unwrap(),
        p.target.psql(DB, row1).unwrap()
    );
    assert!(p
        .target
        .psql(DB, row1)
        .unwrap()
        .starts_with("NaN|Infinity|infinity|-$92,233,720,368,547,758.08"));
}

#[test]
fn postgis_geometry_copies_exactly() {
    let control = std::path::Path::new("/usr/share/postgresql/15/extension/postgis.control");
    if !control.exists() {
        eprintln!("SKIPPED: PostGIS is not installed (apt-get install postgresql-15-postgis-3; .ci/run does)");
        return;
    }
    let p = pair_with(
        "CREATE EXTENSION postgis;
         CREATE TABLE places (id int PRIMARY KEY, g geometry(Geometry, 4326), gg geography);
         INSERT INTO places SELECT i, ST_SetSRID(ST_Buffer(ST_MakePoint(i, -i), 0.5 + i % 3), 4326),
                ST_MakePoint(i % 180, (i % 90))::geography FROM generate_series(1, 500) i;
         INSERT INTO places VALUES (0, 'SRID=4326;GEOMETRYCOLLECTION EMPTY', NULL);",
    );
    let (src, dst) = (p.source.url(DB), p.target.url(DB));
    ok(&["copy-schema", "--source", &src, "--target", &dst]);
    ok(&["init-data", "--source", &src, "--target", &dst]);
    let q = "SELECT count(*) || ':' || md5(string_agg(ST_AsEWKB(g)::text || coalesce(gg::text, '-'), '|' ORDER BY id)) FROM places";
    assert_eq!(p.source.psql(DB, q).unwrap(), p.target.psql(DB, q).unwrap());
}

#[test]
fn a_refused_init_data_leaves_no_slot_and_no_publication_behind() {
    let p = pair_with(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g;",
    );
    let (src, dst) = (p.source.url(DB), p.target.url(DB));
    ok(&["init-struct", "--source", &src, "--target", &dst]);
    p.target
        .psql(DB, "INSERT INTO t VALUES (1, 'mine')")
        .unwrap();
    let o = pgtransit(&["init-data", "--source", &src, "--target", &dst]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("already holds rows"), "{}", text(&o));
    // Nothing of the refused run holds WAL or blocks the next one.
    assert_eq!(leftovers(&p.source), "0 0 0", "{}", text(&o));
    p.target.psql(DB, "DELETE FROM t").unwrap();
    ok(&["init-data", "--source", &src, "--target", &dst]);
    assert_eq!(content_hash(&p.source, "t"), content_hash(&p.target, "t"));
}
