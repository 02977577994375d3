//! Opening connections, and turning failures into messages that name the problem and the fix.

use std::time::Duration;

use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::{Client, NoTls};

use super::{tls, ConnSpec, SslMode};

/// Why a connection could not be opened, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {target}: {problem}\n  fix: {fix}")]
pub struct ConnectError {
    /// `user@host:port/db`; never a password.
    pub target: String,
    pub problem: String,
    pub fix: String,
}

/// Connect for SQL. The connection's driver task runs on the current tokio runtime.
pub async fn connect(spec: &ConnSpec) -> Result<Client, ConnectError> {
    let target = spec.display();
    let fail = |problem: String, fix: String| ConnectError {
        target: target.clone(),
        problem,
        fix,
    };
    let mut cfg = tokio_postgres::Config::new();
    let host = spec.host();
    if host.starts_with('/') {
        cfg.host_path(&host);
    } else {
        cfg.host(&host);
    }
    cfg.port(spec.port())
        .user(spec.user())
        .dbname(spec.dbname())
        .application_name(spec.application_name())
        .connect_timeout(Duration::from_secs(spec.connect_timeout()));
    if let Some(options) = &spec.options {
        cfg.options(options);
    }
    if let Some(pw) = spec.resolve_password() {
        cfg.password(pw.expose());
    }
    // The overall bound covers TCP connect, TLS and authentication.
    let limit = Duration::from_secs(spec.connect_timeout() * 2 + 1);
    let mode = spec.sslmode();
    let result = if mode == SslMode::Disable || spec.is_unix_socket() {
        cfg.ssl_mode(PgSslMode::Disable);
        tokio::time::timeout(limit, cfg.connect(NoTls))
            .await
            .map(|r| r.map(|(client, conn)| spawn_driver(client, conn)))
    } else {
        cfg.ssl_mode(match mode {
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
            _ => PgSslMode::Prefer,
        });
        let tls_config = tls::client_config(spec)
            .map_err(|e| fail(format!("TLS setup: {e}"), "fix the ssl* settings".into()))?;
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config);
        tokio::time::timeout(limit, cfg.connect(connector))
            .await
            .map(|r| r.map(|(client, conn)| spawn_driver(client, conn)))
    };
    match result {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(explain(spec, &e, fail)),
        Err(_) => Err(fail(
            format!("no answer within {} s", limit.as_secs()),
            "check that the host is reachable and the port is open (firewall, \
             listen_addresses); raise connect_timeout for slow networks"
                .into(),
        )),
    }
}

fn spawn_driver<S, T>(client: Client, conn: tokio_postgres::Connection<S, T>) -> Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("connection closed: {e}");
        }
    });
    client
}

fn explain(
    spec: &ConnSpec,
    e: &tokio_postgres::Error,
    fail: impl Fn(String, String) -> ConnectError,
) -> ConnectError {
    let user = spec.user();
    if let Some(db) = e.as_db_error() {
        let msg = db.message().to_string();
        return match db.code().code() {
            "28P01" => fail(
                format!("password authentication failed for user \"{user}\""),
                match spec.password_origin() {
                    Some(origin) => format!(
                        "the password came from {origin} and the server refused it: correct it \
                         there (a created task keeps it in its own password file under \
                         PGTRANSIT_HOME; recreate the task with the right one)"
                    ),
                    None => "put the right password in ~/.pgpass \
                             (host:port:database:user:password, mode 0600) or PGPASSWORD"
                        .into(),
                },
            ),
            "28000" if msg.contains("pg_hba.conf") => fail(
                msg,
                "add a matching line to the server's pg_hba.conf and reload \
                 (SELECT pg_reload_conf())"
                    .into(),
            ),
            "28000" => fail(
                msg,
                format!("check that role \"{user}\" exists and may log in"),
            ),
            "3D000" => fail(
                msg,
                format!(
                    "create database \"{}\" or connect to an existing one",
                    spec.dbname()
                ),
            ),
            "53300" => fail(msg, "free connections or raise max_connections".into()),
            "57P03" => fail(msg, "wait until the server has started, then retry".into()),
            _ => fail(msg, "see the server log for details".into()),
        };
    }
    let text = e.to_string();
    let source = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    if text.contains("password missing") {
        return fail(
            format!("the server asks for a password for user \"{user}\" and none was found"),
            "add it to ~/.pgpass (host:port:database:user:password, mode 0600) or set \
             PGPASSWORD"
                .into(),
        );
    }
    if text.contains("server does not support TLS") {
        return fail(text, "enable ssl on the server or lower sslmode".into());
    }
    if text.contains("TLS") || text.contains("tls") || source.contains("certificate") {
        return fail(
            format!("TLS failed: {text} {source}").trim().to_string(),
            "check sslmode, sslrootcert and the server's certificate (verify-full needs the \
             certificate to name the host)"
                .into(),
        );
    }
    fail(
        format!(
            "{text}{}",
            if source.is_empty() {
                String::new()
            } else {
                format!(": {source}")
            }
        ),
        format!(
            "check that PostgreSQL runs on {}:{} and accepts connections from here \
             (listen_addresses, firewall)",
            spec.host(),
            spec.port()
        ),
    )
}

