//! Helpers shared by the end-to-end tests: sandbox pairs, the hard schema with pgbench
//! tables, a live workload, and content comparison.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgsandbox::{Builder, Cluster};

pub const HARD_SQL: &str = include_str!("../../src/demo/hard.sql");
pub const WORKLOAD_SQL: &str = include_str!("../../src/demo/workload.sql");
pub const DB: &str = "shop";

/// Every replicated table of the hard schema plus pgbench's.
pub const TABLES: &[&str] = &[
    "public.pgbench_accounts",
    "public.pgbench_branches",
    "public.pgbench_tellers",
    "public.pgbench_history",
    "\"My Schema\".\"Ünïcødé Tàble\"",
    "public.events",
    "_app.nokey",
];

pub struct Pair {
    pub source: Cluster,
    pub target: Cluster,
}

/// Two sandboxes; the source holds pgbench tables (scale 1) and the hard schema, the target
/// an empty database.
pub fn hard_pair() -> Pair {
    let source = Builder::new().start().expect("source sandbox");
    let target = Builder::new().start().expect("target sandbox");
    source.create_database(DB).unwrap();
    target.create_database(DB).unwrap();
    pgbench_init_with(&source, 1, &["--foreign-keys"]);
    source.psql(DB, HARD_SQL).expect("load the hard schema");
    Pair { source, target }
}

/// pgbench (tpcb-like plus the hard-schema workload) against the source until stopped.
pub struct Workload {
    child: Child,
    psql: std::path::PathBuf,
    socket: std::path::PathBuf,
    port: u16,
}

impl Workload {
    pub fn start(source: &Cluster, dir: &Path) -> Workload {
        Workload::start_script(source, dir, WORKLOAD_SQL)
    }

    /// pgbench tpcb-like plus `script` (weight 4 : 1).
    pub fn start_script(source: &Cluster, dir: &Path, script_text: &str) -> Workload {
        Workload::spawn(source, dir, script_text, true)
    }

    /// Only `script`, on a database without pgbench's tables.
    pub fn custom(source: &Cluster, dir: &Path, script_text: &str) -> Workload {
        Workload::spawn(source, dir, script_text, false)
    }

    fn spawn(source: &Cluster, dir: &Path, script_text: &str, tpcb: bool) -> Workload {
        let script = dir.join("workload.sql");
        std::fs::write(&script, script_text).unwrap();
        let mut cmd = Command::new(source.client_program("pgbench"));
        cmd.args(["-n", "-c", "2", "-T", "600"]);
        if tpcb {
            cmd.args(["-b", "tpcb-like@4"]);
        }
        let child = cmd
            .arg("-f")
            .arg(format!("{}@1", script.display()))
            .arg("-h")
            .arg(source.socket_dir())
            .args(["-p", &source.port().to_string(), "-U", "postgres", DB])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbench");
        Workload {
            child,
            psql: source.client_program("psql"),
            socket: source.socket_dir(),
            port: source.port(),
        }
    }

    /// Kill pgbench and wait until its server sessions are gone: a statement already sent
    /// (a COMMIT) still completes after the client dies, so "stopped" means no session left.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..200 {
            let out = Command::new(&self.psql)
                .args(["-X", "-A", "-t", "-h"])
                .arg(&self.socket)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    DB,
                    "-c",
                ])
                .arg("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'")
                .output();
            if matches!(&out, Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "0") {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("pgbench sessions still on the source 10 s after the kill");
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// A hash over all rows of `table` in a total order.
pub fn content_hash(c: &Cluster, table: &str) -> String {
    content_hash_in(c, DB, table)
}

/// `content_hash` of a table in database `db`.
pub fn content_hash_in(c: &Cluster, db: &str, table: &str) -> String {
    c.psql(
        db,
        &format!("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"),
    )
    .unwrap()
    .trim()
    .to_string()
}

/// name -> (last_value, increment) for every sequence.
pub fn sequences(c: &Cluster) -> Vec<(String, Option<i64>, i64)> {
    c.psql(
        DB,
        "SELECT format('%I.%I', schemaname, sequencename), coalesce(last_value::text, ''), increment_by \
         FROM pg_sequences ORDER BY 1",
    )
    .unwrap()
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (f[0].to_string(), f[1].parse().ok(), f[2].parse().unwrap())
    })
    .collect()
}

