//! `pgtransit create` and `pgtransit start`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgtransit::state::{self, secrets, TaskRecord};
use pgtransit::task::{Engine, ObjectFilter, ObjectPattern, Steps, Task};

use super::{alive, json_out, store, CreateArgs, EngineArg};
use crate::Failure;

fn valid_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Failure::usage(format!(
            "task name {name:?}: use 1 to 40 letters, digits, `-` or `_`"
        )))
    }
}

/// kbcli's `--steps precheck=true,init-struct=false,...`.
fn parse_steps(list: &str) -> Result<Steps, Failure> {
    let mut s = Steps::default();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, "true"));
        let on = match v.trim() {
            "true" | "on" | "yes" | "1" => true,
            "false" | "off" | "no" | "0" => false,
            other => {
                return Err(Failure::usage(format!(
                    "--steps {k}={other}: use true or false"
                )))
            }
        };
        match k.trim() {
            "precheck" => s.precheck = on,
            "init-struct" | "init_struct" => s.init_struct = on,
            "init-data" | "init_data" => s.init_data = on,
            "cdc" => s.cdc = on,
            other => {
                return Err(Failure::usage(format!(
                    "--steps: unknown step {other:?} (steps: precheck, init-struct, init-data, cdc)"
                )))
            }
        }
    }
    Ok(s)
}

/// `"public.t1","s2"` (kbcli) or `public.t1,s2`: each element a schema or schema.table.
fn parse_objects(list: &str) -> Result<Vec<ObjectPattern>, Failure> {
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
            ObjectPattern::try_from(text).map_err(|e| Failure::usage(format!("--objects {i}: {e}")))
        })
        .collect()
}

