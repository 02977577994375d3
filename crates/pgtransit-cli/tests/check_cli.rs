//! `pgtransit check` end to end: real sandbox clusters with the crafted sample schema, the
//! binary run as a user would, its JSON compared finding by finding.

use std::process::{Command, Output};

use pgsandbox::{Builder, Cluster};
use serde_json::Value;

const SAMPLE_SQL: &str = include_str!("../src/demo/sample.sql");
const PASSWORD: &str = "Tr0ub4dor&3-secret";

struct Pair {
    source: Cluster,
    target: Cluster,
}

fn clusters() -> Pair {
    let source = Builder::new()
        .password(PASSWORD)
        .start()
        .expect("source sandbox");
    let target = Builder::new()
        .password(PASSWORD)
        .hide_extensions(&["pg_trgm"])
        .start()
        .expect("target sandbox");
    source.create_database("shop").unwrap();
    target.create_database("shop").unwrap();
    source.psql("shop", SAMPLE_SQL).expect("load sample");
    Pair { source, target }
}

fn pgtransit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgtransit"))
        .args(args)
        .env_remove("PGPASSWORD")
        .output()
        .expect("run pgtransit")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The finding with `code` on `object`, if any.
fn finding<'a>(report: &'a Value, code: &str, object: &str) -> Option<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == code && f["object"] == object)
}

fn severity(report: &Value, code: &str, object: &str) -> Option<String> {
    finding(report, code, object).map(|f| f["severity"].as_str().unwrap().to_string())
}

