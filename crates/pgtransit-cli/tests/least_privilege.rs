//! A migration without superuser on either side, as on RDS, Cloud SQL or Azure: the source
//! role has LOGIN, REPLICATION and owns the tables; the target role owns the database.
//! `check` names each grant that is missing; with the printed grants the stream engine runs
//! create → cdc → a switchover with the readonly fence (write privileges revoked, since
//! CONNECTION LIMIT 0 would lock the role out) → verify → terminate, and nothing is left.

mod common;

use std::process::Command;

use common::*;

const SOURCE_SQL: &str = r#"
CREATE ROLE mig LOGIN REPLICATION;
CREATE ROLE app LOGIN;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE orders (id serial PRIMARY KEY, v int, m mood, doc jsonb, tags text[], big text);
INSERT INTO orders (v, m, doc, tags, big)
SELECT g, 'ok', jsonb_build_object('g', g), ARRAY['a', g::text], repeat(md5(g::text), 300)
FROM generate_series(1, 500) g;
CREATE TABLE nokey (a int, b text);
ALTER TABLE nokey REPLICA IDENTITY FULL;
INSERT INTO nokey SELECT g, 'n' || g FROM generate_series(1, 200) g;
CREATE TABLE measures (id int, at date, v int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE measures_2025 PARTITION OF measures FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measures_2026 PARTITION OF measures FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO measures SELECT g, date '2025-06-01' + g, g FROM generate_series(1, 400) g;
ALTER TYPE mood OWNER TO mig;
ALTER TABLE orders OWNER TO mig;
ALTER TABLE nokey OWNER TO mig;
ALTER TABLE measures OWNER TO mig;
ALTER TABLE measures_2025 OWNER TO mig;
ALTER TABLE measures_2026 OWNER TO mig;
GRANT SELECT, INSERT, UPDATE, DELETE ON orders, nokey, measures, measures_2026 TO app;
GRANT USAGE ON SEQUENCE orders_id_seq TO app;
"#;

const TARGET_SQL: &str = "CREATE ROLE mig LOGIN; CREATE ROLE app LOGIN;";

const TABLES: &[&str] = &[
    "public.orders",
    "public.nokey",
    "public.measures_2025",
    "public.measures_2026",
];

fn url_as(c: &pgsandbox::Cluster, user: &str) -> String {
    format!("postgresql://{user}@127.0.0.1:{}/{DB}", c.port())
}

/// One write of the application role (not an owner, not a superuser) on the source.
fn app_write(c: &pgsandbox::Cluster) -> Result<(), String> {
    let o = Command::new(c.client_program("psql"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg(url_as(c, "app"))
        .arg("-c")
        .arg(
            "INSERT INTO orders (v, m) VALUES (1, 'happy'); \
             INSERT INTO measures VALUES ((random() * 1e9)::int, date '2026-03-01', 1); \
             UPDATE nokey SET b = b || '+' WHERE a = 1;",
        )
        .output()
        .unwrap();
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).to_string())
    }
}

#[test]
fn a_migration_without_superuser_on_either_side() {
    let p = empty_pair("");
    p.source.psql(DB, SOURCE_SQL).unwrap();
    p.target.psql("postgres", TARGET_SQL).unwrap();
    p.target
        .psql("postgres", &format!("ALTER DATABASE {DB} OWNER TO mig"))
        .unwrap();
    let (src, dst) = (url_as(&p.source, "mig"), url_as(&p.target, "mig"));
    let home = tempfile::tempdir().unwrap();
    let h = home.path();

    // Without the grants: check names each one, with the exact statement.
    let o = pt(h, &["check", "config", "--source", &src, "--target", &dst]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    let grants = [
        "GRANT CREATE ON DATABASE \"shop\" TO \"mig\";",
        "GRANT SET ON PARAMETER session_replication_role TO \"mig\";",
        "GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text) TO \"mig\";",
        "GRANT EXECUTE ON FUNCTION pg_replication_origin_drop(text) TO \"mig\";",
        "GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) TO \"mig\";",
        "GRANT EXECUTE ON FUNCTION pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone) TO \"mig\";",
        "GRANT EXECUTE ON FUNCTION pg_replication_origin_progress(text, boolean) TO \"mig\";",
    ];
    for g in grants {
        assert!(out.contains(g), "check does not print {g}:\n{out}");
    }
    assert!(
        out.contains("takes the write privileges on the 5 replicated table(s)"),
        "check does not say which readonly fence the role allows:\n{out}"
    );
    // The printed grants, run by each side's administrator.
    p.source.psql(DB, grants[0]).unwrap();
    p.target.psql(DB, &grants[1..].join("\n")).unwrap();
    let out = pt_ok(h, &["check", "config", "--source", &src, "--target", &dst]);
    assert!(!out.contains("ERROR"), "{out}");

    // create → cdc under the application's writes.
    pt_ok(
        h,
        &[
            "create", "lp", "--engine", "stream", "--source", &src, "--target", &dst,
        ],
    );
    wait_cdc_running(h, "lp");
    for _ in 0..20 {
        app_write(&p.source).expect("the application writes before the fence");
    }

    // A switchover that dies right after the fence leaves the tables closed to the
    // application; --undo grants the privileges back.
    let o = Command::new(env!("CARGO_BIN_EXE_pgtransit"))
        .args(["switchover", "lp", "--fence", "readonly"])
        .env("PGTRANSIT_HOME", h)
        .env("FAILPOINTS", "switchover-crash=return(fenced)")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(9), "{}", text(&o));
    let refused = app_write(&p.source).expect_err("the fence holds after a crash");
    assert!(refused.contains("permission denied"), "{refused}");
    let out = pt_ok(h, &["switchover", "lp", "--undo"]);
    assert!(out.contains("granted back"), "{out}");
    app_write(&p.source).expect("the application writes again after --undo");

    // The switchover: the migration role keeps its own access (verify connects anew).
    let out = pt_ok(
        h,
        &[
            "switchover",
            "lp",
            "--fence",
            "readonly",
            "--verify",
            "checksum",
        ],
    );
    assert!(out.contains("switched over: write downtime"), "{out}");
    assert!(out.contains("write privilege(s) revoked"), "{out}");
    let refused = app_write(&p.source).expect_err("no write on the old source after the switch");
    assert!(refused.contains("permission denied"), "{refused}");
    for t in TABLES {
        assert_eq!(
            content_hash(&p.source, t),
            content_hash(&p.target, t),
            "{t}"
        );
    }
    let out = pt_ok(h, &["verify", "lp", "--mode", "checksum"]);
    assert!(
        out.contains(" 0 differ") && !out.contains("[FAIL]"),
        "{out}"
    );
    pt_ok(h, &["terminate", "lp"]);
    nothing_left(&p);
}
