//! Parsing libpq connection strings (URL and key=value forms) and filling the gaps the way
//! libpq does: PG* environment variables first, then libpq's defaults.

use std::fmt;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use super::secret::Secret;

/// libpq's sslmode; the default is `prefer`, as in libpq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "invalid sslmode \"{other}\": use disable, allow, prefer, require, verify-ca \
                     or verify-full"
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// One PostgreSQL connection as the user described it. Unset fields take the PG* variables
/// and then libpq's defaults when read through the accessor methods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnSpec {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub dbname: Option<String>,
    pub password: Option<Secret>,
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    pub connect_timeout: Option<u64>,
    pub application_name: Option<String>,
    pub options: Option<String>,
    pub passfile: Option<String>,
}

/// Characters escaped when a value is written back into a URL.
const URL_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'/')
    .add(b':')
    .add(b'=')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b']')
    .add(b'\'');

impl ConnSpec {
    /// Parse a libpq URL (`postgres://` or `postgresql://`) or a key=value string. A bare
    /// word without `=` is a database name, as in libpq.
    pub fn parse(input: &str) -> crate::Result<ConnSpec> {
        Self::parse_text(input).map_err(crate::Error::usage)
    }

    fn parse_text(input: &str) -> Result<ConnSpec, String> {
        let input = input.trim();
        if let Some(rest) = input
            .strip_prefix("postgresql://")
            .or_else(|| input.strip_prefix("postgres://"))
        {
            parse_url(rest)
        } else if input.contains('=') {
            parse_keyword_value(input)
        } else if input.is_empty() {
            Ok(ConnSpec::default())
        } else if input.contains('@') {
            // kbcli's form: user[:password]@host[:port][/database], a URL without its
            // scheme (kbcli migration create --source/--sink).
            parse_url(input)
        } else if input.contains(':') || input.contains('/') {
            Err(format!(
                "\"{input}\" is neither a URL (postgresql://user@host:port/db), a key=value string \
                 (host=... dbname=...), kbcli's user:password@host:port/db, nor a database name"
            ))
        } else {
            // A bare word is a database name, as for psql.
            Ok(ConnSpec {
                dbname: Some(input.to_string()),
                ..Default::default()
            })
        }
    }

    fn set(&mut self, key: &str, value: String) -> Result<(), String> {
        match key {
            "host" => self.host = Some(value),
            // hostaddr is accepted for compatibility; it only makes sense as the host here.
            "hostaddr" => self.host = Some(value),
            "port" => {
                self.port = Some(value.parse().map_err(|_| {
                    format!("invalid port \"{value}\": a number between 1 and 65535")
                })?)
            }
            "user" => self.user = Some(value),
            "dbname" => self.dbname = Some(value),
            "password" => self.password = Some(Secret::new(value)),
            "sslmode" => self.sslmode = Some(SslMode::parse(&value)?),
            "sslrootcert" => self.sslrootcert = Some(value),
            "sslcert" => self.sslcert = Some(value),
            "sslkey" => self.sslkey = Some(value),
            "connect_timeout" => {
                self.connect_timeout = Some(value.parse().map_err(|_| {
                    format!("invalid connect_timeout \"{value}\": a number of seconds")
                })?)
            }
            "application_name" | "fallback_application_name" => self.application_name = Some(value),
            "options" => self.options = Some(value),
            "passfile" => self.passfile = Some(value),
            // Accepted and ignored: they do not change where or how we connect.
            "target_session_attrs"
            | "keepalives"
            | "keepalives_idle"
            | "gssencmode"
            | "channel_binding"
            | "client_encoding"
            | "sslcompression" => {}
            other => {
                return Err(format!(
                    "unknown connection parameter \"{other}\" (see the libpq documentation, \
                     \"Parameter Key Words\")"
                ))
            }
        }
        Ok(())
    }

    /// The host: a name, an address or a Unix socket folder (starts with `/`).
    pub fn host(&self) -> String {
        self.host
            .clone()
            .or_else(|| env("PGHOST"))
            .unwrap_or_else(default_host)
    }

    pub fn port(&self) -> u16 {
        self.port
            .or_else(|| env("PGPORT").and_then(|p| p.parse().ok()))
            .unwrap_or(5432)
    }

    pub fn user(&self) -> String {
        self.user
            .clone()
            .or_else(|| env("PGUSER"))
            .unwrap_or_else(os_user)
    }

