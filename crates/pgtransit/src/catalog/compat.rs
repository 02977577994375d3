//! Catalog queries that run on every server from PostgreSQL 10 on. They are written for the
//! current catalogs; `portable` rewrites what an older server lacks into what it has,
//! before the query is sent:
//!
//! | what | since | before that |
//! |---|---|---|
//! | `pg_index.indnkeyatts` | 11 | every index column is a key column: `indnatts` |
//! | `pg_attribute.attgenerated` | 12 | no generated columns: `''` |
//! | `pg_partition_root(rel)` | 12 | the topmost ancestor through `pg_inherits` |
//! | `pg_partition_tree(rel)` | 12 | the same columns, walked down `pg_inherits` |
//! | `pg_stat_progress_copy` | 14 | no COPY progress: an empty relation |
//!
//! A query that already fits the server is sent as written.

use std::borrow::Cow;

/// `sql` rewritten for a server of `version` (server_version_num).
pub fn portable(sql: &str, version: i32) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(sql);
    if version < 110000 && out.contains("indnkeyatts") {
        out = Cow::Owned(out.replace("indnkeyatts", "indnatts"));
    }
    if version < 120000 {
        if out.contains(".attgenerated") {
            out = Cow::Owned(replace_qualified(&out, ".attgenerated", "''::\"char\""));
        }
        if out.contains("pg_partition_root(") {
            out = Cow::Owned(rewrite_calls(&out, "pg_partition_root(", partition_root));
        }
        if out.contains("pg_partition_tree(") {
            out = Cow::Owned(rewrite_calls(&out, "pg_partition_tree(", partition_tree));
        }
    }
    if version < 140000 && out.contains("pg_stat_progress_copy") {
        out = Cow::Owned(out.replace(
            "pg_stat_progress_copy",
            "(SELECT NULL::oid AS relid, NULL::bigint AS bytes_processed WHERE false)",
        ));
    }
    out
}

/// Replace `alias.column` (any alias) by `with`.
fn replace_qualified(sql: &str, column: &str, with: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find(column) {
        let before = &rest[..i];
        let alias_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map(|j| j + 1)
            .unwrap_or(0);
        out.push_str(&before[..alias_start]);
        out.push_str(with);
        rest = &rest[i + column.len()..];
    }
    out.push_str(rest);
    out
}

/// Replace every call `name(arg)` (balanced parentheses) by `f(arg)`.
fn rewrite_calls(sql: &str, name: &str, f: fn(&str) -> String) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find(name) {
        out.push_str(&rest[..i]);
        let after = &rest[i + name.len()..];
        let mut depth = 1;
        let mut end = None;
        for (j, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(j);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            out.push_str(&rest[i..]);
            return out;
        };
        out.push_str(&f(&after[..end]));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The topmost ancestor of a partition (itself when it has none), as regclass.
fn partition_root(arg: &str) -> String {
    format!(
        "(WITH RECURSIVE up(oid) AS (SELECT ({arg})::oid UNION SELECT i.inhparent FROM pg_inherits i \
         JOIN up ON i.inhrelid = up.oid) SELECT u.oid::regclass FROM up u WHERE NOT EXISTS \
         (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = u.oid))"
    )
}

/// The relation and its partitions, with pg_partition_tree's columns (LATERAL: the
/// function it replaces, in FROM, may refer to the items before it).
fn partition_tree(arg: &str) -> String {
    format!(
        "LATERAL (WITH RECURSIVE tree(relid, parentrelid, isleaf, level) AS (\
         SELECT c.oid::regclass, NULL::regclass, c.relkind NOT IN ('p', 'I'), 0 FROM pg_class c \
         WHERE c.oid = ({arg})::oid \
         UNION ALL SELECT i.inhrelid::regclass, i.inhparent::regclass, c.relkind NOT IN ('p', 'I'), \
         tree.level + 1 FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid::oid \
         JOIN pg_class c ON c.oid = i.inhrelid) SELECT * FROM tree)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_servers_get_the_query_as_written() {
        let q = "SELECT a.attgenerated, i.indnkeyatts FROM pg_partition_tree(x) t";
        assert!(matches!(portable(q, 150000), Cow::Borrowed(_)));
    }

    #[test]
    fn old_servers_get_what_they_have() {
        let q = "SELECT a.attgenerated = '', i.indkey[0:i.indnkeyatts - 1] \
                 FROM pg_partition_tree(format('%I', n)::regclass) t WHERE r.oid = pg_partition_root(s.oid)";
        let p = portable(q, 100000);
        assert!(p.contains("''::\"char\" = ''"), "{p}");
        assert!(p.contains("i.indnatts - 1"), "{p}");
        assert!(
            !p.contains("pg_partition_tree(") && !p.contains("pg_partition_root("),
            "{p}"
        );
        assert!(
            p.contains("WHERE c.oid = (format('%I', n)::regclass)::oid"),
            "{p}"
        );
        let p12 = portable(q, 120000);
        assert!(p12.contains("pg_partition_tree(") && p12.contains("a.attgenerated"));
    }
}
