//! Output into a closed pipe ends quietly: `pgtransit list | true`, `describe NAME | head -1`
//! and the like exit without a panic or a backtrace.

use std::process::Command;

/// Run `pgtransit ARGS | true` in bash (pipefail) with the task store under `home`;
/// pgtransit's exit code and stderr.
fn into_closed_pipe(home: &std::path::Path, args: &str) -> (Option<i32>, String) {
    let bin = env!("CARGO_BIN_EXE_pgtransit");
    // `true` exits without reading; a sleep-free loop of a few runs makes it likely that
    // at least one write finds the reader gone.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; for i in 1 2 3; do '{bin}' {args} | true; rc=$?; \
             [ $rc -ne 0 ] && [ $rc -ne 141 ] && exit $rc; done; exit $rc"
        ))
        .env("PGTRANSIT_HOME", home)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("bash");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn writing_into_a_closed_pipe_ends_quietly() {
    let home = tempfile::tempdir().unwrap();
    // A task whose servers are not there: describe and logs still print.
    let o = Command::new(env!("CARGO_BIN_EXE_pgtransit"))
        .args([
            "create",
            "piped",
            "--no-start",
            "--source",
            "postgresql://u@127.0.0.1:1/a",
            "--target",
            "postgresql://u@127.0.0.1:1/b",
        ])
        .env("PGTRANSIT_HOME", home.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for args in [
        "list",
        "describe piped",
        "logs piped",
        "templates",
        "--help",
        "switchover --help",
    ] {
        let (code, err) = into_closed_pipe(home.path(), args);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe") && !err.contains("backtrace"),
            "pgtransit {args}: {err}"
        );
        assert!(
            matches!(code, Some(0) | Some(141)),
            "pgtransit {args}: exit {code:?}: {err}"
        );
    }
}
