//! Comparing a piece: both sides' summaries, re-read at consistent points while they
//! differ, then narrowed down by key ranges and merged row by row in key order to name the
//! keys that differ.

use std::sync::Mutex;

use tokio_postgres::Client;

use super::chunks::{digest, sorted_rows, split, summary, Chunk};
use super::consistent::{consistent_summaries, recheck_keys};
use super::tables::Table;
use super::{Mode, TableResult, VerifyOptions};
use crate::error::{sql_error, Error};
use crate::task::Task;

/// One step of the merge of two row lists sorted by key (byte order): what the rows in
/// front say, and which side moves on.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Both lists are done.
    Done,
    /// The source's key is not on the target: the source moves on.
    Missing,
    /// The target's key is not on the source: the target moves on.
    Extra,
    /// The same key with different content: both move on.
    Changed,
    /// The same row: both move on.
    Same,
}

/// `(key, hash)` in front of the source and the target.
fn step(x: Option<&(String, String)>, y: Option<&(String, String)>) -> Step {
    match (x, y) {
        (None, None) => Step::Done,
        (Some(_), None) => Step::Missing,
        (None, Some(_)) => Step::Extra,
        (Some((k1, h1)), Some((k2, h2))) => match k1.as_bytes().cmp(k2.as_bytes()) {
            std::cmp::Ordering::Less => Step::Missing,
            std::cmp::Ordering::Greater => Step::Extra,
            std::cmp::Ordering::Equal if h1 != h2 => Step::Changed,
            std::cmp::Ordering::Equal => Step::Same,
        },
    }
}

impl Keys {
    /// Record what a step found; whether the source and the target move on.
    fn note(
        &mut self,
        st: &Step,
        x: Option<&(String, String)>,
        y: Option<&(String, String)>,
    ) -> (bool, bool) {
        let key = |r: Option<&(String, String)>| r.map(|r| r.0.clone()).unwrap_or_default();
        match st {
            Step::Done => (false, false),
            Step::Missing => {
                self.missing.push(key(x));
                (true, false)
            }
            Step::Extra => {
                self.extra.push(key(y));
                (false, true)
            }
            Step::Changed => {
                self.changed.push(key(x));
                (true, true)
            }
            Step::Same => (true, true),
        }
    }
}

/// Compare a chunk row by row in both directions, merging the two sorted streams (one row
/// per side in memory).
async fn merge_compare(
    s: &Client,
    d: &Client,
    t: &Table,
    chunk: &Chunk,
    out: &mut Keys,
    max_keys: usize,
) -> Result<(), Error> {
    use futures_util::StreamExt;
    let fail = |what: &'static str| {
        let name = t.name.clone();
        move |e| sql_error(&format!("reading {name} row by row ({what})"), e)
    };
    let (a, b) = tokio::join!(sorted_rows(s, t, chunk), sorted_rows(d, t, chunk));
    let (mut a, mut b) = (
        Box::pin(a.map_err(fail("source"))?),
        Box::pin(b.map_err(fail("target"))?),
    );
    let next = |r: Option<Result<tokio_postgres::Row, tokio_postgres::Error>>, what| {
        r.transpose()
            .map(|r| r.map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))))
            .map_err(fail(what))
    };
    let mut x = next(a.next().await, "source")?;
    let mut y = next(b.next().await, "target")?;
    while out.len() < max_keys {
        let st = step(x.as_ref(), y.as_ref());
        if st == Step::Done {
            break;
        }
        let (source_on, target_on) = out.note(&st, x.as_ref(), y.as_ref());
        if source_on {
            x = next(a.next().await, "source")?;
        }
        if target_on {
            y = next(b.next().await, "target")?;
        }
    }
    Ok(())
}

/// Differing keys of one chunk followed through re-checks at most (bounds memory; a
/// chunk with more is reported with the first ones).
const RECHECK_KEYS_MAX: usize = 10_000;

/// Compare one chunk. Both sides are read at once. A chunk that differs is read again at
/// a consistent point before it counts (while the task streams, a first difference is
/// usually the apply's delay). In checksum mode, the keys it still differs on are then
/// re-read at consistent points, each round only those that still differ, so that rows
/// that merely changed while being read drop out and real differences remain.
pub(super) async fn check_chunk(
    task: &Task,
    s: &Client,
    d: &Client,
    list: &[Table],
    chunk: &Chunk,
    o: &VerifyOptions,
    results: &Mutex<Vec<TableResult>>,
) -> Result<Option<Vec<Chunk>>, Error> {
    let t = &list[chunk.table];
    let (a, b) = tokio::join!(
        summary(s, t, chunk, o.mode, "source"),
        summary(d, t, chunk, o.mode, "target")
    );
    let ((mut sr, mut sh), (mut dr, mut dh)) = (a?, b?);
    let mut same = sr == dr && sh == dh;
    if !same && chunk.range.is_none() && t.int_key && o.mode == Mode::Checksum {
        // A whole table that differs: compare it again by key ranges.
        return Ok(Some(split(s, chunk.table, t, o).await?));
    }
    // Keys still differing, and whether they are all the chunk's differing keys.
    let mut pending: Option<(Keys, bool)> = None;
    for round in 0..o.rechecks {
        if same {
            break;
        }
        let (keys, complete) = match pending.take() {
            Some((keys, true)) => (keys, true),
            _ => {
                if round > 0 {
                    tokio::time::sleep(o.recheck_pause).await;
                }
                ((sr, sh), (dr, dh)) = consistent_summaries(task, s, d, t, chunk, o).await?;
                same = sr == dr && sh == dh;
                if same || o.mode == Mode::Count {
                    continue;
                }
                let mut found = Keys::default();
                locate(s, d, t, chunk, &mut found, RECHECK_KEYS_MAX).await?;
                let complete = found.len() < RECHECK_KEYS_MAX;
                (found, complete)
            }
        };
        let still = recheck_keys(task, s, d, t, chunk, keys, o).await?;
        same = complete && still.len() == 0;
        pending = Some((still, complete));
    }
    let mut diff = pending.map(|p| p.0).unwrap_or_default();
    if !same && o.mode == Mode::Checksum && diff.len() == 0 {
        locate(s, d, t, chunk, &mut diff, o.max_keys).await?;
    }
    let (src_rows, dst_rows) = (sr, dr);
    let mut r = results
        .lock()
        .map_err(|_| Error::failed("a verify worker panicked".to_string()))?;
    let r = &mut r[chunk.table];
    r.source_rows += src_rows;
    r.target_rows += dst_rows;
    if !same {
        r.differing_chunks += 1;
        for (into, from) in [
            (&mut r.missing_on_target, diff.missing),
            (&mut r.only_on_target, diff.extra),
            (&mut r.changed, diff.changed),
        ] {
            let room = o.max_keys.saturating_sub(into.len());
            into.extend(from.into_iter().take(room));
        }
    }
    Ok(None)
}

