//! `pgtransit create` and `pgtransit start`: `pgtransit::migration::create` and
//! `spawn_worker`, rendered.

use pgtransit::migration::{self, CreateRequest};
use pgtransit::state::Store;

use super::{json_out, CreateArgs};
use pgtransit::Error;

pub async fn create(a: CreateArgs) -> Result<u8, Error> {
    let req = CreateRequest {
        name: a.name.clone(),
        task_file: a.task_file,
        source: a.source,
        target: a.target,
        objects: a.objects,
        steps: a.steps,
        engine: a.engine,
        template: a.template,
        on_missing_row: a.on_missing_row,
    };
    let created = migration::create(&Store::open()?, &req)?;
    let rec = &created.record;
    if a.json {
        json_out(&serde_json::json!({
            "created": rec.name, "engine": rec.engine, "source": rec.source, "target": rec.target,
            "steps": created.steps.iter().map(|(s, on)| (s.as_str(), *on)).collect::<std::collections::BTreeMap<_, _>>(),
            "started": !a.no_start,
        }))?;
    } else {
        let steps: Vec<&str> = created
            .steps
            .iter()
            .filter(|(_, on)| *on)
            .map(|(s, _)| s.as_str())
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
    if a.no_start {
        if !a.json {
            outln!("next: pgtransit start {}", a.name);
        }
        return Ok(0);
    }
    start_worker(&a.name, a.metrics_addr.as_deref(), a.json).await
}

/// Start `pgtransit run NAME` detached and say so.
pub async fn start_worker(name: &str, metrics_addr: Option<&str>, json: bool) -> Result<u8, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::failed(e.to_string()))?;
    let w = migration::spawn_worker(&exe, name, metrics_addr).await?;
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
