//! `copy-schema`: the selected objects' schema from the source, loaded into the target with
//! errors stopping the load. pg_dump writes a custom-format archive; its table of contents
//! is split so that tables, types, functions, sequences and the keys the apply needs
//! (primary keys and replica identity indexes) are restored before the data, and the other
//! indexes, foreign keys and triggers after the initial sync.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::restore::Restorer;
use crate::conn::ConnSpec;
use crate::error::Error;
use crate::native::sql;
use crate::step::Session;
use crate::step::Side;
use crate::step::{Action, Plan};
use crate::tools;

crate::named::named! {
    /// Which part of the schema to load.
    pub enum Section {
        /// Before the data: everything but secondary indexes, foreign keys and triggers.
        PreData = "pre-data",
        /// After the initial sync: what pre-data left out.
        PostData = "post-data",
        All = "all",
    }
}

impl Section {
    fn pre(self) -> bool {
        matches!(self, Section::PreData | Section::All)
    }
    fn post(self) -> bool {
        matches!(self, Section::PostData | Section::All)
    }
}

#[derive(Clone, Debug)]
pub struct SchemaOptions {
    pub section: Section,
    /// Drop and recreate selected tables that already exist (empty) on the target.
    pub clean: bool,
    /// With `clean`: also when they hold rows.
    pub force: bool,
    /// Where the dump and its lists are kept (a temporary folder when None).
    pub workdir: Option<PathBuf>,
    /// The stream engine's way: keys are built after the load like every other index, and
    /// post-data runs `index_jobs` at a time, skipping what exists (resumable).
    pub stream: bool,
    pub index_jobs: usize,
}

fn restore_flags(clean: bool) -> String {
    let mut s = String::from("--no-owner --no-privileges --exit-on-error --single-transaction");
    if clean {
        s.push_str(" --clean --if-exists");
    }
    s
}

pub fn plan_copy_schema(task: &crate::task::Task, o: &SchemaOptions) -> Plan {
    let mut actions = Vec::new();
    let target = task
        .target
        .as_ref()
        .map(|t| t.masked())
        .unwrap_or_else(|| "<target>".into());
    if o.section.pre() {
        actions.push(Action::Inspect {
            side: Side::Target,
            why: "selected tables that already exist on the target, and whether they hold rows (guard)".into(),
            sql: sql::for_task(sql::TARGET_TABLES, task),
        });
    }
    actions.push(Action::Inspect {
        side: Side::Source,
        why: "pg_dump selection arguments".into(),
        sql: sql::for_task(sql::DUMP_ARGS, task),
    });
    actions.push(Action::Program {
        why: "dump the selected schema".into(),
        command: format!(
            "pg_dump --schema-only --format=custom --no-publications --no-subscriptions <arguments above> --file=schema.dump --dbname='{}'",
            task.source.masked()
        ),
    });
    if !o.stream {
        actions.push(Action::Inspect {
            side: Side::Source,
            why: "the keys the apply needs before the data (moved from post-data to pre-data)"
                .into(),
            sql: sql::for_task(sql::SCHEMA_KEYS, task),
        });
    }
    if o.section.pre() {
        actions.push(Action::Generate {
            from: Side::Source,
            to: Side::Target,
            why: "create the schemas the dump fills".into(),
            sql: sql::for_task(sql::CREATE_SCHEMAS, task),
        });
        actions.push(Action::Program {
            why: "load pre-data plus keys, in one transaction, stopping at the first error".into(),
            command: format!(
                "pg_restore {} --use-list=pre-data.list --dbname='{target}' schema.dump",
                restore_flags(o.clean)
            ),
        });
    }
    if o.section.post() && o.stream {
        actions.push(Action::Generate {
            from: Side::Source,
            to: Side::Target,
            why: format!(
                "build every index {} at a time (skipping those that exist); keys as a unique index, then attached",
                o.index_jobs.max(1)
            ),
            sql: sql::for_task(super::indexes::INDEX_BUILDS, task),
        });
        actions.push(Action::Program {
            why: "the rest of post-data (foreign keys, triggers, ...), skipping what exists".into(),
            command: format!(
                "pg_restore --no-owner --no-privileges --exit-on-error --jobs={} --use-list=post-data.list --dbname='{target}' schema.dump",
                o.index_jobs.max(1)
            ),
        });
    } else if o.section.post() {
        actions.push(Action::Program {
            why: "load the rest of post-data (indexes, foreign keys, triggers)".into(),
            command: format!(
                "pg_restore {} --use-list=post-data.list --dbname='{target}' schema.dump",
                restore_flags(false)
            ),
        });
    }
    Plan {
        step: if o.stream {
            "init-struct"
        } else {
            "copy-schema"
        },
        actions,
    }
}

