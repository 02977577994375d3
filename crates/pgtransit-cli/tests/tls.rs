//! TLS: one connection string means the same protection for the SQL sessions and for the
//! replication stream. A source serving a self-signed chain (a test CA and a server
//! certificate for 127.0.0.1); `sslmode=prefer`, `require` and `verify-full` with an IP host
//! each run a stream task whose every session on the source, the walsender included, is
//! encrypted (`pg_stat_ssl`), and whose changes arrive.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use pgsandbox::Builder;

/// A CA and a server certificate it signed, valid for 127.0.0.1 and localhost; None (with the
/// reason printed) when openssl is missing.
fn make_certificates(dir: &Path) -> Option<()> {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!(
            "SKIPPED: the TLS test needs the openssl program (Debian: apt-get install openssl)"
        );
        return None;
    }
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=pgtransit test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    Some(())
}

/// Wait until `sql` on `c` returns `want`.
fn wait_for(c: &pgsandbox::Cluster, db: &str, sql: &str, want: &str) {
    let t = Instant::now();
    loop {
        let got = c.psql(db, sql).unwrap_or_default();
        if got.trim() == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{sql}: got {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_connection_of_a_task_honours_sslmode() {
    let dir = tempfile::tempdir().unwrap();
    if make_certificates(dir.path()).is_none() {
        return;
    }
    let source = Builder::new()
        .tls(dir.path().join("server.crt"), dir.path().join("server.key"))
        .start()
        .expect("source sandbox with TLS");
    let target = Builder::new().start().expect("target sandbox");
    source.create_database(DB).unwrap();
    source
        .psql(
            DB,
            "CREATE TABLE t (id int PRIMARY KEY, v text); \
             INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;",
        )
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let modes = [
        ("prefer", "sslmode=prefer".to_string()),
        ("require", "sslmode=require".to_string()),
        (
            "verify_full",
            format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        ),
    ];
    for (i, (name, params)) in modes.iter().enumerate() {
        let db = format!("into_{name}");
        target.create_database(&db).unwrap();
        let src = format!(
            "{}?{params}&application_name=pgtransit_{name}",
            source.url(DB)
        );
        let dst = target.url(&db);
        pt_ok(
            home.path(),
            &[
                "create", name, "--engine", "stream", "--source", &src, "--target", &dst,
            ],
        );
        wait_cdc_running(home.path(), name);
        let id = 2000 + i;
        source
            .psql(DB, &format!("INSERT INTO t VALUES ({id}, 'over {name}')"))
            .unwrap();
        wait_for(
            &target,
            &db,
            &format!("SELECT v FROM t WHERE id = {id}"),
            &format!("over {name}"),
        );
        // Every session of this task on the source: its SQL sessions and its walsender.
        let sessions = source
            .psql(
                "postgres",
                &format!(
                    "SELECT string_agg(a.backend_type || '=' || coalesce(s.ssl::text, '?'), ' ' \
                            ORDER BY a.backend_type, s.ssl) \
                     FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s USING (pid) \
                     WHERE a.application_name = 'pgtransit_{name}'"
                ),
            )
            .unwrap();
        assert!(
            sessions.contains("walsender=true"),
            "{name}: the replication stream is not encrypted: {sessions}"
        );
        assert!(
            !sessions.contains("=false") && !sessions.contains("=?"),
            "{name}: a session is not encrypted: {sessions}"
        );
        pt_ok(home.path(), &["terminate", name]);
    }
    // verify-full still verifies: a root that did not sign the server's chain (the server
    // certificate itself given as root) is refused, not ignored.
    let other_ca = dir.path().join("server.crt");
    let src = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        source.url(DB),
        other_ca.display()
    );
    target.create_database("refused").unwrap();
    let out = pt(
        home.path(),
        &[
            "check",
            "--source",
            &src,
            "--target",
            &target.url("refused"),
        ],
    );
    assert!(
        !out.status.success(),
        "verify-full trusted a certificate its root does not sign:\n{}",
        text(&out)
    );
}