fn fix(report: &Value, code: &str, object: &str) -> String {
    finding(report, code, object)
        .and_then(|f| f["fix"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn every_crafted_problem_is_found_with_the_right_severity() {
    let p = clusters();
    let (src, dst) = (p.source.url("shop"), p.target.url("shop"));
    let out = pgtransit(&["check", "all", "--source", &src, "--target", &dst, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&out);
    assert_eq!(r["format"], 1);

    let err = Some("error".to_string());
    let warn = Some("warning".to_string());
    let info = Some("info".to_string());
    let ri = "replica-identity.missing";
    // Tables that would break UPDATE/DELETE once published.
    assert_eq!(severity(&r, ri, "\"app\".\"audit_log\""), err);
    assert_eq!(severity(&r, ri, "\"app\".\"order_lines\""), err);
    assert_eq!(severity(&r, ri, "\"app\".\"coupons\""), err);
    assert_eq!(severity(&r, ri, "\"app\".\"sessions\""), err);
    assert_eq!(severity(&r, ri, "\"app\".\"slots\""), err);
    assert_eq!(severity(&r, ri, "\"app\".\"tags\""), err);
    assert_eq!(severity(&r, ri, "\"Sales Ops\".\"Überweisung ✓\""), err);
    // Tables that are fine are not flagged.
    for ok in [
        "\"app\".\"customers\"",
        "\"app\".\"orders\"",
        "\"app\".\"events_2025\"",
        "\"app\".\"cars\"",
    ] {
        assert_eq!(severity(&r, ri, ok), None, "{ok}");
    }
    // The fixes: USING INDEX only where the index qualifies.
    assert!(fix(&r, ri, "\"app\".\"order_lines\"")
        .starts_with("ALTER TABLE \"app\".\"order_lines\" REPLICA IDENTITY USING INDEX \"order_lines_order_line_key\";"));
    assert!(fix(&r, ri, "\"app\".\"coupons\"").contains("REPLICA IDENTITY FULL;"));
    assert!(fix(&r, ri, "\"app\".\"coupons\"").contains("partial"));
    assert!(fix(&r, ri, "\"app\".\"slots\"").contains("deferrable"));
    assert!(fix(&r, ri, "\"app\".\"tags\"").contains("nullable"));
    assert!(fix(&r, ri, "\"app\".\"sessions\"").contains("REPLICA IDENTITY DEFAULT"));

    // Objects logical replication does not carry.
    assert_eq!(
        severity(&r, "objects.materialized-view", "\"app\".\"daily_totals\""),
        warn
    );
    assert_eq!(
        severity(&r, "objects.unlogged-table", "\"app\".\"cache\""),
        warn
    );
    assert_eq!(
        severity(&r, "objects.foreign-table", "\"app\".\"os_release\""),
        warn
    );
    assert_eq!(severity(&r, "objects.large-object", "pg_largeobject"), warn);
    assert_eq!(
        severity(&r, "objects.inheritance", "\"app\".\"cars\""),
        warn
    );
    assert_eq!(
        severity(&r, "objects.event-trigger", "\"app_ddl_notice\""),
        warn
    );
    assert_eq!(
        severity(
            &r,
            "objects.generated-column",
            "\"app\".\"orders\".\"total_with_tax\""
        ),
        info
    );
    assert_eq!(
        severity(&r, "objects.partitioned-table", "\"app\".\"events\""),
        info
    );
    assert_eq!(
        severity(&r, "objects.sequence", "\"app\".\"customers_id_seq\""),
        info
    );
    // The extension the target lacks, and the ones it has.
    assert_eq!(
        severity(&r, "databases.extension-missing", "\"pg_trgm\""),
        err
    );
    assert_eq!(severity(&r, "databases.extension", "\"hstore\""), info);
    // The replication connection works; pg_dump can dump the source.
    let codes: Vec<&str> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"hba.replication-ok"), "{codes:?}");
    assert!(codes.contains(&"config.pg-dump-ok"), "{codes:?}");
    assert!(
        !codes.iter().any(|c| c.starts_with("config.")
            && !["config.pg-dump-ok", "config.readonly-fence"].contains(c)),
        "{codes:?}"
    );
    // The table listing has keys, identity and size.
    let tables = r["tables"].as_array().unwrap();
    let ol = tables
        .iter()
        .find(|t| t["table"] == "\"app\".\"order_lines\"")
        .unwrap();
    assert_eq!(ol["keys"], "unique");
    assert_eq!(ol["identity"], "default");
    assert!(ol["size_bytes"].as_i64().unwrap() > 0);
    // scratch is not excluded without a task file: its key-less table is the ninth error.
    assert_eq!(severity(&r, ri, "\"scratch\".\"tmp_import\""), err);
    assert_eq!(r["summary"]["errors"], 9);
}

#[test]
fn fix_apply_leaves_no_replica_identity_error() {
    let p = clusters();
    let src = p.source.url("shop");
    let out = pgtransit(&["check", "replica-identity", "--source", &src, "--fix"]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("REPLICA IDENTITY USING INDEX \"order_lines_order_line_key\""),
        "{text}"
    );
    // --fix alone changes nothing.
    assert_eq!(
        p.source
            .psql(
                "shop",
                "SELECT relreplident FROM pg_class WHERE oid = 'app.order_lines'::regclass"
            )
            .unwrap(),
        "d"
    );

    let out = pgtransit(&[
        "check",
        "replica-identity",
        "--source",
        &src,
        "--fix",
        "--apply",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&out);
    assert_eq!(r["summary"]["errors"], 0);
    let identities = p
        .source
        .psql(
            "shop",
            "SELECT string_agg(relname || '=' || relreplident::text, ',' ORDER BY relname) FROM pg_class \
             WHERE relname IN ('order_lines', 'coupons', 'sessions', 'Überweisung ✓')",
        )
        .unwrap();
    assert_eq!(
        identities,
        "coupons=f,order_lines=i,sessions=d,Überweisung ✓=f"
    );
    // Running it again finds nothing to fix.
    let out = pgtransit(&["check", "replica-identity", "--source", &src, "--fix"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to fix"));
}

#[test]
fn non_empty_target_table_and_wal_level_are_errors() {
    let source = Builder::new()
        .setting("wal_level", "replica")
        .start()
        .unwrap();
    let target = Builder::new().start().unwrap();
    source
        .psql("postgres", "CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    target
        .psql(
            "postgres",
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)",
        )
        .unwrap();
    let out = pgtransit(&[
        "check",
        "config",
        "--source",
        &source.url("postgres"),
        "--target",
        &target.url("postgres"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let r = json(&out);
    assert_eq!(
        severity(&r, "config.target-not-empty", "\"public\".\"t\""),
        Some("error".into())
    );
    let wal = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "config.wal-level")
        .unwrap();
    assert_eq!(wal["severity"], "error");
    assert!(wal["fix"].as_str().unwrap().contains("wal_level = logical"));
}

#[test]
fn connection_errors_exit_2_with_a_fix() {
    let c = Builder::new().password(PASSWORD).start().unwrap();
    // Wrong password.
    let bad = c
        .url_without_password("postgres")
        .replace("postgres@", "postgres:wrong-pw@");
    let out = pgtransit(&["check", "config", "--source", &bad]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains("came from the connection string"), "{err}");
    assert!(!err.contains("wrong-pw"), "{err}");
    // Nobody listening.
    let port = c.port();
    drop(c);
    let out = pgtransit(&[
        "check",
        "config",
        "--source",
        &format!("postgres://u@127.0.0.1:{port}/db?connect_timeout=2"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to u@127.0.0.1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Usage error.
    let out = pgtransit(&["check", "all"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no task"));
}

#[test]
fn pgpass_and_pgpassword_are_used() {
    let c = Builder::new().password(PASSWORD).start().unwrap();
    let home = tempfile::tempdir().unwrap();
    let pgpass = home.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!("127.0.0.1:{}:*:postgres:{PASSWORD}\n", c.port()),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let url = c.url_without_password("postgres");
    let out = Command::new(env!("CARGO_BIN_EXE_pgtransit"))
        .args(["check", "replica-identity", "--source", &url])
        .env("PGPASSFILE", &pgpass)
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pgtransit"))
        .args(["check", "replica-identity", "--source", &url])
        .env("PGPASSWORD", PASSWORD)
        .env("PGPASSFILE", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// No password appears in any output of any command, human or JSON, success or failure.
#[test]
fn no_password_in_any_output() {
    let p = clusters();
    let (src, dst) = (p.source.url("shop"), p.target.url("shop"));
    let dir = tempfile::tempdir().unwrap();
    let pigsty = dir.path().join("pg-meta.yml");
    std::fs::write(
        &pigsty,
        format!(
            "src_cls: pg-meta\nsrc_db: shop\nsrc_ip: 127.0.0.1\ndst_cls: pg-test\ndst_db: shop\ndst_ip: 127.0.0.1\n\
             src_pg: '{src}'\ndst_pg: '{dst}'\n\
             sub_conn: 'host=127.0.0.1 port={} dbname=shop user=postgres password={PASSWORD}'\n\
             pg_replication_password: {PASSWORD}\npg_admin_password: {PASSWORD}\n",
            p.source.port()
        ),
    )
    .unwrap();
    let native = dir.path().join("native.yml");
    std::fs::write(
        &native,
        format!("name: n\nsource: '{src}'\ntarget: '{dst}'\n"),
    )
    .unwrap();
    let f = pigsty.to_str().unwrap();
    let n = native.to_str().unwrap();
    let wrong = src.replace(PASSWORD, &format!("{PASSWORD}x"));
    let runs: Vec<Vec<&str>> = vec![
        vec!["check", "all", "--source", &src, "--target", &dst],
        vec!["check", "all", "--source", &src, "--target", &dst, "--json"],
        vec!["check", "all", "-t", f],
        vec!["check", "all", "-t", f, "--json"],
        vec!["check", "replica-identity", "-t", n, "--fix"],
        vec!["check", "hba", "-t", n, "--json"],
        vec!["check", "users", "--source", &wrong],
        vec!["check", "users", "--source", &wrong, "--json"],
        vec!["task", "show", "-t", f],
        vec!["task", "show", "-t", f, "--json"],
        vec!["task", "show", "-t", f, "--native"],
        vec!["task", "show", "-t", n, "--json"],
        vec!["demo", "--problems"],
        vec!["demo", "--problems", "--json"],
        vec!["demo", "--pigsty"],
        vec!["--help"],
    ];
    for args in runs {
        let out = Command::new(env!("CARGO_BIN_EXE_pgtransit"))
            .args(&args)
            .env("PGTRANSIT_LOG", "debug")
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.is_empty(), "{args:?} printed nothing");
        assert!(
            !all.contains(PASSWORD),
            "password printed by {args:?}:\n{all}"
        );
        assert!(
            !all.contains("Tr0ub4dor%263"),
            "encoded password printed by {args:?}"
        );
        assert!(
            !all.contains("SCRAM-SHA-256$"),
            "password hash printed by {args:?}"
        );
        assert!(!all.contains("demo-"), "demo password printed by {args:?}");
    }
}

/// FULL identity under the native engine: a column without an equality operator is an
/// error (the subscriber cannot find the rows), one whose equal values can be written
/// differently a warning (it may change another equal row); the stream engine handles
/// both, so neither is reported for a stream task.
#[test]
fn full_identity_columns_the_native_subscriber_cannot_match_exactly() {
    let source = Builder::new().start().expect("source sandbox");
    let target = Builder::new().start().expect("target sandbox");
    for c in [&source, &target] {
        c.create_database("shop").unwrap();
    }
    source
        .psql(
            "shop",
            "CREATE DOMAIN money2 AS numeric(12, 2); \
             CREATE TABLE amounts (a money2, b numrange[], n text); \
             CREATE TABLE docs (d json, n text); \
             CREATE TABLE plain (n text, i int); \
             ALTER TABLE amounts REPLICA IDENTITY FULL; ALTER TABLE docs REPLICA IDENTITY FULL; \
             ALTER TABLE plain REPLICA IDENTITY FULL;",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (source.url("shop"), target.url("shop"));
    for engine in ["native", "stream"] {
        let task = dir.path().join(format!("{engine}.yml"));
        std::fs::write(
            &task,
            format!("name: ri_{engine}\nsource: {src}\ntarget: {dst}\nengine: {engine}\n"),
        )
        .unwrap();
        let out = pgtransit(&[
            "check",
            "replica-identity",
            "-t",
            task.to_str().unwrap(),
            "--json",
        ]);
        let r = json(&out);
        let inexact = finding(
            &r,
            "replica-identity.full-inexact",
            "\"public\".\"amounts\"",
        );
        let no_eq = severity(
            &r,
            "replica-identity.full-without-equality",
            "\"public\".\"docs\"",
        );
        if engine == "native" {
            let f = inexact.expect("the inexact warning");
            assert_eq!(f["severity"], "warning");
            let msg = f["message"].as_str().unwrap();
            assert!(
                msg.contains("a money2") && msg.contains("b numrange[]"),
                "{msg}"
            );
            assert!(!msg.contains("n text"), "{msg}");
            assert_eq!(no_eq, Some("error".to_string()));
            assert_eq!(out.status.code(), Some(3));
        } else {
            assert!(inexact.is_none() && no_eq.is_none(), "{r:#}");
        }
        for t in ["\"public\".\"plain\"", "\"public\".\"docs\""] {
            assert!(
                finding(&r, "replica-identity.full-inexact", t).is_none(),
                "{t}"
            );
        }
    }
}
