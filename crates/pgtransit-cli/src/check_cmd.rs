//! `pgtransit check [users|databases|hba|replica-identity|objects|config|all]`.

use clap::{Args, ValueEnum};
use pgtransit::check::{self, Report, Scope};
use pgtransit::conn;

use crate::{resolve_task, Failure, TaskArgs};

#[derive(Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    Users,
    Databases,
    Hba,
    ReplicaIdentity,
    Objects,
    Config,
    All,
}

#[derive(Args)]
pub struct CheckArgs {
    /// What to check
    #[arg(value_enum, default_value = "all")]
    scope: ScopeArg,
    #[command(flatten)]
    task: TaskArgs,
    /// Print the statements that give every table a replica identity
    #[arg(long)]
    fix: bool,
    /// Run those statements on the source, then check again
    #[arg(long, requires = "fix")]
    apply: bool,
    /// Machine-readable output (schema: docs/check-json.md)
    #[arg(long)]
    json: bool,
}

fn scopes(arg: ScopeArg) -> Vec<Scope> {
    match arg {
        ScopeArg::Users => vec![Scope::Users],
        ScopeArg::Databases => vec![Scope::Databases],
        ScopeArg::Hba => vec![Scope::Hba],
        ScopeArg::ReplicaIdentity => vec![Scope::ReplicaIdentity],
        ScopeArg::Objects => vec![Scope::Objects],
        ScopeArg::Config => vec![Scope::Config],
        ScopeArg::All => Scope::ALL.to_vec(),
    }
}

pub async fn run(args: CheckArgs) -> Result<u8, Failure> {
    let task = resolve_task(&args.task)?;
    let scopes = scopes(args.scope);
    let report = run_checks(&task, &scopes, args.fix, args.apply, args.json).await?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| Failure::other(e.to_string()))?
        );
    } else {
        out!(
            "{}",
            check::render_text(&report, scopes.contains(&Scope::ReplicaIdentity))
        );
    }
    Ok(if report.has_errors() { 3 } else { 0 })
}

/// Connect, check, and with `fix` print (and with `apply` run) the replica identity fixes.
pub async fn run_checks(
    task: &pgtransit::task::Task,
    scopes: &[Scope],
    fix: bool,
    apply: bool,
    quiet: bool,
) -> Result<Report, Failure> {
    let source = conn::connect(&task.source).await?;
    let target = match &task.target {
        Some(t) => Some(conn::connect(t).await?),
        None => None,
    };
    let report = check::run(task, &source, target.as_ref(), scopes).await?;
    if !fix {
        return Ok(report);
    }
    // Each missing-identity finding carries its fix statement.
    let statements: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.code == "replica-identity.missing")
        .filter_map(|f| f.fix.clone())
        .collect();
    let say = |s: String| {
        if quiet {
            eprintln!("{s}")
        } else {
            outln!("{s}")
        }
    };
    if statements.is_empty() {
        say("-- every selected table has a replica identity: nothing to fix".into());
        return Ok(report);
    }
    say(format!(
        "-- replica identity fixes for {} ({} table(s)):",
        task.source.display(),
        statements.len()
    ));
    for s in &statements {
        say(s.clone());
    }
    if !apply {
        say("-- run them with: pgtransit check replica-identity --fix --apply".into());
        return Ok(report);
    }
    check::apply_fixes(&source, &statements).await?;
    say(format!(
        "-- applied {} statement(s); checking again\n",
        statements.len()
    ));
    Ok(check::run(task, &source, target.as_ref(), scopes).await?)
}
