//! The unprivileged account the server runs as when this process is root.

use std::ffi::CString;

#[derive(Clone, Copy, Debug)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// `None` when not root (the server runs as ourselves); otherwise the account to switch to.
pub fn run_as() -> Result<Option<RunAs>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let candidates: Vec<String> = match std::env::var("PGSANDBOX_USER") {
        Ok(name) => vec![name],
        Err(_) => vec!["postgres".into(), "nobody".into()],
    };
    for name in &candidates {
        if let Some(found) = lookup(name) {
            return Ok(Some(found));
        }
    }
    Err(format!(
        "running as root and none of the users {candidates:?} exists; PostgreSQL refuses to run \
         as root: create a user (useradd postgres) or set PGSANDBOX_USER"
    ))
}

fn lookup(name: &str) -> Option<RunAs> {
    let cname = CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy the two
    // integers out immediately and never keep the pointer.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some(RunAs { uid, gid })
}

/// Give `path` to the server's account (the temp folder is created by root).
pub fn chown(path: &std::path::Path, who: RunAs) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(who.uid), Some(who.gid))
}
