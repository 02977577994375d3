//! Changes to a REPLICA IDENTITY FULL table without any unique index or exclusion
//! constraint on the target, gathered into one run and sent as set statements.
//!
//! Such a table has no row identity but its values: two rows with equal values cannot be
//! told apart, by the source or by anyone, so its content is a multiset of rows, and an
//! UPDATE or DELETE of it is "take away one row equal to the old values" (then "add the
//! new one"). PostgreSQL's own apply finds each such row with a scan of the whole table
//! (before version 16, or without a usable index): one scan per changed row is what makes
//! a FULL table the slowest part of any backlog. This run finds all the rows of a batch in
//! one scan instead.
//!
//! Exactly-once and order, within the run:
//! * a change whose old values are those of a row added earlier in the run (an insert, or
//!   an update's new values) is folded into that addition: insert X then update X to Y is
//!   insert Y; update A to X then delete X is delete A. Every change left then takes away a
//!   row that was in the table before the run, so the run's removals and additions commute:
//!   they go out as removals first (deletes, then updates), then the inserts;
//! * changes taking away equal rows each take a different one (numbered within their group
//!   of equal old values), so N deletes of N duplicates remove N rows, never one;
//! * a removal that finds no row is reported like any other (`Expected`).
//!
//! Why only without a unique index or exclusion constraint: taking removals before
//! additions, and several updates in one statement, could then collide on values that the
//! source only held one after the other. Without one, no statement can fail on another's
//! values. Triggers that fire in the apply session exclude a table too (`foldable`).
//!
//! Values are compared by their bytes from the source when folding (a row the run added is
//! found again by the very values the source sends for it), and by the target's equality
//! operators when matching rows already in the table, NULL-safe, rows also written as the
//! old values were taken first.

use std::collections::HashMap;

use pgoutput::Value;

use super::tables::Table;

/// A whole row's values, in column order.
pub(super) type Row = Vec<Value>;

/// A row's values as bytes, to find an equal row the run holds.
type Fingerprint = Vec<Option<bytes::Bytes>>;

fn fingerprint(row: &[Value]) -> Fingerprint {
    row.iter()
        .map(|v| match v {
            Value::Text(b) | Value::Binary(b) => Some(b.clone()),
            Value::Null | Value::UnchangedToast => None,
        })
        .collect()
}

/// A removal of one row that was in the table before the run: a delete (`new` is None) or
/// an update to `new`, writing the columns in `write`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Change {
    pub old: Row,
    pub new: Option<Row>,
    pub write: Vec<bool>,
    /// The commit LSN of the source transaction that needed the old row.
    pub lsn: u64,
}

/// Where an added row waits.
#[derive(Clone, Copy, Debug)]
enum Added {
    Insert(usize),
    Update(usize),
}

#[derive(Default)]
pub(super) struct FullRun {
    inserts: Vec<Option<Row>>,
    changes: Vec<Change>,
    /// The rows the run adds, by their values.
    added: HashMap<Fingerprint, Vec<Added>>,
    /// Rows waiting (inserts still to send, and changes), which bounds memory.
    rows: usize,
}

/// What a run sends, in this order.
pub(super) struct Parts {
    pub deletes: Vec<Change>,
    pub updates: Vec<Change>,
    pub inserts: Vec<Row>,
}

impl FullRun {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// A row added by the run and equal to `old`, no longer waiting under those values.
    fn take_added(&mut self, old: &[Value]) -> Option<Added> {
        let fp = fingerprint(old);
        let slots = self.added.get_mut(&fp)?;
        let slot = slots.pop();
        if slots.is_empty() {
            self.added.remove(&fp);
        }
        slot
    }

    fn note_added(&mut self, row: &[Value], at: Added) {
        self.added.entry(fingerprint(row)).or_default().push(at);
    }

    pub fn insert(&mut self, row: Row) {
        self.note_added(&row, Added::Insert(self.inserts.len()));
        self.inserts.push(Some(row));
        self.rows += 1;
    }

