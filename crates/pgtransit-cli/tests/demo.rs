//! `pgtransit demo`, the README's first command: the whole migration under load, and a
//! report whose numbers hold (downtime, failed client transactions, rows verified).

use std::process::Command;

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(name))
        .unwrap_or_else(|| panic!("no `{name}` in the report:\n{out}"))
        .trim()
}

/// The text without terminal escape sequences and carriage returns.
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params letter
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if d.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => out.push('\n'),
            c => out.push(c),
        }
    }
    out
}

#[test]
fn the_demo_switches_over_under_load_and_reports() {
    // In a pseudo-terminal (util-linux `script`), as a user runs it: the copy shows its
    // progress bar there. Without `script`, plainly, and the bar is not checked.
    let bin = env!("CARGO_BIN_EXE_pgtransit");
    let in_terminal = Command::new("script").arg("--version").output().is_ok();
    let o = if in_terminal {
        Command::new("script")
            .args(["-qec", &format!("{bin} demo"), "/dev/null"])
            .env("TERM", "xterm")
            .output()
            .unwrap()
    } else {
        eprintln!("NOTE: util-linux `script` is missing: the demo runs without a terminal");
        Command::new(bin).arg("demo").output().unwrap()
    };
    let out = plain(&format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    ));
    assert!(o.status.success(), "{out}");
    if in_terminal {
        assert!(
            out.lines().any(|l| l.starts_with("copy   [")
                && l.contains(" rows ")
                && l.contains(" tables")),
            "no copy progress bar in the terminal:\n{out}"
        );
    }
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
