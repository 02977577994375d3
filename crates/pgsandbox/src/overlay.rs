//! A private copy of a PostgreSQL installation with some extensions left out.
//!
//! Tests need a target cluster on which an extension of the source is not installable, as
//! when the target is a different build. PostgreSQL finds its share and library folders
//! relative to the real path of its executable, so copying `postgres`, `initdb` and `pg_ctl`
//! into a folder tree of the same shape and linking everything else, except the hidden
//! extensions' files, gives such an installation without touching the system one.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn build(bindir: &Path, root: &Path, hidden: &[String]) -> Result<PathBuf, String> {
    let config = |flag: &str| -> Result<PathBuf, String> {
        let out = Command::new(bindir.join("pg_config"))
            .arg(flag)
            .output()
            .map_err(|e| format!("pg_config {flag} in {}: {e}", bindir.display()))?;
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    let (bin, share, pkglib) = (
        config("--bindir")?,
        config("--sharedir")?,
        config("--pkglibdir")?,
    );
    let rebase = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let io = |e: std::io::Error| format!("building the installation copy: {e}");

    let new_bin = rebase(&bin);
    std::fs::create_dir_all(&new_bin).map_err(io)?;
    for exe in ["postgres", "initdb", "pg_ctl"] {
        std::fs::copy(bindir.join(exe), new_bin.join(exe)).map_err(io)?;
    }
    let new_lib = rebase(&pkglib);
    std::fs::create_dir_all(new_lib.parent().unwrap_or(root)).map_err(io)?;
    if !new_lib.exists() {
        std::os::unix::fs::symlink(&pkglib, &new_lib).map_err(io)?;
    }
    let new_share = rebase(&share);
    std::fs::create_dir_all(&new_share).map_err(io)?;
    for entry in std::fs::read_dir(&share).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_name() != "extension" {
            std::os::unix::fs::symlink(entry.path(), new_share.join(entry.file_name()))
                .map_err(io)?;
        }
    }
    let new_ext = new_share.join("extension");
    std::fs::create_dir_all(&new_ext).map_err(io)?;
    for entry in std::fs::read_dir(share.join("extension")).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_hidden = hidden
            .iter()
            .any(|h| name == format!("{h}.control") || name.starts_with(&format!("{h}--")));
        if !is_hidden {
            std::os::unix::fs::symlink(entry.path(), new_ext.join(&name)).map_err(io)?;
        }
    }
    Ok(new_bin)
}