/// Publications, subscriptions and slots left on a cluster.
pub fn leftovers(c: &Cluster) -> String {
    leftovers_in(c, DB)
}

/// `leftovers` seen from database `db` (publications are per database).
pub fn leftovers_in(c: &Cluster, db: &str) -> String {
    c.psql(
        db,
        "SELECT (SELECT count(*) FROM pg_publication) || ' ' || (SELECT count(*) FROM pg_subscription) \
         || ' ' || (SELECT count(*) FROM pg_replication_slots)",
    )
    .unwrap()
    .trim()
    .to_string()
}

pub fn pgtransit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgtransit"))
        .args(args)
        .output()
        .expect("run pgtransit")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run pgtransit and require success.
pub fn ok(args: &[&str]) -> String {
    let o = pgtransit(args);
    assert!(
        o.status.success(),
        "pgtransit {args:?} failed ({:?}):\n{}",
        o.status.code(),
        text(&o)
    );
    text(&o)
}

/// A native task file for the pair, with its context folder under `dir`.
pub fn task_file(p: &Pair, dir: &Path, name: &str) -> std::path::PathBuf {
    let file = dir.join(format!("{name}.yml"));
    std::fs::write(
        &file,
        format!(
            "name: {name}\nengine: native\nsource: {}\ntarget: {}\noptions:\n  context_dir: {}\n",
            p.source.url(DB),
            p.target.url(DB),
            dir.join("ctx").display()
        ),
    )
    .unwrap();
    file
}

/// The end state every native flow must reach: equal content, sequences shifted by 1000
/// in their direction (never-used ones unused), nothing left behind.
pub fn assert_migrated(p: &Pair) {
    for t in TABLES {
        assert_eq!(
            content_hash(&p.source, t),
            content_hash(&p.target, t),
            "content of {t}"
        );
    }
    let src = sequences(&p.source);
    let dst = sequences(&p.target);
    assert_eq!(src.len(), dst.len());
    for ((name, sv, inc), (dname, dv, _)) in src.iter().zip(dst.iter()) {
        assert_eq!(name, dname);
        match sv {
            None => assert_eq!(*dv, None, "{name} was never used and must stay unused"),
            Some(v) => assert_eq!(*dv, Some(v + 1000 * inc.signum()), "{name}"),
        }
    }
    assert!(src
        .iter()
        .any(|(n, v, inc)| n == "public.desc_seq" && *inc < 0 && v.is_some()));
    nothing_left(p);
}

/// No slot, publication, subscription or replication origin left on either server.
pub fn nothing_left(p: &Pair) {
    assert_eq!(
        leftovers(&p.source),
        "0 0 0",
        "publications subscriptions slots on the source"
    );
    assert_eq!(
        leftovers(&p.target),
        "0 0 0",
        "publications subscriptions slots on the target"
    );
    assert_eq!(
        p.target
            .psql(DB, "SELECT count(*) FROM pg_replication_origin")
            .unwrap()
            .trim(),
        "0",
        "replication origins on the target"
    );
}

/// Two sandboxes, each with an empty database `DB`; the source runs `sql` first.
pub fn empty_pair(sql: &str) -> Pair {
    let source = Builder::new().start().expect("source sandbox");
    let target = Builder::new().start().expect("target sandbox");
    for c in [&source, &target] {
        c.create_database(DB).unwrap();
    }
    if !sql.is_empty() {
        source.psql(DB, sql).expect("source setup");
    }
    Pair { source, target }
}

/// `pgbench -i` at `scale` into `DB`.
pub fn pgbench_init(c: &Cluster, scale: u32) {
    pgbench_init_with(c, scale, &[]);
}

