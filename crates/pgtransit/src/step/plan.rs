//! Plans: what a step will do, in order, on which side, with which SQL.

use std::fmt;

use super::Side;

/// One thing a step does.
#[derive(Clone, Debug)]
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
#[derive(Clone, Debug)]
pub struct Plan {
    pub step: &'static str,
    pub actions: Vec<Action>,
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
