//! Introspection queries shared by the checks and, later, by the migration steps.

pub mod compat;
mod tables;

pub use tables::{list_tables, pretty_bytes, IndexCandidate, TableInfo};

use tokio_postgres::Client;

/// The server's version number, e.g. 150018.
pub async fn server_version_num(client: &Client) -> Result<i32, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?;
    Ok(row.get(0))
}

/// One setting as text.
pub async fn setting(client: &Client, name: &str) -> Result<String, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT current_setting($1)", &[&name])
        .await?;
    Ok(row.get(0))
}
