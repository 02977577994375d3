//! Task file errors: the file, the line when known, what is wrong and, for a misspelt key,
//! the key that was probably meant.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct TaskFileError {
    pub file: String,
    pub line: Option<u64>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for TaskFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "task file {}, line {}: {}",
                self.file, line, self.message
            )?,
            None => write!(f, "task file {}: {}", self.file, self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TaskFileError {}

impl TaskFileError {
    pub fn new(file: &str, message: impl Into<String>) -> Self {
        TaskFileError {
            file: file.to_string(),
            line: None,
            message: message.into(),
            hint: None,
        }
    }

    /// From a YAML deserialization error: keep its line, make serde's wording plainer, and
    /// add "did you mean" for unknown keys.
    pub fn from_yaml(file: &str, e: &serde_saphyr::Error) -> Self {
        let line = e.location().map(|l| l.line()).filter(|l| *l > 0);
        let full = e.to_string();
        // serde-saphyr appends a source snippet after the first line; we print our own
        // location, so keep the first line only.
        let first = full.lines().next().unwrap_or(&full).to_string();
        let message = strip_location_suffix(&first);
        let hint = unknown_field_hint(&message);
        TaskFileError {
            file: file.to_string(),
            line,
            message,
            hint,
        }
    }
}

/// serde-saphyr writes "error: line 19 column 1: <message>"; we print the line ourselves.
fn strip_location_suffix(msg: &str) -> String {
    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
    let msg = match msg.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map(|(_, m)| m).unwrap_or(rest),
        None => msg,
    };
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// For "unknown field `x`, expected one of `a`, `b`": the closest expected name.
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (field, rest) = rest.split_once('`')?;
    let list = rest.split_once("expected one of ")?.1;
    let expected: Vec<&str> = list
        .split(", ")
        .map(|s| s.trim().trim_matches('`'))
        .filter(|s| !s.is_empty())
        .collect();
    let best = expected
        .iter()
        .map(|cand| (strsim::jaro_winkler(field, cand), *cand))
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    if best.0 >= 0.8 {
        Some(format!("did you mean `{}`?", best.1))
    } else {
        Some(format!("known keys: {}", expected.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_key() {
        let hint =
            unknown_field_hint("unknown field `src_clss`, expected one of `src_cls`, `src_db`");
        assert_eq!(hint.as_deref(), Some("did you mean `src_cls`?"));
        let hint = unknown_field_hint("unknown field `zzz`, expected one of `src_cls`, `src_db`");
        assert_eq!(hint.as_deref(), Some("known keys: src_cls, src_db"));
    }
}
