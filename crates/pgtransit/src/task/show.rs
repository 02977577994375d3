//! What `pgtransit task show` prints: the resolved task, passwords masked.

use serde::Serialize;

use super::{Engine, Steps, Task, TaskSource};
use crate::conn::ConnSpec;

#[derive(Debug, Serialize)]
pub struct TaskView {
    pub name: String,
    /// "native" or "pigsty": the form of the task file.
    pub file_form: &'static str,
    pub engine: Engine,
    pub source: String,
    pub target: Option<String>,
    pub sub_conn: String,
    pub replication_user: String,
    pub publication: String,
    pub subscription: String,
    pub slot: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub steps: Steps,
    pub context_dir: String,
    pub table_jobs: u32,
    pub index_jobs: u32,
}

impl TaskView {
    pub fn of(task: &Task) -> TaskView {
        TaskView {
            name: task.name.clone(),
            file_form: match task.origin {
                TaskSource::Native => "native",
                TaskSource::Pigsty(_) => "pigsty",
            },
            engine: task.engine,
            source: task.source.masked(),
            target: task.target.as_ref().map(ConnSpec::masked),
            sub_conn: ConnSpec::mask_string(&task.sub_conn),
            replication_user: task.replication_user.clone(),
            publication: task.publication.clone(),
            subscription: task.subscription.clone(),
            slot: task.slot.clone(),
            include: task.objects.include.iter().map(|p| p.to_string()).collect(),
            exclude: task.objects.exclude.iter().map(|p| p.to_string()).collect(),
            steps: task.steps,
            context_dir: task.context_dir.display().to_string(),
            table_jobs: task.table_jobs,
            index_jobs: task.index_jobs,
        }
    }

    /// Aligned `key  value` lines for a terminal.
    pub fn to_text(&self) -> String {
        let steps = [
            ("precheck", self.steps.precheck),
            ("init-struct", self.steps.init_struct),
            ("init-data", self.steps.init_data),
            ("cdc", self.steps.cdc),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(s, _)| *s)
        .collect::<Vec<_>>()
        .join(", ");
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        let rows: Vec<(&str, String)> = vec![
            (
                "task",
                format!("{} ({} task file)", self.name, self.file_form),
            ),
            ("engine", format!("{:?}", self.engine).to_lowercase()),
            ("source", self.source.clone()),
            ("target", self.target.clone().unwrap_or_else(|| "-".into())),
            ("sub_conn", self.sub_conn.clone()),
            ("replication user", self.replication_user.clone()),
            ("publication", self.publication.clone()),
            ("subscription", self.subscription.clone()),
            ("slot", self.slot.clone()),
            (
                "include",
                if self.include.is_empty() {
                    "all user schemas".into()
                } else {
                    list(&self.include)
                },
            ),
            ("exclude", list(&self.exclude)),
            ("steps", steps),
            ("context dir", self.context_dir.clone()),
            (
                "jobs",
                format!("{} table, {} index", self.table_jobs, self.index_jobs),
            ),
        ];
        rows.iter().map(|(k, v)| format!("{k:<17} {v}\n")).collect()
    }
}
