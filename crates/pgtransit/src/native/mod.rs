//! The native engine: PostgreSQL's own PUBLICATION / SUBSCRIPTION, driven the way Pigsty's
//! migration scripts drive it, without their pitfalls (see research/pigsty.md §4).
//!
//! A step is data before it is action: each step first yields its [`Plan`](crate::step::Plan), the ordered
//! actions with the side they run on and their SQL. `pgtransit <step>` executes the plan,
//! `--dry-run` prints it, and `generate` writes the same SQL files into the context folder
//! whose scripts run them with psql.

mod diff;
mod progress;
pub mod sql;
mod steps;

pub use diff::{diff, plan_diff, DiffReport, DiffRow};
pub use progress::{apply_failure, plan_progress, progress, ErrorWatch, Progress, TableProgress};
pub use steps::{
    copy_seq, create_pub, create_sub, create_sub_without_copy, drop_pub, drop_sub, plan_copy_seq,
    plan_create_pub, plan_create_sub, plan_create_sub_without_copy, plan_drop_pub, plan_drop_sub,
    plan_refresh, refresh, DropSubOutcome,
};
