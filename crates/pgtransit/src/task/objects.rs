//! Which schemas and tables a task moves: `include` and `exclude` lists of `schema` or
//! `schema.table` patterns (`*` and `?` wildcards; double quotes for names with dots,
//! capitals or spaces, e.g. `"Sales"."Order.Items"`). Exclude wins. An empty include list
//! means every user schema. System schemas and extension internals (TimescaleDB, Citus
//! columnar) are never moved as tables.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<ObjectPattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<ObjectPattern>,
}

/// `schema` or `schema.table`, each part a glob.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectPattern {
    pub schema: String,
    pub table: Option<String>,
}

/// Schemas whose tables belong to PostgreSQL or to an extension's internals.
pub fn is_internal_schema(schema: &str) -> bool {
    schema == "information_schema"
        // pgtransit's own bookkeeping on the target (copy progress).
        || schema == "pgtransit"
        || schema.starts_with("pg_")
        || schema.starts_with("_timescaledb")
        || schema.starts_with("timescaledb_")
        || matches!(
            schema,
            "citus" | "citus_internal" | "columnar" | "columnar_internal"
        )
}

impl ObjectFilter {
    /// Pigsty's exclusions, minus its blanket skip of every `_`-prefixed schema (which drops
    /// user schemas silently): its `monitor` and `repack` schemas.
    pub fn pigsty() -> ObjectFilter {
        ObjectFilter {
            include: vec![],
            exclude: ["monitor", "repack"]
                .iter()
                .map(|s| ObjectPattern {
                    schema: s.to_string(),
                    table: None,
                })
                .collect(),
        }
    }

    /// Whether the table `schema.table` is moved.
    pub fn includes_table(&self, schema: &str, table: &str) -> bool {
        if is_internal_schema(schema) {
            return false;
        }
        if self.exclude.iter().any(|p| p.matches(schema, Some(table))) {
            return false;
        }
        self.include.is_empty() || self.include.iter().any(|p| p.matches(schema, Some(table)))
    }

    /// Whether anything of `schema` is moved (schema-level objects: types, functions...).
    pub fn includes_schema(&self, schema: &str) -> bool {
        if is_internal_schema(schema) {
            return false;
        }
        if self
            .exclude
            .iter()
            .any(|p| p.table.is_none() && p.matches(schema, None))
        {
            return false;
        }
        self.include.is_empty() || self.include.iter().any(|p| glob(&p.schema, schema))
    }

    /// The same selection as [`ObjectFilter::includes_table`], as a SQL condition over the
    /// columns `schema_col` and `table_col` (e.g. `n.nspname`, `c.relname`), so a query on
    /// either server and a generated script select exactly what pgtransit selects.
    pub fn sql_table_condition(&self, schema_col: &str, table_col: &str) -> String {
        let mut parts = vec![internal_schema_condition(schema_col)];
        for p in &self.exclude {
            parts.push(format!(
                "NOT {}",
                p.sql_condition(schema_col, Some(table_col))
            ));
        }
        if !self.include.is_empty() {
            let any: Vec<String> = self
                .include
                .iter()
                .map(|p| p.sql_condition(schema_col, Some(table_col)))
                .collect();
            parts.push(format!("({})", any.join(" OR ")));
        }
        parts.join(" AND ")
    }

    /// The same selection as [`ObjectFilter::includes_schema`], as a SQL condition.
    pub fn sql_schema_condition(&self, schema_col: &str) -> String {
        let mut parts = vec![internal_schema_condition(schema_col)];
        for p in self.exclude.iter().filter(|p| p.table.is_none()) {
            parts.push(format!("NOT {}", p.sql_condition(schema_col, None)));
        }
        if !self.include.is_empty() {
            let any: Vec<String> = self
                .include
                .iter()
                .map(|p| format!("{schema_col} ~ {}", glob_regex(&p.schema)))
                .collect();
            parts.push(format!("({})", any.join(" OR ")));
        }
        parts.join(" AND ")
    }
}

/// [`is_internal_schema`] in SQL.
fn internal_schema_condition(col: &str) -> String {
    format!(
        "{col} NOT IN ('information_schema', 'pgtransit') AND {col} !~ '^pg_' AND {col} !~ '^_timescaledb' \
         AND {col} !~ '^timescaledb_' \
         AND {col} NOT IN ('citus', 'citus_internal', 'columnar', 'columnar_internal')"
    )
}

/// A glob as an anchored POSIX regular expression literal.
fn glob_regex(glob: &str) -> String {
    let mut re = String::from("^");
    for c in glob.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c if "\\.^$|()[]{}+".contains(c) => {
                re.push('\\');
                re.push(c);
            }
            c => re.push(c),
        }
    }
    re.push('$');
    crate::quote::literal(&re)
}

