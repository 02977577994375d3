//! The runtime every step of both engines runs on: the [`Session`] with its connections to
//! the two sides, the [`Plan`] a step shows before it acts, and the [`Side`] each action
//! runs on.

mod plan;
mod session;

use serde::Serialize;

pub use plan::{Action, Plan};
pub use session::{first_line, Session};

/// Where an action runs or a finding applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Source,
    Target,
    Local,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
            Side::Local => "local",
        }
    }
}
