//! Plans: what a step will do, in order, on which side, with which SQL.

use std::fmt;

use super::Side;

/// One thing a step does.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// A read-only query whose answer decides what happens next (a guard, a state check).
    Inspect {
        side: Side,
        why: String,
        sql: String,
    },
    /// A query on `from` whose rows are statements; they are shown, then run one by one on
    /// `to` (psql -f semantics: each statement on its own unless the SQL opens a
    /// transaction).
    Generate {
        from: Side,
        to: Side,
        why: String,
        sql: String,
    },
    /// Statements run as written on `side`.
    Execute {
        side: Side,
        why: String,
        sql: String,
    },
    /// A client program run on this machine (pg_dump, pg_restore).
    Program { why: String, command: String },
}

/// A step's actions.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Plan {
    pub step: &'static str,
    pub actions: Vec<Action>,
}

impl Action {
    /// The same action on the other server: a reverse task's step, planned from its own
    /// task, whose source is the forward task's target.
    pub fn swap_sides(self) -> Action {
        let swap = |s: Side| match s {
            Side::Source => Side::Target,
            Side::Target => Side::Source,
            Side::Local => Side::Local,
        };
        match self {
            Action::Inspect { side, why, sql } => Action::Inspect {
                side: swap(side),
                why,
                sql,
            },
            Action::Generate { from, to, why, sql } => Action::Generate {
                from: swap(from),
                to: swap(to),
                why,
                sql,
            },
            Action::Execute { side, why, sql } => Action::Execute {
                side: swap(side),
                why,
                sql,
            },
            p @ Action::Program { .. } => p,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "-- pgtransit {}: {} action(s)",
            self.step,
            self.actions.len()
        )?;
        for (i, a) in self.actions.iter().enumerate() {
            let n = i + 1;
            match a {
                Action::Inspect { side, why, sql } => {
                    writeln!(f, "\n-- {n}. [{}] inspect: {why}\n{}", side.label(), sql.trim())?
                }
                Action::Generate { from, to, why, sql } => writeln!(
                    f,
                    "\n-- {n}. [{} -> {}] {why}\n--    (this query writes the statements; they run on the {})\n{}",
                    from.label(),
                    to.label(),
                    to.label(),
                    sql.trim()
                )?,
                Action::Execute { side, why, sql } => {
                    writeln!(f, "\n-- {n}. [{}] {why}\n{}", side.label(), sql.trim())?
                }
                Action::Program { why, command } => {
                    writeln!(f, "\n-- {n}. [local] {why}\n-- $ {command}")?
                }
            }
        }
        Ok(())
    }
}
