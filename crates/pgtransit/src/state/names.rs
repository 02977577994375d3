//! The task store's vocabularies: a task's status, its steps and their states. Each is an
//! enum whose text (in the store, in JSON, in `describe`) is written once, in the list
//! given to `named!`; parsing, printing, serde and SQLite all use that list.

use crate::named::named;

named! {
    /// A task's status as the store keeps it.
    pub enum TaskStatus {
        Created = "created",
        /// A worker runs it (or ran it and died: see `migration::effective_status`).
        Running = "running",
        /// Stopped by a signal; `start` continues.
        Stopped = "stopped",
        /// Every step is done (a task without cdc).
        Complete = "complete",
        Failed = "failed",
        /// `terminate` could not drop everything; a later terminate finishes.
        Terminating = "terminating",
        SwitchedOver = "switched-over",
        RolledBack = "rolled-back",
    }
}

named! {
    /// kbcli's steps, in the order a worker runs them.
    pub enum Step {
        Precheck = "precheck",
        InitStruct = "init-struct",
        InitData = "init-data",
        Cdc = "cdc",
    }
}

named! {
    pub enum StepState {
        Pending = "pending",
        Running = "running",
        Complete = "complete",
        Failed = "failed",
        Skipped = "skipped",
    }
}

impl StepState {
    /// Nothing is left to do in a step in this state.
    pub fn settled(self) -> bool {
        matches!(self, StepState::Complete | StepState::Skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_text_per_variant_both_ways() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), *s);
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(Step::InitStruct.to_string(), "init-struct");
        assert!("copy"
            .parse::<Step>()
            .unwrap_err()
            .message
            .contains("precheck, init-struct"));
        let st: StepState = serde_json::from_str("\"skipped\"").unwrap();
        assert!(st.settled());
    }
}
