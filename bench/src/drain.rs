//! `pgtransit-bench --drain`: how fast a backlog of changes drains. One write load on the
//! source builds the same backlog for three consumers that are all stopped: a plain slot
//! (the source's decoding alone, `pg_logical_slot_get_binary_changes` into nothing), a
//! disabled native subscription, and a pgtransit task whose worker is not running. Then
//! each drains it alone, timed until the target's content is the source's (pgtransit: `cdc
//! --until now`, which returns once it has applied up to the source's position at its
//! start). Two backlogs: pgbench's tpcb-like, and a mixed one (multi-table transactions,
//! updates of non-key and key columns, deletes, a keyless REPLICA IDENTITY FULL table).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pgsandbox::Cluster;
use serde::Serialize;

use crate::{median, peak_child_rss_mib};

const DB: &str = "drain";

#[derive(Serialize, Clone, Debug)]
pub struct DrainRun {
    pub backlog: String,
    pub run: usize,
    /// Source transactions in the backlog.
    pub transactions: i64,
    /// WAL the backlog spans.
    pub wal_bytes: i64,
    pub decode_seconds: f64,
    pub native_seconds: f64,
    pub pgtransit_seconds: f64,
    /// The largest resident set of any program this bench ran and waited for so far
    /// (pgtransit's copy and drain, psql, pgbench; not the servers), in MiB.
    pub peak_child_rss_mib: f64,
}

const MIXED_SETUP: &str = "CREATE TABLE m_keyed (k bigint PRIMARY KEY, v int, note text);\n\
    INSERT INTO m_keyed SELECT g, 0, md5(g::text) FROM generate_series(1, 100000) g;\n\
    CREATE TABLE m_full (a int, b text);\n\
    ALTER TABLE m_full REPLICA IDENTITY FULL;\n\
    INSERT INTO m_full SELECT g % 2000, md5(g::text) FROM generate_series(1, 20000) g;\n";

/// Multi-table transactions: a non-key update, a key update, inserts and deletes, and
/// changes to a keyless FULL-identity table.
const MIXED_SCRIPT: &str = "\\set id random(1, 100000)\n\
    \\set f random(1, 2000)\n\
    BEGIN;\n\
    UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :id;\n\
    UPDATE m_keyed SET k = k + 1000000, v = v + 1 WHERE k = :id;\n\
    INSERT INTO m_keyed VALUES (:id + 5000000 + (random() * 1000000)::int, 1, 'new') ON CONFLICT DO NOTHING;\n\
    DELETE FROM m_keyed WHERE k = :id + 1;\n\
    UPDATE m_full SET b = b || 'x' WHERE a = :f AND b LIKE '0%';\n\
    INSERT INTO m_full VALUES (:f, md5(random()::text));\n\
    END;\n";

/// A content fingerprint of the tables the backlog writes: equal on both sides once drained.
const FINGERPRINT: &str = "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || \
    (SELECT count(*) FROM pgbench_history) || ' ' || \
    (SELECT coalesce(sum(k), 0) FROM m_keyed) || ' ' || (SELECT count(*) FROM m_full) || ' ' || \
    (SELECT coalesce(sum(length(b)), 0) FROM m_full)";

/// Run a program and require success; its stdout.
pub(crate) fn run_ok(cmd: &mut Command, what: &str) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn task_file(dir: &Path, name: &str, engine: &str, source: &Cluster, target: &Cluster) -> String {
    let file = dir.join(format!("{name}.yml"));
    std::fs::write(
        &file,
        format!(
            "name: {name}\nengine: {engine}\nsource: {}\ntarget: {}\n",
            source.url(DB),
            target.url(name)
        ),
    )
    .unwrap();
    file.display().to_string()
}

