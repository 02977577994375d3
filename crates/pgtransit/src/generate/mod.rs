//! `generate`: the Pigsty-style migration context folder — `activate`, the check scripts, a
//! script per native step, sample `disable-src` and `re-routing`, and the manual
//! (`README.md`) filled with the task's values. The scripts run the SQL files in `sql/`,
//! which are the SQL the `pgtransit` commands run, bound to this task.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use minijinja::{context, syntax::SyntaxConfig, Environment};

use crate::conn::ConnSpec;
use crate::native::sql;
use crate::task::{Task, TaskSource};

const LIB: &str = include_str!("templates/common.sh.j2");
const ACTIVATE: &str = include_str!("templates/activate.j2");
const MANUAL: &str = include_str!("templates/README.md.j2");
const CHECK_REPL_SQL: &str = include_str!("templates/check-repl.sql");
const CHECK_MISC_SQL: &str = include_str!("templates/check-misc.sql");

/// Every script, by file name.
pub const SCRIPTS: &[(&str, &str)] = &[
    ("check-user", include_str!("templates/check-user.j2")),
    ("check-db", include_str!("templates/check-db.j2")),
    ("check-hba", include_str!("templates/check-hba.j2")),
    ("check-repl", include_str!("templates/check-repl.j2")),
    ("check-misc", include_str!("templates/check-misc.j2")),
    ("copy-schema", include_str!("templates/copy-schema.j2")),
    ("create-pub", include_str!("templates/create-pub.j2")),
    ("create-sub", include_str!("templates/create-sub.j2")),
    ("copy-progress", include_str!("templates/copy-progress.j2")),
    ("copy-diff", include_str!("templates/copy-diff.j2")),
    ("copy-seq", include_str!("templates/copy-seq.j2")),
    ("refresh", include_str!("templates/refresh.j2")),
    ("drop-sub", include_str!("templates/drop-sub.j2")),
    ("drop-pub", include_str!("templates/drop-pub.j2")),
    ("disable-src", include_str!("templates/disable-src.j2")),
    ("re-routing", include_str!("templates/re-routing.j2")),
];

/// The script names of Pigsty's v1 tutorial (the seeds' `pgsql-migration.yml` manual),
/// each a thin wrapper around today's script: (v1 name, script, what it does). Their
/// users type them as written.
pub const V1_NAMES: &[(&str, &str, &str)] = &[
    (
        "check-replica-identity",
        "check-repl",
        "make sure every table has a replica identity",
    ),
    (
        "check-replica-identity-solution",
        "check-repl",
        "the fix for tables without one (check-repl prints it)",
    ),
    (
        "check-special-object",
        "check-misc",
        "special objects: materialized views and the like",
    ),
    (
        "check-special-objec",
        "check-misc",
        "the same, as the v1 manual spells it",
    ),
    (
        "compare",
        "copy-diff",
        "fast check on data consistency (row counts, sequences)",
    ),
    ("progress", "copy-progress", "logical replication progress"),
    (
        "next-seq",
        "copy-seq",
        "sequences set and moved 10000 further (or N: next-seq N)",
    ),
    (
        "remove-sub",
        "drop-sub",
        "remove the subscription from the target",
    ),
];

/// A v1 name's wrapper: it runs today's script with the same arguments (`next-seq` adds
/// the v1 default shift, 10000, when no number is given).
fn v1_wrapper(v1: &str, script: &str, what: &str) -> String {
    let run = if v1 == "next-seq" {
        format!(
            "for a in \"$@\"; do [[ \"$a\" =~ ^[0-9]+$ ]] && exec \"$here/{script}\" \"$@\"; done\n\
             exec \"$here/{script}\" 10000 \"$@\""
        )
    } else {
        format!("exec \"$here/{script}\" \"$@\"")
    };
    format!(
        "#!/usr/bin/env bash\n# {v1} (Pigsty v1's name): {what}; runs ./{script}.\n\
         here=$(dirname \"${{BASH_SOURCE[0]}}\")\n{run}\n"
    )
}

/// What was written.
#[derive(Debug)]
pub struct Generated {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

/// A shell word in single quotes.
fn sh(s: String) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Text safe inside double quotes in bash.
fn shq(s: String) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('$', "\\$")
        .replace('`', "\\`")
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Bash's `${#array[@]}` would open a Jinja comment; only `{{ }}` and `{% %}` are ours.
    let syntax = SyntaxConfig::builder()
        .comment_delimiters("{#!", "!#}")
        .build()
        .expect("valid delimiters");
    env.set_syntax(syntax);
    env.set_keep_trailing_newline(true);
    env.add_filter("sh", sh);
    env.add_filter("shq", shq);
    env
}

/// A connection string or URL without its password, as it may be written to a file.
fn without_password(spec: &ConnSpec) -> String {
    let mut s = spec.clone();
    s.password = None;
    s.masked()
}

/// The folder `generate` writes by default: `<context_dir>/<src_cls>.<src_db>` for a Pigsty
/// task, `<context_dir>/<name>` for a native one.
pub fn default_dir(task: &Task) -> PathBuf {
    task.context_dir.clone()
}

