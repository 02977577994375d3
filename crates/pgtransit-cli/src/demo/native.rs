//! `pgtransit demo --engine native`: the Pigsty flow on PostgreSQL's own logical replication,
//! under a live pgbench workload, from two empty sandboxes to a verified copy.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgsandbox::{Builder, Cluster};
use pgtransit::check::Scope;
use pgtransit::native;
use pgtransit::schema::{SchemaOptions, Section};
use pgtransit::step::Session;
use pgtransit::task::{Engine, Task};

use crate::check_cmd;
use pgtransit::Error;

use super::{failure, WORKLOAD_SQL};
const DB: &str = "shop";

fn step(title: &str) -> Instant {
    outln!("\n$ pgtransit {title}");
    Instant::now()
}

fn done(start: Instant) {
    outln!("  ({:.1} s)", start.elapsed().as_secs_f64());
}

/// pgbench over the source's Unix socket (trusted: no password needed for the load).
fn pgbench(source: &Cluster, args: &[&str]) -> Command {
    let mut c = Command::new(source.client_program("pgbench"));
    c.args(args).arg("-h").arg(source.socket_dir()).args([
        "-p",
        &source.port().to_string(),
        "-U",
        "postgres",
        DB,
    ]);
    c
}

struct Load(Child);

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run() -> Result<u8, Error> {
    outln!("pgtransit demo (native engine): two PostgreSQL sandboxes, pgbench tables plus a hard schema,");
    outln!("a live pgbench workload, and the Pigsty migration flow on PUBLICATION / SUBSCRIPTION.");
    let password = format!("demo-{}-{}", std::process::id(), super::nanos());
    let source = Builder::new()
        .password(&password)
        .start()
        .map_err(failure("starting the source sandbox"))?;
    let target = Builder::new()
        .password(&password)
        .start()
        .map_err(failure("starting the target sandbox"))?;
    for c in [&source, &target] {
        c.create_database(DB)
            .map_err(failure("creating the database"))?;
    }
    super::load_source(&source, DB, 1)?;
    outln!(
        "  source 127.0.0.1:{}  target 127.0.0.1:{}  database \"{DB}\": pgbench scale 1 plus quoted, unicode,",
        source.port(),
        target.port()
    );
    outln!("  partitioned, keyless, enum, array, jsonb, TOAST, generated, identity and descending-sequence tables");

    let mut task = Task::from_urls("demo", &source.url(DB), Some(&target.url(DB)))?;
    task.engine = Engine::Native;
    // The target server authenticates to the source with this; it is masked wherever shown.
    task.sub_conn = format!(
        "host=127.0.0.1 port={} dbname={DB} user=postgres password={password}",
        source.port()
    );
    let dir = tempfile::tempdir().map_err(|e| Error::failed(e.to_string()))?;
    let ctx = dir.path().join("demo");
    pgtransit::generate::generate(&task, std::path::Path::new("(demo task)"), &ctx)?;
    outln!("\n$ pgtransit generate   # the same flow as scripts: {}/ (README.md, copy-schema, create-pub, ...)", ctx.display());

    let t = step("check replica-identity --fix --apply   # pgbench_history has no key");
    pgtransit::check::run_and_fix(
        &task,
        &[Scope::ReplicaIdentity],
        true,
        true,
        &check_cmd::say(false),
    )
    .await?;
    done(t);

    let script = dir.path().join("workload.sql");
    std::fs::write(&script, WORKLOAD_SQL).map_err(|e| Error::failed(e.to_string()))?;
    let load = Load(
        pgbench(
            &source,
            &[
                "-n",
                "-c",
                "2",
                "-T",
                "600",
                "-b",
                "tpcb-like@4",
                "-f",
                &format!("{}@1", script.display()),
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::failed(format!("starting pgbench: {e}")))?,
    );
    outln!("\n  pgbench is now writing to the source (tpcb-like plus inserts, updates and deletes on the hard tables)");

    let mut s = Session::new(&task, |l| outln!("{l}"));
    let schema = |section| SchemaOptions {
        section,
        clean: false,
        force: false,
        workdir: None,
        stream: false,
        index_jobs: 1,
    };
    let t = step("copy-schema   # pre-data plus primary keys and identity indexes");
    pgtransit::schema::copy_schema(&mut s, &schema(Section::PreData)).await?;
    done(t);
    let t = step("create-pub");
    native::create_pub(&mut s).await?;
    done(t);
    let t = step("create-sub");
    native::create_sub(&mut s).await?;
    done(t);

    let t = step("progress --wait 300");
    loop {
        let p = native::progress(&mut s).await?;
        if p.complete {
            outln!(
                "  {}/{} tables streaming, lag {} bytes",
                p.streaming,
                p.total,
                p.lag_bytes.unwrap_or(0)
            );
            break;
        }
        outln!(
            "  {}/{} tables streaming, {:.0}% copied",
            p.streaming,
            p.total,
            p.percent
        );
        if t.elapsed() > Duration::from_secs(300) {
            return Err(Error::failed("the initial sync did not finish in 300 s"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    done(t);
    let t = step(
        "copy-schema --section post-data   # secondary indexes and foreign keys, after the copy",
    );
    pgtransit::schema::copy_schema(&mut s, &schema(Section::PostData)).await?;
    done(t);

    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(load);
    let fenced = Instant::now();
    outln!("\n  writes stopped (the switch moment; `pgtransit switchover` will fence for you)");
    let t = step("copy-seq 1000");
    let n = native::copy_seq(&mut s, 1000).await?;
    outln!("  {n} sequence(s) set");
    done(t);
    let t = step("diff");
    let report = native::diff(&mut s, Duration::from_secs(30)).await?;
    crate::native_cmd::print_diff_rows(&report, "  ");
    done(t);
    let verified = fenced.elapsed();
    let t = step("drop-sub");
    native::drop_sub(&mut s).await?;
    done(t);
    let t = step("drop-pub");
    native::drop_pub(&mut s).await?;
    done(t);

    let rows: i64 = report
        .rows
        .iter()
        .filter(|r| r.kind == "table")
        .filter_map(|r| r.source.as_deref()?.parse::<i64>().ok())
        .sum();
    outln!(
        "\nreport: {} table(s) with {rows} rows and {} sequence(s) compared, {} failed; \
         writes stopped to verified in {:.1} s",
        report.rows.iter().filter(|r| r.kind == "table").count(),
        report.rows.iter().filter(|r| r.kind == "sequence").count(),
        report.failures(),
        verified.as_secs_f64()
    );
    outln!("The demo clusters are stopped and removed now.");
    Ok(if report.failures() > 0 { 3 } else { 0 })
}
