//! pgtransit: move a live PostgreSQL database to another cluster with logical replication.

pub mod applied;
pub mod catalog;
pub mod check;
pub mod conn;
pub mod error;
pub mod generate;
pub mod marks;
pub mod migration;
pub mod named;
pub mod native;
pub mod pgbouncer;
pub mod quote;
pub mod schema;
pub mod snapshot;
pub mod state;
pub mod step;
pub mod stream;
pub mod switchover;
pub mod task;
pub mod terminate;
pub mod tools;
pub mod verify;

pub use error::{Error, ErrorKind, Result};

/// Fault injection for the crash tests: arm the fail points that the `FAILPOINTS`
/// variable names. Only a build with the `failpoints` feature (the CLI's tests) has any;
/// elsewhere this does nothing.
pub fn arm_fail_points() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}