fn wait_equal(source: &Cluster, target: &Cluster, db: &str, limit: Duration) -> f64 {
    let want = source.psql(DB, FINGERPRINT).unwrap();
    let t = Instant::now();
    loop {
        if target.psql(db, FINGERPRINT).ok().as_deref() == Some(want.as_str()) {
            return t.elapsed().as_secs_f64();
        }
        assert!(t.elapsed() < limit, "{db} never caught up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One backlog, drained by each consumer; returns the timings.
pub fn once(
    bin: &Path,
    make: &impl Fn() -> (Cluster, Cluster),
    mixed: bool,
    load_secs: u64,
    run: usize,
) -> DrainRun {
    let (source, target) = make();
    let dir = tempfile::tempdir().unwrap();
    source.create_database(DB).unwrap();
    run_ok(
        Command::new(source.client_program("pgbench"))
            .args(["-i", "-q", "-s", "10", "-h"])
            .arg(source.socket_dir())
            .args(["-p", &source.port().to_string(), "-U", "postgres", DB]),
        "pgbench -i",
    );
    source
        .psql(
            DB,
            &format!("ALTER TABLE pgbench_history REPLICA IDENTITY FULL;\n{MIXED_SETUP}"),
        )
        .unwrap();
    let pgtransit =
        |args: &[&str]| run_ok(Command::new(bin).args(args), &format!("pgtransit {args:?}"));
    // The native subscription, copied and then disabled.
    target.create_database("drain_native").unwrap();
    let native = task_file(dir.path(), "drain_native", "native", &source, &target);
    for step in ["copy-schema", "create-pub", "create-sub"] {
        pgtransit(&[step, "-t", &native]);
    }
    pgtransit(&["progress", "-t", &native, "--wait", "600"]);
    wait_equal(&source, &target, "drain_native", Duration::from_secs(600));
    target
        .psql(
            "drain_native",
            "ALTER SUBSCRIPTION pgtransit_drain_native DISABLE",
        )
        .unwrap();
    // The pgtransit task, copied, its worker not running.
    target.create_database("drain_stream").unwrap();
    let stream = task_file(dir.path(), "drain_stream", "stream", &source, &target);
    pgtransit(&["init-struct", "-t", &stream]);
    pgtransit(&["init-data", "-t", &stream]);
    pgtransit(&["init-struct", "-t", &stream, "--section", "post-data"]);
    // The plain slot, on the stream task's publication.
    source
        .psql(
            DB,
            "SELECT pg_create_logical_replication_slot('drain_decode', 'pgoutput')",
        )
        .unwrap();
    // Wait until the native walsender is gone (disabled), so nothing consumes the backlog.
    let t = Instant::now();
    while source
        .psql(
            DB,
            "SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name = 'pgtransit_drain_native'",
        )
        .unwrap()
        .trim()
        != "0"
    {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(100));
    }

    let start_lsn = source.psql(DB, "SELECT pg_current_wal_lsn()").unwrap();
    let mut load = Command::new(source.client_program("pgbench"));
    load.args(["-n", "-c", "4", "-j", "2", "-T", &load_secs.to_string()]);
    if mixed {
        let script = dir.path().join("mixed.sql");
        std::fs::write(&script, MIXED_SCRIPT).unwrap();
        load.arg("-f").arg(script);
    }
    load.arg("-h").arg(source.socket_dir()).args([
        "-p",
        &source.port().to_string(),
        "-U",
        "postgres",
        DB,
    ]);
    let out = run_ok(&mut load, "pgbench load");
    let transactions = out
        .lines()
        .find(|l| l.contains("number of transactions actually processed"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let wal_bytes: i64 = source
        .psql(
            DB,
            &format!(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{}')::bigint",
                start_lsn.trim()
            ),
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap_or(0);

    // 1. The source decoding the backlog into nothing.
    let t = Instant::now();
    source
        .psql(
            DB,
            "SELECT count(*) FROM pg_logical_slot_get_binary_changes('drain_decode', NULL, NULL, \
             'proto_version', '1', 'publication_names', 'pgtransit_drain_stream')",
        )
        .unwrap();
    let decode_seconds = t.elapsed().as_secs_f64();
    source
        .psql(DB, "SELECT pg_drop_replication_slot('drain_decode')")
        .unwrap();
    // 2. The native subscription, alone.
    let t = Instant::now();
    target
        .psql(
            "drain_native",
            "ALTER SUBSCRIPTION pgtransit_drain_native ENABLE",
        )
        .unwrap();
    wait_equal(&source, &target, "drain_native", Duration::from_secs(1800));
    let native_seconds = t.elapsed().as_secs_f64();
    // 3. pgtransit, alone (the native subscription is idle now).
    let t = Instant::now();
    pgtransit(&["cdc", "-t", &stream, "--until", "now"]);
    wait_equal(&source, &target, "drain_stream", Duration::from_secs(60));
    let pgtransit_seconds = t.elapsed().as_secs_f64();
    let backlog = if mixed { "mixed" } else { "pgbench" };
    eprintln!(
        "   {backlog} run {run}: {transactions} transactions, {} of WAL: decode {decode_seconds:.2} s, \
         native {native_seconds:.2} s, pgtransit {pgtransit_seconds:.2} s ({:.2}x)",
        mib(wal_bytes),
        native_seconds / pgtransit_seconds.max(0.001)
    );
    DrainRun {
        backlog: backlog.into(),
        run,
        transactions,
        wal_bytes,
        decode_seconds,
        native_seconds,
        pgtransit_seconds,
        peak_child_rss_mib: peak_child_rss_mib(),
    }
}

fn mib(bytes: i64) -> String {
    format!("{:.0} MiB", bytes as f64 / 1048576.0)
}

/// Every run of both backlogs, and the markdown table of their medians.
pub fn run(
    bin: &Path,
    make: impl Fn() -> (Cluster, Cluster),
    load_secs: u64,
    runs: usize,
) -> (Vec<DrainRun>, String) {
    let mut all = Vec::new();
    for mixed in [false, true] {
        for run in 1..=runs {
            all.push(once(bin, &make, mixed, load_secs, run));
        }
    }
    let mut md = format!(
        "Draining a backlog, same machine and sandboxes ({} cores): {load_secs} s of pgbench -c4 \
         (tpcb-like, or the mixed script) written while every consumer was stopped, then each drains \
         it alone until the target's content is the source's. Median of {runs} runs; ratio = native / \
         pgtransit (each run's in brackets).\n\n| backlog | transactions | WAL | source decoding alone | native subscription | \
         pgtransit cdc | ratio |\n|---|---:|---:|---:|---:|---:|---:|\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    for backlog in ["pgbench", "mixed"] {
        let rs: Vec<&DrainRun> = all.iter().filter(|r| r.backlog == backlog).collect();
        let m = |f: fn(&DrainRun) -> f64| median(rs.iter().map(|r| f(r)).collect());
        let (native, ours) = (m(|r| r.native_seconds), m(|r| r.pgtransit_seconds));
        let each: Vec<String> = rs
            .iter()
            .map(|r| format!("{:.2}", r.native_seconds / r.pgtransit_seconds.max(0.001)))
            .collect();
        md.push_str(&format!(
            "| {backlog} | {:.0} | {} | {:.2} s | {native:.2} s | {ours:.2} s | {:.2}x [{}] |\n",
            m(|r| r.transactions as f64),
            mib(m(|r| r.wal_bytes as f64) as i64),
            m(|r| r.decode_seconds),
            native / ours.max(0.001),
            each.join(", ")
        ));
    }
    md.push_str(&format!(
        "\nPeak RSS of any program the bench ran (pgtransit's copies and drains, psql, pgbench): \
         {:.0} MiB.\n",
        all.iter().map(|r| r.peak_child_rss_mib).fold(0.0, f64::max)
    ));
    (all, md)
}