/// Run copy-schema.
pub async fn copy_schema(s: &mut Session<'_>, o: &SchemaOptions) -> Result<(), Error> {
    let task = s.task;
    if o.section.pre() {
        guard_target_tables(s, o).await?;
    }
    let args = s
        .generate(
            Side::Source,
            "listing what to dump",
            &sql::for_task(sql::DUMP_ARGS, task),
        )
        .await?;
    if !args.iter().any(|a| a.starts_with("--schema=")) {
        return Err(Error::failed(
            "nothing to copy: no schema of the source matches the task's objects (check `objects:` include/exclude)",
        ));
    }
    if o.section.pre() {
        let stmts = s
            .generate(
                Side::Source,
                "listing schemas",
                &sql::for_task(sql::CREATE_SCHEMAS, task),
            )
            .await?;
        s.run_statements(Side::Target, &stmts, str::to_string)
            .await?;
    }
    dump_and_restore(s, args, o).await
}

/// The schema of tables created on the source after copy-schema (for `refresh`): pre-data
/// and keys, so the subscription can copy into them.
pub async fn copy_tables(s: &mut Session<'_>, tables: &[(String, String)]) -> Result<(), Error> {
    let mut schemas: Vec<&String> = tables.iter().map(|(n, _)| n).collect();
    schemas.sort();
    schemas.dedup();
    let create: Vec<String> = schemas
        .iter()
        .map(|n| format!("CREATE SCHEMA IF NOT EXISTS {};", crate::quote::ident(n)))
        .collect();
    s.run_statements(Side::Target, &create, str::to_string)
        .await?;
    let args = tables
        .iter()
        .map(|(n, t)| format!("--table={}", psql_pattern(n, t)))
        .collect();
    let o = SchemaOptions {
        section: Section::PreData,
        clean: false,
        force: false,
        workdir: None,
        stream: false,
        index_jobs: 1,
    };
    dump_and_restore(s, args, &o).await
}

/// An exact `schema.table` as a psql pattern (quoted: no wildcard, case kept).
fn psql_pattern(schema: &str, table: &str) -> String {
    format!(
        "\"{}\".\"{}\"",
        schema.replace('"', "\"\""),
        table.replace('"', "\"\"")
    )
}

async fn dump_and_restore(
    s: &mut Session<'_>,
    selection: Vec<String>,
    o: &SchemaOptions,
) -> Result<(), Error> {
    let (section, clean, workdir) = (o.section, o.clean, o.workdir.as_deref());
    let task = s.task;
    let target = s.spec(Side::Target)?.clone();
    let temp;
    let dir: &Path = match workdir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::failed(format!("creating {}: {e}", d.display())))?;
            d
        }
        None => {
            temp = tempfile::tempdir()
                .map_err(|e| Error::failed(format!("creating a temporary folder: {e}")))?;
            temp.path()
        }
    };
    let (pg_dump, restorer) = client_programs(s).await?;
    let dump = dir.join("schema.dump");
    let mut dump_args: Vec<String> = vec![
        "--schema-only".into(),
        "--format=custom".into(),
        "--no-publications".into(),
        "--no-subscriptions".into(),
    ];
    dump_args.extend(selection);
    dump_args.push(format!("--file={}", dump.display()));
    s.say(&format!(
        "  [local] pg_dump --schema-only of {}",
        task.source.display()
    ));
    run_program(&pg_dump, &dump_args, &task.source).await?;

    // The native engine needs keys before the data (the subscription applies changes
    // during the copy); the stream engine builds them after the load.
    let keys: HashSet<String> = if o.stream {
        HashSet::new()
    } else {
        s.generate(
            Side::Source,
            "listing primary keys and identity indexes",
            &sql::for_task(sql::SCHEMA_KEYS, task),
        )
        .await?
        .into_iter()
        .collect()
    };
    let pre = toc(&restorer.pg_restore, &dump, "pre-data").await?;
    let post = toc(&restorer.pg_restore, &dump, "post-data").await?;
    let (pre_list, post_list) = split_toc(&pre, &post, &keys);
    if section.pre() {
        restore(
            s, &restorer, &dump, dir, "pre-data", &pre_list, clean, &target,
        )
        .await?;
    }
    if section.post() && !o.stream {
        restore(
            s,
            &restorer,
            &dump,
            dir,
            "post-data",
            &post_list,
            false,
            &target,
        )
        .await?;
    }
    if section.post() && o.stream {
        let covered = super::indexes::build(s, o.index_jobs).await?;
        let mut rest = Vec::new();
        for line in post_list {
            let key = toc_key(&line).unwrap_or_default();
            if covered.contains(&key) || super::indexes::exists_on_target(s, &key).await? {
                continue;
            }
            rest.push(line);
        }
        restore_parallel(s, &restorer, &dump, dir, &rest, o.index_jobs, &target).await?;
    }
    Ok(())
}