    /// An update from `old` to `new`, whose every value is given (an unchanged TOAST value
    /// replaced by the old one) and whose `write` columns are written.
    pub fn update(&mut self, old: Row, new: Row, write: Vec<bool>, lsn: u64) {
        match self.take_added(&old) {
            Some(Added::Insert(i)) => {
                self.note_added(&new, Added::Insert(i));
                self.inserts[i] = Some(new);
            }
            Some(Added::Update(i)) => {
                self.note_added(&new, Added::Update(i));
                let c = &mut self.changes[i];
                c.new = Some(new);
                for (w, more) in c.write.iter_mut().zip(write) {
                    *w |= more;
                }
            }
            None => {
                self.note_added(&new, Added::Update(self.changes.len()));
                self.changes.push(Change {
                    old,
                    new: Some(new),
                    write,
                    lsn,
                });
                self.rows += 1;
            }
        }
    }

    pub fn delete(&mut self, old: Row, lsn: u64) {
        match self.take_added(&old) {
            Some(Added::Insert(i)) => {
                self.inserts[i] = None;
                self.rows -= 1;
            }
            Some(Added::Update(i)) => self.changes[i].new = None,
            None => {
                self.changes.push(Change {
                    old,
                    new: None,
                    write: Vec::new(),
                    lsn,
                });
                self.rows += 1;
            }
        }
    }

    pub fn into_parts(self) -> Parts {
        let (updates, deletes) = self.changes.into_iter().partition(|c| c.new.is_some());
        Parts {
            deletes,
            updates,
            inserts: self.inserts.into_iter().flatten().collect(),
        }
    }
}

/// How a column of the old values is matched in one statement, chosen from the values the
/// statement carries: with `=` wherever no value is NULL (which lets the target hash the
/// batch and scan the table once), `IS NULL` where all are, `IS NOT DISTINCT FROM` where
/// both occur.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Match {
    Equal,
    Null,
    Either,
}

impl Match {
    fn of(changes: &[Change], col: usize) -> Match {
        let nulls = changes
            .iter()
            .filter(|c| matches!(c.old[col], Value::Null))
            .count();
        match nulls {
            0 => Match::Equal,
            n if n == changes.len() => Match::Null,
            _ => Match::Either,
        }
    }

    fn letter(self) -> char {
        match self {
            Match::Equal => '=',
            Match::Null => 'n',
            Match::Either => 'd',
        }
    }
}

/// One statement's worth of removals: its SQL, the cache key of its prepared statement and
/// its parameters, row by row (old values, written values, group, number in the group).
pub(super) struct Statement {
    pub key: String,
    pub sql: String,
    pub params: Vec<Value>,
}

/// The columns a batch of updates writes: every column one of them writes.
pub(super) fn written(t: &Table, changes: &[Change]) -> Vec<usize> {
    (0..t.columns.len())
        .filter(|&i| !t.always_identity[i] && changes.iter().any(|c| c.write[i]))
        .collect()
}

