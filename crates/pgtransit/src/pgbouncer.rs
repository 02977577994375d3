//! pgbouncer as the switchover's fence and router. PAUSE on the admin console makes clients
//! wait instead of failing: pgbouncer lets every running transaction (transaction pooling)
//! finish, then holds new queries. Rerouting rewrites the database's entry in the
//! pgbouncer configuration file to point at the new primary, reloads, closes the server
//! connections to the old one and resumes: the held queries run on the new primary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::conn::{self, ConnSpec};
use crate::error::Error;

/// Where pgbouncer is and which of its database entries carries the application.
#[derive(Clone, Debug)]
pub struct Bouncer {
    /// The admin console (database `pgbouncer`), as a user in `admin_users`.
    pub admin: ConnSpec,
    /// The `[databases]` entry the application connects to.
    pub database: String,
    /// The file holding that entry (pgbouncer.ini, or a file it `%include`s).
    pub config: PathBuf,
}

/// One `[databases]` entry as SHOW DATABASES reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub database: String,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {}:{}/{}",
            self.name, self.host, self.port, self.database
        )
    }
}

/// Whether two host names mean the same server as far as we can tell without DNS: the
/// same text, or both this machine's loopback.
fn same_host(a: &str, b: &str) -> bool {
    let local = |h: &str| matches!(h, "localhost" | "127.0.0.1" | "::1");
    a.eq_ignore_ascii_case(b) || (local(a) && local(b))
}

/// The entries of `entries` that point at `source` (host, port and database).
pub fn entries_for<'e>(entries: &'e [Entry], source: &ConnSpec) -> Vec<&'e Entry> {
    entries
        .iter()
        .filter(|e| {
            same_host(&e.host, &source.host())
                && e.port == source.port()
                && e.database == source.dbname()
        })
        .collect()
}

