//! Throwaway PostgreSQL clusters started from local binaries.
//!
//! Used by the tests, the benches and `pgtransit demo`. A cluster lives in its own temporary
//! folder (data directory, Unix socket, log), listens on a free loopback port, runs with
//! `wal_level=logical` and generous replication limits, and is stopped and removed when the
//! [`Cluster`] is dropped, including while a test unwinds from a panic.
//!
//! PostgreSQL refuses to run as root; when this process is root the server runs as an
//! unprivileged user (`PGSANDBOX_USER`, else `postgres`, else `nobody`).

mod bindir;
mod cluster;
pub mod embedded;
mod overlay;
mod pgbouncer;
mod port;
mod user;

pub use bindir::{find_bindir, major_version};
pub use cluster::{Builder, Cluster, Error};
pub use pgbouncer::{find_pgbouncer, Pgbouncer};
