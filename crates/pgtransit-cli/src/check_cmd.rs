//! `pgtransit check [users|databases|hba|replica-identity|objects|config|all]`.

use clap::{Args, ValueEnum};
use pgtransit::check::{self, Scope};

use crate::{resolve_task, TaskArgs};
use pgtransit::Error;

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

pub async fn run(args: CheckArgs) -> Result<u8, Error> {
    let task = resolve_task(&args.task)?;
    let scopes = scopes(args.scope);
    let report = check::run_and_fix(&task, &scopes, args.fix, args.apply, &say(args.json)).await?;
    if args.json {
        crate::out::json(&report)?;
    } else {
        out!(
            "{}",
            check::render_text(&report, scopes.contains(&Scope::ReplicaIdentity))
        );
    }
    Ok(if report.has_errors() { 3 } else { 0 })
}

/// The fixes said on stdout (stderr under `--json`, so that stdout stays one document).
pub fn say(json: bool) -> impl Fn(&str) {
    move |l: &str| {
        if json {
            eprintln!("{l}")
        } else {
            outln!("{l}")
        }
    }
}