impl Bouncer {
    /// Find, on pgbouncer's admin console, the entry that points at `source` and the
    /// configuration file that holds it; `database` and `config` override either. Says
    /// how each was found. No entry or several: an error listing them.
    pub async fn discover(
        admin: ConnSpec,
        source: &ConnSpec,
        database: Option<String>,
        config: Option<PathBuf>,
    ) -> Result<(Bouncer, String), Error> {
        let probe = Bouncer {
            admin,
            database: database.clone().unwrap_or_default(),
            config: config.clone().unwrap_or_default(),
        };
        let c = probe.console().await?;
        let entries = show_databases(&c).await?;
        let listed = || {
            entries
                .iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let (name, how_entry) = match database {
            Some(d) if entries.iter().any(|e| e.name == d) => (d, "given with --pgbouncer-db"),
            Some(d) => {
                return Err(Error::failed(format!(
                    "pgbouncer has no database entry {d} (--pgbouncer-db); its entries:\n{}",
                    listed()
                )))
            }
            None => match entries_for(&entries, source).as_slice() {
                [one] => (one.name.clone(), "the entry pointing at the source"),
                [] => {
                    return Err(Error::failed(format!(
                        "no pgbouncer entry points at the source {}: name the application's entry \
                         with --pgbouncer-db; its entries:\n{}",
                        source.display(),
                        listed()
                    )))
                }
                many => {
                    return Err(Error::failed(format!(
                        "{} pgbouncer entries point at the source {}: name the application's with \
                         --pgbouncer-db:\n{}",
                        many.len(),
                        source.display(),
                        many.iter()
                            .map(|e| format!("  {e}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    )))
                }
            },
        };
        let (file, how_file) = match config {
            Some(f) => (f, "given with --pgbouncer-config".to_string()),
            None => {
                let conffile = show_config(&c, "conffile").await?.ok_or_else(|| {
                    Error::failed(
                        "pgbouncer's SHOW CONFIG names no conffile: give the file with \
                         --pgbouncer-config",
                    )
                })?;
                let main = PathBuf::from(&conffile);
                match file_with_entry(&main, &name, 0) {
                    Some(f) if f == main => (f, "pgbouncer's conffile (SHOW CONFIG)".into()),
                    Some(f) => (f, format!("%include of {conffile}")),
                    None => {
                        return Err(Error::failed(format!(
                            "the entry {name} is in neither pgbouncer's conffile {conffile} nor a \
                             file it %includes (readable from here): give the file with \
                             --pgbouncer-config"
                        )))
                    }
                }
            }
        };
        let said = format!(
            "pgbouncer entry {} ({how_entry}), in {} ({how_file})",
            entries
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.to_string())
                .unwrap_or_else(|| name.clone()),
            file.display()
        );
        Ok((
            Bouncer {
                admin: probe.admin,
                database: name,
                config: file,
            },
            said,
        ))
    }

    async fn console(&self) -> Result<Client, Error> {
        let spec = self.admin.with_dbname("pgbouncer");
        conn::connect(&spec).await.map_err(|e| {
            Error::failed(format!(
                "pgbouncer admin console: {e}\n  the user must be in pgbouncer's admin_users"
            ))
        })
    }

    async fn command(&self, c: &Client, sql: &str) -> Result<(), Error> {
        c.simple_query(sql).await.map(|_| ()).map_err(|e| {
            Error::failed(format!(
                "pgbouncer `{sql}`: {}",
                crate::step::first_line(&e.to_string())
            ))
        })
    }

    /// PAUSE the database: returns once no server connection is in use. A pause that does
    /// not finish in `timeout` (a client holding a session or a long transaction) is
    /// cancelled with RESUME, and the fence fails.
    pub async fn pause(&self, timeout: Duration) -> Result<(), Error> {
        if self.paused().await? {
            return Ok(());
        }
        let c = self.console().await?;
        let sql = format!("PAUSE {}", self.database);
        match tokio::time::timeout(timeout, self.command(&c, &sql)).await {
            Ok(r) => r,
            Err(_) => {
                let _ = self.resume().await;
                Err(Error::failed(format!(
                    "pgbouncer could not pause {} within {:.0} s: a client holds its server \
                     connection (session pooling, or a long transaction). Use pool_mode = transaction, \
                     or end the long transaction; the database was resumed",
                    self.database,
                    timeout.as_secs_f64()
                )))
            }
        }
    }

    /// RESUME the database (a database that is not paused is left as it is).
    pub async fn resume(&self) -> Result<(), Error> {
        if !self.paused().await? {
            return Ok(());
        }
        let c = self.console().await?;
        self.command(&c, &format!("RESUME {}", self.database)).await
    }

    /// Whether SHOW DATABASES has the entry paused.
    pub async fn paused(&self) -> Result<bool, Error> {
        let c = self.console().await?;
        let rows = c.simple_query("SHOW DATABASES").await.map_err(|e| {
            Error::failed(format!(
                "pgbouncer SHOW DATABASES: {}",
                crate::step::first_line(&e.to_string())
            ))
        })?;
        for m in rows {
            if let SimpleQueryMessage::Row(r) = m {
                let name = r.get("name");
                if name == Some(self.database.as_str()) {
                    return Ok(r.get("paused") == Some("1"));
                }
            }
        }
        Err(Error::failed(format!(
            "pgbouncer has no database entry {}: name it with --pgbouncer-db",
            self.database
        )))
    }

    /// Point the entry at `to`, RELOAD, drop the server connections to the old server
    /// (RECONNECT) and RESUME. Returns the entry's old line.
    pub async fn reroute(&self, to: &ConnSpec) -> Result<String, Error> {
        let old = rewrite_entry(&self.config, &self.database, to)?;
        let c = self.console().await?;
        self.command(&c, "RELOAD").await?;
        self.command(&c, &format!("RECONNECT {}", self.database))
            .await?;
        drop(c);
        self.resume().await?;
        Ok(old)
    }
}

/// SHOW DATABASES, without the admin console's own entry.
async fn show_databases(c: &Client) -> Result<Vec<Entry>, Error> {
    let rows = c.simple_query("SHOW DATABASES").await.map_err(|e| {
        Error::failed(format!(
            "pgbouncer SHOW DATABASES: {}",
            crate::step::first_line(&e.to_string())
        ))
    })?;
    Ok(rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(Entry {
                name: r.get("name")?.to_string(),
                host: r.get("host").unwrap_or("").to_string(),
                port: r.get("port").and_then(|p| p.parse().ok()).unwrap_or(5432),
                database: r.get("database").unwrap_or("").to_string(),
            }),
            _ => None,
        })
        .filter(|e| e.name != "pgbouncer")
        .collect())
}

/// One setting from SHOW CONFIG.
async fn show_config(c: &Client, key: &str) -> Result<Option<String>, Error> {
    let rows = c.simple_query("SHOW CONFIG").await.map_err(|e| {
        Error::failed(format!(
            "pgbouncer SHOW CONFIG: {}",
            crate::step::first_line(&e.to_string())
        ))
    })?;
    Ok(rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) if r.get("key") == Some(key) => {
            r.get("value").map(str::to_string)
        }
        _ => None,
    }))
}

/// The file, `file` or one it `%include`s (depth-first, at most 8 deep), whose
/// `[databases]` section has the entry `db`.
fn file_with_entry(file: &Path, db: &str, depth: usize) -> Option<PathBuf> {
    let text = std::fs::read_to_string(file).ok()?;
    if replace_entry(&text, db, &ConnSpec::parse("postgresql:///x").ok()?).is_some() {
        return Some(file.to_path_buf());
    }
    if depth >= 8 {
        return None;
    }
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("%include"))
        .map(|rest| {
            let p = PathBuf::from(rest.trim());
            if p.is_relative() {
                file.parent().map(|d| d.join(&p)).unwrap_or(p)
            } else {
                p
            }
        })
        .find_map(|inc| file_with_entry(&inc, db, depth + 1))
}