    pub fn dbname(&self) -> String {
        self.dbname
            .clone()
            .or_else(|| env("PGDATABASE"))
            .unwrap_or_else(|| self.user())
    }

    pub fn sslmode(&self) -> SslMode {
        self.sslmode
            .or_else(|| env("PGSSLMODE").and_then(|m| SslMode::parse(&m).ok()))
            .unwrap_or(SslMode::Prefer)
    }

    pub fn sslrootcert(&self) -> Option<String> {
        self.sslrootcert.clone().or_else(|| env("PGSSLROOTCERT"))
    }

    pub fn sslcert(&self) -> Option<String> {
        self.sslcert.clone().or_else(|| env("PGSSLCERT"))
    }

    pub fn sslkey(&self) -> Option<String> {
        self.sslkey.clone().or_else(|| env("PGSSLKEY"))
    }

    /// Seconds to wait for a connection; libpq waits forever by default, we wait 10 s so that
    /// an unreachable host is reported instead of hanging.
    pub fn connect_timeout(&self) -> u64 {
        self.connect_timeout
            .or_else(|| env("PGCONNECT_TIMEOUT").and_then(|t| t.parse().ok()))
            .filter(|t| *t > 0)
            .unwrap_or(10)
    }

    pub fn application_name(&self) -> String {
        self.application_name
            .clone()
            .or_else(|| env("PGAPPNAME"))
            .unwrap_or_else(|| "pgtransit".to_string())
    }

    pub fn is_unix_socket(&self) -> bool {
        self.host().starts_with('/')
    }

    /// The password: given in the string, else PGPASSWORD, else the matching `.pgpass` line.
    pub fn resolve_password(&self) -> Option<Secret> {
        if let Some(pw) = &self.password {
            return Some(pw.clone());
        }
        if let Some(pw) = env("PGPASSWORD") {
            return Some(Secret::new(pw));
        }
        self.pgpass_line().map(|(_, pw)| Secret::new(pw))
    }

    /// The password file this connection reads (`passfile`, PGPASSFILE, else ~/.pgpass,
    /// None for the default) and the password its matching line gives.
    fn pgpass_line(&self) -> Option<(Option<String>, String)> {
        let file = self.passfile.clone().or_else(|| env("PGPASSFILE"));
        super::pgpass::lookup(
            file.as_deref(),
            &self.host(),
            self.port(),
            &self.dbname(),
            &self.user(),
        )
        .map(|pw| (file, pw))
    }

    /// Where the password `resolve_password` finds comes from, for messages (never the
    /// password itself): the connection string, PGPASSWORD, or a password file.
    pub fn password_origin(&self) -> Option<String> {
        if self.password.is_some() {
            return Some("the connection string".into());
        }
        if env("PGPASSWORD").is_some() {
            return Some("PGPASSWORD".into());
        }
        self.pgpass_line().map(|(file, _)| {
            format!(
                "the password file {}",
                file.unwrap_or_else(|| "~/.pgpass".into())
            )
        })
    }

