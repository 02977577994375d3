//! `create`: a task built from a task file or URLs (kbcli's flags), checked for what would
//! make it useless or dangerous, and recorded in the store with its steps. Passwords go to
//! the task's private password file, never into the store.

use std::path::PathBuf;

use crate::conn::ConnSpec;
use crate::state::{self, secrets, Step, Store, TaskRecord, TaskStatus};
use crate::task::{Engine, ObjectFilter, ObjectPattern, OnMissingRow, Steps, Task};
use crate::{Error, Result};

/// The task templates `create --template NAME` takes: (name, engine, what it does).
/// kbcli's `apecloud-pg2pg` is the stream engine (ape-dts also reads the slot itself).
pub const TEMPLATES: &[(&str, Engine, &str)] = &[
    ("apecloud-pg2pg", Engine::Stream, "kbcli's name for PostgreSQL to PostgreSQL: the stream engine"),
    ("pg2pg-stream", Engine::Stream, "pgtransit holds the slot: parallel snapshot copy, own apply; the target need not reach the source"),
    ("pg2pg-native", Engine::Native, "PUBLICATION/SUBSCRIPTION; binary and streaming from 14; the target must reach the source"),
];

/// What `pgtransit create` was given (kbcli's `migration create` flags).
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    pub name: String,
    pub task_file: Option<PathBuf>,
    pub source: Option<String>,
    pub target: Option<String>,
    /// kbcli's `--migration-object`: `"public.t1","s2"` or `public.t1,s2`.
    pub objects: Option<String>,
    /// kbcli's `--steps precheck=true,init-struct=false,...`.
    pub steps: Option<String>,
    pub engine: Option<Engine>,
    pub template: Option<String>,
    pub on_missing_row: Option<OnMissingRow>,
}

/// A task recorded: its record (passwords masked) and which steps it runs.
#[derive(Clone, Debug)]
pub struct Created {
    pub record: TaskRecord,
    pub steps: Vec<(Step, bool)>,
}

/// Build, check and record the task.
pub fn create(store: &Store, req: &CreateRequest) -> Result<Created> {
    valid_name(&req.name)?;
    let mut task = build_task(req)?;
    let others: Vec<Task> = store
        .tasks()?
        .iter()
        .filter(|r| r.name != req.name)
        .filter_map(|r| Task::parse(&r.spec, &r.name).ok())
        .collect();
    if let Some(why) = clash(&task, &others) {
        return Err(Error::refused(why));
    }
    if store.task(&req.name)?.is_some() {
        return Err(Error::refused(format!(
            "a task named {} already exists: pick another name, or `pgtransit terminate {}` first",
            req.name, req.name
        )));
    }
    {
        let mut specs: Vec<&mut ConnSpec> = vec![&mut task.source];
        if let Some(t) = task.target.as_mut() {
            specs.push(t);
        }
        secrets::take_passwords(store.home(), &req.name, &mut specs)
            .map_err(|e| Error::failed(format!("cannot write the task's password file: {e}")))?;
    }
    let steps = vec![
        (Step::Precheck, task.steps.precheck),
        (Step::InitStruct, task.steps.init_struct),
        (Step::InitData, task.steps.init_data),
        (Step::Cdc, task.steps.cdc),
    ];
    let record = record(&task, None);
    store.create_task(&record, &steps)?;
    Ok(Created { record, steps })
}

/// A new task's record: `created`, passwords masked.
pub(crate) fn record(task: &Task, reason: Option<String>) -> TaskRecord {
    let now = state::now();
    TaskRecord {
        name: task.name.clone(),
        spec: crate::task::to_native_yaml(task),
        engine: task.engine,
        source: task.source.masked(),
        target: task.target.as_ref().map(|t| t.masked()).unwrap_or_default(),
        status: TaskStatus::Created,
        reason,
        created_at: now,
        updated_at: now,
        pid: None,
        metrics_addr: None,
    }
}

fn valid_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "task name {name:?}: use 1 to 40 letters, digits, `-` or `_`"
        )))
    }
}

/// kbcli's `--steps precheck=true,init-struct=false,...`.
pub fn parse_steps(list: &str) -> Result<Steps> {
    let mut s = Steps::default();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, "true"));
        let on = match v.trim() {
            "true" | "on" | "yes" | "1" => true,
            "false" | "off" | "no" | "0" => false,
            other => {
                return Err(Error::usage(format!(
                    "--steps {k}={other}: use true or false"
                )))
            }
        };
        // kbcli also writes the steps with underscores.
        let step: Step = k
            .trim()
            .replace('_', "-")
            .parse()
            .map_err(|e: Error| e.context("--steps"))?;
        match step {
            Step::Precheck => s.precheck = on,
            Step::InitStruct => s.init_struct = on,
            Step::InitData => s.init_data = on,
            Step::Cdc => s.cdc = on,
        }
    }
    Ok(s)
}