fn build_task(a: &CreateArgs) -> Result<Task, Failure> {
    for (flag, v) in [("--source", &a.source), ("--target", &a.target)] {
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(Failure::usage(format!(
                "{flag} is empty: give a URL, a key=value string or user:password@host:port/db"
            )));
        }
    }
    let mut task = match (&a.task_file, &a.source) {
        (Some(f), None) => {
            let mut t = Task::load(f)?;
            if let Some(target) = &a.target {
                t.target = Some(
                    pgtransit::conn::ConnSpec::parse(target)
                        .map_err(|e| Failure::usage(format!("--target: {e}")))?,
                );
            }
            t.name = a.name.clone();
            t
        }
        (None, Some(src)) => {
            let target = a.target.as_deref().ok_or_else(|| {
                Failure::usage("--target URL is required with --source (kbcli: --sink)")
            })?;
            Task::from_urls(&a.name, src, Some(target))?
        }
        (Some(_), Some(_)) => {
            return Err(Failure::usage("give either -t FILE or --source, not both"))
        }
        (None, None) => {
            return Err(Failure::usage(
                "create needs --source URL --target URL, or -t TASKFILE",
            ))
        }
    };
    if task.target.is_none() {
        return Err(Failure::usage("the task has no target: give --target URL"));
    }
    if let Some(name) = &a.template {
        let (_, engine, _) = super::show::TEMPLATES
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| {
                let names: Vec<&str> = super::show::TEMPLATES.iter().map(|t| t.0).collect();
                Failure::usage(format!(
                    "--template: no template {name:?}; `pgtransit templates` lists them: {}",
                    names.join(", ")
                ))
            })?;
        task.engine = if *engine == "native" {
            Engine::Native
        } else {
            Engine::Stream
        };
    }
    if let Some(e) = a.engine {
        let engine = match e {
            EngineArg::Stream => Engine::Stream,
            EngineArg::Native => Engine::Native,
        };
        if a.template.is_some() && engine != task.engine {
            return Err(Failure::usage(
                "--engine contradicts --template: give one of them",
            ));
        }
        task.engine = engine;
    }
    if let Some(s) = &a.steps {
        task.steps = parse_steps(s)?;
    }
    if let Some(m) = &a.on_missing_row {
        task.on_missing_row = pgtransit::task::OnMissingRow::parse(m)
            .map_err(|e| Failure::usage(format!("--{e}")))?;
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
fn sane(task: &Task) -> Result<(), Failure> {
    let st = task.steps;
    if !(st.precheck || st.init_struct || st.init_data || st.cdc) {
        return Err(Failure::usage(
            "--steps turns every step off: the task would do nothing",
        ));
    }
    let target = task.target.as_ref().expect("checked by build_task");
    for (flag, c) in [("--source", &task.source), ("--target", target)] {
        if c.port == Some(0) {
            return Err(Failure::usage(format!("{flag}: port 0 is not a port")));
        }
    }
    if task.source.host() == target.host()
        && task.source.port() == target.port()
        && task.source.dbname() == target.dbname()
    {
        return Err(Failure::usage(format!(
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
            ("replication origin", pgtransit::stream::origin_name(t)),
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

pub async fn create(a: CreateArgs) -> Result<u8, Failure> {
    valid_name(&a.name)?;
    let mut task = build_task(&a)?;
    let store = store()?;
    let others: Vec<Task> = store
        .tasks()?
        .iter()
        .filter(|r| r.name != a.name)
        .filter_map(|r| Task::parse(&r.spec, &r.name).ok())
        .collect();
    if let Some(why) = clash(&task, &others) {
        return Err(Failure::refused(why));
    }
    if store.task(&a.name)?.is_some() {
        return Err(Failure::refused(format!(
            "a task named {} already exists: pick another name, or `pgtransit terminate {}` first",
            a.name, a.name
        )));
    }
    // Passwords go to the task's private password file, never into the store.
    {
        let home = store.home().to_path_buf();
        let mut specs: Vec<&mut pgtransit::conn::ConnSpec> = vec![&mut task.source];
        if let Some(t) = task.target.as_mut() {
            specs.push(t);
        }
        secrets::take_passwords(&home, &a.name, &mut specs)
            .map_err(|e| Failure::other(format!("cannot write the task's password file: {e}")))?;
    }
    let target = task.target.as_ref().expect("a target");
    let rec = TaskRecord {
        name: a.name.clone(),
        spec: pgtransit::task::to_native_yaml(&task),
        engine: match task.engine {
            Engine::Stream => "stream".into(),
            Engine::Native => "native".into(),
        },
        source: task.source.masked(),
        target: target.masked(),
        status: "created".into(),
        reason: None,
        created_at: state::now(),
        updated_at: state::now(),
        pid: None,
        metrics_addr: None,
    };
    let enabled = [
        ("precheck", task.steps.precheck),
        ("init-struct", task.steps.init_struct),
        ("init-data", task.steps.init_data),
        ("cdc", task.steps.cdc),
    ];
    store.create_task(&rec, &enabled)?;
    if a.json {
        json_out(&serde_json::json!({
            "created": rec.name, "engine": rec.engine, "source": rec.source, "target": rec.target,
            "steps": enabled.iter().map(|(s, on)| (s.to_string(), *on)).collect::<std::collections::BTreeMap<_, _>>(),
            "started": !a.no_start,
        }))?;
    } else {
        let steps: Vec<&str> = enabled
            .iter()
            .filter(|(_, on)| *on)
            .map(|(s, _)| *s)
            .collect();
        outln!(
            "created task {} ({} engine): {} -> {}; steps: {}",
            rec.name,
            rec.engine,
            rec.source,
            rec.target,
            steps.join(", ")
        );
    }
    drop(store);
    if a.no_start {
        if !a.json {
            outln!("next: pgtransit start {}", a.name);
        }
        return Ok(0);
    }
    start_worker(&a.name, a.metrics_addr.as_deref(), a.json).await
}

/// A worker started by [`spawn_worker`].
pub struct Started {
    pub pid: u32,
    pub log: std::path::PathBuf,
    pub metrics_addr: Option<String>,
}

/// Start `pgtransit run NAME` detached and say so.
pub async fn start_worker(
    name: &str,
    metrics_addr: Option<&str>,
    json: bool,
) -> Result<u8, Failure> {
    let w = spawn_worker(name, metrics_addr).await?;
    if json {
        json_out(
            &serde_json::json!({"task": name, "worker_pid": w.pid, "log": w.log, "metrics_addr": w.metrics_addr}),
        )?;
    } else {
        outln!(
            "started worker {} for task {name}{}; follow it with `pgtransit logs {name} --follow`, see it with `pgtransit describe {name}`",
            w.pid,
            w.metrics_addr.map(|a| format!(" (metrics on http://{a}/metrics)")).unwrap_or_default()
        );
    }
    Ok(0)
}

/// Start `pgtransit run NAME` detached, its output appended to the worker log; returns
/// once the worker has registered.
pub async fn spawn_worker(name: &str, metrics_addr: Option<&str>) -> Result<Started, Failure> {
    let store = store()?;
    let rec = store.existing(name)?;
    if rec.status == "running" && alive(rec.pid) {
        return Err(Failure::refused(format!(
            "task {name} already has a worker (pid {}): one worker per task",
            rec.pid.unwrap_or(0)
        )));
    }
    store.workers_dir()?;
    let log_path = store.worker_log(name);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Failure::other(format!("cannot open {}: {e}", log_path.display())))?;
    let exe = std::env::current_exe().map_err(|e| Failure::other(e.to_string()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("run").arg(name);
    if let Some(addr) = metrics_addr {
        cmd.arg("--metrics-addr").arg(addr);
    }
    use std::os::unix::process::CommandExt;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            log.try_clone().map_err(|e| Failure::other(e.to_string()))?,
        ))
        .stderr(Stdio::from(log))
        // Its own process group: a Ctrl-C in this terminal does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| Failure::other(format!("cannot start the worker: {e}")))?;
    let pid = child.id();
    // Wait until the worker has registered (or died at once, e.g. a held lock).
    let started = Instant::now();
    let mut child = child;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last: Vec<&str> = tail.lines().rev().take(3).collect();
            // Its exit code says why (4: it refused, 2: a connection or usage problem);
            // `create` and `start` pass it on.
            return Err(Failure {
                code: status
                    .code()
                    .and_then(|c| u8::try_from(c).ok())
                    .filter(|c| *c != 0)
                    .unwrap_or(1),
                message: format!(
                    "the worker for {name} exited at once ({status}): {}",
                    last.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ),
            });
        }
        let rec = store.existing(name)?;
        if rec.pid == Some(pid) || started.elapsed() > Duration::from_secs(5) {
            return Ok(Started {
                pid,
                log: log_path,
                metrics_addr: rec.metrics_addr,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
        let s = parse_steps("precheck=false,init-struct=true,cdc=false").unwrap();
        assert!(!s.precheck && s.init_struct && s.init_data && !s.cdc);
        assert!(parse_steps("copy=true").is_err());
    }
}