/// The keys a differing chunk disagrees on.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Keys {
    /// On the source, not on the target.
    pub(super) missing: Vec<String>,
    /// On the target only.
    pub(super) extra: Vec<String>,
    /// On both, with different content.
    pub(super) changed: Vec<String>,
}

impl Keys {
    pub(super) fn len(&self) -> usize {
        self.missing.len() + self.extra.len() + self.changed.len()
    }
}

/// Rows compared one by one at most (a differing range larger than this is split).
const ROW_COMPARE_MAX: i64 = 20_000;

/// Narrow a differing chunk down: a key range wider than `ROW_COMPARE_MAX` is split in ten
/// and only the parts whose digests differ are looked into (fewer rows to sort and send);
/// then rows are compared by key in both directions, streamed.
async fn locate(
    s: &Client,
    d: &Client,
    t: &Table,
    chunk: &Chunk,
    out: &mut Keys,
    max_keys: usize,
) -> Result<(), Error> {
    if out.len() >= max_keys {
        return Ok(());
    }
    if let Some((lo, hi)) = chunk.range {
        // The open ends (below and above the source's keys) are compared as they are.
        let open = lo == i64::MIN || hi == i64::MAX;
        if !open && hi - lo > ROW_COMPARE_MAX {
            let step = ((hi - lo) / 10).max(1);
            let mut a = lo;
            while a < hi {
                let part = Chunk {
                    table: chunk.table,
                    range: Some((a, (a + step).min(hi))),
                };
                let (x, y) =
                    tokio::join!(digest(s, t, &part, "source"), digest(d, t, &part, "target"));
                if x? != y? {
                    Box::pin(locate(s, d, t, &part, out, max_keys)).await?;
                }
                a += step;
            }
            return Ok(());
        }
    }
    merge_compare(s, d, t, chunk, out, max_keys).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The merge over two plain sorted lists, as `merge_compare` runs it over two streams.
    fn merge(a: &[(&str, &str)], b: &[(&str, &str)], max: usize) -> Keys {
        let own = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, h)| (k.to_string(), h.to_string()))
                .collect()
        };
        let (a, b) = (own(a), own(b));
        let (mut i, mut j, mut out) = (0, 0, Keys::default());
        while out.len() < max {
            let st = step(a.get(i), b.get(j));
            if st == Step::Done {
                break;
            }
            let (x, y) = out.note(&st, a.get(i), b.get(j));
            i += usize::from(x);
            j += usize::from(y);
        }
        out
    }

    fn keys(missing: &[&str], extra: &[&str], changed: &[&str]) -> Keys {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        Keys {
            missing: v(missing),
            extra: v(extra),
            changed: v(changed),
        }
    }

    #[test]
    fn names_each_differing_key_once_in_both_directions() {
        let source = [("(1)", "a"), ("(2)", "b"), ("(4)", "d"), ("(6)", "f")];
        let target = [("(1)", "a"), ("(3)", "c"), ("(4)", "X"), ("(7)", "g")];
        assert_eq!(
            merge(&source, &target, 100),
            keys(&["(2)", "(6)"], &["(3)", "(7)"], &["(4)"])
        );
        assert_eq!(merge(&source, &source, 100), Keys::default());
        assert_eq!(merge(&[], &target[..1], 100), keys(&[], &["(1)"], &[]));
        assert_eq!(merge(&source[..1], &[], 100), keys(&["(1)"], &[], &[]));
    }

    #[test]
    fn keys_compare_by_bytes_as_the_servers_sort_them_and_the_list_is_bounded() {
        // COLLATE "C" order: "(10)" before "(9)".
        let source = [("(10)", "a"), ("(9)", "b")];
        let target = [("(9)", "b")];
        assert_eq!(merge(&source, &target, 100), keys(&["(10)"], &[], &[]));
        let many: Vec<(String, String)> =
            (0..50).map(|i| (format!("({i:03})"), "h".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, h)| (k.as_str(), h.as_str())).collect();
        assert_eq!(merge(&many, &[], 10).len(), 10);
    }
}