/// Rewrite the `[databases]` entry `db` in `file` so that it points at `to` (host, port,
/// dbname; the entry's other settings stay). The file is replaced atomically with the same
/// permissions. Returns the old line.
pub fn rewrite_entry(file: &Path, db: &str, to: &ConnSpec) -> Result<String, Error> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::failed(format!("reading {}: {e}", file.display())))?;
    let (new_text, old) = replace_entry(&text, db, to).ok_or_else(|| {
        Error::failed(format!(
            "{} has no entry `{db} = ...` in its [databases] section: give the file that holds it \
             with --pgbouncer-config",
            file.display()
        ))
    })?;
    let tmp = file.with_extension("pgtransit.tmp");
    let perms = std::fs::metadata(file).map(|m| m.permissions()).ok();
    std::fs::write(&tmp, new_text)
        .and_then(|_| match perms {
            Some(p) => std::fs::set_permissions(&tmp, p),
            None => Ok(()),
        })
        .and_then(|_| copy_owner(file, &tmp))
        .and_then(|_| std::fs::rename(&tmp, file))
        .map_err(|e| Error::failed(format!("writing {}: {e}", file.display())))?;
    Ok(old)
}

/// pgbouncer may run as another user than pgtransit: the new file keeps the old owner.
fn copy_owner(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(from)?;
    std::os::unix::fs::chown(to, Some(m.uid()), Some(m.gid())).or_else(|e| {
        // Not allowed to give files away: fine when we are that owner anyway.
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Ok(())
        } else {
            Err(e)
        }
    })
}

/// The file text with entry `db` pointed at `to`, and the old line; None when the
/// `[databases]` section has no such entry.
fn replace_entry(text: &str, db: &str, to: &ConnSpec) -> Option<(String, String)> {
    let mut in_databases = false;
    let mut old = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_databases = t.eq_ignore_ascii_case("[databases]");
        } else if in_databases && old.is_none() && !t.starts_with(';') && !t.starts_with('#') {
            if let Some((key, value)) = t.split_once('=') {
                if key.trim() == db {
                    old = Some(line.to_string());
                    out.push(format!("{db} = {}", retarget(value.trim(), to)));
                    continue;
                }
            }
        }
        out.push(line.to_string());
    }
    let mut new_text = out.join("\n");
    if text.ends_with('\n') {
        new_text.push('\n');
    }
    old.map(|o| (new_text, o))
}

/// An entry's `key=value` list with host, port and dbname taken from `to`.
fn retarget(value: &str, to: &ConnSpec) -> String {
    let mut parts: Vec<String> = settings(value)
        .into_iter()
        .filter(|p| {
            let k = p.split('=').next().unwrap_or("").trim();
            !matches!(k, "host" | "port" | "dbname")
        })
        .collect();
    parts.insert(0, format!("dbname={}", to.dbname()));
    parts.insert(0, format!("port={}", to.port()));
    parts.insert(0, format!("host={}", to.host()));
    parts.join(" ")
}

/// The `key=value` settings of an entry; a value in single quotes may hold spaces.
fn settings(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in value.chars() {
        match ch {
            '\'' => {
                quoted = !quoted;
                cur.push(ch);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_pointing_at_the_source_is_found() {
        let e = |name: &str, host: &str, port: u16, db: &str| Entry {
            name: name.into(),
            host: host.into(),
            port,
            database: db.into(),
        };
        let entries = vec![
            e("app", "localhost", 5432, "shop"),
            e("reports", "127.0.0.1", 5432, "postgres"),
            e("app_ro", "10.0.0.9", 5432, "shop"),
        ];
        let source = ConnSpec::parse("postgresql://u@127.0.0.1:5432/shop").unwrap();
        let found = entries_for(&entries, &source);
        assert_eq!(found, vec![&entries[0]]);
        let twice = vec![entries[0].clone(), e("app2", "127.0.0.1", 5432, "shop")];
        assert_eq!(entries_for(&twice, &source).len(), 2);
    }

    #[test]
    fn only_the_named_entry_of_the_databases_section_changes() {
        let ini = "[databases]\n; app = host=x\nother = host=a port=1 dbname=other\napp = host=old port=5432 dbname=app pool_size=20\n\n[pgbouncer]\napp = 1\n";
        let to = ConnSpec::parse("postgres://u@newhost:6543/app2").unwrap();
        let (text, old) = replace_entry(ini, "app", &to).unwrap();
        assert_eq!(old, "app = host=old port=5432 dbname=app pool_size=20");
        assert_eq!(
            text,
            "[databases]\n; app = host=x\nother = host=a port=1 dbname=other\napp = host=newhost port=6543 dbname=app2 pool_size=20\n\n[pgbouncer]\napp = 1\n"
        );
        assert!(replace_entry(ini, "missing", &to).is_none());
        assert_eq!(
            retarget("host=a application_name='my app' port=1", &to),
            "host=newhost port=6543 dbname=app2 application_name='my app'"
        );
    }
}