/// `pgbench -i` at `scale` into `DB`, with more options.
pub fn pgbench_init_with(c: &Cluster, scale: u32, extra: &[&str]) {
    let out = Command::new(c.client_program("pgbench"))
        .args(["-i", "-q", "-s", &scale.to_string()])
        .args(extra)
        .arg("-h")
        .arg(c.socket_dir())
        .args(["-p", &c.port().to_string(), "-U", "postgres", DB])
        .output()
        .expect("pgbench -i");
    assert!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pgbench_history has no key: FULL identity, as `check replica-identity --fix` gives
    // it (a table without a usable identity is never published).
    c.psql(DB, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        .expect("replica identity of pgbench_history");
}

/// A stream-engine task file for the pair under `dir`.
pub fn stream_task_file(p: &Pair, dir: &Path, name: &str) -> std::path::PathBuf {
    let file = dir.join(format!("{name}.yml"));
    std::fs::write(
        &file,
        format!(
            "name: {name}\nsource: {}\ntarget: {}\n",
            p.source.url(DB),
            p.target.url(DB)
        ),
    )
    .unwrap();
    file
}

/// The stream engine's copy: schema without keys, data, then keys and indexes.
pub fn stream_copy(task: &str) {
    ok(&["init-struct", "-t", task]);
    ok(&["init-data", "-t", task]);
    ok(&["init-struct", "-t", task, "--section", "post-data"]);
}

/// pgtransit with its task store under `home` (and no PGPASSWORD: passwords come from the
/// task's own password file).
pub fn pt(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgtransit"))
        .args(args)
        .env("PGTRANSIT_HOME", home)
        .env_remove("PGPASSWORD")
        .output()
        .expect("run pgtransit")
}

/// [`pt`], requiring success.
pub fn pt_ok(home: &Path, args: &[&str]) -> String {
    let o = pt(home, args);
    assert!(
        o.status.success(),
        "pgtransit {args:?} failed ({:?}):\n{}",
        o.status.code(),
        text(&o)
    );
    text(&o)
}

/// `create` a task from `p`'s URLs and wait until its cdc step runs.
pub fn start_task(home: &Path, p: &Pair, name: &str, engine: &str) {
    start_task_with(home, p, name, engine, &[]);
}

/// [`start_task`] with more `create` options.
pub fn start_task_with(home: &Path, p: &Pair, name: &str, engine: &str, extra: &[&str]) {
    let (src, dst) = (p.source.url(DB), p.target.url(DB));
    let mut args = vec![
        "create", name, "--engine", engine, "--source", &src, "--target", &dst,
    ];
    args.extend_from_slice(extra);
    pt_ok(home, &args);
    wait_cdc_running(home, name);
}

/// `describe NAME --json`.
pub fn describe_json(home: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&pt_ok(home, &["describe", name, "--json"])).expect("describe --json")
}

/// Wait until the task's cdc step runs; a failed task fails the test with its state.
pub fn wait_cdc_running(home: &Path, name: &str) {
    let t = Instant::now();
    loop {
        let d = describe_json(home, name);
        let cdc = d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "cdc" && s["status"] == "running");
        if cdc {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120) && d["status"] != "failed",
            "{d:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// SIGTERM the task's worker and wait until describe shows none.
pub fn stop_worker(home: &Path, name: &str) {
    let pid = describe_json(home, name)["worker_pid"].as_i64().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let t = Instant::now();
    while describe_json(home, name)["worker_pid"].as_i64().is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the worker did not stop"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// GET `path` from the metrics endpoint at `addr`: the whole response.
pub fn scrape(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run a generated script without a terminal, as a job would.
pub fn script(
    ctx: &std::path::Path,
    bindir: &std::path::Path,
    name: &str,
    args: &[&str],
) -> std::process::Output {
    let path = format!(
        "{}:{}",
        bindir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new(ctx.join(name))
        .args(args)
        .env("PATH", path)
        .env_remove("MIGRATION_CONTEXT")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script")
}

pub fn script_ok(
    ctx: &std::path::Path,
    bindir: &std::path::Path,
    name: &str,
    args: &[&str],
) -> String {
    let o = script(ctx, bindir, name, args);
    assert!(
        o.status.success(),
        "{name} {args:?} failed ({:?}):\n{}",
        o.status.code(),
        text(&o)
    );
    text(&o)
}