/// `"public.t1","s2"` (kbcli) or `public.t1,s2`: each element a schema or schema.table.
pub fn parse_objects(list: &str) -> Result<Vec<ObjectPattern>> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in list.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => items.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    items.push(cur);
    items
        .into_iter()
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty())
        .map(|i| {
            // kbcli quotes each element as a whole: "public.t1".
            let inner = i.strip_prefix('"').and_then(|x| x.strip_suffix('"'));
            let text = match inner {
                Some(x) if !x.contains('"') => x.to_string(),
                _ => i.clone(),
            };
            ObjectPattern::try_from(text).map_err(|e| e.context(format!("--objects {i}")))
        })
        .collect()
}

fn build_task(a: &CreateRequest) -> Result<Task> {
    for (flag, v) in [("--source", &a.source), ("--target", &a.target)] {
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(Error::usage(format!(
                "{flag} is empty: give a URL, a key=value string or user:password@host:port/db"
            )));
        }
    }
    let mut task = match (&a.task_file, &a.source) {
        (Some(f), None) => {
            let mut t = Task::load(f)?;
            if let Some(target) = &a.target {
                t.target = Some(ConnSpec::parse(target).map_err(|e| e.context("--target"))?);
            }
            t.name = a.name.clone();
            t
        }
        (None, Some(src)) => {
            let target = a.target.as_deref().ok_or_else(|| {
                Error::usage("--target URL is required with --source (kbcli: --sink)")
            })?;
            Task::from_urls(&a.name, src, Some(target))?
        }
        (Some(_), Some(_)) => {
            return Err(Error::usage("give either -t FILE or --source, not both"))
        }
        (None, None) => {
            return Err(Error::usage(
                "create needs --source URL --target URL, or -t TASKFILE",
            ))
        }
    };
    if task.target.is_none() {
        return Err(Error::usage("the task has no target: give --target URL"));
    }
    if let Some(name) = &a.template {
        let (_, engine, _) = TEMPLATES
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| {
                let names: Vec<&str> = TEMPLATES.iter().map(|t| t.0).collect();
                Error::usage(format!(
                    "--template: no template {name:?}; `pgtransit templates` lists them: {}",
                    names.join(", ")
                ))
            })?;
        task.engine = *engine;
    }
    if let Some(engine) = a.engine {
        if a.template.is_some() && engine != task.engine {
            return Err(Error::usage(
                "--engine contradicts --template: give one of them",
            ));
        }
        task.engine = engine;
    }
    if let Some(s) = &a.steps {
        task.steps = parse_steps(s)?;
    }
    if let Some(m) = a.on_missing_row {
        task.on_missing_row = m;
    }
    if let Some(o) = &a.objects {
        task.objects = ObjectFilter {
            include: parse_objects(o)?,
            exclude: task.objects.exclude.clone(),
        };
    }
    sane(&task)?;
    Ok(task)
}

/// What would make a task that can never do anything useful, refused before it is
/// recorded: no step, an empty or port-0 connection, the target being the source.
fn sane(task: &Task) -> Result<()> {
    let st = task.steps;
    if !(st.precheck || st.init_struct || st.init_data || st.cdc) {
        return Err(Error::usage(
            "--steps turns every step off: the task would do nothing",
        ));
    }
    let target = task.target.as_ref().expect("checked by build_task");
    for (flag, c) in [("--source", &task.source), ("--target", target)] {
        if c.port == Some(0) {
            return Err(Error::usage(format!("{flag}: port 0 is not a port")));
        }
    }
    if task.source.host() == target.host()
        && task.source.port() == target.port()
        && task.source.dbname() == target.dbname()
    {
        return Err(Error::usage(format!(
            "the source and the target are the same database ({}): give the target's host, port or database",
            target.display()
        )));
    }
    Ok(())
}

/// Another task whose slot, publication, subscription or replication origin has the same
/// name (`dup1` and `Dup1`, `a-b` and `a_b`, or names set in a task file): terminating
/// one would drop the other's.
fn clash(new: &Task, others: &[Task]) -> Option<String> {
    let names = |t: &Task| {
        [
            ("replication slot", t.slot.clone()),
            ("publication", t.publication.clone()),
            ("subscription", t.subscription.clone()),
            ("replication origin", crate::stream::origin_name(t)),
        ]
    };
    for other in others {
        for ((what, a), (_, b)) in names(new).into_iter().zip(names(other)) {
            if a == b {
                return Some(format!(
                    "task {} already uses the {what} name {a}: two tasks must not share one \
                     (terminating either would drop the other's); pick another task name",
                    other.name
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kbcli_object_and_step_lists() {
        let o = parse_objects(r#""public.t1","s2""#).unwrap();
        assert_eq!(
            (o[0].schema.as_str(), o[0].table.as_deref()),
            ("public", Some("t1"))
        );
        assert_eq!((o[1].schema.as_str(), o[1].table.as_deref()), ("s2", None));
        let o = parse_objects(r#"public.t1, "My Schema"."A, B""#).unwrap();
        assert_eq!(o[1].schema, "My Schema");
        assert_eq!(o[1].table.as_deref(), Some("A, B"));
        let s = parse_steps("precheck=false,init_struct=true,cdc=false").unwrap();
        assert!(!s.precheck && s.init_struct && s.init_data && !s.cdc);
        assert!(parse_steps("copy=true").is_err());
    }
}
