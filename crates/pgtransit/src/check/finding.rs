//! What a check reports: findings with a severity, the object concerned, an explanation,
//! and the fix.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The migration would fail or lose data: must be fixed first.
    Error,
    /// It works, with a cost or a manual step to plan for.
    Warning,
    /// Worth knowing; nothing to do.
    Info,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        }
    }
}

/// Findings name the side they are about with the runtime's vocabulary.
pub use crate::step::Side;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Which check found it: users, databases, hba, replica-identity, objects, config.
    pub check: &'static str,
    /// A stable identifier of the kind of finding, e.g. `replica-identity.missing`.
    pub code: &'static str,
    pub severity: Severity,
    pub side: Side,
    /// The object concerned, quoted as in SQL, when there is one.
    pub object: Option<String>,
    pub message: String,
    /// What to do: SQL to run or an instruction.
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(
        check: &'static str,
        code: &'static str,
        severity: Severity,
        side: Side,
        message: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            code,
            severity,
            side,
            object: None,
            message: message.into(),
            fix: None,
        }
    }

    pub fn object(mut self, object: impl Into<String>) -> Finding {
        self.object = Some(object.into());
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }
}