/// pg_restore of the rest of post-data, `jobs` entries at a time, stopping at an error.
async fn restore_parallel(
    s: &mut Session<'_>,
    restorer: &Restorer,
    dump: &Path,
    dir: &Path,
    entries: &[String],
    jobs: usize,
    target: &ConnSpec,
) -> Result<(), Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let list = dir.join("post-data.list");
    std::fs::write(&list, entries.join("\n") + "\n")
        .map_err(|e| Error::failed(format!("writing {}: {e}", list.display())))?;
    let args = vec![
        "--no-owner".to_string(),
        "--no-privileges".to_string(),
        "--exit-on-error".to_string(),
        format!("--jobs={}", jobs.max(1)),
        format!("--use-list={}", list.display()),
        dump.display().to_string(),
    ];
    s.say(&format!(
        "  [target] pg_restore post-data: {} object(s), {} job(s)",
        entries.len(),
        if restorer.filtered() { 1 } else { jobs.max(1) }
    ));
    restorer.run(&args, target).await?;
    Ok(())
}

/// Refuse to touch selected tables that exist on the target unless told to, and never
/// drop rows without `force`.
async fn guard_target_tables(s: &mut Session<'_>, o: &SchemaOptions) -> Result<(), Error> {
    let rows = s
        .rows(
            Side::Target,
            "looking for existing tables",
            &sql::for_task(sql::TARGET_TABLES, s.task),
        )
        .await?;
    let existing: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let with_rows: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, Option<bool>>(1).unwrap_or(false))
        .map(|r| r.get(0))
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    let list = |v: &[String]| {
        let mut s = v.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 10 {
            s.push_str(&format!(" and {} more", v.len() - 10));
        }
        s
    };
    let may_drop_rows = o.clean && o.force;
    if !with_rows.is_empty() && !may_drop_rows {
        return Err(Error::refused(format!(
            "the target already holds rows in {} selected table(s): {}\n  \
             copy-schema never drops data unless told to. Empty or drop them yourself, skip this step \
             if the schema is already in place, or rerun with --clean --force to drop and recreate them \
             (their rows are lost).",
            with_rows.len(),
            list(&with_rows)
        )));
    }
    if !o.clean {
        return Err(Error::refused(format!(
            "{} selected table(s) already exist on the target (empty): {}\n  \
             rerun with --clean to drop and recreate them from the source, or skip copy-schema if the \
             schema is already in place.",
            existing.len(),
            list(&existing)
        )));
    }
    s.say(&format!(
        "  --clean: dropping and recreating {} existing table(s) on the target",
        existing.len()
    ));
    Ok(())
}

/// The pg_dump for this source and target (`tools::pg_dump_for`: PGTRANSIT_PG_BINDIR pins
/// it), and how its pg_restore restores into the target.
async fn client_programs(s: &mut Session<'_>) -> Result<(PathBuf, Restorer), Error> {
    let source = s.version(Side::Source).await? / 10000;
    let target = s.version(Side::Target).await? / 10000;
    let (pg_dump, major) = tools::pg_dump_for(source as u32, Some(target as u32))
        .map_err(|e| Error::failed(format!("{}\n  fix: {}", e.problem, e.fix)))?;
    let restorer = Restorer::new(&pg_dump, major, target as u32);
    s.say(&format!(
        "  [local] {} (PostgreSQL {major}) for a {source} source and a {target} target{}",
        pg_dump.display(),
        if restorer.filtered() {
            "; newer than the target: its SQL goes through psql, leaving out settings the target lacks"
        } else {
            ""
        }
    ));
    Ok((pg_dump, restorer))
}