impl ObjectPattern {
    /// This pattern as a SQL condition (see [`ObjectFilter::sql_table_condition`]).
    fn sql_condition(&self, schema_col: &str, table_col: Option<&str>) -> String {
        let schema = format!("{schema_col} ~ {}", glob_regex(&self.schema));
        match (&self.table, table_col) {
            (None, _) => format!("({schema})"),
            (Some(t), Some(col)) => format!("({schema} AND {col} ~ {})", glob_regex(t)),
            (Some(_), None) => "false".to_string(),
        }
    }

    pub fn matches(&self, schema: &str, table: Option<&str>) -> bool {
        if !glob(&self.schema, schema) {
            return false;
        }
        match (&self.table, table) {
            (None, _) => true,
            (Some(pt), Some(t)) => glob(pt, t),
            (Some(_), None) => false,
        }
    }

    pub fn parse(text: &str) -> crate::Result<ObjectPattern> {
        let parts = split_quoted(text.trim()).map_err(crate::Error::usage)?;
        match parts.as_slice() {
            [schema] => Ok(ObjectPattern {
                schema: schema.clone(),
                table: None,
            }),
            [schema, table] => Ok(ObjectPattern {
                schema: schema.clone(),
                table: Some(table.clone()),
            }),
            _ => Err(crate::Error::usage(format!(
                "\"{text}\" is not `schema` or `schema.table` (quote names that contain dots)"
            ))),
        }
    }
}

/// Split on dots outside double quotes; `""` inside quotes is a literal quote.
fn split_quoted(text: &str) -> Result<Vec<String>, String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                parts.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            c => parts.last_mut().unwrap().push(c),
        }
    }
    if quoted {
        return Err(format!("unterminated quote in \"{text}\""));
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("empty name in \"{text}\""));
    }
    Ok(parts)
}

fn quote_part(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_*?".contains(c))
    {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

impl TryFrom<String> for ObjectPattern {
    type Error = crate::Error;
    fn try_from(s: String) -> crate::Result<Self> {
        ObjectPattern::parse(&s)
    }
}

impl From<ObjectPattern> for String {
    fn from(p: ObjectPattern) -> String {
        match &p.table {
            Some(t) => format!("{}.{}", quote_part(&p.schema), quote_part(t)),
            None => quote_part(&p.schema),
        }
    }
}

impl std::fmt::Display for ObjectPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from(self.clone()))
    }
}

/// Shell-style glob with `*` and `?`, on characters.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> ObjectPattern {
        ObjectPattern::parse(s).unwrap()
    }

    #[test]
    fn include_exclude_with_globs_and_quotes() {
        let f = ObjectFilter {
            include: vec![
                pat("public"),
                pat("app.order_*"),
                pat("\"Sales\".\"Order.Items\""),
            ],
            exclude: vec![pat("public.tmp_?")],
        };
        assert!(f.includes_table("public", "users"));
        assert!(!f.includes_table("public", "tmp_1"));
        assert!(f.includes_table("public", "tmp_12"));
        assert!(f.includes_table("app", "order_lines"));
        assert!(!f.includes_table("app", "customers"));
        assert!(f.includes_table("Sales", "Order.Items"));
        assert!(!f.includes_table("pg_catalog", "pg_class"));
        assert!(!f.includes_table("_timescaledb_internal", "_hyper_1_1_chunk"));
    }

    #[test]
    fn pigsty_filter_keeps_underscore_schemas() {
        let f = ObjectFilter::pigsty();
        assert!(f.includes_table("_app", "t"));
        assert!(!f.includes_table("monitor", "t"));
    }

    #[test]
    fn patterns_round_trip_as_text() {
        for s in [
            "public",
            "app.order_*",
            "\"Sales\".\"Order.Items\"",
            "\"a\"\"b\".t",
        ] {
            assert_eq!(String::from(pat(s)), s);
        }
        assert!(ObjectPattern::parse("a.b.c").is_err());
        assert!(ObjectPattern::parse("\"a.b").is_err());
    }
}

#[cfg(test)]
mod sql_tests {
    use super::*;

    #[test]
    fn conditions_quote_and_anchor_globs() {
        let f = ObjectFilter {
            include: vec![ObjectPattern::parse("app.order_*").unwrap()],
            exclude: vec![ObjectPattern::parse("\"It's\"").unwrap()],
        };
        let c = f.sql_table_condition("n.nspname", "c.relname");
        assert!(
            c.contains("n.nspname ~ '^app$' AND c.relname ~ '^order_.*$'"),
            "{c}"
        );
        assert!(c.contains("NOT (n.nspname ~ '^It''s$')"), "{c}");
        let s = f.sql_schema_condition("n.nspname");
        assert!(s.contains("(n.nspname ~ '^app$')"), "{s}");
        assert_eq!(glob_regex("a.b?"), "'^a\\.b.$'");
    }
}
