//! Output on stdout that ends quietly when its reader is gone (`pgtransit list | head -1`):
//! exit code 141, as a program killed by SIGPIPE, instead of a panic with a backtrace.
//! Every command prints through `outln!` and `out!`.

use std::fmt;
use std::io::{ErrorKind, Write};

/// The exit code of a program ended by SIGPIPE (128 + 13).
pub const BROKEN_PIPE: i32 = 141;

pub fn write(args: fmt::Arguments<'_>, newline: bool) {
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|_| if newline { o.write_all(b"\n") } else { Ok(()) });
    match r {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(BROKEN_PIPE),
        // Any other failure to print (a full disk behind a redirect) is not worth a panic
        // in the middle of a migration step either; the exit code tells the rest.
        _ => {}
    }
}

/// `v` as pretty JSON on stdout: the whole output of a command run with `--json`.
pub fn json(v: &impl serde::Serialize) -> Result<(), pgtransit::Error> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| pgtransit::Error::failed(format!("rendering JSON: {e}")))?;
    write(format_args!("{text}"), true);
    Ok(())
}

/// `println!` that ends quietly on a closed pipe.
macro_rules! outln {
    () => {
        $crate::out::write(format_args!(""), true)
    };
    ($($t:tt)*) => {
        $crate::out::write(format_args!($($t)*), true)
    };
}

/// `print!` that ends quietly on a closed pipe.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::out::write(format_args!($($t)*), false)
    };
}
