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

/// The settings that decide how values are written as text (dates, intervals, floats,
/// time zones, bytea), pinned on every session that moves rows as text, on both sides:
/// a text COPY or a change rendered under the source's DateStyle `SQL, DMY` and read under
/// the target's `SQL, MDY` would swap day and month without an error, and
/// extra_float_digits below 1 would round floats.
pub const PINNED_TEXT_SETTINGS: &str = "SET datestyle = 'ISO, MDY'; SET intervalstyle = postgres; \
     SET extra_float_digits = 3; SET timezone = 'UTC'; SET bytea_output = hex";