    /// Where this connects, for messages: `user@host:port/db`. Never a password.
    pub fn display(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.user(),
            self.host(),
            self.port(),
            self.dbname()
        )
    }

    /// The string as the user gave it, in URL form, with a password (if any) replaced by
    /// `****`. Only fields that were given are shown.
    pub fn masked(&self) -> String {
        self.render_url(true)
    }

    fn render_url(&self, with_mask: bool) -> String {
        let enc = |s: &str| utf8_percent_encode(s, URL_VALUE).to_string();
        let mut url = String::from("postgresql://");
        if let Some(user) = &self.user {
            url.push_str(&enc(user));
            if self.password.is_some() && with_mask {
                url.push_str(":****");
            }
            url.push('@');
        }
        let mut query: Vec<(String, String)> = Vec::new();
        match &self.host {
            Some(h) if h.starts_with('/') => query.push(("host".into(), h.clone())),
            Some(h) if h.contains(':') => url.push_str(&format!("[{h}]")),
            Some(h) => url.push_str(&enc(h)),
            None => {}
        }
        if let Some(port) = self.port {
            url.push_str(&format!(":{port}"));
        }
        if let Some(db) = &self.dbname {
            url.push('/');
            url.push_str(&enc(db));
        }
        let mut add = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                query.push((k.into(), v.clone()));
            }
        };
        add("sslmode", &self.sslmode.map(|m| m.as_str().to_string()));
        add("sslrootcert", &self.sslrootcert);
        add("sslcert", &self.sslcert);
        add("sslkey", &self.sslkey);
        add(
            "connect_timeout",
            &self.connect_timeout.map(|t| t.to_string()),
        );
        add("application_name", &self.application_name);
        add("options", &self.options);
        add("passfile", &self.passfile);
        if !query.is_empty() {
            url.push('?');
            let parts: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", enc(v)))
                .collect();
            url.push_str(&parts.join("&"));
        }
        url
    }

    /// A key=value rendering of the fields that were given, password as `****` (for strings
    /// the user wrote in that form, such as Pigsty's `sub_conn`).
    pub fn masked_keyword_value(&self) -> String {
        let q = |v: &str| {
            if v.is_empty() || v.contains([' ', '\\', '\'']) {
                format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
            } else {
                v.to_string()
            }
        };
        let mut parts = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k}={}", q(&v)));
            }
        };
        add("host", self.host.clone());
        add("port", self.port.map(|p| p.to_string()));
        add("dbname", self.dbname.clone());
        add("user", self.user.clone());
        add(
            "password",
            self.password.as_ref().map(|_| "****".to_string()),
        );
        add("sslmode", self.sslmode.map(|m| m.as_str().to_string()));
        add("sslrootcert", self.sslrootcert.clone());
        add(
            "connect_timeout",
            self.connect_timeout.map(|t| t.to_string()),
        );
        add("application_name", self.application_name.clone());
        parts.join(" ")
    }

    /// Mask a connection string in the form it was written (URL or key=value). A string that
    /// does not parse is replaced entirely, since it might hold a password in any place.
    pub fn mask_string(raw: &str) -> String {
        match ConnSpec::parse(raw) {
            Ok(spec) if raw.trim_start().starts_with("postgres") && raw.contains("://") => {
                spec.masked()
            }
            Ok(spec) => spec.masked_keyword_value(),
            Err(_) => "<unparsable connection string, hidden>".to_string(),
        }
    }

    /// A key=value string with every effective setting and no password, for pg_dump and
    /// psql child processes (the password goes into their environment as PGPASSWORD).
    pub fn conninfo_without_password(&self) -> String {
        let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut parts = vec![
            format!("host={}", q(&self.host())),
            format!("port={}", self.port()),
            format!("user={}", q(&self.user())),
            format!("dbname={}", q(&self.dbname())),
            format!("sslmode={}", self.sslmode().as_str()),
            format!("connect_timeout={}", self.connect_timeout()),
            format!("application_name={}", q(&self.application_name())),
        ];
        for (k, v) in [
            ("sslrootcert", self.sslrootcert()),
            ("sslcert", self.sslcert()),
            ("sslkey", self.sslkey()),
            ("options", self.options.clone()),
            ("passfile", self.passfile.clone()),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={}", q(&v)));
            }
        }
        parts.join(" ")
    }

    /// The same connection to another database of the same server.
    pub fn with_dbname(&self, dbname: &str) -> ConnSpec {
        ConnSpec {
            dbname: Some(dbname.to_string()),
            ..self.clone()
        }
    }

    /// The same connection as another user (e.g. the replication user), without the password.
    pub fn with_user(&self, user: &str) -> ConnSpec {
        ConnSpec {
            user: Some(user.to_string()),
            password: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for ConnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn default_host() -> String {
    // Debian's libpq default socket folder, else TCP to localhost.
    for dir in ["/var/run/postgresql", "/tmp"] {
        if std::path::Path::new(dir).join(".s.PGSQL.5432").exists() {
            return dir.to_string();
        }
    }
    "localhost".to_string()
}

fn os_user() -> String {
    if let Ok(u) = std::env::var("USER") {
        if !u.is_empty() {
            return u;
        }
    }
    // SAFETY: getpwuid returns static storage or null; the name is copied out at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    "postgres".to_string()
}

fn decode(s: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "invalid percent-encoding in connection URL".to_string())
}

fn parse_url(rest: &str) -> Result<ConnSpec, String> {
    let mut spec = ConnSpec::default();
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (main, None),
    };
    // The password may contain '@'; the last '@' ends the user info.
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                spec.user = Some(decode(user)?);
            }
            if let Some(p) = password {
                spec.password = Some(Secret::new(decode(p)?));
            }
            hostport
        }
        None => authority,
    };
    if hostport.contains(',') {
        return Err(
            "several hosts in one URL are not supported: give the primary's address".into(),
        );
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or("unterminated [ in the URL's IPv6 host")?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (decode(h)?, Some(p)),
            None => (decode(hostport)?, None),
        }
    };
    if !host.is_empty() {
        spec.host = Some(host);
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        spec.set("port", p.to_string())?;
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        spec.dbname = Some(decode(db)?);
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("URL parameter \"{pair}\" has no value"))?;
            spec.set(&decode(k)?, decode(v)?)?;
        }
    }
    Ok(spec)
}