/// The statement removing `changes` (all deletes, or all updates writing `set`), each
/// taking a different row: changes with the same old values form a group, numbered
/// 1, 2, ...; the rows equal to a group's values are numbered too, and change k takes
/// row k. Rows are found by one scan, then fetched again by ctid. RETURNING names the
/// ordinal of each change that found its row.
pub(super) fn removal(t: &Table, changes: &[Change], set: Option<&[usize]>) -> Statement {
    let width = t.columns.len();
    let matches: Vec<Match> = (0..width).map(|i| Match::of(changes, i)).collect();
    let mut groups: HashMap<Fingerprint, (usize, usize)> = HashMap::new();
    let mut params = Vec::new();
    let mut tuples = Vec::new();
    for (r, c) in changes.iter().enumerate() {
        let next = groups.len() + 1;
        let g = groups.entry(fingerprint(&c.old)).or_insert((next, 0));
        g.1 += 1;
        let (group, number) = *g;
        let mut ps = Vec::new();
        for (i, v) in c.old.iter().enumerate() {
            params.push(v.clone());
            ps.push(format!("${}::{}", params.len(), t.types[i]));
        }
        for &i in set.unwrap_or(&[]) {
            let new = c.new.as_ref().expect("an update's new values");
            params.push(new[i].clone());
            ps.push(format!("${}::{}", params.len(), t.types[i]));
        }
        for n in [group, number] {
            params.push(Value::Text(bytes::Bytes::from(n.to_string())));
            ps.push(format!("${}::int", params.len()));
        }
        ps.push((r + 1).to_string());
        tuples.push(format!("({})", ps.join(", ")));
    }
    let set = set.unwrap_or(&[]);
    let mut names: Vec<String> = (0..width).map(|i| format!("c{i}")).collect();
    names.extend((0..set.len()).map(|j| format!("s{j}")));
    names.extend(["g", "n", "o"].map(String::from));
    let on: Vec<String> = (0..width)
        .map(|i| {
            let (col, val) = if t.equality[i] {
                (format!("x.{}", t.columns[i]), format!("d.c{i}"))
            } else {
                // No equality operator: both sides as the target renders them.
                (format!("x.{}::text", t.columns[i]), format!("d.c{i}::text"))
            };
            match matches[i] {
                Match::Equal => format!("{col} = {val}"),
                Match::Null => format!("{col} IS NULL"),
                Match::Either => format!("{col} IS NOT DISTINCT FROM {val}"),
            }
        })
        .collect();
    // Equal is not always the same (numeric 1.0 = 1.00, float -0 = 0, 'A' = 'a' of a
    // case-insensitive type): of the rows equal to a group's old values, those also written
    // the same way come first, so that the rows the source changed are the ones taken.
    let exact: Vec<String> = (0..width)
        .filter(|&i| t.equality[i] && matches[i] != Match::Null)
        .map(|i| format!("x.{}::text IS NOT DISTINCT FROM d.c{i}::text", t.columns[i]))
        .collect();
    let order = match exact.is_empty() {
        true => "x.ctid".to_string(),
        false => format!("({}) DESC, x.ctid", exact.join(" AND ")),
    };
    let head = format!(
        "WITH v ({}) AS (VALUES {}), \
         m AS (SELECT x.ctid AS rid, d.g, row_number() OVER (PARTITION BY d.g ORDER BY {order}) AS n \
         FROM {only} AS x JOIN (SELECT DISTINCT ON (g) * FROM v) AS d ON {})",
        names.join(", "),
        tuples.join(", "),
        on.join(" AND "),
        only = t.only_name,
    );
    // The second condition on ctid lets targets older than 12, which cannot look rows up
    // by a joined ctid, fetch them by an array of ctids instead of scanning again.
    let found = "m JOIN v ON v.g = m.g AND v.n = m.n \
                 WHERE x.ctid = m.rid AND x.ctid = ANY (ARRAY(SELECT rid FROM m)) RETURNING v.o";
    let sql = if set.is_empty() {
        format!("{head} DELETE FROM {} AS x USING {found}", t.only_name)
    } else {
        let sets: Vec<String> = set
            .iter()
            .enumerate()
            .map(|(j, &i)| format!("{} = v.s{j}", t.columns[i]))
            .collect();
        format!(
            "{head} UPDATE {} AS x SET {} FROM {found}",
            t.only_name,
            sets.join(", ")
        )
    };
    let letters: String = matches.iter().map(|m| m.letter()).collect();
    let key = match set.is_empty() {
        true => format!("FD{}:{letters}", changes.len()),
        false => format!("FU{}:{set:?}:{letters}", changes.len()),
    };
    Statement { key, sql, params }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        Value::Text(bytes::Bytes::from(s.to_string()))
    }

    fn row(a: &str, b: &str) -> Row {
        vec![v(a), v(b)]
    }

    fn table() -> Table {
        Table {
            name: "\"public\".\"f\"".into(),
            only_name: "ONLY \"public\".\"f\"".into(),
            partitioned: false,
            columns: vec!["\"a\"".into(), "\"b\"".into()],
            key: vec![true, true],
            full_identity: true,
            equality: vec![true, false],
            always_identity: vec![false, false],
            types: vec!["integer".into(), "json".into()],
            copied_until: None,
            idempotent_until: None,
            foldable: true,
            batch_updates: false,
            batch_full: true,
        }
    }

    #[test]
    fn changes_to_rows_the_run_added_fold_into_the_addition() {
        let mut run = FullRun::default();
        let all = vec![true, true];
        run.insert(row("1", "x"));
        run.update(row("1", "x"), row("1", "y"), all.clone(), 10);
        run.update(row("1", "y"), row("1", "z"), all.clone(), 11);
        // An update of a row already there, then of its new values, then a delete of
        // those: one delete of the row that was there.
        run.update(row("2", "p"), row("2", "q"), vec![false, true], 12);
        run.update(row("2", "q"), row("3", "q"), vec![true, false], 13);
        run.delete(row("3", "q"), 14);
        // Two equal rows inserted, one deleted: one is left.
        run.insert(row("4", "d"));
        run.insert(row("4", "d"));
        run.delete(row("4", "d"), 15);
        // A delete of a row the run never added takes one that was there.
        run.delete(row("5", "e"), 16);
        run.update(row("6", "f"), row("6", "g"), vec![false, true], 17);
        run.update(row("6", "g"), row("7", "g"), vec![true, false], 18);
        assert_eq!(run.rows(), 5);
        let parts = run.into_parts();
        assert_eq!(parts.inserts, vec![row("1", "z"), row("4", "d")]);
        assert_eq!(
            parts.deletes,
            vec![
                Change {
                    old: row("2", "p"),
                    new: None,
                    write: vec![true, true],
                    lsn: 12
                },
                Change {
                    old: row("5", "e"),
                    new: None,
                    write: vec![],
                    lsn: 16
                }
            ]
        );
        // The update of the update writes both columns and keeps the first one's LSN.
        assert_eq!(
            parts.updates,
            vec![Change {
                old: row("6", "f"),
                new: Some(row("7", "g")),
                write: vec![true, true],
                lsn: 17
            }]
        );
    }

    #[test]
    fn equal_old_rows_each_take_another_row_and_nulls_choose_the_match() {
        let t = table();
        let change = |a: Value, b: &str| Change {
            old: vec![a, v(b)],
            new: Some(vec![v("9"), v(b)]),
            write: vec![true, false],
            lsn: 1,
        };
        let changes = vec![
            change(v("1"), "x"),
            change(v("1"), "x"),
            change(Value::Null, "y"),
        ];
        let set = written(&t, &changes);
        assert_eq!(set, vec![0]);
        let s = removal(&t, &changes, Some(&set));
        // Group and number of each change: (1, 1), (1, 2), (2, 1).
        let numbers: Vec<&Value> = s.params.chunks(5).flat_map(|p| &p[3..5]).collect();
        assert_eq!(
            numbers,
            vec![&v("1"), &v("1"), &v("1"), &v("2"), &v("2"), &v("1")]
        );
        assert_eq!(s.key, "FU3:[0]:d=");
        assert!(s
            .sql
            .contains("ON x.\"a\" IS NOT DISTINCT FROM d.c0 AND x.\"b\"::text = d.c1::text)"));
        // Of equal rows, those written like the old values first (json has no equality:
        // it is compared by its text already).
        assert!(s.sql.contains(
            "ORDER BY (x.\"a\"::text IS NOT DISTINCT FROM d.c0::text) DESC, x.ctid) AS n"
        ));
        assert!(s.sql.contains(
            "UPDATE ONLY \"public\".\"f\" AS x SET \"a\" = v.s0 FROM m JOIN v ON v.g = m.g AND v.n = m.n"
        ));
        assert!(s.sql.starts_with(
            "WITH v (c0, c1, s0, g, n, o) AS (VALUES ($1::integer, $2::json, $3::integer, $4::int, $5::int, 1), "
        ));
        let deletes: Vec<Change> = changes
            .into_iter()
            .map(|c| Change { new: None, ..c })
            .collect();
        let d = removal(&t, &deletes[2..], None);
        assert_eq!(d.key, "FD1:n=");
        assert!(d.sql.contains("ON x.\"a\" IS NULL AND"));
        assert!(d
            .sql
            .contains("DELETE FROM ONLY \"public\".\"f\" AS x USING m JOIN v"));
    }
}
