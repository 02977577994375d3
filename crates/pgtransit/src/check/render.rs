//! Human output of a check report: findings grouped by severity, each with its fix.

use super::{version_text, Report, Severity};

pub fn render_text(report: &Report, show_tables: bool) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "pgtransit check: {}\n  source  {} (PostgreSQL {})\n",
        report.task,
        report.source,
        version_text(report.source_version)
    ));
    match (&report.target, report.target_version) {
        (Some(t), Some(v)) => {
            out.push_str(&format!("  target  {t} (PostgreSQL {})\n", version_text(v)))
        }
        _ => out.push_str("  target  (none given: target-side checks skipped)\n"),
    }
    let scopes: Vec<&str> = report.scopes.iter().map(|s| s.name()).collect();
    out.push_str(&format!("  checks  {}\n", scopes.join(", ")));

    if show_tables && !report.tables.is_empty() {
        out.push_str("\nTables (replica identity)\n");
        let w = report
            .tables
            .iter()
            .map(|t| t.table.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        out.push_str(&format!(
            "  {:<w$}  {:<10}  {:<8}  {:>10}  {}\n",
            "table", "keys", "identity", "size", "status"
        ));
        for t in &report.tables {
            // Width counts characters, so unicode names line up.
            out.push_str(&format!(
                "  {:<w$}  {:<10}  {:<8}  {:>10}  {}\n",
                t.table, t.keys, t.identity, t.size, t.status
            ));
        }
    }

    for sev in [Severity::Error, Severity::Warning, Severity::Info] {
        let group: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.severity == sev)
            .collect();
        if group.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{} ({})\n", sev.label(), group.len()));
        for f in group {
            let obj = f
                .object
                .as_deref()
                .map(|o| format!(" {o}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  [{}] {}{}: {}\n",
                f.check,
                f.side.label(),
                obj,
                f.message.replace('\n', "\n      ")
            ));
            if let Some(fix) = &f.fix {
                for (i, line) in fix.lines().enumerate() {
                    let lead = if i == 0 { "fix:" } else { "    " };
                    out.push_str(&format!("      {lead} {line}\n"));
                }
            }
        }
    }
    out.push_str(&format!(
        "\n{} error(s), {} warning(s), {} info\n",
        report.summary.errors, report.summary.warnings, report.summary.infos
    ));
    out
}