fn parse_keyword_value(input: &str) -> Result<ConnSpec, String> {
    let mut spec = ConnSpec::default();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!(
                "missing \"=\" after \"{key}\" in connection string"
            ));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("unterminated quoted value for \"{key}\""));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        spec.set(&key, value)?;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_everything() {
        let s = ConnSpec::parse(
            "postgres://dbuser_dba:DBUser.DBA@10.10.10.10:5433/meta?sslmode=verify-full&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(s.host.as_deref(), Some("10.10.10.10"));
        assert_eq!(s.port, Some(5433));
        assert_eq!(s.user.as_deref(), Some("dbuser_dba"));
        assert_eq!(s.password.as_ref().unwrap().expose(), "DBUser.DBA");
        assert_eq!(s.dbname.as_deref(), Some("meta"));
        assert_eq!(s.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(s.connect_timeout(), 3);
        assert_eq!(
            s.masked(),
            "postgresql://dbuser_dba:****@10.10.10.10:5433/meta?sslmode=verify-full&connect_timeout=3"
        );
    }

    #[test]
    fn password_with_at_and_colon() {
        let s = ConnSpec::parse("postgresql://u:p%40ss:w@rd@h/db").unwrap();
        assert_eq!(s.password.unwrap().expose(), "p@ss:w@rd");
        assert_eq!(s.host.as_deref(), Some("h"));
    }

    #[test]
    fn keyword_value_with_quotes() {
        let s = ConnSpec::parse(
            "host=10.10.10.10 dbname=meta user=replicator password='it''s \\'x\\' y'",
        );
        assert!(s.is_err(), "'' is not an escape in libpq key=value strings");
        let s =
            ConnSpec::parse("host=10.10.10.10 dbname = 'my db' user=replicator password='a\\'b c'")
                .unwrap();
        assert_eq!(s.dbname.as_deref(), Some("my db"));
        assert_eq!(s.password.unwrap().expose(), "a'b c");
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(ConnSpec::parse("host=x sslmode=verify")
            .unwrap_err()
            .message
            .contains("invalid sslmode"));
        assert!(ConnSpec::parse("host=x bogus=1")
            .unwrap_err()
            .message
            .contains("unknown connection parameter \"bogus\""));
        assert!(ConnSpec::parse("postgres://h:notaport/db")
            .unwrap_err()
            .message
            .contains("invalid port"));
    }

    #[test]
    fn socket_host_in_query() {
        let s = ConnSpec::parse("postgresql:///meta?host=/var/run/postgresql&port=5433").unwrap();
        assert!(s.is_unix_socket());
        assert_eq!(
            s.masked(),
            "postgresql://:5433/meta?host=%2Fvar%2Frun%2Fpostgresql"
        );
    }

    #[test]
    fn mask_string_keeps_form() {
        assert_eq!(
            ConnSpec::mask_string(
                "host=10.0.0.1 dbname=meta user=replicator password=DBUser.Replicator"
            ),
            "host=10.0.0.1 dbname=meta user=replicator password=****"
        );
        assert_eq!(
            ConnSpec::mask_string("postgres://a:b@h/d"),
            "postgresql://a:****@h/d"
        );
        assert!(!ConnSpec::mask_string("host=x password='p w' junk").contains("p w"));
    }

    #[test]
    fn conninfo_for_children_has_no_password() {
        let s = ConnSpec::parse("postgres://u:topsecret@h:5/d").unwrap();
        let ci = s.conninfo_without_password();
        assert!(!ci.contains("topsecret"));
        assert!(ci.contains("host='h' port=5 user='u' dbname='d'"));
    }
}
