//! `.pgpass` lookup, as libpq does it: `hostname:port:database:username:password`, `*`
//! matching anything, `\` escaping `:` and `\`, the first matching line wins, and the file
//! ignored when others can read it.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

pub fn lookup(file: Option<&str>, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let path = match file {
        Some(f) => PathBuf::from(f),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} has group or world access and is ignored (chmod 0600 it)",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    // libpq matches a socket connection against "localhost" as well as the socket path.
    let host_matches = |pattern: &str| {
        pattern == "*" || pattern == host || (host.starts_with('/') && pattern == "localhost")
    };
    let port = port.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(split_line)
        .find(|f| {
            host_matches(&f[0])
                && (f[1] == "*" || f[1] == port)
                && (f[2] == "*" || f[2] == db)
                && (f[3] == "*" || f[3] == user)
        })
        .map(|f| f[4].clone())
}

fn split_line(line: &str) -> Option<[String; 5]> {
    let mut fields: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins_with_wildcards_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(
            &path,
            "# comment\nother:5432:*:u:no\n127.0.0.1:*:meta:u:pa\\:ss\\\\x\n*:*:*:*:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let f = path.to_str();
        assert_eq!(lookup(f, "127.0.0.1", 5, "meta", "u").unwrap(), "pa:ss\\x");
        assert_eq!(lookup(f, "127.0.0.1", 5, "x", "u").unwrap(), "fallback");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup(f, "127.0.0.1", 5, "meta", "u"), None);
    }
}
