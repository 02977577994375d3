//! `pgtransit-bench`: the initial copy (schema, data, indexes) of one dataset, timed for every
//! tool on the same two sandbox clusters in one run. Not a test: run it with
//! `cargo run --release -p pgtransit-bench -- [--scale N] [--big-rows N] [--wide-rows N]`.
//! It prints each time with its ratio to pgtransit and writes bench/results/latest.{md,json}.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod apply;
mod drain;
mod lag;
mod verify;

use pgsandbox::{Builder, Cluster};
use serde::Serialize;

const DATASET_SQL: &str = include_str!("dataset.sql");
const SOURCE_DB: &str = "bench";

struct Options {
    scale: u32,
    big_rows: u64,
    wide_rows: u64,
    jobs: Vec<u32>,
    out: PathBuf,
}

fn options() -> Options {
    let mut o = Options {
        scale: 30,
        big_rows: 10_000_000,
        wide_rows: 50_000,
        jobs: vec![1, 2, 4],
        out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results")),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--scale" => o.scale = v.parse().expect("--scale N"),
            "--big-rows" => o.big_rows = v.parse().expect("--big-rows N"),
            "--wide-rows" => o.wide_rows = v.parse().expect("--wide-rows N"),
            "--jobs" => {
                o.jobs = v
                    .split(',')
                    .map(|j| j.parse().expect("--jobs 1,2,4"))
                    .collect()
            }
            "--out" => o.out = PathBuf::from(v),
            "--small" => {
                o.scale = 2;
                o.big_rows = 300_000;
                o.wide_rows = 2_000;
                i -= 1;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    o
}

#[derive(Serialize, Clone)]
struct Run {
    method: String,
    jobs: u32,
    seconds: f64,
    verified: bool,
    note: String,
}

fn sh(script: &str, bindir: &Path) -> Result<(), String> {
    let path = format!(
        "{}:{}",
        bindir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", script])
        .env("PATH", path)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{script}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn cluster(what: &str) -> Cluster {
    Builder::new()
        .setting("shared_buffers", "2GB")
        .setting("maintenance_work_mem", "512MB")
        .setting("max_wal_size", "16GB")
        .setting("checkpoint_timeout", "1h")
        .setting("max_sync_workers_per_subscription", "4")
        .start()
        .unwrap_or_else(|e| panic!("starting the {what} sandbox: {e}"))
}

struct Bench {
    source: Cluster,
    target: Cluster,
    pgtransit: PathBuf,
    /// Row counts and index count of the source, to verify each copy.
    expect: String,
}

const VERIFY_SQL: &str = "SELECT (SELECT count(*) FROM big) || ' ' || (SELECT count(*) FROM pgbench_accounts) || ' ' || \
    (SELECT count(*) FROM wide) || ' ' || (SELECT sum(length(body)) FROM wide) || ' ' || \
    (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public') || ' ' || \
    (SELECT count(*) FROM pg_constraint WHERE connamespace = 'public'::regnamespace)";

impl Bench {
    fn fresh_target(&self, name: &str) -> String {
        let _ = self.target.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        self.target.create_database(name).expect("create target db");
        self.target.url(name)
    }

    fn verify(&self, db: &str) -> bool {
        self.target
            .psql(db, VERIFY_SQL)
            .map(|v| v == self.expect)
            .unwrap_or(false)
    }

    fn drop_target(&self, db: &str) {
        let _ = self.target.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        );
    }

    fn cleanup_source(&self) {
        let _ = self.source.psql(
            SOURCE_DB,
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active; \
             DO $$ DECLARE p record; BEGIN FOR p IN SELECT pubname FROM pg_publication LOOP \
             EXECUTE format('DROP PUBLICATION %I', p.pubname); END LOOP; END $$;",
        );
    }

    /// Time `f` on a fresh target database, verify, drop it.
    fn run(
        &self,
        method: &str,
        jobs: u32,
        verify_full: bool,
        f: impl FnOnce(&str, &str) -> Result<(), String>,
    ) -> Run {
        let db = format!(
            "t_{}",
            method.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        let dst = self.fresh_target(&db);
        self.cleanup_source();
        let src = self.source.url(SOURCE_DB);
        eprintln!("-- {method} (jobs {jobs}) ...");
        let t = Instant::now();
        let result = f(&src, &dst);
        let seconds = t.elapsed().as_secs_f64();
        let (verified, note) = match result {
            Err(e) => (false, format!("failed: {}", e.lines().last().unwrap_or(""))),
            Ok(()) if verify_full => (self.verify(&db), String::new()),
            Ok(()) => (true, String::new()),
        };
        eprintln!(
            "   {seconds:.1} s {}",
            if verified { "verified" } else { "NOT VERIFIED" }
        );
        self.drop_target(&db);
        self.cleanup_source();
        Run {
            method: method.into(),
            jobs,
            seconds,
            verified,
            note,
        }
    }

    fn pgtransit(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new(&self.pgtransit)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

fn main() {
    let pgtransit = std::env::current_exe().unwrap().with_file_name("pgtransit");
    assert!(
        pgtransit.exists(),
        "build the CLI first: cargo build --release (looked for {})",
        pgtransit.display()
    );
    if std::env::args().any(|a| a == "--apply") {
        return apply_bench(&pgtransit);
    }
    if std::env::args().any(|a| a == "--drain") {
        return drain_bench(&pgtransit);
    }
    if std::env::args().any(|a| a == "--lag") {
        return lag_bench(&pgtransit);
    }
    if std::env::args().any(|a| a == "--verify") {
        let args: Vec<String> = std::env::args().collect();
        let scale = args
            .iter()
            .position(|a| a == "--scale")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(50);
        let (source, target) = (cluster("source"), cluster("target"));
        let md = verify::run(&pgtransit, &source, &target, scale);
        println!("{md}");
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("verify-latest.md"), &md).unwrap();
        eprintln!("results written to {}", dir.display());
        return;
    }
    let o = options();
    eprintln!("starting two sandboxes ...");
    let source = cluster("source");
    let target = cluster("target");
    let bindir = source.bindir().to_path_buf();
    source.create_database(SOURCE_DB).unwrap();
    eprintln!("generating the dataset (pgbench scale {}, big {} rows, wide {} rows, 200 small tables) ...", o.scale, o.big_rows, o.wide_rows);
    let t = Instant::now();
    sh(
        &format!(
            "pgbench -i -q -s {} -h {} -p {} -U postgres {SOURCE_DB}",
            o.scale,
            source.socket_dir().display(),
            source.port()
        ),
        &bindir,
    )
    .expect("pgbench -i");
    let sql = DATASET_SQL
        .replace(":big_rows", &o.big_rows.to_string())
        .replace(":wide_rows", &o.wide_rows.to_string());
    source.psql(SOURCE_DB, &sql).expect("dataset");
    source.psql(SOURCE_DB, "CHECKPOINT").unwrap();
    let size = source.psql(SOURCE_DB, "SELECT pg_size_pretty(pg_database_size(current_database())) || ' (' || pg_database_size(current_database()) || ' bytes)'").unwrap();
    let big_size = source
        .psql(SOURCE_DB, "SELECT pg_size_pretty(pg_table_size('big'))")
        .unwrap();
    eprintln!(
        "dataset: {size}, big table {big_size}, generated in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let expect = source.psql(SOURCE_DB, VERIFY_SQL).unwrap();
    let b = Bench {
        source,
        target,
        pgtransit,
        expect,
    };
    let mut runs = Vec::new();
    let max_jobs = *o.jobs.iter().max().unwrap_or(&4);

    runs.push(b.run("pg_dump | psql", 1, true, |s, d| {
        sh(
            &format!(
                "pg_dump --no-owner -d {} | psql -q -X -v ON_ERROR_STOP=1 -d {}",
                q(s),
                q(d)
            ),
            &bindir,
        )
    }));
    for &j in &o.jobs {
        if j == 1 {
            continue;
        }
        let dir = std::env::temp_dir().join(format!("bench-dump-{j}"));
        runs.push(b.run(&format!("pg_dump -Fd -j{j} + pg_restore -j{j}"), j, true, |s, d| {
            let _ = std::fs::remove_dir_all(&dir);
            let r = sh(
                &format!("pg_dump --no-owner -Fd -j {j} -f {} -d {} && pg_restore --no-owner -j {j} -d {} {}",
                    dir.display(), q(s), q(d), dir.display()),
                &bindir,
            );
            let _ = std::fs::remove_dir_all(&dir);
            r
        }));
    }
    if Command::new("pgcopydb").arg("--version").output().is_ok() {
        for &j in &o.jobs {
            let dir = std::env::temp_dir().join(format!("bench-pgcopydb-{j}"));
            runs.push(b.run(&format!("pgcopydb clone -j{j}"), j, true, |s, d| {
                let _ = std::fs::remove_dir_all(&dir);
                let r = sh(
                    &format!("pgcopydb clone --no-owner --source {} --target {} --table-jobs {j} --index-jobs {j} --dir {}",
                        q(s), q(d), dir.display()),
                    &bindir,
                );
                let _ = std::fs::remove_dir_all(&dir);
                r
            }));
        }
    } else {
        eprintln!("pgcopydb not installed (apt-get install pgcopydb): skipped");
    }
    runs.push(b.run("native subscription", 4, true, |s, d| {
        let base = ["--source", s, "--target", d];
        let step = |name: &str, extra: &[&str]| {
            let mut a = vec![name];
            a.extend(base);
            a.extend(extra);
            b.pgtransit(&a)
        };
        step("copy-schema", &[])?;
        step("create-pub", &[])?;
        step("create-sub", &[])?;
        step("progress", &["--wait", "3600"])?;
        step("copy-schema", &["--section", "post-data"])?;
        step("drop-sub", &[])?;
        step("drop-pub", &[])
    }));
    for &j in &o.jobs {
        runs.push(b.run(&format!("pgtransit -j{j}"), j, true, |s, d| {
            let jobs = j.to_string();
            let base = ["--source", s, "--target", d];
            let mut a = vec!["init-struct"];
            a.extend(base);
            b.pgtransit(&a)?;
            let mut a = vec!["init-data", "--table-jobs", &jobs];
            a.extend(base);
            b.pgtransit(&a)?;
            let mut a = vec![
                "init-struct",
                "--section",
                "post-data",
                "--index-jobs",
                &jobs,
            ];
            a.extend(base);
            b.pgtransit(&a)
        }));
    }
    // The floor: one COPY of the big table through two psql processes, no indexes.
    let big_schema = |d: &str| {
        sh(&format!("pg_dump --no-owner --section=pre-data -t big -d {} | psql -q -X -v ON_ERROR_STOP=1 -d {}", q(&b.source.url(SOURCE_DB)), q(d)), &bindir)
    };
    runs.push(b.run("floor: psql COPY | psql COPY (big)", 1, false, |s, d| {
        big_schema(d)?;
        sh(&format!("psql -X -d {} -c 'COPY big TO STDOUT' | psql -X -d {} -c 'COPY big FROM STDIN'", q(s), q(d)), &bindir)
    }));
    for &j in &o.jobs {
        runs.push(b.run(&format!("pgtransit init-data -j{j} (big)"), j, false, |s, d| {
            big_schema(d)?;
            let file = std::env::temp_dir().join("bench-big-task.yml");
            std::fs::write(&file, format!("name: bench-big\nsource: {s}\ntarget: {d}\nobjects:\n  include: [public.big]\n"))
                .map_err(|e| e.to_string())?;
            let jobs = j.to_string();
            b.pgtransit(&["init-data", "-t", file.to_str().unwrap(), "--table-jobs", &jobs])
        }));
    }
    report(&o, &runs, &size, &big_size, max_jobs);
}

fn ratio_base<'a>(runs: &'a [Run], r: &Run) -> Option<&'a Run> {
    let big = r.method.contains("(big)");
    let jobs = r.jobs;
    runs.iter()
        .find(|p| {
            p.method.starts_with("pgtransit") && p.method.contains("(big)") == big && p.jobs == jobs
        })
        .or_else(|| {
            runs.iter().find(|p| {
                p.method.starts_with("pgtransit")
                    && p.method.contains("(big)") == big
                    && p.jobs == 1
            })
        })
}

fn report(o: &Options, runs: &[Run], size: &str, big_size: &str, _max_jobs: u32) {
    let mut md = String::new();
    md.push_str(&format!(
        "Dataset: {size}: pgbench scale {}, `big` {} rows ({big_size}), `wide` {} TOASTed rows, 200 small tables. \
         Two PostgreSQL 15 sandboxes on one {}-core machine; every run gets a fresh target database and ends with \
         schema, data and indexes (the floor and the `(big)` rows: data of `big` only). Ratio = time / pgtransit's \
         time at the same job count (`(big)` rows: against pgtransit on `big`).\n\n",
        o.scale, o.big_rows, o.wide_rows,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    ));
    md.push_str(
        "| method | jobs | seconds | ratio to pgtransit | verified |\n|---|---:|---:|---:|---|\n",
    );
    for r in runs {
        let ratio = ratio_base(runs, r)
            .map(|p| format!("{:.2}x", r.seconds / p.seconds))
            .unwrap_or_else(|| "-".into());
        md.push_str(&format!(
            "| {} | {} | {:.1} | {} | {}{} |\n",
            r.method.replace('|', "\\|"),
            r.jobs,
            r.seconds,
            ratio,
            if r.verified { "yes" } else { "NO" },
            if r.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.note)
            }
        ));
    }
    println!("{md}");
    std::fs::create_dir_all(&o.out).expect("results folder");
    std::fs::write(o.out.join("latest.md"), &md).expect("write latest.md");
    let json = serde_json::json!({ "dataset": size, "big_table": big_size, "runs": runs });
    std::fs::write(
        o.out.join("latest.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .expect("write latest.json");
    eprintln!("results written to {}", o.out.display());
}

/// `--apply [--rows N] [--load-secs N] [--runs N]`: see apply.rs.
fn apply_bench(pgtransit: &Path) {
    let rows = arg_value("--rows", 1_000_000);
    repeated_bench("apply", 60, |make, load, runs| {
        apply::run(pgtransit, make, rows, load, runs)
    });
}

/// `--drain [--load-secs N] [--runs N]`: see drain.rs.
fn drain_bench(pgtransit: &Path) {
    repeated_bench("drain", 30, |make, load, runs| {
        drain::run(pgtransit, make, load, runs)
    });
}

/// `--lag [--load-secs N] [--runs N]`: see lag.rs.
fn lag_bench(pgtransit: &Path) {
    repeated_bench("lag", 60, |make, load, runs| {
        lag::run(pgtransit, make, load, runs)
    });
}

/// A bench mode that repeats a load of `--load-secs` (else `default_load`) `--runs` times
/// (else 3) on fresh sandbox pairs; its runs and table go to bench/results/NAME-latest.
fn repeated_bench<R: Serialize>(
    name: &str,
    default_load: u64,
    run: impl FnOnce(fn() -> (Cluster, Cluster), u64, usize) -> (Vec<R>, String),
) {
    let (all, md) = run(
        || (cluster("source"), cluster("target")),
        arg_value("--load-secs", default_load),
        arg_value("--runs", 3) as usize,
    );
    write_results(name, &md, &all);
}

/// The word after `name` on the command line.
pub(crate) fn arg_text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

/// The number after `name` on the command line, else `default`.
fn arg_value(name: &str, default: u64) -> u64 {
    arg_text(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of some runs' values (the upper one of an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// getrusage(RUSAGE_CHILDREN).ru_maxrss: the peak RSS of the largest waited-for child, MiB.
pub(crate) fn peak_child_rss_mib() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

/// Print a bench's table, and write it and its runs to bench/results/NAME-latest.{md,json}.
fn write_results(name: &str, md: &str, runs: &impl Serialize) {
    println!("{md}");
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}-latest.md")), md).unwrap();
    std::fs::write(
        dir.join(format!("{name}-latest.json")),
        serde_json::to_string_pretty(runs).unwrap(),
    )
    .unwrap();
    eprintln!("wrote {}", dir.join(format!("{name}-latest.md")).display());
}
