//! The library's one error type: what kind of failure it is (which decides a retry and the
//! command's exit code), the message for the user (what failed, why, and the fix), and the
//! database error underneath when there is one. Kinds come from the error's type and
//! SQLSTATE, never from the words of its message: a table named `connections` must not make
//! an apply error look like a lost connection.

use tokio_postgres::error::SqlState;

use crate::conn::ConnectError;

/// What kind of failure; the command line maps each to its exit code in one place (an
/// exhaustive match, so a new kind must be given its code there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: a task file, a flag value, a task name that does not exist.
    Usage,
    /// A side could not be reached or refused the login.
    Connect,
    /// A query or a program failed.
    Failed,
    /// Differences were found (`diff`, `verify`).
    Differences,
    /// Refused to overwrite data or an object that is not this task's; a name taken; a
    /// worker already running.
    Refused,
    /// A connection broke in the middle (I/O error, closed session, SQLSTATE class 08, or
    /// the server shutting down: 57P01-57P03). The only kind the stream engine retries.
    Lost,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    /// What was being done, what went wrong and what to do about it.
    pub message: String,
    /// The server's error, kept for its SQLSTATE and details.
    #[source]
    pub source: Option<tokio_postgres::Error>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }
    pub fn failed(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Failed, message)
    }
    pub fn refused(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Refused, message)
    }
    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Usage, message)
    }

    /// The SQLSTATE of the database error underneath, if any.
    pub fn code(&self) -> Option<&SqlState> {
        self.source.as_ref().and_then(|e| e.code())
    }

    /// The same error with `context` in front of its message.
    pub fn context(mut self, context: impl std::fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl From<ConnectError> for Error {
    fn from(e: ConnectError) -> Self {
        Error::new(ErrorKind::Connect, e.to_string())
    }
}

impl From<crate::task::TaskFileError> for Error {
    fn from(e: crate::task::TaskFileError) -> Self {
        Error::usage(e.to_string())
    }
}

/// A database error with the server's message, SQLSTATE, detail and hint, and what was
/// being done.
pub fn sql_error(what: &str, e: tokio_postgres::Error) -> Error {
    let detail = match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("\n  detail: {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("\n  hint: {h}"));
            }
            s
        }
        None => e.to_string(),
    };
    let kind = if connection_lost(&e) {
        ErrorKind::Lost
    } else {
        ErrorKind::Failed
    };
    Error {
        kind,
        message: format!("{what}: {detail}"),
        source: Some(e),
    }
}

/// Whether an error means the session is gone (so the work may be retried on a new one),
/// decided from the error's type and SQLSTATE, never from its text.
pub fn connection_lost(e: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        return sqlstate_lost(db.code().code());
    }
    // No server answer at all: the socket failed.
    e.source().is_some_and(|s| s.is::<std::io::Error>())
}

/// SQLSTATEs of a lost connection: class 08 (connection exception), admin or crash
/// shutdown and "cannot connect now" (57P01-57P03).
pub fn sqlstate_lost(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_sqlstates_not_words() {
        assert!(sqlstate_lost("08006") && sqlstate_lost("57P01"));
        assert!(!sqlstate_lost("23505") && !sqlstate_lost("42P01"));
        let e = Error::failed("updating public.connections: closed shutdown terminating");
        assert_eq!(e.kind, ErrorKind::Failed);
        assert_eq!(e.context("apply").message.split(':').next(), Some("apply"));
    }
}