/// Write the context folder for `task` (read from `task_file`) into `dir`.
pub fn generate(task: &Task, task_file: &Path, dir: &Path) -> crate::Result<Generated> {
    write_context(task, task_file, dir).map_err(crate::Error::failed)
}

fn write_context(task: &Task, task_file: &Path, dir: &Path) -> Result<Generated, String> {
    let target = task
        .target
        .as_ref()
        .ok_or("the task has no target: a context folder needs both sides")?;
    let (src_cls, src_db, src_ip, dst_cls, dst_db, dst_ip, context) = match &task.origin {
        TaskSource::Pigsty(v) => {
            let get = |o: &Option<String>| o.clone().unwrap_or_default();
            (
                get(&v.src_cls),
                get(&v.src_db),
                get(&v.src_ip),
                get(&v.dst_cls),
                get(&v.dst_db),
                get(&v.dst_ip),
                format!("{}.{}", get(&v.src_cls), get(&v.src_db)),
            )
        }
        TaskSource::Native => (
            task.source.host(),
            task.source.dbname(),
            task.source.host(),
            target.host(),
            target.dbname(),
            target.host(),
            task.name.clone(),
        ),
    };
    let objects = if task.objects.include.is_empty() && task.objects.exclude.is_empty() {
        "every user schema".to_string()
    } else {
        let list = |v: &[crate::task::ObjectPattern]| {
            v.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = if task.objects.include.is_empty() {
            "every user schema".to_string()
        } else {
            list(&task.objects.include)
        };
        if !task.objects.exclude.is_empty() {
            s.push_str(&format!(", except {}", list(&task.objects.exclude)));
        }
        s
    };
    let ctx = context! {
        context => context,
        version => env!("CARGO_PKG_VERSION"),
        task_file => task_file.display().to_string(),
        dir => dir.display().to_string(),
        src_cls, src_db, src_ip, dst_cls, dst_db, dst_ip,
        src_pg => without_password(&task.source),
        dst_pg => without_password(target),
        src_display => task.source.display(),
        dst_display => target.display(),
        pub => task.publication.clone(),
        sub => task.subscription.clone(),
        slot => task.slot.clone(),
        sub_conn => crate::task::strip_conn_string_password(&task.sub_conn),
        owner_note => sql::owner_note(task),
        repl_user => task.replication_user.clone(),
        objects,
    };
    let env = environment();
    let render = |name: &str, text: &str| {
        env.render_str(text, &ctx)
            .map_err(|e| format!("rendering {name}: {e:#}"))
    };

    for d in [
        dir.to_path_buf(),
        dir.join("lib"),
        dir.join("sql"),
        dir.join("data"),
    ] {
        // Private when pgtransit makes it; a folder that exists keeps the mode its owner
        // gave it (it may be a shared parent).
        if d.exists() {
            continue;
        }
        fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("setting the mode of {}: {e}", d.display()))?;
    }
    let mut files = Vec::new();
    let mut write = |rel: &str, text: &str, mode: u32| -> Result<(), String> {
        let path = dir.join(rel);
        write_private(&path, text, mode)?;
        files.push(path);
        Ok(())
    };
    write(MARKER, MARKER_TEXT, 0o600)?;
    write("activate", &render("activate", ACTIVATE)?, 0o600)?;
    write("lib/common.sh", &render("lib/common.sh", LIB)?, 0o600)?;
    write("README.md", &render("README.md", MANUAL)?, 0o600)?;
    for (name, text) in SCRIPTS {
        write(name, &render(name, text)?, 0o700)?;
    }
    for (v1, script, what) in V1_NAMES {
        write(v1, &v1_wrapper(v1, script, what), 0o700)?;
    }
    for (name, text) in sql::ALL {
        write(&format!("sql/{name}"), &sql::for_script(text, task), 0o600)?;
    }
    write(
        "sql/check-repl.sql",
        &sql::for_script(CHECK_REPL_SQL, task),
        0o600,
    )?;
    write(
        "sql/check-misc.sql",
        &sql::for_script(CHECK_MISC_SQL, task),
        0o600,
    )?;
    Ok(Generated {
        dir: dir.to_path_buf(),
        files,
    })
}

/// The file that says a folder is a context folder pgtransit generated (and may generate
/// again, replacing its files).
pub const MARKER: &str = ".pgtransit-context";
const MARKER_TEXT: &str =
    "This folder was generated by `pgtransit generate`; running it again replaces its files.\n";

/// Refuse to write into a folder that holds files and was not generated by pgtransit: its
/// files (a README.md, an activate) would be replaced. Names a few of them.
pub fn refuse_foreign_dir(dir: &Path) -> crate::Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    if dir.join(MARKER).exists() {
        return Ok(());
    }
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let shown = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    Err(crate::Error::refused(format!(
        "{} exists, holds {} file(s) ({shown}{}) and was not generated by pgtransit (no {MARKER}): \
         generate would replace files in it. Give --dir a new or empty folder, or pass --force \
         to write into it anyway",
        dir.display(),
        names.len(),
        if names.len() > 5 { ", ..." } else { "" }
    )))
}

/// Write `text` to `path` with `mode`, replacing what was there.
fn write_private(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("setting the mode of {}: {e}", path.display()))
}
