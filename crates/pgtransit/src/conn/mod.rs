//! Connections to PostgreSQL: what a user writes (libpq URL or key=value string, PG*
//! variables, `.pgpass`, sslmode) resolved into one [`ConnSpec`], and connecting with it.
//!
//! The password is held as a [`Secret`] that never prints. Every display form of a
//! connection ([`ConnSpec::masked`], [`ConnSpec::display`]) leaves it out.

mod connect;
mod parse;
mod pgpass;
mod secret;
mod tls;

pub use connect::{
    connect, connect_replication, replication_config, replication_error, replication_session,
    ConnectError,
};
pub use parse::{ConnSpec, SslMode};
pub use secret::Secret;
