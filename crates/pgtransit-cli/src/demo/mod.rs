//! `pgtransit demo`: two sandbox clusters, a pgbouncer and a live workload, and the whole
//! migration with switchover (`show`); with `--pigsty` the Pigsty flow step by step on the
//! native engine; with `--problems` a sample database full of typical problems and the
//! pre-migration check on it.

mod native;
mod show;

use clap::Args;
use pgsandbox::{Builder, Cluster};
use pgtransit::check::Scope;
use pgtransit::task::{ObjectPattern, Task};

use crate::check_cmd;
use pgtransit::Error;

/// The sample database, loaded into the source.
pub const SAMPLE_SQL: &str = include_str!("sample.sql");

#[derive(Args)]
pub struct DemoArgs {
    /// Which engine migrates
    #[arg(long, value_enum, default_value = "stream")]
    engine: EngineArg,
    /// Instead: the Pigsty flow (copy-schema, create-pub, create-sub, ...) step by step on
    /// the native engine
    #[arg(long, conflicts_with = "problems")]
    pigsty: bool,
    /// Instead of a migration: the check on a database full of typical problems
    #[arg(long)]
    problems: bool,
    /// With --problems: print the check report as JSON
    #[arg(long, requires = "problems")]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum EngineArg {
    Native,
    Stream,
}

/// Source and target sandboxes with the sample database loaded on the source and an empty
/// database of the same name on the target, which lacks the pg_trgm extension.
pub fn start_clusters(db: &str) -> Result<(Cluster, Cluster), Error> {
    let sandbox = |b: Builder, what: &str| {
        b.start()
            .map_err(|e| Error::failed(format!("starting the {what} sandbox: {e}")))
    };
    let password = format!("demo-{}-{}", std::process::id(), nanos());
    let source = sandbox(Builder::new().password(&password), "source")?;
    let target = sandbox(
        Builder::new()
            .password(&password)
            .hide_extensions(&["pg_trgm"]),
        "target",
    )?;
    for c in [&source, &target] {
        c.create_database(db)
            .map_err(|e| Error::failed(e.to_string()))?;
    }
    source
        .psql(db, SAMPLE_SQL)
        .map_err(|e| Error::failed(format!("loading the sample database: {e}")))?;
    Ok((source, target))
}

const HARD_SQL: &str = include_str!("hard.sql");
const WORKLOAD_SQL: &str = include_str!("workload.sql");

fn failure(what: &str) -> impl Fn(pgsandbox::Error) -> Error + '_ {
    move |e| Error::failed(format!("{what}: {e}"))
}

/// pgbench's tables at `scale` (with foreign keys) and the hard schema, on the source.
fn load_source(source: &Cluster, db: &str, scale: u32) -> Result<(), Error> {
    let init = std::process::Command::new(source.client_program("pgbench"))
        .args(["-i", "-s", &scale.to_string(), "-q", "--foreign-keys", "-h"])
        .arg(source.socket_dir())
        .args(["-p", &source.port().to_string(), "-U", "postgres", db])
        .output()
        .map_err(|e| Error::failed(format!("running pgbench -i: {e}")))?;
    if !init.status.success() {
        return Err(Error::failed(format!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr).trim()
        )));
    }
    source
        .psql(db, HARD_SQL)
        .map_err(failure("loading the hard schema"))?;
    Ok(())
}

pub(crate) fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

pub async fn run(args: DemoArgs) -> Result<u8, Error> {
    if args.problems {
        return problems(args).await;
    }
    if args.pigsty {
        return native::run().await;
    }
    show::run(match args.engine {
        EngineArg::Native => "native",
        EngineArg::Stream => "stream",
    })
    .await
}

async fn problems(args: DemoArgs) -> Result<u8, Error> {
    let say = |s: &str| {
        if !args.json {
            outln!("{s}")
        }
    };
    say("pgtransit demo: starting two PostgreSQL sandboxes (source, target) ...");
    let (source, target) = start_clusters("shop")?;
    say(&format!(
        "  source  127.0.0.1:{} (PostgreSQL from {})\n  target  127.0.0.1:{} (same build, without pg_trgm)\n  loaded the sample database \"shop\" on the source\n",
        source.port(),
        source.bindir().display(),
        target.port()
    ));
    let mut task = Task::from_urls("demo", &source.url("shop"), Some(&target.url("shop")))?;
    task.objects.exclude.push(ObjectPattern::parse("scratch")?);

    say("$ pgtransit check all\n");
    let report =
        pgtransit::check::run_and_fix(&task, &Scope::ALL, false, false, &check_cmd::say(args.json))
            .await?;
    if args.json {
        crate::out::json(&report)?;
        return Ok(0);
    }
    out!("{}", pgtransit::check::render_text(&report, true));

    say("\n$ pgtransit check replica-identity --fix --apply\n");
    let fixed = pgtransit::check::run_and_fix(
        &task,
        &[Scope::ReplicaIdentity],
        true,
        true,
        &check_cmd::say(false),
    )
    .await?;
    out!("{}", pgtransit::check::render_text(&fixed, true));
    say("\nThe demo clusters are stopped and removed now.");
    Ok(0)
}