/// A gated replication session (`replication=database`), authenticated and idle: it can
/// run replication commands (IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT) before streaming.
pub async fn replication_session(
    spec: &ConnSpec,
) -> Result<pgwire_replication::ReplicationClient, ConnectError> {
    let (client, _) = open_replication(spec, "", "", false).await?;
    Ok(client)
}

/// Open a replication connection (`replication=database`) and run IDENTIFY_SYSTEM; returns
/// the server's system identifier, timeline and current WAL position as text.
pub async fn connect_replication(spec: &ConnSpec) -> Result<(String, u32, String), ConnectError> {
    let (mut client, id) = open_replication(spec, "", "", true).await?;
    client.abort();
    let id = id.expect("identify requested");
    Ok((id.system_id, id.timeline, id.xlogpos.to_string()))
}

/// The pgwire-replication configuration for `spec` (TLS from sslmode, the password from
/// .pgpass or PGPASSWORD), for `slot` and `publication` when streaming.
pub fn replication_config(
    spec: &ConnSpec,
    slot: &str,
    publication: &str,
) -> pgwire_replication::config::ReplicationConfig {
    use pgwire_replication::config::ReplicationConfig;
    let password = spec
        .resolve_password()
        .map(|p| p.expose().to_string())
        .unwrap_or_default();
    let host = spec.host();
    let cfg = if host.starts_with('/') {
        ReplicationConfig::unix(
            host,
            spec.port(),
            spec.user(),
            password,
            spec.dbname(),
            slot,
            publication,
        )
    } else {
        let tls = replication_tls(spec);
        ReplicationConfig::new(
            host,
            spec.user(),
            password,
            spec.dbname(),
            slot,
            publication,
        )
        .with_port(spec.port())
        .with_tls(tls)
    };
    cfg.with_application_name(spec.application_name())
}

/// The replication connection's TLS, the same as the SQL connections' (`tls::client_config`):
/// `prefer` tries TLS first, `require` with a root certificate checks the chain, verify-full
/// also with an IP host (matched against the certificate's IP addresses), client certificates
/// when given. `allow` starts without TLS, as libpq does (libpq would retry with TLS if the
/// server refused; a server that only accepts TLS needs prefer or stronger here).
fn replication_tls(spec: &ConnSpec) -> pgwire_replication::config::TlsConfig {
    use pgwire_replication::config::{SslMode as ReplSslMode, TlsConfig};
    let (mode, root_file) = tls::effective_mode(spec);
    // "system" means the web PKI roots, which pgwire-replication uses when no file is given.
    let roots = root_file
        .filter(|f| f != "system")
        .map(std::path::PathBuf::from);
    let tls = match mode {
        SslMode::Disable | SslMode::Allow => return TlsConfig::disabled(),
        SslMode::Prefer => TlsConfig {
            mode: ReplSslMode::Prefer,
            ..TlsConfig::default()
        },
        SslMode::Require => TlsConfig::require(),
        SslMode::VerifyCa => TlsConfig::verify_ca(roots),
        SslMode::VerifyFull => TlsConfig::verify_full(roots),
    };
    match (spec.sslcert(), spec.sslkey()) {
        (Some(cert), Some(key)) => tls.with_client_cert(cert, key),
        _ => tls,
    }
}

/// A replication connection failure, explained with its fix.
pub fn replication_error(spec: &ConnSpec, msg: String) -> ConnectError {
    let fix = if msg.contains("pg_hba.conf") {
        format!(
            "add \"host replication {} <address of this machine>/32 scram-sha-256\" \
             (or a database line, for logical replication) to pg_hba.conf and reload",
            spec.user()
        )
    } else if msg.contains("REPLICATION") || msg.contains("permission") {
        format!(
            "ALTER ROLE \"{}\" REPLICATION;",
            spec.user().replace('"', "\"\"")
        )
    } else if msg.contains("password") || msg.contains("auth") {
        "put the replication user's password in ~/.pgpass or PGPASSWORD".into()
    } else {
        "check that the server is reachable and max_wal_senders has room".into()
    };
    ConnectError {
        target: spec.display(),
        problem: msg,
        fix,
    }
}

async fn open_replication(
    spec: &ConnSpec,
    slot: &str,
    publication: &str,
    identify: bool,
) -> Result<
    (
        pgwire_replication::ReplicationClient,
        Option<pgwire_replication::IdentifySystem>,
    ),
    ConnectError,
> {
    let cfg = replication_config(spec, slot, publication);
    let limit = Duration::from_secs(spec.connect_timeout() * 2 + 1);
    let attempt = async {
        let mut client = pgwire_replication::ReplicationClient::connect_gated(cfg).await?;
        // The gated worker authenticates lazily: a first command proves the session works.
        let id = if identify {
            Some(client.identify_system().await?)
        } else {
            client.simple_query("SELECT 1").await?;
            None
        };
        Ok::<_, pgwire_replication::PgWireError>((client, id))
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(replication_error(spec, e.to_string())),
        Err(_) => Err(ConnectError {
            target: spec.display(),
            problem: format!("no answer within {} s", limit.as_secs()),
            fix: "check that the host is reachable and the port is open".into(),
        }),
    }
}
