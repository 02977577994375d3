//! `pgtransit demo`, the README's first command: the whole migration under load, and a
//! report whose numbers hold (downtime, failed client transactions, rows verified).

use std::process::Command;

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(name))
        .unwrap_or_else(|| panic!("no `{name}` in the report:\n{out}"))
        .trim()
}

#[test]
fn the_demo_switches_over_under_load_and_reports() {
    let o = Command::new(env!("CARGO_BIN_EXE_pgtransit"))
        .arg("demo")
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{out}");
    let downtime: f64 = field(&out, "write downtime")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(downtime < 2.0, "{out}");
    let rows: i64 = field(&out, "rows verified (checksum)").parse().unwrap();
    assert!(rows > 500_000, "{out}");
    let failed = field(&out, "failed client transactions");
    if pgsandbox::find_pgbouncer().is_some() {
        assert!(failed.starts_with("0 "), "{out}");
        let after: i64 = field(&out, "client transactions")
            .split(", ")
            .nth(1)
            .and_then(|v| v.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(after > 0, "pgbench did not go on on the target:\n{out}");
    } else {
        eprintln!("pgbouncer is not installed: the demo ran with the readonly fence");
        assert!(out.contains("pgbouncer is not installed"), "{out}");
    }
}
