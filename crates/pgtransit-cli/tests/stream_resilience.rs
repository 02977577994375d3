//! The change stream under the failures it must survive: SIGKILL at random moments, both
//! servers restarting, a column added on the source, and one transaction of a million rows
//! in bounded memory. Each ends with every table equal to the source.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pgsandbox::Builder;

const SCHEMA: &str = "
CREATE TABLE keyed (id int PRIMARY KEY, v text, n int);
INSERT INTO keyed SELECT g, 'k' || g, g FROM generate_series(1, 2000) g;
";

struct Setup {
    p: Pair,
    dir: tempfile::TempDir,
    task: String,
}

/// Two sandboxes with pgbench tables (history with FULL identity) and `keyed`, copied with
/// the stream engine and ready to stream.
fn streaming_pair() -> Setup {
    let source = Builder::new().start().unwrap();
    let target = Builder::new().start().unwrap();
    source.create_database(DB).unwrap();
    target.create_database(DB).unwrap();
    let init = Command::new(source.client_program("pgbench"))
        .args(["-i", "-s", "1", "-q", "-h"])
        .arg(source.socket_dir())
        .args(["-p", &source.port().to_string(), "-U", "postgres", DB])
        .output()
        .unwrap();
    assert!(init.status.success());
    source.psql(DB, SCHEMA).unwrap();
    source
        .psql(DB, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .unwrap();
    let p = Pair { source, target };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.yml");
    std::fs::write(
        &file,
        format!(
            "name: resilient\nsource: {}\ntarget: {}\n",
            p.source.url(DB),
            p.target.url(DB)
        ),
    )
    .unwrap();
    let task = file.to_str().unwrap().to_string();
    ok(&["init-struct", "-t", &task]);
    ok(&["init-data", "-t", &task]);
    ok(&["init-struct", "-t", &task, "--section", "post-data"]);
    Setup { p, dir, task }
}

/// pgbench tpcb-like plus key changes on `keyed`.
fn load(s: &Setup) -> Workload {
    Workload::start_script(
        &s.p.source,
        s.dir.path(),
        "\\set r random(1, 2000)\nUPDATE keyed SET n = n + 1, v = CASE WHEN :r % 3 = 0 THEN NULL ELSE v END WHERE id = :r;\n\
         DELETE FROM keyed WHERE id = :r + 100000;\nINSERT INTO keyed VALUES (:r + 100000, 'moved', :r) ON CONFLICT DO NOTHING;\n",
    )
}

fn cdc(s: &Setup, log: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pgtransit"))
        .args(["cdc", "-t", &s.task])
        .stdout(Stdio::from(
            std::fs::File::create(s.dir.path().join(log)).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(s.dir.path().join(format!("{log}.err"))).unwrap(),
        ))
        .spawn()
        .unwrap()
}

fn assert_equal(s: &Setup) {
    for t in [
        "pgbench_accounts",
        "pgbench_branches",
        "pgbench_tellers",
        "pgbench_history",
        "keyed",
    ] {
        assert_eq!(
            content_hash(&s.p.source, t),
            content_hash(&s.p.target, t),
            "content of {t}"
        );
    }
}

#[test]
fn sigkill_at_random_moments_under_load_loses_and_repeats_nothing() {
    let s = streaming_pair();
    let w = load(&s);
    // A fixed sequence of pseudo-random pauses (printed, so a failure can be replayed).
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill pauses seed {seed}");
    for round in 0..6 {
        let mut c = cdc(&s, &format!("cdc{round}"));
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pause = 300 + (seed >> 33) % 1500;
        std::thread::sleep(Duration::from_millis(pause));
        c.kill().unwrap();
        c.wait().unwrap();
    }
    w.stop();
    let out = ok(&["cdc", "-t", &s.task, "--until", "now"]);
    assert!(out.contains("cdc: applied"), "{out}");
    assert_equal(&s);
}

#[test]
fn source_and_target_restarts_are_survived() {
    let mut s = streaming_pair();
    let w = load(&s);
    let mut c = cdc(&s, "cdc");
    std::thread::sleep(Duration::from_secs(2));
    s.p.target.restart().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    w.stop();
    s.p.source.restart().unwrap();
    let w = load(&s);
    std::thread::sleep(Duration::from_secs(2));
    w.stop();
    // Let the background apply run on, stop it gracefully, and finish to the source's
    // current position.
    std::thread::sleep(Duration::from_secs(3));
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let status = c.wait().unwrap();
    let log = std::fs::read_to_string(s.dir.path().join("cdc")).unwrap_or_default();
    assert!(status.success(), "{status}: {log}");
    assert!(
        log.matches("reconnecting").count() >= 2,
        "both restarts were seen and survived: {log}"
    );
    ok(&["cdc", "-t", &s.task, "--until", "now"]);
    assert_equal(&s);
}

#[test]
fn a_column_added_on_the_source_stops_the_apply_until_the_target_has_it() {
    let s = streaming_pair();
    s.p.source
        .psql(DB, "ALTER TABLE keyed ADD COLUMN note text; INSERT INTO keyed VALUES (9001, 'new', 1, 'with a note');")
        .unwrap();
    let o = pgtransit(&["cdc", "-t", &s.task, "--until", "now"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o)
            .contains("schema change on the source: \"public\".\"keyed\" has a column \"note\""),
        "{}",
        text(&o)
    );
    s.p.target
        .psql(DB, "ALTER TABLE keyed ADD COLUMN note text")
        .unwrap();
    ok(&["cdc", "-t", &s.task, "--until", "now"]);
    assert_eq!(
        s.p.target
            .psql(DB, "SELECT note FROM keyed WHERE id = 9001")
            .unwrap()
            .trim(),
        "with a note"
    );
    assert_equal(&s);
}

#[test]
fn a_million_row_transaction_streams_in_bounded_memory() {
    let s = streaming_pair();
    s.p.source
        .psql(
            DB,
            "INSERT INTO keyed SELECT g, repeat('m', 40), g FROM generate_series(10001, 1010000) g",
        )
        .unwrap();
    let started = Instant::now();
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgtransit"))
        .args(["cdc", "-t", &s.task, "--until", "now"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", c.id());
    let mut peak_kb = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        if let Some(st) = c.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "1M-row transaction applied in {secs:.1} s ({:.0} rows/s), peak RSS {} MB",
        1e6 / secs,
        peak_kb / 1024
    );
    assert!(
        peak_kb > 0 && peak_kb < 200 * 1024,
        "peak RSS {} kB",
        peak_kb
    );
    assert_eq!(
        content_hash(&s.p.source, "keyed"),
        content_hash(&s.p.target, "keyed")
    );
}