pub(super) async fn run_program(
    program: &Path,
    args: &[String],
    conn: &ConnSpec,
) -> Result<String, Error> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .arg(format!("--dbname={}", conn.conninfo_without_password()))
        .envs(tools::child_env(conn))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::failed(format!("running {}: {e}", program.display())))?;
    if !out.status.success() {
        return Err(Error::failed(format!(
            "{} failed: {}",
            program
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("program"),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The table of contents of one section of the archive.
async fn toc(pg_restore: &Path, dump: &Path, section: &str) -> Result<Vec<String>, Error> {
    let out = tokio::process::Command::new(pg_restore)
        .arg("--list")
        .arg(format!("--section={section}"))
        .arg(dump)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::failed(format!("running pg_restore: {e}")))?;
    if !out.status.success() {
        return Err(Error::failed(format!(
            "pg_restore --list failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// `classid objid` of a TOC line ("3263; 2606 16477 CONSTRAINT app p p_pkey owner").
fn toc_key(line: &str) -> Option<String> {
    let mut it = line.split_whitespace().skip(1);
    Some(format!("{} {}", it.next()?, it.next()?))
}

/// Pre-data without the SCHEMA entries (created beforehand with IF NOT EXISTS) plus the key
/// entries of post-data; post-data without them.
fn split_toc(
    pre: &[String],
    post: &[String],
    keys: &HashSet<String>,
) -> (Vec<String>, Vec<String>) {
    const SCHEMA_CLASS: &str = "2615";
    let mut pre_list: Vec<String> = pre
        .iter()
        .filter(|l| toc_key(l).is_none_or(|k| !k.starts_with(&format!("{SCHEMA_CLASS} "))))
        .cloned()
        .collect();
    let mut post_list = Vec::new();
    for l in post {
        if toc_key(l).is_some_and(|k| keys.contains(&k)) {
            pre_list.push(l.clone());
        } else {
            post_list.push(l.clone());
        }
    }
    (pre_list, post_list)
}

#[allow(clippy::too_many_arguments)]
async fn restore(
    s: &mut Session<'_>,
    restorer: &Restorer,
    dump: &Path,
    dir: &Path,
    name: &str,
    entries: &[String],
    clean: bool,
    target: &ConnSpec,
) -> Result<(), Error> {
    if entries.is_empty() {
        s.say(&format!("  [target] {name}: nothing to load"));
        return Ok(());
    }
    let list = dir.join(format!("{name}.list"));
    std::fs::write(&list, entries.join("\n") + "\n")
        .map_err(|e| Error::failed(format!("writing {}: {e}", list.display())))?;
    let mut args: Vec<String> = restore_flags(clean)
        .split(' ')
        .map(str::to_string)
        .collect();
    args.push(format!("--use-list={}", list.display()));
    args.push(dump.display().to_string());
    s.say(&format!(
        "  [target] pg_restore {name}: {} object(s)",
        entries.len()
    ));
    restorer.run(&args, target).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_move_to_pre_data_and_schemas_are_dropped() {
        let pre = vec![
            "7; 2615 16465 SCHEMA - app postgres".to_string(),
            "217; 1259 16473 TABLE app p postgres".to_string(),
        ];
        let post = vec![
            "3263; 2606 16477 CONSTRAINT app p p_pkey postgres".to_string(),
            "3261; 1259 16489 INDEX public t1_v postgres".to_string(),
            "3267; 0 0 INDEX ATTACH app p1_pkey postgres".to_string(),
        ];
        let keys: HashSet<String> = ["2606 16477".to_string()].into();
        let (a, b) = split_toc(&pre, &post, &keys);
        assert_eq!(a.len(), 2);
        assert!(a[1].contains("p_pkey"));
        assert_eq!(b.len(), 2);
    }
}
