//! The migration task: what to move, from where, to where, how. Read from a Pigsty task
//! file (accepted unchanged) or from pgtransit's native YAML form; both resolve to [`Task`].

mod error;
mod native;
mod objects;
mod pigsty;
mod show;

use std::path::{Path, PathBuf};

pub use error::TaskFileError;
pub use native::{strip_conn_string_password, to_native_yaml};
pub use objects::{is_internal_schema as objects_is_internal_schema, ObjectFilter, ObjectPattern};
pub use pigsty::PigstyVars;
pub use show::TaskView;

use crate::conn::ConnSpec;

crate::named::named! {
    /// Which engine moves the data (see DESIGN.md).
    pub enum Engine {
        /// pgtransit holds the slot, copies from its snapshot and applies the changes.
        Stream = "stream",
        /// PUBLICATION / SUBSCRIPTION on the servers (the Pigsty way).
        Native = "native",
    }
}

/// The (source, target) major version pairs the version-matrix suite
/// (`crates/pgtransit-cli/tests/version_matrix.rs`) runs end to end on both engines, and
/// `pgtransit templates` prints: upgrades from every source 10 to 18, and the downgrades.
pub const TESTED_PAIRS: &[(u32, u32)] = &[
    (10, 15),
    (11, 16),
    (12, 17),
    (13, 18),
    (14, 16),
    (15, 15),
    (16, 18),
    (17, 17),
    (18, 18),
    (17, 15),
    (16, 14),
];

/// What the stream apply does with an UPDATE or DELETE whose row is not on the target
/// (the target already differs from the source).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissingRow {
    /// Stop the apply before committing, naming the table, the key and the source LSN.
    #[default]
    Stop,
    /// Count it (describe, metrics, the switchover report), log it and go on.
    Log,
}

impl OnMissingRow {
    pub fn parse(s: &str) -> crate::Result<OnMissingRow> {
        match s {
            "stop" => Ok(OnMissingRow::Stop),
            "log" => Ok(OnMissingRow::Log),
            _ => Err(crate::Error::usage(format!(
                "on-missing-row must be stop or log, not {s:?}"
            ))),
        }
    }
}

/// The kbcli steps, each of which can be skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Steps {
    pub precheck: bool,
    pub init_struct: bool,
    pub init_data: bool,
    pub cdc: bool,
}

impl Default for Steps {
    fn default() -> Self {
        Steps {
            precheck: true,
            init_struct: true,
            init_data: true,
            cdc: true,
        }
    }
}

/// Where the task file came from.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskSource {
    Native,
    /// A Pigsty task file; the variables are kept for the generated context folder.
    Pigsty(Box<PigstyVars>),
}

/// A resolved task: every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub name: String,
    pub origin: TaskSource,
    pub engine: Engine,
    /// Admin connection to the source database.
    pub source: ConnSpec,
    /// Admin connection to the target database (optional for source-only checks).
    pub target: Option<ConnSpec>,
    /// The connection string the target's subscription uses to reach the source (native
    /// engine), kept exactly as written or built.
    pub sub_conn: String,
    /// The role that replicates from the source.
    pub replication_user: String,
    pub publication: String,
    pub subscription: String,
    /// The logical replication slot on the source (PostgreSQL names it after the
    /// subscription by default, and so do we).
    pub slot: String,
    pub objects: ObjectFilter,
    pub steps: Steps,
    /// Where `generate` writes the context folder.
    pub context_dir: PathBuf,
    pub table_jobs: u32,
    pub index_jobs: u32,
    /// The stream apply's missing-row policy.
    pub on_missing_row: OnMissingRow,
}

impl Task {
    /// Read a task file of either form.
    pub fn load(path: &Path) -> Result<Task, TaskFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| TaskFileError {
            file: path.display().to_string(),
            line: None,
            message: format!("cannot read the task file: {e}"),
            hint: None,
        })?;
        Task::parse(&text, &path.display().to_string())
    }

    /// Parse task file text; `file` names it in messages.
    pub fn parse(text: &str, file: &str) -> Result<Task, TaskFileError> {
        if pigsty::looks_like_pigsty(text) {
            pigsty::parse(text, file)
        } else {
            native::parse(text, file)
        }
    }

    /// The task of a command: a task file (`-t FILE`, whose target `--target` may replace),
    /// or URLs (`--source URL [--target URL]`, named `adhoc`).
    pub fn resolve(
        task_file: Option<&Path>,
        source: Option<&str>,
        target: Option<&str>,
    ) -> crate::Result<Task> {
        match (task_file, source) {
            (Some(file), None) => {
                let mut task = Task::load(file)?;
                if let Some(t) = target {
                    task.target = Some(ConnSpec::parse(t).map_err(|e| e.context("--target"))?);
                }
                Ok(task)
            }
            (None, Some(src)) => Task::from_urls("adhoc", src, target),
            (Some(_), Some(_)) => Err(crate::Error::usage(
                "give either -t FILE or --source, not both",
            )),
            (None, None) => Err(crate::Error::usage(
                "no task: give -t FILE (native or Pigsty task file) or --source URL [--target URL]",
            )),
        }
    }

    /// A task from command-line URLs.
    pub fn from_urls(name: &str, source: &str, target: Option<&str>) -> crate::Result<Task> {
        let source = ConnSpec::parse(source).map_err(|e| e.context("--source"))?;
        let target = target
            .map(ConnSpec::parse)
            .transpose()
            .map_err(|e| e.context("--target"))?;
        Ok(native::resolve_defaults(
            name.to_string(),
            source,
            target,
            native::NativeOptions::default(),
            ObjectFilter::default(),
            Steps::default(),
            Engine::Stream,
        ))
    }
}

impl Task {
    /// The replication back from the target to the source after a switchover (`--reverse`):
    /// the same tables and engine, named `NAME-reverse`, with only the change stream (both
    /// sides are equal when it starts, inside the switchover's fenced window).
    pub fn reversed(&self) -> Option<Task> {
        let target = self.target.clone()?;
        let mut t = native::resolve_defaults(
            format!("{}-reverse", self.name),
            target,
            Some(self.source.clone()),
            native::NativeOptions::default(),
            self.objects.clone(),
            Steps {
                precheck: false,
                init_struct: false,
                init_data: false,
                cdc: true,
            },
            self.engine,
        );
        t.table_jobs = self.table_jobs;
        t.index_jobs = self.index_jobs;
        Some(t)
    }
}

/// `~/` at the start of a path, as a shell would expand it.
pub(crate) fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// A name usable inside a PostgreSQL identifier for slots: lower case letters, digits, `_`.
pub(crate) fn slot_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}
