//! `pgtransit check`: the assessment a DBA runs before a migration. Each check reads the
//! catalogs of the source (and the target, when given) and returns findings; nothing is
//! changed except by `replica-identity --fix --apply`.

mod config;
mod databases;
mod finding;
mod hba;
mod objects;
mod privileges;
mod render;
mod replica_identity;
mod users;

use serde::Serialize;
use tokio_postgres::Client;

pub use finding::{Finding, Severity, Side};
pub use render::render_text;
pub use replica_identity::{apply_fixes, TableRow};

use crate::catalog::{self, TableInfo};
use crate::task::Task;

/// Which checks to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    Users,
    Databases,
    Hba,
    ReplicaIdentity,
    Objects,
    Config,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Users,
        Scope::Databases,
        Scope::Hba,
        Scope::ReplicaIdentity,
        Scope::Objects,
        Scope::Config,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Users => "users",
            Scope::Databases => "databases",
            Scope::Hba => "hba",
            Scope::ReplicaIdentity => "replica-identity",
            Scope::Objects => "objects",
            Scope::Config => "config",
        }
    }
}

/// The open connections and what is known about both sides.
pub struct Context<'a> {
    pub task: &'a Task,
    pub source: &'a Client,
    pub target: Option<&'a Client>,
    pub source_version: i32,
    pub target_version: Option<i32>,
    /// Every table of the source, selected or not.
    pub tables: Vec<TableInfo>,
}

impl Context<'_> {
    /// The tables the task moves.
    pub fn selected(&self) -> impl Iterator<Item = &TableInfo> {
        self.tables
            .iter()
            .filter(|t| self.task.objects.includes_table(&t.schema, &t.name))
    }

    /// The selected tables and the partitions of selected partitioned tables (selected or
    /// not themselves): every table whose rows are copied and whose changes are published.
    pub fn selected_with_partitions(&self) -> impl Iterator<Item = &TableInfo> {
        let f = &self.task.objects;
        self.tables.iter().filter(move |t| {
            f.includes_table(&t.schema, &t.name)
                || t.partition_root
                    .as_ref()
                    .is_some_and(|(s, n)| f.includes_table(s, n))
        })
    }
}

/// The result of a check run; its JSON form is documented in docs/check-json.md.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Version of this JSON layout.
    pub format: u32,
    pub task: String,
    pub source: String,
    pub target: Option<String>,
    pub source_version: i32,
    pub target_version: Option<i32>,
    pub scopes: Vec<Scope>,
    pub summary: Summary,
    pub findings: Vec<Finding>,
    /// The selected tables with keys, identity and size (replica-identity check).
    pub tables: Vec<TableRow>,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.summary.errors > 0
    }
}

/// Run the checks in `scopes` (in their fixed order).
pub async fn run(
    task: &Task,
    source: &Client,
    target: Option<&Client>,
    scopes: &[Scope],
) -> Result<Report, tokio_postgres::Error> {
    let source_version = catalog::server_version_num(source).await?;
    let target_version = match target {
        Some(t) => Some(catalog::server_version_num(t).await?),
        None => None,
    };
    let ctx = Context {
        task,
        source,
        target,
        source_version,
        target_version,
        tables: catalog::list_tables(source).await?,
    };
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let mut findings = Vec::new();
    let mut tables = Vec::new();
    for scope in &scopes {
        match scope {
            Scope::Users => findings.extend(users::check(&ctx).await?),
            Scope::Databases => findings.extend(databases::check(&ctx).await?),
            Scope::Hba => findings.extend(hba::check(&ctx).await?),
            Scope::ReplicaIdentity => {
                let (f, rows) = replica_identity::check(&ctx);
                findings.extend(f);
                tables = rows;
            }
            Scope::Objects => findings.extend(objects::check(&ctx).await?),
            Scope::Config => findings.extend(config::check(&ctx).await?),
        }
    }
    // Stable order: by severity, then as found.
    findings.sort_by_key(|f| f.severity);
    let summary = Summary {
        errors: count(&findings, Severity::Error),
        warnings: count(&findings, Severity::Warning),
        infos: count(&findings, Severity::Info),
    };
    Ok(Report {
        format: 1,
        task: task.name.clone(),
        source: task.source.display(),
        target: task.target.as_ref().map(|t| t.display()),
        source_version,
        target_version,
        scopes,
        summary,
        findings,
        tables,
    })
}

/// Connect to both sides and check; with `fix`, say the statements that give every table a
/// replica identity, and with `apply` run them on the source and check again.
pub async fn run_and_fix(
    task: &Task,
    scopes: &[Scope],
    fix: bool,
    apply: bool,
    say: &dyn Fn(&str),
) -> crate::Result<Report> {
    let failed = |e| crate::error::sql_error("checking", e);
    let source = crate::conn::connect(&task.source).await?;
    let target = match &task.target {
        Some(t) => Some(crate::conn::connect(t).await?),
        None => None,
    };
    let report = run(task, &source, target.as_ref(), scopes)
        .await
        .map_err(failed)?;
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
    if statements.is_empty() {
        say("-- every selected table has a replica identity: nothing to fix");
        return Ok(report);
    }
    say(&format!(
        "-- replica identity fixes for {} ({} table(s)):",
        task.source.display(),
        statements.len()
    ));
    for s in &statements {
        say(s);
    }
    if !apply {
        say("-- run them with: pgtransit check replica-identity --fix --apply");
        return Ok(report);
    }
    apply_fixes(&source, &statements)
        .await
        .map_err(|e| crate::error::sql_error("fixing replica identities (on the source)", e))?;
    say(&format!(
        "-- applied {} statement(s); checking again\n",
        statements.len()
    ));
    run(task, &source, target.as_ref(), scopes)
        .await
        .map_err(failed)
}

fn count(findings: &[Finding], s: Severity) -> usize {
    findings.iter().filter(|f| f.severity == s).count()
}

/// `15.18` from 150018.
pub fn version_text(num: i32) -> String {
    format!("{}.{}", num / 10000, num % 10000)
}
