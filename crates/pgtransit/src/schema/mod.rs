//! The schema copy both engines start with: pg_dump of the selected objects, split the way
//! each engine needs it (pre-data with or without keys, post-data), restored through psql
//! (`restore`), and the stream engine's indexes built in parallel after the copy
//! (`indexes`).

mod copy;
mod indexes;
mod restore;

pub use copy::{copy_schema, copy_tables, plan_copy_schema, SchemaOptions, Section};
