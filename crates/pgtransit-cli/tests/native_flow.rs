//! The native engine end to end: the Pigsty flow through pgtransit's commands on two
//! sandbox clusters under a live pgbench workload, then the same through the generated
//! scripts, and drop-sub with the source down.

mod common;

use common::*;

#[test]
fn native_flow_through_the_commands() {
    let p = hard_pair();
    let dir = tempfile::tempdir().unwrap();
    let task = task_file(&p, dir.path(), "hard");
    let t = task.to_str().unwrap();
    let load = Workload::start(&p.source, dir.path());

    let out = ok(&["copy-schema", "-t", t]);
    assert!(out.contains("pre-data"), "{out}");
    // Secondary indexes and foreign keys wait for post-data; the keys the apply needs do not.
    let idx = p.target.psql(DB, "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog')").unwrap();
    assert!(
        idx.contains("pgbench_accounts_pkey")
            && !idx.contains("doc index")
            && !idx.contains("events_payload"),
        "{idx}"
    );
    assert_eq!(
        p.target
            .psql(DB, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'")
            .unwrap()
            .trim(),
        "0"
    );

    let out = ok(&["create-pub", "-t", t]);
    assert!(
        out.contains("left out: public.scratch_cache is unlogged"),
        "{out}"
    );
    let out = ok(&["create-sub", "-t", t]);
    assert!(out.contains("CREATE SUBSCRIPTION"), "{out}");
    // binary is off: the hard table has an array of a user enum.
    assert!(
        !out.contains("binary = true") && out.contains("streaming = on"),
        "{out}"
    );
    ok(&["progress", "-t", t, "--wait", "120"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    load.stop();

    // Sequences are compared for real (Pigsty's currval() comparison always passed).
    let before = pgtransit(&["diff", "-t", t, "--wait", "10"]);
    assert_eq!(before.status.code(), Some(3), "{}", text(&before));
    assert!(
        text(&before).contains("[FAIL] sequence public.desc_seq"),
        "{}",
        text(&before)
    );

    ok(&["copy-seq", "-t", t, "1000"]);
    let out = ok(&["diff", "-t", t]);
    assert!(
        !out.contains("[FAIL]") && out.contains("[PASS] table"),
        "{out}"
    );
    ok(&["copy-schema", "-t", t, "--section", "post-data"]);
    let idx = p
        .target
        .psql(
            DB,
            "SELECT count(*) FROM pg_indexes WHERE indexname IN ('doc index', 'events_payload')",
        )
        .unwrap();
    assert_eq!(idx.trim(), "2");
    ok(&["drop-sub", "-t", t]);
    ok(&["drop-pub", "-t", t]);
    assert_migrated(&p);
}

#[test]
fn native_flow_through_the_generated_scripts() {
    let p = hard_pair();
    let dir = tempfile::tempdir().unwrap();
    let task = task_file(&p, dir.path(), "scripted");
    ok(&["generate", "-t", task.to_str().unwrap()]);
    let ctx = dir.path().join("ctx").join("scripted");
    let bin = p.source.bindir().to_path_buf();
    let load = Workload::start(&p.source, dir.path());

    // Without a terminal and without -y a script shows its SQL and changes nothing.
    let o = script(&ctx, &bin, "copy-schema", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("rerun with -y"), "{}", text(&o));
    assert_eq!(
        p.target
            .psql(
                DB,
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
            .unwrap()
            .trim(),
        "0"
    );

    script_ok(&ctx, &bin, "check-repl", &[]);
    script_ok(&ctx, &bin, "check-misc", &[]);
    // Pigsty v1's names, as its manual types them.
    for v1 in [
        "check-replica-identity",
        "check-replica-identity-solution",
        "check-special-object",
        "check-special-objec",
    ] {
        script_ok(&ctx, &bin, v1, &[]);
    }
    script_ok(&ctx, &bin, "copy-schema", &["-y"]);
    let out = script_ok(&ctx, &bin, "create-pub", &["-y"]);
    assert!(out.contains("public.scratch_cache is unlogged"), "{out}");
    // The subscription's password comes from the environment, is shown masked and is
    // written nowhere in the context folder.
    let secret = "Sekr3t-only-in-env";
    let o = std::process::Command::new(ctx.join("create-sub"))
        .arg("-y")
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("MIGRATION_CONTEXT")
        .env(
            "PGTRANSIT_SUBCONN",
            format!(
                "host=127.0.0.1 port={} dbname={DB} user=postgres password={secret}",
                p.source.port()
            ),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !text(&o).contains(secret) && text(&o).contains("password=********"),
        "{}",
        text(&o)
    );
    let grep = std::process::Command::new("grep")
        .args(["-rl", secret])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "secret written to {}",
        String::from_utf8_lossy(&grep.stdout)
    );
    script_ok(&ctx, &bin, "progress", &["--wait", "120"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    load.stop();
    let o = script(&ctx, &bin, "copy-diff", &["--wait", "10"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "sequences are behind before copy-seq: {}",
        text(&o)
    );
    script_ok(&ctx, &bin, "next-seq", &["1000", "-y"]);
    let out = script_ok(&ctx, &bin, "compare", &[]);
    assert!(
        !out.contains("[FAIL]") && out.contains("[PASS] table"),
        "{out}"
    );
    script_ok(&ctx, &bin, "copy-schema", &["--section", "post-data", "-y"]);
    script_ok(&ctx, &bin, "remove-sub", &["-y"]);
    script_ok(&ctx, &bin, "drop-pub", &["-y"]);
    assert_migrated(&p);
}
