//! pgtransit: move a live PostgreSQL database to another cluster with logical replication.

pub mod conn;
pub mod task;
