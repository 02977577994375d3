//! Passwords given in a task's URLs are kept out of the task store: each goes into a
//! `.pgpass`-format file under `$PGTRANSIT_HOME/secrets/`, mode 0600, and the stored
//! connection references it with `passfile=`. libpq, pg_dump and pgtransit all read it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::conn::ConnSpec;

pub fn file(home: &Path, task: &str) -> PathBuf {
    home.join("secrets").join(format!("{task}.pgpass"))
}

/// `.pgpass` escaping: `\` and `:` are preceded by `\`.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace(':', "\\:")
}

/// Move the passwords of `specs` into the task's password file; each spec then points at
/// it. Specs without a password are left alone.
pub fn take_passwords(home: &Path, task: &str, specs: &mut [&mut ConnSpec]) -> std::io::Result<()> {
    let mut lines = String::new();
    for s in specs.iter() {
        if let Some(pw) = &s.password {
            lines.push_str(&format!(
                "{}:{}:{}:{}:{}\n",
                escape(&s.host()),
                s.port(),
                escape(&s.dbname()),
                escape(&s.user()),
                escape(pw.expose())
            ));
        }
    }
    if lines.is_empty() {
        return Ok(());
    }
    let path = file(home, task);
    let dir = path.parent().expect("a secrets folder");
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(lines.as_bytes())?;
    for s in specs.iter_mut() {
        if s.password.take().is_some() {
            s.passfile = Some(path.display().to_string());
        }
    }
    Ok(())
}

/// Give task `to` its own copy of task `from`'s password file (each task's file goes with
/// it), and point the specs that used the old one at the copy.
pub fn share(
    home: &Path,
    from: &str,
    to: &str,
    specs: &mut [&mut ConnSpec],
) -> std::io::Result<()> {
    let old = file(home, from);
    if !old.exists() {
        return Ok(());
    }
    let new = file(home, to);
    let text = std::fs::read(&old)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&new)?;
    f.write_all(&text)?;
    let old = old.display().to_string();
    for s in specs.iter_mut() {
        if s.passfile.as_deref() == Some(old.as_str()) {
            s.passfile = Some(new.display().to_string());
        }
    }
    Ok(())
}

pub fn remove(home: &Path, task: &str) {
    let _ = std::fs::remove_file(file(home, task));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_move_to_a_private_file_that_lookup_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let pw = "p@ss:w/o'rd x\\y";
        let url = format!(
            "postgresql://app:{}@db1:5433/shop",
            percent_encoding::utf8_percent_encode(pw, percent_encoding::NON_ALPHANUMERIC)
        );
        let mut a = ConnSpec::parse(&url).unwrap();
        let mut b = ConnSpec::parse("postgresql://other@db2/shop").unwrap();
        take_passwords(dir.path(), "t1", &mut [&mut a, &mut b]).unwrap();
        assert!(a.password.is_none() && a.passfile.is_some() && b.passfile.is_none());
        assert!(!a.masked().contains("p@ss"));
        assert_eq!(a.resolve_password().unwrap().expose(), pw);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(file(dir.path(), "t1"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
